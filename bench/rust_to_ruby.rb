# frozen_string_literal: true

# rust_to_ruby: events the Rust side emits, delivered to a Ruby handler. A Rust task emits N
# events (`Tasker::Channels::Testing.emit_from_rust(runtime, name, payload, count: N)`, which
# returns at once; each emit waits for room in shared.event_publisher), they travel
# shared.event_publisher -> worker.in_process_events (1,000, the shipped setting) -> one
# dispatcher thread, which builds each payload as a fresh Ruby Hash and calls a
# `(name, payload)` handler counting to N.
#
# Baseline: a Ruby producer thread building the same Hash for every event into a
# SizedQueue(1000), one consumer thread calling the same handler with (name, hash). Both
# clocks start before the producer starts and stop when the handler has counted the Nth
# event; the main thread waits meanwhile.
#
# Runs alternate; figures are the median and the best events/s over runs, with process CPU
# and Ruby objects allocated per event (all threads) in the details.
#
#   ruby -Ilib bench/rust_to_ruby.rb      (BENCH_EVENTS=n, BENCH_RUNS=n)

require_relative "support"

module Bench
  module RustToRuby
    NAME = "bench.rust"
    ENVIRONMENT = "production"
    CAPACITY = 1_000
    GOAL = Goal.new(:>=, 1.1, 1.4)

    module_function

    def title
      "rust_to_ruby: Rust-emitted events into a Ruby handler"
    end

    def payload
      { step_id: 1, task_id: 42, status: "complete" }
    end

    def run(log: nil)
      events, runs = Settings.end_to_end_sizes
      Bench.require_capacity("worker.in_process_events", CAPACITY, environment: ENVIRONMENT)
      results = Rates.alternate({ ours: -> { ours(events) }, ruby_producer: -> { baseline(events) } },
                                runs: runs, log: log)
      summarize(results, events)
    end

    def counting_handler(events, done)
      count = 0
      lambda do |_name, _payload|
        count += 1
        done.push(true) if count == events
      end
    end

    def ours(events)
      runtime = Tasker::Channels::Runtime.new(environment: ENVIRONMENT, dispatch: :manual)
      done = Queue.new
      runtime.subscribe(NAME, &counting_handler(events, done))
      runtime.start(threads: 1)
      body = payload
      Bench.timed_events(events) do
        Tasker::Channels::Testing.emit_from_rust(runtime, NAME, body, count: events)
        done.pop
      end
    ensure
      runtime&.shutdown(timeout: 10)
    end

    def baseline(events)
      queue = SizedQueue.new(CAPACITY)
      done = Queue.new
      handler = counting_handler(events, done)
      consumer = Thread.new do
        while (item = queue.pop)
          handler.call(NAME, item)
        end
      end
      Bench.timed_events(events) do
        producer = Thread.new do
          i = 0
          while i < events
            queue.push({ step_id: 1, task_id: 42, status: "complete" })
            i += 1
          end
        end
        done.pop
        producer.join
      end
    ensure
      queue&.close
      consumer&.join
    end

    def summarize(results, events)
      stats = results.transform_values { |runs| Rates.stats(runs) }
      label = "Rust->Ruby emit vs Ruby producer + SizedQueue"
      row = Rates.row(stats, %i[ours ruby_producer], id: "rust_to_ruby.vs_ruby_producer", label: label, goal: GOAL)
      details = { events: events, capacity: CAPACITY, payload: payload, medians: stats, runs: Rates.rounded(results) }
      { rows: [row], details: details }
    end
  end
end

Bench.main(Bench::RustToRuby) if $PROGRAM_NAME == __FILE__
