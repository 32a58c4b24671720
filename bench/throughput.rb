# frozen_string_literal: true

# (b) End-to-end throughput: N events published from one thread and counted by one handler
# on one dispatcher thread, against the same pipeline in pure Ruby: a SizedQueue with the
# capacity of shared.ffi and one consumer thread calling the same handler.
#
# Ours: `publish` raises Tasker::Backpressure when shared.ffi is full; the publisher then
# yields the GVL (Thread.pass) and retries, as the README tells callers to do. The Ruby
# pipeline's publisher simply blocks in SizedQueue#push. Both runs carry the same payload and
# stop the clock when the handler has counted the Nth event. A third variant publishes with
# `wait:` (the gem's own GVL-free wait for room) for context.
#
# Runs alternate (ours, Ruby, ours with wait:, ...) and the figure is the median events/s.
# The goal: ours >= 1.0x the Ruby pipeline.
#
#   ruby -Ilib bench/throughput.rb      (BENCH_EVENTS=n, BENCH_RUNS=n)

require_relative "support"

module Bench
  module Throughput
    NAME = "bench.event"
    ENVIRONMENT = "production"
    GOAL = 1.0

    module_function

    def title
      "(b) end-to-end publish -> handler throughput"
    end

    def run(log: nil)
      events = Integer(ENV.fetch("BENCH_EVENTS", 100_000))
      runs = Integer(ENV.fetch("BENCH_RUNS", 3))
      capacity = probe_capacity
      results = Hash.new { |hash, key| hash[key] = [] }
      variants = {
        ours_retry: -> { ours(events, retry_mode: :pass) },
        ruby_sized_queue: -> { ThroughputBaseline.run(events, capacity) },
        ours_wait: -> { ours(events, retry_mode: :wait) }
      }
      runs.times do |index|
        variants.each do |key, variant|
          GC.start
          result = variant.call
          results[key] << result
          log&.puts format("  run %<run>d %-16<key>s %<rate>10.0f events/s%<extra>s",
                           run: index + 1, key: key, rate: result[:rate], extra: extra(result))
        end
      end
      summarize(results, events, capacity)
    end

    def extra(result)
      result[:refusals] ? "  (#{result[:refusals]} Backpressure refusals)" : ""
    end

    # The runtimes under test use the shipped production settings; the Ruby queue copies
    # their shared.ffi capacity.
    def probe_capacity
      Bench.capacity_of(Tasker::Channels::Config.load(environment: ENVIRONMENT), "shared.ffi")
    end

    def payload
      { step_id: 1, task_id: 42, status: "complete" }
    end

    # A handler that counts, and signals when the last event arrives.
    def counting_handler(events, done)
      count = 0
      lambda do |_event|
        count += 1
        done.push(true) if count == events
      end
    end

    def ours(events, retry_mode:)
      runtime = Tasker::Channels::Runtime.new(environment: ENVIRONMENT, dispatch: :manual)
      done = Queue.new
      runtime.subscribe(NAME, &counting_handler(events, done))
      runtime.start(threads: 1)
      body = payload
      refusals = 0
      Bench.timed_events(events) do
        events.times { refusals += publish_one(runtime, body, retry_mode) }
        done.pop
      end.merge(refusals: retry_mode == :wait ? nil : refusals)
    ensure
      runtime&.shutdown(timeout: 10)
    end

    # Publishes one event; returns how many times Backpressure refused it first.
    def publish_one(runtime, body, retry_mode)
      return runtime.publish(NAME, body, wait: 10) && 0 if retry_mode == :wait

      refusals = 0
      begin
        runtime.publish(NAME, body)
      rescue Tasker::Backpressure
        refusals += 1
        Thread.pass
        retry
      end
      refusals
    end

    def summarize(results, events, capacity)
      median_of = ->(key) { results.transform_values { |runs| Bench.median(runs.map { |run| run[key] }) } }
      details = {
        events: events, capacity: capacity, payload: payload,
        runs: results.transform_values { |runs| runs.map { |run| run.transform_values { |v| rounded(v) } } }
      }
      { rows: rows(median_of.call(:rate), median_of.call(:cpu_us_per_event)), details: details }
    end

    def rounded(value)
      value.is_a?(Float) ? value.round(4) : value
    end

    def rows(rate, cpu)
      baseline = rate[:ruby_sized_queue]
      [
        Row.new(id: "b.throughput", benchmark: "(b) publish->handler throughput (retry on Backpressure)",
                ours: rate[:ours_retry], baseline: baseline, unit: "ev/s", ratio: rate[:ours_retry] / baseline,
                goal: ">= #{GOAL}x", met: rate[:ours_retry] / baseline >= GOAL),
        Row.new(id: "b.throughput_wait", benchmark: "(b) same, publish(wait:) instead of retry",
                ours: rate[:ours_wait], baseline: baseline, unit: "ev/s", ratio: rate[:ours_wait] / baseline,
                note: "context, no goal"),
        # Process CPU time per event (all threads): what the pipeline costs, apart from the time
        # its threads spend waiting for the GVL or a CPU. Lower is better, so the ratio is
        # baseline / ours to read like the throughput rows.
        Row.new(id: "b.cpu_per_event", benchmark: "(b) CPU per event, all threads (retry)",
                ours: cpu[:ours_retry], baseline: cpu[:ruby_sized_queue], unit: "us",
                ratio: cpu[:ruby_sized_queue] / cpu[:ours_retry], note: "context, no goal; ratio = baseline/ours")
      ]
    end
  end

  # The baseline: the same pipeline in pure Ruby. The publisher blocks in SizedQueue#push
  # when the queue is full; one consumer thread calls the same handler.
  module ThroughputBaseline
    module_function

    def run(events, capacity)
      queue = SizedQueue.new(capacity)
      done = Queue.new
      handler = Throughput.counting_handler(events, done)
      consumer = Thread.new do
        while (item = queue.pop)
          handler.call(item)
        end
      end
      body = Throughput.payload
      Bench.timed_events(events) do
        events.times { queue.push(body) }
        done.pop
      end
    ensure
      queue&.close
      consumer&.join
    end
  end
end

Bench.main(Bench::Throughput) if $PROGRAM_NAME == __FILE__
