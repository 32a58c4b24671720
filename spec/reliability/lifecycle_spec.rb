# frozen_string_literal: true

require "open3"

RSpec.describe "Runtime lifecycle: shutdown, exit and fork" do
  def run_ruby(script, env = {})
    Open3.capture3({ "TASKER_LOG" => "off" }.merge(env), RbConfig.ruby, "-e", ChildRuby::PRELUDE + script)
  end

  describe "#shutdown" do
    it "delivers everything accepted, joins the dispatchers and then refuses publishes", :ffi do
      runtime = build_runtime
      received = []
      runtime.subscribe("work.*") { |event| received << event.payload[:n] }
      runtime.start(threads: 2)
      ids = Array.new(40) { |n| runtime.publish("work.item", { n: n }) }

      expect(runtime.shutdown(timeout: 10)).to be(true)
      expect(received.sort).to eq((0...ids.size).to_a)
      expect(runtime.dispatchers).to eq(0)
      expect(runtime).to be_closed
      expect { runtime.publish("work.item") }.to raise_error(Tasker::ClosedError, /shut down/)
    end

    it "drains on the calling thread in manual mode", :ffi do
      runtime = build_runtime(dispatch: :manual)
      received = []
      runtime.subscribe("m") { |event| received << event.id }
      ids = Array.new(10) { runtime.publish("m") }
      expect(runtime.shutdown(timeout: 10)).to be(true)
      expect(received).to eq(ids)
    end

    it "wakes a publisher waiting for room with Tasker::ClosedError" do
      runtime = build_runtime(dispatch: :manual)
      fill_pipeline(runtime)
      waiting = Thread.new do
        Thread.current.report_on_exception = false
        runtime.publish("load.event", {}, wait: 60)
      end
      eventually { runtime.stats.find { |row| row[:channel] == "shared.ffi" }[:blocked] == 1 }
      runtime.shutdown(timeout: 10)
      expect { waiting.join(10) }.to raise_error(Tasker::ClosedError)
    end

    it "returns false when handlers do not finish within the timeout" do
      runtime = build_runtime
      gate = Queue.new
      runtime.subscribe("slow") { gate.pop }
      runtime.publish("slow")
      runtime.publish("slow")
      expect(runtime.shutdown(timeout: 0.2)).to be(false)
      2.times { gate << :go }
      expect(runtime.shutdown(timeout: 10)).to be(true)
    end
  end

  describe "the default runtime" do
    it "is shared by the module methods and built from TASKER_ENV" do
      out, err, status = run_ruby(<<~RUBY, "TASKER_ENV" => "production")
        rt = Tasker::Channels.runtime
        puts rt.equal?(Tasker::Channels.runtime)
        puts rt.environment
        puts Tasker::Channels.stats.size
      RUBY
      expect([out.lines.map(&:chomp), err, status.success?]).to eq([%w[true production 7], "", true])
    end

    it "delivers every accepted event at exit" do
      out, err, status = run_ruby(<<~RUBY)
        Tasker::Channels.subscribe("exit.*") { |event| sleep 0.001; puts event.payload[:n] }
        200.times { |n| Tasker::Channels.publish("exit.test", { n: n }) }
      RUBY
      expect(err).to eq("")
      expect(status).to be_success
      expect(out.lines.map(&:to_i)).to eq((0...200).to_a)
    end
  end

  describe "fork" do
    it "rebuilds the runtime in the child, keeps subscriptions, and neither side hangs" do
      out, err, status = run_ruby(<<~RUBY)
        rt = Tasker::Channels::Runtime.new(environment: "test")
        seen = Queue.new
        rt.subscribe("fork.*") { |event| seen << [Process.pid, event.payload[:from]] }
        rt.publish("fork.test", { from: "parent-before" })
        puts "parent before: \#{seen.pop.last}"

        reader, writer = IO.pipe
        pid = fork do
          reader.close
          rt.publish("fork.test", { from: "child" })
          pid_seen, from = seen.pop
          writer.puts "child got \#{from} in child: \#{pid_seen == Process.pid}"
          writer.puts "child dispatchers: \#{rt.dispatchers}"
          writer.close
        end
        writer.close
        child_said = reader.read
        Process.wait(pid)
        puts child_said
        puts "child exit: \#{$?.success?}"
        rt.publish("fork.test", { from: "parent-after" })
        puts "parent after: \#{seen.pop.last}"
      RUBY
      expect(err).to eq("")
      expect(status).to be_success
      expect(out.lines.map(&:chomp)).to eq([
                                             "parent before: parent-before",
                                             "child got child in child: true",
                                             "child dispatchers: 1",
                                             "child exit: true",
                                             "parent after: parent-after"
                                           ])
    end

    it "does not deliver the parent's queued events in the child" do
      out, _err, status = run_ruby(<<~RUBY)
        rt = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
        rt.subscribe("queued") { |event| puts "\#{Process.pid == $parent ? 'parent' : 'child'} got \#{event.payload[:n]}" }
        $parent = Process.pid
        3.times { |n| rt.publish("queued", { n: n }) }
        pid = fork do
          rt.publish("queued", { n: 99 })
          rt.dispatch(timeout: 1)
          rt.shutdown(timeout: 5)
        end
        Process.wait(pid)
        $stdout.flush
        rt.shutdown(timeout: 5)
      RUBY
      expect(status).to be_success
      expect(out.lines.map(&:chomp)).to eq(["child got 99", "parent got 0", "parent got 1", "parent got 2"])
    end
  end
end
