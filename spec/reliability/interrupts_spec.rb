# frozen_string_literal: true

require "open3"
require "timeout"

# A thread waiting in Rust must never hold the GVL, and Thread#kill, Thread#raise, Timeout and
# signals must reach it. Liveness is checked with generous joins, not timing goals.
RSpec.describe "Interrupting threads that wait in the extension" do
  let(:runtime) { build_runtime(dispatch: :manual) }

  def waiting_publisher
    fill_pipeline(runtime)
    blocked_before = ffi_blocked
    thread = Thread.new { runtime.publish("load.event", { seq: :late }, wait: 60) }
    eventually { ffi_blocked > blocked_before }
    thread
  end

  def idle_dispatcher
    thread = Thread.new { runtime.dispatch(timeout: nil) }
    eventually { thread.status == "run" || thread.status == "sleep" }
    sleep 0.05 # let it enter the GVL-free wait
    thread
  end

  def ffi_blocked
    channel_stats(runtime, "shared.ffi")[:blocked]
  end

  [
    ["a publish waiting for room", :waiting_publisher],
    ["an idle manual dispatcher", :idle_dispatcher]
  ].each do |description, starter|
    context "with #{description}" do
      it "is ended by Thread#kill" do
        thread = send(starter)
        thread.kill
        expect(thread.join(5)).to eq(thread)
        expect(thread.status).to be(false)
      end

      it "receives Thread#raise" do
        thread = send(starter)
        thread.report_on_exception = false
        thread.raise(IOError, "stop waiting")
        expect { thread.join(5) }.to raise_error(IOError, "stop waiting")
      end

      it "is stopped by Timeout.timeout" do
        wait_here = if starter == :waiting_publisher
                      fill_pipeline(runtime)
                      -> { runtime.publish("load.event", { seq: :late }, wait: 60) }
                    else
                      -> { runtime.dispatch(timeout: nil) }
                    end
        expect { Timeout.timeout(0.2) { wait_here.call } }.to raise_error(Timeout::Error)
      end
    end
  end

  it "counts an interrupted publish as rejected and keeps the runtime usable" do
    thread = waiting_publisher
    rejected = channel_stats(runtime, "shared.ffi")[:rejected]
    thread.kill
    thread.join(5)
    after = channel_stats(runtime, "shared.ffi")[:rejected]
    expect(after).to eq(rejected + 1)
    runtime.subscribe("load.event") { nil }
    expect(runtime.dispatch(timeout: 1)).to be_positive
  end

  it "lets a CPU-bound Ruby thread keep its speed while dispatchers wait" do
    auto = build_runtime
    auto.subscribe("never.published") { nil }
    auto.start(threads: 2)
    alone = cpu_iterations(0.3)
    auto_ratio_runs = Array.new(3) { cpu_iterations(0.3).fdiv(alone) }
    expect(auto.dispatchers).to eq(3)
    # A dispatcher holding the GVL while it waits would leave the busy thread almost nothing.
    expect(auto_ratio_runs.max).to be > 0.5
  end

  it "delivers SIGINT to the main thread while it waits in publish(wait:)" do
    script = <<~RUBY
      $LOAD_PATH.unshift(#{ChildRuby::LIB.inspect})
      require "tasker_channels"
      rt = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
      loop { rt.publish("x") rescue break }
      sleep 0.2
      loop { rt.publish("x") rescue break }
      Thread.new { sleep 0.3; Process.kill("INT", Process.pid) }
      begin
        rt.publish("x", {}, wait: 60)
        puts "published"
      rescue Interrupt
        puts "interrupted"
      end
    RUBY
    output, status = Open3.capture2e({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", script)
    expect(output).to include("interrupted")
    expect(status).to be_success
  end

  # SIGINT to a main thread blocked in the extension, sent by this process (a Ruby thread in
  # the child sleeping until it sends would itself pass the signal on and hide a lost one).
  # The child prints "ready" just before it blocks and what became of the wait afterwards.
  describe "SIGINT to a main thread blocked in Channel#pop" do
    def child_script(beside, body)
      <<~RUBY
        $LOAD_PATH.unshift(#{ChildRuby::LIB.inspect})
        require "tasker_channels"
        $stdout.sync = true
        rt = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
        channel = rt.channel("worker.command_processor")
        #{beside}
        begin
          puts "ready"
          #{body}
        rescue Interrupt
          puts "interrupted"
        end
        exit!(0)
      RUBY
    end

    # Runs the child, sends it `signals` (name, seconds after "ready"), and returns what it
    # printed after "ready". A child still blocked 30 s after the last signal is killed.
    def after_signals(script, signals)
      Open3.popen2({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", script) do |stdin, stdout, child|
        stdin.close
        expect(stdout.gets).to eq("ready\n")
        signals.each do |name, delay|
          sleep delay
          Process.kill(name, child.pid)
        end
        unless child.join(30)
          Process.kill("KILL", child.pid)
          child.join
        end
        stdout.read
      end
    end

    it "reaches it while another Ruby thread keeps the CPU busy" do
      script = child_script("Thread.new { spins = 0; loop { spins += 1 } }", "p channel.pop")
      expect(after_signals(script, [["INT", 0.2]])).to eq("interrupted\n")
    end

    it "reaches it when the only other Ruby thread exited during the wait" do
      # Ruby 3.1 wakes no one for a wait that began beside a thread that is gone when the
      # signal lands; the wait must notice the signal itself.
      script = child_script("Thread.new { sleep 0.05 }", "p channel.pop")
      expect(after_signals(script, [["INT", 0.3]])).to eq("interrupted\n")
    end

    it "reaches a publish waiting for room beside a busy thread" do
      script = child_script(<<~RUBY, 'p rt.publish("x", {}, wait: 60)')
        loop { rt.publish("x") rescue break }
        sleep 0.2
        loop { rt.publish("x") rescue break }
        Thread.new { spins = 0; loop { spins += 1 } }
      RUBY
      expect(after_signals(script, [["INT", 0.2]])).to eq("interrupted\n")
    end

    it "runs a trap handler and goes on waiting for the value" do
      beside = <<~RUBY
        trap("USR1") { puts "trapped" }
        Thread.new { spins = 0; loop { spins += 1 } }
        Thread.new { sleep 0.6; channel.push(:after_trap) }
      RUBY
      expect(after_signals(child_script(beside, "p channel.pop"), [["USR1", 0.2]])).to eq("trapped\n:after_trap\n")
    end
  end
end
