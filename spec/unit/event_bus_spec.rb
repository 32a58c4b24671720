# frozen_string_literal: true

require "timeout"

RSpec.describe "Event bus: publish and subscribe", :ffi do
  let(:runtime) { build_runtime(dispatch: :manual) }

  it "delivers a published event with its id, name, source, time and the published payload itself" do
    seen = []
    runtime.subscribe("step.completed") { |event| seen << event }
    before = Time.now
    payload = { step_id: 1, "tags" => [:a, 1.5, nil, true], meta: { "k" => "v" } }
    id = runtime.publish("step.completed", payload)
    dispatch_until(runtime, 1)

    event = seen.fetch(0)
    expect(event).to be_frozen
    expect([event.id, event.name, event.source]).to eq([id, "step.completed", :ruby])
    expect(event.payload).to eq({ step_id: 1, "tags" => [:a, 1.5, nil, true], meta: { "k" => "v" } })
    # By reference: the very object, its top level frozen by publish, its contents untouched.
    expect(event.payload).to equal(payload).and be_frozen
    expect(event.payload["tags"]).not_to be_frozen
    expect(event.published_at).to be_a(Time).and be >= before - 1
  end

  it "returns increasing integer ids and keeps per-publisher order" do
    seen = []
    runtime.subscribe("order.*") { |event| seen << event.payload[:n] }
    ids = Array.new(20) { |n| runtime.publish("order.test", { n: n }) }
    dispatch_until(runtime, 20)
    expect(ids).to all(be_a(Integer))
    expect(ids).to eq(ids.sort)
    expect(ids.uniq.size).to eq(20)
    expect(seen).to eq((0...20).to_a)
  end

  it "accepts Symbol names and publishes an empty hash by default" do
    seen = []
    runtime.subscribe("plain") { |event| seen << event.payload }
    runtime.publish(:plain)
    dispatch_until(runtime, 1)
    expect(seen).to eq([{}])
  end

  describe "patterns" do
    def names_seen_by(pattern)
      seen = []
      subscription = runtime.subscribe(pattern) { |event| seen << event.name }
      reached = -> { runtime.event_stats.values_at(:delivered, :unmatched).sum }
      before = reached.call
      %w[step.completed step.failed step.retry.scheduled task.done].each { |name| runtime.publish(name) }
      eventually do
        runtime.dispatch(timeout: 0.05)
        reached.call == before + 4
      end
      subscription.unsubscribe
      seen
    end

    it "matches an exact name only" do
      expect(names_seen_by("step.completed")).to eq(["step.completed"])
    end

    it "matches one segment with *" do
      expect(names_seen_by("step.*")).to eq(%w[step.completed step.failed])
    end

    it "matches any number of segments with **" do
      expect(names_seen_by("**")).to eq(%w[step.completed step.failed step.retry.scheduled task.done])
      expect(names_seen_by("step.**")).to eq(%w[step.completed step.failed step.retry.scheduled])
    end

    it "matches a Regexp" do
      expect(names_seen_by(/failed|done/)).to eq(%w[step.failed task.done])
    end

    it "rejects malformed patterns", :ill_typed do
      expect { runtime.subscribe("") { nil } }.to raise_error(ArgumentError, /empty/)
      expect { runtime.subscribe("a..b") { nil } }.to raise_error(ArgumentError, /empty segment/)
      expect { runtime.subscribe("step.comp*") { nil } }.to raise_error(ArgumentError, /whole segment/)
      expect { runtime.subscribe(42) { nil } }.to raise_error(TypeError, /pattern/)
      expect { runtime.subscribe("x") }.to raise_error(ArgumentError, /block/)
    end
  end

  it "unsubscribes one subscription only, even when another shares its pattern" do
    first = []
    second = []
    subscription = runtime.subscribe("shared.pattern") { |event| first << event.id }
    runtime.subscribe("shared.pattern") { |event| second << event.id }
    runtime.publish("shared.pattern")
    dispatch_until(runtime, 1)

    expect(subscription.unsubscribe).to be(true)
    expect(subscription.unsubscribe).to be(false)
    expect(subscription).not_to be_active
    runtime.publish("shared.pattern")
    dispatch_until(runtime, 1)

    expect(first.size).to eq(1)
    expect(second.size).to eq(2)
    expect(runtime.event_stats[:subscriptions]).to eq(1)
  end

  it "sends handler errors to on_error, counts them, and keeps dispatching" do
    failures = []
    delivered = []
    runtime.on_error { |error, event| failures << [error.message, event.name] }
    runtime.subscribe("job.*") { |event| raise "boom #{event.payload[:n]}" if event.payload[:n].odd? }
    runtime.subscribe("job.*") { |event| delivered << event.payload[:n] }
    4.times { |n| runtime.publish("job.run", { n: n }) }
    dispatch_until(runtime, 4)

    expect(failures).to eq([["boom 1", "job.run"], ["boom 3", "job.run"]])
    expect(delivered).to eq([0, 1, 2, 3])
    expect(runtime.event_stats).to include(handler_errors: 2, delivered: 4)
  end

  it "warns on $stderr about a failing handler by default" do
    runtime.subscribe("warn.me") { raise ArgumentError, "bad input" }
    runtime.publish("warn.me")
    expect { dispatch_until(runtime, 1) }.to output(/warn\.me.*ArgumentError: bad input/).to_stderr
  end

  it "counts events no subscription matched" do
    runtime.subscribe("wanted") { nil }
    runtime.publish("unwanted")
    runtime.publish("wanted")
    eventually do
      runtime.dispatch(timeout: 0.05)
      runtime.event_stats[:unmatched] == 1
    end
    expect(runtime.event_stats).to include(published: 2, delivered: 1, unmatched: 1)
  end

  describe "bad input", :ill_typed do
    it "refuses bad names with ArgumentError or TypeError and enqueues nothing" do
      expect { runtime.publish("", {}) }.to raise_error(ArgumentError, /empty/)
      expect { runtime.publish("a..b") }.to raise_error(ArgumentError, /segments/)
      expect { runtime.publish("a.*") }.to raise_error(ArgumentError, /reserved/)
      expect { runtime.publish("a b") }.to raise_error(ArgumentError, /whitespace/)
      expect { runtime.publish("x" * 256) }.to raise_error(ArgumentError, /255/)
      expect { runtime.publish(42) }.to raise_error(TypeError, /String or Symbol/)
      expect { runtime.publish(nil) }.to raise_error(TypeError, /String or Symbol/)
      expect(runtime.event_stats[:published]).to eq(0)
      expect(runtime.stats.find { |row| row[:channel] == "shared.ffi" }[:sent]).to eq(0)
    end

    it "refuses bad payloads naming the path where they cross into Rust, and enqueues nothing" do
      expect { runtime.emit("ok", { user: Object.new }) }.to raise_error(TypeError, /payload\[:user\] is a Object/)
      expect { runtime.emit("ok", { "list" => [1, 2**70] }) }.to raise_error(RangeError, /payload\["list"\]\[1\]/)
      expect { runtime.emit("ok", { 1 => 2 }) }.to raise_error(TypeError, /key/)
      cyclic = {}
      cyclic[:self] = cyclic
      expect { runtime.emit("ok", cyclic) }.to raise_error(ArgumentError, /cycle/)
      deep = (1..64).reduce(1) { |inner, _| [inner] }
      expect { runtime.emit("ok", { deep: deep }) }.to raise_error(ArgumentError, /deeper than 64/)
      expect { runtime.publish("ok", [1]) }.to raise_error(TypeError, /payload must be a Hash, got Array/)
      expect { runtime.emit("ok", { s: "\xFF".b }) }.to raise_error(ArgumentError, /UTF-8/)
      expect(runtime.event_stats[:emitted]).to eq(0)
      expect(runtime.event_stats[:published]).to eq(0)
    end

    it "refuses bad waits" do
      expect { runtime.publish("ok", {}, wait: -1) }.to raise_error(ArgumentError, /wait/)
      expect { runtime.publish("ok", {}, wait: Float::NAN) }.to raise_error(ArgumentError, /wait/)
      expect { runtime.publish("ok", {}, wait: "1") }.to raise_error(TypeError, /wait/)
      expect(runtime.event_stats[:published]).to eq(0)
    end
  end

  it "carries events emitted by Rust code to Ruby subscribers" do
    seen = []
    runtime.subscribe("rust.**") { |event| seen << event }
    id = runtime.emit("rust.hello", { from: "core" })
    eventually do
      runtime.dispatch(timeout: 0.05)
      seen.any?
    end
    expect(seen.first).to have_attributes(id: id, name: "rust.hello", source: :rust, payload: { from: "core" })
  end
