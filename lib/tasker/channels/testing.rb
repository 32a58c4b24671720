# frozen_string_literal: true

module Tasker
  module Channels
    # Helpers for specs and benchmarks. The extension adds `panic!` (a Rust panic that must
    # arrive as Tasker::Error) and `noop` (the cheapest native call, a benchmark baseline).
    module Testing
      module_function

      # Returns at once; a Rust task then emits `count` events named `name` with `payload`
      # (plain data, converted once), each waiting for room in `shared.event_publisher`
      # whatever its policy, as a Rust producer that must not lose events would.
      def emit_from_rust(runtime, name, payload = {}, count: 1)
        raise ArgumentError, "count: must be a non-negative Integer, got #{count.inspect}" unless
          count.is_a?(Integer) && !count.negative?

        runtime.__send__(:_emit_from_rust, name, payload, count)
        nil
      end

      # Waits until everything `runtime` accepted so far has been delivered (dispatching on
      # this thread for manual and inline runtimes); true when it was, false when `timeout`
      # seconds passed first. Specs call this instead of sleeping.
      def drain(runtime, timeout: 1)
        runtime.drain(timeout: timeout)
      end

      # How many events `runtime` holds by reference right now: published and not yet
      # delivered (or left behind by a fork). Zero once everything was delivered.
      def slots_in_use(runtime)
        runtime.__send__(:_slots_in_use)
      end
    end
  end
end
