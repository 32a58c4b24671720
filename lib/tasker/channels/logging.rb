# frozen_string_literal: true

module Tasker
  module Channels
    # Where the extension's log records go: stderr by default, or a Ruby logger.
    #
    #   Tasker::Channels.logger = Logger.new($stdout)   # anything with error/warn/info/debug
    #   Tasker::Channels.logger = nil                   # back to stderr
    #
    # Records pass the `TASKER_LOG` filter first (default `warn`; e.g. `TASKER_LOG=info`), then
    # the logger's own level. They travel through a bounded queue (`queue_size` records, 1024
    # by default) to one Ruby thread, "tasker-log", which waits without the GVL and calls
    # `logger.warn(message)` (or `error`, `info`, `debug`). The thread that emitted a record
    # never waits: when the logger falls behind and the queue is full, records are dropped
    # and counted (`Tasker::Channels.log_stats[:dropped]`, and
    # `tasker_log_records_dropped_total` in `Runtime#metrics`).
    #
    # `TASKER_LOG` is read again by every `Runtime.new`, every `logger=` and `reload_filter`,
    # so changing it later takes effect.
    #
    # The native half (the extension) defines the `_`-prefixed primitives and `Queue`.
    module Logging
      DEFAULT_QUEUE_SIZE = 1024
      # The methods a logger must answer; a record's level picks one.
      LEVELS = %i[error warn info debug].freeze

      @lock = Mutex.new
      @logger = nil
      @queue_size = DEFAULT_QUEUE_SIZE
      @queue = nil
      @reader = nil
      @handled = 0

      class << self
        attr_reader :logger, :queue_size

        # Routes records to `logger` (nil: back to stderr). Raises ArgumentError for an object
        # that does not answer every method in LEVELS, and Tasker::Error when another
        # `tracing` subscriber owns this process's logs.
        def logger=(logger)
          check_logger(logger)
          @lock.synchronize do
            @logger = logger
            logger.nil? ? stop_reader : start_reader
          end
          _reload_filter
        end

        # How many records the queue to the logger holds (1..MAX_QUEUE_SIZE). Takes effect
        # at once when a logger is set: records still queued reach the logger first.
        def queue_size=(size)
          unless size.is_a?(Integer) && size.between?(1, MAX_QUEUE_SIZE)
            raise ArgumentError, "queue_size must be an Integer in 1..#{MAX_QUEUE_SIZE}, got #{size.inspect}"
          end

          @lock.synchronize do
            @queue_size = size
            start_reader if @logger
          end
        end

        # Applies `TASKER_LOG` as it is now.
        def reload_filter
          _reload_filter
          nil
        end

        # `output` (:logger or :stderr), `queue_capacity`, `queued`, `forwarded` (taken from
        # the queue) and `dropped` (refused by a full queue), the counts over the process's
        # life; `installed` is false when another `tracing` subscriber owns the logs.
        def stats
          _stats
        end

        # Waits up to `timeout` seconds until every record queued so far reached the logger;
        # returns whether it did. Called at exit so the last records are not lost.
        def flush(timeout: 1)
          deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
          loop do
            return true if flushed?
            return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) >= deadline

            sleep 0.005
          end
        end

        # @api private: the reader thread does not survive fork; the child starts its own on
        # a fresh queue (the parent's records stay the parent's).
        def after_fork_in_child
          @lock = Mutex.new
          @queue = nil
          @reader = nil
          # A batch the parent was delivering at fork is the parent's.
          @handled = _stats[:forwarded]
          return unless @logger

          _route_to_stderr
          start_reader
        end

        private

        def check_logger(logger)
          return if logger.nil?

          missing = LEVELS.reject { |level| logger.respond_to?(level) }
          return if missing.empty?

          raise ArgumentError,
                "a logger must respond to #{LEVELS.join(', ')}; #{logger.inspect} lacks #{missing.join(', ')}"
        end

        # Nothing queued and nothing taken but undelivered. A reader still finishing a closed
        # queue (the logger was removed) counts as busy until it ends.
        def flushed?
          return true unless @reader&.alive?

          stats = _stats
          stats[:output] == :logger && stats[:queued].zero? && @lock.synchronize { @handled } >= stats[:forwarded]
        end

        # Called with @lock held.
        def start_reader
          return if @queue && @queue.capacity == @queue_size && !@queue.closed? && @reader&.alive?

          queue = _route_to_queue(@queue_size)
          unless queue
            raise Tasker::Error,
                  "another tracing subscriber owns this process's logs; it cannot go to a logger"
          end

          # A replaced queue is closed: its reader delivers what it holds, then ends.
          @queue = queue
          @reader = Thread.new(queue) { |q| read(q) }
        end

        # Called with @lock held. The reader hands what is queued to the last logger, then ends.
        def stop_reader
          @queue = nil
          _route_to_stderr
        end

        def read(queue)
          Thread.current.name = "tasker-log"
          last_logger = @logger
          while (batch = queue._next_batch(nil))
            last_logger = @logger || last_logger
            batch.each { |level, message| deliver(last_logger, level, message) }
            @lock.synchronize { @handled += batch.size }
          end
        end

        def deliver(logger, level, message)
          logger&.public_send(level, message)
        rescue StandardError => e
          warn "tasker_channels: the logger raised #{e.class}: #{e.message} (dropping: #{message})"
        end
      end
    end
  end
end
