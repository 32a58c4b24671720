# frozen_string_literal: true

# The Rust side's own checks: formatting, clippy and the workspace's tests (the core crate's
# tests run without a Ruby VM).

namespace :cargo do
  desc "rustfmt check"
  task(:fmt) { sh "cargo fmt --all --check" }
  desc "clippy with warnings as errors"
  task(:clippy) { sh "cargo clippy --locked --workspace --all-targets -- -D warnings" }
  desc "cargo test (the core crate runs without a Ruby VM)"
  task(:test) { sh "cargo test --locked --workspace" }
end

desc "rustfmt, clippy and cargo test"
task cargo: %w[cargo:fmt cargo:clippy cargo:test]
