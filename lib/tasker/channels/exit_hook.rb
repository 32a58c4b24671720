# frozen_string_literal: true

module Tasker
  module Channels
    # What happens to accepted events when the process exits. Every runtime with dispatchers
    # (and the default runtime) gets `Channels.exit_timeout` seconds in all to deliver what it
    # accepted; then one WARN names what was left undelivered, on which runtimes. After it,
    # `Tasker::Channels.publish` raises Tasker::ClosedError instead of building a new default
    # runtime. It never raises, so it never changes the exit status.
    module ExitHook
      module_function

      def run(out: $stderr)
        Channels.exiting!
        deadline = now + Channels.exit_timeout
        Channels.dispatching_runtimes.each do |runtime|
          runtime.shutdown(timeout: remaining(deadline)) if runtime.respond_to?(:shutdown)
        end
        Channels.shutdown(timeout: remaining(deadline))
        Channels.exited!
        report_undelivered(out)
      rescue Exception => e # rubocop:disable Lint/RescueException
        out.puts "tasker_channels: exit hook failed: #{e.class}: #{e.message}"
      end

      def report_undelivered(out)
        left = Runtime._pending_everywhere
        return if left.empty?

        total = left.sum { |_environment, pending| pending }
        where = left.map { |environment, pending| "#{pending} on a #{environment} runtime" }.join(", ")
        out.puts "tasker_channels: WARN exiting with #{total} accepted event(s) undelivered after " \
                 "#{Channels.exit_timeout} s (#{where}); raise Tasker::Channels.exit_timeout " \
                 "(TASKER_EXIT_TIMEOUT), or shut runtimes down before exit"
      end

      def remaining(deadline)
        [deadline - now, 0].max
      end

      def now
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end
    end
  end
end
