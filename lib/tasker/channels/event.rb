# frozen_string_literal: true

module Tasker
  module Channels
    # One event delivered to a one-parameter handler. Frozen, so handlers on several
    # dispatcher threads can share it. `payload` is the object the publisher passed (its top
    # level frozen by publish; what it contains belongs to the publisher, who must not mutate
    # it after publishing), or for Rust and remote events a fresh, deep-frozen Hash.
    #
    # The extension fills the members directly; `source` is :ruby, :rust or :remote and
    # `published_at_ns` nanoseconds since the epoch.
    Event = Struct.new(:id, :name, :payload, :source, :published_at_ns) do
      def initialize(*)
        super
        freeze
      end

      # When the event was published. Built on demand: most handlers never ask, and a Time
      # per event is a large share of the cost of handing events to Ruby.
      def published_at
        Time.at(published_at_ns / 1_000_000_000, published_at_ns % 1_000_000_000, :nsec)
      end

      def to_h
        { id: id, name: name, payload: payload, source: source, published_at: published_at }
      end

      def inspect
        "#<#{self.class.name} ##{id} #{name} from #{source} #{payload.inspect}>"
      end
      alias_method :to_s, :inspect
    end
  end
end
