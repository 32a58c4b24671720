# frozen_string_literal: true

# sigint_latency: how long SIGINT takes to reach the main thread while it is blocked in
# Channel#pop, against the same wait in Queue#pop: the time from the parent's kill to the
# child's `rescue Interrupt`, one child Ruby per trial (each trial needs a fresh process, and
# the clock is CLOCK_MONOTONIC, shared by parent and child).
#
# Scenarios:
#   busy          a second Ruby thread spins on the CPU the whole time; the signal comes
#                 20-220 ms (random) after the main thread started waiting. Ruby hands the
#                 GVL from the busy thread to the main thread once a timeslice (100 ms), so
#                 about 100 ms is what Queue#pop takes; the goal is to take no longer.
#   thread_exits  a second Ruby thread is alive when the wait begins and exits 50 ms later;
#                 the signal comes 150-300 ms in. On Ruby 3.1 nothing wakes such a wait when
#                 the signal lands, so a wait that only relies on Ruby's unblock function
#                 never sees it. A child still blocked after HANG_AFTER is counted as lost.
#
# The row's ratio is the median of Channel#pop's latencies over Queue#pop's; the best-of
# column holds the ratio of the worst trials (worst over worst), the figure the goal is
# about: a signal should never wait for two hand-offs of the GVL where Queue#pop waits one.
#
#   ruby -Ilib bench/sigint_latency.rb      (BENCH_TRIALS=n per side and scenario, default 16)

require "io/wait"
require "open3"
require_relative "support"

module Bench
  # The child Ruby of one trial: blocks its main thread in `pop` beside the scenario's
  # other thread, prints "ready" just before and the time it was interrupted after.
  module SigintLatencyChild
    SCRIPT = <<~'RUBY'
      ENV["TASKER_LOG"] = "off"
      require "tasker_channels"
      wait, scenario = ARGV
      if wait == "channel"
        runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
        waiter = runtime.channel("worker.command_processor")
      else
        waiter = Queue.new
      end
      case scenario
      when "busy"
        Thread.new { spins = 0; loop { spins += 1 } }
      when "thread_exits"
        Thread.new { sleep 0.05 }
      end
      $stdout.sync = true
      begin
        puts "ready #{Process.clock_gettime(Process::CLOCK_MONOTONIC)}"
        waiter.pop
        puts "returned"
      rescue Interrupt
        puts "interrupted #{Process.clock_gettime(Process::CLOCK_MONOTONIC)}"
      end
      exit!(0)
    RUBY
  end
end

module Bench
  module SigintLatency
    GOAL = Goal.new(:<=, 1.15, 1.05)
    HANG_AFTER = 5.0
    SCENARIOS = {
      busy: { delay: 0.02..0.22 },
      thread_exits: { delay: 0.15..0.3 }
    }.freeze
    WAITS = %i[channel queue].freeze

    module_function

    def title
      "sigint_latency: SIGINT to a main thread blocked in Channel#pop vs Queue#pop"
    end

    def run(log: nil)
      trials = Settings.count("BENCH_TRIALS", 16)
      samples = SCENARIOS.keys.to_h { |scenario| [scenario, WAITS.to_h { |wait| [wait, []] }] }
      lost = SCENARIOS.keys.to_h { |scenario| [scenario, WAITS.to_h { |wait| [wait, 0] }] }
      SCENARIOS.each do |scenario, settings|
        trials.times do |trial|
          WAITS.rotate(trial % 2).each do |wait|
            latency = trial(wait, scenario, rand(settings[:delay]))
            latency ? samples[scenario][wait] << latency : lost[scenario][wait] += 1
          end
        end
      end
      log&.puts "  #{trials} trials per wait and scenario, one child Ruby each"
      summarize(samples, lost)
    end

    # One child: the latency in seconds from kill to `rescue Interrupt`, or nil if the child
    # was still blocked HANG_AFTER seconds after the signal.
    def trial(wait, scenario, delay)
      lib = File.expand_path("../lib", __dir__)
      Open3.popen2(RbConfig.ruby, "-I", lib, "-e", SigintLatencyChild::SCRIPT, wait.to_s,
                   scenario.to_s) do |stdin, stdout, thread|
        stdin.close
        ready = stdout.gets or raise "the #{wait} child exited before waiting"
        raise "unexpected child output: #{ready}" unless ready.start_with?("ready")

        sleep delay
        signalled = Bench.monotonic
        Process.kill("INT", thread.pid)
        answer = stdout.wait_readable(HANG_AFTER) && stdout.gets
        answer&.start_with?("interrupted") ? Float(answer.split.last) - signalled : nil
      ensure
        # A child that lost the signal, or a trial that failed, must not outlive the trial.
        Process.kill("KILL", thread.pid) unless thread.join(1)
      end
    end

    def summarize(samples, lost)
      rows = samples.map { |scenario, by_wait| row(scenario, by_wait, lost[scenario]) }
      details = samples.to_h do |scenario, by_wait|
        [scenario, by_wait.to_h { |wait, values| [wait, detail(values, lost[scenario][wait])] }]
      end
      { rows: rows, details: details }
    end

    def row(scenario, by_wait, lost)
      ours = by_wait[:channel]
      ruby = by_wait[:queue]
      fields = { id: "sigint_latency.#{scenario}", benchmark: "SIGINT latency, #{scenario.to_s.tr('_', ' ')}",
                 unit: "ms" }
      if ours.empty? || ruby.empty?
        return Row.new(**fields, met: false, note: "every trial lost the signal: #{lost_counts(lost)}")
      end

      Row.new(**fields, **verdict(scenario, ours, ruby, lost),
              ours: ms(Bench.median(ours)), baseline: ms(Bench.median(ruby)),
              note: note(scenario, lost, ours.max, ruby.max))
    end

    # Judged on the worse of the two ratios: a median can hide the trials that waited twice.
    def verdict(scenario, ours, ruby, lost)
      median = Bench.median(ours) / Bench.median(ruby)
      worst = ours.max / ruby.max
      fields = { ratio: median, ratio_best: worst }
      if scenario == :busy
        fields.merge!(goal: GOAL.label, moonshot: GOAL.moonshot_label, met: GOAL.verdict([median, worst].max, nil))
      end
      fields[:met] = false if lost[:channel].positive?
      fields
    end

    def detail(values, lost)
      median = values.empty? ? nil : ms(Bench.median(values)).round(1)
      { median_ms: median, worst_ms: values.max && ms(values.max).round(1), lost: lost,
        all_ms: values.map { |value| ms(value).round(1) } }
    end

    def note(scenario, lost, ours_worst, ruby_worst)
      text = "worst #{ms(ours_worst).round(1)} ms vs #{ms(ruby_worst).round(1)} ms (best-of column: worst/worst)"
      text += "; lost: #{lost_counts(lost)}" if lost.values.any?(&:positive?)
      text += "; context, no goal" unless scenario == :busy
      text
    end

    def lost_counts(lost)
      "Channel#pop #{lost[:channel]}, Queue#pop #{lost[:queue]}"
    end

    def ms(seconds)
      seconds * 1000
    end
  end
end

Bench.main(Bench::SigintLatency) if $PROGRAM_NAME == __FILE__
