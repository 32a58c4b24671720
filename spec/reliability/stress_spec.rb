# frozen_string_literal: true

require "json"
require "open3"

# How hard the reliability specs push. The normal run uses factor 1 (the whole file stays well
# under 20 s on 2 cores); `STRESS=1` (see `rake stress`) multiplies every count by
# STRESS_SCALE, 10 unless set.
module StressScale
  LONG = ENV["STRESS"] == "1"
  FACTOR = LONG ? Integer(ENV.fetch("STRESS_SCALE", "10")) : 1

  def self.of(count)
    count * FACTOR
  end

  # With STRESS_REPORT=1 each example prints the figures docs/reliability.md quotes.
  def self.report(what, figures)
    return unless ENV["STRESS_REPORT"] == "1"

    warn "stress: #{what}: #{figures.map { |key, value| "#{key}=#{value}" }.join(' ')}"
  end

  def self.now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # shared.ffi and worker.in_process_events at 8 places each (ChannelConfigHelpers'
  # `channels` form): publishers hit backpressure constantly and the dispatchers find a full
  # buffer on every wake-up. `ffi_settings` adds to shared.ffi's table.
  def self.tiny_bus(ffi: 8, in_process: 8, **ffi_settings)
    { "shared.ffi" => { capacity: ffi, **ffi_settings }, "worker.in_process_events" => { capacity: in_process } }
  end

  # Parent: 4 publisher threads publish non-stop into tiny buffers while the main thread
  # forks children one after another. Each child publishes its own events through the
  # inherited runtime (rebuilt on first use) and exits, half through exit (at_exit hooks),
  # half through shutdown + exit!. A child that hangs is killed after 30 s and reported.
  FORK_SCRIPT = <<~'RUBY'
    require "json"
    require "timeout"
    config_dir, children = ARGV[0], Integer(ARGV[1])
    parent = Process.pid
    runtime = Tasker::Channels::Runtime.new(environment: "test", config_dir: config_dir)
    delivered = Queue.new
    parent_events_in_child = 0
    runtime.subscribe("load.*") do |event|
      Process.pid == parent ? delivered << event.id : parent_events_in_child += 1
    end
    stop = false
    accepted = Queue.new
    publishers = Array.new(4) do |t|
      Thread.new do
        n = 0
        until stop
          begin
            accepted << runtime.publish("load.event", { t: t, n: n })
            n += 1
          rescue Tasker::Backpressure
            sleep 0.0005
          end
        end
      end
    end

    progress = []
    statuses = Array.new(children) do |i|
      progress << delivered.size
      pid = fork do
        got = Queue.new
        runtime.subscribe("child.*") { |event| got << event.payload[:n] }
        20.times do |n|
          runtime.publish("child.event", { n: n })
        rescue Tasker::Backpressure
          sleep 0.001
          retry
        end
        seen = Timeout.timeout(20) { Array.new(20) { got.pop } }
        exit!(2) unless seen.sort == (0...20).to_a
        exit!(4) unless parent_events_in_child.zero?
        i.even? ? exit(0) : exit!(runtime.shutdown(timeout: 20) ? 0 : 3)
      end
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
      loop do
        _, status = Process.wait2(pid, Process::WNOHANG)
        break status.exitstatus if status
        if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          Process.kill(:KILL, pid)
          Process.wait(pid)
          break "hung"
        end
        sleep 0.005
      end
    end
    progress << delivered.size
    stop = true
    publishers.each { |thread| thread.join(30) }
    finished = runtime.shutdown(timeout: 30)
    ids = []
    ids << accepted.pop until accepted.empty?
    seen = []
    seen << delivered.pop until delivered.empty?
    puts JSON.generate(statuses: statuses, progress: progress, finished: finished,
                       accepted: ids.sort, delivered: seen.sort, published: runtime.event_stats[:published])
  RUBY
end

