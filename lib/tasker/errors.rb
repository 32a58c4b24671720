# frozen_string_literal: true

module Tasker
  # The root of every error tasker_channels raises: rescue it to catch them all. A Rust panic
  # inside the extension arrives as a plain Tasker::Error naming the panic.
  #
  # These classes are plain Ruby, loaded before the extension, which looks them up rather than
  # defining them: specs can build the same errors the extension raises, e.g. to exercise a
  # rescue path.
  class Error < StandardError; end

  # A send was refused because its channel was full (`error` policy), or stayed full until
  # the send's timeout passed (`block` policy, or `publish(wait:)`). Nothing was enqueued.
  #
  #   raise Tasker::Backpressure.new("shared.ffi is full", channel: "shared.ffi", capacity: 10, policy: :error)
  #
  # `channel` is the channel's name, `capacity` its configured size, and `policy` its overflow
  # policy as a String ("block", "drop", "drop_oldest" or "error"), the same spelling as
  # `Channel#policy`, `Runtime#stats` and the config. The constructor also takes the policy as
  # a Symbol.
  class Backpressure < Error
    # The overflow policy names, as `policy` spells them.
    POLICIES = %w[block drop drop_oldest error].freeze

    attr_reader :channel, :capacity, :policy

    # The extension raises with only the message, then sets the attributes directly: a refused
    # send is a normal event under load and must stay cheap. Keep this free of work when the
    # keywords are nil.
    def initialize(message = nil, channel: nil, capacity: nil, policy: nil)
      @channel = channel.nil? ? nil : String(channel).dup.freeze
      @capacity = capacity.nil? ? nil : Backpressure.checked_capacity(capacity)
      @policy = policy.nil? ? nil : Backpressure.checked_policy(policy)
      super(message || default_message)
    end

    # @api private
    def self.checked_capacity(capacity)
      return capacity if capacity.is_a?(Integer) && capacity.positive?

      raise ArgumentError, "capacity: must be a positive Integer, got #{capacity.inspect}"
    end

    # @api private
    def self.checked_policy(policy)
      name = policy.is_a?(Symbol) ? policy.name : policy
      return POLICIES.find { |known| known == name } if POLICIES.include?(name)

      raise ArgumentError, "policy: must be one of #{POLICIES.join(', ')} (String or Symbol), got #{policy.inspect}"
    end

    private

    def default_message
      return "a channel is full" if channel.nil?

      details = [("capacity #{capacity}" if capacity), ("policy #{policy}" if policy)].compact
      details.empty? ? "#{channel} is full" : "#{channel} is full (#{details.join(', ')})"
    end
  end

  # The channel configuration is invalid. `errors` lists every problem found, in file order, as
  # frozen Problem values; the message lists them too, one per line.
  #
  #   problem = Tasker::ConfigError::Problem.new(file: "config/tasker/base/mpsc_channels.toml",
  #                                              key: "shared.ffi.overflow", line: 3, column: 12,
  #                                              message: "unknown overflow policy \"dorp\"")
  #   raise Tasker::ConfigError.new(errors: [problem])
  class ConfigError < Error
    # One mistake in the configuration, located as precisely as known: the file (or directory)
    # it is in, the dotted key without the `mpsc_channels.` prefix, the 1-based line and column
    # (characters), and what to do about it. `key`, `line` and `column` may be nil.
    class Problem
      attr_reader :file, :key, :line, :column, :message

      def initialize(file:, message:, key: nil, line: nil, column: nil)
        @file = String(file).dup.freeze
        @key = key.nil? ? nil : String(key).dup.freeze
        @line = Problem.position(line, :line)
        @column = Problem.position(column, :column)
        @message = String(message).dup.freeze
        freeze
      end

      # @api private
      def self.position(value, name)
        return value if value.nil? || (value.is_a?(Integer) && value.positive?)

        raise ArgumentError, "#{name}: must be a positive Integer or nil, got #{value.inspect}"
      end

      # `file:line:column: key: message`, as the error's message lists it.
      def to_s
        location = file.dup
        if line
          location << ":#{line}"
          location << ":#{column}" if column
        end
        key ? "#{location}: #{key}: #{message}" : "#{location}: #{message}"
      end

      def to_h
        { file: file, key: key, line: line, column: column, message: message }
      end

      def deconstruct_keys(_keys)
        to_h
      end

      def ==(other)
        other.is_a?(Problem) && to_h == other.to_h
      end
      alias eql? ==

      def hash
        [Problem, *to_h.values].hash
      end

      def inspect
        "#<#{self.class.name} #{self}>"
      end
    end

    attr_reader :errors

    # `errors` takes Problem values, or Hashes with Problem's keywords. Without a message, one
    # is built from the problems the way the extension words it.
    def initialize(message = nil, errors: [])
      @errors = errors.map { |problem| problem.is_a?(Problem) ? problem : Problem.new(**problem) }.freeze
      super(message || ConfigError.summary(@errors))
    end

    # @api private: the message for `problems`.
    def self.summary(problems)
      noun = problems.size == 1 ? "problem" : "problems"
      ["invalid channel configuration (#{problems.size} #{noun}):", *problems.map { |p| "  #{p}" }].join("\n")
    end
  end

  # The runtime was shut down (or the channel closed): nothing more is accepted.
  class ClosedError < Error; end
end
