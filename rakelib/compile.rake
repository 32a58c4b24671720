# frozen_string_literal: true

# Building the extension in place, into lib/tasker_channels/, so `ruby -Ilib` and the specs
# load it from the tree.

require "fileutils"
require_relative "../ext/tasker_channels/native_library"

EXTENSION = File.join(ROOT, "lib/tasker_channels", TaskerChannelsNativeLibrary.ruby_name)
# The release optimizations with line tables (Cargo.toml); `gem install` builds the stripped
# `release` profile instead.
DEVELOPMENT_PROFILE = "release-debuginfo"

# Builds the extension with cargo profile `profile` into lib/tasker_channels/.
def build_extension(profile)
  sh "cargo", "build", "--profile", profile, "--locked", "-p", "tasker_channels"
  FileUtils.mkdir_p(File.dirname(EXTENSION))
  built = File.join(ROOT, "target", profile, TaskerChannelsNativeLibrary.cargo_name)
  # Copy to a new file and rename, so a running process keeps its mapped copy intact.
  FileUtils.cp(built, "#{EXTENSION}.tmp")
  File.rename("#{EXTENSION}.tmp", EXTENSION)
end

namespace :compile do
  desc "Build the extension exactly as `gem install` does (release profile: LTO, size-optimized, stripped)"
  task(:release) { build_extension("release") }
end

desc "Build the extension (optimized, with line tables) into lib/tasker_channels/"
task :compile do
  build_extension(DEVELOPMENT_PROFILE)
end
