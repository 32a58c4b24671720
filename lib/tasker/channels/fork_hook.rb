# frozen_string_literal: true

module Tasker
  module Channels
    # Tells live runtimes they are in a forked child, so each restarts the dispatcher threads
    # it had (threads other than the forking one do not survive fork). The channels themselves
    # are rebuilt by the extension, which detects the fork on its own.
    module ForkHook
      def _fork
        pid = super
        Channels.after_fork_in_child if pid.zero?
        pid
      end
    end
  end
end

Process.singleton_class.prepend(Tasker::Channels::ForkHook)
