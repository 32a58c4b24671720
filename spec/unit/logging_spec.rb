# frozen_string_literal: true

require "timeout"

# The extension's log records go to stderr filtered by TASKER_LOG, or to a Ruby
# logger on a Ruby thread through a bounded queue that drops (and counts) rather than wait.
RSpec.describe Tasker::Channels::Logging do
  # Records what it is handed, and on which thread; `gate` (a Queue) holds each call until
  # the example pushes to it.
  let(:logger_class) do
    Class.new do
      attr_reader :records

      def initialize(gate = nil)
        @records = Queue.new
        @gate = gate
      end

      %i[error warn info debug].each do |level|
        define_method(level) do |message|
          @gate&.pop
          @records << [level, message, Thread.current.name]
        end
      end

      def all
        list = []
        list << @records.pop until @records.empty?
        list
      end
    end
  end

  around do |example|
    saved = ENV.fetch("TASKER_LOG", nil)
    example.run
  ensure
    described_class.logger = nil
    described_class.queue_size = described_class::DEFAULT_QUEUE_SIZE
    saved.nil? ? ENV.delete("TASKER_LOG") : ENV["TASKER_LOG"] = saved
    described_class.reload_filter
  end

  def apply_log_filter(spec)
    ENV["TASKER_LOG"] = spec
    described_class.reload_filter
  end

  # One WARN record per call, never damped: each new invalid TASKER_LOG value is reported
  # once when applied (the filter falls back to the default, warn).
  def emit_warning(tag)
    apply_log_filter("tasker_channels_core=not_a_level_#{tag}")
  end

  # Fills a worker channel to 80 % (one WARN) and empties it (one INFO recovery).
  def saturate_and_drain(runtime)
    channel = runtime.channel("worker.command_processor")
    8.times { |n| channel.push(n) }
    8.times { channel.pop(timeout: 1) }
  end

  def records_from(logger, count)
    records = []
    wait_for("#{count} records in the logger (got #{records.inspect})") do
      records.concat(logger.all)
      records.size >= count
    end
    records
  end

  it "hands the extension's records to the logger on the tasker-log thread, by level" do
    logger = logger_class.new
    Tasker::Channels.logger = logger
    expect(Tasker::Channels.logger).to be(logger)
    emit_warning("a")

    level, message, thread = records_from(logger, 1).first
    expect([level, thread]).to eq([:warn, "tasker-log"])
    expect(message).to include("TASKER_LOG is not a valid filter", "not_a_level_a")
    expect(message).not_to include("WARN", "\n")
    expect(Tasker::Channels.log_stats).to include(output: :logger, installed: true, queue_capacity: 1024)
  end

  it "applies a TASKER_LOG changed after the first runtime was built" do
    logger = logger_class.new
    Tasker::Channels.logger = logger
    apply_log_filter("warn")
    saturate_and_drain(channel_runtime({ "worker.command_processor" => { capacity: 10 } }))
    expect(Tasker::Channels::Logging.flush(timeout: 5)).to be(true)
    expect(logger.all.map(&:first)).to eq([:warn])

    ENV["TASKER_LOG"] = "info"
    # Building a runtime re-reads the variable.
    saturate_and_drain(channel_runtime({ "worker.command_processor" => { capacity: 10 } }))
    records = records_from(logger, 2)
    expect(records.map(&:first)).to eq(%i[warn info])
    expect(records.last[1]).to include("channel recovered", "worker.command_processor")
  end

  it "drops and counts records while the logger falls behind, never blocking the emitter" do
    gate = Queue.new
    slow = logger_class.new(gate)
    described_class.queue_size = 2
    Tasker::Channels.logger = slow
    before = Tasker::Channels.log_stats
    emit_warning("first")
    wait_for("the reader to be stuck in the logger") { gate.num_waiting == 1 }
    8.times { |n| emit_warning(n) }

    stats = Tasker::Channels.log_stats
    expect(stats[:queued]).to eq(2)
    expect(stats[:dropped] - before[:dropped]).to eq(6)
    expect(channel_runtime.metrics).to include("tasker_log_records_dropped_total #{stats[:dropped]}")

    9.times { gate << true }
    expect(described_class.flush(timeout: 5)).to be(true)
    expect(slow.all.map { |_, message| message[/not_a_level_(\w+)/, 1] }).to eq(%w[first 0 1])
  end

  it "goes back to stderr when the logger is removed" do
    logger = logger_class.new
    Tasker::Channels.logger = logger
    Tasker::Channels.logger = nil
    expect(Tasker::Channels.log_stats).to include(output: :stderr, queue_capacity: 0)
    expect { emit_warning("stderr") }.to output(/WARN .*not_a_level_stderr/).to_stderr_from_any_process
    expect(logger.all).to be_empty
  end

  it "keeps delivering to a replaced logger and across a queue resize" do
    first = logger_class.new
    second = logger_class.new
    Tasker::Channels.logger = first
    emit_warning("one")
    records_from(first, 1)
    Tasker::Channels.logger = second
    described_class.queue_size = 16
    emit_warning("two")
    expect(records_from(second, 1).first[1]).to include("not_a_level_two")
    expect(Tasker::Channels.log_stats[:queue_capacity]).to eq(16)
    expect(first.all).to be_empty
  end

  it "starts a fresh reader in a forked child" do
    skip "fork is not available" unless Process.respond_to?(:fork)

    logger = logger_class.new
    Tasker::Channels.logger = logger
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      child_logger = logger_class.new
      Tasker::Channels.logger = child_logger
      emit_warning("child")
      writer.puts(records_from(child_logger, 1).first[1])
      exit!(0)
    end
    writer.close
    line = Timeout.timeout(20) { reader.gets }
    _, status = Process.wait2(pid)
    expect(status).to be_success
    expect(line).to include("not_a_level_child")
  ensure
    reader&.close
  end

  it "refuses a logger that lacks a level method, and a queue size out of range", :ill_typed do
    expect { Tasker::Channels.logger = Object.new }
      .to raise_error(ArgumentError, /must respond to error, warn, info, debug; .* lacks error, warn, info, debug/)
    expect { described_class.queue_size = 0 }.to raise_error(ArgumentError, /queue_size must be an Integer in 1\.\./)
    expect(Tasker::Channels.logger).to be_nil
  end
end
