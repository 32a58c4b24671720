# frozen_string_literal: true

require "open3"
require "rbconfig"
require "socket"

# The two layer files of a config dir's `test` environment.
module ConfigDirLayerFiles
  LAYER_FILES = %w[base/mpsc_channels.toml environments/test/mpsc_channels.toml].freeze
end

# What Config.load does with something other than a regular file where a layer file should
# be: it refuses it with a problem naming the path and what is there, without ever opening it.
RSpec.describe "Config files that are not regular files" do
  include ConfigDirHelpers

  around { |example| without_config_env { example.run } }

  # Loads the `test` configuration of `dir` in a fresh Ruby, killing it after `limit` seconds
  # (a load blocked with the GVL held ignores SIGTERM and SIGINT); returns [what it printed,
  # exit status or "signal N"]. `how` is `Config.load` or `Runtime.new`.
  def load_in_child(dir, how: "Tasker::Channels::Config.load", limit: 10)
    script = <<~RUBY
      $LOAD_PATH.unshift(#{File.expand_path('../lib', __dir__).inspect})
      require "tasker_channels"
      begin
        #{how}(environment: "test", config_dir: #{dir.inspect})
        puts "loaded"
      rescue Tasker::ConfigError => e
        puts e.message
      end
    RUBY
    Open3.popen2e({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", script) do |stdin, out, waiter|
      stdin.close
      reader = Thread.new { out.read }
      unless waiter.join(limit)
        Process.kill(:KILL, waiter.pid)
        waiter.join
      end
      status = waiter.value
      [reader.value, status.exited? ? status.exitstatus : "signal #{status.termsig}"]
    end
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
      expect(error.errors.map { |problem| problem[:file] }).to eq([directory, socket_path])
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

      expect(error.errors.map { |problem| problem[:file] }).to eq([link])
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
