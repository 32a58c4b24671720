# frozen_string_literal: true

# throughput: end to end, Ruby to Ruby. N events published from one thread, each with a fresh
# 3-key Hash built in the publishing loop, counted by one handler on one dispatcher thread,
# against the same pipeline in pure Ruby: a SizedQueue with shared.ffi's capacity (1,000, the
# shipped setting) and one consumer thread calling the same handler.
#
# Two handler shapes, each with its own baseline:
# - `(name, payload)`: the handler gets the event name and the published Hash itself, and
#   nothing is allocated per event. Baseline: the consumer pops the Hash and calls the same
#   handler with (name, hash).
# - `Event` (one parameter): the dispatcher builds a frozen Tasker::Channels::Event per event.
#   Baseline: the producer builds a 5-member Struct like Event (id, name, payload, source,
#   published_at_ns, with a realtime clock read for the last) with Struct#new and pushes it;
#   the consumer calls the same handler with it.
#
# Ours: `publish` raises Tasker::Backpressure when shared.ffi is full; the publisher then
# yields the GVL (Thread.pass) and retries, as the README tells callers to do. The Ruby
# pipeline's publisher blocks in SizedQueue#push. The clock stops when the handler has counted
# the Nth event. A context variant publishes with `wait:` (the gem's own GVL-free wait for
# room) into a `(name, payload)` handler.
#
# Runs alternate over every variant; figures are the median and the best events/s over runs,
# with process CPU and Ruby objects allocated per event (all threads) in the details.
#
#   ruby -Ilib bench/throughput.rb      (BENCH_EVENTS=n, BENCH_RUNS=n)

require_relative "support"

module Bench
  module Throughput
    NAME = "bench.event"
    ENVIRONMENT = "production"
    CAPACITY = 1_000
    GOALS = { name_payload: Goal.new(:>=, 1.0, 1.2), event: Goal.new(:>=, 1.3, 1.5) }.freeze
    # [[ours, baseline], label] per row of the table.
    ROWS = [
      [%i[name_payload name_payload_queue], "e2e (name, payload) handler vs SizedQueue"],
      [%i[event event_queue], "e2e Event handler vs SizedQueue + Struct#new"],
      [%i[name_payload_wait name_payload_queue], "e2e (name, payload), publish(wait:)"]
    ].freeze

    # The Event baseline's event: the same five members as Tasker::Channels::Event.
    BaselineEvent = Struct.new(:id, :name, :payload, :source, :published_at_ns)

    module_function

    def title
      "throughput: Ruby -> Ruby, end to end"
    end

    def run(log: nil)
      events, runs = Settings.end_to_end_sizes
      Bench.require_capacity("shared.ffi", CAPACITY, environment: ENVIRONMENT)
      summarize(Rates.alternate(variants(events), runs: runs, log: log), events)
    end

    def variants(events)
      {
        name_payload: -> { ours(events, :name_payload) },
        name_payload_queue: -> { ThroughputBaseline.name_payload(events) },
        event: -> { ours(events, :event) },
        event_queue: -> { ThroughputBaseline.event(events) },
        name_payload_wait: -> { ours(events, :name_payload, wait: true) }
      }
    end

    # A handler of the given shape that counts, and signals when the last event arrives.
    def counting_handler(shape, events, done)
      count = 0
      case shape
      when :name_payload
        lambda do |_name, _payload|
          count += 1
          done.push(true) if count == events
        end
      when :event
        lambda do |_event|
          count += 1
          done.push(true) if count == events
        end
      end
    end

    def ours(events, shape, wait: false)
      runtime = Tasker::Channels::Runtime.new(environment: ENVIRONMENT, dispatch: :manual)
      done = Queue.new
      runtime.subscribe(NAME, &counting_handler(shape, events, done))
      runtime.start(threads: 1)
      refusals = nil
      Bench.timed_events(events) do
        refusals = wait ? publish_waiting(runtime, events) : publish_retrying(runtime, events)
        done.pop
      end.merge(refusals: refusals)
    ensure
      runtime&.shutdown(timeout: 10)
    end

    # Publishes `events` fresh Hashes, retrying on Backpressure; returns the refusals.
    def publish_retrying(runtime, events)
      refusals = 0
      i = 0
      while i < events
        payload = { step_id: i, task_id: 42, status: "complete" }
        begin
          runtime.publish(NAME, payload)
        rescue Tasker::Backpressure
          refusals += 1
          Thread.pass
          retry
        end
        i += 1
      end
      refusals
    end

    def publish_waiting(runtime, events)
      i = 0
      while i < events
        runtime.publish(NAME, { step_id: i, task_id: 42, status: "complete" }, wait: 10)
        i += 1
      end
      nil
    end

    def summarize(results, events)
      stats = results.transform_values { |runs| Rates.stats(runs) }
      details = { events: events, capacity: CAPACITY,
                  payload: "{ step_id: i, task_id: 42, status: \"complete\" }, fresh each",
                  medians: stats, runs: Rates.rounded(results) }
      rows = ROWS.map do |pair, label|
        Rates.row(stats, pair, id: "throughput.#{pair.first}", label: label, goal: GOALS[pair.first])
      end
      { rows: rows, details: details }
    end
  end

  # The baselines: the same pipelines in pure Ruby. The publisher builds the same fresh Hash
  # and blocks in SizedQueue#push when the queue is full; one consumer thread calls the same
  # handler.
  module ThroughputBaseline
    module_function

    def name_payload(events)
      pipeline(events, :name_payload) do |queue|
        i = 0
        while i < events
          queue.push({ step_id: i, task_id: 42, status: "complete" })
          i += 1
        end
      end
    end

    def event(events)
      pipeline(events, :event) do |queue|
        i = 0
        while i < events
          payload = { step_id: i, task_id: 42, status: "complete" }
          now = Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)
          queue.push(Throughput::BaselineEvent.new(i, Throughput::NAME, payload, :ruby, now))
          i += 1
        end
      end
    end

    def pipeline(events, shape)
      queue = SizedQueue.new(Throughput::CAPACITY)
      done = Queue.new
      handler = Throughput.counting_handler(shape, events, done)
      consumer = Thread.new { consume(queue, handler, shape) }
      Bench.timed_events(events) do
        yield queue
        done.pop
      end
    ensure
      queue&.close
      consumer&.join
    end

    def consume(queue, handler, shape)
      name = Throughput::NAME
      if shape == :name_payload
        while (item = queue.pop)
          handler.call(name, item)
        end
      else
        while (item = queue.pop)
          handler.call(item)
        end
      end
    end
  end
end

Bench.main(Bench::Throughput) if $PROGRAM_NAME == __FILE__
