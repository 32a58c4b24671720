# frozen_string_literal: true

require "pathname"

# Every extension entry point of Config, in as few examples as possible: `rake spec:gc_stress`
# reruns :ffi groups with GC.stress on, where each example costs seconds. The untagged group
# below covers the behaviour in depth through the same entry points.
RSpec.describe Tasker::Channels::Config, "across the FFI", :ffi do
  include ConfigDirHelpers

  around { |example| without_config_env { example.run } }

  it "returns values that survive garbage collection intact" do
    override = "environments/test/mpsc_channels.toml"
    with_config_dir(override => "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 64\n") do |dir|
      config = described_class.load(environment: "test", config_dir: dir)
      expect(config.environment).to eq("test")
      expect(config.layers).to eq([shipped("base/mpsc_channels.toml"), File.join(dir, override)])
      expect(config["shared.ffi"]).to eq("ruby_event_buffer_size" => 64, "overflow" => "error")
      expect(config.source("shared.ffi.ruby_event_buffer_size")).to eq(File.join(dir, override))
      expect(config.channels.last)
        .to eq(name: "shared.ffi", component: "shared", capacity: 64, overflow: "error", send_timeout_ms: nil)
      expect(config.to_h.dig("task_readiness", "event_channel")).to eq("buffer_size" => 1000, "send_timeout_ms" => 1000)
      expect(config.log_warning_threshold).to eq(0.8)
    end
  end

  it "raises Tasker::ConfigError carrying every problem" do
    error = config_error(environment: "staging", config_dir: "/nonexistent/tasker-config")
    expect(error.errors.map(&:file))
      .to eq(["/nonexistent/tasker-config", "/nonexistent/tasker-config/environments"])
    # Plain `eq` only: other matchers load files lazily, which under GC.stress takes minutes.
    expect(error.errors.map { |problem| error.message.include?(problem.to_s) }).to eq([true, true])
    expect(error.errors.map(&:frozen?)).to eq([true, true])
  end
end

