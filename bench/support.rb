# frozen_string_literal: true

# Shared helpers for the benchmarks under bench/: the machine description, timing, medians
# and percentiles, RSS, throwaway config dirs, result rows, the environment knobs and the results table.
#
# Every benchmark compares the gem against a baseline measured in the same process (or in a
# sibling subprocess) during the same run, and reports the ratio: the machines these run on
# are shared and noisy, so absolute times mean little from one run to the next.

# Quiet the channels' saturation warnings: several benchmarks saturate on purpose, and a
# screenful of WARN lines would bury the table. Set TASKER_LOG yourself to see them.
ENV["TASKER_LOG"] ||= "error"

require "etc"
require "fileutils"
require "json"
require "rbconfig"
require "tmpdir"
require "tasker_channels"

module Bench
  ROOT = File.expand_path("..", __dir__)
  ENVIRONMENT = "bench"

  module_function

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # CPU time of the calling thread: unlike wall time it does not count the time the thread
  # spent descheduled, which on a loaded 2-CPU machine is most of the noise.
  def thread_cpu
    Process.clock_gettime(Process::CLOCK_THREAD_CPUTIME_ID)
  end

  # CPU time of the whole process, every thread (Ruby, dispatchers, the extension's own).
  def process_cpu
    Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
  end

  def median(samples)
    sorted = samples.sort
    mid = sorted.size / 2
    sorted.size.odd? ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2.0
  end

  # Nearest-rank percentile (p in 0..100).
  def percentile(samples, pct)
    sorted = samples.sort
    rank = ((pct / 100.0) * sorted.size).ceil.clamp(1, sorted.size)
    sorted[rank - 1]
  end

  # Runs the block (which moves `events` events) and returns its rate in events/s, its wall
  # time, the process CPU time per event in microseconds and the Ruby objects allocated
  # per event (all threads).
  def timed_events(events)
    allocated = GC.stat(:total_allocated_objects)
    started = monotonic
    cpu_started = process_cpu
    yield
    elapsed = monotonic - started
    { rate: events / elapsed, seconds: elapsed, cpu_us_per_event: (process_cpu - cpu_started) / events * 1e6,
      objects_per_event: (GC.stat(:total_allocated_objects) - allocated).fdiv(events) }
  end

  # Resident set size of this process in KiB (VmRSS from /proc/self/status).
  def rss_kb
    File.foreach("/proc/self/status") do |line|
      return Integer(line.split[1]) if line.start_with?("VmRSS:")
    end
    raise "no VmRSS in /proc/self/status"
  end

  def machine
    cpu = File.foreach("/proc/cpuinfo").find { |line| line.start_with?("model name") }
    {
      nproc: Etc.nprocessors,
      cpu_model: cpu ? cpu.split(":", 2).last.strip : "unknown",
      ruby: RUBY_DESCRIPTION,
      kernel: File.read("/proc/sys/kernel/osrelease").strip,
      loadavg: File.read("/proc/loadavg").split.first(3).map(&:to_f)
    }
  end

  def machine_line(info = machine)
    "#{info[:nproc]} CPUs (#{info[:cpu_model]}), #{info[:ruby]}, Linux #{info[:kernel]}, " \
      "load #{info[:loadavg].join(' ')}"
  end

  # A config dir whose `bench` environment sets shared.ffi's capacity (where publish puts
  # Ruby events and dispatchers take them from) and, if given, worker.in_process_events'
  # (which carries the events the Rust side emits). Removed at exit.
  def config_dir(ffi:, in_process: nil)
    dir = Dir.mktmpdir("tasker-bench-config")
    at_exit { FileUtils.remove_entry(dir) if File.directory?(dir) }
    env_dir = File.join(dir, "environments", ENVIRONMENT)
    FileUtils.mkdir_p(env_dir)
    toml = +"[mpsc_channels.shared.ffi]\nruby_event_buffer_size = #{Integer(ffi)}\n"
    toml << "\n[mpsc_channels.worker.in_process_events]\nbroadcast_buffer_size = #{Integer(in_process)}\n" if in_process
    File.write(File.join(env_dir, "mpsc_channels.toml"), toml)
    dir
  end

  def runtime(ffi:, dispatch:, in_process: nil)
    Tasker::Channels::Runtime.new(environment: ENVIRONMENT, config_dir: config_dir(ffi: ffi, in_process: in_process),
                                  dispatch: dispatch)
  end

  # The configured capacity of a channel in a Tasker::Channels::Config.
  def capacity_of(config, channel)
    config.channels.find { |spec| spec[:name] == channel }.fetch(:capacity)
  end

  # Fails unless `channel` holds `capacity` events in `environment`'s shipped settings: a
  # baseline's SizedQueue copies that capacity, so both sides hold the same number of events.
  def require_capacity(channel, capacity, environment:)
    configured = capacity_of(Tasker::Channels::Config.load(environment: environment), channel)
    return if configured == capacity

    raise "#{channel} holds #{configured} events in #{environment}, the baseline's SizedQueue #{capacity}"
  end

  # Runs one pass of a manual-mode runtime's dispatch until everything published so far has
  # reached a handler (or `within` seconds pass). Returns the events delivered.
  def drain(runtime, expected_total, within: 30)
    deadline = monotonic + within
    delivered = 0
    while runtime.event_stats[:delivered] < expected_total && monotonic < deadline
      delivered += runtime.dispatch(timeout: 0.01)
    end
    delivered
  end

  def table(rows)
    Table.render(rows)
  end

  # Runs one benchmark module (which responds to `title` and `run` returning
  # { rows: [Row...], details: {...} }) and prints its rows; used when a file runs alone.
  def main(benchmark)
    $stdout.sync = true
    puts "#{benchmark.title} — #{machine_line}"
    result = benchmark.run(log: $stdout)
    puts
    puts table(result[:rows])
    result[:rows].select(&:note).each { |row| puts "  #{row.id}: #{row.note}" }
    puts
    puts JSON.pretty_generate(result[:details]) if ENV["BENCH_DETAILS"]
    result
  end
