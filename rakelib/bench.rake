# frozen_string_literal: true

# `rake bench`: builds the extension, then runs every benchmark under bench/ side by side
# with its baseline, prints one table and writes bench/results/latest.json.
# Environment knobs (BENCH_ONLY, BENCH_CRITERION, ...) are described in bench/run.rb and
# docs/benchmarks.md.

# Benchmarks measure the library users install (the release profile), not the development build.
desc "Run the benchmarks (ratios against same-run baselines); writes bench/results/latest.json"
task bench: "compile:release" do
  ruby "-I", File.expand_path("../lib", __dir__), File.expand_path("../bench/run.rb", __dir__)
end

namespace :bench do
  desc "SIGINT latency of a main thread blocked in Channel#pop vs Queue#pop (BENCH_TRIALS=n)"
  task sigint_latency: "compile:release" do
    ruby "-I", File.expand_path("../lib", __dir__), File.expand_path("../bench/sigint_latency.rb", __dir__)
  end
end
