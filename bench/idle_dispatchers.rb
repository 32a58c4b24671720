# frozen_string_literal: true

# idle_dispatchers: what idle dispatchers cost the rest of the process: the speed of a CPU-bound Ruby
# thread (busy-loop iterations in a fixed wall time) while two dispatcher threads wait for
# events that never come, against the same thread with no runtime at all.
#
# A waiting dispatcher sits in Rust without the GVL and comes back to Ruby once per 2 s wait
# slice to let interrupts through; those returns are all it can cost. A control
# mode runs two plain Ruby threads blocked in Queue#pop instead: on a shared machine the
# spread between rounds is wide, and the control shows how far "no cost at all" strays.
# Each round runs every mode back to back (in rotating order); a ratio is the median over
# rounds of mode/alone, so slow drifts in machine load cancel out within a round. The CPU
# time the rest of the process used meanwhile is in the details.
# The goal: with dispatchers >= 95% of alone.
#
#   ruby -Ilib bench/idle_dispatchers.rb     (BENCH_ROUNDS=n, BENCH_ROUND_SECONDS=s)

require_relative "support"

module Bench
  module IdleDispatchers
    GOAL = 0.95
    DISPATCHERS = 2
    MODES = %i[alone with_dispatchers with_ruby_waiters].freeze
    SETTLE = 0.05
    INNER = 1_000

    module_function

    def title
      "idle_dispatchers: a CPU-bound thread while dispatchers wait"
    end

    def run(log: nil)
      rounds = Settings.count("BENCH_ROUNDS", 20)
      seconds = Settings.seconds("BENCH_ROUND_SECONDS", 0.2)
      samples = { iterations: {}, own_cpu: {}, others_cpu: {} }
      samples.each_value { |by_mode| MODES.each { |mode| by_mode[mode] = [] } }
      busy_loop(0.1) # warm-up
      rounds.times do |round|
        MODES.rotate(round % MODES.size).each do |mode|
          sample = send(mode) { busy_thread(seconds) }
          sample.each { |kind, value| samples[kind][mode] << value }
        end
      end
      log&.puts "  #{rounds} rounds of #{seconds} s per mode, #{DISPATCHERS} idle dispatchers"
      summarize(samples, rounds, seconds)
    end

    # Iterations of a plain Ruby loop a fresh thread completes in `seconds` of wall time, the
    # CPU time it got, and the CPU time every other thread of the process used meanwhile.
    def busy_thread(seconds)
      process_started = Bench.process_cpu
      iterations, own_cpu = Thread.new do
        cpu_started = Bench.thread_cpu
        [busy_loop(seconds), Bench.thread_cpu - cpu_started]
      end.value
      { iterations: iterations, own_cpu: own_cpu, others_cpu: Bench.process_cpu - process_started - own_cpu }
    end

    def busy_loop(seconds)
      deadline = Bench.monotonic + seconds
      iterations = 0
      while Bench.monotonic < deadline
        i = 0
        i += 1 while i < INNER
        iterations += i
      end
      iterations
    end

    # Both modes pause the same time before measuring, so neither starts on a CPU the other
    # just left busy or idle.
    def settled
      sleep SETTLE
      yield
    end

    def alone(&)
      settled(&)
    end

    def with_ruby_waiters(&)
      queue = Queue.new
      waiters = Array.new(DISPATCHERS) { Thread.new { queue.pop } }
      settled(&)
    ensure
      queue.close
      waiters&.each(&:join)
    end

    def with_dispatchers(&)
      runtime = Tasker::Channels::Runtime.new(environment: "production", dispatch: :manual)
      runtime.subscribe("never.published") { |_name, _payload| nil }
      runtime.start(threads: DISPATCHERS)
      settled(&) # the pause gives both dispatchers time to reach their GVL-free wait
    ensure
      runtime&.shutdown(timeout: 5)
    end

    def summarize(samples, rounds, seconds)
      iterations = samples[:iterations]
      rows = [row(iterations, :with_dispatchers, seconds), row(iterations, :with_ruby_waiters, seconds)]
      median = ->(by_mode, scale) { by_mode.transform_values { |v| (Bench.median(v) * scale).round(3) } }
      details = {
        rounds: rounds, round_seconds: seconds, iterations: iterations,
        # The busy thread's CPU time over the round's wall time: below 1 when it waited for a
        # CPU (machine load) or for the GVL.
        busy_thread_cpu_share_median: median.call(samples[:own_cpu], 1 / seconds),
        other_threads_cpu_ms_median: median.call(samples[:others_cpu], 1e3)
      }
      { rows: rows, details: details }
    end

    ROWS = {
      with_dispatchers: {
        id: "idle_dispatchers.cpu_bound", benchmark: "CPU-bound thread, #{DISPATCHERS} idle dispatchers",
        goal: ">= #{(GOAL * 100).round}%", note: "ratio: median of per-round with/alone"
      },
      with_ruby_waiters: {
        id: "idle_dispatchers.control", benchmark: "control: #{DISPATCHERS} Ruby threads in Queue#pop",
        note: "context: what no cost at all measures on this machine"
      }
    }.freeze

    def row(iterations, mode, seconds)
      ratio = Bench.median(iterations[mode].zip(iterations[:alone]).map { |w, a| w.fdiv(a) })
      spec = ROWS.fetch(mode)
      Row.new(**spec, ours: Bench.median(iterations[mode]) / seconds, unit: "it/s", ratio: ratio,
                      baseline: Bench.median(iterations[:alone]) / seconds, met: spec[:goal] && ratio >= GOAL)
    end
  end
end

Bench.main(Bench::IdleDispatchers) if $PROGRAM_NAME == __FILE__
