# frozen_string_literal: true

module Tasker
  module Channels
    # Sends a runtime's events that match a pattern to PostgreSQL with NOTIFY, so runtimes in
    # other processes that listen on that channel receive them (source :remote). See
    # Runtime#forward and docs/postgres.md. The extension defines the class; this file adds
    # its Ruby API.
    class Forwarder
      # Forwarded payloads carry their origin under this key on the receiving side.
      ORIGIN_KEY = :tasker_origin

      attr_reader :pattern

      # @api private: use Runtime#forward.
      def self.start(runtime, pattern, to:, url:)
        matcher = Subscription.matcher_for(pattern)
        unless to.is_a?(String) || to.is_a?(Symbol)
          raise TypeError, "to: must name a PostgreSQL channel (String or Symbol), got #{to.inspect}"
        end

        forwarder = _start(runtime, Listener.send(:database_url, url), to.to_s)
        forwarder.send(:attach, runtime, pattern, matcher)
        forwarder
      end

      # Raises Tasker::PayloadTooLarge (or ArgumentError for the reserved key) when an event
      # could not be forwarded; publish calls it for events a forward matches.
      def self.check(name, payload)
        return unless payload.is_a?(Hash)

        if payload.key?(ORIGIN_KEY) || payload.key?(ORIGIN_KEY.to_s)
          raise ArgumentError, "payload key #{ORIGIN_KEY.inspect} is reserved for forwarded events' origin"
        end

        check_size(name.to_s, payload)
      end

      def match?(name)
        @matcher.match?(name)
      end

      # Queues one event for NOTIFY. Events that came from another process are never sent
      # on, so runtimes that forward to each other do not echo. True when queued, false when
      # skipped or dropped by the queue's policy.
      def forward(event)
        return false if event.source == :remote

        Forwarder.check(event.name, event.payload)
        at = event.published_at
        _offer(event.name, event.payload, event.id, event.source, (at.to_i * 1_000_000_000) + at.nsec)
      end

      # Stops forwarding new events and sends what is queued. True when everything queued
      # was sent within `timeout` seconds.
      def close(timeout: 5)
        @subscription&.unsubscribe
        _close(timeout)
      end

      # Stops at once; what is still queued is counted as lost.
      def stop(timeout: 5)
        @subscription&.unsubscribe
        _stop(timeout)
      end

      def metrics
        Listener._metrics([], [self])
      end

      def inspect
        "#<#{self.class.name} ##{id} #{pattern.inspect} -> #{to} #{target}#{' stopped' if stopped?}>"
      end

      private

      def attach(runtime, pattern, matcher)
        @pattern = pattern
        @matcher = matcher
        @subscription = runtime.subscribe(pattern) { |event| forward(event) }
      end
    end
  end
end
