# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"
require "socket"
require "stringio"
require "tasker/channels/cli"

# The two layer files of a config dir's `test` environment.
module ConfigDirLayerFiles
  LAYER_FILES = %w[base/mpsc_channels.toml environments/test/mpsc_channels.toml].freeze
  TEST_FILE = LAYER_FILES[1]
end

# What Config.load does with something other than a regular file where a layer file should
# be: it refuses it with a problem naming the path and what is there, without ever opening it.
RSpec.describe "Config files that are not regular files" do
  include ConfigDirHelpers

  around { |example| without_config_env { example.run } }

  # Loads the `test` configuration of `dir` in a fresh Ruby (see ChildRuby#run_isolated);
  # returns [what it printed, exit status or "signal N"]. `how` is `Config.load` or `Runtime.new`.
  def load_in_child(dir, how: "Tasker::Channels::Config.load", limit: 10)
    run_isolated(<<~RUBY, limit: limit)
      begin
        #{how}(environment: "test", config_dir: #{dir.inspect})
        puts "loaded"
      rescue Tasker::ConfigError => e
        puts e.message
      end
    RUBY
  end

  def not_regular(path, what)
    "#{path}: cannot read this file: it is #{what}, not a regular file; put a TOML file here or remove it"
  end

  ConfigDirLayerFiles::LAYER_FILES.each do |relative|
    # Regression: reading a FIFO waited for a writer forever with the GVL held, so every
    # thread stopped and the process ignored SIGTERM and SIGINT.
    it "refuses a FIFO as #{relative} at once, through Config.load and Runtime.new" do
      with_config_dir do |dir|
        fifo = File.join(dir, relative)
        FileUtils.mkdir_p(File.dirname(fifo))
        File.mkfifo(fifo)

        aggregate_failures do
          ["Tasker::Channels::Config.load", "Tasker::Channels::Runtime.new"].each do |how|
            output, status = load_in_child(dir, how: how)
            expect(status).to eq(0), "#{how} did not return: #{status} #{output}"
            expect(output).to include(not_regular(fifo, "a FIFO (named pipe)"))
          end
        end
      end
    end
  end

  it "refuses a directory and a socket by what they are" do
    with_config_dir do |dir|
      directory = File.join(dir, ConfigDirLayerFiles::LAYER_FILES[0])
      FileUtils.mkdir_p(directory)
      socket_path = File.join(dir, ConfigDirLayerFiles::LAYER_FILES[1])
      FileUtils.mkdir_p(File.dirname(socket_path))
      server = UNIXServer.new(socket_path)

      error = config_error(environment: "test", config_dir: dir)

      expect(error.message).to include(not_regular(directory, "a directory"), not_regular(socket_path, "a socket"))
      expect(error.errors.map(&:file)).to eq([directory, socket_path])
    ensure
      server&.close
    end
  end

  it "reports a symbolic link that leads to nothing instead of skipping it" do
    with_config_dir do |dir|
      link = File.join(dir, ConfigDirLayerFiles::LAYER_FILES[1])
      FileUtils.mkdir_p(File.dirname(link))
      target = File.join(dir, "moved-away.toml")
      File.symlink(target, link)

      error = config_error(environment: "test", config_dir: dir)

      expect(error.errors.map(&:file)).to eq([link])
      expect(error.message).to include("#{link}: cannot read this file: it is a symbolic link to #{target}, " \
                                       "which leads to nothing; point it at a TOML file or remove it")
    end
  end

  it "follows a symbolic link to a regular file" do
    with_config_dir("shared.toml" => "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 7\n") do |dir|
      link = File.join(dir, ConfigDirLayerFiles::LAYER_FILES[1])
      FileUtils.mkdir_p(File.dirname(link))
      File.symlink(File.join(dir, "shared.toml"), link)

      config = Tasker::Channels::Config.load(environment: "test", config_dir: dir)

      expect(config["shared.ffi.ruby_event_buffer_size"]).to eq(7)
      expect(config.source("shared.ffi.ruby_event_buffer_size")).to eq(link)
    end
  end

  it "refuses a file far larger than any channel configuration without reading it" do
    with_config_dir("base/mpsc_channels.toml" => "# #{'x' * (1 << 20)}\n") do |dir|
      expect(config_error(environment: "test", config_dir: dir).message)
        .to include("base/mpsc_channels.toml: cannot read this file: it is larger than 1024 KiB")
    end
  end
