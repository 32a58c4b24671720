# frozen_string_literal: true

require "spec_helper"
require "open3"
require "tmpdir"

# Nothing accepted is lost silently: inline dispatch, drain, shutdown where users call it,
# exit, fork and daemon, and the counters that account for every accepted event.
RSpec.describe "Supervised delivery and honest shutdown" do
  # Runs `script` in a fresh Ruby with the gem loaded; returns [output, status].
  def run_ruby(script, env = {}, preload: true)
    Open3.capture2e({ "TASKER_ENV" => "test" }.merge(env), RbConfig.ruby, "-I", ChildRuby::LIB,
                    *("-rtasker_channels" if preload), "-e", "$stdout.sync = true\n#{script}")
  end

  def identity_holds?(stats)
    stats[:published] + stats[:emitted] ==
      stats[:delivered] + stats[:unmatched] + stats[:undelivered] + stats[:pending]
  end

  describe "dispatch: :inline" do
    let(:runtime) { build_runtime(dispatch: :inline) }

    it "runs the matching handlers on the caller's thread before publish returns" do
      seen = []
      runtime.subscribe("inline.*") { |name, payload| seen << [name, payload[:n], Thread.current] }
      runtime.publish("inline.one", n: 1)
      expect(seen).to eq([["inline.one", 1, Thread.current]])
      runtime.publish("inline.two", { n: 2 })
      expect(seen.map { |_, n, _| n }).to eq([1, 2])
    end

    it "delivers a publish made inside a handler once that handler returns" do
      order = []
      runtime.subscribe("outer") do |_name, _payload|
        runtime.publish("inner")
        order << :outer
      end
      runtime.subscribe("inner") { |_name, _payload| order << :inner }
      runtime.publish("outer")
      expect(order).to eq(%i[outer inner])
    end

    it "delivers Rust-emitted events at the next publish or drain" do
      seen = []
      runtime.subscribe("rust.inline") { |event| seen << event.source }
      runtime.emit("rust.inline", { n: 1 })
      expect(eventually { runtime.stats.find { |row| row[:channel] == "worker.in_process_events" }[:length] == 1 })
        .to be(true)
      expect(seen).to eq([])
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 2)).to be(true)
      expect(seen).to eq([:rust])
    end
  end

  describe "Testing.drain" do
    it "waits, without sleeps in the spec, until everything accepted so far was delivered" do
      runtime = build_runtime
      seen = Queue.new
      runtime.subscribe("drain.event") do |_name, payload|
        sleep 0.001
        seen << payload[:n]
      end
      50.times { |n| runtime.publish("drain.event", n: n) }
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 10)).to be(true)
      expect(seen.size).to eq(50)
      expect(identity_holds?(runtime.event_stats)).to be(true)
    end

    it "dispatches on the caller's thread in manual mode" do
      runtime = build_runtime(dispatch: :manual)
      threads = []
      runtime.subscribe("drain.manual") { |_name, _payload| threads << Thread.current }
      6.times { runtime.publish("drain.manual") }
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 5)).to be(true)
      expect(threads).to eq([Thread.current] * 6)
    end

    it "says false when the time runs out first" do
      runtime = build_runtime
      gate = Queue.new
      runtime.subscribe("drain.held") { |_name, _payload| gate.pop }
      runtime.publish("drain.held")
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 0.05)).to be(false)
      gate << :go
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 5)).to be(true)
    end
  end

  describe "accounting" do
    it "keeps published + emitted = delivered + unmatched + undelivered + pending through churn" do
      runtime = build_runtime
      gate = Queue.new
      runtime.subscribe("count.matched") { |_name, payload| gate.pop if payload[:hold] }
      runtime.publish("count.matched", hold: true)
      20.times { |n| runtime.publish(n.even? ? "count.matched" : "count.unmatched", n: n) }
      Tasker::Channels::Testing.emit_from_rust(runtime, "count.matched", { rust: true }, count: 30)
      stalled = eventually { runtime.event_stats[:emitted] == 30 && runtime.event_stats[:pending] >= 30 }
      expect(stalled).to be(true)
      # A dispatcher holds the stalled event; the rest waits on the bus.
      expect(identity_holds?(runtime.event_stats)).to be(true)
      expect(runtime.event_stats[:pending]).to be >= 50
      gate << :go
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 10)).to be(true)
      stats = runtime.event_stats
      expect(stats).to include(published: 21, emitted: 30, unmatched: 10, pending: 0)
      expect(identity_holds?(stats)).to be(true)
    end

    it "keeps the identity in every snapshot taken while publishers, an emitter and dispatchers run" do
      runtime = channel_runtime({ "shared.ffi" => { capacity: 64 }, "worker.in_process_events" => { capacity: 16 } },
                                dispatch: :manual)
      runtime.subscribe("load.matched") { |_name, _payload| nil }
      runtime.start(threads: 2)
      publishers = Array.new(3) do |t|
        Thread.new do
          600.times do |n|
            runtime.publish(n.even? ? "load.matched" : "load.unmatched", { t: t, n: n })
          rescue Tasker::Backpressure
            Thread.pass
            retry
          end
        end
      end
      Tasker::Channels::Testing.emit_from_rust(runtime, "load.matched", { rust: true }, count: 2_000)
      snapshots = []
      snapshots << runtime.event_stats while publishers.any?(&:alive?) || snapshots.size < 200
      publishers.each(&:join)
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 20)).to be(true)
      snapshots << runtime.event_stats

      # Accepted and not settled can only be what the buffers, the dispatchers' batches and the
      # emitter's event in hand hold.
      bound = 64 + 16 + channel_stats(runtime, "shared.event_publisher")[:capacity] +
              (2 * Tasker::Channels::Runtime::BATCH_SIZE) + 1
      broken = snapshots.reject { |stats| identity_holds?(stats) && stats[:pending].between?(0, bound) }
      expect(broken.first(3)).to eq([])
      %i[published emitted delivered unmatched].each do |counter|
        expect(snapshots.each_cons(2).all? { |a, b| a[counter] <= b[counter] }).to be(true), "#{counter} went back"
      end
      expect(snapshots.last).to include(published: 1_800, pending: 0)
      expect(snapshots.last[:emitted]).to be >= 2_000
    end

    it "counts Rust events that drop_oldest evicted from shared.event_publisher as undelivered" do
      runtime = channel_runtime({ "shared.event_publisher" => { capacity: 2, overflow: "drop_oldest" },
                                  "worker.in_process_events" => { capacity: 2, overflow: "block" } })
      runtime.subscribe("evicted.*") { |_name, _payload| nil }
      # No dispatcher yet: the dispatch side fills, the forwarder waits, and each emit into the
      # full publisher buffer evicts the oldest accepted one.
      ids = Array.new(12) { |n| runtime.emit("evicted.event", { n: n }) }
      expect(ids).to all(be_a(Integer))
      stats = runtime.event_stats
      expect(stats[:emitted]).to be >= 12
      expect(stats[:undelivered]).to be >= 12 - 5
      expect(identity_holds?(stats)).to be(true)
      # Draining makes room, and the monitor says so with channel.* notices of its own.
      expect(eventually { Tasker::Channels::Testing.drain(runtime, timeout: 5) && runtime.event_stats[:pending].zero? })
        .to be(true)
      stats = runtime.event_stats
      expect(stats[:delivered] + stats[:unmatched] + stats[:undelivered]).to eq(stats[:emitted])
      expect(identity_holds?(stats)).to be(true)
    end

    it "counts Rust events the dispatch side's drop policy discarded as undelivered" do
      dir = Dir.mktmpdir
      FileUtils.mkdir_p(File.join(dir, "environments/test"))
      File.write(File.join(dir, "environments/test/mpsc_channels.toml"), <<~TOML)
        [mpsc_channels.worker.in_process_events]
        broadcast_buffer_size = 2
        overflow = "drop"
      TOML
      runtime = build_runtime(dispatch: :manual, config_dir: dir)
      runtime.subscribe("lossy.*") { |_name, _payload| nil }
      Tasker::Channels::Testing.emit_from_rust(runtime, "lossy.event", {}, count: 20)
      # The monitor's own channel.* notices about the full buffer are Rust events too.
      expect(eventually { runtime.event_stats[:emitted] >= 20 }).to be(true)
      expect(eventually { runtime.event_stats[:undelivered] >= 18 }).to be(true)
      expect(Tasker::Channels::Testing.drain(runtime, timeout: 5)).to be(true)
      stats = runtime.event_stats
      expect(stats[:undelivered_by_reason]).to eq(dropped: stats[:undelivered])
      expect(identity_holds?(stats)).to be(true)
    ensure
      FileUtils.rm_rf(dir)
    end
  end

  describe "shutdown where users call it" do
    it "works from inside a handler: stops intake, does not join itself, and the rest is delivered" do
      runtime = build_runtime
      results = Queue.new
      seen = Queue.new
      gate = Queue.new
      runtime.subscribe("stop.*") do |name, payload|
        if name == "stop.now"
          gate.pop
          results << runtime.shutdown(timeout: 1)
        end
        seen << payload[:n]
      end
      runtime.publish("stop.now", n: 0)
      3.times { |n| runtime.publish("stop.later", n: n + 1) }
      gate << :go
      expect(results.pop).to be(false)
      expect(Array.new(4) { seen.pop }).to eq([0, 1, 2, 3])
      expect { runtime.publish("stop.late") }.to raise_error(Tasker::ClosedError)
      expect(runtime.shutdown(timeout: 10)).to be(true)
    end

    it "works from a Signal.trap block: no ThreadError, intake closed, accepted events delivered" do
      output, status = run_ruby(<<~RUBY)
        rt = Tasker::Channels::Runtime.new
        rt.subscribe("trap.event") { |_n, payload| puts "got \#{payload[:n]}" }
        Signal.trap("USR1") { puts "shutdown returned \#{rt.shutdown(timeout: 1).inspect}" }
        3.times { |n| rt.publish("trap.event", n: n) }
        Process.kill("USR1", Process.pid)
        sleep 0.2
        begin
          rt.publish("trap.event", n: 9)
        rescue Tasker::ClosedError
          puts "closed"
        end
        puts "final \#{rt.shutdown(timeout: 5)}"
      RUBY
      expect(status.success?).to be(true), output
      expect(output).to include("shutdown returned false", "closed", "final true")
      expect(output.scan(/got (\d)/).flatten).to eq(%w[0 1 2])
      expect(output).not_to include("ThreadError")
    end
  end

  describe "exit" do
    it "drains every live runtime within the exit timeout, keeping the exit status" do
      output, status = run_ruby(<<~RUBY)
        rt = Tasker::Channels::Runtime.new
        count = 0
        rt.subscribe("exit.work") do |_n, _p|
          sleep 0.0005
          count += 1
          puts "delivered \#{count}" if count == 500
        end
        500.times { |n| rt.publish("exit.work", n: n) }
        exit 7
      RUBY
      expect(status.exitstatus).to eq(7), output
      expect(output).to include("delivered 500")
      expect(output).not_to include("WARN")
    end

    it "names what was left undelivered in one WARN when the timeout runs out" do
      output, status = run_ruby(<<~RUBY, { "TASKER_EXIT_TIMEOUT" => "0.2" })
        stalled = Tasker::Channels::Runtime.new
        stalled.subscribe("exit.slow") { |_n, _p| sleep 0.05 }
        manual = Tasker::Channels::Runtime.new(dispatch: :manual)
        manual.publish("exit.never")
        100.times { stalled.publish("exit.slow") }
        exit 3
      RUBY
      expect(status.exitstatus).to eq(3), output
      warnings = output.lines.grep(/WARN exiting with/)
      expect(warnings.size).to eq(1), output
      expect(warnings.first).to match(/exiting with \d+ accepted event\(s\) undelivered after 0.2 s/)
      expect(warnings.first).to include("test runtime")
    end

    it "refuses a publish from an at_exit hook that runs after the gem's" do
      output, status = run_ruby(<<~RUBY, preload: false)
        at_exit do
          Tasker::Channels.publish("late.event")
        rescue Tasker::ClosedError => e
          puts "closed: \#{e.message}"
        end
        require "tasker_channels"
      RUBY
      expect(status.success?).to be(true), output
      expect(output).to include("closed: the process is exiting")
    end
  end

  describe "fork and daemon", if: Process.respond_to?(:fork) do
    it "keeps event ids unique across parent and child, and a shut-down runtime's child closed" do
      output, status = run_ruby(<<~RUBY)
        rt = Tasker::Channels::Runtime.new(dispatch: :manual)
        closed = Tasker::Channels::Runtime.new(dispatch: :manual)
        closed.shutdown(timeout: 1)
        parent_ids = Array.new(3) { rt.publish("fork.event") }
        reader, writer = IO.pipe
        pid = fork do
          reader.close
          ids = Array.new(3) { rt.publish("fork.event") }
          state = begin
            closed.publish("fork.closed")
            "open"
          rescue Tasker::ClosedError
            "closed"
          end
          writer.puts([ids.join(","), state].join(" "))
          exit!(0)
        end
        writer.close
        child_ids, child_state = reader.read.split
        Process.wait(pid)
        more = Array.new(3) { rt.publish("fork.event") }
        all = parent_ids + more + child_ids.split(",").map(&:to_i)
        puts "unique \#{all.uniq.size == all.size} child \#{child_state}"
      RUBY
      expect(status.success?).to be(true), output
      expect(output).to include("unique true child closed")
    end

    it "restarts dispatchers after Process.daemon, which no fork hook sees" do
      Dir.mktmpdir do |dir|
        report = File.join(dir, "report")
        _output, status = run_ruby(<<~RUBY)
          rt = Tasker::Channels::Runtime.new
          rt.subscribe("daemon.event") { |_n, payload| File.write(#{report.inspect}, payload[:from].to_s) }
          rt.publish("daemon.event", from: "parent")
          sleep 0.1 until File.exist?(#{report.inspect})
          File.delete(#{report.inspect})
          Process.daemon(true, true)
          rt.publish("daemon.event", from: "daemon")
          sleep 5
        RUBY
        expect(status.success?).to be(true)
        expect(eventually(within: 10) { File.exist?(report) && File.read(report) == "daemon" }).to be(true)
      end
    end
  end
end
