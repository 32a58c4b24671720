# frozen_string_literal: true

# docs/design.md §5 payload rules, through a channel's push and pop: what goes in comes out equal,
# with its key kinds, deep-frozen; anything else is refused with the right error class and
# the path to the offending value, and nothing is enqueued.
RSpec.describe "Payloads through Channel#push and #pop", :ffi do
  include_context "an 8-place worker channel"

  # Fails unless `value` and everything inside it (keys included) is frozen.
  def expect_deep_frozen(value, path = "value")
    expect(value).to be_frozen, "#{path} (#{value.inspect}) is not frozen"
    case value
    when Array
      value.each_with_index { |item, index| expect_deep_frozen(item, "#{path}[#{index}]") }
    when Hash
      value.each do |key, item|
        expect_deep_frozen(key, "#{path} key #{key.inspect}")
        expect_deep_frozen(item, "#{path}[#{key.inspect}]")
      end
    end
  end

  def nested_arrays(levels)
    levels.times.reduce(:leaf) { |inner, _| [inner] }
  end

  describe "round trips" do
    {
      "nil" => nil,
      "true" => true,
      "false" => false,
      "zero" => 0,
      "a negative Integer" => -42,
      "the largest i64" => (2**63) - 1,
      "the smallest i64" => -2**63,
      "a Float" => 3.25,
      "an infinite Float" => -Float::INFINITY,
      "an empty String" => "",
      "an ASCII String" => "step.completed",
      "a String with multibyte characters and an emoji" => "naïve 日本語 🎉",
      "a String with a NUL byte" => "a\u0000b",
      "a Symbol" => :completed,
      "a Symbol that needs quoting" => :"two words",
      "an empty Array" => [],
      "an empty Hash" => {}
    }.then do |values|
      # One example for all of them: each example costs a runtime, which GC.stress makes slow.
      it "keeps #{values.keys.join(', ')}" do
        aggregate_failures do
          values.each do |kind, value|
            popped = round_trip(value)
            expect([popped, popped.class]).to eq([value, value.class]), "#{kind}: got #{popped.inspect}"
          end
        end
      end
    end

    it "keeps the sign of negative zero and the NaN-ness of NaN" do
      expect(1.0 / round_trip(-0.0)).to eq(-Float::INFINITY)
      expect(round_trip(Float::NAN)).to be_nan
    end

    it "keeps nested Arrays and Hashes, their order and the kind of every key" do
      value = {
        :user => { "id" => 7, :name => "Ada", "tags" => ["a", :b, nil, 1.5] },
        "user" => [[1, [2, [3]]], { "deep" => { deeper: [true, false] } }],
        :empty => { list: [], map: {} }
      }

      popped = round_trip(value)

      expect(popped).to eq(value)
      expect(popped.keys).to eq([:user, "user", :empty])
      expect(popped[:user].keys).to eq(["id", :name, "tags"])
      expect(popped["user"][1]["deep"].keys).to eq([:deeper])
    end

    it "hands back a deep-frozen value" do
      popped = round_trip({ "list" => [+"text", { key: +"inner" }], :map => { "k" => [[+"x"]] } })

      expect_deep_frozen(popped)
      expect { popped["list"] << 1 }.to raise_error(FrozenError)
    end

    it "copies the value at push time, so later changes to the original do not travel" do
      text = +"before"
      list = [1, 2]
      value = { text: text, list: list }
      channel.push(value)
      text << " and after"
      list << 3
      value[:added] = true

      expect(channel.pop).to eq({ text: "before", list: [1, 2] })
    end

    it "hands out a fresh object for each pop" do
      first = round_trip({ a: [1] })
      second = round_trip({ a: [1] })

      expect(first).to eq(second)
      expect(first).not_to equal(second)
    end

    it "hands Strings back as UTF-8, converting other valid encodings" do
      latin1 = round_trip("café".encode(Encoding::ISO_8859_1))
      ascii_binary = round_trip("plain".b)

      expect([latin1, latin1.encoding]).to eq(["café", Encoding::UTF_8])
      expect([ascii_binary, ascii_binary.encoding]).to eq(["plain", Encoding::UTF_8])
    end

    it "accepts the same object twice in one payload (shared, not a cycle)" do
      shared = { id: 1 }

      expect(round_trip([shared, { again: shared }])).to eq([{ id: 1 }, { again: { id: 1 } }])
    end

    it "accepts nesting exactly 64 levels deep" do
      expect(round_trip(nested_arrays(64))).to eq(nested_arrays(64))
    end
  end

  describe "refused values", :ill_typed do
    # Each refusal must leave the channel exactly as it was: only :before queued, nothing
    # counted as sent or rejected for the refused value.
    def expect_refused(value, error_class, message)
      channel.push(:before)
      expect { channel.push(value) }.to raise_error(error_class, message)
      expect(channel.size).to eq(1)
      row = channel_stats(runtime, name)
      expect([row[:sent] - row[:received], row[:rejected]]).to eq([1, 0])
      expect([channel.pop(timeout: 0), channel.pop(timeout: 0)]).to eq([:before, nil])
    end

    it "raises TypeError naming the value for an Object, Date, Rational, Range, Proc, Class or Struct" do
      require "date"
      aggregate_failures do
        [Object.new, Date.new(2026, 1, 1), Rational(1, 3), (1..2), -> {}, String, Struct.new(:a).new(1)].each do |value|
          expect_refused(value, TypeError, /\Avalue is an? #{Regexp.escape(value.class.to_s)}/)
        end
      end
    end

    it "raises TypeError naming the path of a value nested under Symbol keys" do
      expect_refused({ user: Object.new }, TypeError, /\Avalue\[:user\] is an? Object/)
    end

    it "raises TypeError naming the path through Arrays, String keys and Symbol keys" do
      expect_refused({ "jobs" => [1, { at: 1r }] }, TypeError, /\Avalue\["jobs"\]\[1\]\[:at\] is a Rational/)
    end

    it "raises TypeError for a Hash key that is neither a String nor a Symbol" do
      expect_refused({ list: { 1 => "one" } }, TypeError, /\Avalue\[:list\] has an? Integer key/)
    end

    it "enqueues nothing when the bad value comes after good ones" do
      expect_refused([1, "two", :three, { four: 4 }, Object.new], TypeError, /\Avalue\[4\]/)
    end

    it "raises RangeError for Integers outside the 64-bit range" do
      aggregate_failures do
        [2**63, -(2**63) - 1, 2**100].each do |integer|
          expect_refused({ n: [integer] }, RangeError, /\Avalue\[:n\]\[0\] is an Integer outside the 64-bit range/)
        end
      end
    end

    it "raises ArgumentError for Arrays or Hashes nested deeper than 64 levels" do
      deep_hash = 65.times.reduce(1) { |inner, _| { k: inner } }

      expect_refused(nested_arrays(65), ArgumentError, /\Avalue(\[0\]){64} nests deeper than 64 levels/)
      expect_refused(deep_hash, ArgumentError, /\Avalue(\[:k\]){64} nests deeper than 64 levels/)
    end

    it "raises ArgumentError for a cycle, direct or through several containers" do
      list = [1]
      list << list
      map = { a: 1 }
      map[:self] = map
      inner = []
      outer = { list: inner }
      inner << outer

      expect_refused(list, ArgumentError, /\Avalue\[1\] contains itself \(a cycle\)/)
      expect_refused(map, ArgumentError, /\Avalue\[:self\] contains itself/)
      expect_refused({ root: outer }, ArgumentError, /\Avalue\[:root\]\[:list\]\[0\] contains itself/)
    end

    it "raises ArgumentError for Strings and Hash keys that are not valid UTF-8" do
      expect_refused({ text: (+"ok \xFF").force_encoding(Encoding::UTF_8) }, ArgumentError,
                     /\Avalue\[:text\] is a String that is not valid UTF-8/)
      expect_refused(["\xC3\x28".b], ArgumentError, /\Avalue\[0\] is a String that is not valid UTF-8/)
      expect_refused({ "\xFF".b => 1 }, ArgumentError, /String key that is not valid UTF-8/)
    end
  end

  describe "published event payloads", :ill_typed do
    it "raise TypeError naming payload[...] where they cross into Rust, and enqueue nothing" do
      expect { runtime.emit("job.done", { user: Object.new }) }
        .to raise_error(TypeError, /\Apayload\[:user\] is an? Object/)
      expect(channel_stats(runtime, "shared.event_publisher")).to include(sent: 0, rejected: 0)
      expect(runtime.event_stats[:emitted]).to eq(0)
    end

    it "must be a Hash: anything else raises TypeError naming payload, enqueueing nothing" do
      [5, "text", [1]].each do |payload|
        expect { runtime.publish("job.done", payload) }.to raise_error(TypeError, /\Apayload\b/)
      end
      expect(runtime.event_stats[:published]).to eq(0)
    end
  end
end

# Sizes that would make the GC.stress pass crawl: not tagged :ffi.
RSpec.describe "Large payloads through Channel#push and #pop" do
  let(:name) { "worker.command_processor" }
  let(:channel) { channel_runtime({ name => { capacity: 2 } }).channel(name) }

  it "carries a 16 MiB String intact" do
    text = ("0123456789abcdef" * (1 << 20)).freeze

    channel.push(text)
    popped = channel.pop(timeout: 5)

    expect(popped.bytesize).to eq(16 << 20)
    expect(popped).to eq(text)
  end

  it "carries an Array of 100_000 items and a Hash of 10_000 keys intact" do
    list = Array.new(100_000) { |i| i.even? ? i : "item #{i}" }
    map = Array.new(10_000) { |i| [i.even? ? "key#{i}" : :"key#{i}", [i, i.to_f]] }.to_h

    channel.push(list)
    channel.push(map)

    expect(channel.pop(timeout: 5)).to eq(list)
    expect(channel.pop(timeout: 5)).to eq(map)
  end
end
