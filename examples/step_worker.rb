# frozen_string_literal: true

require "tasker_channels"

# A tiny Tasker-style worker, the subject of examples/worker_spec.rb: it takes "step.ready"
# events, runs the named step, and publishes "step.completed" with the result, or
# "step.failed" for a step it does not know. When the event bus pushes back it keeps the step
# for a later retry instead of losing it.
class StepWorker
  # Steps that could not be reported because the bus was full: [step_id, channel] pairs.
  attr_reader :deferred

  def initialize(runtime: Tasker::Channels.runtime, steps: {})
    @runtime = runtime
    @steps = steps
    @deferred = []
  end

  # Subscribes to "step.ready"; returns self.
  def start
    @subscription = @runtime.subscribe("step.ready") { |event| call(event.payload) }
    self
  end

  def stop
    @subscription&.unsubscribe
  end

  # Runs one step (`{step_id:, name:, input:}`); returns the id of the event it published,
  # or nil when the bus pushed back.
  def call(step)
    step_id = step.fetch(:step_id)
    run = @steps[step.fetch(:name)]
    return @runtime.publish("step.failed", step_id: step_id, error: "unknown step #{step[:name]}") unless run

    @runtime.publish("step.completed", step_id: step_id, result: run.call(step[:input]))
  rescue Tasker::Backpressure => e
    @deferred << [step_id, e.channel]
    nil
  end
end
