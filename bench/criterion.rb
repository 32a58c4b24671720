# frozen_string_literal: true

# criterion: the core crate's own benchmark: `cargo bench -p tasker_channels_core --bench channels`.
# It measures the monitored channel against the raw channels it could have been and ends by
# printing its own table of medians and ratios; that table is kept verbatim (and parsed into
# rows where its shape allows). A missing or failing bench is reported, not fatal.
#
#   ruby -Ilib bench/criterion.rb
#   BENCH_CRITERION=full   criterion with shortened timings, then the ratio table (default)
#   BENCH_CRITERION=table  only the bench's ratio table (TASKER_BENCH_TABLE_ONLY=1), faster
#   BENCH_CRITERION=skip   do not run cargo at all
#   BENCH_CARGO_TIMEOUT=s  give up on the run after s seconds (default 300); the build before it
#                          (`cargo bench --no-run`) has its own BENCH_CARGO_BUILD_TIMEOUT (900)

require "open3"
require_relative "support"

module Bench
  module Criterion
    COMMAND = %w[cargo bench -p tasker_channels_core --bench channels].freeze
    # Criterion's command-line timings; the bench's groups may set their own.
    SHORT_TIMINGS = %w[-- --warm-up-time 1 --measurement-time 2].freeze
    # The table prints "inf" for a ratio over a zero minimum.
    NUMBER = /\A(?:\d+(?:\.\d+)?|inf)\z/

    module_function

    def title
      "criterion: the core crate's channel bench"
    end

    def run(log: nil)
      mode = ENV.fetch("BENCH_CRITERION", "full")
      return skipped("skipped (BENCH_CRITERION=skip)") if mode == "skip"

      output, status, seconds = build(log) || run_cargo(mode, log)
      table = ratio_table(output)
      log&.puts(table ? "\n#{table}" : output.lines.last(30).join)
      summarize(table, status, seconds, mode, output)
    end

    # Compiles the bench first, so a cold build does not eat the run's timeout. Returns nil
    # when the build succeeded, else what run_cargo would return for the failure.
    def build(log)
      timeout = Settings.seconds("BENCH_CARGO_BUILD_TIMEOUT", 900)
      started = Bench.monotonic
      output, status = capture_with_timeout({}, COMMAND + ["--no-run"], timeout)
      return nil if status.respond_to?(:success?) && status.success?

      log&.puts "  cargo bench --no-run failed"
      [output, status, Bench.monotonic - started]
    end

    def run_cargo(mode, log)
      env = mode == "table" ? { "TASKER_BENCH_TABLE_ONLY" => "1" } : {}
      args = mode == "table" ? COMMAND : COMMAND + SHORT_TIMINGS
      timeout = Settings.seconds("BENCH_CARGO_TIMEOUT", 300)
      log&.puts "  $ #{env.map { |k, v| "#{k}=#{v} " }.join}#{args.join(' ')}"
      started = Bench.monotonic
      output, status = capture_with_timeout(env, args, timeout)
      [output, status, Bench.monotonic - started]
    end

    # Runs `args` in its own process group, killing the whole group after `timeout` seconds.
    def capture_with_timeout(env, args, timeout)
      Open3.popen2e(env, *args, chdir: Bench::ROOT, pgroup: true) do |stdin, out, waiter|
        stdin.close
        reader = Thread.new { out.read }
        unless waiter.join(timeout)
          Process.kill("TERM", -waiter.pid)
          waiter.join(5) || Process.kill("KILL", -waiter.pid)
          return [reader.value, :"timeout after #{timeout.round} s"]
        end
        [reader.value, waiter.value]
      end
    rescue Errno::ENOENT => e
      ["could not run cargo: #{e.message}", :"not found (#{e.message})"]
    end

    # The bench's closing table: its last column header line ("producers  channel ...") with
    # the description line just above it, down to the end of the output.
    def ratio_table(output)
      lines = output.lines.map(&:rstrip)
      header = lines.rindex { |line| line.match?(/\Aproducers\s+channel\b/) }
      return nil unless header

      start = header.positive? && !lines[header - 1].strip.empty? ? header - 1 : header
      lines[start..].join("\n").rstrip
    end

    def summarize(table, status, seconds, mode, output)
      ok = status.respond_to?(:success?) && status.success?
      problem = if !ok then "cargo bench failed (#{describe(status)})"
                elsif table.nil? then "cargo bench printed no ratio table"
                end
      details = { mode: mode, seconds: seconds.round(1), ok: ok && !table.nil?, problem: problem,
                  ratio_table: table, rows: table ? parse_rows(table) : [],
                  output_tail: problem ? output.lines.last(40).join : nil }.compact
      # A partial table (a run cut short) is kept in the details, but yields no rows.
      { rows: problem ? [failure_row(problem)] : rows_from(table), details: details, verbatim: problem ? nil : table }
    end

    # Rows are "<producers> <channel> <median ms> <ratio> [more numbers]"; any further
    # columns are kept, in order, as `more`.
    def describe(status)
      status.respond_to?(:exitstatus) ? "exit #{status.exitstatus.inspect}" : status.to_s
    end

    def parse_rows(table)
      table.lines.filter_map do |line|
        producers, channel, *numbers = line.split
        next unless channel && numbers.size >= 2 && numbers.all? { |n| n.match?(NUMBER) }

        median_ms, ratio, *more = numbers.map { |n| n == "inf" ? Float::INFINITY : Float(n) }
        { producers: producers, channel: channel, median_ms: median_ms, ratio: ratio, more: more }
      end
    end

    # One summary row per producer count: the monitored channel against the raw pair it is
    # budgeted against, with the budget the bench states in its header.
    def rows_from(table)
      budget = table[/budget vs raw-pair:\s*<=\s*(\d+(?:\.\d+)?)/, 1]&.to_f
      parse_rows(table).group_by { |row| row[:producers] }.filter_map do |producers, rows|
        monitored = rows.find { |row| row[:channel] == "monitored" }
        raw = rows.find { |row| row[:channel] == "raw-pair" }
        budget_row(producers, monitored, raw, budget) if monitored && raw
      end
    end

    def budget_row(producers, monitored, raw, budget)
      ratio = monitored[:median_ms] / raw[:median_ms]
      # The table's next column is the minimum, its best-of figure (none over a zero minimum).
      best = monitored[:more].first / raw[:more].first if monitored[:more].any? && raw[:more].first&.positive?
      Row.new(id: "criterion.monitored_vs_raw_pair.#{producers}",
              benchmark: "monitored vs raw-pair channel, #{producers}",
              ours: monitored[:median_ms], baseline: raw[:median_ms], unit: "ms", ratio: ratio, ratio_best: best,
              goal: budget ? "<= #{budget}x" : nil, met: budget ? ratio <= budget : nil,
              note: "from the core crate's own ratio table")
    end

    def failure_row(problem)
      Row.new(id: "criterion", benchmark: "core crate criterion bench: #{problem}", note: problem)
    end

    def skipped(reason)
      { rows: [failure_row(reason)], details: { ok: false, problem: reason }, verbatim: nil }
    end
  end
end

Bench.main(Bench::Criterion) if $PROGRAM_NAME == __FILE__