end

RSpec.describe "Event bus: end-to-end backpressure" do
  it "emits channel.saturated from the Rust side when shared.ffi crosses its threshold" do
    seen = []
    runtime = build_runtime(dispatch: :manual)
    runtime.subscribe("channel.*") { |event| seen << event }
    publish_until_backpressure(runtime)
    eventually do
      runtime.dispatch(timeout: 0.05)
      seen.any? { |e| e.payload[:channel] == "shared.ffi" }
    end
    saturated = seen.find { |event| event.name == "channel.saturated" && event.payload[:channel] == "shared.ffi" }
    expect(saturated.source).to eq(:rust)
    expect(saturated.payload).to include(component: "shared", capacity: 1000, policy: "error", threshold: 0.8)
  end

  it "raises Tasker::Backpressure once the pipeline is full, then delivers every accepted event in order" do
    runtime = build_runtime(dispatch: :manual)
    received = []
    runtime.subscribe("load.event") { |event| received << event.payload[:seq] }

    ids, error = publish_until_backpressure(runtime)
    expect(error).to have_attributes(channel: "shared.ffi", capacity: 1000, policy: "error")
    expect(error.message).to include("shared.ffi")
    ids.concat(fill_pipeline(runtime, first_seq: ids.size))
    # One hop: bounded by shared.ffi alone, not by load.
    expect(ids.size).to eq(1000)
    expect { runtime.publish("load.event", { seq: -1 }) }.to raise_error(Tasker::Backpressure)

    eventually do
      runtime.dispatch(timeout: 0.05)
      received.size >= ids.size
    end
    expect(received).to eq((0...ids.size).to_a)
    expect(runtime.stats.find { |row| row[:channel] == "shared.ffi" }[:rejected]).to be >= 2
  end

  it "stalls behind a slow handler in auto mode, and loses nothing when it resumes" do
    runtime = build_runtime
    gate = Queue.new
    received = []
    runtime.subscribe("load.event") do |event|
      gate.pop if received.empty?
      received << event.payload[:seq]
    end

    ids, = publish_until_backpressure(runtime)
    gate << :go
    eventually { received.size == ids.size }
    expect(received).to eq((0...ids.size).to_a)
    expect(runtime.event_stats).to include(published: ids.size, delivered: ids.size)
  end

  it "waits for room with wait: and succeeds once a dispatcher makes some" do
    runtime = build_runtime(dispatch: :manual)
    runtime.subscribe("load.event") { nil }
    fill_pipeline(runtime)

    waiting = Thread.new { runtime.publish("load.event", { seq: :late }, wait: 30) }
    eventually { runtime.stats.find { |row| row[:channel] == "shared.ffi" }[:blocked] == 1 }
    runtime.dispatch(timeout: 0.5)
    expect(waiting.join(10)&.value).to be_a(Integer)
  end

  it "gives up after wait: seconds with Tasker::Backpressure" do
    runtime = build_runtime(dispatch: :manual)
    fill_pipeline(runtime)
    expect { runtime.publish("load.event", {}, wait: 0.05) }.to raise_error(Tasker::Backpressure)
  end
end
