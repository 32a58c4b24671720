# frozen_string_literal: true

require "open3"
require "rbconfig"
require "timeout"

# docs/design.md §4: the Ruby handle on a configured channel. Each overflow policy, pop, close and the
# refusals are checked through the handle and the runtime's counters.
RSpec.describe "Tasker::Channels::Channel", :ffi do
  let(:name) { "worker.command_processor" }

  def channel_with(**settings)
    runtime = channel_runtime({ name => settings })
    [runtime, runtime.channel(name)]
  end

  # Everything queued, in order; `pop(timeout: 0)` must take a queued value without waiting.
  def drain(channel)
    values = []
    while (value = channel.pop(timeout: 0))
      values << value
    end
    values
  end

  describe "the handle" do
    it "reports the configured name, capacity and policy, and the queued size" do
      _runtime, channel = channel_with(capacity: 4, overflow: "drop_oldest")

      expect([channel.name, channel.capacity, channel.policy]).to eq([name, 4, "drop_oldest"])
      expect { channel.push(1) }.to change(channel, :size).from(0).to(1)
      expect(channel).not_to be_closed
    end

    it "accepts the channel name as a Symbol" do
      runtime, = channel_with(capacity: 4)

      expect(runtime.channel(name.to_sym).name).to eq(name)
    end

    it "uses overflow_policy.drop_policy for a channel without its own overflow" do
      runtime = channel_runtime({ name => { capacity: 2 } },
                                extra: "[mpsc_channels.overflow_policy]\ndrop_policy = \"drop\"\n")
      channel = runtime.channel(name)

      expect(channel.policy).to eq("drop")
      expect([channel.push(1), channel.push(2), channel.push(3)]).to eq([true, true, false])
    end

    it "raises ArgumentError listing every known channel for an unknown name" do
      runtime, = channel_with(capacity: 4)

      expect { runtime.channel("worker.command_processer") }.to raise_error(ArgumentError) do |error|
        expect(error.message).to include("worker.command_processer")
        ChannelConfigHelpers::CHANNEL_NAMES.each { |known| expect(error.message).to include(known) }
      end
    end

    ChannelConfigHelpers::BUS_CHANNELS.each do |bus_channel|
      it "refuses push and pop on the event bus's own #{bus_channel}, pointing at publish/subscribe" do
        runtime = channel_runtime
        channel = runtime.channel(bus_channel)

        expect { channel.push({ a: 1 }) }.to raise_error(ArgumentError, /publish/)
        expect { channel.pop(timeout: 0) }.to raise_error(ArgumentError, /subscribe/)
        expect(channel_stats(runtime, bus_channel)).to include(sent: 0, received: 0, length: 0)
      end
    end
  end

  describe "policy block" do
    # 250 ms spans several of the extension's wait slices: still one send, blocked once.
    it "waits up to send_timeout_ms, then raises Tasker::Backpressure and counts the send blocked and rejected" do
      runtime, channel = channel_with(capacity: 2, overflow: "block", send_timeout_ms: 250)
      2.times { |i| expect(channel.push(i)).to be(true) }

      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect { channel.push(:late) }.to raise_error(Tasker::Backpressure) do |error|
        expect([error.channel, error.capacity, error.policy]).to eq([name, 2, "block"])
      end
      waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started

      expect(waited).to be >= 0.25 # it waited for the configured 250 ms (a lower bound only)
      expect(channel_stats(runtime, name))
        .to include(sent: 2, length: 2, blocked: 1, rejected: 1, dropped: 0, full_events: 1)
      expect(drain(channel)).to eq([0, 1])
    end

    it "waits for room without a timeout and sends once a consumer takes a message" do
      runtime, channel = channel_with(capacity: 1, overflow: "block")
      channel.push(:first)
      pusher = quiet_thread { channel.push(:second) }
      wait_for("the push to block") { channel_stats(runtime, name)[:blocked] == 1 }

      expect(channel.pop).to eq(:first)
      expect(pusher.join(5)&.value).to be(true)
      expect(channel.pop(timeout: 5)).to eq(:second)
      expect(channel_stats(runtime, name)).to include(sent: 2, received: 2, blocked: 1, rejected: 0, full_events: 1)
    end
  end

  describe "policy drop" do
    it "discards the new message, returns false, counts it dropped and keeps the oldest" do
      runtime, channel = channel_with(capacity: 2, overflow: "drop")

      expect([channel.push(1), channel.push(2), channel.push(3), channel.push(4)]).to eq([true, true, false, false])
      expect(channel.size).to eq(2)
      expect(channel_stats(runtime, name))
        .to include(sent: 2, dropped: 2, rejected: 0, blocked: 0, full_events: 2)
      expect(drain(channel)).to eq([1, 2])
    end
  end

  describe "policy drop_oldest" do
    it "returns true, discards the oldest queued message and keeps the newest" do
      runtime, channel = channel_with(capacity: 2, overflow: "drop_oldest")

      expect([channel.push(1), channel.push(2), channel.push(3), channel.push(4)]).to all(be(true))
      expect(channel.size).to eq(2)
      expect(channel_stats(runtime, name)).to include(sent: 4, dropped: 2, rejected: 0, blocked: 0)
      expect(drain(channel)).to eq([3, 4])
    end
  end

  describe "policy error" do
    it "raises Tasker::Backpressure at once with the channel's name, capacity and policy, enqueueing nothing" do
      runtime, channel = channel_with(capacity: 2, overflow: "error")
      channel.push(1)
      channel.push(2)

      expect { channel.push(3) }.to raise_error(Tasker::Backpressure, /#{Regexp.escape(name)}/) do |error|
        expect(error).to be_a(Tasker::Error)
        expect([error.channel, error.capacity, error.policy]).to eq([name, 2, "error"])
      end
      expect(channel.size).to eq(2)
      # blocked stays 0: the send failed without waiting for room.
      expect(channel_stats(runtime, name)).to include(sent: 2, rejected: 1, blocked: 0, dropped: 0)
      expect(drain(channel)).to eq([1, 2])
      expect(channel.push(5)).to be(true)
    end
  end

  describe "#pop" do
    it "returns queued values first in, first out" do
      _runtime, channel = channel_with(capacity: 8)
      %w[a b c].each { |value| channel.push(value) }

      expect(3.times.map { channel.pop }).to eq(%w[a b c])
    end

    it "returns nil when nothing arrives before the timeout, having waited for all of it" do
      _runtime, channel = channel_with(capacity: 8)

      expect(channel.pop(timeout: 0)).to be_nil
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect(channel.pop(timeout: 0.25)).to be_nil # longer than one wait slice
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be >= 0.25
    end

    it "rejects a negative or non-finite timeout" do
      _runtime, channel = channel_with(capacity: 8)

      expect { channel.pop(timeout: -1) }.to raise_error(ArgumentError, /timeout/)
      expect { channel.pop(timeout: Float::NAN) }.to raise_error(ArgumentError, /timeout/)
    end

    it "gets a value another thread pushes while it waits" do
      runtime, channel = channel_with(capacity: 8)
      consumer = quiet_thread { channel.pop }
      wait_until_parked(consumer)

      channel.push({ job: 7 })

      expect(consumer.join(5)&.value).to eq({ job: 7 })
      expect(channel_stats(runtime, name)).to include(sent: 1, received: 1, length: 0)
    end
  end

  describe "#close" do
    it "wakes a waiting pop with nil and makes push raise Tasker::ClosedError" do
      _runtime, channel = channel_with(capacity: 8, overflow: "drop")
      consumer = quiet_thread { channel.pop }
      wait_until_parked(consumer)

      expect(channel.close).to be(true)

      expect(consumer.join(5)).not_to be_nil
      expect(consumer.value).to be_nil
      expect(channel).to be_closed
      expect { channel.push(1) }.to raise_error(Tasker::ClosedError)
      expect(channel.size).to eq(0)
    end

    it "still hands out what was queued, then nil" do
      _runtime, channel = channel_with(capacity: 8)
      channel.push(1)
      channel.push(2)
      channel.close

      expect([channel.pop, channel.pop(timeout: 1), channel.pop]).to eq([1, 2, nil])
    end

    it "wakes a push blocked on a full channel with Tasker::ClosedError" do
      _runtime, channel = channel_with(capacity: 1, overflow: "block")
      channel.push(:kept)
      pusher = quiet_thread { channel.push(:refused) }
      wait_until_parked(pusher)

      channel.close

      expect { pusher.join(5) }.to raise_error(Tasker::ClosedError)
      expect(channel.pop).to eq(:kept)
      expect(channel.pop).to be_nil
    end

    it "reports whether this call closed the channel" do
      _runtime, channel = channel_with(capacity: 8)

      expect([channel.close, channel.close]).to eq([true, false])
    end
  end
end

# Ruby threads around the channel: counters stay exact under contention, waits can be
# interrupted, and a waiting thread leaves the GVL to the others. Not tagged :ffi: these
# loop and wait, which GC.stress would make very slow.
RSpec.describe "Tasker::Channels::Channel with Ruby threads" do
  let(:name) { "worker.command_processor" }

  # Interrupted waits end with this exception (or none, for Thread#kill).
  let(:stop_waiting) { Class.new(StandardError) }

  def interrupt(thread, how)
    case how
    when :kill then thread.kill
    when :raise then thread.raise(stop_waiting, "stop waiting")
    end
  end

  # Runs the block in a thread, wrapped in Timeout.timeout(1) for :timeout, and interrupts
  # it once it waits. Returns the thread after it ended (the example fails if it did not
  # end within 5 s) and the exception it ended with.
  def interrupted_wait(how, &block)
    body = how == :timeout ? -> { Timeout.timeout(1, &block) } : block
    thread = quiet_thread(&body)
    wait_until_parked(thread)
    interrupt(thread, how)
    begin
      joined = thread.join(5)
    rescue StandardError => e
      return [thread, e]
    end
    raise RSpec::Expectations::ExpectationNotMetError, "the interrupted thread is still waiting" unless joined

    [thread, nil]
  end

  def expect_ended_by(how, thread, error)
    expect(thread).not_to be_alive
    case how
    when :kill then expect(error).to be_nil
    when :raise then expect(error).to be_a(stop_waiting).and(have_attributes(message: "stop waiting"))
    when :timeout then expect(error).to be_a(Timeout::Error)
    end
  end

  { "Thread#kill" => :kill, "Thread#raise" => :raise, "Timeout.timeout" => :timeout }.each do |label, how|
    it "lets #{label} reach a push blocked on a full block channel without a timeout" do
      runtime = channel_runtime({ name => { capacity: 1, overflow: "block" } })
      channel = runtime.channel(name)
      channel.push(:kept)

      thread, error = interrupted_wait(how) { channel.push(:interrupted) }

      expect_ended_by(how, thread, error)
      expect(channel_stats(runtime, name)).to include(length: 1, sent: 1, blocked: 1, rejected: 1)
      expect(channel.pop).to eq(:kept)
      expect(channel.push(:after)).to be(true)
      expect(channel.pop).to eq(:after)
    end

    it "lets #{label} reach a pop waiting on an empty channel" do
      runtime = channel_runtime({ name => { capacity: 4 } })
      channel = runtime.channel(name)

      thread, error = interrupted_wait(how) { channel.pop }

      expect_ended_by(how, thread, error)
      expect(channel.push(:after)).to be(true)
      expect(channel.pop(timeout: 5)).to eq(:after)
      expect(channel_stats(runtime, name)).to include(sent: 1, received: 1, length: 0)
    end
  end

  it "keeps exact counters while 4 producer threads push into a small drop channel and a consumer pops" do
    runtime = channel_runtime({ name => { capacity: 8, overflow: "drop" } })
    channel = runtime.channel(name)
    producers_done = false
    consumed = []
    consumer = Thread.new do
      consumed << channel.pop(timeout: 0.01) until producers_done && channel.size.zero?
      consumed.compact!
    end

    results = Array.new(4) do |producer|
      Thread.new do
        Array.new(2_000) do |seq|
          Thread.pass if (seq % 16).zero?
          channel.push([producer, seq])
        end
      end
    end.map(&:value)
    producers_done = true
    consumer.join

    sent = results.flatten.count(true)
    dropped = results.flatten.count(false)
    stats = channel_stats(runtime, name)
    expect(sent + dropped).to eq(8_000)
    expect(stats).to include(sent: sent, dropped: dropped, received: consumed.size, length: 0, rejected: 0)
    expect(stats[:sent]).to eq(stats[:received] + stats[:length])
    expect(consumed.size).to be > 8 # the consumer took part, not just the first fill
    # Each accepted message arrived once, and each producer's messages in the order sent.
    accepted = results.each_with_index.flat_map do |outcomes, producer|
      outcomes.each_index.select { |seq| outcomes[seq] }.map { |seq| [producer, seq] }
    end
    expect(consumed).to match_array(accepted)
    consumed.group_by(&:first).each_value { |messages| expect(messages).to eq(messages.sort) }
  end

  # Ruby 3.1 starts a helper thread for each GVL release by the lone main thread unless the
  # unblock function is async-signal-safe: ~200x slower, and a hang under GC.stress.
  it "pushes and pops without waiting without starting a Ruby thread, even on the only Ruby thread" do
    dir = channel_config_dir({ name => { capacity: 4, overflow: "block" } })
    script = <<~RUBY
      require "tasker_channels"
      runtime = Tasker::Channels::Runtime.new(environment: "test", config_dir: ARGV[0], dispatch: :manual)
      channel = runtime.channel(#{name.dump})
      abort "another thread is alive" unless Thread.list.size == 1
      GC.disable
      before = ObjectSpace.each_object(Thread).count
      50.times { channel.push(1) && channel.pop(timeout: 0) }
      puts ObjectSpace.each_object(Thread).count - before
    RUBY

    out, err, status = Open3.capture3(RbConfig.ruby, "-I", ChildRuby::LIB, "-e", script, dir)

    expect(status).to be_success, err
    expect(Integer(out)).to eq(0)
  end

  it "lets a CPU-bound Ruby thread keep its speed while another thread waits in pop" do
    runtime = channel_runtime({ name => { capacity: 4 } })
    channel = runtime.channel(name)
    alone = 0
    beside_waiter = 0

    # Alternating rounds, so a burst of load elsewhere on the machine hits both sides.
    3.times do
      alone += cpu_iterations(0.2)
      waiter = quiet_thread { channel.pop }
      wait_until_parked(waiter)
      beside_waiter += cpu_iterations(0.2)
      expect(waiter.status).to eq("sleep") # still waiting, in a blocking region (no GVL)
      channel.push(:wake)
      expect(waiter.join(5)&.value).to eq(:wake)
    end

    # A wait holding the GVL would stall this thread (ratio near 0); a GVL-free one costs little.
    expect(beside_waiter.fdiv(alone)).to be >= 0.5
  end
end
