# frozen_string_literal: true

require "tasker_channels/rspec"

# The matchers `require "tasker_channels/rspec"` gives a user's specs. Each one must pass when
# the block does what it says and fail, with a message naming what was published, when not.
RSpec.describe Tasker::Channels::Matchers do
  def fail_matching(message)
    raise_error(RSpec::Expectations::ExpectationNotMetError, message)
  end

  %i[auto manual].each do |mode|
    context "on a runtime in #{mode} dispatch mode" do
      let(:runtime) { channel_runtime(dispatch: mode) }

      it "passes when the block publishes a matching event, by name, glob or Regexp" do
        expect { runtime.publish("step.completed", step_id: 1) }.to publish_event("step.completed").on(runtime)
        expect { runtime.publish("step.completed", step_id: 1) }.to publish_event("step.*").on(runtime)
        expect { runtime.publish("step.completed", step_id: 1) }.to publish_event(:"step.completed").on(runtime)
        expect { runtime.publish("step.completed", step_id: 1) }.to publish_event(/completed\z/).on(runtime)
      end

      it "fails when nothing matching is published, listing what was" do
        expect do
          expect { runtime.publish("step.started", step_id: 7) }.to publish_event("step.completed").on(runtime)
        end.to fail_matching(Regexp.new('expected the block to publish "step.completed", but it published 0 times.\n' \
                                        'Events the block published \(1\):\n  #\d+ step\.started \{:step_id=>7\}\z'))
      end

      it "matches payloads with payload_including, keys as given" do
        expect { runtime.publish("step.completed", step_id: 1, result: "ok") }
          .to publish_event("step.completed").with(payload_including(step_id: 1)).on(runtime)
        expect { runtime.publish("step.completed", { "step_id" => 1 }) }
          .to publish_event("step.completed").with(payload_including("step_id" => 1)).on(runtime)
        expect { runtime.publish("step.completed", step_id: 1) }
          .to publish_event("step.completed").with(payload_including(step_id: a_kind_of(Integer))).on(runtime)

        expect do
          expect { runtime.publish("step.completed", { "step_id" => 1 }) }
            .to publish_event("step.completed").with(payload_including(step_id: 1)).on(runtime)
        end.to fail_matching(/payload including \{:step_id=>1\}.*\(name matches; payload: no :step_id, but "step_id"/m)
        expect do
          expect { runtime.publish("step.completed", step_id: 2) }
            .to publish_event("step.completed").with(payload_including(step_id: 1)).on(runtime)
        end.to fail_matching(/payload: :step_id is 2\)/)
      end

      it "compares a whole payload given to with as a Hash" do
        expect { runtime.publish("step.completed", step_id: 1) }
          .to publish_event("step.completed").with(step_id: 1).on(runtime)
        expect do
          expect { runtime.publish("step.completed", step_id: 1, extra: true) }
            .to publish_event("step.completed").with(step_id: 1).on(runtime)
        end.to fail_matching(/with payload \{:step_id=>1\}/)
      end

      it "counts with once, twice, exactly, at_least and at_most" do
        publish_two = -> { 2.times { |n| runtime.publish("step.completed", step_id: n) } }
        expect(&publish_two).to publish_event("step.completed").twice.on(runtime)
        expect(&publish_two).to publish_event("step.completed").exactly(2).times.on(runtime)
        expect(&publish_two).to publish_event("step.completed").at_least(1).on(runtime)
        expect(&publish_two).to publish_event("step.completed").at_most(2).times.on(runtime)
        expect(&publish_two).to publish_event("step.completed").with(payload_including(step_id: 1)).once.on(runtime)
        expect do
          expect(&publish_two).to publish_event("step.completed").once.on(runtime)
        end.to fail_matching(/publish "step.completed" exactly once, but it published 2 times/)
      end

      it "negates: no matching event may be published" do
        expect { runtime.publish("step.started", {}) }.not_to publish_event("step.failed").on(runtime)
        expect { runtime.publish("step.completed", step_id: 1) }
          .not_to publish_event("step.completed").with(payload_including(step_id: 2)).on(runtime)
        expect do
          expect { runtime.publish("step.failed", step_id: 3) }.not_to publish_event("step.*").on(runtime)
        end.to fail_matching(/expected the block not to publish "step.\*", but it published once.*step.failed/m)
        expect { expect { nil }.not_to publish_event("x").once.on(runtime) }
          .to raise_error(ArgumentError, /takes no count/)
      end

      it "sees Rust-emitted events and leaves no subscription behind" do
        subscriptions = runtime.event_stats[:subscriptions]
        expect { runtime.emit("orchestration.tick", { n: 1 }) }
          .to publish_event("orchestration.tick").with(payload_including(n: 1)).on(runtime)
        expect(runtime.event_stats[:subscriptions]).to eq(subscriptions)
      end

      it "ignores events accepted before the block" do
        runtime.publish("step.completed", step_id: 0)
        expect { runtime.publish("step.started", {}) }.not_to publish_event("step.completed").on(runtime)
      end

      it "counts deliveries to handlers with have_delivered" do
        seen = Queue.new
        runtime.subscribe("step.completed") { |_name, payload| seen << payload }
        expect { 2.times { |n| runtime.publish("step.completed", step_id: n) } }.to have_delivered(2).on(runtime)
        expect(seen.size).to eq(2)
        expect { runtime.publish("nobody.listens", {}) }.not_to have_delivered.on(runtime)
        expect do
          expect { runtime.publish("nobody.listens", {}) }.to deliver_events(1).on(runtime)
        end.to fail_matching(/deliver 1 event to a handler, but 0 were delivered \(1 published, .*1 found no subscr/)
      end
    end
  end

  it "watches Tasker::Channels.runtime by default" do
    expect { Tasker::Channels.publish("default.runtime", ok: true) }
      .to publish_event("default.runtime").with(payload_including(ok: true))
  ensure
    Tasker::Channels.shutdown
  end

  it "describes itself for generated docstrings" do
    matcher = publish_event("step.completed").with(payload_including(step_id: 1)).exactly(3).times
    expect(matcher.description).to eq('publish "step.completed" with payload including {:step_id=>1} exactly 3 times')
    expect(have_delivered(2).description).to eq("deliver 2 events to a handler")
  end

  it "refuses what it cannot match", :ill_typed do
    expect { publish_event(42) }.to raise_error(ArgumentError, /an event name, a glob or a Regexp/)
    expect { publish_event("x").exactly(-1) }.to raise_error(ArgumentError, /non-negative Integer/)
    expect { payload_including([1]) }.to raise_error(ArgumentError, /needs a Hash/)
    expect { have_delivered("2") }.to raise_error(ArgumentError, /non-negative Integer or nil/)
  end
end
