# frozen_string_literal: true

# docs/design.md §6: a channel flapping around its threshold is damped by
# overflow_policy.notice_interval_ms, and what was held back is counted.
RSpec.describe "Saturation notice damping", :ffi do
  let(:name) { "worker.command_processor" }

  def flapping_runtime(interval_ms)
    channel_runtime({ name => { capacity: 10, overflow: "drop" } },
                    extra: "\n[mpsc_channels.overflow_policy]\nnotice_interval_ms = #{interval_ms}\n")
  end

  # Crosses 80 % and falls below 70 % again and again for a while; returns how many times.
  def flap(runtime, seconds: 0.3)
    channel = runtime.channel(name)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    flaps = 0
    while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      channel.push(:x) while channel.size < 8
      channel.pop while channel.size > 6
      flaps += 1
    end
    flaps
  end

  def notices(runtime)
    seen = []
    runtime.subscribe("channel.*") { |event| seen << event if event.payload[:channel] == name }
    seen
  end

  def named(seen, event_name)
    seen.select { |event| event.name == event_name }
  end

  it "lets one saturated/recovered pair out per interval and counts the rest" do
    runtime = flapping_runtime(10_000)
    seen = notices(runtime)
    flaps = flap(runtime)
    eventually do
      runtime.dispatch(timeout: 0.05)
      named(seen, "channel.recovered").any?
    end
    runtime.dispatch(timeout: 0.05)

    expect(flaps).to be > 1
    expect(named(seen, "channel.saturated").size).to eq(1)
    expect(named(seen, "channel.recovered").size).to eq(1)
    expect(seen.map { |event| event.payload[:suppressed] }).to eq([0, 0])
    row = channel_stats(runtime, name)
    expect(row[:notices_suppressed]).to eq((2 * flaps) - 2)
    series = %(mpsc_channel_notices_suppressed_total{component="worker",channel="#{name}"})
    expect(runtime.metrics).to include("#{series} #{row[:notices_suppressed]}")
  end

  it "notifies every crossing with notice_interval_ms = 0" do
    runtime = flapping_runtime(0)
    seen = notices(runtime)
    flap(runtime)
    eventually do
      runtime.dispatch(timeout: 0.05)
      named(seen, "channel.saturated").size > 1
    end

    expect(named(seen, "channel.saturated").size).to be > 1
    expect(seen.map { |event| event.payload[:suppressed] }).to all(eq(0))
    expect(channel_stats(runtime, name)[:notices_suppressed]).to eq(0)
  end
end
