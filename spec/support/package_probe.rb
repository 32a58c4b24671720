# frozen_string_literal: true

# Run by `rake package` with a plain ruby, outside the source tree, against the gem
# installed into an empty GEM_HOME: proves the installed gem loads and its native code runs.

require "tasker_channels"

location = $LOADED_FEATURES.grep(%r{tasker_channels/tasker_channels\.so\z}).first
abort "native extension not loaded from the installed gem" unless location&.start_with?(ENV.fetch("GEM_HOME"))

hierarchy = [Tasker::Backpressure, Tasker::ConfigError, Tasker::ClosedError].all? { |klass| klass < Tasker::Error }
abort "error hierarchy incomplete" unless hierarchy && Tasker::Error < StandardError

abort "native version #{Tasker::Channels::NATIVE_VERSION} != #{Tasker::Channels::VERSION}" unless
  Tasker::Channels::NATIVE_VERSION == Tasker::Channels::VERSION

config = Tasker::Channels::Config.load(environment: "production")
capacity = config["orchestration.command_processor.command_buffer_size"]
abort "shipped production config not compiled in (got #{capacity.inspect})" unless capacity == 5000

runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
seen = []
runtime.subscribe("probe.event") { |event| seen << event.payload }
runtime.publish("probe.event", { ok: true })
runtime.shutdown(timeout: 10)
abort "event not delivered through the installed extension: #{seen.inspect}" unless seen == [{ ok: true }]

begin
  Tasker::Channels::Testing.panic!("probe")
  abort "native code did not run"
rescue Tasker::Error => e
  abort "unexpected native error: #{e.message}" unless e.message.include?("probe")
end

puts "package probe: tasker_channels #{Tasker::Channels::VERSION} loaded from #{location}"
