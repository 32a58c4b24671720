# frozen_string_literal: true

# (a) What one `publish` costs the calling thread, against the cheapest possible native call
# with the same arity (`Tasker::Channels::Testing.noop(name, payload)`) and against a
# non-blocking `SizedQueue#push(x, true)`.
#
# The buffer never fills: shared.ffi and worker.in_process_events hold two rounds, the
# runtime is in manual dispatch mode, and between timed rounds (untimed) everything is
# dispatched to a no-op subscriber and the heap is collected. So a timed round measures the
# publish path alone: converting the payload, building the event, the non-blocking send
# (and any wake-up of the forwarder it triggers), not the delivery.
#
# Each round runs every candidate once, in a rotating order, over the same pre-built payload;
# an empty loop is timed too and subtracted, so "net" figures are the calls alone. Figures
# are medians over rounds of the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID): publish
# never blocks here, and on a loaded machine wall time mostly measures the scheduler (wall
# medians are in the details). The goal: publish <= 3x the no-op native call (net).
#
#   ruby -Ilib bench/publish_cost.rb            (BENCH_ROUNDS=n to change the round count)

require_relative "support"

module Bench
  module PublishCost
    NAME = "bench.event"
    ROUND = 5_000
    WARMUP_ROUNDS = 3
    GOAL = 3.0

    module_function

    def title
      "(a) publish cost"
    end

    def run(log: nil)
      rounds = Integer(ENV.fetch("BENCH_ROUNDS", 25))
      runtime = Bench.runtime(ffi: ROUND * 2, in_process: ROUND * 2, dispatch: :manual)
      runtime.subscribe("**") { |_event| nil }
      samples = measure(runtime, rounds)
      log&.puts "  #{rounds} rounds of #{ROUND} calls each"
      summarize(samples, rounds)
    ensure
      runtime&.shutdown(timeout: 5)
    end

    # Per-call seconds (thread CPU and wall) and Ruby allocations for each candidate, one
    # sample per round after the warm-up rounds.
    def measure(runtime, rounds)
      candidates = build_candidates(runtime)
      samples = { seconds: {}, wall_seconds: {}, allocations: {} }
      samples.each_value { |by_key| candidates.each_key { |key| by_key[key] = [] } }
      (WARMUP_ROUNDS + rounds).times do |round|
        candidates.keys.rotate(round % candidates.size).each do |key|
          sample = time_round(*candidates.fetch(key))
          next if round < WARMUP_ROUNDS

          sample.each { |kind, value| samples[kind][key] << value }
        end
      end
      samples
    end

    # One timed round from a clean heap, then its untimed cleanup.
    def time_round(run_call, cleanup)
      GC.start
      allocated_before = GC.stat(:total_allocated_objects)
      started = Bench.monotonic
      cpu_started = Bench.thread_cpu
      run_call.call
      cpu = Bench.thread_cpu - cpu_started
      elapsed = Bench.monotonic - started
      allocations = GC.stat(:total_allocated_objects) - allocated_before
      cleanup&.call
      { seconds: cpu / ROUND, wall_seconds: elapsed / ROUND, allocations: allocations.fdiv(ROUND) }
    end

    # name => [timed loop, untimed cleanup]
    def build_candidates(runtime)
      payload = { step_id: 1 }
      testing = Tasker::Channels::Testing
      native = runtime.instance_variable_get(:@native)
      queue = SizedQueue.new(ROUND)
      published = 0
      drain = lambda do
        published += ROUND
        Bench.drain(runtime, published)
      end
      {
        empty_loop: [-> { loop_calls { nil } }, nil],
        noop: [-> { loop_calls { testing.noop(NAME, payload) } }, nil],
        publish: [-> { loop_calls { runtime.publish(NAME, payload) } }, drain],
        native_publish: [-> { loop_calls { native.publish(NAME, payload, 0) } }, drain],
        sized_queue_push: [-> { loop_calls { queue.push(payload, true) } }, -> { queue.clear }]
      }
    end

    # A plain while loop (cheaper than Integer#times) around the call under test.
    def loop_calls
      i = 0
      while i < ROUND
        yield
        i += 1
      end
    end

    def summarize(samples, rounds)
      ns = ->(by_key) { by_key.transform_values { |values| Bench.median(values) * 1e9 } }
      gross = ns.call(samples[:seconds])
      net = gross.transform_values { |value| value - gross[:empty_loop] }
      details = {
        round_calls: ROUND, rounds: rounds, clock: "thread CPU time",
        median_ns_per_call_gross: gross.transform_values { |v| v.round(1) },
        median_ns_per_call_net: net.transform_values { |v| v.round(1) },
        median_wall_ns_per_call_gross: ns.call(samples[:wall_seconds]).transform_values { |v| v.round(1) },
        ruby_allocations_per_call: samples[:allocations].transform_values { |counts| Bench.median(counts) },
        ruby_wrapper_share_ns: (net[:publish] - net[:native_publish]).round(1)
      }
      { rows: rows(net), details: details }
    end

    def rows(net)
      ratio = net[:publish] / net[:noop]
      [
        Row.new(id: "a.publish_vs_noop", benchmark: "(a) publish vs no-op native call", ours: net[:publish],
                baseline: net[:noop], unit: "ns", ratio: ratio, goal: "<= #{GOAL}x", met: ratio <= GOAL,
                note: "thread CPU ns per call, empty loop subtracted"),
        Row.new(id: "a.publish_vs_sized_queue", benchmark: "(a) publish vs SizedQueue#push(x, true)",
                ours: net[:publish], baseline: net[:sized_queue_push], unit: "ns",
                ratio: net[:publish] / net[:sized_queue_push], note: "context, no goal")
      ]
    end
  end
end

Bench.main(Bench::PublishCost) if $PROGRAM_NAME == __FILE__
