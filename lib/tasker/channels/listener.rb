# frozen_string_literal: true

module Tasker
  module Channels
    # A LISTEN connection to PostgreSQL feeding a runtime's subscribers (see
    # Runtime#listen and docs/postgres.md). Notifications on channel `c` arrive as events
    # named `pg.c` with payload `{channel:, payload:, backend_pid:}` (plus `count:` when
    # coalescing). The extension defines the class; this file adds its Ruby API.
    class Listener
      # Distinct pending wake-ups a coalescing listener merges before it stops reading.
      DEFAULT_COALESCE_LIMIT = 1024
      # pg_notification_queue_usage() at which listener.queue_saturated is emitted.
      DEFAULT_QUEUE_WARNING = 0.5

      # @api private: use Runtime#listen.
      # Options: channels:, coalesce:, coalesce_limit:, queue_warning: (see Runtime#listen).
      def self.start(runtime, url, **options)
        unknown = options.keys - %i[channels coalesce coalesce_limit queue_warning]
        raise ArgumentError, "unknown listen option(s): #{unknown.join(', ')}" if unknown.any?

        _start(runtime, database_url(url), channel_names(options.fetch(:channels, [])),
               options.fetch(:coalesce, false) ? true : false,
               positive_integer(options.fetch(:coalesce_limit, DEFAULT_COALESCE_LIMIT), "coalesce_limit:"),
               fraction(options.fetch(:queue_warning, DEFAULT_QUEUE_WARNING)))
      end

      def self.database_url(url)
        if url.nil? || (url.is_a?(String) && url.strip.empty?)
          raise ArgumentError, "no PostgreSQL URL: pass one (runtime.listen(url)) or set DATABASE_URL"
        end
        raise TypeError, "the PostgreSQL URL must be a String, got #{url.class}" unless url.is_a?(String)

        url
      end

      def self.channel_names(channels)
        list = channels.is_a?(Array) ? channels : [channels]
        list.map do |name|
          unless name.is_a?(String) || name.is_a?(Symbol)
            raise TypeError, "PostgreSQL channel names must be Strings or Symbols, got #{name.inspect}"
          end

          name.to_s
        end
      end

      def self.positive_integer(value, option)
        return value if value.is_a?(Integer) && value.positive?

        raise ArgumentError, "#{option} must be a positive Integer, got #{value.inspect}"
      end

      def self.fraction(value)
        return value.to_f if value.is_a?(Numeric) && value.positive? && value <= 1

        raise ArgumentError, "queue_warning: must be a fraction in (0, 1], got #{value.inspect}"
      end

      private_class_method :database_url, :channel_names, :positive_integer, :fraction

      # Listens on more channels. Returns true once PostgreSQL confirmed, false if `timeout`
      # seconds passed first (a backpressured listener runs no query until it has room; the
      # LISTEN still happens then).
      def listen(*channels, timeout: nil)
        _listen(self.class.send(:channel_names, channels.flatten), timeout)
      end

      # Stops listening on channels (names it does not listen on are ignored).
      def unlisten(*channels, timeout: nil)
        _unlisten(self.class.send(:channel_names, channels.flatten), timeout)
      end

      # Closes the connections (an event being handed on is abandoned). True once closed
      # within `timeout` seconds.
      def stop(timeout: 5)
        _stop(timeout)
      end

      # Prometheus text for this listener alone (Runtime#metrics includes every listener).
      def metrics
        Listener._metrics([self], [])
      end

      def inspect
        "#<#{self.class.name} ##{id} #{target} channels=#{channels.inspect}" \
          "#{' connected' if connected?}#{' stopped' if stopped?}>"
      end
    end
  end
end
