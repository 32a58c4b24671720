# frozen_string_literal: true

module Tasker
  module Channels
    # Owns one set of channels built from one configuration, and the event bus over them.
    #
    # The class is defined by the extension, which implements `publish`, `stats`, `metrics`,
    # `closed?`, `emit` and the private `_`-prefixed primitives used below; this file adds
    # the Ruby-facing lifecycle.
    #
    # Ruby publishes into `shared.ffi`: the payload stays a Ruby object, kept by reference in a
    # table the runtime owns, and dispatcher threads take events from `shared.ffi` directly.
    # Events the Rust side emits arrive through `worker.in_process_events`. Dispatchers wait in
    # Rust without the GVL and call the matching handlers on their own Ruby thread.
    class Runtime
      DISPATCH_MODES = %i[auto manual inline].freeze
      # The most dispatcher threads one runtime runs.
      MAX_DISPATCHERS = 64

      # The subscriptions currently active, in the order they were made.
      attr_reader :dispatch_mode, :subscriptions

      def initialize(environment: nil, config_dir: nil, dispatch: :auto)
        unless DISPATCH_MODES.include?(dispatch)
          raise ArgumentError, "dispatch: must be one of #{DISPATCH_MODES.inspect}, got #{dispatch.inspect}"
        end

        _setup(*Config.native_arguments(environment: environment, config_dir: config_dir))
        @dispatch_mode = dispatch
        @lock = Mutex.new
        @subscriptions = [].freeze
        @dispatchers = []
        @dispatcher_count = 0
        @dispatcher_restarts = 0
        @pid = Process.pid
        @error_handler = method(:warn_handler_error)
        singleton_class.prepend(InlineDispatch) if dispatch == :inline
      end

      # `dispatch: :inline` (for specs): `publish` runs the matching handlers on the caller's
      # thread before it returns. Rust-emitted events are delivered at the next publish or
      # drain. A publish from inside a handler is delivered once that handler returns.
      module InlineDispatch
        def publish(...)
          id = super
          deliver_inline
          id
        end

        def drain(timeout: 1)
          deliver_inline
          super
        end

        private

        def deliver_inline
          return if Thread.current[:tasker_channels_inline_dispatch]

          Thread.current[:tasker_channels_inline_dispatch] = true
          begin
            nil while (_dispatch(0) || 0).positive?
          ensure
            Thread.current[:tasker_channels_inline_dispatch] = false
          end
        end
      end

      def environment
        config.environment
      end

      # The Ruby handle of a configured channel, for worker threads that push and pop directly.
      def channel(name)
        unless name.is_a?(String) || name.is_a?(Symbol)
          raise TypeError, "channel name must be a String or Symbol, got #{name.inspect}"
        end

        _channel(name.to_s)
      end

      # Runs `handler` for every event whose name matches `pattern` (see Subscription). A block
      # with one parameter receives a frozen Event; a block with two receives `(name, payload)`
      # and costs no allocation per event. The first subscription starts a dispatcher thread
      # unless dispatch: :manual.
      def subscribe(pattern, &handler)
        raise ArgumentError, "subscribe needs a block" unless handler

        id = _subscribe(pattern, handler)
        subscription = Subscription.new(pattern, id, self)
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

      # Runs `threads` more dispatcher threads (at most MAX_DISPATCHERS in all). One thread
      # keeps per-publisher order.
      def start(threads: 1)
        unless threads.is_a?(Integer) && threads.positive?
          raise ArgumentError, "threads: must be a positive Integer, got #{threads.inspect}"
        end

        @lock.synchronize do
          live = @dispatchers.count(&:alive?)
          if live + threads > MAX_DISPATCHERS
            raise ArgumentError,
                  "threads: #{threads} more would make #{live + threads} dispatchers; at most #{MAX_DISPATCHERS}"
          end

          threads.times { @dispatchers << spawn_dispatcher }
          @dispatcher_count = @dispatchers.size
        end
        Channels.track(self)
        self
      end

      # Waits until every event accepted before the call has been delivered (or found no
      # subscriber), dispatching on this thread in manual and inline mode. Returns false when
      # `timeout` seconds pass first, or when some of them can never be delivered.
      def drain(timeout: 1)
        deadline = monotonic_now + checked_timeout(timeout)
        stats = _event_stats
        target = stats[:published] + stats[:emitted]
        loop do
          stats = _event_stats
          done = stats[:delivered] + stats[:unmatched]
          return true if done >= target - stats[:undelivered]
          return false if monotonic_now >= deadline

          if @dispatch_mode == :auto
            sleep 0.001
          elsif _dispatch([deadline - monotonic_now, 0.01].max.clamp(0, 0.05)).nil?
            return false
          end
        end
      end

      # Manual mode: waits up to `timeout` seconds (nil: until an event or shutdown) for events
      # and runs their handlers on this thread. Returns how many events reached a handler.
      def dispatch(timeout: 0)
        raise TypeError, "timeout: must be a number of seconds or nil, got #{timeout.inspect}" unless
          timeout.nil? || timeout.is_a?(Numeric)

        _dispatch(timeout) || 0
      end

      # Stops accepting events (publish raises Tasker::ClosedError, waiting publishers are woken
      # with it), delivers everything already accepted, and joins the dispatchers. Returns true
      # when everything was delivered within `timeout` seconds.
      #
      # From a signal trap or from one of this runtime's handlers it cannot wait (Ruby refuses
      # to join threads there, and a handler cannot wait for itself): it stops accepting,
      # leaves the dispatchers to deliver the rest and finish, and returns false at once.
      def shutdown(timeout: 5)
        deadline = monotonic_now + checked_timeout(timeout)
        _close_intake
        threads = dispatcher_threads
        return _drained? if threads.nil? || threads.include?(Thread.current)

        finish_shutdown(threads, deadline)
      end

      def event_stats
        _event_stats.merge(dispatchers: dispatchers, dispatcher_restarts: @dispatcher_restarts)
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
        return if @pid == Process.pid

        @pid = Process.pid
        @lock = Mutex.new
        @dispatchers = []
        count = @dispatcher_count
        @dispatcher_count = 0
        start(threads: count) if count.positive?
      end

      # @api private: called by Subscription#unsubscribe.
      def remove_subscription(subscription)
        removed = _unsubscribe(subscription.id)
        @lock.synchronize { @subscriptions = @subscriptions.reject { |s| s.equal?(subscription) }.freeze }
        removed
      end

      private

      def spawn_dispatcher
        Thread.new do
          Thread.current.name = "tasker-dispatch"
          run_dispatcher
        end
      end

      # A dispatcher that unwinds (killed, or a handler called `exit` or raised a signal) has
      # already handed its undelivered events back; a replacement takes over from there.
      def run_dispatcher
        finished = false
        _dispatch_loop
        finished = true
      ensure
        replace_dispatcher(Thread.current) unless finished
      end

      def replace_dispatcher(dead)
        return if Channels.exiting?

        @lock.synchronize do
          index = @dispatchers.index(dead)
          next unless index

          @dispatcher_restarts += 1
          @dispatchers[index] = spawn_dispatcher
        end
      rescue ThreadError
        # The VM is tearing threads down: nothing can run a replacement now.
        nil
      end

      def finish_shutdown(threads, deadline)
        if threads.any?(&:alive?)
          threads.each { |thread| wait_for(thread, deadline) }
        else
          drain_until(deadline)
        end
        finished = _drained? && threads.none?(&:alive?)
        @lock.synchronize { @dispatchers.select!(&:alive?) }
        Channels.untrack(self) if finished
        finished
      end

      # The dispatcher threads, or nil where a Mutex cannot be taken (a signal trap).
      def dispatcher_threads
        @lock.synchronize { @dispatchers.dup }
      rescue ThreadError
        nil
      end

      # Joins `thread` until `deadline`. A dispatcher that died of an exception (a handler's
      # `exit`, a signal) was already replaced; its exception is not shutdown's to re-raise.
      def wait_for(thread, deadline)
        thread.join([deadline - monotonic_now, 0].max)
      rescue Exception # rubocop:disable Lint/RescueException
        nil
      end

      def drain_until(deadline)
        loop do
          remaining = deadline - monotonic_now
          break if remaining <= 0
          break if _dispatch([remaining, 0.1].min).nil?
        end
      end

      # Called by the dispatch loop for a handler that raised.
      def report_handler_error(error, event)
        @error_handler.call(error, event)
      rescue StandardError => e
        warn_handler_error(e, event)
      end

      def warn_handler_error(error, event)
        warn "tasker_channels: handler for #{event.name} (event #{event.id}) raised #{error.class}: #{error.message}"
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
