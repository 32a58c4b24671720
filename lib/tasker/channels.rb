# frozen_string_literal: true

require_relative "channels/channel"
require_relative "channels/config"
require_relative "channels/event"
require_relative "channels/subscription"
require_relative "channels/runtime"
require_relative "channels/fork_hook"
require_relative "channels/logging"
require_relative "channels/testing"
require_relative "channels/exit_hook"
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
    @exiting = false
    @exited = false
    @exit_timeout = nil

    class << self
      # The process's default runtime (environment and config dir from the environment).
      # After the gem's exit hook has run there is none to build: Tasker::ClosedError.
      def runtime
        @default_runtime || @default_lock.synchronize do
          raise ClosedError, "the process is exiting: the default runtime was shut down" if @exited

          @default_runtime ||= Runtime.new
        end
      end

      # How long the exit hook lets runtimes deliver what they accepted, in seconds:
      # TASKER_EXIT_TIMEOUT, else 5.
      def exit_timeout
        @exit_timeout || Float(ENV.fetch("TASKER_EXIT_TIMEOUT", 5))
      rescue ArgumentError
        raise ArgumentError, "TASKER_EXIT_TIMEOUT must be a number of seconds, got #{ENV.fetch('TASKER_EXIT_TIMEOUT')}"
      end

      def exit_timeout=(seconds)
        unless seconds.is_a?(Numeric) && seconds.to_f.finite? && seconds >= 0
          raise ArgumentError, "exit_timeout must be a finite number of seconds >= 0, got #{seconds.inspect}"
        end

        @exit_timeout = seconds
      end

      def publish(name, payload = nil, wait: 0, **fields)
        if payload.nil?
          runtime.publish(name, wait: wait, **fields)
        elsif fields.empty?
          runtime.publish(name, payload, wait: wait)
        else
          raise ArgumentError, "publish takes a payload Hash or payload keywords, not both"
        end
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

      # The logger the extension's log records go to (nil: stderr, the default). See Logging.
      def logger
        Logging.logger
      end

      def logger=(logger)
        Logging.logger = logger
      end

      # Where log records go and how many were forwarded or dropped. See Logging.stats.
      def log_stats
        Logging.stats
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

      # @api private: true once the process is exiting (dispatchers are not replaced then).
      def exiting?
        @exiting
      end

      # @api private: called from the gem's at_exit hook.
      def exiting!
        @exiting = true
      end

      # @api private: after the exit hook, nothing builds a default runtime any more.
      def exited!
        @exited = true
      end

      # @api private: the runtimes whose dispatchers run.
      def dispatching_runtimes
        @dispatching_lock.synchronize { @dispatching.keys }
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
        Logging.after_fork_in_child
        @dispatching.each_key { |runtime| runtime.after_fork_in_child if runtime.respond_to?(:after_fork_in_child) }
      end
    end
  end
end

at_exit do
  Tasker::Channels::ExitHook.run
  # What the shutdown logged should still reach the app's logger.
  Tasker::Channels::Logging.flush(timeout: 1)
end