RSpec.describe Tasker::Channels::Config do
  include ConfigDirHelpers

  around { |example| without_config_env { example.run } }

  let(:base_file) { shipped("base/mpsc_channels.toml") }

  let(:capacity_keys) { ChannelConfigHelpers::CAPACITY_KEYS }

  # docs/design.md §3: base values, with each environment's overrides applied, in capacity_keys order.
  let(:shipped_capacities) do
    {
      "base" => [1000, 10_000, 1000, 1000, 1000, 5000, 1000],
      "production" => [5000, 50_000, 1000, 1000, 1000, 10_000, 1000],
      "development" => [1000, 10_000, 500, 1000, 500, 5000, 1000],
      "test" => [100, 10_000, 100, 1000, 1000, 5000, 1000]
    }
  end

  def capacities(config)
    capacity_keys.map { |channel, key| config["#{channel}.#{key}"] }
  end

  describe "shipped values" do
    %w[production development test].each do |environment|
      it "match the shipped values table for #{environment}" do
        config = described_class.load(environment:)
        expect(config.environment).to eq(environment)
        expect(capacities(config)).to eq(shipped_capacities.fetch(environment))
        expect(config.channels.map { |channel| channel[:capacity] }).to eq(shipped_capacities.fetch(environment))
        expect(config["task_readiness.event_channel.send_timeout_ms"]).to eq(1000)
        expect(config["overflow_policy.log_warning_threshold"]).to eq(0.8)
        expect(config.log_warning_threshold).to eq(0.8)
        expect(config["overflow_policy.drop_policy"]).to eq("block")
      end
    end

    it "are the base alone when a config dir overrides nothing" do
      with_config_dir do |dir|
        config = described_class.load(environment: "production", config_dir: dir)
        expect(config.layers).to eq([base_file])
        expect(capacities(config)).to eq(shipped_capacities.fetch("base"))
      end
    end
  end

  describe "#environment" do
    it "defaults to development" do
      expect(described_class.load.environment).to eq("development")
    end

    it "accepts a Symbol" do
      expect(described_class.load(environment: :test).environment).to eq("test")
    end
  end

  describe "#layers" do
    it "lists the shipped base then the shipped environment file" do
      expect(described_class.load(environment: "test").layers)
        .to eq([base_file, shipped("environments/test/mpsc_channels.toml")])
    end

    it "puts a config dir's base and environment files after the shipped base, instead of the shipped override" do
      with_config_dir(
        "base/mpsc_channels.toml" => "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 7\n",
        "environments/test/mpsc_channels.toml" => "[mpsc_channels.shared.ffi]\noverflow = \"drop\"\n"
      ) do |dir|
        config = described_class.load(environment: "test", config_dir: dir)
        expect(config.layers).to eq(
          [base_file, File.join(dir, "base/mpsc_channels.toml"), File.join(dir, "environments/test/mpsc_channels.toml")]
        )
        # The shipped test override (command_buffer_size 100) is not merged.
        expect(config["orchestration.command_processor.command_buffer_size"]).to eq(1000)
      end
    end

    it "skips config dir files that do not exist" do
      with_config_dir("environments/test/mpsc_channels.toml" => "") do |dir|
        config = described_class.load(environment: "test", config_dir: Pathname(dir))
        expect(config.layers).to eq([base_file, File.join(dir, "environments/test/mpsc_channels.toml")])
      end
    end
  end

  describe "#[]" do
    subject(:config) { described_class.load(environment: "production") }

    it "reads a leaf by dotted path without the mpsc_channels prefix" do
      expect(config["shared.ffi.ruby_event_buffer_size"]).to eq(1000)
      expect(config["orchestration.event_listeners.pgmq_event_buffer_size"]).to eq(50_000)
      expect(config["shared.event_publisher.overflow"]).to eq("drop")
    end

    it "returns a table as a Hash with String keys" do
      expect(config["shared.ffi"]).to eq("ruby_event_buffer_size" => 1000, "overflow" => "error")
      expect(config["shared"].keys).to contain_exactly("event_publisher", "ffi")
    end

    it "returns nil for unset, unknown and prefixed paths" do
      expect(config["shared.ffi.send_timeout_ms"]).to be_nil
      expect(config["shared.nope"]).to be_nil
      expect(config["mpsc_channels.shared.ffi.ruby_event_buffer_size"]).to be_nil
      expect(config[""]).to be_nil
    end
  end

  describe "#source" do
    it "names the shipped base, the shipped override or the config dir file that set each value" do
      production = described_class.load(environment: "production")
      expect(production.source("shared.ffi.ruby_event_buffer_size")).to eq(base_file)
      expect(production.source("orchestration.command_processor.command_buffer_size"))
        .to eq(shipped("environments/production/mpsc_channels.toml"))

      with_config_dir(
        "base/mpsc_channels.toml" => "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop_oldest\"\n" \
                                     "[mpsc_channels.worker.in_process_events]\noverflow = \"block\"\n",
        "environments/production/mpsc_channels.toml" => "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 64\n"
      ) do |dir|
        config = described_class.load(environment: "production", config_dir: dir)
        expect(config.source("overflow_policy.drop_policy")).to eq(File.join(dir, "base/mpsc_channels.toml"))
        expect(config.source("shared.ffi.ruby_event_buffer_size"))
          .to eq(File.join(dir, "environments/production/mpsc_channels.toml"))
        expect(config.source("shared.ffi.overflow")).to eq(base_file)
      end
    end

    it "is nil for unset keys and for tables" do
      config = described_class.load(environment: "test")
      expect(config.source("shared.ffi.send_timeout_ms")).to be_nil
      expect(config.source("shared.ffi")).to be_nil
      expect(config.source("nope")).to be_nil
    end
  end

  describe "#channels" do
    subject(:channels) { described_class.load(environment: "test").channels.to_h { |c| [c[:name], c] } }

    it "lists the seven channels with their components" do
      expect(channels.keys).to eq(capacity_keys.keys)
      expect(channels.values.map { |c| c[:component] })
        .to eq(%w[orchestration orchestration task_readiness worker worker shared shared])
      expect(channels.values.map(&:keys)).to all(eq(%i[name component capacity overflow send_timeout_ms]))
    end

    it "gives the effective overflow: the ADR strategies, else the default policy" do
      expect(channels.transform_values { |c| c[:overflow] }).to eq(
        "orchestration.command_processor" => "block",
        "orchestration.event_listeners" => "block",
        "task_readiness.event_channel" => "block",
        "worker.command_processor" => "block",
        "worker.in_process_events" => "block",
        "shared.event_publisher" => "drop",
        "shared.ffi" => "error"
      )
    end

    it "applies overflow_policy.drop_policy to channels without their own overflow" do
      # worker.in_process_events takes no drop_oldest (it would evict accepted events).
      drop_oldest = "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop_oldest\"\n" \
                    "[mpsc_channels.worker.in_process_events]\noverflow = \"block\"\n"
      with_config_dir("base/mpsc_channels.toml" => drop_oldest) do |dir|
        overflow = described_class.load(environment: "test", config_dir: dir).channels.to_h do |c|
          [c[:name], c[:overflow]]
        end
        expect(overflow.values_at("worker.command_processor", "task_readiness.event_channel"))
          .to eq(%w[drop_oldest drop_oldest])
        expect(overflow.values_at("shared.ffi", "shared.event_publisher", "orchestration.event_listeners"))
          .to eq(%w[error drop block])
      end
    end

    it "sets send_timeout_ms only where configured" do
      expect(channels.transform_values { |c| c[:send_timeout_ms] })
        .to eq(capacity_keys.keys.to_h { |name| [name, name == "task_readiness.event_channel" ? 1000 : nil] })
    end
  end

  describe "#to_h" do
    it "is the nested effective configuration without the mpsc_channels level" do
      config = described_class.load(environment: "development")
      hash = config.to_h
      expect(hash.keys).to contain_exactly("orchestration", "task_readiness", "worker", "shared", "overflow_policy")
      expect(hash.dig("task_readiness", "event_channel")).to eq("buffer_size" => 500, "send_timeout_ms" => 1000)
      expect(hash["overflow_policy"])
        .to eq("log_warning_threshold" => 0.8, "drop_policy" => "block", "notice_interval_ms" => 1000)
      capacity_keys.each do |channel, key|
        expect(hash.dig(*channel.split("."), key)).to eq(config["#{channel}.#{key}"])
      end
    end
  end

  describe "#log_warning_threshold" do
    it "reads an integer 1 as 1.0" do
      one = "[mpsc_channels.overflow_policy]\nlog_warning_threshold = 1\n"
      with_config_dir("base/mpsc_channels.toml" => one) do |dir|
        config = described_class.load(environment: "test", config_dir: dir)
        expect(config.log_warning_threshold).to eq(1.0).and be_a(Float)
      end
    end
  end

  describe "environment variables" do
    let(:override) { "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 42\n" }

    it "uses TASKER_ENV when no environment is given" do
      with_env("TASKER_ENV" => "production") do
        expect(described_class.load.environment).to eq("production")
        expect(described_class.load(environment: "test").environment).to eq("test")
      end
    end

    it "treats an empty TASKER_ENV as unset" do
      with_env("TASKER_ENV" => "") { expect(described_class.load.environment).to eq("development") }
    end

    it "uses TASKER_CONFIG_DIR when no config dir is given, and the argument wins over it" do
      with_config_dir("environments/test/mpsc_channels.toml" => override) do |dir|
        with_env("TASKER_CONFIG_DIR" => dir, "TASKER_ENV" => "test") do
          config = described_class.load
          expect(config["shared.ffi.ruby_event_buffer_size"]).to eq(42)
          expect(config.layers.last).to eq(File.join(dir, "environments/test/mpsc_channels.toml"))

          with_config_dir do |other|
            expect(described_class.load(config_dir: other)["shared.ffi.ruby_event_buffer_size"]).to eq(1000)
          end
        end
      end
    end

    it "names the variable a bad value came from" do
      with_env("TASKER_ENV" => "staging") do
        expect(config_error.message).to include('unknown environment "staging" (from TASKER_ENV)')
      end
      with_env("TASKER_CONFIG_DIR" => "/nonexistent/tasker-config") do
        expect(config_error(environment: "test").message).to include("(from TASKER_CONFIG_DIR) does not exist")
      end
    end
  end

  describe "validation" do
    # The one problem an override file for the test environment has; checks where it points.
    def problem_in(text)
      file = "environments/test/mpsc_channels.toml"
      with_config_dir(file => text) do |dir|
        problems = config_error(environment: "test", config_dir: dir).errors
        expect(problems.map(&:file)).to eq([File.join(dir, file)]), problems.inspect
        problems.first
      end
    end

    it "reports a TOML syntax error with its line and column" do
      problem = problem_in("[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 3\noverflow = drop\n")
      expect(problem).to have_attributes(line: 3, column: 12, key: nil)
      expect(problem.message).to start_with("TOML syntax error:")
      expect(problem.to_s).to match(%r{/environments/test/mpsc_channels\.toml:3:12: TOML syntax error})
    end

    it "reports an unknown key with a did-you-mean suggestion" do
      problem = problem_in("[mpsc_channels.task_readiness.event_channel]\nbuffer_sise = 5\n")
      expect(problem).to have_attributes(key: "task_readiness.event_channel.buffer_sise", line: 2, column: 1)
      expect(problem.message).to include("did you mean `buffer_size`?")
    end

    it "names the fix for a table outside [mpsc_channels]" do
      problem = problem_in("[task_readiness.event_channel]\nbuffer_size = 100\n")
      expect(problem).to have_attributes(key: "task_readiness.event_channel", line: 1)
      expect(problem.message).to include("write it as [mpsc_channels.task_readiness.event_channel]")
    end

    {
      "a string capacity" => ["[mpsc_channels.shared.ffi]\nruby_event_buffer_size = \"1000\"\n",
                              "shared.ffi.ruby_event_buffer_size", 'got the string "1000"'],
      "a float capacity" => ["[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 1000.0\n",
                             "shared.ffi.ruby_event_buffer_size", "must be an integer"],
      "a numeric policy" => ["[mpsc_channels.shared.ffi]\noverflow = 3\n", "shared.ffi.overflow", "must be a string"],
      "a scalar where a table belongs" => ["[mpsc_channels]\nshared = 3\n", "shared", "must be a table"],
      "a string threshold" => ["[mpsc_channels.overflow_policy]\nlog_warning_threshold = \"80%\"\n",
                               "overflow_policy.log_warning_threshold", 'got the string "80%"'],
      "a float timeout" => ["[mpsc_channels.task_readiness.event_channel]\nsend_timeout_ms = 1.5\n",
                            "task_readiness.event_channel.send_timeout_ms", "got 1.5"],
      "a string notice interval" => ["[mpsc_channels.overflow_policy]\nnotice_interval_ms = \"1s\"\n",
                                     "overflow_policy.notice_interval_ms", 'got the string "1s"']
    }.each do |label, (text, key, fragment)|
      it "reports a wrong type: #{label}" do
        problem = problem_in(text)
        expect(problem.key).to eq(key)
        expect(problem.line).to eq(2)
        expect(problem.message).to include(fragment)
      end
    end

    [0, 16_777_217].each do |capacity|
      it "rejects capacity #{capacity}" do
        problem = problem_in("[mpsc_channels.worker.command_processor]\ncommand_buffer_size = #{capacity}\n")
        expect(problem).to have_attributes(key: "worker.command_processor.command_buffer_size", line: 2, column: 23)
        expect(problem.message).to eq("capacity must be an integer in 1..=16777216, got #{capacity}")
      end
    end

    it "accepts the capacity bounds 1 and 16_777_216" do
      [1, 16_777_216].each do |capacity|
        text = "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = #{capacity}\n"
        with_config_dir("base/mpsc_channels.toml" => text) do |dir|
          config = described_class.load(environment: "test", config_dir: dir)
          expect(config["shared.ffi.ruby_event_buffer_size"]).to eq(capacity)
        end
      end
    end

    %w[0 1.5].each do |threshold|
      it "rejects log_warning_threshold #{threshold}" do
        problem = problem_in("[mpsc_channels.overflow_policy]\nlog_warning_threshold = #{threshold}\n")
        expect(problem.key).to eq("overflow_policy.log_warning_threshold")
        expect(problem.message).to include("in (0, 1]", "got #{threshold}")
      end
    end

    { "shared.ffi" => "overflow", "overflow_policy" => "drop_policy" }.each do |table, key|
      it "rejects an unknown policy name in #{table}.#{key} and lists the valid ones" do
        problem = problem_in("[mpsc_channels.#{table}]\n#{key} = \"dropp\"\n")
        expect(problem.key).to eq("#{table}.#{key}")
        expect(problem.message)
          .to include('unknown overflow policy "dropp" (valid: "block", "drop", "drop_oldest", "error")')
      end
    end

    [-1, 3_600_001].each do |interval|
      it "rejects notice_interval_ms #{interval} at its line and column" do
        problem = problem_in("[mpsc_channels.overflow_policy]\nnotice_interval_ms = #{interval}\n")
        expect(problem).to have_attributes(key: "overflow_policy.notice_interval_ms", line: 2, column: 22)
        expect(problem.message).to include("in 0..=3600000", "got #{interval}")
      end
    end

    it "suggests notice_interval_ms for a near miss" do
      problem = problem_in("[mpsc_channels.overflow_policy]\nnotice_interval = 5\n")
      expect(problem.message).to include("did you mean `notice_interval_ms`?")
    end

    it "reads notice_interval_ms, 0 included" do
      expect(described_class.load(environment: "test").notice_interval_ms).to eq(1000)
      with_config_dir("base/mpsc_channels.toml" => "[mpsc_channels.overflow_policy]\nnotice_interval_ms = 0\n") do |dir|
        expect(described_class.load(environment: "test", config_dir: dir).notice_interval_ms).to eq(0)
      end
    end

    [-1, 3_600_001].each do |timeout|
      it "rejects send_timeout_ms #{timeout}" do
        problem = problem_in("[mpsc_channels.task_readiness.event_channel]\nsend_timeout_ms = #{timeout}\n")
        expect(problem.key).to eq("task_readiness.event_channel.send_timeout_ms")
        expect(problem.message).to include("in 0..=3600000, got #{timeout}")
      end
    end

    it "rejects an unknown environment and lists the known ones" do
      error = config_error(environment: "staging")
      expect(error.errors.size).to eq(1)
      expect(error.errors.first.file).to eq(shipped("environments"))
      expect(error.message)
        .to include('unknown environment "staging"', "known environments: development, production, test")
    end

    it "counts a config dir's environments/<env> folder as known" do
      with_config_dir("environments/staging/mpsc_channels.toml" => "") do |dir|
        expect(described_class.load(environment: "staging", config_dir: dir).environment).to eq("staging")
        expect(config_error(environment: "qa", config_dir: dir).message)
          .to include("known environments: development, production, staging, test")
      end
    end

    it "rejects a config dir that does not exist" do
      with_config_dir do |dir|
        missing = File.join(dir, "absent")
        error = config_error(environment: "test", config_dir: missing)
        expect(error.errors.map(&:file)).to eq([missing])
        expect(error.message).to include("does not exist")
      end
    end

    it "reports every problem across files at once, each with its file and key" do
      with_config_dir(
        "base/mpsc_channels.toml" => "[task_readiness.event_channel]\nbuffer_size = 100\n",
        "environments/test/mpsc_channels.toml" =>
          "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\noverflow = \"dropp\"\n" \
          "[mpsc_channels.overflow_policy]\nlog_warning_treshold = 0.5\n"
      ) do |dir|
        error = config_error(environment: "test", config_dir: dir)
        base = File.join(dir, "base/mpsc_channels.toml")
        env = File.join(dir, "environments/test/mpsc_channels.toml")
        expect(error.errors.size).to eq(4)
        expect(error.errors.map { |problem| problem.to_h.values_at(:file, :key, :line) }).to eq(
          [
            [base, "task_readiness.event_channel", 1],
            [env, "shared.ffi.ruby_event_buffer_size", 2],
            [env, "shared.ffi.overflow", 3],
            [env, "overflow_policy.log_warning_treshold", 5]
          ]
        )
        expect(error.message).to start_with("invalid channel configuration (4 problems):")
        expect(error.message).to include("did you mean `log_warning_threshold`?")
        error.errors.each { |problem| expect(error.message).to include(problem.to_s) }
      end
    end

    it "gives frozen Problem values with every field, built by the Ruby class" do
      problem = problem_in("[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\n")
      expect(problem).to be_a(Tasker::ConfigError::Problem).and be_frozen
      expect(problem.to_h.keys).to eq(%i[file key line column message])
      expect(problem).to have_attributes(key: "shared.ffi.ruby_event_buffer_size", line: 2, column: 26)
      expect(problem.to_s).to eq("#{problem.file}:2:26: shared.ffi.ruby_event_buffer_size: #{problem.message}")
      expect(problem).to eq(Tasker::ConfigError::Problem.new(**problem.to_h))
      expect(config_error(environment: "staging").errors).to be_frozen
    end

    it "raises nothing but Tasker::ConfigError for malformed files" do
      malformed = [
        "\xFF\xFE not utf-8".b, "[" * 10_000, "a = #{'[' * 10_000}", "[mpsc_channels]\n#{'a = { ' * 5000}",
        "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 99999999999999999999\n",
        "[[mpsc_channels.shared.ffi]]\nruby_event_buffer_size = 1\n", "mpsc_channels = \"x\"\n",
        "[mpsc_channels.shared.ffi]\nsend_timeout_ms = 1979-05-27\n", "\u0000", "x" * 100_000
      ]
      malformed.each do |text|
        with_config_dir("environments/test/mpsc_channels.toml" => text) do |dir|
          expect { described_class.load(environment: "test", config_dir: dir) }
            .to raise_error(an_instance_of(Tasker::ConfigError)), text[0, 40].inspect
        end
      end
    end

    it "reports an override that cannot be read" do
      with_config_dir do |dir|
        FileUtils.mkdir_p(File.join(dir, "base/mpsc_channels.toml"))
        error = config_error(environment: "test", config_dir: dir)
        expect(error.message).to include("cannot read this file")
      end
    end

    it "refuses environment names that could leave the environments folder" do
      ["", "../test", ".hidden", "a/b"].each do |name|
        expect(config_error(environment: name).message).to include("cannot name a folder")
      end
    end
  end

  describe ".load arguments" do
    it "accepts UTF-8 bytes labelled binary, as ARGV holds them under LANG=C" do
      with_config_dir("environments/test/mpsc_channels.toml" => "") do |dir|
        path = File.join(dir, "caf\u00e9")
        FileUtils.mkdir_p(File.join(path, "environments/test"))
        config = described_class.load(environment: "test".b, config_dir: path.b)
        expect(config.layers).to eq([base_file])
      end
    end

    it "raises ArgumentError for a config dir that is not UTF-8" do
      expect { described_class.load(config_dir: "/tmp/\xFF".b) }.to raise_error(ArgumentError, /not valid UTF-8/)
    end
  end
end
