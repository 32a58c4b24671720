# frozen_string_literal: true

# profile: one benchmark's workload, run once with N events and no timing around it, for
# counting instructions under valgrind. Run it twice, with two values of N, and subtract the
# two profiles: start-up and exit cancel out, and the difference divided by the difference
# in N is the cost per event (docs/benchmarks.md, "Where the instructions go").
#
#   valgrind --tool=callgrind --callgrind-out-file=cg.publish.30000 \
#     ruby -Ilib bench/profile.rb publish 30000
#   callgrind_annotate --auto=no --inclusive=yes cg.publish.30000
#
# Scenarios: empty_loop, publish, push (publish_cost); refused, raise (refused_publish);
# e2e_name_payload, e2e_name_payload_queue, e2e_event, e2e_event_queue (throughput);
# rust_to_ruby, rust_to_ruby_queue (rust_to_ruby). Each uses the benchmark's own code.

require_relative "support"
require_relative "publish_cost"
require_relative "refused_publish"
require_relative "throughput"
require_relative "rust_to_ruby"

module Bench
  module Profile
    NAME = "bench.event"
    # One capacity for every N, so the two profiles' set-up costs the same and cancels out.
    CAPACITY = 40_000

    SCENARIOS = {
      "empty_loop" => ->(n) { CallRounds.loop_calls(n) { nil } },
      "publish" => ->(n) { publish(n) },
      "push" => ->(n) { push(n) },
      "refused" => ->(n) { refused(n) },
      "raise" => ->(n) { raise_rescue(n) },
      "e2e_name_payload" => ->(n) { Throughput.ours(n, :name_payload) },
      "e2e_name_payload_queue" => ->(n) { ThroughputBaseline.name_payload(n) },
      "e2e_event" => ->(n) { Throughput.ours(n, :event) },
      "e2e_event_queue" => ->(n) { ThroughputBaseline.event(n) },
      "rust_to_ruby" => ->(n) { RustToRuby.ours(n) },
      "rust_to_ruby_queue" => ->(n) { RustToRuby.baseline(n) }
    }.freeze

    module_function

    def run(scenario, events)
      SCENARIOS.fetch(scenario) { abort "unknown scenario #{scenario}; known: #{SCENARIOS.keys.join(', ')}" }
               .call(events)
    end

    # Accepted publishes of one pre-built Hash into a shared.ffi that holds them all.
    def publish(events)
      abort "publish: at most #{CAPACITY} events" if events > CAPACITY
      runtime = Bench.runtime(ffi: CAPACITY, dispatch: :manual)
      runtime.subscribe("**") { |_name, _payload| nil }
      payload = { step_id: 1 }
      CallRounds.loop_calls(events) { runtime.publish(NAME, payload) }
    end

    def push(events)
      queue = SizedQueue.new(CAPACITY)
      payload = { step_id: 1 }
      CallRounds.loop_calls(events) { queue.push(payload, true) }
    end

    def refused(events)
      runtime, = RefusedPublish.full_runtime
      payload = { step_id: 1 }
      CallRounds.loop_calls(events) { RefusedPublish.refused(runtime, payload) }
    end

    def raise_rescue(events)
      runtime, = RefusedPublish.full_runtime
      message = RefusedPublish.refusal_message(runtime)
      CallRounds.loop_calls(events) { RefusedPublish.raise_and_rescue(message) }
    end
  end
end

if $PROGRAM_NAME == __FILE__
  # The end-to-end scenarios return their figures; the refusals among them matter, as each
  # costs several times an accepted publish.
  result = Bench::Profile.run(ARGV.fetch(0), Integer(ARGV.fetch(1)))
  warn "profile: #{result.slice(:refusals, :objects_per_event)}" if result.is_a?(Hash)
end
