# frozen_string_literal: true

require "fileutils"
require "tmpdir"

# Runtimes over a temporary config dir whose `test` environment sizes and configures the
# channels an example needs, shut down (and the dir removed) after each example.
#
#   rt = channel_runtime("worker.command_processor" => { capacity: 4, overflow: "drop" })
#   rt.channel("worker.command_processor").capacity # => 4
module ChannelConfigHelpers
  # The capacity key of every channel table (docs/design.md §3), by channel name, in the order
  # Config#channels lists them.
  CAPACITY_KEYS = {
    "orchestration.command_processor" => "command_buffer_size",
    "orchestration.event_listeners" => "pgmq_event_buffer_size",
    "task_readiness.event_channel" => "buffer_size",
    "worker.command_processor" => "command_buffer_size",
    "worker.in_process_events" => "broadcast_buffer_size",
    "shared.event_publisher" => "event_queue_buffer_size",
    "shared.ffi" => "ruby_event_buffer_size"
  }.freeze
  CHANNEL_NAMES = CAPACITY_KEYS.keys.freeze
  # The bus's own channels: Ruby reaches them through publish/subscribe only.
  BUS_CHANNELS = %w[shared.ffi worker.in_process_events shared.event_publisher].freeze
  # Channels a Ruby worker thread may push to and pop from.
  WORKER_CHANNELS = (CHANNEL_NAMES - BUS_CHANNELS).freeze

  # TOML for `[mpsc_channels.<name>]` tables. `channels` maps a channel name to any of
  # `capacity:`, `overflow:` and `send_timeout_ms:`.
  def channel_config_toml(channels)
    channels.map do |name, settings|
      lines = ["[mpsc_channels.#{name}]"]
      lines << "#{CAPACITY_KEYS.fetch(name)} = #{settings[:capacity]}" if settings.key?(:capacity)
      lines << "overflow = #{settings[:overflow].to_s.dump}" if settings.key?(:overflow)
      lines << "send_timeout_ms = #{settings[:send_timeout_ms]}" if settings.key?(:send_timeout_ms)
      "#{lines.join("\n")}\n"
    end.join("\n")
  end

  # A config dir whose `environments/test/mpsc_channels.toml` sets `channels` (see
  # #channel_config_toml) followed by `extra` TOML text. Examples never change these files,
  # so one dir per distinct text is written per process (GC.stress makes every allocation
  # count) and removed at the end of the suite.
  def channel_config_dir(channels = {}, extra: "")
    text = channel_config_toml(channels) + extra
    ChannelConfigHelpers.config_dirs[text] ||= begin
      dir = Dir.mktmpdir("tasker-channels")
      path = File.join(dir, "environments", "test", "mpsc_channels.toml")
      FileUtils.mkdir_p(File.dirname(path))
      File.write(path, text)
      dir
    end
  end

  def self.config_dirs
    @config_dirs ||= {}
  end

  def self.remove_config_dirs
    config_dirs.each_value { |dir| FileUtils.remove_entry(dir, true) }
    config_dirs.clear
  end

  # A `test` runtime over #channel_config_dir, in manual dispatch mode unless told otherwise
  # (so no dispatcher thread runs unless an example asks for one).
  def channel_runtime(channels = {}, extra: "", dispatch: :manual)
    runtime = Tasker::Channels::Runtime.new(
      environment: "test", config_dir: channel_config_dir(channels, extra: extra), dispatch: dispatch
    )
    (@channel_runtimes ||= []) << runtime
    runtime
  end

  # The `stats` row of one channel.
  def channel_stats(runtime, name)
    runtime.stats.find { |row| row[:channel] == name } or raise ArgumentError, "no stats row for #{name}"
  end

  # Polls until the block returns a truthy value (then returns it) or `within` seconds pass
  # (then fails the example): a liveness bound, never a timing goal.
  def wait_for(what, within: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + within
    loop do
      value = yield
      return value if value
      raise RSpec::Expectations::ExpectationNotMetError, "gave up waiting for #{what}" if
        Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.002
    end
  end

  # Waits until `thread` is parked (in a GVL-free channel wait, Ruby reports it as "sleep").
  def wait_until_parked(thread)
    wait_for("#{thread.inspect} to wait") { !thread.alive? || thread.status == "sleep" }
  end

  # A thread that runs the block without printing its exception when it dies of one (the
  # examples inspect the exception through #join or #value).
  def quiet_thread(&block)
    Thread.new do
      Thread.current.report_on_exception = false
      block.call
    end
  end

  def shutdown_channel_runtimes
    (@channel_runtimes || []).each { |runtime| runtime.shutdown(timeout: 5) }
  end
end

# A `worker.command_processor` of 8 places that refuses when full, and a push-then-pop through
# it: for examples about what a value looks like after it has crossed into Rust and back.
RSpec.shared_context "an 8-place worker channel" do
  let(:name) { "worker.command_processor" }
  let(:runtime) { channel_runtime({ name => { capacity: 8, overflow: "error" } }) }
  let(:channel) { runtime.channel(name) }

  def round_trip(value)
    expect(channel.push(value)).to be(true)
    channel.pop(timeout: 5)
  end
end

RSpec.configure do |config|
  config.include ChannelConfigHelpers
  config.after { shutdown_channel_runtimes }
  config.after(:suite) { ChannelConfigHelpers.remove_config_dirs }
end