end

module Bench
  # One line of the results table. `ours`/`baseline` are medians in `unit`; `ratio` is
  # ours/baseline of those medians and `ratio_best` the same for the best sample of each side
  # (nil where there is no such pair, as for percentiles). `goal` and `moonshot` are labels;
  # `met` is a verdict from Goal#verdict, or true/false for a goal that is not a ratio, or nil
  # for a row that has no goal (context only).
  Row = Struct.new(:id, :benchmark, :ours, :baseline, :unit, :ratio, :ratio_best, :goal, :moonshot, :met, :note,
                   keyword_init: true) do
    def to_h
      super.compact
    end

    def met?
      [true, :met, :moonshot].include?(met)
    end

    def missed?
      [false, :best_only, :missed].include?(met)
    end
  end

  # A ratio goal and its moonshot: `direction` is :>= (ours / baseline of a rate, higher is
  # better) or :<= (of a cost, lower is better). The verdict is taken on the median ratio;
  # when only the best-of ratio reaches the goal, the row says so instead of claiming it.
  Goal = Struct.new(:direction, :target, :moonshot) do
    def label
      "#{direction} #{target}x"
    end

    def moonshot_label
      moonshot && "#{moonshot}x"
    end

    def reached?(ratio, level)
      direction == :>= ? ratio >= level : ratio <= level
    end

    def verdict(median, best)
      return :moonshot if moonshot && reached?(median, moonshot)
      return :met if reached?(median, target)
      return :best_only if best && reached?(best, target)

      :missed
    end

    # The Row attributes this goal fills for a median and a best-of ratio.
    def row_fields(median, best)
      { ratio: median, ratio_best: best, goal: label, moonshot: moonshot_label, met: verdict(median, best) }
    end
  end
