# frozen_string_literal: true

require "open3"

# Scripts the compaction examples run in a child Ruby (see #run_isolated).
module GcPressureScripts
  # Publishes payloads read from stdin (Marshal) and checks what handlers receive against an
  # untouched copy, with a compaction wherever it hurts most; prints "ok" or what differed.
  COMPACTION_ROUNDS = <<~'RUBY'
    originals = Marshal.load($stdin.read)
    expected = Marshal.load(Marshal.dump(originals))
    runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
    seen = []
    runtime.subscribe("gc.*") { |event| seen << event }
    originals.each_slice(25) do |round|
      round.each { |payload| runtime.publish("gc.round", payload) }
      GC.compact # while the events wait in Rust-owned buffers
      delivered = 0
      200.times { (delivered += runtime.dispatch(timeout: 0.5)) >= round.size and break }
      GC.compact # while the delivered Events are referenced from Ruby only
    end
    payloads = seen.map(&:payload)
    problems = []
    problems << "delivered #{payloads.size} of #{expected.size}" unless payloads.size == expected.size
    problems << "a delivered payload changed" unless payloads == expected
    problems << "an original payload changed" unless originals == expected
    problems << "shutdown did not finish" unless runtime.shutdown(timeout: 30)
    puts problems.empty? ? "ok" : problems.join("; ")
  RUBY

  # The same with a dispatcher thread running while every object is moved.
  COMPACTION_EVERYTHING = <<~'RUBY'
    originals = Marshal.load($stdin.read)
    expected = Marshal.load(Marshal.dump(originals))
    runtime = Tasker::Channels::Runtime.new(environment: "test")
    seen = Queue.new
    runtime.subscribe("gc.*") { |event| seen << event.payload }
    half = originals.size / 2
    originals.first(half).each { |payload| runtime.publish("gc.moved", payload, wait: 10) }
    GC.verify_compaction_references(double_heap: true, toward: :empty)
    originals.drop(half).each { |payload| runtime.publish("gc.moved", payload, wait: 10) }
    payloads = Array.new(originals.size) { seen.pop }
    finished = runtime.shutdown(timeout: 30)
    puts payloads == expected && originals == expected && finished ? "ok" : "payloads or shutdown differ"
  RUBY

  # Rust-emitted events whose short String values and keys the extension shares between
  # deliveries (a cache of frozen Strings): every object moves between rounds, more distinct
  # short texts than the cache holds push entries out, and every payload must still read
  # back as emitted.
  COMPACTION_RUST_STRINGS = <<~'RUBY'
    runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
    seen = []
    runtime.subscribe("gc.**") { |_name, payload| seen << payload }
    expected = []
    problems = []
    6.times do |round|
      payloads = Array.new(300) do |i|
        { "status" => "s#{(i * 7) % 173}", kind: "round-#{round}", "long" => "x" * 40 + i.to_s }
      end
      payloads.each_with_index do |payload, i|
        Tasker::Channels::Testing.emit_from_rust(runtime, "gc.rust.r#{round}.e#{i}", payload, count: 1)
      end
      expected.concat(payloads)
      until seen.size == expected.size
        runtime.dispatch(timeout: 0.5)
      end
      GC.verify_compaction_references(double_heap: true, toward: :empty)
      problems << "round #{round}: payloads differ" unless seen.sort_by(&:to_s) == expected.sort_by(&:to_s)
      problems << "round #{round}: a String is not frozen" unless seen.all? { |h| h.values.all?(&:frozen?) }
    end
    problems << "shutdown did not finish" unless runtime.shutdown(timeout: 30)
    puts problems.empty? ? "ok" : problems.join("; ")
  RUBY
end

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

  # Runs the block with GC.stress set to `mode` (true: a full GC at every allocation).
  def with_gc_stress(mode: true)
    previous = GC.stress
    GC.stress = mode
    yield
  ensure
    GC.stress = previous
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

    payloads = Array.new(100) { |i| nested_payload(i) }
    expect(run_isolated(GcPressureScripts::COMPACTION_ROUNDS, input: Marshal.dump(payloads))).to eq(["ok\n", 0])
  end

  it "survives a compaction that moves every object, with a dispatcher thread running" do
    skip "GC.verify_compaction_references is not available" unless GC.respond_to?(:verify_compaction_references)

    payloads = Array.new(30) { |i| nested_payload(i) }
    expect(run_isolated(GcPressureScripts::COMPACTION_EVERYTHING, input: Marshal.dump(payloads))).to eq(["ok\n", 0])
  end

  it "keeps the short Strings it shares between Rust-emitted payloads intact across compaction" do
    skip "GC.verify_compaction_references is not available" unless GC.respond_to?(:verify_compaction_references)

    expect(run_isolated(GcPressureScripts::COMPACTION_RUST_STRINGS, limit: 60)).to eq(["ok\n", 0])
  end

  # Regression: the fork hook's registry of runtimes used to be an ObjectSpace::WeakMap, which
  # Ruby 3.1.2 corrupts once GC.compact has moved its entries (a later insert aborted with
  # "realloc(): invalid pointer" in about 9 tries of 10 with the first loop below). Then
  # runtimes with dispatchers come and go around compactions, and a forked child must find
  # every live one in the registry and restart its dispatcher.
  it "keeps the fork hook's registry of runtimes intact across GC.compact" do
    skip "GC.compact is not available on this Ruby" unless GC.respond_to?(:compact)

    script = <<~RUBY
      # Heavy churn straight through the registry (@api private), as the WeakMap repro did.
      kept = []
      100.times do |round|
        200.times { |i| item = Object.new; Tasker::Channels.track(item); kept << item if (i % 4).zero? }
        kept.shift(40).each { |item| Tasker::Channels.untrack(item) }
        GC.compact if round.odd?
      end
      kept.each { |item| Tasker::Channels.untrack(item) }
      # Then real runtimes.
      live = []
      40.times do |round|
        10.times { live << Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual).start(threads: 1) }
        live.shift(8).each { |runtime| runtime.shutdown(timeout: 10) }
        GC.compact if round.odd?
      end
      pid = fork do
        restarted = live.all? { |runtime| runtime.dispatchers == 1 }
        exit!(restarted ? 0 : 1)
      end
      _, status = Process.wait2(pid)
      live.each { |runtime| runtime.shutdown(timeout: 10) }
      puts status.success? ? "ok" : "a child did not restart every dispatcher"
    RUBY
    expect(run_isolated(script, limit: 60)).to eq(["ok\n", 0])
  end

  # Regression: on Ruby 3.1 a GVL release from the main thread, when no other Ruby thread
  # lived, made rb_nogvl start and join a helper thread each time (the unblock function was
  # not marked async-signal-safe); under GC.stress the wait's body never ran and this push
  # spun forever. A subprocess, so a hang costs a bounded 5 s instead of the suite.
  it "completes a push to a block channel from a lone main thread under GC.stress" do
    script = <<~RUBY
      runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
      channel = runtime.channel("worker.command_processor")
      GC.stress = true
      channel.push([1, "one"])
      GC.stress = false
      puts channel.size
    RUBY
    expect(run_isolated(script, limit: 5)).to eq(["1\n", 0])
  end
end
