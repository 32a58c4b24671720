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

  describe "Symbols with NUL bytes" do
    let(:channel) { channel_runtime({ name => { capacity: 8 } }).channel(name) }

    # Regression: a static Symbol's name was read as a C string, so :"a\0b" arrived as :a.
    it "keep every byte of their names, as values and as keys" do
      value = { :"k\0ey" => [:"a\0b", "a\0b".to_sym, :"\0"], "s\0" => :"x\0" }
      channel.push(value)

      expect(channel.pop(timeout: 5)).to eq(value)
    end
  end

  # Regression: Symbols rebuilt on delivery were static (rb_intern3), never freed: 200,000
  # events with fresh keys left 400,000 more Symbols and 78 MB behind.
  describe "Symbols rebuilt from Rust data" do
    let(:rounds) { 50 }
    let(:per_round) { 1000 }
    let(:channel) { channel_runtime({ name => { capacity: per_round } }).channel(name) }

    def symbol_count
      GC.start
      Symbol.all_symbols.size
    end

    def fresh_pairs(salt, round)
      Array.new(per_round) { |i| [:"key_#{salt}_#{round}_#{i}", :"value_#{salt}_#{round}_#{i}"] }
    end

    def expect_names(popped, salt, round)
      expect(popped.map { |hash| hash.first.map(&:class) }).to all(eq([Symbol, Symbol]))
      expect(popped.map { |hash| hash.first.map(&:to_s) }).to eq(fresh_pairs(salt, round).map { |pair| pair.map(&:to_s) })
    end

    it "reuses the Symbols the sender still holds, without pinning them, so they are collected later" do
      salt = rand(1 << 30)
      before = symbol_count
      rounds.times do |round|
        held = fresh_pairs(salt, round)
        held.each { |key, value| channel.push({ key => value }) }
        popped = Array.new(per_round) { channel.pop(timeout: 5) }

        expect(popped.zip(held).all? { |hash, (key, value)| hash.first[0].equal?(key) && hash.first[1].equal?(value) })
          .to be(true)
      end

      expect(symbol_count - before).to be < (rounds * per_round / 10)
    end

    it "makes collectable Symbols for keys nobody holds any more, with the right names" do
      salt = rand(1 << 30)
      before = symbol_count
      rounds.times do |round|
        fresh_pairs(salt, round).each { |key, value| channel.push({ key => value }) }
        # The sender's Symbols are collected before the pops, so delivery must create them.
        GC.start
        expect_names(Array.new(per_round) { channel.pop(timeout: 5) }, salt, round)
      end

      expect(symbol_count - before).to be < (rounds * per_round / 10)
    end

    it "hands back the very Symbol that exists already" do
      expect(channel.push({ step_id: :completed })).to be(true)
      popped = channel.pop(timeout: 5)

      expect(popped.keys.first).to equal(:step_id)
      expect(popped[:step_id]).to equal(:completed)
    end
  end
end
