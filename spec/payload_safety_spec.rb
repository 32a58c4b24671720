# frozen_string_literal: true

require "open3"
require "rbconfig"

# Payload values that once crashed or leaked the process on their way through Rust, each
# checked through Channel#push and #pop (and the event bus where it converts payloads).
RSpec.describe "Payload safety" do
  let(:name) { "worker.command_processor" }

  # Runs `script` in a fresh Ruby with the gem loaded, killing it after `limit` seconds;
  # returns [stdout and stderr, exit status or "signal N"]. A crash then fails one example
  # instead of taking the rest of the suite down with it.
  def run_isolated(script, limit: 60)
    prelude = "$LOAD_PATH.unshift(#{File.expand_path('../lib', __dir__).inspect})\nrequire 'tasker_channels'\n"
    Open3.popen2e({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", prelude + script) do |stdin, out, waiter|
      stdin.close
      reader = Thread.new { out.read }
      unless waiter.join(limit)
        Process.kill(:KILL, waiter.pid)
        waiter.join
      end
      status = waiter.value
      [reader.value, status.exited? ? status.exitstatus : "signal #{status.termsig}"]
    end
  end

  describe "the empty Symbol" do
    # Regression: an empty Rust string's pointer is dangling (0x1); rebuilding :"" handed it
    # to Ruby, which read it: "[BUG] Segmentation fault at 0x1".
    it "survives push and pop as a value, as a Hash key, nested, and through dispatch" do
      script = <<~RUBY
        runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
        channel = runtime.channel(#{name.inspect})
        values = [:"", { :"" => :"" }, [:"", [:""], { "" => :"", k: "" }], { "" => { :"" => [""] } }]
        values.each do |value|
          channel.push(value)
          popped = channel.pop(timeout: 5)
          raise "pop: \#{value.inspect} came back as \#{popped.inspect}" unless popped == value
        end
        seen = []
        runtime.subscribe("empty.symbol") { |event| seen << event.payload }
        runtime.publish("empty.symbol", { :"" => :"", nested: [:""] })
        runtime.dispatch(timeout: 5)
        raise "dispatch: \#{seen.inspect}" unless seen == [{ :"" => :"", nested: [:""] }]
        runtime.shutdown(timeout: 5)
        puts "ok"
      RUBY

      expect(run_isolated(script)).to eq(["ok\n", 0])
    end
  end
end
