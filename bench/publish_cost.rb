# frozen_string_literal: true

# publish_cost: what one accepted `publish` costs the calling thread, against a non-blocking
# `SizedQueue#push(x, true)` of the same Hash, with the cheapest possible native call of the
# same arity (`Tasker::Channels::Testing.noop(name, payload)`) as context.
#
# The buffer never fills: shared.ffi holds two rounds, the runtime is in manual dispatch mode,
# and between timed rounds (untimed) everything is dispatched to a no-op subscriber and the
# heap is collected. So a timed round measures the publish path alone: the name and payload
# checks, the top-level freeze, taking a slot, stamping the event and the non-blocking send
# of its slot index into shared.ffi, not the delivery.
#
# All calls of the headline rows reuse one pre-built payload (publish freezes it once, on the
# first call; a frozen Hash is not frozen again). A context pair builds a fresh 3-key Hash per
# call on both sides, so publish's freeze runs every time.
#
# Figures are thread CPU time per call with the empty loop taken off (Bench::CallRounds);
# the median over rounds is checked against the goal, the best round is shown next to it.
#
#   ruby -Ilib bench/publish_cost.rb            (BENCH_ROUNDS=n to change the round count)

require_relative "support"

module Bench
  module PublishCost
    NAME = "bench.event"
    ROUND = 5_000
    GOAL = Goal.new(:<=, 1.5, 1.1)

    module_function

    def title
      "publish_cost: one accepted publish"
    end

    def run(log: nil)
      rounds = Settings.count("BENCH_ROUNDS", 25)
      runtime = Bench.runtime(ffi: ROUND * 2, dispatch: :manual)
      runtime.subscribe("**") { |_name, _payload| nil }
      samples = CallRounds.measure(candidates(runtime), rounds: rounds, calls: ROUND)
      log&.puts "  #{rounds} rounds of #{ROUND} calls each"
      summarize(samples, rounds)
    ensure
      runtime&.shutdown(timeout: 5)
    end

    # name => [timed loop, untimed cleanup]
    def candidates(runtime)
      payload = { step_id: 1 }
      testing = Tasker::Channels::Testing
      queue = SizedQueue.new(ROUND)
      published = 0
      drain = lambda do
        published += ROUND
        Bench.drain(runtime, published)
      end
      calls = ->(&call) { -> { CallRounds.loop_calls(ROUND, &call) } }
      {
        empty_loop: [calls.call { nil }, nil],
        noop: [calls.call { testing.noop(NAME, payload) }, nil],
        publish: [calls.call { runtime.publish(NAME, payload) }, drain],
        sized_queue_push: [calls.call { queue.push(payload, true) }, -> { queue.clear }],
        fresh_hash_publish: [calls.call { runtime.publish(NAME, { step_id: 1, task_id: 42, status: "complete" }) },
                             drain],
        fresh_hash_push: [calls.call { queue.push({ step_id: 1, task_id: 42, status: "complete" }, true) },
                          -> { queue.clear }]
      }
    end

    def summarize(samples, rounds)
      figures = CallRounds.summary(samples)
      details = { round_calls: ROUND, rounds: rounds, clock: "thread CPU time, empty loop subtracted",
                  per_candidate: figures }
      { rows: rows(figures), details: details }
    end

    def rows(figures)
      pair = lambda do |ours, baseline|
        { ours: figures[ours][:median_ns], baseline: figures[baseline][:median_ns], unit: "ns",
          ratio: figures[ours][:median_ns] / figures[baseline][:median_ns],
          ratio_best: figures[ours][:best_ns] / figures[baseline][:best_ns] }
      end
      headline = pair.call(:publish, :sized_queue_push)
      [
        Row.new(id: "publish_cost.vs_sized_queue_push", benchmark: "publish vs SizedQueue#push(x, true)",
                **headline, **GOAL.row_fields(headline[:ratio], headline[:ratio_best]),
                note: "thread CPU ns per call, empty loop subtracted; the same pre-built Hash"),
        Row.new(id: "publish_cost.fresh_hash", benchmark: "publish vs push, fresh 3-key Hash each",
                **pair.call(:fresh_hash_publish, :fresh_hash_push),
                note: "context, no goal; building the Hash included"),
        Row.new(id: "publish_cost.vs_noop", benchmark: "publish vs no-op native call", **pair.call(:publish, :noop),
                note: "context, no goal (before the fast path its goal was <= 3x)")
      ]
    end
  end
end

Bench.main(Bench::PublishCost) if $PROGRAM_NAME == __FILE__