end

module Bench
  # The knobs the benchmarks read from the environment (docs/benchmarks.md lists them).
  module Settings
    module_function

    # A whole number (BENCH_ROUNDS, BENCH_EVENTS, ...), or `default` when unset.
    def count(name, default)
      Integer(ENV.fetch(name, default))
    end

    # A duration in seconds (BENCH_ROUND_SECONDS, ...), or `default` when unset.
    def seconds(name, default)
      Float(ENV.fetch(name, default))
    end

    # The end-to-end benchmarks' sizes: events one run moves (BENCH_EVENTS) and runs of each
    # variant, alternated (BENCH_RUNS).
    def end_to_end_sizes
      [count("BENCH_EVENTS", 200_000), count("BENCH_RUNS", 7)]
    end
  end

  # The cost per call of small operations, in the calling thread's CPU time
  # (CLOCK_THREAD_CPUTIME_ID): none of them blocks, and on a loaded machine wall time mostly
  # measures the scheduler. Each round runs every candidate once, in a rotating order, from a
  # clean heap; a candidate is [timed lambda running `calls` calls, untimed cleanup or nil].
  # The candidate named :empty_loop is the loop alone; its figure in the same round is taken
  # off every other candidate's, so "net" figures are the calls alone.
  module CallRounds
    module_function

    # { net_ns:, wall_ns:, allocations: } each { candidate => [one value per timed round] }.
    def measure(candidates, rounds:, calls:, warmup: 3)
      samples = { net_ns: {}, wall_ns: {}, allocations: {} }
      samples.each_value { |by_key| candidates.each_key { |key| by_key[key] = [] } }
      (warmup + rounds).times do |round|
        gross = candidates.keys.rotate(round % candidates.size).to_h do |key|
          [key, time_round(*candidates.fetch(key), calls)]
        end
        next if round < warmup

        record(samples, gross)
      end
      samples
    end

    def record(samples, gross)
      empty = gross.fetch(:empty_loop)[:cpu_ns]
      gross.each do |key, sample|
        samples[:net_ns][key] << (sample[:cpu_ns] - empty)
        samples[:wall_ns][key] << sample[:wall_ns]
        samples[:allocations][key] << sample[:allocations]
      end
    end

    def time_round(run_calls, cleanup, calls)
      GC.start
      allocated_before = GC.stat(:total_allocated_objects)
      started = Bench.monotonic
      cpu_started = Bench.thread_cpu
      run_calls.call
      cpu = Bench.thread_cpu - cpu_started
      elapsed = Bench.monotonic - started
      allocations = GC.stat(:total_allocated_objects) - allocated_before
      cleanup&.call
      { cpu_ns: cpu / calls * 1e9, wall_ns: elapsed / calls * 1e9, allocations: allocations.fdiv(calls) }
    end

    # A plain while loop (cheaper than Integer#times) around the call under test.
    def loop_calls(calls)
      i = 0
      while i < calls
        yield
        i += 1
      end
    end

    # Per candidate: median and best (lowest) net ns per call, median wall ns, median
    # allocations per call.
    def summary(samples)
      samples[:net_ns].to_h do |key, values|
        [key, { median_ns: Bench.median(values).round(1), best_ns: values.min.round(1),
                median_wall_ns: Bench.median(samples[:wall_ns][key]).round(1),
                allocations_per_call: Bench.median(samples[:allocations][key]) }]
      end
    end
  end

  # Pipelines timed end to end (Bench.timed_events) over several runs that alternate between
  # the variants, so a drift in machine load hits all of them alike.
  module Rates
    module_function

    # { variant => [one Bench.timed_events result per run] }; `variants` maps a name to a
    # lambda running one timed pipeline.
    def alternate(variants, runs:, log: nil)
      results = Hash.new { |hash, key| hash[key] = [] }
      runs.times do |index|
        variants.each do |key, variant|
          GC.start
          result = variant.call
          results[key] << result
          log&.puts format("  run %<run>d %-20<key>s %<rate>10.0f events/s, %<objects>.2f objects/event%<extra>s",
                           run: index + 1, key: key, rate: result[:rate], objects: result[:objects_per_event],
                           extra: result[:refusals] ? "  (#{result[:refusals]} Backpressure refusals)" : "")
        end
      end
      results
    end

    # Median and best events/s of a variant's runs, with its median CPU and objects per event.
    def stats(runs)
      median = ->(key) { Bench.median(runs.map { |run| run[key] }) }
      { rate: median.call(:rate).round, best_rate: runs.map { |run| run[:rate] }.max.round,
        cpu_us_per_event: median.call(:cpu_us_per_event).round(3),
        objects_per_event: median.call(:objects_per_event).round(3) }
    end

    # Every run's figures, rounded for the JSON.
    def rounded(results)
      results.transform_values do |runs|
        runs.map { |run| run.transform_values { |v| v.is_a?(Float) ? v.round(4) : v } }
      end
    end

    # A row comparing two variants' rates (higher is better), `pair` naming [ours, baseline];
    # a goal is optional.
    def row(stats, pair, id:, label:, goal: nil)
      ours, baseline = pair.map { |key| stats.fetch(key) }
      median = ours[:rate].fdiv(baseline[:rate])
      best = ours[:best_rate].fdiv(baseline[:best_rate])
      verdict = goal ? goal.row_fields(median, best) : { ratio: median, ratio_best: best }
      note = "objects/event #{ours[:objects_per_event]} vs #{baseline[:objects_per_event]}, " \
             "CPU/event #{ours[:cpu_us_per_event]} vs #{baseline[:cpu_us_per_event]} us"
      Row.new(id: id, benchmark: label, ours: ours[:rate], baseline: baseline[:rate], unit: "ev/s", **verdict,
              note: goal ? note : "#{note}; context, no goal")
    end
  end

  # The results table, as Markdown. `ours` and `baseline` are medians; `ratio` compares the
  # medians and `best-of` the best sample of each side; `met?` is judged on the median.
  module Table
    HEADER = ["benchmark", "ours", "baseline", "ratio", "best-of", "goal", "moonshot", "met?"].freeze
    MET = { true => "yes", false => "NO", nil => "-", moonshot: "moonshot", met: "yes", best_only: "best-of only",
            missed: "NO" }.freeze
    # Decimals by magnitude: 1234 ns, 12.3 ns, 1.23 ns.
    DIGITS = [[100, 0], [10, 1]].freeze

    module_function

    def render(rows)
      cells = rows.map { |row| cells_for(row) }
      widths = HEADER.each_index.map { |i| ([HEADER[i]] + cells.map { |c| c[i] }).map(&:size).max }
      lines = [HEADER, widths.map { |w| "-" * w }, *cells].map do |values|
        padded = values.each_with_index.map { |v, i| i.zero? ? v.ljust(widths[i]) : v.rjust(widths[i]) }
        "| #{padded.join(' | ')} |"
      end
      lines.join("\n")
    end

    def cells_for(row)
      [row.benchmark, value(row.ours, row.unit), value(row.baseline, row.unit), times(row.ratio),
       times(row.ratio_best), row.goal || "-", row.moonshot || "-", MET.fetch(row.met)]
    end

    def times(ratio)
      ratio ? format("%.2fx", ratio) : "-"
    end

    # Three significant figures or so, with thousands separators for big counts.
    def value(number, unit)
      return "-" if number.nil?

      digits = DIGITS.find { |(floor, _)| number.abs >= floor }&.last || 2
      text = format("%.#{digits}f", number)
      text = text.reverse.scan(/\d{1,3}/).join(",").reverse if number >= 10_000
      "#{text} #{unit}"
    end
  end
end
