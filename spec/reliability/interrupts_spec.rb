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
end
