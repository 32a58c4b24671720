# frozen_string_literal: true

require "spec_helper"
require "open3"

# The bus's fast path: Ruby events travel by reference through shared.ffi in one hop, the
# dispatch loop runs in Rust, handlers pick their shape, and nothing taken is ever lost or
# leaks a slot, whatever unwinds a dispatcher.
RSpec.describe "Fast path: one hop, payloads by reference", :ffi do
  def slots(runtime)
    Tasker::Channels::Testing.slots_in_use(runtime)
  end

  describe "the burst promise" do
    it "accepts a burst of shared.ffi's capacity into an idle handler, every time" do
      5.times do
        runtime = build_runtime
        seen = Queue.new
        runtime.subscribe("burst.event") { |_name, payload| seen << payload[:n] }
        capacity = runtime.channel("shared.ffi").capacity
        capacity.times { |n| runtime.publish("burst.event", { n: n }) }
        got = Array.new(capacity) { seen.pop }
        expect(got).to eq((0...capacity).to_a)
        expect(runtime.shutdown(timeout: 10)).to be(true)
      end
    end

    it "refuses the event after the capacity with nothing enqueued while no dispatcher runs" do
      runtime = build_runtime(dispatch: :manual)
      runtime.subscribe("burst.event") { |_name, _payload| nil }
      capacity = runtime.channel("shared.ffi").capacity
      capacity.times { |n| runtime.publish("burst.event", { n: n }) }
      refusals = Array.new(2) do
        runtime.publish("burst.event", { n: -1 })
      rescue Tasker::Backpressure => e
        e
      end
      expect(refusals).to all(be_a(Tasker::Backpressure))
      expect(refusals.map { |e| [e.message, e.channel, e.capacity, e.policy] }.uniq)
        .to eq([["channel shared.ffi is full (capacity #{capacity}, policy error): slow down and retry, " \
                 "or raise its capacity in the channel config", "shared.ffi", capacity, "error"]])
      expect(slots(runtime)).to eq(capacity)
      expect(dispatch_until(runtime, capacity)).to eq(capacity)
      expect(slots(runtime)).to eq(0)
    end
  end

  describe "handler shapes" do
    let(:runtime) { build_runtime(dispatch: :manual) }

    it "gives a two-parameter handler the name and the very payload object, and a one-parameter one an Event" do
      pairs = []
      events = []
      runtime.subscribe("shape.*") { |name, payload| pairs << [name, payload] }
      runtime.subscribe("shape.*") { |event| events << event }
      payload = { step_id: 1, nested: { list: [1, 2] } }
      id = runtime.publish("shape.test", payload)
      dispatch_until(runtime, 1)

      expect(pairs.size).to eq(1)
      name, got = pairs.first
      expect(name).to eq("shape.test").and be_frozen
      expect(got).to equal(payload)
      expect(payload).to be_frozen
      expect(payload[:nested]).not_to be_frozen

      event = events.fetch(0)
      expect(event).to be_a(Tasker::Channels::Event).and be_frozen
      expect(event).to have_attributes(id: id, name: "shape.test", source: :ruby)
      expect(event.payload).to equal(payload)
    end

    it "builds one Event per event, shared by every one-parameter handler" do
      events = []
      2.times { runtime.subscribe("shared.event") { |event| events << event } }
      runtime.publish("shared.event", {})
      dispatch_until(runtime, 1)
      expect(events.size).to eq(2)
      expect(events[0]).to equal(events[1])
    end

    it "takes the payload from keywords, keeping wait: as the one option" do
      got = []
      runtime.subscribe("kw.event") { |_name, payload| got << payload }
      runtime.publish("kw.event", step_id: 7, status: "done")
      runtime.publish("kw.event", step_id: 8, wait: 0.1)
      runtime.publish(:"kw.event")
      dispatch_until(runtime, 3)
      expect(got).to eq([{ step_id: 7, status: "done" }, { step_id: 8 }, {}])
      expect { runtime.publish("kw.event", { a: 1 }, b: 2) }.to raise_error(ArgumentError, /not both/)
    end

    it "matches exact names, globs and Regexps, and remembers nothing stale after unsubscribe" do
      seen = Hash.new { |hash, key| hash[key] = [] }
      exact = runtime.subscribe("a.b") { |name, _| seen[:exact] << name }
      runtime.subscribe("a.*") { |name, _| seen[:star] << name }
      runtime.subscribe("a.**") { |name, _| seen[:deep] << name }
      runtime.subscribe(/\Aa\.b/) { |name, _| seen[:regexp] << name }
      %w[a.b a.c a.b.c b.a].each { |name| runtime.publish(name) }
      dispatch_until(runtime, 3)
      expect(seen).to eq(exact: ["a.b"], star: %w[a.b a.c], deep: %w[a.b a.c a.b.c], regexp: %w[a.b a.b.c])
      exact.unsubscribe
      runtime.publish("a.b")
      dispatch_until(runtime, 1)
      expect(seen[:exact]).to eq(["a.b"])
      expect(seen[:star].last).to eq("a.b")
      expect(runtime.event_stats).to include(unmatched: 1)
    end

    it "sees a subscription made by a handler from the next event on" do
      later = []
      runtime.subscribe("grow.event") do |_name, payload|
        runtime.subscribe("grow.event") { |_n, inner| later << inner[:n] } if payload[:n].zero?
      end
      3.times { |n| runtime.publish("grow.event", { n: n }) }
      dispatch_until(runtime, 3)
      expect(later).to eq([1, 2])
    end
    it "stops calling a subscription that an earlier handler of the same event removed" do
      calls = []
      third = nil
      runtime.subscribe("drop.event") do |_name, payload|
        calls << [:first, payload[:n]]
        third.unsubscribe if payload[:n].zero?
      end
      runtime.subscribe("drop.event") { |_name, payload| calls << [:second, payload[:n]] }
      third = runtime.subscribe("drop.event") { |_name, payload| calls << [:third, payload[:n]] }
      2.times { |n| runtime.publish("drop.event", { n: n }) }
      dispatch_until(runtime, 2)
      expect(calls).to eq([[:first, 0], [:second, 0], [:first, 1], [:second, 1]])
    end
  end

  describe "supervised delivery" do
    it "sends any handler failure but a signal or exit to on_error and goes on, releasing every slot" do
      runtime = build_runtime(dispatch: :manual)
      errors = []
      runtime.on_error { |error, event| errors << [error.class, event.payload[:n]] }
      delivered = []
      runtime.subscribe("fail.event") do |_name, payload|
        raise NotImplementedError, "no" if payload[:n] == 1
        raise ArgumentError, "bad" if payload[:n] == 2

        delivered << payload[:n]
      end
      4.times { |n| runtime.publish("fail.event", { n: n }) }
      dispatch_until(runtime, 4)
      expect(errors).to eq([[NotImplementedError, 1], [ArgumentError, 2]])
      expect(delivered).to eq([0, 3])
      expect(runtime.event_stats).to include(delivered: 4, handler_errors: 2)
      expect(slots(runtime)).to eq(0)
    end

    it "goes on with the next handler of the same event after one of three raises, then the rest in order" do
      runtime = build_runtime(dispatch: :manual)
      calls = []
      errors = []
      runtime.on_error { |error, event| errors << [error.message, event] }
      runtime.subscribe("many.*") { |name, payload| calls << [:first, name, payload[:n]] }
      runtime.subscribe("many.*") do |event|
        raise "second on #{event.payload[:n]}" if event.payload[:n].odd?

        calls << [:second, event.name, event.payload[:n]]
      end
      events = []
      runtime.subscribe("many.*") do |event|
        events << event
        calls << [:third, event.name, event.payload[:n]]
      end
      names = %w[many.a many.a many.b many.a many.b many.b]
      names.each_with_index { |name, n| runtime.publish(name, { n: n }) }
      dispatch_until(runtime, names.size)

      expected = names.each_with_index.flat_map do |name, n|
        [[:first, name, n], *([[:second, name, n]] if n.even?), [:third, name, n]]
      end
      expect(calls).to eq(expected)
      expect(errors.map(&:first)).to eq(["second on 1", "second on 3", "second on 5"])
      # on_error got the very Event the one-parameter handlers got: built once per event.
      expect(errors.map(&:last)).to eq(events.values_at(1, 3, 5))
      expect(runtime.event_stats).to include(delivered: names.size, handler_errors: 3)
      expect(slots(runtime)).to eq(0)
    end

    it "delivers an event whose second of three handlers throws exactly once, and the rest of the batch after it" do
      runtime = build_runtime(dispatch: :manual)
      calls = []
      runtime.subscribe("part.event") { |_name, payload| calls << [:first, payload[:n]] }
      runtime.subscribe("part.event") do |_name, payload|
        calls << [:second, payload[:n]]
        throw :stop if payload[:n] == 1
      end
      runtime.subscribe("part.event") { |_name, payload| calls << [:third, payload[:n]] }
      4.times { |n| runtime.publish("part.event", { n: n }) }
      catch(:stop) { runtime.dispatch(timeout: 1) }
      expect(calls).to eq([[:first, 0], [:second, 0], [:third, 0], [:first, 1], [:second, 1]])
      expect(slots(runtime)).to eq(2)
      dispatch_until(runtime, 2)
      expect(calls.drop(5)).to eq([[:first, 2], [:second, 2], [:third, 2], [:first, 3], [:second, 3], [:third, 3]])
      expect(runtime.event_stats).to include(delivered: 4, pending: 0)
      expect(slots(runtime)).to eq(0)
    end

    it "gives the rest of the batch back when a handler throws out of manual dispatch" do
      runtime = build_runtime(dispatch: :manual)
      seen = []
      runtime.subscribe("throw.event") do |_name, payload|
        seen << payload[:n]
        throw :stop if payload[:n] == 1 && seen.count(1) == 1
      end
      5.times { |n| runtime.publish("throw.event", { n: n }) }
      catch(:stop) { runtime.dispatch(timeout: 1) }
      expect(seen).to eq([0, 1])
      dispatch_until(runtime, 3)
      expect(seen).to eq([0, 1, 2, 3, 4])
      expect(slots(runtime)).to eq(0)
    end

    it "replaces a dispatcher killed mid-batch; the rest of its batch is delivered in order" do
      runtime = build_runtime
      seen = Queue.new
      stuck = Queue.new
      runtime.subscribe("kill.event") do |_name, payload|
        if payload[:n] == 2 && !payload[:stuck_once]
          stuck << Thread.current
          sleep
        end
        seen << payload[:n]
      end
      10.times { |n| runtime.publish("kill.event", { n: n }) }
      victim = stuck.pop
      victim.kill.join
      got = Array.new(9) { seen.pop }
      expect(got).to eq([0, 1, 3, 4, 5, 6, 7, 8, 9])
      expect(eventually { runtime.event_stats[:dispatcher_restarts] == 1 }).to be(true)
      expect(runtime.dispatchers).to eq(1)
      expect(runtime.shutdown(timeout: 10)).to be(true)
      expect(slots(runtime)).to eq(0)
    end

    it "exits the process when a handler calls exit, delivering the rest of the batch first" do
      script = <<~RUBY
        $stdout.sync = true
        require "tasker_channels"
        Tasker::Channels.subscribe("exit.event") do |_name, payload|
          Thread.current.report_on_exception = false
          exit 3 if payload[:n] == 1
          puts "got \#{payload[:n]}"
        end
        4.times { |n| Tasker::Channels.publish("exit.event", n: n) }
        sleep 10
        puts "not reached"
      RUBY
      output, status = Open3.capture2e({ "TASKER_ENV" => "test" }, RbConfig.ruby, "-I", ChildRuby::LIB, "-e", script)
      expect(status.exitstatus).to eq(3), output
      expect(output.scan(/got (\d)/).flatten).to eq(%w[0 2 3])
      expect(output).not_to include("not reached")
    end

    it "is unaffected by a handler that mutates a nested payload object" do
      runtime = build_runtime(dispatch: :manual)
      second = []
      runtime.subscribe("mutate.event") { |_name, payload| payload[:items] << :added }
      runtime.subscribe("mutate.event") { |_name, payload| second << payload[:items].size }
      3.times { runtime.publish("mutate.event", { items: [] }) }
      dispatch_until(runtime, 3)
      expect(second).to eq([1, 1, 1])
      expect(runtime.event_stats).to include(published: 3, delivered: 3, handler_errors: 0)
      expect(slots(runtime)).to eq(0)
    end

    it "leaves no slot behind after shutdown" do
      runtime = build_runtime
      runtime.subscribe("bye.event") { |_name, _payload| nil }
      100.times { |n| runtime.publish("bye.event", { n: n }) }
      expect(runtime.shutdown(timeout: 10)).to be(true)
      expect(slots(runtime)).to eq(0)
    end

    it "starts no more than MAX_DISPATCHERS dispatchers" do
      runtime = build_runtime(dispatch: :manual)
      expect { runtime.start(threads: 2**31) }.to raise_error(ArgumentError, /at most 64/)
      expect(runtime.dispatchers).to eq(0)
    end
  end

  describe "the slot table under the garbage collector" do
    def payload_for(seed)
      { "seed" => seed, text: "text #{seed}" * 3, list: Array.new(3) { |i| "item #{seed}.#{i}" } }
    end

    it "keeps payloads intact and identical across GC.compact between batches" do
      runtime = build_runtime(dispatch: :manual)
      seen = []
      runtime.subscribe("gc.event") { |_name, payload| seen << payload }
      originals = Array.new(60) { |seed| payload_for(seed) }
      originals.each_slice(20) do |slice|
        slice.each { |payload| runtime.publish("gc.event", payload) }
        GC.compact
        dispatch_until(runtime, slice.size)
      end
      expect(seen.size).to eq(originals.size)
      seen.zip(originals).each { |got, original| expect(got).to equal(original) }
      expect(seen.map { |payload| payload[:text] }).to eq(Array.new(60) { |seed| "text #{seed}" * 3 })
      expect(slots(runtime)).to eq(0)
    end

    it "survives verify_compaction_references with events in flight" do
      runtime = build_runtime(dispatch: :manual)
      seen = []
      runtime.subscribe("gc.*") { |event| seen << event.payload }
      originals = Array.new(30) { |seed| payload_for(seed) }
      originals.each { |payload| runtime.publish("gc.moved", payload) }
      GC.verify_compaction_references(double_heap: true, toward: :empty)
      dispatch_until(runtime, originals.size)
      expect(seen).to eq(originals)
      expect(seen.map(&:object_id)).to eq(originals.map(&:object_id))
    end
  end

  describe "events from Rust" do
    it "delivers every event a Rust thread emits, waiting for room, to a two-parameter handler" do
      runtime = build_runtime
      got = Queue.new
      runtime.subscribe("rust.made") { |name, payload| got << [name, payload] }
      Tasker::Channels::Testing.emit_from_rust(runtime, "rust.made", { "k" => 1, sym: :v }, count: 500)
      received = Array.new(500) { got.pop }
      expect(received.uniq).to eq([["rust.made", { "k" => 1, sym: :v }]])
      expect(received.first.last).to be_frozen
      expect(eventually { runtime.event_stats[:emitted] == 500 }).to be(true)
      expect(runtime.shutdown(timeout: 10)).to be(true)
    end
  end
end
