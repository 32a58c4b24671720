# frozen_string_literal: true

require "open3"
require "rbconfig"

# Payload values that once crashed or leaked the process on their way through Rust, each
# checked through Channel#push and #pop (and the event bus where it converts payloads).
RSpec.describe "Payload safety" do
  let(:name) { "worker.command_processor" }

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

  describe "Symbols with NUL bytes", :ffi do
    let(:channel) { channel_runtime({ name => { capacity: 8 } }).channel(name) }

    # Regression: a static Symbol's name was read as a C string, so :"a\0b" arrived as :a.
    it "keep every byte of their names, as values and as keys" do
      value = { "k\x00ey": %I[a\x00b \x00], "s\0" => :"x\x00" }
      channel.push(value)

      expect(channel.pop(timeout: 5)).to eq(value)
    end
  end

  describe "String encodings and Hash keys", :ffi do
    include_context "an 8-place worker channel"

    def expect_refused(value, error_class, message)
      expect { channel.push(value) }.to raise_error(error_class, message)
      expect(channel.size).to eq(0)
      expect(channel_stats(runtime, name)).to include(sent: 0, rejected: 0)
    end

    it "accepts binary-labelled Strings and Symbols holding valid UTF-8, and hands them back as UTF-8" do
      channel.push({ "caf\xC3\xA9".b => ["\xE6\x97\xA5\xE6\x9C\xAC".b, "plain".b] })
      popped = channel.pop(timeout: 5)

      expect(popped).to eq({ "café" => %w[日本 plain] })
      expect([popped.keys.first.encoding, popped["café"].first.encoding]).to eq([Encoding::UTF_8, Encoding::UTF_8])
      expect(channel.push("caf\xC3\xA9".b.to_sym) && channel.pop(timeout: 5)).to equal(:café)
    end

    it "still refuses binary Strings that are not valid UTF-8, naming the path" do
      expect_refused({ blob: [1, "\xC3\x28".b] }, ArgumentError,
                     /\Avalue\[:blob\]\[1\] is a String that is not valid UTF-8/)
      expect_refused({ "\xFF\xFE".b => 1 }, ArgumentError, /\Avalue has a String key that is not valid UTF-8/)
    end

    it "refuses a compare_by_identity Hash with two equal String keys instead of merging them" do
      by_identity = {}.compare_by_identity
      by_identity[+"id"] = 1
      by_identity[+"id"] = 2

      expect_refused({ outer: [by_identity] }, ArgumentError,
                     /\Avalue\[:outer\]\[0\] has the key "id" twice \(a compare_by_identity Hash\)/)
      large = {}.compare_by_identity
      40.times { |i| large["k#{i}"] = i }
      large[+"k7"] = :again
      expect_refused(large, ArgumentError, /\Avalue has the key "k7" twice/)
    end

    it "refuses two keys that are the same text in different encodings" do
      expect_refused({ "é" => 1, "é".encode(Encoding::ISO_8859_1) => 2 }, ArgumentError,
                     /\Avalue has two keys that are both "é" as UTF-8 text/)
      expect_refused({ "caf\xC3\xA9".b.to_sym => 1, :café => 2 }, ArgumentError, /both :café/)
    end

    it "accepts a compare_by_identity Hash whose keys are distinct, and many keys at once" do
      by_identity = {}.compare_by_identity
      by_identity["a"] = 1
      by_identity[:a] = 2
      many = Array.new(100) { |i| ["k#{i}", i] }.to_h

      expect([channel.push(by_identity), channel.push(many)]).to eq([true, true])
      expect([channel.pop(timeout: 5), channel.pop(timeout: 5)]).to eq([{ "a" => 1, a: 2 }, many])
    end
  end

  describe "Time values", :ffi do
    include_context "an 8-place worker channel"

    # The facts a Time keeps through Rust: the instant (to the nanosecond) and its offset.
    def facts(time)
      [time.class, time.to_i, time.nsec, time.utc_offset, time.utc?]
    end

    it "keep the instant to the nanosecond, the UTC offset and UTC-ness" do
      times = [
        Time.at(1_700_000_000, 123_456_789, :nsec, in: "UTC"),
        Time.at(1_700_000_000, 987_654_321, :nsec, in: "+05:30"),
        Time.at(1_700_000_000, 1, :nsec, in: "-09:00"),
        Time.at(0, 999_999_999, :nsec, in: "+00:00"),
        Time.at(-1.5r).utc,
        Time.at(-86_400 * 365 * 3000, 5, :nsec, in: "+23:59"),
        Time.now,
        Time.now.utc
      ]

      aggregate_failures do
        times.each do |time|
          popped = round_trip(time)
          expect(facts(popped)).to eq(facts(time)), "#{time.inspect} came back as #{popped.inspect}"
          expect(popped).to eq(time)
          expect(popped).to be_frozen
        end
      end
    end

    it "travel nested, as the sub-second part of a published event, and next to their neighbours" do
      at = Time.at(1_700_000_000, 250_000_001, :nsec, in: "+02:00")
      expect(round_trip({ job: { at: [at, "later"] } })).to eq({ job: { at: [at, "later"] } })

      seen = []
      runtime.subscribe("timed.event") { |event| seen << event.payload }
      runtime.publish("timed.event", { at: at })
      runtime.dispatch(timeout: 5)
      expect(seen.map { |payload| facts(payload[:at]) }).to eq([facts(at)])
    end

    it "come back from local time with the same instant and offset, the zone name aside" do
      local = Time.at(1_700_000_000, 42, :nsec).localtime
      popped = round_trip(local)

      expect([popped, popped.utc_offset, popped.nsec]).to eq([local, local.utc_offset, 42])
    end

    it "are refused when they cannot travel, naming the path" do
      expect { channel.push({ at: [Time.at(2**70)] }) }
        .to raise_error(RangeError, /\Avalue\[:at\]\[0\] is a Time outside the range payloads carry/)
      expect { channel.push({ at: Time.at(0).localtime(Rational(1, 2)) }) }
        .to raise_error(ArgumentError, %r{\Avalue\[:at\] is a Time whose UTC offset \(1/2\) is not a whole number})
      expect(channel.size).to eq(0)
    end

    it "leave other classes refused with a TypeError naming the path" do
      require "date"

      expect { channel.push({ on: Date.new(2024, 1, 1) }) }
        .to raise_error(TypeError, /\Avalue\[:on\] is a Date; payloads carry only .*Time/)
      expect { channel.push([Rational(1, 3)]) }.to raise_error(TypeError, /\Avalue\[0\] is a Rational/)
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
      expected = fresh_pairs(salt, round).map { |pair| pair.map(&:to_s) }
      expect(popped.map { |hash| hash.first.map(&:to_s) }).to eq(expected)
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