end

# Problems a user fixes in a config file: each must say where (file, line, column, key).
RSpec.describe "Config problems with overflow policies" do
  include ConfigDirHelpers

  around { |example| without_config_env { example.run } }

  let(:test_file) { ConfigDirLayerFiles::TEST_FILE }

  def only_problem(text)
    with_config_dir(test_file => text) do |dir|
      problems = config_error(environment: "test", config_dir: dir).errors
      expect(problems.size).to eq(1), problems.inspect
      problem = problems.first
      problem.to_h.merge(file: problem.file.delete_prefix("#{dir}/"), to_s: problem.to_s)
    end
  end

  # Regression: this problem named the file but no line or column.
  it "locates drop_oldest on shared.ffi at its value" do
    expect(only_problem("\n[mpsc_channels.shared.ffi]\noverflow = \"drop_oldest\"\n")).to include(
      file: test_file, key: "shared.ffi.overflow", line: 3, column: 12,
      to_s: include("#{test_file}:3:12: shared.ffi.overflow: shared.ffi cannot use \"drop_oldest\"")
    )
  end

  it "refuses drop_oldest on worker.in_process_events, located, since accepted events wait there too" do
    expect(only_problem("[mpsc_channels.worker.in_process_events]\noverflow = \"drop_oldest\"\n")).to include(
      key: "worker.in_process_events.overflow", line: 2, column: 12,
      message: start_with("worker.in_process_events cannot use \"drop_oldest\": it would discard events publish")
    )
  end

  it "refuses a default drop_policy of drop_oldest where it reaches the dispatch side, at the drop_policy line" do
    problem = only_problem("[mpsc_channels.overflow_policy]\nlog_warning_threshold = 0.5\n" \
                           "drop_policy = \"drop_oldest\"\n")

    expect(problem).to include(file: test_file, key: "overflow_policy.drop_policy", line: 3, column: 15)
    expect(problem[:message]).to start_with("worker.in_process_events has no overflow of its own")
      .and include('set overflow = "block" in [mpsc_channels.worker.in_process_events]')
  end

  it "suggests the policy a misspelt name meant" do
    expect(only_problem("[mpsc_channels.shared.ffi]\noverflow = \"drop-oldest\"\n")[:message])
      .to end_with('; did you mean "drop_oldest"?')
    expect(only_problem("[mpsc_channels.overflow_policy]\ndrop_policy = \"Block\"\n")[:message])
      .to include('unknown overflow policy "Block"').and end_with('; did you mean "block"?')
  end

  describe "tasker-channels config --json" do
    def cli(*args)
      out = StringIO.new
      err = StringIO.new
      status = Tasker::Channels::CLI.run(args, out:, err:)
      [status, out.string, err.string]
    end

    it "reports an invalid configuration as JSON problem objects on stdout and exits 1" do
      text = "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\noverflow = \"drop-oldest\"\n"
      with_config_dir(test_file => text) do |dir|
        status, out, err = cli("config", "--json", "--env", "test", "--config-dir", dir)

        expect([status, err]).to eq([1, ""])
        file = File.join(dir, test_file)
        expect(JSON.parse(out)).to eq(
          "errors" => [
            { "file" => file, "line" => 2, "column" => 26, "key" => "shared.ffi.ruby_event_buffer_size",
              "message" => "capacity must be an integer in 1..=16777216, got 0" },
            { "file" => file, "line" => 3, "column" => 12, "key" => "shared.ffi.overflow",
              "message" => 'unknown overflow policy "drop-oldest" (valid: "block", "drop", "drop_oldest", "error"); ' \
                           'did you mean "drop_oldest"?' }
          ]
        )
      end
    end

    it "reports problems without a position or key with nulls" do
      status, out, = cli("config", "--json", "--env", "staging")

      expect(status).to eq(1)
      problem = JSON.parse(out).fetch("errors").first
      expect(problem).to include("line" => nil, "column" => nil, "key" => nil)
      expect(problem["message"]).to include('unknown environment "staging"')
    end

    it "still reports a valid configuration as before" do
      status, out, = cli("config", "--json", "--env", "test")

      expect(status).to eq(0)
      expect(JSON.parse(out).keys).to eq(%w[environment layers channels overflow_policy])
    end
  end
end
