# frozen_string_literal: true

# A second process for the forwarding spec: listens on a PostgreSQL channel, prints "ready",
# collects COUNT remote events, writes them to stdout with Marshal (so Symbol and String
# keys are compared exactly) and exits through a normal shutdown.
#
#   ruby -Ilib spec/support/postgres_receiver.rb URL CHANNEL COUNT

require "timeout"
require "tasker_channels"

url = ARGV.fetch(0)
channel = ARGV.fetch(1)
count = Integer(ARGV.fetch(2))
runtime = Tasker::Channels::Runtime.new(environment: "test")
received = Queue.new
runtime.subscribe("**") { |event| received << event if event.source == :remote }
runtime.listen(url, channels: [channel])
$stdout.puts "ready"
$stdout.flush
events = Array.new(count) { Timeout.timeout(30) { received.pop } }
$stdout.binmode
$stdout.write(Marshal.dump(events.map { |event| [event.name, event.payload, event.source, event.published_at.to_r] }))
$stdout.flush
exit(runtime.shutdown(timeout: 5) ? 0 : 1)
