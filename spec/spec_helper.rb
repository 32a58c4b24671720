# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
# Saturation warnings are expected all over the suite; specs that check them run a subprocess.
ENV["TASKER_LOG"] ||= "error"
require "tasker_channels"

Dir[File.join(__dir__, "support", "helpers", "*.rb")].each { |file| require file }

RSpec.configure do |config|
  config.disable_monkey_patching!
  config.order = :random
  Kernel.srand config.seed
  config.expect_with(:rspec) { |expectations| expectations.syntax = :expect }

  # `rake spec:gc_stress` runs the examples tagged :ffi again with GC.stress on, so a Ruby
  # object the extension forgot to keep alive is collected at once and the example fails.
  if ENV["GC_STRESS"] == "1"
    config.around(:each, :ffi) do |example|
      GC.stress = true
      example.run
    ensure
      GC.stress = false
    end
  end
end
