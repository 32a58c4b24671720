# frozen_string_literal: true

module Tasker
  module Channels
    # One event delivered to a subscriber. Frozen, with a deep-frozen payload: handlers
    # running on several dispatcher threads can share it safely.
    class Event
      attr_reader :id, :name, :payload, :source, :published_at

      # Built by the extension on a dispatcher thread; `source` is :ruby or :rust.
      def initialize(id, name, payload, source, published_at)
        @id = id
        @name = name
        @payload = payload
        @source = source
        @published_at = published_at
        freeze
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
