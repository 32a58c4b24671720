# frozen_string_literal: true

require "open3"
require "rbconfig"

# The tree the specs run against, and a fresh Ruby to run a script in: for examples whose
# subject is a whole process (exit, fork, signals, at-exit drain) or that could crash or hang
# it, so a regression fails one example instead of taking the suite down with it.
module ChildRuby
  ROOT = File.expand_path("../../..", __dir__)
  LIB = File.join(ROOT, "lib")
  # Loads the gem from this tree, not an installed copy.
  PRELUDE = "$LOAD_PATH.unshift(#{LIB.inspect})\nrequire 'tasker_channels'\n".freeze

  # Runs `script` in a fresh Ruby with the gem loaded (`preload: false` leaves that to the
  # script), `input` on its stdin, killing it after `limit` seconds: a load blocked with the
  # GVL held ignores SIGTERM and SIGINT. Returns [stdout and stderr, exit status or "signal N"].
  def run_isolated(script, input: "", limit: 60, preload: true)
    source = preload ? PRELUDE + script : script
    Open3.popen2e({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-e", source) do |stdin, out, waiter|
      writer = Thread.new do
        stdin.write(input)
        stdin.close
      end
      reader = Thread.new { out.read }
      unless waiter.join(limit)
        Process.kill(:KILL, waiter.pid)
        waiter.join
      end
      writer.join
      status = waiter.value
      [reader.value, status.exited? ? status.exitstatus : "signal #{status.termsig}"]
    end
  end
end

RSpec.configure do |config|
  config.include ChildRuby
end
