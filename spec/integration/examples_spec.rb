# frozen_string_literal: true

require "open3"
require "rbconfig"

# The example worker spec under examples/ is what the README points users to: it must run,
# standalone (no spec_helper), and pass.
RSpec.describe "examples/worker_spec.rb" do
  let(:root) { ChildRuby::ROOT }
  let(:example_file) { File.join(root, "examples", "worker_spec.rb") }

  it "passes when run on its own with rspec" do
    env = { "TASKER_ENV" => nil, "TASKER_CONFIG_DIR" => nil, "TASKER_LOG" => "error" }
    out, status = Open3.capture2e(env, RbConfig.ruby, "-S", "rspec", "--options", File::NULL,
                                  "-I", File.join(root, "lib"), example_file, chdir: root)
    defined_examples = File.read(example_file).scan(/^\s+it "/).size
    expect(defined_examples).to be >= 5
    expect(out).to include("#{defined_examples} examples, 0 failures"), out
    expect(status).to be_success, out
  end
end
