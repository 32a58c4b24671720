# frozen_string_literal: true

require_relative "channels/channel"
require_relative "channels/config"
require_relative "channels/event"
require_relative "channels/subscription"
require_relative "channels/runtime"
require_relative "channels/fork_hook"
require_relative "channels/postgres"

module Tasker
  # Bounded, monitored channels and the in-process event bus of a Tasker worker.
  #
  # The module-level methods act on the process's default runtime, built on first use from
  # TASKER_ENV and TASKER_CONFIG_DIR and shut down gracefully at exit.
  module Channels
    # The gem's shipped configuration folder (base plus environment overrides).
    SHIPPED_CONFIG_DIR = File.expand_path("../../config/tasker", __dir__)

    @default_lock = Mutex.new
    @default_runtime = nil
    # Runtimes whose dispatcher threads the fork hook restarts in a child. Strong references,
    # held only while dispatchers run (their threads hold the runtime anyway): Ruby 3.1's
    # ObjectSpace::WeakMap corrupts the heap once GC.compact has moved its entries.
    @dispatching_lock = Mutex.new
    @dispatching = {}.compare_by_identity

    class << self
      # The process's default runtime (environment and config dir from the environment).
      def runtime
        @default_runtime || @default_lock.synchronize { @default_runtime ||= Runtime.new }
      end

      def publish(name, payload = {}, wait: 0)
        runtime.publish(name, payload, wait: wait)
      end

      def subscribe(pattern, &)
        runtime.subscribe(pattern, &)
      end

      def on_error(&)
        runtime.on_error(&)
      end

      def stats
        runtime.stats
      end

      def event_stats
        runtime.event_stats
      end

      def metrics
        runtime.metrics
      end

      def channel(name)
        runtime.channel(name)
      end

      # Shuts the default runtime down (if it was built) and forgets it; the next use builds a
      # fresh one. Called at exit.
      def shutdown(timeout: 5)
        current = @default_lock.synchronize do
          runtime = @default_runtime
          @default_runtime = nil
          runtime
        end
        current ? current.shutdown(timeout: timeout) : true
      end

      # @api private: `runtime` has dispatcher threads to restart after a fork.
      def track(runtime)
        @dispatching_lock.synchronize { @dispatching[runtime] = true }
      end

      # @api private: `runtime` has shut its dispatchers down.
      def untrack(runtime)
        @dispatching_lock.synchronize { @dispatching.delete(runtime) }
        runtime
      end

      # @api private: called in a forked child (threads holding these locks are gone).
      def after_fork_in_child
        @default_lock = Mutex.new
        @dispatching_lock = Mutex.new
        @dispatching.each_key { |runtime| runtime.after_fork_in_child if runtime.respond_to?(:after_fork_in_child) }
      end
    end
  end
end

at_exit { Tasker::Channels.shutdown }
