# frozen_string_literal: true

# postgres: PostgreSQL notifications into Ruby handlers, on a throwaway cluster (Unix socket).
#
# Throughput: N notifications from one `SELECT pg_notify(...) FROM generate_series(...)`
# (run by psql, committed at once) counted by one Ruby handler, against what a Ruby user
# would write with ruby-pg: a `PG::Connection#wait_for_notify` loop calling the same handler.
# Both clocks start before psql runs and stop when the handler has counted the Nth one.
# Runs alternate (ours, ruby-pg, reader, ...); the figure is the median notifications/s.
# Goal: ours >= 2x ruby-pg (moonshot 4x).
#
# The reader is the ceiling: tokio-postgres alone, counting notifications as it reads them
# and doing nothing else (crates/tasker_channels_core/examples/pg_read_rate.rs), on the same
# clock. No listener built on it, ours included, can pass that rate; when the reader itself
# is within 2x of ruby-pg, the server and psql set the pace and the goal cannot be met here.
#
# Memory: a burst of BENCH_PG_BURST (1,000,000) notifications into a handler stalled for
# 2 s, in a subprocess each: ours (the listener stops reading once its channels are full)
# against a ruby-pg reader thread that pushes into a Queue for a stalled worker thread (what
# a Ruby user would write to keep the connection drained). RSS growth is measured at the end
# of the stall; then both deliver everything. Goal: ours reads at most its channels'
# capacity while stalled.
#
#   ruby -Ilib bench/postgres.rb         (BENCH_PG_NOTIFICATIONS=n, BENCH_RUNS=n, BENCH_PG_BURST=n)
#   ruby -Ilib bench/postgres.rb --child ours|ruby_pg BURST    (one memory run; prints JSON)

require "open3"
require_relative "support"
require_relative "../spec/support/postgres_cluster"

