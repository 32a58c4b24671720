# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"
require "stringio"
require "tasker/channels/cli"

# Not tagged :ffi although it loads configs in this process: the only extension calls are
# Config's, which spec/config_spec.rb's :ffi group covers; under GC.stress each of these
# examples would take minutes (JSON and OptionParser allocate heavily).
RSpec.describe Tasker::Channels::CLI do
  include ConfigDirHelpers

  around { |example| without_config_env { example.run } }

  # Runs the command in this process; returns [exit status, stdout, stderr].
  def cli(*args)
    out = StringIO.new
    err = StringIO.new
    status = described_class.run(args, out:, err:)
    [status, out.string, err.string]
  end

  # The table row for one setting of one channel, split into its columns.
  def row(output, channel, setting)
    line = output.lines.find { |l| l.start_with?("#{channel} ") && l.split(/\s{2,}/)[1].start_with?(setting) }
    line&.chomp&.split(/\s{2,}/)
  end

  let(:base_file) { shipped("base/mpsc_channels.toml") }

  describe "config" do
    it "shows every channel's capacity, policy and send timeout with the file each came from" do
      status, out, err = cli("config", "--env", "test")
      expect([status, err]).to eq([0, ""])
      test_file = shipped("environments/test/mpsc_channels.toml")
      expect(out).to include("Environment: test", "  1. #{base_file}", "  2. #{test_file}")
      channel_names.each do |name|
        %w[capacity overflow send_timeout_ms].each { |setting| expect(row(out, name, setting)).not_to be_nil }
      end
      expect(row(out, "orchestration.command_processor", "capacity"))
        .to eq(["orchestration.command_processor", "capacity (command_buffer_size)", "100", test_file])
      expect(row(out, "shared.ffi", "overflow")).to eq(["shared.ffi", "overflow", "error", base_file])
      expect(row(out, "worker.command_processor", "overflow"))
        .to eq(["worker.command_processor", "overflow", "block", "#{base_file} (via overflow_policy.drop_policy)"])
      expect(row(out, "task_readiness.event_channel", "send_timeout_ms"))
        .to eq(["task_readiness.event_channel", "send_timeout_ms", "1000", base_file])
      expect(row(out, "shared.ffi", "send_timeout_ms")).to eq(["shared.ffi", "send_timeout_ms", "-", "-"])
      expect(out).to match(/^  log_warning_threshold\s+0\.8\s+#{Regexp.escape(base_file)}$/)
      expect(out).to match(/^  drop_policy\s+block\s+#{Regexp.escape(base_file)}$/)
      expect(out).to match(/^  notice_interval_ms\s+1000\s+#{Regexp.escape(base_file)}$/)
    end

    it "aligns the table's columns" do
      _, out = cli("config", "--env", "production")
      rows = out.lines.select { |line| line.start_with?("CHANNEL", *channel_names) }
      expect(rows.size).to eq(1 + (3 * channel_names.size))
      %w[SETTING VALUE SOURCE].each do |column|
        start = rows.first.index(column)
        expect(rows.map { |line| line[start - 2, 3] }).to all(match(/\A  \S\z/))
      end
      expect(out.lines).to all(satisfy { |line| !line.match?(/ \n\z/) })
    end

    it "uses the production file for production overrides" do
      _, out = cli("config", "--env", "production")
      expect(row(out, "orchestration.command_processor", "capacity")).to eq(
        ["orchestration.command_processor", "capacity (command_buffer_size)", "5000",
         shipped("environments/production/mpsc_channels.toml")]
      )
    end

    it "reads a config dir" do
      with_config_dir(
        "environments/test/mpsc_channels.toml" =>
          "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 64\n" \
          "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop\"\n"
      ) do |dir|
        status, out = cli("config", "--env", "test", "--config-dir", dir)
        env_file = File.join(dir, "environments/test/mpsc_channels.toml")
        expect(status).to eq(0)
        expect(row(out, "shared.ffi", "capacity")[2..]).to eq(["64", env_file])
        expect(row(out, "worker.command_processor", "overflow")[2..])
          .to eq(["drop", "#{env_file} (via overflow_policy.drop_policy)"])
        expect(out).to match(/^  drop_policy\s+drop\s+#{Regexp.escape(env_file)}$/)
      end
    end

    it "uses TASKER_ENV, and --env wins over it" do
      with_env("TASKER_ENV" => "production") do
        expect(cli("config")[1]).to include("Environment: production")
        expect(cli("config", "--env", "development")[1]).to include("Environment: development")
      end
    end

    describe "--json" do
      it "prints one document that matches Config.load" do
        drop_oldest = "[mpsc_channels.shared.event_publisher]\noverflow = \"drop_oldest\"\n"
        with_config_dir("base/mpsc_channels.toml" => drop_oldest) do |dir|
          status, out, err = cli("config", "--json", "--env", "production", "--config-dir", dir)
          expect([status, err]).to eq([0, ""])
          document = JSON.parse(out)
          config = Tasker::Channels::Config.load(environment: "production", config_dir: dir)
          expect(document.keys).to eq(%w[environment layers channels overflow_policy])
          expect(document.values_at("environment", "layers")).to eq([config.environment, config.layers])
          expect(document["channels"].map { |channel| channel.except("sources") })
            .to eq(config.channels.map { |channel| channel.transform_keys(&:to_s) })
          expect(document["overflow_policy"].except("sources")).to eq(config.to_h["overflow_policy"])
        end
      end

      it "gives the key and file behind each value" do
        _, out = cli("config", "--json", "--env", "production")
        channels = JSON.parse(out)["channels"].to_h { |channel| [channel["name"], channel["sources"]] }
        production = shipped("environments/production/mpsc_channels.toml")
        expect(channels["orchestration.command_processor"]).to eq(
          "capacity" => { "key" => "orchestration.command_processor.command_buffer_size", "file" => production },
          "overflow" => { "key" => "overflow_policy.drop_policy", "file" => base_file },
          "send_timeout_ms" => nil
        )
        expect(channels["shared.ffi"]["overflow"]).to eq("key" => "shared.ffi.overflow", "file" => base_file)
        expect(channels["task_readiness.event_channel"]["send_timeout_ms"])
          .to eq("key" => "task_readiness.event_channel.send_timeout_ms", "file" => base_file)
        expect(JSON.parse(out)["overflow_policy"]["sources"]["log_warning_threshold"])
          .to eq("key" => "overflow_policy.log_warning_threshold", "file" => base_file)
        expect(JSON.parse(out)["overflow_policy"]["sources"]["notice_interval_ms"])
          .to eq("key" => "overflow_policy.notice_interval_ms", "file" => base_file)
        expect(JSON.parse(out)["overflow_policy"]["notice_interval_ms"]).to eq(1000)
      end
    end

    it "exits 1 and prints every problem on stderr for an invalid config" do
      with_config_dir(
        "environments/test/mpsc_channels.toml" =>
          "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\n[task_readiness.event_channel]\nbuffer_size = 1\n"
      ) do |dir|
        status, out, err = cli("config", "--env", "test", "--config-dir", dir)
        expect([status, out]).to eq([1, ""])
        expect(err).to start_with("invalid channel configuration (2 problems):")
        expect(err).to include("shared.ffi.ruby_event_buffer_size: capacity must be an integer in 1..=16777216, got 0",
                               "write it as [mpsc_channels.task_readiness.event_channel]")
      end
    end

    it "exits 1 for an unknown environment or a missing config dir" do
      expect(cli("config", "--env", "staging").values_at(0, 2)).to match([1, /known environments: development/])
      expect(cli("config", "--config-dir", "/nonexistent/tasker").values_at(0, 2)).to match([1, /does not exist/])
    end
  end

  describe "usage" do
    [
      [[], "missing command"],
      [["deploy"], "unknown command: deploy"],
      [["--nope"], "invalid option: --nope"],
      [["config", "--nope"], "invalid option: --nope"],
      [["config", "--env"], "missing argument: --env"],
      [["config", "--env", "--json"], "missing argument: --env"],
      [["config", "--config-dir"], "missing argument: --config-dir"],
      [%w[config extra], "unexpected argument: extra"],
      [["config", "--config-dir", "/tmp/\xFF".b], "config_dir is not valid UTF-8"]
    ].each do |args, message|
      it "exits 2 with one error line and the usage for #{args.inspect}" do
        status, out, err = cli(*args)
        expect([status, out]).to eq([2, ""])
        expect(err.lines.first).to start_with("tasker-channels: #{message}")
        expect(err).to include("Usage: tasker-channels config [--env NAME] [--config-dir DIR] [--json]")
      end
    end

    [["--help"], ["-h"], ["config", "--help"], ["config", "-h"], ["--help", "config"]].each do |args|
      it "prints the usage and exits 0 for #{args.join(' ')}" do
        expect(cli(*args)).to match([0, start_with("Usage: tasker-channels config"), ""])
      end
    end

    it "prints the version" do
      expect(cli("--version")).to eq([0, "tasker-channels #{Tasker::Channels::VERSION}\n", ""])
    end
  end
end

RSpec.describe "exe/tasker-channels" do
  include ConfigDirHelpers

  let(:root) { ChildRuby::ROOT }
  let(:exe) { File.join(root, "exe/tasker-channels") }
  # The child must not inherit a developer's TASKER_* settings or RUBYOPT.
  let(:clean_env) { { "TASKER_ENV" => nil, "TASKER_CONFIG_DIR" => nil, "RUBYOPT" => nil } }

  # Runs the executable from the source tree, as `ruby -Ilib exe/tasker-channels ...`.
  def run_exe(*args, env: {})
    Open3.capture3(clean_env.merge(env), RbConfig.ruby, "-Ilib", exe, *args, chdir: root)
  end

  it "is an executable Ruby script" do
    expect(File.executable?(exe)).to be(true)
    expect(File.readlines(exe).first(2)).to eq(["#!/usr/bin/env ruby\n", "# frozen_string_literal: true\n"])
  end

  it "prints the channel table for config" do
    out, err, status = run_exe("config", "--env", "production")
    expect([status.exitstatus, err]).to eq([0, ""])
    channel_names.each { |name| expect(out).to include(name) }
    production = File.join(root, "config/tasker/environments/production/mpsc_channels.toml")
    expect(out).to match(/^orchestration\.command_processor\s+capacity \(command_buffer_size\)\s+5000\s+#{production}$/)
  end

  it "prints JSON with --json" do
    out, _, status = run_exe("config", "--json", "--env", "test")
    document = JSON.parse(out)
    expect(status.exitstatus).to eq(0)
    expect(document["environment"]).to eq("test")
    expect(document["channels"].to_h { |c| [c["name"], c["capacity"]] })
      .to eq(channel_names.zip([100, 10_000, 100, 1000, 1000, 5000, 1000]).to_h)
  end

  it "honours TASKER_ENV and --config-dir" do
    nine = "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 9\n"
    with_config_dir("environments/test/mpsc_channels.toml" => nine) do |dir|
      out, _, status = run_exe("config", "--config-dir", dir, env: { "TASKER_ENV" => "test" })
      expect(status.exitstatus).to eq(0)
      expect(out).to include("Environment: test")
      expect(out).to match(/^shared\.ffi\s+capacity \(ruby_event_buffer_size\)\s+9\s+#{Regexp.escape(dir)}/)
    end
  end

  it "exits 1 with the problems on stderr for an invalid config dir" do
    with_config_dir("base/mpsc_channels.toml" => "[mpsc_channels.overflow_policy]\ndrop_policy = \"dropp\"\n") do |dir|
      out, err, status = run_exe("config", "--env", "test", "--config-dir", dir)
      expect([status.exitstatus, out]).to eq([1, ""])
      expect(err).to include("overflow_policy.drop_policy: unknown overflow policy \"dropp\"")
    end
  end

  it "exits 2 on bad usage and 0 for --help" do
    _, err, status = run_exe("config", "--bogus")
    expect([status.exitstatus, err.lines.first]).to eq([2, "tasker-channels: invalid option: --bogus\n"])
    out, _, status = run_exe("--help")
    expect([status.exitstatus, out]).to match([0, start_with("Usage:")])
  end

  it "finds its own lib without -Ilib, from any directory" do
    out, err, status = Open3.capture3(clean_env, RbConfig.ruby, exe, "config", "--env", "test", chdir: Dir.tmpdir)
    expect([status.exitstatus, err]).to eq([0, ""])
    expect(out).to include(File.join(root, "config/tasker/base/mpsc_channels.toml"))
  end
end
