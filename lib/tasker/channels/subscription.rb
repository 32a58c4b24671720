# frozen_string_literal: true

module Tasker
  module Channels
    # A handler subscribed to event names matching a pattern. `unsubscribe` removes this
    # subscription only, whatever other subscriptions share its pattern.
    #
    # Patterns: an exact name (compared as a string), a glob where `*` is one dot-separated
    # segment and `**` is one or more (so "**" alone matches everything), or a Regexp. The
    # runtime matches them in Rust and remembers the answer per event name.
    class Subscription
      attr_reader :pattern, :id

      def initialize(pattern, id, runtime)
        @pattern = pattern
        @id = id
        @runtime = runtime
        @active = true
      end

      def active?
        @active
      end

      # Stops delivery to this handler. Idempotent; returns whether it was active.
      def unsubscribe
        return false unless @active

        @active = false
        @runtime.remove_subscription(self)
        true
      end

      def inspect
        "#<#{self.class.name} #{pattern.inspect}#{' (unsubscribed)' unless active?}>"
      end

      # Something that answers `match?(name)` exactly as a subscription to `pattern` selects:
      # the Regexp itself, or a Pattern matched by the extension. Raises TypeError for a
      # pattern that is not a String, Symbol or Regexp, and ArgumentError for a malformed one.
      def self.matcher_for(pattern)
        case pattern
        when Regexp then pattern
        when String, Symbol then Pattern.parse(pattern.to_s)
        else
          raise TypeError, "subscription pattern must be a String, Symbol or Regexp, got #{pattern.class}"
        end
      end
    end
  end
end
