# frozen_string_literal: true

module Tasker
  module Channels
    # Owns one set of channels built from one configuration, and the event bus over them.
    #
    # Ruby publishes into `shared.ffi`; the Rust side forwards events through
    # `worker.in_process_events` to dispatcher threads that wait in Rust without the GVL and
    # run the matching handlers here, in Ruby.
    class Runtime
      # How many events one dispatcher wake-up hands to Ruby at most.
      BATCH_SIZE = 256
      DISPATCH_MODES = %i[auto manual].freeze

      attr_reader :dispatch_mode, :subscriptions

      def initialize(environment: nil, config_dir: nil, dispatch: :auto)
        unless DISPATCH_MODES.include?(dispatch)
          raise ArgumentError, "dispatch: must be one of #{DISPATCH_MODES.inspect}, got #{dispatch.inspect}"
        end

        @dispatch_mode = dispatch
        @native = NativeRuntime.new(*Config.native_arguments(environment: environment, config_dir: config_dir))
        @lock = Mutex.new
        @subscriptions = [].freeze
        @dispatchers = []
        @dispatcher_count = 0
        @error_handler = method(:warn_handler_error)
      end

      def config
        @native.config
      end

      def environment
        config.environment
      end

      # The Ruby handle of a configured channel, for worker threads that push and pop directly.
      def channel(name)
        unless name.is_a?(String) || name.is_a?(Symbol)
          raise TypeError, "channel name must be a String or Symbol, got #{name.inspect}"
        end

        @native.channel(name.to_s)
      end

      # Puts an event into `shared.ffi` and returns its id. When the buffer is full it waits up
      # to `wait` seconds for room (without the GVL), then raises Tasker::Backpressure.
      def publish(name, payload = {}, wait: 0)
        # The hot path: straight to the extension, which rebuilds itself after a fork.
        @native.publish(name, payload, wait)
      end

      # Runs `handler` for every event whose name matches `pattern` (see Subscription).
      # The first subscription starts a dispatcher thread unless dispatch: :manual.
      def subscribe(pattern, &handler)
        raise ArgumentError, "subscribe needs a block" unless handler

        subscription = Subscription.new(pattern, handler, method(:remove_subscription))
        @lock.synchronize { @subscriptions = (@subscriptions + [subscription]).freeze }
        start(threads: 1) if @dispatch_mode == :auto && dispatchers.zero?
        subscription
      end

      # Where handler failures go: the block receives (error, event). Default: a warning on $stderr.
      def on_error(&block)
        raise ArgumentError, "on_error needs a block" unless block

        @error_handler = block
        self
      end

      # Runs `threads` more dispatcher threads. One thread keeps per-publisher order.
      def start(threads: 1)
        unless threads.is_a?(Integer) && threads.positive?
          raise ArgumentError, "threads: must be a positive Integer, got #{threads.inspect}"
        end

        @lock.synchronize do
          threads.times { @dispatchers << spawn_dispatcher }
          @dispatcher_count = @dispatchers.size
        end
        Channels.track(self)
        self
      end

      # Manual mode: waits up to `timeout` seconds (nil: until an event or shutdown) for events
      # and runs their handlers on this thread. Returns how many events reached a handler.
      def dispatch(timeout: 0)
        batch = @native.next_batch(BATCH_SIZE, timeout)
        batch ? deliver(batch) : 0
      end

      # Stops accepting events (publish raises Tasker::ClosedError, waiting publishers are woken
      # with it), delivers everything already accepted, and joins the dispatchers. Returns true
      # when everything was delivered within `timeout` seconds.
      def shutdown(timeout: 5)
        deadline = monotonic_now + checked_timeout(timeout)
        @native.close_intake
        threads = @lock.synchronize { @dispatchers.dup }
        if threads.any?(&:alive?)
          threads.each { |thread| thread.join([deadline - monotonic_now, 0].max) }
        else
          drain_until(deadline)
        end
        finished = @native.drained? && threads.none?(&:alive?)
        @lock.synchronize { @dispatchers.select!(&:alive?) }
        Channels.untrack(self) if finished
        finished
      end

      def closed?
        @native.closed?
      end

      def stats
        @native.stats
      end

      def event_stats
        @native.event_stats.merge(subscriptions: @subscriptions.size, dispatchers: dispatchers)
      end

      def metrics
        @native.metrics
      end

      def dispatchers
        @lock.synchronize { @dispatchers.count(&:alive?) }
      end

      def inspect
        "#<#{self.class.name} env=#{environment} subscriptions=#{@subscriptions.size} dispatchers=#{dispatchers}>"
      end

      # Called in a forked child by the Process._fork hook: the parent's dispatcher threads do
      # not exist here. The native side rebuilds its channels by itself on first use.
      def after_fork_in_child
        @lock = Mutex.new
        @dispatchers = []
        count = @dispatcher_count
        @dispatcher_count = 0
        start(threads: count) if count.positive?
      end

      private

      def spawn_dispatcher
        Thread.new do
          Thread.current.name = "tasker-dispatch"
          Thread.current.report_on_exception = true
          dispatch_loop
        end
      end

      def dispatch_loop
        while (batch = @native.next_batch(BATCH_SIZE, nil))
          deliver(batch)
        end
      end

      def drain_until(deadline)
        loop do
          remaining = deadline - monotonic_now
          break if remaining <= 0

          batch = @native.next_batch(BATCH_SIZE, [remaining, 0.1].min)
          break if batch.nil?

          deliver(batch)
        end
      end

      def deliver(batch)
        subscriptions = @subscriptions
        failures = 0
        unmatched = 0
        batch.each do |event|
          matched = false
          subscriptions.each do |subscription|
            next unless subscription.active? && subscription.match?(event.name)

            matched = true
            failures += 1 unless run_handler(subscription, event)
          end
          unmatched += 1 unless matched
        end
        delivered = batch.size - unmatched
        @native.record_delivery(delivered, failures, unmatched)
        delivered
      end

      def run_handler(subscription, event)
        subscription.call(event)
        true
      rescue StandardError => e
        report_handler_error(e, event)
        false
      end

      def report_handler_error(error, event)
        @error_handler.call(error, event)
      rescue StandardError => e
        warn_handler_error(e, event)
      end

      def warn_handler_error(error, event)
        warn "tasker_channels: handler for #{event.name} (event #{event.id}) raised #{error.class}: #{error.message}"
      end

      def remove_subscription(subscription)
        @lock.synchronize { @subscriptions = @subscriptions.reject { |s| s.equal?(subscription) }.freeze }
      end

      def checked_timeout(timeout)
        raise TypeError, "timeout: must be a number of seconds, got #{timeout.inspect}" unless timeout.is_a?(Numeric)
        return timeout if timeout.to_f.finite? && timeout >= 0

        raise ArgumentError, "timeout: must be a finite number of seconds >= 0, got #{timeout.inspect}"
      end

      def monotonic_now
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end
    end
  end
end
