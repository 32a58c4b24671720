# frozen_string_literal: true

RSpec.describe "Tasker error hierarchy", :ffi do
  it "roots every error in Tasker::Error < StandardError" do
    expect(Tasker::Error.superclass).to be(StandardError)
    [Tasker::Backpressure, Tasker::ConfigError, Tasker::ClosedError].each do |klass|
      expect(klass.superclass).to be(Tasker::Error)
    end
  end

  it "gives Backpressure readers for channel, capacity and policy" do
    expect(Tasker::Backpressure.instance_methods(false)).to include(:channel, :capacity, :policy)
  end

  it "gives ConfigError a reader for its problems" do
    expect(Tasker::ConfigError.instance_methods(false)).to include(:errors)
  end

  it "turns a Rust panic into a Tasker::Error instead of aborting the process" do
    expect { Tasker::Channels::Testing.panic!("boom from rust") }
      .to raise_error(Tasker::Error, /\(a Rust panic\): boom from rust/)
    # The process and the extension keep working after the panic.
    expect { Tasker::Channels::Testing.panic!("again") }.to raise_error(Tasker::Error, /again/)
  end

  it "keeps the native and Ruby versions in step" do
    expect(Tasker::Channels::NATIVE_VERSION).to eq(Tasker::Channels::VERSION)
  end
end
