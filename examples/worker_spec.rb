# frozen_string_literal: true

# Specs for a worker built on tasker_channels, as an application would write them. From a
# checkout of the gem: `rspec -I lib examples/worker_spec.rb` (the gem's own suite runs it too).

require "tasker_channels/rspec"
require_relative "step_worker"

RSpec.describe StepWorker do
  # A runtime of its own per example, on the shipped test environment (small buffers).
  let(:runtime) { Tasker::Channels::Runtime.new(environment: "test") }
  let(:steps) { { "double" => ->(n) { n * 2 } } }
  let!(:worker) { described_class.new(runtime: runtime, steps: steps).start }

  after { runtime.shutdown(timeout: 5) }

  it "reports a finished step with its result" do
    expect { runtime.publish("step.ready", step_id: 1, name: "double", input: 21) }
      .to publish_event("step.completed").with(payload_including(step_id: 1, result: 42)).once.on(runtime)
  end

  it "does not report a known step as failed" do
    expect { runtime.publish("step.ready", step_id: 2, name: "double", input: 1) }
      .not_to publish_event("step.failed").on(runtime)
  end

  it "reports an unknown step as failed" do
    expect { runtime.publish("step.ready", step_id: 3, name: "triple", input: 1) }
      .to publish_event("step.failed").with(payload_including(step_id: 3, error: /unknown step triple/)).on(runtime)
  end

  it "handles every ready step" do
    publish_three = -> { 3.times { |n| runtime.publish("step.ready", step_id: n, name: "double", input: n) } }
    # Three step.ready events reach the worker; the step.completed events it publishes have no handler.
    expect(&publish_three).to have_delivered(3).on(runtime)
    expect(&publish_three)
      .to publish_event("step.ready").exactly(3).times.on(runtime)
      .and publish_event("step.completed").exactly(3).times.on(runtime)
  end

  it "keeps the step for later when the bus pushes back" do
    full = Tasker::Backpressure.new("shared.ffi is full", channel: "shared.ffi", capacity: 10, policy: :error)
    full_bus = double("runtime", subscribe: nil)
    allow(full_bus).to receive(:publish).and_raise(full)

    worker = described_class.new(runtime: full_bus, steps: steps)
    expect(worker.call(step_id: 4, name: "double", input: 2)).to be_nil
    expect(worker.deferred).to eq([[4, "shared.ffi"]])
  end
end
