# frozen_string_literal: true

require "open3"
require "rbconfig"

RSpec.describe "Tasker error hierarchy", :ffi do
  it "roots every error in Tasker::Error < StandardError" do
    expect(Tasker::Error.superclass).to be(StandardError)
    [Tasker::Backpressure, Tasker::ConfigError, Tasker::ClosedError].each do |klass|
      expect(klass.superclass).to be(Tasker::Error)
    end
  end

  it "defines the classes in Ruby; the extension raises those very classes" do
    errors_file = File.join(ChildRuby::LIB, "tasker/errors.rb")
    %w[Error Backpressure ConfigError ConfigError::Problem ClosedError].each do |name|
      expect(Tasker.const_source_location(name).first).to eq(errors_file)
    end
    runtime = channel_runtime({ "shared.ffi" => { capacity: 4 } })
    error = begin
      loop { runtime.publish("full.bus", {}) }
    rescue Tasker::Backpressure => e
      e
    end
    expect(error.class).to be(Tasker::Backpressure)
    expect([error.channel, error.capacity, error.policy]).to eq(["shared.ffi", 4, "error"])
    expect(error.policy).to be_frozen
  end

  it "refuses to load the extension before the Ruby classes exist" do
    out, status = Open3.capture2e({ "TASKER_LOG" => "off" }, RbConfig.ruby, "-I", ChildRuby::LIB, "-e",
                                  'require "tasker_channels/tasker_channels"')
    expect(status).not_to be_success
    expect(out).to include("LoadError", "Tasker::Error is not defined", 'require "tasker_channels"')
  end

  it "turns a Rust panic into a Tasker::Error instead of aborting the process" do
    expect { Tasker::Channels::Testing.panic!("boom from rust") }
      .to raise_error(Tasker::Error, /\(a Rust panic\): boom from rust/)
    # The process and the extension keep working after the panic.
    expect { Tasker::Channels::Testing.panic!("again") }.to raise_error(Tasker::Error, /again/)
  end

  it "refuses to set a runtime up twice and keeps the bus it has" do
    runtime = channel_runtime
    expect { runtime.__send__(:_setup, "test", nil, nil) }
      .to raise_error(Tasker::Error, /already initialized/)
    expect(runtime.publish("still.open", {})).to be_a(Integer)
  end

  it "refuses the loser of two set-ups racing on one runtime, whichever finishes loading first" do
    outcomes = Array.new(40) do
      runtime = Tasker::Channels::Runtime.allocate
      # Each set-up loads its config without the GVL, so the two loads overlap.
      racers = Array.new(2) do
        Thread.new do
          runtime.__send__(:_setup, "test", nil, nil)
          :set_up
        rescue Tasker::Error => e
          e.message[/already initialized/] ? :refused : e
        end
      end
      racers.map(&:value).sort
    end
    expect(outcomes.uniq).to eq([%i[refused set_up]])
  end

  it "keeps the native and Ruby versions in step" do
    expect(Tasker::Channels::NATIVE_VERSION).to eq(Tasker::Channels::VERSION)
  end
end

RSpec.describe Tasker::Backpressure do
  it "is built with the attributes a rescue path reads, like the extension raises it" do
    error = described_class.new("shared.ffi is full", channel: "shared.ffi", capacity: 10, policy: :error)
    expect(error).to have_attributes(message: "shared.ffi is full", channel: "shared.ffi", capacity: 10,
                                     policy: "error")
    expect([error.channel, error.policy]).to all(be_frozen)
  end

  it "takes the policy as a String or a Symbol and reports it as a String" do
    %w[block drop drop_oldest error].each do |policy|
      expect(described_class.new(policy: policy.to_sym).policy).to eq(policy)
      expect(described_class.new(policy: policy).policy).to eq(policy)
    end
  end

  it "words a message from the attributes when none is given" do
    expect(described_class.new(channel: "shared.ffi", capacity: 10, policy: :error).message)
      .to eq("shared.ffi is full (capacity 10, policy error)")
    expect(described_class.new(channel: "worker.command_processor").message).to eq("worker.command_processor is full")
    expect(described_class.new.message).to eq("a channel is full")
    expect { raise described_class, "plain" }.to raise_error(described_class, "plain")
  end

  it "refuses an unknown policy or a capacity that is not a positive Integer", :ill_typed do
    expect { described_class.new(policy: :drop_newest) }
      .to raise_error(ArgumentError, /policy: must be one of block, drop, drop_oldest, error .* got :drop_newest/)
    expect { described_class.new(capacity: "10") }.to raise_error(ArgumentError, /capacity: must be a positive Integer/)
    expect { described_class.new(capacity: 0) }.to raise_error(ArgumentError, /got 0/)
  end
end

RSpec.describe Tasker::ConfigError do
  let(:file) { "config/tasker/environments/test/mpsc_channels.toml" }
  let(:problem) do
    Tasker::ConfigError::Problem.new(file: file, key: "shared.ffi.overflow", line: 3, column: 12,
                                     message: 'unknown overflow policy "dorp"')
  end

  it "lists Problem values, each a frozen value object" do
    error = described_class.new(errors: [problem])
    expect(error.errors).to eq([problem]).and be_frozen
    expect(problem).to be_frozen
    expect(problem.to_s).to eq("#{file}:3:12: shared.ffi.overflow: unknown overflow policy \"dorp\"")
    expect(problem.to_h).to eq(file: file, key: "shared.ffi.overflow", line: 3, column: 12,
                               message: 'unknown overflow policy "dorp"')
    expect(problem).to eql(Tasker::ConfigError::Problem.new(**problem.to_h))
    expect(problem.hash).to eq(Tasker::ConfigError::Problem.new(**problem.to_h).hash)
    case problem
    in { key: "shared.ffi.overflow", line: Integer => line }
      expect(line).to eq(3)
    end
  end

  it "words its message the way the extension does, one problem per line" do
    missing = Tasker::ConfigError::Problem.new(file: "/nonexistent", message: "the config dir does not exist")
    error = described_class.new(errors: [problem, { file: "a.toml", line: 2, message: "boom" }, missing])
    expect(error.message).to eq(<<~TEXT.chomp)
      invalid channel configuration (3 problems):
        #{file}:3:12: shared.ffi.overflow: unknown overflow policy "dorp"
        a.toml:2: boom
        /nonexistent: the config dir does not exist
    TEXT
    expect(described_class.new("custom", errors: [problem]).message).to eq("custom")
  end

  it "matches what the extension raises for a real config" do
    error = begin
      Tasker::Channels::Config.load(environment: "test", config_dir: "/nonexistent/tasker-config")
    rescue described_class => e
      e
    end
    expect(error.errors).to all(be_a(Tasker::ConfigError::Problem))
    expect(error.message).to eq(described_class.new(errors: error.errors).message)
  end

  it "refuses a position that is not a positive Integer" do
    expect { Tasker::ConfigError::Problem.new(file: "a", message: "b", line: 0) }
      .to raise_error(ArgumentError, /line: must be a positive Integer or nil, got 0/)
  end
end
