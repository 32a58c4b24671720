# frozen_string_literal: true

# wakeup_latency: wake-up latency of an idle dispatcher: time from just before `publish` to the start of
# the handler, with the dispatcher waiting (without the GVL) before every event, against a
# Ruby consumer thread blocked in SizedQueue#pop woken by SizedQueue#push.
#
# The publisher sleeps 2 ms between events so the consumer is always idle when the next one
# comes. Ours goes publish -> shared.ffi -> dispatcher thread (woken by the doorbell, then
# taking the GVL) -> handler: one thread crossed, as for the baseline. Both pipelines exist
# for the whole run and are sampled in alternating blocks, so a change in machine load hits
# both alike. No goal: context for throughput.
#
#   ruby -Ilib bench/wakeup_latency.rb      (BENCH_SAMPLES=n, default 2000 each)

require_relative "support"

module Bench
  module WakeupLatency
    NAME = "bench.wakeup"
    GAP = 0.002
    BLOCK = 250

    module_function

    def title
      "wakeup_latency: an idle dispatcher woken by publish"
    end

    def run(log: nil)
      samples = Settings.count("BENCH_SAMPLES", 2_000)
      ours = Ours.new
      ruby = RubyQueue.new
      blocks = (samples.to_f / BLOCK).ceil
      blocks.times do |block|
        count = [BLOCK, samples - (block * BLOCK)].min
        [ours, ruby].rotate(block % 2).each { |pipeline| pipeline.sample(count) }
      end
      log&.puts "  #{samples} samples each, #{(GAP * 1000).round} ms apart, in blocks of #{BLOCK}"
      summarize(ours.latencies, ruby.latencies)
    ensure
      ours&.close
      ruby&.close
    end

    # Ours: one dispatcher thread (started by the first subscribe) running the handler.
    class Ours
      attr_reader :latencies

      def initialize
        @latencies = []
        @runtime = Tasker::Channels::Runtime.new(environment: "production")
        @runtime.subscribe(NAME) { |event| @latencies << (Bench.monotonic - event.payload[:sent_at]) }
      end

      def sample(count)
        target = @latencies.size + count
        count.times do
          sleep GAP
          @runtime.publish(NAME, { sent_at: Bench.monotonic })
        end
        sleep 0.001 while @latencies.size < target
      end

      def close
        @runtime.shutdown(timeout: 5)
      end
    end

    # The baseline: a consumer thread blocked in SizedQueue#pop.
    class RubyQueue
      attr_reader :latencies

      def initialize
        @latencies = []
        @queue = SizedQueue.new(1000)
        @consumer = Thread.new do
          while (payload = @queue.pop)
            @latencies << (Bench.monotonic - payload[:sent_at])
          end
        end
      end

      def sample(count)
        target = @latencies.size + count
        count.times do
          sleep GAP
          @queue.push({ sent_at: Bench.monotonic })
        end
        sleep 0.001 while @latencies.size < target
      end

      def close
        @queue.close
        @consumer.join
      end
    end

    def summarize(ours, ruby)
      us = ->(values, pct) { Bench.percentile(values, pct) * 1e6 }
      rows = [50, 99].map do |pct|
        Row.new(id: "wakeup_latency.p#{pct}", benchmark: "dispatcher wake-up latency p#{pct}", ours: us.call(ours, pct),
                baseline: us.call(ruby, pct), unit: "us", ratio: us.call(ours, pct) / us.call(ruby, pct),
                note: "baseline: SizedQueue#pop wake-up; context, no goal")
      end
      details = {
        samples: ours.size, gap_ms: GAP * 1000,
        ours_us: { p50: us.call(ours, 50), p90: us.call(ours, 90), p99: us.call(ours, 99), max: ours.max * 1e6 },
        sized_queue_us: { p50: us.call(ruby, 50), p90: us.call(ruby, 90), p99: us.call(ruby, 99), max: ruby.max * 1e6 }
      }
      details.each_value { |value| value.transform_values! { |v| v.round(1) } if value.is_a?(Hash) }
      { rows: rows, details: details }
    end
  end
end

Bench.main(Bench::WakeupLatency) if $PROGRAM_NAME == __FILE__
