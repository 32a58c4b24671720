# frozen_string_literal: true

module Tasker
  module Channels
    # One event delivered to a subscriber. Frozen, with a deep-frozen payload: handlers
    # running on several dispatcher threads can share it safely.
    class Event
      attr_reader :id, :name, :payload, :source

      # The extension builds events on dispatcher threads with the same five instance
      # variables; `source` is :ruby or :rust, `published_at_ns` nanoseconds since the epoch.
      def initialize(id, name, payload, source, published_at_ns)
        @id = id
        @name = name
        @payload = payload
        @source = source
        @published_at_ns = published_at_ns
        freeze
      end

      # When the event was published. Built on demand: most handlers never ask, and a Time
      # per event is a large share of the cost of handing events to Ruby.
      def published_at
        Time.at(@published_at_ns / 1_000_000_000, @published_at_ns % 1_000_000_000, :nsec)
      end

      def to_h
        { id: id, name: name, payload: payload, source: source, published_at: published_at }
      end

      def inspect
        "#<#{self.class.name} ##{id} #{name} from #{source} #{payload.inspect}>"
      end
    end
  end
end
