# frozen_string_literal: true

require "open3"

# The extension converts payloads to Rust-owned data on publish and builds fresh Ruby objects
# on delivery. These examples make the garbage collector run at every allocation
# (GC.stress) and move objects around (GC.compact) while that happens: a Ruby object the
# extension forgot to keep alive, or an address it cached, shows up as a crash or as a
# payload that no longer equals the one published.
#
# Not tagged :ffi: these examples set GC.stress themselves, with counts sized for it, and
# would take minutes under `rake spec:gc_stress`'s blanket GC.stress.
RSpec.describe "GC pressure on payloads crossing the FFI" do
  # Hashes of arrays of strings, symbols (some dynamic, so collectable), floats, integers,
  # nil and booleans, with both key kinds, three levels deep.
  def nested_payload(seed)
    {
      id: seed,
      "name" => "payload-#{seed}",
      tags: [:static, :"dynamic_#{seed}", "text-#{seed}", seed * 1.5, -seed, nil, true, false],
      "matrix" => Array.new(3) { |row| Array.new(3) { |col| (row * 3) + col + (seed / 7.0) } },
      nested: {
        "items" => Array.new(4) do |k|
          { k: k, "label" => "item #{seed}/#{k} é", sym: :"s_#{seed}_#{k}", score: k / 3.0, list: %w[a b c] }
        end,
        empty_hash: {},
        empty_list: []
      }
    }
  end

  # A deep copy that shares nothing with the original (Marshal keeps symbols and floats exact).
  def deep_copy(value)
    Marshal.load(Marshal.dump(value))
  end

  # Runs the block with GC.stress set to `mode`. A companion thread stays alive meanwhile:
  # on Ruby 3.1 a GVL-free wait from a lone main thread starts (and joins) a helper thread per
  # call, which livelocks under GC.stress (see the pending example at the end). These
  # examples are about object lifetimes, so they keep out of that bug's way.
  def with_gc_stress(mode: true)
    companion = Thread.new { sleep }
    previous = GC.stress
    GC.stress = mode
    yield
  ensure
    GC.stress = previous
    companion&.kill&.join
  end

  # Manual dispatch until `count` events reached a handler; a liveness bound, not a timing goal.
  def dispatch_until(runtime, count)
    delivered = 0
    200.times do
      delivered += runtime.dispatch(timeout: 0.5)
      return delivered if delivered >= count
    end
    raise "only #{delivered} of #{count} events were dispatched"
  end

  it "publishes and dispatches nested payloads intact with GC.stress on" do
    originals = Array.new(2) { |seed| nested_payload(seed) }
    expected = deep_copy(originals)
    runtime = build_runtime(dispatch: :manual)
    seen = []
    runtime.subscribe("gc.*") { |event| seen << event }

    with_gc_stress do
      originals.each { |payload| runtime.publish("gc.nested", payload) }
      dispatch_until(runtime, originals.size)
    end

    expect(seen.map(&:payload)).to eq(expected)
    expect(originals).to eq(expected)
    expect(seen.map(&:name)).to all(eq("gc.nested"))
    expect(seen.map(&:payload)).to all(be_frozen)
  end

  it "passes nested values through a worker channel with GC.stress on" do
    originals = [nested_payload(7), [nested_payload(8)[:nested], "plain", :sym, 2.5]]
    expected = deep_copy(originals)
    channel = build_runtime(dispatch: :manual).channel("worker.command_processor")
    popped = []

    with_gc_stress do
      originals.each { |value| channel.push(value) }
      originals.size.times { popped << channel.pop(timeout: 5) }
    end

    expect(popped).to eq(expected)
  end

  it "delivers on a dispatcher thread with minor-GC stress, many events" do
    originals = Array.new(20) { |seed| nested_payload(seed) }
    expected = deep_copy(originals)
    runtime = build_runtime
    seen = Queue.new
    runtime.subscribe("gc.*") { |event| seen << event.payload }

    # Flag 0x01: a minor GC at every allocation. Freshly made objects are young, so one the
    # extension does not keep alive is collected at once, at a fraction of full stress's cost.
    received = with_gc_stress(mode: 0x01) do
      originals.each { |payload| runtime.publish("gc.nested", payload, wait: 10) }
      Array.new(originals.size) { seen.pop }
    end

    expect(received).to eq(expected)
    expect(runtime.shutdown(timeout: 30)).to be(true)
  end

  it "keeps payloads intact with GC.compact between publish, dispatch and rounds" do
    skip "GC.compact is not available on this Ruby" unless GC.respond_to?(:compact)

    runtime = build_runtime(dispatch: :manual)
    seen = []
    runtime.subscribe("gc.*") { |event| seen << event }
    delivered_before = []

    4.times do |round|
      originals = Array.new(25) { |i| nested_payload((round * 100) + i) }
      expected = deep_copy(originals)
      originals.each { |payload| runtime.publish("gc.round", payload) }
      GC.compact # while the events wait in Rust-owned buffers
      dispatch_until(runtime, originals.size)
      GC.compact # while handlers' Events are referenced from Ruby only

      round_payloads = seen.shift(originals.size).map(&:payload)
      expect(round_payloads).to eq(expected)
      delivered_before.concat(round_payloads)
      expect(originals).to eq(expected)
    end

    # Events delivered in earlier rounds survived every later compaction.
    expect(delivered_before).to eq(Array.new(4) { |r| Array.new(25) { |i| nested_payload((r * 100) + i) } }.flatten(1))
  end

  it "survives a compaction that moves every object, with a dispatcher thread running" do
    skip "GC.verify_compaction_references is not available" unless GC.respond_to?(:verify_compaction_references)

    runtime = build_runtime
    seen = Queue.new
    runtime.subscribe("gc.*") { |event| seen << event.payload }
    originals = Array.new(30) { |seed| nested_payload(seed) }
    expected = deep_copy(originals)

    originals.first(15).each { |payload| runtime.publish("gc.moved", payload, wait: 10) }
    GC.verify_compaction_references(double_heap: true, toward: :empty)
    originals.last(15).each { |payload| runtime.publish("gc.moved", payload, wait: 10) }

    expect(Array.new(originals.size) { seen.pop }).to eq(expected)
    expect(runtime.shutdown(timeout: 30)).to be(true)
  end

  it "completes a push to a block channel from a lone main thread under GC.stress" do
    pending("bug: on Ruby 3.1 every GVL-free wait from the main thread, when no other Ruby thread " \
            "lives, makes rb_nogvl start and join a helper thread (the ubf is not marked async-safe); " \
            "under GC.stress the body never runs and Channel#push on a block channel spins forever")
    script = <<~RUBY
      $LOAD_PATH.unshift(#{File.expand_path('../lib', __dir__).inspect})
      require "tasker_channels"
      runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
      channel = runtime.channel("worker.command_processor")
      GC.stress = true
      channel.push([1, "one"])
      GC.stress = false
      puts channel.size
    RUBY
    output = nil
    Open3.popen2e({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", script) do |stdin, out, waiter|
      stdin.close
      unless waiter.join(5)
        Process.kill(:KILL, waiter.pid)
        waiter.join
      end
      output = out.read
    end
    expect(output).to eq("1\n")
  end
end
