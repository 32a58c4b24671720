# frozen_string_literal: true

require "fileutils"
require "tmpdir"

# Channel memory follows occupancy, not capacity: a runtime whose every channel is configured
# at the largest capacity allowed costs next to nothing while empty, and building it never
# stops the other Ruby threads for long.
RSpec.describe "Channel memory" do
  largest_capacity = 16_777_216
  # Far below what reserving every slot would take (about 640 MB a channel), far above the
  # noise of a runtime's own setup.
  rss_growth_limit = 50 * 1024 * 1024
  # What reserving every slot cost: about 400 ms a channel with the GVL held. A generous bound,
  # so a busy machine cannot fail it; Ruby's own thread switching alone stays under 100 ms.
  longest_stop = 0.2

  def rss_bytes
    File.read("/proc/self/status")[/^VmRSS:\s+(\d+) kB/, 1].then { |kb| Integer(kb) * 1024 }
  end

  # Runs the block while another Ruby thread ticks; returns the block's value and the
  # longest time the ticking thread was kept from running.
  def longest_stop_during
    ready = Queue.new
    stop = false
    longest = 0.0
    ticker = Thread.new do
      last = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      ready << true
      until stop
        sleep 0.001
        now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        longest = [longest, now - last].max
        last = now
      end
    end
    ready.pop
    value = yield
    stop = true
    # Joining gives the GVL away at once, so the ticker's last gap ends with the block.
    ticker.join
    [value, longest]
  end

  around do |example|
    @config_dir = Dir.mktmpdir("tasker-channels-memory")
    example.run
  ensure
    FileUtils.remove_entry(@config_dir, true)
  end

  let(:config_dir) do
    path = File.join(@config_dir, "environments", "test", "mpsc_channels.toml")
    FileUtils.mkdir_p(File.dirname(path))
    File.write(path, ChannelConfigHelpers::CAPACITY_KEYS.map do |name, key|
      "[mpsc_channels.#{name}]\n#{key} = #{largest_capacity}\n"
    end.join("\n"))
    @config_dir
  end

  it "builds an empty runtime at the largest capacity everywhere in little memory, without stopping other threads" do
    # Load and start whatever the first runtime of a process sets up once, so the figure is the
    # channels' alone.
    Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual).shutdown
    GC.start
    before = rss_bytes

    runtime, stopped_for = longest_stop_during do
      Tasker::Channels::Runtime.new(environment: "test", config_dir: config_dir)
    end
    growth = rss_bytes - before

    capacities = runtime.stats.to_h { |row| [row[:channel], row[:capacity]] }
    expect(capacities).to eq(ChannelConfigHelpers::CHANNEL_NAMES.to_h { |name| [name, largest_capacity] })
    expect(growth).to be < rss_growth_limit
    expect(stopped_for).to be < longest_stop
  ensure
    runtime&.shutdown
  end

  # Not under GC.stress with the rest of :ffi: collecting on every allocation would stop the
  # ticking thread for longer than the bound above by itself.
  it "still pushes and pops on a channel at the largest capacity", :ffi do
    runtime = Tasker::Channels::Runtime.new(environment: "test", config_dir: config_dir, dispatch: :manual)
    channel = runtime.channel("worker.command_processor")

    expect(channel.capacity).to eq(largest_capacity)
    1_000.times { |i| expect(channel.push(i)).to be(true) }
    expect(channel.size).to eq(1_000)
    expect(Array.new(1_000) { channel.pop(timeout: 0) }).to eq((0...1_000).to_a)
    expect(channel.pop(timeout: 0)).to be_nil
  ensure
    runtime&.shutdown
  end
end
