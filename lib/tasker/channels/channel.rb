# frozen_string_literal: true

module Tasker
  module Channels
    # A handle on one configured channel, for Ruby worker threads that pass plain values
    # directly (see Runtime#channel). The class and most methods are defined by the extension.
    class Channel
      # Waits (without the GVL) for a value; nil on timeout, or when closed and empty.
      def pop(timeout: nil)
        raise TypeError, "timeout: must be a number of seconds or nil, got #{timeout.inspect}" unless
          timeout.nil? || timeout.is_a?(Numeric)

        _pop(timeout)
      end

      def inspect
        "#<#{self.class.name} #{name} #{size}/#{capacity} #{policy}#{' closed' if closed?}>"
      end
    end
  end
end
