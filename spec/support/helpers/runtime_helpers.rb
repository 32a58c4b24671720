# frozen_string_literal: true

# Builds runtimes that are shut down after each example, and small waiting helpers that
# poll a condition instead of sleeping for a guessed time.
module RuntimeHelpers
  def build_runtime(**options)
    runtime = Tasker::Channels::Runtime.new(environment: "test", **options)
    (@built_runtimes ||= []) << runtime
    runtime
  end

  # Polls `condition` until it holds or `within` seconds pass; returns its last value.
  def eventually(within: 10, every: 0.005)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + within
    loop do
      value = yield
      return value if value || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep every
    end
  end

  # Dispatches by hand until `expected` events were delivered (or #eventually gives up);
  # returns how many were.
  def dispatch_until(runtime, expected)
    delivered = 0
    eventually { (delivered += runtime.dispatch(timeout: 0.05)) >= expected }
    delivered
  end

  # Busy-loop iterations a Ruby thread completes in `seconds` of wall time.
  def cpu_iterations(seconds)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    count = 0
    count += 1 while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
    count
  end

  # Publishes until Tasker::Backpressure; returns [accepted ids, the error].
  # Payloads carry `seq`, counting from `first_seq`.
  def publish_until_backpressure(runtime, name = "load.event", limit: 100_000, first_seq: 0)
    ids = []
    limit.times do |i|
      ids << runtime.publish(name, { seq: first_seq + i })
    rescue Tasker::Backpressure => e
      return [ids, e]
    end
    raise "no backpressure after #{limit} events"
  end

  # Publishes until shared.ffi (where dispatchers take Ruby events from, in one hop) is full,
  # so nothing moves until someone dispatches; returns the accepted ids.
  def fill_pipeline(runtime, name = "load.event", first_seq: 0)
    ids = []
    loop do
      more, = publish_until_backpressure(runtime, name, first_seq: first_seq + ids.size)
      ids.concat(more)
      lengths = runtime.stats.to_h { |row| [row[:channel], row[:length] == row[:capacity]] }
      return ids if lengths["shared.ffi"]

      sleep 0.001
    end
  end
end

RSpec.configure do |config|
  config.include RuntimeHelpers
  config.after do
    (@built_runtimes || []).each { |runtime| runtime.shutdown(timeout: 5) }
  end
end
