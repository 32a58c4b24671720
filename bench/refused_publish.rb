# frozen_string_literal: true

# refused_publish: what a `publish` into a full shared.ffi costs the caller — the refusal
# (policy "error"), the Tasker::Backpressure it raises and the `rescue` that catches it —
# against `raise` + `rescue` of a plain StandardError subclass with the same message (one
# String, built once), in the same loop at the same stack depth, so both build the same
# backtrace.
#
# The runtime uses the shipped settings (shared.ffi 1,000 events, overflow "error") in manual
# dispatch mode, nobody dispatches, and shared.ffi is filled once before the first round, so
# every timed publish is refused and nothing is kept. Callers are told to retry on
# Backpressure, so under load this is a normal path, not a rare one.
#
# Figures are thread CPU time per call with the empty loop taken off (Bench::CallRounds); the
# median over rounds is checked against the goal, the best round is shown next to it.
#
#   ruby -Ilib bench/refused_publish.rb         (BENCH_ROUNDS=n to change the round count)

require_relative "support"

module Bench
  module RefusedPublish
    NAME = "bench.refused"
    ENVIRONMENT = "production"
    ROUND = 5_000
    GOAL = Goal.new(:<=, 2.0, 1.2)
    # The baseline's exception: a plain one, nothing but a message.
    class PlainError < StandardError; end

    module_function

    def title
      "refused_publish: publish into a full shared.ffi"
    end

    def run(log: nil)
      rounds = Settings.count("BENCH_ROUNDS", 25)
      runtime, accepted = full_runtime
      message = refusal_message(runtime)
      samples = CallRounds.measure(candidates(runtime, message), rounds: rounds, calls: ROUND)
      log&.puts "  shared.ffi filled with #{accepted} events; #{rounds} rounds of #{ROUND} calls each"
      summarize(samples, rounds, accepted, message)
    ensure
      runtime&.shutdown(timeout: 0)
    end

    # A manual-mode runtime whose shared.ffi is full; returns it and how many events filled it.
    def full_runtime
      runtime = Tasker::Channels::Runtime.new(environment: ENVIRONMENT, dispatch: :manual)
      [runtime, fill(runtime)]
    end

    # Publishes until the first refusal; returns how many were accepted.
    def fill(runtime)
      accepted = 0
      loop do
        runtime.publish(NAME, { seq: accepted })
        accepted += 1
      end
    rescue Tasker::Backpressure
      accepted
    end

    def refusal_message(runtime)
      runtime.publish(NAME, { step_id: 1 })
      raise "shared.ffi accepted an event after it refused one: nothing to measure"
    rescue Tasker::Backpressure => e
      e.message
    end

    # The baseline raises the very message Backpressure carries (one String, built once).
    def candidates(runtime, message)
      payload = { step_id: 1 }
      calls = ->(&call) { -> { CallRounds.loop_calls(ROUND, &call) } }
      {
        empty_loop: [calls.call { nil }, nil],
        refused_publish: [calls.call { refused(runtime, payload) }, nil],
        raise_rescue: [calls.call { raise_and_rescue(message) }, nil]
      }
    end

    def refused(runtime, payload)
      runtime.publish(NAME, payload)
    rescue Tasker::Backpressure
      nil
    end

    def raise_and_rescue(message)
      raise PlainError, message
    rescue PlainError
      nil
    end

    def summarize(samples, rounds, accepted, message)
      figures = CallRounds.summary(samples)
      ours = figures[:refused_publish]
      baseline = figures[:raise_rescue]
      median = ours[:median_ns] / baseline[:median_ns]
      best = ours[:best_ns] / baseline[:best_ns]
      row = Row.new(id: "refused_publish.vs_raise_rescue", benchmark: "refused publish vs raise + rescue",
                    ours: ours[:median_ns], baseline: baseline[:median_ns], unit: "ns",
                    **GOAL.row_fields(median, best),
                    note: "thread CPU ns per call, empty loop subtracted; Backpressure raised and rescued")
      details = { round_calls: ROUND, rounds: rounds, accepted_before_refusals: accepted,
                  refusal_message: message, per_candidate: figures }
      { rows: [row], details: details }
    end
  end
end

Bench.main(Bench::RefusedPublish) if $PROGRAM_NAME == __FILE__
