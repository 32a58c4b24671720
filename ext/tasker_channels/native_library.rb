# frozen_string_literal: true

require "rbconfig"

# File names of the native library, for the build scripts (extconf.rb and the Rakefile):
# what cargo builds on this platform, and what Ruby's `require` loads. Never hard-code `.so`:
# macOS loads a `.bundle`, Windows a `.dll`.
module TaskerChannelsNativeLibrary
  CRATE = "tasker_channels"

  module_function

  # The name Ruby requires: `tasker_channels.so`, `.bundle` on macOS, `.dll` on Windows.
  def ruby_name
    "#{CRATE}.#{RbConfig::CONFIG.fetch('DLEXT')}"
  end

  # The cdylib cargo writes into target/<profile>/: `libtasker_channels.so`,
  # `libtasker_channels.dylib` on macOS, `tasker_channels.dll` on Windows.
  def cargo_name
    windows = RbConfig::CONFIG.fetch("host_os").match?(/mswin|mingw|cygwin/)
    "#{windows ? '' : 'lib'}#{CRATE}.#{RbConfig::CONFIG.fetch('SOEXT')}"
  end
end
