# frozen_string_literal: true

module Tasker
  module Channels
    # A handler subscribed to event names matching a pattern. `unsubscribe` removes this
    # subscription only, whatever other subscriptions share its pattern.
    class Subscription
      attr_reader :pattern

      # `pattern`: an exact name, a glob where `*` is one dot-separated segment and `**`
      # is any number of segments (so "**" alone matches everything), or a Regexp.
      def initialize(pattern, handler, on_unsubscribe)
        @pattern = pattern
        @matcher = self.class.matcher_for(pattern)
        @handler = handler
        @on_unsubscribe = on_unsubscribe
        @active = true
      end

      def match?(name)
        @matcher.match?(name)
      end

      def call(event)
        @handler.call(event)
      end

      def active?
        @active
      end

      # Stops delivery to this handler. Idempotent; returns whether it was active.
      def unsubscribe
        return false unless @active

        @active = false
        @on_unsubscribe.call(self)
        true
      end

      def inspect
        "#<#{self.class.name} #{pattern.inspect}#{' (unsubscribed)' unless active?}>"
      end

      def self.matcher_for(pattern)
        case pattern
        when Regexp then pattern
        when String, Symbol
          name = pattern.to_s
          regexp = glob_to_regexp(name) # validates the pattern either way
          # An exact name compares as a string: cheaper than a Regexp on every event.
          name.include?("*") ? regexp : ExactName.new(name)
        else
          raise TypeError, "subscription pattern must be a String, Symbol or Regexp, got #{pattern.class}"
        end
      end

      # Matches one event name exactly.
      ExactName = Struct.new(:name) do
        def match?(candidate)
          name == candidate
        end
      end

      def self.glob_to_regexp(glob)
        raise ArgumentError, "subscription pattern must not be empty" if glob.empty?

        segments = glob.split(".", -1)
        raise ArgumentError, "subscription pattern #{glob.inspect} has an empty segment" if segments.any?(&:empty?)

        body = segments.map do |segment|
          case segment
          when "**" then "(?:[^.]+(?:\\.[^.]+)*)"
          when "*" then "[^.]+"
          else
            if segment.include?("*")
              raise ArgumentError,
                    "subscription pattern #{glob.inspect}: `*` must be a whole segment (\"a.*\", \"**\")"
            end

            Regexp.escape(segment)
          end
        end
        Regexp.new("\\A#{body.join('\\.')}\\z")
      end
    end
  end
end
