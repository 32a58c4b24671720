# frozen_string_literal: true

# Runs every benchmark under bench/ in one process (the memory storm spawns its own
# subprocesses), prints one table — benchmark, ours, baseline, ratio of the medians, ratio of
# the best-of figures, goal, moonshot, met? — and writes every figure to
# bench/results/latest.json. `rake bench` runs this after `rake compile:release`.
#
#   ruby -Ilib bench/run.rb
#   BENCH_ONLY=publish_cost,throughput ruby -Ilib bench/run.rb   run a subset, by name
#   BENCH_OUTPUT=path                                            write the JSON elsewhere
#
# Missed goals do not fail the run: the table says so. A benchmark that crashes is reported
# in the table and the JSON, and makes the exit status 1 once everything else has run.

require "open3"
require "time"
require_relative "support"
require_relative "publish_cost"
require_relative "refused_publish"
require_relative "throughput"
require_relative "rust_to_ruby"
require_relative "memory_storm"
require_relative "wakeup_latency"
require_relative "idle_dispatchers"
require_relative "sigint_latency"
require_relative "criterion"

module Bench
  module Runner
    BENCHMARKS = {
      "publish_cost" => PublishCost, "refused_publish" => RefusedPublish, "throughput" => Throughput,
      "rust_to_ruby" => RustToRuby, "memory_storm" => MemoryStorm, "wakeup_latency" => WakeupLatency,
      "idle_dispatchers" => IdleDispatchers, "sigint_latency" => SigintLatency,
      "criterion" => Criterion
    }.freeze
    # The letters the benchmarks had before they were named (docs/benchmarks.md, History).
    FORMER_LETTERS = {
      "a" => "publish_cost", "b" => "throughput", "c" => "memory_storm", "d" => "wakeup_latency",
      "e" => "idle_dispatchers", "f" => "criterion"
    }.freeze

    module_function

    def selected
      only = ENV.fetch("BENCH_ONLY", "").split(",").map(&:strip).reject(&:empty?)
      unknown = only - BENCHMARKS.keys
      if unknown.any?
        hints = unknown.filter_map { |key| FORMER_LETTERS[key] && "#{key} is now #{FORMER_LETTERS[key]}" }
        abort "BENCH_ONLY: unknown benchmark(s) #{unknown.join(', ')}#{" (#{hints.join(', ')})" if hints.any?}; " \
              "known: #{BENCHMARKS.keys.join(',')}"
      end
      only.empty? ? BENCHMARKS : BENCHMARKS.slice(*only)
    end

    def run
      $stdout.sync = true
      machine = Bench.machine
      puts "tasker_channels benchmarks on #{Bench.machine_line(machine)}"
      started = Bench.monotonic
      results = selected.transform_values { |benchmark| run_one(benchmark) }
      elapsed = Bench.monotonic - started
      report(results, machine, elapsed)
      write_json(results, machine, elapsed)
      exit 1 if results.values.any? { |result| result[:error] }
    end

    def run_one(benchmark)
      puts "\n== #{benchmark.title}"
      started = Bench.monotonic
      result = benchmark.run(log: $stdout)
      result.merge(seconds: (Bench.monotonic - started).round(1))
    rescue StandardError => e
      warn "#{benchmark.title} failed: #{e.class}: #{e.message}\n  #{e.backtrace.first(5).join("\n  ")}"
      { rows: [Row.new(id: benchmark.name, benchmark: "#{benchmark.title}: FAILED (#{e.class})", note: e.message)],
        details: {}, error: "#{e.class}: #{e.message}" }
    end

    def report(results, machine, elapsed)
      rows = results.values.flat_map { |result| result[:rows] }
      verbatim = results.dig("criterion", :verbatim)
      puts
      if verbatim
        puts "Core crate criterion bench, its own ratio table (verbatim):"
        puts verbatim
        puts
      end
      puts "Machine: #{Bench.machine_line(machine)}"
      source = source_revision
      changed = source[:uncommitted_changes]
      puts "Source: #{source[:commit] || 'unknown'}#{" + uncommitted changes in #{changed.join(', ')}" if changed.any?}"
      puts "Total: #{elapsed.round} s. Ratios compare figures measured in this run; see docs/benchmarks.md."
      puts
      puts Bench.table(rows)
      notes = rows.select(&:note)
      return if notes.empty?

      puts
      notes.each { |row| puts "  #{row.id}: #{row.note}" }
    end

    # The commit measured, and the product files that differed from it (a run on a work tree).
    def source_revision
      commit, = Open3.capture2("git", "rev-parse", "HEAD", chdir: Bench::ROOT)
      changed, = Open3.capture2("git", "status", "--porcelain", "--", "lib", "ext", "crates", "config",
                                chdir: Bench::ROOT)
      { commit: commit.strip, uncommitted_changes: changed.lines.map { |line| line[3..].strip } }
    rescue SystemCallError
      { commit: nil, uncommitted_changes: [] }
    end

    # JSON has no Infinity or NaN (a ratio over a zero-time minimum is infinite): write those
    # as strings.
    def finite(value)
      case value
      when Hash then value.transform_values { |inner| finite(inner) }
      when Array then value.map { |inner| finite(inner) }
      when Float then value.finite? ? value : value.to_s
      else value
      end
    end

    def write_json(results, machine, elapsed)
      path = ENV.fetch("BENCH_OUTPUT", File.join(Bench::ROOT, "bench", "results", "latest.json"))
      FileUtils.mkdir_p(File.dirname(path))
      all_rows = results.values.flat_map { |result| result[:rows] }
      rows = all_rows.map(&:to_h)
      document = {
        generated_at: Time.now.utc.iso8601, machine: machine, source: source_revision, total_seconds: elapsed.round(1),
        goals: { met: all_rows.count(&:met?), missed: all_rows.count(&:missed?) },
        rows: rows,
        criterion_ratio_table: results.dig("criterion", :verbatim),
        benchmarks: results.transform_values do |result|
          { seconds: result[:seconds], details: result[:details], error: result[:error] }.compact
        end
      }
      File.write(path, "#{JSON.pretty_generate(finite(document))}\n")
      puts "\nWrote #{path}"
    end
  end
end

Bench::Runner.run if $PROGRAM_NAME == __FILE__
