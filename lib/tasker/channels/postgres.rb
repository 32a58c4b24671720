# frozen_string_literal: true

require_relative "postgres_errors"
require_relative "listener"
require_relative "forwarder"

module Tasker
  # PostgreSQL for the default runtime too: Tasker::Channels.listen and .forward.
  module Channels
    # PostgreSQL on a runtime: LISTEN into its subscribers, and forward its events to other
    # processes with NOTIFY. See docs/postgres.md for the contract.
    class Runtime
      # Starts a Listener on `channels` and returns it once it is connected and listening.
      # Raises Tasker::ConnectionError (bad URL, refused, authentication) naming the host,
      # ArgumentError for an invalid channel name, Tasker::ClosedError after shutdown.
      def listen(url = ENV.fetch("DATABASE_URL", nil), channels: [], coalesce: false,
                 coalesce_limit: Listener::DEFAULT_COALESCE_LIMIT, queue_warning: Listener::DEFAULT_QUEUE_WARNING)
        listener = Listener.start(self, url, channels: channels, coalesce: coalesce, coalesce_limit: coalesce_limit,
                                             queue_warning: queue_warning)
        postgres_lock.synchronize { @listeners = [*@listeners, listener].freeze }
        listener
      end

      # NOTIFYs every event matching `pattern` on the PostgreSQL channel `to`. Returns the
      # Forwarder once its connection is up. From then on, publish refuses (with
      # Tasker::PayloadTooLarge) an event matching `pattern` that is too big to forward.
      def forward(pattern, to:, url: ENV.fetch("DATABASE_URL", nil))
        forwarder = Forwarder.start(self, pattern, to: to, url: url)
        postgres_lock.synchronize { @forwarders = [*@forwarders, forwarder].freeze }
        singleton_class.prepend(ForwardedPublish) unless singleton_class <= ForwardedPublish
        forwarder
      end

      # The listeners started here and not stopped (none in a forked child: they belong to
      # the parent).
      def listeners
        (@listeners || []).reject(&:stopped?)
      end

      def forwarders
        (@forwarders || []).reject(&:stopped?)
      end

      # Guards creating each runtime's own lock (Runtime#initialize knows nothing of PostgreSQL).
      POSTGRES_LOCK_GUARD = Mutex.new
      private_constant :POSTGRES_LOCK_GUARD

      private

      def postgres_lock
        @postgres_lock || POSTGRES_LOCK_GUARD.synchronize { @postgres_lock ||= Mutex.new }
      end

      # Listeners stop before the runtime closes, and their last events reach the handlers
      # before it drains; forwarders send what the handlers gave them after that.
      module PostgresShutdown
        def shutdown(timeout: 5)
          deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + checked_timeout(timeout)
          remaining = -> { [deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max }
          listened = (@listeners || []).map { |listener| listener.stop(timeout: remaining.call) }.all?
          relayed = @listeners ? Listener._drain(self, remaining.call) : true
          finished = super(timeout: remaining.call)
          forwarded = (@forwarders || []).map { |forwarder| forwarder.close(timeout: remaining.call) }.all?
          finished && listened && relayed && forwarded
        end

        def metrics
          text = super
          return text if @listeners.nil? && @forwarders.nil?

          text + Listener._metrics(@listeners || [], @forwarders || [])
        end
      end
      prepend PostgresShutdown

      # Refuses, at publish, what a forward could not send (prepended to a runtime's singleton
      # class once it forwards, so runtimes that do not forward pay nothing).
      module ForwardedPublish
        def publish(name, payload = nil, **options)
          checked = payload.nil? ? options.except(:wait) : payload
          label = name.to_s
          Forwarder.check(label, checked) if @forwarders.any? { |f| f.match?(label) && !f.stopped? }
          payload.nil? ? super(name, **options) : super
        end
      end
    end

    class << self
      def listen(...)
        runtime.listen(...)
      end

      def forward(...)
        runtime.forward(...)
      end
    end
  end
end
