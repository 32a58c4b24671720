# frozen_string_literal: true

# Shared helpers for the benchmarks under bench/: the machine description, timing, medians
# and percentiles, RSS, throwaway config dirs, result rows and the results table.
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

  # One line of the results table. `ours`/`baseline` are numbers in `unit`; `ratio` is what
  # the goal is checked against (its direction is spelled out in `goal`); `met` is nil when
  # the row has no goal (context only).
  Row = Struct.new(:id, :benchmark, :ours, :baseline, :unit, :ratio, :goal, :met, :note, keyword_init: true) do
    def to_h
      super.compact
    end
  end

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

  # A config dir whose `bench` environment sets the two buffers the event path runs through.
  # Removed at exit. Capacities: shared.ffi (where publish lands) and worker.in_process_events
  # (where dispatchers take from).
  def config_dir(ffi:, in_process:)
    dir = Dir.mktmpdir("tasker-bench-config")
    at_exit { FileUtils.remove_entry(dir) if File.directory?(dir) }
    env_dir = File.join(dir, "environments", ENVIRONMENT)
    FileUtils.mkdir_p(env_dir)
    File.write(File.join(env_dir, "mpsc_channels.toml"), <<~TOML)
      [mpsc_channels.shared.ffi]
      ruby_event_buffer_size = #{Integer(ffi)}

      [mpsc_channels.worker.in_process_events]
      broadcast_buffer_size = #{Integer(in_process)}
    TOML
    dir
  end

  def runtime(ffi:, in_process:, dispatch:)
    Tasker::Channels::Runtime.new(environment: ENVIRONMENT, config_dir: config_dir(ffi: ffi, in_process: in_process),
                                  dispatch: dispatch)
  end

  # The configured capacity of a channel in a Tasker::Channels::Config.
  def capacity_of(config, channel)
    config.channels.find { |spec| spec[:name] == channel }.fetch(:capacity)
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
    puts
    puts JSON.pretty_generate(result[:details]) if ENV["BENCH_DETAILS"]
    result
  end
end

module Bench
  # The results table, as Markdown: benchmark, ours, baseline, ratio, goal, met?.
  module Table
    HEADER = %w[benchmark ours baseline ratio goal met?].freeze
    MET = { true => "yes", false => "NO", nil => "-" }.freeze
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
      [row.benchmark, value(row.ours, row.unit), value(row.baseline, row.unit),
       row.ratio ? format("%.2fx", row.ratio) : "-", row.goal || "-", MET.fetch(row.met)]
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
