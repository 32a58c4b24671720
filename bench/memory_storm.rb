# frozen_string_literal: true

# memory_storm: memory under a publish storm with no consumer. RSS growth (VmRSS) over
# 1,000,000 publishes to a runtime in manual dispatch mode that nobody dispatches, against an
# unbounded Queue taking the same 1,000,000 payloads.
#
# Ruby events go in one hop, publish -> shared.ffi -> dispatchers, with nothing in between:
# once shared.ffi is full, publish raises Tasker::Backpressure and nothing more is kept, so
# the events accepted are bounded by shared.ffi's capacity alone (1,000 with the shipped
# settings). Accepted and refused publishes are counted. To show the growth depends on
# capacity and not on load, the storm also runs with 100,000 publishes; the difference
# between the two is what the extra 900,000 publishes cost.
#
# Each storm runs in its own subprocess, so no two share a Ruby heap or malloc arenas; each
# measures VmRSS after its setup and again after its last publish (no GC in between).
#
#   ruby -Ilib bench/memory_storm.rb             (BENCH_STORM=n for the big storm's size)
#   ruby -Ilib bench/memory_storm.rb --child ours|queue N    (one storm; prints JSON)

require "open3"
require_relative "support"

module Bench
  module MemoryStorm
    ENVIRONMENT = "production"
    # Flat in load: the 900,000 extra publishes may add at most this fraction of what the
    # unbounded queue grows by over the full storm.
    FLATNESS = 0.05

    module_function

    def title
      "memory_storm: memory under a publish storm"
    end

    def payload(seq)
      { seq: seq, step_id: 1, status: "complete" }
    end

    # --- children -------------------------------------------------------------------------

    def child(kind, count)
      send(:"storm_#{kind}", count)
    end

    def storm_ours(count)
      runtime = Tasker::Channels::Runtime.new(environment: ENVIRONMENT, dispatch: :manual)
      capacity = Bench.capacity_of(runtime.config, "shared.ffi")
      GC.start
      before = Bench.rss_kb
      accepted = 0
      refused = 0
      cpu_started = Bench.process_cpu
      count.times do |seq|
        runtime.publish("storm.event", payload(seq))
        accepted += 1
      rescue Tasker::Backpressure
        refused += 1
      end
      { kind: "ours", publishes: count, rss_before_kb: before, rss_after_kb: Bench.rss_kb, accepted: accepted,
        refused: refused, capacity: capacity, peak_rss_kb: peak_kb, cpu_seconds: Bench.process_cpu - cpu_started }
    end

    def storm_queue(count)
      queue = Queue.new
      GC.start
      before = Bench.rss_kb
      cpu_started = Bench.process_cpu
      count.times { |seq| queue.push(payload(seq)) }
      { kind: "queue", publishes: count, rss_before_kb: before, rss_after_kb: Bench.rss_kb, accepted: queue.size,
        refused: 0, peak_rss_kb: peak_kb, cpu_seconds: Bench.process_cpu - cpu_started }
    end

    def peak_kb
      line = File.foreach("/proc/self/status").find { |l| l.start_with?("VmHWM:") }
      Integer(line.split[1])
    end

    # --- parent ---------------------------------------------------------------------------

    def spawn_storm(kind, count)
      lib = File.join(Bench::ROOT, "lib")
      out, err, status = Open3.capture3(RbConfig.ruby, "-I", lib, __FILE__, "--child", kind, count.to_s)
      raise "storm #{kind} #{count} failed (#{status}):\n#{err}" unless status.success?

      result = JSON.parse(out.lines.last, symbolize_names: true)
      result.merge(growth_mb: (result[:rss_after_kb] - result[:rss_before_kb]) / 1024.0)
    end

    def run(log: nil)
      big = Settings.count("BENCH_STORM", 1_000_000)
      small = big / 10
      storms = { ours_big: ["ours", big], ours_small: ["ours", small], queue_big: ["queue", big] }
      results = storms.transform_values do |(kind, count)|
        started = Bench.monotonic
        spawn_storm(kind, count).tap do |r|
          log&.puts format("  %-5<kind>s %9<n>d publishes: RSS +%<mb>.1f MB, accepted %<acc>d, " \
                           "refused %<ref>d (%<s>.1f s)", kind: kind, n: count, mb: r[:growth_mb],
                                                          acc: r[:accepted], ref: r[:refused],
                                                          s: Bench.monotonic - started)
        end
      end
      summarize(results, big, small)
    end

    def summarize(results, big, small)
      ours = results[:ours_big]
      extra = ours[:growth_mb] - results[:ours_small][:growth_mb]
      bound = ours[:capacity]
      rows = [growth_row(ours, results[:queue_big], big, bound), flatness_row(results, extra, big, small)]
      { rows: rows, details: { storms: results, extra_growth_mb: extra.round(2), accepted_bound: bound } }
    end

    def growth_row(ours, queue, big, bound)
      per_publish = ours[:cpu_seconds] / ours[:publishes] * 1e6
      Row.new(id: "memory_storm.rss_growth", benchmark: "RSS growth, #{big} publishes, no consumer",
              ours: ours[:growth_mb], baseline: queue[:growth_mb], unit: "MB",
              ratio: ours[:growth_mb] / queue[:growth_mb], goal: "accepted <= #{bound}", met: ours[:accepted] <= bound,
              note: "ours accepted #{ours[:accepted]}, refused #{ours[:refused]} " \
                    "(#{per_publish.round(2)} us CPU per publish); queue kept #{queue[:accepted]}")
    end

    def flatness_row(results, extra, big, small)
      ours, ours_small, queue = results.values_at(:ours_big, :ours_small, :queue_big)
      Row.new(id: "memory_storm.flat_in_load", benchmark: "RSS growth, #{big} vs #{small} publishes (ours)",
              ours: ours[:growth_mb], baseline: ours_small[:growth_mb], unit: "MB",
              ratio: ours[:growth_mb] / [ours_small[:growth_mb], 0.001].max,
              goal: "extra <= #{(FLATNESS * 100).round}% of queue's", met: extra <= FLATNESS * queue[:growth_mb],
              note: "the extra #{big - small} publishes added #{extra.round(1) + 0.0} MB")
    end
  end
end

if $PROGRAM_NAME == __FILE__
  if ARGV.first == "--child"
    puts JSON.generate(Bench::MemoryStorm.child(ARGV.fetch(1), Integer(ARGV.fetch(2))))
  else
    Bench.main(Bench::MemoryStorm)
  end
end