RSpec.describe "Stress: the bus's promises under load", :stress do
  # Publishes until accepted, sleeping a little after each Tasker::Backpressure; returns
  # [id, how many times it was refused].
  def publish_until_accepted(runtime, name, payload)
    refusals = 0
    loop do
      return [runtime.publish(name, payload), refusals]
    rescue Tasker::Backpressure
      refusals += 1
      sleep(rand * 0.001)
    end
  end

  # `publishers` threads each publish `count` events {publisher:, seq:}; returns per publisher
  # [accepted ids, refusals]. Joins with a generous bound: a hang fails instead of blocking.
  def run_publishers(runtime, publishers:, count:)
    threads = Array.new(publishers) do |publisher|
      Thread.new do
        ids = []
        refusals = 0
        count.times do |seq|
          id, refused = publish_until_accepted(runtime, "stress.event", { publisher: publisher, seq: seq })
          ids << id
          refusals += refused
        end
        [ids, refusals]
      end
    end
    threads.map { |thread| thread.join(120) ? thread.value : raise("a publisher hung") }
  end

  def drain(queue)
    items = []
    items << queue.pop until queue.empty?
    items
  end

  describe "8 publishers against 8-place buffers, retrying on Tasker::Backpressure" do
    # shared.ffi may be configured "error" (the default), "drop" or "block" (drop_oldest is
    # refused by validation: it would discard accepted events). Whatever the policy, a
    # publish either returns an id whose event is delivered once, or raises and is counted.
    {
      "error" => {},
      "drop" => { overflow: "drop" },
      "block" => { overflow: "block", send_timeout_ms: 2 }
    }.each do |policy, settings|
      it "delivers every accepted event exactly once to jittery handlers on 2 dispatchers (shared.ffi #{policy})" do
        runtime = channel_runtime(StressScale.tiny_bus(**settings), dispatch: :auto)
        expect(channel_stats(runtime, "shared.ffi")).to include(capacity: 8, policy: policy)
        delivered = Queue.new
        runtime.subscribe("stress.*") do |event|
          sleep(rand * 0.0005) if rand < 0.2
          delivered << [event.id, event.payload[:publisher], event.payload[:seq]]
        end
        runtime.start(threads: 1)
        expect(runtime.dispatchers).to eq(2)

        per_publisher = StressScale.of(300)
        started = StressScale.now
        results = run_publishers(runtime, publishers: 8, count: per_publisher)
        expect(runtime.shutdown(timeout: 60)).to be(true)

        accepted = results.flat_map(&:first)
        refusals = results.sum(&:last)
        seen = drain(delivered)
        seen_ids = seen.map(&:first)
        expect(accepted.size).to eq(8 * per_publisher)
        expect(seen_ids.size).to eq(accepted.size)
        expect(seen_ids.uniq.size).to eq(seen_ids.size)
        expect(seen_ids.sort).to eq(accepted.sort)
        seen.group_by { |_, publisher, _| publisher }.each_value do |events|
          expect(events.map(&:last).sort).to eq((0...per_publisher).to_a)
        end

        expect(runtime.event_stats).to include(published: accepted.size, delivered: accepted.size, handler_errors: 0)
        ffi = channel_stats(runtime, "shared.ffi")
        # Every refusal is counted (as rejected, or as dropped under "drop"), none is silent.
        expect(ffi).to include(sent: accepted.size, received: accepted.size, length: 0)
        expect(ffi[:rejected] + ffi[:dropped]).to eq(refusals)
        StressScale.report("exactly once, shared.ffi #{policy}",
                           events: accepted.size, refusals: refusals, rejected: ffi[:rejected],
                           dropped: ffi[:dropped], blocked: ffi[:blocked],
                           seconds: (StressScale.now - started).round(2))
        expect(refusals).to be_positive unless policy == "block"
        expect(ffi[:dropped]).to eq(0) unless policy == "drop"
        expect(channel_stats(runtime, "worker.in_process_events")[:dropped]).to eq(0)
      end
    end

    it "keeps each publisher's order through one dispatcher thread" do
      runtime = channel_runtime(StressScale.tiny_bus, dispatch: :auto)
      delivered = Queue.new
      runtime.subscribe("stress.*") do |event|
        Thread.pass if rand < 0.3
        delivered << [event.payload[:publisher], event.payload[:seq]]
      end

      per_publisher = StressScale.of(150)
      run_publishers(runtime, publishers: 8, count: per_publisher)
      expect(runtime.shutdown(timeout: 60)).to be(true)

      by_publisher = drain(delivered).group_by(&:first).transform_values { |pairs| pairs.map(&:last) }
      expect(by_publisher.keys.sort).to eq((0...8).to_a)
      expect(by_publisher.values).to all(eq((0...per_publisher).to_a))
    end
  end

  describe "worker channel overflow under 4 producers and one consumer" do
    # 4 producers push [producer, i] into a 4-place worker.command_processor under `policy`
    # (yielding now and then so the consumer runs); one consumer pops until told to stop.
    # Reports the figures; returns [pushes, pushed values by outcome, received values, stats
    # taken after the consumer stopped, final length, values still queued].
    def overflow_run(policy)
      runtime = channel_runtime({ "worker.command_processor" => { capacity: 4, overflow: policy } })
      channel = runtime.channel("worker.command_processor")
      per_producer = StressScale.of(2000)
      pushed, received, stats, length, remaining = overflow_figures(channel, runtime, per_producer)
      StressScale.report(policy, pushes: 4 * per_producer, sent: stats[:sent], dropped: stats[:dropped],
                                 received: received.size, final_length: length)
      [4 * per_producer, pushed, received, stats, length, remaining]
    end

    def overflow_figures(channel, runtime, per_producer)
      stop = false
      received = []
      consumer = Thread.new do
        until stop
          value = channel.pop(timeout: 0.01)
          received << value if value
        end
      end
      producers = Array.new(4) do |producer|
        Thread.new do
          outcomes = { true => [], false => [] }
          per_producer.times do |i|
            Thread.pass if (i % 3).zero?
            outcomes[channel.push([producer, i])] << [producer, i]
          end
          outcomes
        end
      end
      pushed = producers.map { |thread| thread.join(120) ? thread.value : raise("a producer hung") }
      stop = true
      raise "the consumer hung" unless consumer.join(30)

      stats = channel_stats(runtime, channel.name)
      length = channel.size
      remaining = []
      while (value = channel.pop(timeout: 0))
        remaining << value
      end
      [{ true => pushed.flat_map { |o| o[true] }, false => pushed.flat_map { |o| o[false] } }, received, stats,
       length, remaining]
    end

    it "drop: sent == received + dropped + final length, and push's true/false match the counters" do
      total, pushed, received, stats, length, remaining = overflow_run("drop")
      expect(pushed[true].size + pushed[false].size).to eq(total)
      expect(pushed[false]).not_to be_empty
      expect(total).to eq(received.size + pushed[false].size + length)
      expect(stats).to include(sent: pushed[true].size, dropped: pushed[false].size, received: received.size,
                               length: length, rejected: 0, blocked: 0)
      # Exactly the values push said were sent came out, once each, in each producer's order.
      taken = received + remaining
      expect(taken.sort).to eq(pushed[true].sort)
      taken.group_by(&:first).each_value { |values| expect(values).to eq(values.sort) }
    end

    it "drop_oldest: every push is sent, and sent == received + dropped + final length" do
      total, pushed, received, stats, length, remaining = overflow_run("drop_oldest")
      expect(pushed[false]).to be_empty
      expect(stats).to include(sent: total, received: received.size, length: length, rejected: 0)
      expect(stats[:dropped]).to be_positive
      expect(total).to eq(received.size + stats[:dropped] + length)
      taken = received + remaining
      expect(taken.uniq.size).to eq(taken.size)
      expect(taken - pushed[true]).to be_empty
      taken.group_by(&:first).each_value { |values| expect(values).to eq(values.sort) }
    end
  end

  describe "shutdown while 8 publishers wait in publish(wait: 30)" do
    # Fills both bus buffers behind a handler held at `gate`, then parks 8 publishers in
    # publish(wait: 30). Returns [ids accepted before, the waiting threads].
    def park_publishers(runtime, gate)
      accepted = []
      runtime.subscribe("stress.*") { |event| gate.pop if event.payload[:hold] }
      accepted << runtime.publish("stress.event", { hold: true })
      fill_until_stuck(runtime, accepted)
      waiting = Array.new(8) do |n|
        Thread.new do
          runtime.publish("stress.event", { waiter: n }, wait: 30)
        rescue Tasker::Error => e
          e
        end
      end
      parked = eventually(within: 20) do
        waiting.all? { |thread| thread.status == "sleep" } && channel_stats(runtime, "shared.ffi")[:blocked] >= 8
      end
      expect(parked).to be(true), "the 8 publishers did not all park: #{waiting.map(&:status).inspect}"
      [accepted, waiting]
    end

    # Publishes until shared.ffi is full and stays full: the dispatcher may take a batch out of
    # it after it first looks full, so the fill only ends when a publish 20 ms after the last
    # one is still refused.
    def fill_until_stuck(runtime, accepted)
      loop do
        accepted << runtime.publish("stress.event", { filler: accepted.size })
      rescue Tasker::Backpressure
        row = runtime.stats.find { |stats| stats[:channel] == "shared.ffi" }
        next sleep(0.001) unless row[:length] == row[:capacity]

        sleep 0.02
        begin
          accepted << runtime.publish("stress.event", { filler: accepted.size })
        rescue Tasker::Backpressure
          break
        end
      end
    end

    # Shuts down while the publishers wait. `race: false`: every waiter has its answer before
    # the handler resumes. `race: true`: handlers (1 ms an event) resume 0-16 ms before the
    # shutdown starts, while room trickles to the waiters: some get in, others are closed out.
    def finish(runtime, gate, race:)
      delivered = Queue.new
      runtime.subscribe("stress.*") do |event|
        sleep 0.001 if race
        delivered << event.id
      end
      accepted, waiting = park_publishers(runtime, gate)
      if race
        gate << :go
        sleep(rand * 0.016)
      end
      shutting_down = Thread.new { runtime.shutdown(timeout: 60) }
      unless race
        eventually(within: 30) { waiting.none?(&:alive?) }
        gate << :go
      end
      outcomes = waiting.map { |thread| thread.join(30) ? thread.value : :hung }
      expect(shutting_down.join(60)&.value).to be(true)
      [accepted, outcomes, drain(delivered)]
    end

    it "wakes every waiter with Tasker::ClosedError, and delivers everything accepted" do
      StressScale.of(2).times do
        runtime = channel_runtime(StressScale.tiny_bus, dispatch: :auto)
        accepted, outcomes, delivered = finish(runtime, Queue.new, race: false)
        expect(outcomes).to all(be_a(Tasker::ClosedError))
        expect(delivered.sort).to eq(accepted.sort)
      end
    end

    it "gives each waiter an id or Tasker::ClosedError when handlers resume as shutdown begins" do
      # Two places in shared.ffi: room reaches the waiters a couple at a time instead of all
      # at once.
      StressScale.of(5).times do
        runtime = channel_runtime(StressScale.tiny_bus(ffi: 2, in_process: 1), dispatch: :auto)
        accepted, outcomes, delivered = finish(runtime, Queue.new, race: true)
        StressScale.report("shutdown with waiters, handlers resuming",
                           accepted_before: accepted.size, waiter_ids: outcomes.grep(Integer).size,
                           waiter_closed: outcomes.grep(Tasker::ClosedError).size)
        expect(outcomes).to all(be_a(Integer).or(be_a(Tasker::ClosedError)))
        expect(delivered.sort).to eq((accepted + outcomes.grep(Integer)).sort)
        expect(runtime.event_stats[:published]).to eq(delivered.size)
      end
    end
  end

  describe "runtime churn" do
    def os_threads
      Dir.children("/proc/self/task").size
    end

    def rss_kb
      File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i
    end

    # Builds, uses and shuts down `count` runtimes (one dispatcher each, a few events, a
    # worker channel round trip), then collects garbage.
    def churn(count)
      count.times do
        runtime = Tasker::Channels::Runtime.new(environment: "test")
        delivered = Queue.new
        runtime.subscribe("churn.*") { |event| delivered << event.id }
        10.times { |n| runtime.publish("churn.event", { n: n, text: "x" * 64 }) }
        10.times { delivered.pop }
        channel = runtime.channel("worker.command_processor")
        channel.push([1, "two", :three])
        channel.pop(timeout: 1)
        raise "shutdown did not finish" unless runtime.shutdown(timeout: 30)
      end
      GC.start
    end

    it "keeps OS threads and RSS flat over 50 runtimes created and shut down" do
      ruby_threads = Thread.list
      2.times { churn(50) } # warm-up: allocator arenas, the tokio runtime, Ruby's heap
      threads_before = os_threads
      rss_before = rss_kb

      StressScale.of(1).times { churn(50) }

      expect(Thread.list - ruby_threads).to be_empty
      # Ruby 3.1 keeps an exited thread's native thread cached for a few seconds for reuse.
      expect(eventually(within: 15) { os_threads <= threads_before }).to be(true)
      StressScale.report("runtime churn", runtimes: 50 * StressScale.of(1), threads_before: threads_before,
                                          threads_after: os_threads, rss_before_kb: rss_before, rss_after_kb: rss_kb)
      expect(rss_kb - rss_before).to be < 20 * 1024
    end

    # Regression: such a runtime used to keep its forwarder tasks and buffers forever
    # (about 290 KB each in the test environment).
    it "frees the channels of a runtime dropped without shutdown" do
      script = <<~RUBY
        rss = -> { File.read("/proc/self/status")[/^VmRSS:\\s+(\\d+)/, 1].to_i }
        churn = -> { 100.times { Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual) }; GC.start }
        2.times { churn.call }
        before = rss.call
        3.times { churn.call }
        puts rss.call - before
      RUBY
      out, err, status = run_ruby_script(script)
      expect([err, status.success?]).to eq(["", true])
      StressScale.report("300 runtimes dropped without shutdown", rss_growth_kb: out.to_i)
      expect(out.to_i).to be < 20 * 1024
    end
  end

  def run_ruby_script(script, *args)
    Open3.capture3({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", ChildRuby::PRELUDE + script, "--", *args)
  end

  describe "fork under load" do
    it "lets children publish and exit 0 while the parent keeps delivering" do
      children = StressScale.of(8)
      config_dir = channel_config_dir(StressScale.tiny_bus)
      out, err, status = run_ruby_script(StressScale::FORK_SCRIPT, config_dir, children.to_s)
      expect(err).to eq("")
      expect(status).to be_success
      result = JSON.parse(out, symbolize_names: true)
      StressScale.report("fork under load", children: children, statuses: result[:statuses].tally,
                                            parent_events: result[:accepted].size, progress: result[:progress].inspect)

      expect(result[:statuses]).to eq([0] * children)
      expect(result[:finished]).to be(true)
      expect(result[:delivered]).to eq(result[:accepted])
      expect(result[:published]).to eq(result[:accepted].size)
      # The parent delivered while the children came and went.
      expect(result[:progress].last).to be > result[:progress].first
    end
  end
end
