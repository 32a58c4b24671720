# frozen_string_literal: true

# The gem as users get it: built from the tree's gemspec, installed into an empty GEM_HOME,
# and required from outside the tree by spec/support/package_probe.rb.

require "tmpdir"

# The most an installed gem may take on disk, everything in its GEM_HOME included.
INSTALLED_FOOTPRINT_LIMIT = 5 * 1024 * 1024

desc "Build the gem from the tree, install it into an empty GEM_HOME, check its footprint and require it from elsewhere"
task :package do
  Dir.mktmpdir("tasker_channels-package") do |tmp|
    gem_home = File.join(tmp, "gems")
    sh "gem", "build", File.join(ROOT, "tasker_channels.gemspec"), "--output", File.join(tmp, "tasker_channels.gem"),
       chdir: ROOT
    sh "gem", "install", "--local", "--no-document", "--install-dir", gem_home, File.join(tmp, "tasker_channels.gem")
    installed = Dir[File.join(gem_home, "gems", "tasker_channels-*")]
    abort "package: the gem did not install" if installed.empty?
    leftovers = installed.flat_map { |dir| Dir[File.join(dir, "target")] }
    abort "package: the installed gem kept cargo's build tree: #{leftovers.join(', ')}" unless leftovers.empty?
    probe = File.join(ROOT, "spec/support/package_probe.rb")
    env = { "GEM_HOME" => gem_home, "GEM_PATH" => gem_home, "RUBYLIB" => nil, "RUBYOPT" => nil,
            "RUST_BACKTRACE" => "0", "TASKER_ENV" => nil, "TASKER_CONFIG_DIR" => nil,
            "TASKER_FOOTPRINT_LIMIT" => INSTALLED_FOOTPRINT_LIMIT.to_s }
    sh env, RUBY, probe, chdir: tmp
  end
end