module Bench
  module Postgres
    CHANNEL = "bench_notify"
    GOAL = 2.0
    # The listener path's capacities in the bench environment (and the stall's read bound).
    LISTENER_CAPACITY = 10_000
    DISPATCH_CAPACITY = 1_000

    module_function

    def title
      "postgres: PostgreSQL notifications -> Ruby handler"
    end

    def pg_available?
      require "pg"
      true
    rescue LoadError
      false
    end

    def run(log: nil)
      raise "ruby-pg is not installed (bin/setup installs ruby-pg)" unless pg_available?

      PostgresCluster.ensure_started
      count = Integer(ENV.fetch("BENCH_PG_NOTIFICATIONS", 200_000))
      rates = measure_rates(count, Integer(ENV.fetch("BENCH_RUNS", 3)), log)
      burst = Integer(ENV.fetch("BENCH_PG_BURST", 1_000_000))
      memory = { ours: PostgresMemory.spawn("ours", burst, log), ruby_pg: PostgresMemory.spawn("ruby_pg", burst, log) }
      rows = throughput_rows(count, rates) + [PostgresMemory.row(burst, memory)]
      { rows: rows, details: { rates: rates, memory: memory, read_bound: PostgresMemory.read_bound } }
    ensure
      PostgresCluster.stop
    end

    def measure_rates(count, runs, log)
      reader = PostgresReader.build
      rates = { ours: [], ruby_pg: [], reader: [] }
      runs.times do |round|
        rates[:ours] << ours(count)
        rates[:ruby_pg] << ruby_pg(count)
        rates[:reader] << PostgresReader.rate(reader, count)
        log&.puts format("  round %<r>d: ours %<o>.0f/s, ruby-pg %<b>.0f/s, reader alone %<c>.0f/s",
                         r: round + 1, o: rates[:ours].last, b: rates[:ruby_pg].last, c: rates[:reader].last)
      end
      rates
    end

    def notify_command(count, channel = CHANNEL)
      [File.join(PostgresCluster.bin, "psql"), "-X", "-q", "-h", PostgresCluster.socket_dir, "-U", "postgres",
       "-d", "postgres", "-c",
       "DO $$ BEGIN PERFORM pg_notify('#{channel}', g::text) FROM generate_series(1, #{count}) g; END $$"]
    end

    def send_burst(count, channel = CHANNEL)
      Process.spawn(*notify_command(count, channel), out: File::NULL, close_others: true)
    end

    def runtime
      config = Bench.config_dir(ffi: 1000, in_process: DISPATCH_CAPACITY)
      Tasker::Channels::Runtime.new(environment: Bench::ENVIRONMENT, config_dir: config)
    end

    # Ours: the listener feeds one dispatcher thread that runs the handler.
    def ours(count)
      rt = runtime
      counted = 0
      done = Queue.new
      handler = ->(payload) { done << true if (counted += 1) == count && payload }
      rt.subscribe("pg.#{CHANNEL}") { |_name, notification| handler.call(notification[:payload]) }
      rt.listen(PostgresCluster.url, channels: [CHANNEL])
      started = Bench.monotonic
      psql = send_burst(count)
      done.pop
      elapsed = Bench.monotonic - started
      Process.wait(psql)
      rt.shutdown(timeout: 10)
      count / elapsed
    end

    # Baseline: ruby-pg's wait_for_notify on the calling thread, the same handler.
    def ruby_pg(count)
      connection = PG.connect(PostgresCluster.libpq_url)
      connection.exec("LISTEN #{CHANNEL}")
      counted = 0
      handler = ->(payload) { counted += 1 if payload }
      started = Bench.monotonic
      psql = send_burst(count)
      connection.wait_for_notify(30) { |_channel, _pid, payload| handler.call(payload) } while counted < count
      elapsed = Bench.monotonic - started
      Process.wait(psql)
      connection.close
      count / elapsed
    end

    def throughput_rows(count, rates)
      ours, baseline, reader = rates.values_at(:ours, :ruby_pg, :reader).map { |runs| Bench.median(runs) }
      ratio = ours / baseline
      [
        Row.new(id: "postgres.throughput", benchmark: "#{count} pg_notify -> handler vs ruby-pg wait_for_notify",
                ours: ours, baseline: baseline, unit: "n/s", ratio: ratio, goal: ">= #{GOAL}x", met: ratio >= GOAL,
                note: ("moonshot (4x) met" if ratio >= 4.0)),
        Row.new(id: "postgres.reader_ceiling", benchmark: "tokio-postgres reading alone vs ruby-pg (the ceiling)",
                ours: reader, baseline: baseline, unit: "n/s", ratio: reader / baseline, goal: "-", met: nil,
                note: "ours reaches #{(100 * ours / reader).round}% of what a reader that only counts reaches")
      ]
    end
  end

  # The ceiling of the postgres benchmark: tokio-postgres reading and counting, nothing more
  # (crates/tasker_channels_core/examples/pg_read_rate.rs), on the same clock as the others.
  module PostgresReader
    EXAMPLE = "pg_read_rate"

    module_function

    # Built in release mode by cargo, which building the extension needs anyway.
    def build
      root = File.expand_path("..", __dir__)
      built = system("cargo", "build", "--quiet", "--release", "--locked", "-p", "tasker_channels_core",
                     "--example", EXAMPLE, chdir: root)
      raise "cargo could not build the #{EXAMPLE} example" unless built

      File.join(ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target")), "release", "examples", EXAMPLE)
    end

    # The reader prints `listening` once its LISTEN is in place and a line of JSON once it
    # has read `count`.
    def rate(binary, count)
      Open3.popen2(binary, PostgresCluster.url, Postgres::CHANNEL, count.to_s) do |stdin, stdout, waiter|
        stdin.close
        raise "#{EXAMPLE} did not start listening" unless stdout.gets&.strip == "listening"

        started = Bench.monotonic
        psql = Postgres.send_burst(count)
        raise "#{EXAMPLE} stopped before reading #{count}" unless stdout.gets

        elapsed = Bench.monotonic - started
        Process.wait(psql)
        raise "#{EXAMPLE} failed" unless waiter.value.success?

        count / elapsed
      end
    end
  end

  # The memory runs of the postgres benchmark, each in a subprocess of its own (no shared heap or arenas).
  module PostgresMemory
    CHANNEL = Postgres::CHANNEL
    STALL_SECONDS = 2

    module_function

    # What the listener path may read while its handler is stalled: its channels' capacity,
    # plus one relay batch and one dispatch batch in hand.
    def read_bound
      Postgres::LISTENER_CAPACITY + Postgres::DISPATCH_CAPACITY + 64 + Tasker::Channels::Runtime::BATCH_SIZE + 1
    end

    def row(burst, memory)
      mine = memory[:ours]
      theirs = memory[:ruby_pg]
      Row.new(id: "postgres.stalled_rss", benchmark: "RSS growth, #{burst} notifications, handler stalled",
              ours: mine[:growth_mb], baseline: theirs[:growth_mb], unit: "MB",
              ratio: mine[:growth_mb] / [theirs[:growth_mb], 0.001].max, goal: "read <= #{read_bound}",
              met: mine[:read_while_stalled] <= read_bound && mine[:delivered] == burst,
              note: "ours read #{mine[:read_while_stalled]} while stalled, delivered #{mine[:delivered]}; " \
                    "ruby-pg reader queued #{theirs[:read_while_stalled]}")
    end

    def spawn(kind, burst, log)
      lib = File.join(Bench::ROOT, "lib")
      out, err, status = Open3.capture3(RbConfig.ruby, "-I", lib, __FILE__, "--child", kind, burst.to_s,
                                        PostgresCluster.socket_dir)
      raise "memory run #{kind} failed (#{status}):\n#{err}" unless status.success?

      result = JSON.parse(out.lines.last, symbolize_names: true)
      result[:growth_mb] = (result[:rss_stalled_kb] - result[:rss_before_kb]) / 1024.0
      log&.puts format("  %<kind>-7s %<n>d stalled: RSS +%<mb>.1f MB, read %<read>d while stalled, delivered %<d>d",
                       kind: kind, n: burst, mb: result[:growth_mb], read: result[:read_while_stalled],
                       d: result[:delivered])
      result
    end

    def child(kind, burst, socket_dir)
      PostgresCluster.instance_variable_set(:@socket_dir, socket_dir)
      send(:"memory_#{kind}", burst)
    end

    def memory_ours(burst)
      rt = Postgres.runtime
      gate = Queue.new
      counted = 0
      done = Queue.new
      rt.subscribe("pg.#{CHANNEL}") do |_event|
        gate.pop if counted.zero?
        done << true if (counted += 1) == burst
      end
      listener = rt.listen(PostgresCluster.url, channels: [CHANNEL])
      GC.start
      before = Bench.rss_kb
      Process.wait(Postgres.send_burst(burst))
      sleep STALL_SECONDS
      stalled = Bench.rss_kb
      read = listener.stats[:received]
      gate << true
      done.pop
      { kind: "ours", burst: burst, rss_before_kb: before, rss_stalled_kb: stalled, read_while_stalled: read,
        delivered: counted, peak_rss_kb: peak_kb }
    end

    def memory_ruby_pg(burst)
      require "pg"
      queue = Queue.new
      gate = Queue.new
      reader = ruby_pg_reader(burst, queue)
      worker = Thread.new do
        gate.pop
        counted = 0
        counted += 1 while counted < burst && queue.pop
        counted
      end
      GC.start
      before = Bench.rss_kb
      Process.wait(Postgres.send_burst(burst))
      sleep STALL_SECONDS
      stalled = Bench.rss_kb
      read = queue.size
      gate << true
      reader.join
      { kind: "ruby_pg", burst: burst, rss_before_kb: before, rss_stalled_kb: stalled, read_while_stalled: read,
        delivered: worker.value, peak_rss_kb: peak_kb }
    end

    # What a Ruby user writes to keep a connection drained: a thread moving every
    # notification into a Queue for the workers.
    def ruby_pg_reader(burst, queue)
      connection = PG.connect(PostgresCluster.libpq_url)
      connection.exec("LISTEN #{CHANNEL}")
      Thread.new do
        read = 0
        while read < burst
          connection.wait_for_notify(30) do |_channel, _pid, payload|
            queue << payload
            read += 1
          end
        end
        connection.close
      end
    end

    def peak_kb
      Integer(File.read("/proc/self/status")[/^VmHWM:\s+(\d+)/, 1])
    end
  end
end

if $PROGRAM_NAME == __FILE__
  if ARGV.first == "--child"
    puts JSON.generate(Bench::PostgresMemory.child(ARGV.fetch(1), Integer(ARGV.fetch(2)), ARGV.fetch(3)))
  else
    Bench.main(Bench::Postgres)
  end
end
