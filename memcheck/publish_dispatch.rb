# frozen_string_literal: true

# The workload `rake memcheck` runs under valgrind: a short tour of every path that crosses
# the FFI (publish, manual and threaded dispatch, worker channels, refused input, config
# errors), with GC and compaction in between. Exits non-zero when a result is wrong, so a
# memory error that corrupts data fails the task even if valgrind's report is suppressed.

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "tasker_channels"

def check(what, actual, expected)
  return if actual == expected

  warn "memcheck workload: #{what}: expected #{expected.inspect}, got #{actual.inspect}"
  exit 1
end

def payload(seq)
  { n: seq, "text" => "event #{seq} é", list: [:sym, 1.5, nil, true, { "k" => ["v", seq] }] }
end

# Threaded dispatch: published payloads come back intact, in order.
runtime = Tasker::Channels::Runtime.new(environment: "test")
received = Queue.new
runtime.subscribe("memcheck.*") { |event| received << event.payload }
100.times { |n| runtime.publish("memcheck.auto", payload(n), wait: 10) }
check("threaded delivery", Array.new(100) { received.pop }, Array.new(100) { |n| payload(n) })
GC.start
GC.compact if GC.respond_to?(:compact)

# Worker channel round trip.
channel = runtime.channel("worker.command_processor")
20.times { |n| channel.push([n, "value #{n}", { n: n }]) }
check("channel round trip", Array.new(20) { channel.pop(timeout: 5) },
      Array.new(20) { |n| [n, "value #{n}", { n: n }] })

# Refused input: errors raised, nothing enqueued. Publish checks names and that the payload
# is a Hash (payloads travel by reference); data crossing into Rust is checked all the way
# down: a worker channel push and a Rust-emitted event.
cyclic = {}
cyclic[:self] = cyclic
refused = [["", {}], ["a..b", {}], [:"", {}], [42, {}], ["ok", [1]], %w[ok text]]
refused.each do |name, bad|
  runtime.publish(name, bad)
  check("refusal of #{name.inspect}", :accepted, :refused)
rescue ArgumentError, TypeError, RangeError
  nil
end
[{ bad: Object.new }, cyclic, { big: 2**70 }, { s: "\xFF" }].each do |bad|
  channel.push(bad)
  check("channel refusal of #{bad.keys.inspect}", :accepted, :refused)
rescue ArgumentError, TypeError, RangeError
  nil
end
begin
  Tasker::Channels::Testing.emit_from_rust(runtime, "memcheck.rust", { bad: Object.new }, count: 1)
  check("emit refusal", :accepted, :refused)
rescue TypeError
  nil
end
check("refusals enqueue nothing", runtime.event_stats[:published], 100)
check("shutdown", runtime.shutdown(timeout: 30), true)

# Manual dispatch, backpressure and shutdown draining on the calling thread.
manual = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
seen = []
manual.subscribe("memcheck.*") { |event| seen << event.payload[:n] }
accepted = 0
begin
  loop do
    manual.publish("memcheck.manual", payload(accepted))
    accepted += 1
  end
rescue Tasker::Backpressure
  nil
end
GC.start
check("manual shutdown", manual.shutdown(timeout: 30), true)
check("manual delivery", seen, (0...accepted).to_a)

# Config errors build their problem list in the extension.
begin
  Tasker::Channels::Config.load(environment: "no-such-environment")
  check("config error", :loaded, :refused)
rescue Tasker::ConfigError => e
  check("config error problems", e.errors.size, 1)
end

puts "memcheck workload: ok (#{100 + accepted} events)"
