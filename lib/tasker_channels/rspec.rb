# frozen_string_literal: true

# RSpec matchers for code that publishes on a tasker_channels runtime.
#
#   require "tasker_channels/rspec"
#
#   expect { worker.call(step_id: 1) }
#     .to publish_event("step.completed").with(payload_including(step_id: 1)).once
#   expect { worker.call(step_id: 1) }.not_to publish_event("step.failed")
#   expect { worker.call(step_id: 1) }.to have_delivered(2).on(runtime)
#
# Each matcher runs the block, then waits (without sleeping a guessed time) until everything
# the runtime accepted so far was delivered, so a spec asserts on what its handlers did. See
# the README, "Testing your worker".

require "rspec/expectations"
require "tasker_channels"

module Tasker
  module Channels
    # The matchers, included into every example group once this file is required.
    module Matchers
      # How long a matcher waits for the runtime to deliver what was published.
      DEFAULT_DRAIN_TIMEOUT = 5

      class << self
        attr_writer :drain_timeout

        def drain_timeout
          @drain_timeout || DEFAULT_DRAIN_TIMEOUT
        end

        # Waits up to `timeout` seconds until everything `runtime` accepted so far was
        # delivered (or found no handler); returns whether it was. Manual runtimes are
        # dispatched on this thread.
        def drain(runtime, timeout: drain_timeout)
          testing = Tasker::Channels::Testing
          return testing.drain(runtime, timeout: timeout) if testing.respond_to?(:drain)

          auto = runtime.dispatch_mode == :auto
          # Without a dispatcher thread (no subscription yet) nothing would ever move.
          return settled?(runtime) if auto && runtime.dispatchers.zero?

          deadline = monotonic_now + timeout
          loop do
            runtime.dispatch(timeout: 0.01) unless auto
            return true if settled?(runtime)
            return false if monotonic_now >= deadline

            sleep 0.001 if auto
          end
        end

        # One line per event for failure messages.
        def describe_event(event, note = nil)
          line = "  ##{event.id} #{event.name} #{event.payload.inspect}"
          note ? "#{line} (#{note})" : line
        end

        private

        def settled?(runtime)
          stats = runtime.event_stats
          undelivered = stats.fetch(:undelivered, 0)
          undelivered = undelivered.values.sum if undelivered.is_a?(Hash)
          stats[:delivered] + stats[:unmatched] + undelivered >= stats[:published] + stats[:emitted]
        end

        def monotonic_now
          Process.clock_gettime(Process::CLOCK_MONOTONIC)
        end
      end

      # Matches a payload Hash holding every given key (as given: a Symbol key matches a
      # Symbol key, a String key a String key) with a value that matches, RSpec style
      # (`===`, so nested matchers such as `a_kind_of(Integer)` work).
      class PayloadIncluding
        include ::RSpec::Matchers::Composable

        attr_reader :expected

        def initialize(expected)
          raise ArgumentError, "payload_including needs a Hash, got #{expected.inspect}" unless expected.is_a?(Hash)

          @expected = expected
        end

        def matches?(payload)
          payload.is_a?(Hash) &&
            expected.all? { |key, value| payload.key?(key) && values_match?(value, payload[key]) }
        end
        alias === matches?

        def description
          "payload including #{RSpec::Support::ObjectFormatter.format(expected)}"
        end
        alias inspect description

        # Why `payload` does not match, e.g. a key given as a Symbol that the payload has as
        # a String.
        def mismatch(payload)
          return "not a Hash" unless payload.is_a?(Hash)

          expected.filter_map { |key, value| key_mismatch(payload, key, value) }.join("; ")
        end

        private

        def key_mismatch(payload, key, value)
          if payload.key?(key)
            return if values_match?(value, payload[key])

            return "#{key.inspect} is #{payload[key].inspect}"
          end
          other = other_kind(key)
          return "no #{key.inspect}" unless other && payload.key?(other)

          "no #{key.inspect}, but #{other.inspect} (keys match as given: write #{other.inspect} to match it)"
        end

        def other_kind(key)
          case key
          when Symbol then key.name
          when String then key.to_sym
          end
        end

        def values_match?(expected, actual)
          RSpec::Support::FuzzyMatcher.values_match?(expected, actual)
        end
      end

      # Records every event a block publishes, and which of them match a pattern, with two
      # temporary subscriptions (`**`, and the pattern itself, so names match exactly as a
      # subscription would).
      class Recorder
        attr_reader :events

        def initialize(runtime, pattern)
          @runtime = runtime
          @pattern = pattern
          @events = []
          @matching_ids = {}
          @lock = Mutex.new
        end

        # Runs `block` with the subscriptions in place; returns whether everything was
        # delivered in time.
        def record(block, timeout)
          subscriptions = [
            @runtime.subscribe("**") { |event| @lock.synchronize { @events << event } },
            @runtime.subscribe(@pattern) { |event| @lock.synchronize { @matching_ids[event.id] = true } }
          ]
          begin
            # Events accepted before the block are not the block's: deliver and forget them.
            Matchers.drain(@runtime, timeout: timeout)
            @lock.synchronize do
              @events.clear
              @matching_ids.clear
            end
            block.call
            Matchers.drain(@runtime, timeout: timeout)
          ensure
            subscriptions.each(&:unsubscribe)
          end
        end

        def name_matches?(event)
          @lock.synchronize { @matching_ids.key?(event.id) }
        end

        def matching
          @lock.synchronize { @events.select { |event| @matching_ids.key?(event.id) } }
        end
      end

      # What the block matchers share: the runtime they watch and how long they wait for
      # delivery after the block, both chosen by chaining.
      module BlockMatcher
        # The runtime to watch (default: Tasker::Channels.runtime).
        def on(runtime)
          @runtime = runtime
          self
        end

        # How long to wait for delivery after the block (default: Matchers.drain_timeout).
        def within(seconds)
          @timeout = seconds
          self
        end

        def supports_block_expectations?
          true
        end

        def supports_value_expectations?
          false
        end

        private

        def runtime
          @runtime || Tasker::Channels.runtime
        end
      end

      # `publish_event(name_or_pattern)`: see Matchers#publish_event.
      class PublishEvent
        include ::RSpec::Matchers::Composable
        include BlockMatcher

        def initialize(pattern)
          unless pattern.is_a?(String) || pattern.is_a?(Symbol) || pattern.is_a?(Regexp)
            raise ArgumentError, "publish_event takes an event name, a glob or a Regexp, got #{pattern.inspect}"
          end

          @pattern = pattern
          @payload = nil
          @count = nil
          @runtime = nil
          @timeout = nil
        end

        # Only events whose payload matches: `payload_including(...)`, any RSpec matcher, or
        # a Hash (the whole payload, compared RSpec style).
        def with(payload = nil, **fields)
          raise ArgumentError, "with takes a payload matcher or payload keywords, not both" if payload && !fields.empty?

          @payload = payload || fields
          self
        end

        def exactly(count)
          constrain(:exactly, count)
        end

        def at_least(count)
          constrain(:at_least, count)
        end

        def at_most(count)
          constrain(:at_most, count)
        end

        def once
          exactly(1)
        end

        def twice
          exactly(2)
        end

        # Reads well after a count: `.exactly(3).times`.
        def times
          self
        end
        alias time times

        def matches?(block)
          run(block) && count_matches?
        end

        def does_not_match?(block)
          if @count
            raise ArgumentError,
                  "`not_to publish_event(...)` takes no count; write `to publish_event(...).exactly(0).times` instead"
          end

          run(block) && hits.empty?
        end

        def failure_message
          return @drain_failure if @drain_failure

          "expected the block to publish #{description_tail}, but it published #{times_text(hits.size)}.\n" \
            "#{published_listing}"
        end

        def failure_message_when_negated
          return @drain_failure if @drain_failure

          "expected the block not to publish #{event_text}, but it published #{times_text(hits.size)}.\n" \
            "#{published_listing}"
        end

        def description
          "publish #{description_tail}"
        end

        private

        def constrain(kind, count)
          raise ArgumentError, "#{kind} needs a non-negative Integer, got #{count.inspect}" unless
            count.is_a?(Integer) && !count.negative?

          @count = [kind, count]
          self
        end

        def run(block)
          timeout = @timeout || Matchers.drain_timeout
          @recorder = Recorder.new(runtime, @pattern)
          return true if @recorder.record(block, timeout)

          @drain_failure = "the runtime had not delivered everything within #{timeout}s " \
                           "(event_stats: #{runtime.event_stats.inspect})"
          false
        end

        def hits
          @hits ||= @recorder.matching.select { |event| payload_matches?(event.payload) }
        end

        def payload_matches?(payload)
          @payload.nil? || RSpec::Support::FuzzyMatcher.values_match?(@payload, payload)
        end

        def count_matches?
          kind, count = @count || [:at_least, 1]
          case kind
          when :exactly then hits.size == count
          when :at_least then hits.size >= count
          else hits.size <= count
          end
        end

        def event_text
          name = @pattern.is_a?(Regexp) ? "an event matching #{@pattern.inspect}" : "\"#{@pattern}\""
          @payload.nil? ? name : "#{name} with #{payload_text}"
        end

        def payload_text
          return @payload.description if @payload.respond_to?(:description)

          "payload #{RSpec::Support::ObjectFormatter.format(@payload)}"
        end

        def description_tail
          return event_text unless @count

          kind, count = @count
          "#{event_text} #{kind.to_s.tr('_', ' ')} #{times_text(count)}"
        end

        def times_text(count)
          count == 1 ? "once" : "#{count} times"
        end

        def published_listing
          events = @recorder.events
          return "The block published no events." if events.empty?

          lines = events.map { |event| Matchers.describe_event(event, note_for(event)) }
          "Events the block published (#{events.size}):\n#{lines.join("\n")}"
        end

        def note_for(event)
          return unless @recorder.name_matches?(event)
          return "matches" if @payload.nil? || payload_matches?(event.payload)

          mismatch = @payload.respond_to?(:mismatch) ? @payload.mismatch(event.payload) : nil
          mismatch ? "name matches; payload: #{mismatch}" : "name matches; payload does not"
        end
      end

      # `have_delivered(n)`: see Matchers#have_delivered.
      class HaveDelivered
        include ::RSpec::Matchers::Composable
        include BlockMatcher

        COUNTS = %i[published emitted delivered unmatched handler_errors].freeze

        def initialize(count)
          raise ArgumentError, "have_delivered needs a non-negative Integer or nil, got #{count.inspect}" unless
            count.nil? || (count.is_a?(Integer) && !count.negative?)

          @count = count
          @runtime = nil
          @timeout = nil
        end

        # Reads well after a count: `have_delivered(2).events`.
        def events
          self
        end
        alias event events

        def matches?(block)
          run(block) && (@count.nil? ? delivered.positive? : delivered == @count)
        end

        def does_not_match?(block)
          run(block) && (@count.nil? ? delivered.zero? : delivered != @count)
        end

        def failure_message
          return @drain_failure if @drain_failure

          "expected the block to deliver #{expected_text} to a handler, but #{outcome_text}"
        end

        def failure_message_when_negated
          return @drain_failure if @drain_failure

          "expected the block not to deliver #{expected_text} to a handler, but #{outcome_text}"
        end

        def description
          "deliver #{expected_text} to a handler"
        end

        private

        def run(block)
          timeout = @timeout || Matchers.drain_timeout
          Matchers.drain(runtime, timeout: timeout)
          before = runtime.event_stats
          block.call
          drained = Matchers.drain(runtime, timeout: timeout)
          after = runtime.event_stats
          @delta = COUNTS.to_h { |key| [key, after[key] - before[key]] }
          return true if drained

          @drain_failure = "the runtime had not delivered everything within #{timeout}s (event_stats: #{after.inspect})"
          false
        end

        def delivered
          @delta[:delivered]
        end

        def expected_text
          return "at least one event" if @count.nil?

          @count == 1 ? "1 event" : "#{@count} events"
        end

        def outcome_text
          d = @delta
          "#{d[:delivered]} #{d[:delivered] == 1 ? 'was' : 'were'} delivered " \
            "(#{d[:published]} published, #{d[:emitted]} emitted by Rust, " \
            "#{d[:unmatched]} found no subscription, #{d[:handler_errors]} handler errors)"
        end
      end

      # A block expectation: the block publishes an event whose name matches
      # `name_or_pattern` (an exact name, a glob with `*` / `**`, or a Regexp, matched as a
      # subscription matches). Chain `.with(payload_including(step_id: 1))` (or any payload
      # matcher, or a whole-payload Hash), a count (`.once`, `.twice`, `.exactly(n).times`,
      # `.at_least(n)`, `.at_most(n)`; default at least once), `.on(runtime)` (default
      # Tasker::Channels.runtime) and `.within(seconds)`. Negated, no matching event may be
      # published. Failure messages list every event the block published.
      def publish_event(name_or_pattern)
        PublishEvent.new(name_or_pattern)
      end
      alias publish_events publish_event

      # A payload matcher for `publish_event(...).with`: the payload holds these keys, as
      # given (Symbol or String), with matching values.
      def payload_including(expected = nil, **fields)
        PayloadIncluding.new(expected || fields)
      end
      alias a_payload_including payload_including

      # A block expectation: `count` events (nil: at least one) published or emitted during
      # the block reached at least one handler, counted from `event_stats`. Every handler
      # counts, publish_event's own too: do not combine the two with `and`.
      def have_delivered(count = nil) # rubocop:disable Naming/PredicateName
        HaveDelivered.new(count)
      end
      alias deliver_events have_delivered
    end
  end
end

RSpec.configure { |config| config.include Tasker::Channels::Matchers } if RSpec.respond_to?(:configure)
