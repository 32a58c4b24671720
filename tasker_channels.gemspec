# frozen_string_literal: true

require "shellwords"

require_relative "lib/tasker/channels/version"

Gem::Specification.new do |spec|
  spec.name = "tasker_channels"
  spec.version = Tasker::Channels::VERSION
  spec.authors = ["tasker_channels developers"]
  spec.summary = "Bounded, monitored channels and a backpressured event bus for Tasker workers"
  spec.description = <<~DESC
    A native Rust extension that owns every bounded channel a Tasker worker runs on and the
    event buffer between Ruby and Rust, sized from layered TOML files. publish raises
    Tasker::Backpressure when the buffer is full; Ruby handlers subscribe to events emitted
    by the Rust side; every channel reports its saturation as stats and Prometheus metrics.
  DESC
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"
  spec.metadata = {
    "rubygems_mfa_required" => "true"
  }

  git_files = `git -C #{__dir__.shellescape} ls-files -z 2>/dev/null`.split("\x0")
  top_level = %w[Cargo.toml Cargo.lock clippy.toml rustfmt.toml LICENSE README.md CHANGELOG.md tasker_channels.gemspec]
  folders = %w[config/ crates/ ext/ exe/ lib/ sig/]
  # Fuzz targets are a separate cargo workspace for development, and tests and examples are
  # not built on install: integration tests, examples and the unit-test modules compiled only
  # under cfg(test) stay out. Benches stay: the core crate's manifest declares them, and
  # cargo refuses a manifest whose targets are missing.
  development_only = %r{/fuzz/|\Acrates/[^/]+/(?:tests|examples)/|\Acrates/.+/src/.+/(?:tests|testing)\.rs\z}
  spec.files = git_files.select do |file|
    top_level.include?(file) || (file.start_with?(*folders) && !file.match?(development_only))
  end
  spec.bindir = "exe"
  spec.executables = spec.files.grep(%r{\Aexe/}) { |file| File.basename(file) }
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/tasker_channels/extconf.rb"]
end
