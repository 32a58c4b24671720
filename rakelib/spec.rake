# frozen_string_literal: true

# The RSpec suite against the compiled extension, once plainly, once under GC.stress and once
# with every call checked against sig/. Layout: spec/unit/ (one class or concept each),
# spec/reliability/ (the checks docs/reliability.md describes), spec/integration/ (PostgreSQL,
# the shipped example).

desc "Run the RSpec suite against the compiled extension"
task spec: :compile do
  sh RUBY, "-S", "rspec"
end

namespace :spec do
  # GC.stress collects on every allocation. With full marking (GC_STRESS_FLAGS=0) the :ffi
  # examples take many minutes on two cores; minor-only collections (flag 1, the default here)
  # still free every young object the extension forgot to keep alive, in seconds.
  desc "Run the specs that cross the FFI again with GC.stress on (GC_STRESS_FLAGS=0 for full marking)"
  task gc_stress: :compile do
    sh({ "GC_STRESS" => "1", "GC_STRESS_FLAGS" => ENV.fetch("GC_STRESS_FLAGS", "1") },
       RUBY, "-S", "rspec", "--tag", "ffi")
  end

  # The specs that use the API as an application would, run with every call into Tasker::*
  # checked against sig/: all of spec/unit/ and, of spec/reliability/, the interrupt and
  # lifecycle specs. Left out: the rest of spec/reliability/, among them the bad-input
  # catalogue (it passes ill-typed values on purpose, as do the :ill_typed examples
  # elsewhere), the fast-path spec (it tests that a handler's arity picks how it is called,
  # and the checker wraps every block in a `|*args|` proc), and the stress and GC-pressure
  # specs (minutes under the checker, no new calls); and spec/integration/ (examples_spec's
  # subprocess is not checked; the example runs here directly instead).
  rbs_checked_specs = [*Dir["spec/unit/*_spec.rb", base: ROOT].sort,
                       "spec/reliability/interrupts_spec.rb", "spec/reliability/lifecycle_spec.rb"]

  desc "Run the app-level specs and examples/worker_spec.rb with RBS runtime type checking of Tasker::*"
  task rbs: :compile do
    env = { "RBS_TEST_TARGET" => "Tasker::*", "RBS_TEST_OPT" => "-I #{File.join(ROOT, 'sig')}",
            "RBS_TEST_LOGLEVEL" => "error" }
    checked = [RUBY, "-r", "rbs/test/setup", "-S", "rspec"]
    sh env, *checked, "--tag", "~ill_typed", *rbs_checked_specs
    sh env, *checked, "--options", File::NULL, "-I", File.join(ROOT, "lib"), "examples/worker_spec.rb"
  end
end
