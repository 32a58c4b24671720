# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
# Saturation warnings are expected all over the suite; specs that check them run a subprocess.
ENV["TASKER_LOG"] ||= "error"
require "tasker_channels"

Dir[File.join(__dir__, "support", "helpers", "*.rb")].each { |file| require file }

# Examples tagged :ill_typed pass values their signatures in sig/ forbid (or cyclic ones the
# type checker cannot walk) to prove how they are refused; `rake spec:rbs`, which checks every
# call against the signatures, leaves them out.
RSpec.configure do |config|
  config.disable_monkey_patching!
  config.order = :random
  Kernel.srand config.seed
  config.expect_with(:rspec) { |expectations| expectations.syntax = :expect }

  # `rake spec:gc_stress` runs the examples tagged :ffi again with GC.stress on, so a Ruby
  # object the extension forgot to keep alive is collected at once and the example fails.
  if ENV["GC_STRESS"] == "1"
    # Matchers load their code on first use; load it before GC.stress makes every load crawl.
    config.before(:suite) do
      extend RSpec::Matchers

      [
        [include(1), [1]], [have_attributes(size: 0), []], [be_a(Integer), 1], [be_between(0, 1), 0],
        [match(/a/), "a"], [all(be_a(Integer)), [1]], [contain_exactly(1), [1]], [start_with("a"), "ab"],
        [be_frozen, :a], [be_positive, 1], [be_empty, []], [be_nil, nil], [be >= 0, 1], [be_truthy, 1],
        [raise_error(ArgumentError, /x/), proc { raise ArgumentError, "x" }]
      ].each { |matcher, actual| matcher.matches?(actual) }
    end

    # GC_STRESS_FLAGS=0 (the default here) collects on every allocation with full marking;
    # 1 allows only minor GCs, which still frees any young object the extension failed to
    # keep alive, at a fraction of the cost.
    stress = Integer(ENV.fetch("GC_STRESS_FLAGS", "0"))
    config.around(:each, :ffi) do |example|
      GC.stress = stress.zero? ? true : stress
      example.run
    ensure
      GC.stress = false
    end
  end
end
