# frozen_string_literal: true

# The Ruby side's static checks: RuboCop, and the RBS signatures in sig/ validated.

require "open3"

# Runs the rbs that ships with Ruby (Debian puts no `rbs` on PATH); prints its chatter only on failure.
def rbs(*args)
  output, status = Open3.capture2e(RUBY, "-e", 'load Gem.bin_path("rbs", "rbs")', "--", *args)
  abort "rbs #{args.join(' ')} failed:\n#{output}" unless status.success?
  puts "rbs #{args.join(' ')}: ok"
end

namespace :lint do
  desc "RuboCop (Debian's)"
  task(:rubocop) { sh "rubocop", "--no-server" }
  desc "Validate the RBS signatures in sig/"
  task(:rbs) { rbs "-I", "sig", "validate" }
end

desc "RuboCop and RBS validation"
task lint: %w[lint:rubocop lint:rbs]
