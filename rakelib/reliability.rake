# frozen_string_literal: true

# Reliability checks that take longer than the normal suite or need extra tools; see
# docs/reliability.md for what each one proves and the figures last measured. The short
# stress, GC pressure and bad-input specs already run in `rake spec`.

require "English"
require "fileutils"
require "rbconfig"

# Paths, commands and report parsing shared by the reliability tasks.
module Reliability
  ROOT = File.expand_path("..", __dir__)
  RUBY = RbConfig.ruby
  MEMCHECK_DIR = File.join(ROOT, "memcheck")
  CORE_CRATE = File.join(ROOT, "crates/tasker_channels_core")
  # What valgrind reports as an invalid access; the task names them when it fails.
  INVALID_ACCESS = /^==\d+== (Invalid (?:read|write|free)|Mismatched free|Source and destination overlap)/

  module_function

  # Valgrind must know how deep Ruby's main-thread stack goes, or Ruby's stack probe looks
  # like a stack switch: the soft stack limit plus a margin (8 MB when unlimited).
  def max_stackframe
    soft, = Process.getrlimit(:STACK)
    soft = 8 * 1024 * 1024 if soft == Process::RLIM_INFINITY || soft > (1 << 34)
    soft + (1024 * 1024)
  end

  def memcheck_command(log)
    [ENV.fetch("VALGRIND", "valgrind"), "--tool=memcheck", "--error-exitcode=99", "--leak-check=no",
     "--errors-for-leak-kinds=none", "--num-callers=40", "--error-limit=no", "--max-stackframe=#{max_stackframe}",
     "--suppressions=#{File.join(MEMCHECK_DIR, 'ruby.supp')}", "--log-file=#{log}",
     RUBY, ENV.fetch("MEMCHECK_SCRIPT", File.join(MEMCHECK_DIR, "publish_dispatch.rb"))]
  end

  def memcheck_summary(log)
    report = File.exist?(log) ? File.read(log) : ""
    invalid = report.scan(INVALID_ACCESS).flatten.tally
    summary = report[/ERROR SUMMARY: .*/] || "no valgrind summary (see #{log})"
    [summary, invalid]
  end

  def tool?(*command)
    system(*command, out: File::NULL, err: File::NULL)
  end
end

desc "Long stress run: STRESS=1 rspec spec/reliability/stress_spec.rb (counts x STRESS_SCALE, 10 unless set)"
task stress: :compile do
  sh({ "STRESS" => "1" }, Reliability::RUBY, "-S", "rspec", "spec/reliability/stress_spec.rb", chdir: Reliability::ROOT)
end

desc "Run a publish/dispatch workload (or MEMCHECK_SCRIPT) under valgrind memcheck; fail on invalid reads/writes"
task memcheck: :compile do
  unless Reliability.tool?("valgrind", "--version")
    abort "memcheck: valgrind is not installed (apt-get install valgrind)"
  end

  log = File.join(Reliability::ROOT, "tmp", "memcheck.log")
  FileUtils.mkdir_p(File.dirname(log))
  ok = system({ "TASKER_LOG" => "off" }, *Reliability.memcheck_command(log))
  status = $CHILD_STATUS.exitstatus
  summary, invalid = Reliability.memcheck_summary(log)
  puts "memcheck: #{summary}"
  puts "memcheck: invalid accesses: #{invalid.empty? ? 'none' : invalid.map { |kind, n| "#{kind} x#{n}" }.join(', ')}"
  next if ok && invalid.empty?

  reason = status == 99 ? "valgrind found errors" : "the workload failed (exit #{status})"
  abort "memcheck: #{reason}; full report in #{log}"
end

namespace :fuzz do
  desc "Fuzz Config::load with cargo-fuzz for FUZZ_SECONDS (60); needs nightly and cargo-fuzz"
  task :config do
    unless Reliability.tool?("cargo", "+nightly", "--version") && Reliability.tool?("cargo", "fuzz", "--help")
      abort <<~TEXT
        fuzz:config needs a nightly toolchain and cargo-fuzz, which CI does not have:
          rustup toolchain install nightly
          cargo install cargo-fuzz      # builds on stable; running it needs nightly
        then: rake fuzz:config (FUZZ_SECONDS=600 for a longer run), or by hand in
        crates/tasker_channels_core: cargo +nightly fuzz run config_load. See docs/reliability.md.
        The bounded stable-toolchain version runs in cargo test: tests/config_fuzz.rs.
      TEXT
    end
    seconds = Integer(ENV.fetch("FUZZ_SECONDS", "60"))
    sh "cargo", "+nightly", "fuzz", "run", "config_load", "fuzz/corpus/config_load", "fuzz/seeds/config_load",
       "--", "-dict=fuzz/config.dict", "-max_total_time=#{seconds}", "-max_len=4096",
       chdir: Reliability::CORE_CRATE
  end
end
