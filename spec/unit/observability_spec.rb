# frozen_string_literal: true

require "open3"
require "rbconfig"

# docs/design.md §6: stats rows, Prometheus metrics and the saturation warning.
module ObservabilitySpec
  STATS_KEYS = %i[
    channel component capacity length usage_percent high_water_mark policy sent received dropped
    rejected blocked full_events notices_suppressed send_wait_p50_us send_wait_p99_us
  ].freeze
  COUNTER_KEYS = %i[
    sent received dropped rejected blocked full_events notices_suppressed send_wait_p50_us send_wait_p99_us
  ].freeze
  POLICIES = %w[block drop drop_oldest error].freeze
  CHANNEL_FAMILIES = %w[
    mpsc_channel_capacity mpsc_channel_usage_percent mpsc_channel_messages_sent_total
    mpsc_channel_messages_received_total mpsc_channel_messages_dropped_total
    mpsc_channel_full_events_total mpsc_channel_messages_rejected_total mpsc_channel_blocked_total
    mpsc_channel_length mpsc_channel_high_water_mark mpsc_channel_send_wait_seconds
    mpsc_channel_notices_suppressed_total
  ].freeze
  # Which stats key each per-channel family reports.
  FAMILY_STATS = {
    "mpsc_channel_capacity" => :capacity,
    "mpsc_channel_usage_percent" => :usage_percent,
    "mpsc_channel_messages_sent_total" => :sent,
    "mpsc_channel_messages_received_total" => :received,
    "mpsc_channel_messages_dropped_total" => :dropped,
    "mpsc_channel_full_events_total" => :full_events,
    "mpsc_channel_messages_rejected_total" => :rejected,
    "mpsc_channel_blocked_total" => :blocked,
    "mpsc_channel_notices_suppressed_total" => :notices_suppressed,
    "mpsc_channel_length" => :length,
    "mpsc_channel_high_water_mark" => :high_water_mark
  }.freeze
  # `name{labels} value` (labels optional); label values may hold escaped quotes and braces.
  SAMPLE = /\A(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})? (?<value>\S+)\z/
  LABEL = /\A(?<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?<value>(?:[^"\\]|\\.)*)"/

  # Traffic on every kind of channel: a runtime whose worker channels hold messages, dropped
  # some, rejected some, and whose bus carried events that were dispatched.
  module Traffic
    CHANNELS = {
      "worker.command_processor" => { capacity: 10, overflow: "drop" },
      "orchestration.command_processor" => { capacity: 4, overflow: "drop_oldest" },
      "task_readiness.event_channel" => { capacity: 2, overflow: "error" },
      "orchestration.event_listeners" => { capacity: 3, overflow: "block", send_timeout_ms: 0 }
    }.freeze

    def busy_runtime
      runtime = channel_runtime(CHANNELS)
      worker = runtime.channel("worker.command_processor")
      7.times { |i| worker.push(i) }
      3.times { worker.pop }
      6.times { |i| runtime.channel("orchestration.command_processor").push(i) }
      refuse = runtime.channel("task_readiness.event_channel")
      2.times { |i| refuse.push(i) }
      expect { refuse.push(:late) }.to raise_error(Tasker::Backpressure)
      runtime.channel("orchestration.event_listeners").push(:one)
      runtime.subscribe("**") { |_event| nil }
      3.times { |i| runtime.publish("job.done", { seq: i }) }
      settle(runtime)
      runtime
    end

    # Dispatches until the bus is idle and two consecutive stats readings agree.
    def settle(runtime)
      previous = nil
      wait_for("the event bus to settle") do
        runtime.dispatch(timeout: 0)
        rows = runtime.stats
        idle = rows.select { |row| ChannelConfigHelpers::BUS_CHANNELS.include?(row[:channel]) }
                   .all? { |row| row[:length].zero? }
        settled = idle && rows == previous
        previous = rows
        settled
      end
    end
  end
end

RSpec.describe "Runtime#stats", :ffi do
  # Few, plain comparisons: under GC.stress every matcher object costs a full GC.
  it "has one row per configured channel, with every key, all counters starting at zero" do
    rows = channel_runtime.stats
    counters = %i[length high_water_mark usage_percent] + ObservabilitySpec::COUNTER_KEYS

    expect(rows.map { |row| row[:channel] }.sort).to eq(ChannelConfigHelpers::CHANNEL_NAMES.sort)
    expect(rows.map { |row| ObservabilitySpec::STATS_KEYS - row.keys }).to all(be_empty)
    expect(rows.map { |row| [row[:channel].split(".").first, row[:component]] }).to all(satisfy { |a, b| a == b })
    expect(rows.flat_map { |row| row.values_at(*counters) }).to all(be_zero)
  end

  it "reports each channel's configured capacity and policy" do
    runtime = channel_runtime(ObservabilitySpec::Traffic::CHANNELS)
    configured = runtime.config.channels.map { |channel| channel.values_at(:name, :capacity, :overflow) }
    reported = runtime.stats.map { |row| row.values_at(:channel, :capacity, :policy) }

    expect(reported.sort).to eq(configured.sort)
    expect(reported.assoc("worker.command_processor")).to eq(["worker.command_processor", 10, "drop"])
  end

  it "keeps the high-water mark at the peak after the channel drains" do
    runtime = channel_runtime({ "worker.command_processor" => { capacity: 10 } })
    channel = runtime.channel("worker.command_processor")
    6.times { channel.push(:x) }
    6.times { channel.pop }
    2.times { channel.push(:y) }

    expect(channel_stats(runtime, "worker.command_processor"))
      .to include(length: 2, high_water_mark: 6, usage_percent: 20.0, sent: 8, received: 6)
  end
end

# Traffic through every channel, the bus included: many calls, so not tagged :ffi.
RSpec.describe "Runtime#stats after traffic" do
  include ObservabilitySpec::Traffic

  it "has sane values after traffic on every channel" do
    runtime = busy_runtime

    runtime.stats.each do |row|
      expect(row[:channel]).to be_a(String)
      expect(ObservabilitySpec::POLICIES).to include(row[:policy])
      expect(row.values_at(:capacity, :length, :high_water_mark, *ObservabilitySpec::COUNTER_KEYS))
        .to all(be_an(Integer).and(be >= 0))
      expect(row[:usage_percent]).to be_within(1e-9).of(row[:length] * 100.0 / row[:capacity])
      expect(row[:high_water_mark]).to be_between(row[:length], row[:capacity])
      # Every message that entered was taken, is still queued, or (drop_oldest) was displaced.
      displaced = row[:policy] == "drop_oldest" ? row[:dropped] : 0
      expect(row[:sent]).to eq(row[:received] + row[:length] + displaced), row.inspect
    end
  end

  it "counts each channel's own traffic" do
    runtime = busy_runtime

    expect(channel_stats(runtime, "worker.command_processor"))
      .to include(sent: 7, received: 3, length: 4, high_water_mark: 7, usage_percent: 40.0, dropped: 0)
    expect(channel_stats(runtime, "orchestration.command_processor"))
      .to include(sent: 6, dropped: 2, length: 4, high_water_mark: 4, usage_percent: 100.0, full_events: 2)
    expect(channel_stats(runtime, "task_readiness.event_channel"))
      .to include(sent: 2, rejected: 1, blocked: 0, full_events: 1, length: 2)
    expect(channel_stats(runtime, "shared.ffi")).to include(sent: 3, received: 3, length: 0)
    expect(channel_stats(runtime, "worker.in_process_events")[:received]).to be >= 3
  end
end

RSpec.describe "Runtime#event_stats", :ffi do
  it "reports published, delivered, handler errors, subscriptions and dispatchers" do
    runtime = channel_runtime
    runtime.on_error { |_error, _event| nil }
    runtime.subscribe("job.*") { |event| raise "boom" if event.payload[:fail] }
    runtime.publish("job.done", { fail: false })
    runtime.publish("job.done", { fail: true })
    wait_for("both events to be dispatched") do
      runtime.dispatch(timeout: 0)
      runtime.event_stats[:delivered] == 2
    end

    expect(runtime.event_stats)
      .to include(published: 2, delivered: 2, handler_errors: 1, subscriptions: 1, dispatchers: 0)
  end
end

RSpec.describe "Runtime#metrics", :ffi do
  it "is Prometheus text with every channel family" do
    text = channel_runtime.metrics

    expect(text).to be_a(String).and(end_with("\n"))
    ObservabilitySpec::CHANNEL_FAMILIES.each { |family| expect(text).to include("# TYPE #{family} ") }
  end
end

# Parsing the whole exposition, waiting senders and subprocesses: not tagged :ffi.
RSpec.describe "Runtime#metrics exposition" do
  include ObservabilitySpec::Traffic

  def parse_labels(text)
    labels = {}
    rest = text.to_s
    until rest.empty?
      match = ObservabilitySpec::LABEL.match(rest) or raise "bad label syntax in {#{text}}"
      labels[match[:key]] = match[:value]
      rest = match.post_match.delete_prefix(",")
    end
    labels
  end

  def parse_value(text)
    { "+Inf" => Float::INFINITY, "-Inf" => -Float::INFINITY, "NaN" => Float::NAN }.fetch(text) { Float(text) }
  end

  # Parses Prometheus text format 0.0.4 strictly: every line is `# HELP`, `# TYPE` or a
  # sample; each family has HELP and TYPE once, before its samples, which are contiguous.
  # Returns {family => {type:, samples: [[name, labels, value], ...]}}.
  def parse_exposition(text)
    expect(text).to end_with("\n")
    families = {}
    current = nil
    text.each_line(chomp: true).with_index(1) do |line, number|
      case line
      when /\A# HELP (\S+) ./
        expect(families).not_to have_key(Regexp.last_match(1)), "line #{number}: second HELP for a family"
        current = families[Regexp.last_match(1)] = { help: true, samples: [] }
      when /\A# TYPE (\S+) (counter|gauge|histogram|summary|untyped)\z/
        expect(Regexp.last_match(1)).to eq(families.keys.last), "line #{number}: TYPE away from its HELP"
        expect(current).not_to have_key(:type), "line #{number}: second TYPE"
        current[:type] = Regexp.last_match(2)
      else
        sample = ObservabilitySpec::SAMPLE.match(line)
        expect(sample).not_to be_nil, "line #{number} is not `name{labels} value`: #{line.inspect}"
        family = families.keys.last
        expect(current&.key?(:type)).to be(true), "line #{number}: sample before its family's TYPE"
        suffix = current[:type] == "histogram" ? /(_bucket|_sum|_count)\z/ : /\z/
        expect(sample[:name].sub(suffix, "")).to eq(family), "line #{number}: sample outside its family"
        current[:samples] << [sample[:name], parse_labels(sample[:labels]), parse_value(sample[:value])]
      end
    end
    families
  end

  def series(families, family, channel)
    families.fetch(family)[:samples].select { |_name, labels, _value| labels["channel"] == channel }
  end

  it "parses line by line, with HELP and TYPE once per family and contiguous samples" do
    families = parse_exposition(busy_runtime.metrics)

    expect(families.keys).to include(*ObservabilitySpec::CHANNEL_FAMILIES)
    expect(families.values).to all(include(:type))
    expect(families.fetch("mpsc_channel_send_wait_seconds")[:type]).to eq("histogram")
    expect(families.fetch("mpsc_channel_capacity")[:type]).to eq("gauge")
    expect(families.fetch("mpsc_channel_messages_sent_total")[:type]).to eq("counter")
  end

  it "labels every channel series with its component and channel, one series per channel" do
    families = parse_exposition(busy_runtime.metrics)

    (ObservabilitySpec::CHANNEL_FAMILIES - ["mpsc_channel_send_wait_seconds"]).each do |family|
      labels = families.fetch(family)[:samples].map { |_name, sample_labels, _value| sample_labels }
      expect(labels.map { |l| l["channel"] }).to match_array(ChannelConfigHelpers::CHANNEL_NAMES)
      labels.each do |l|
        expect(l.keys).to contain_exactly("component", "channel")
        expect(l["component"]).to eq(l["channel"].split(".").first)
      end
    end
  end

  it "counts rejected and blocked sends, and reports the length and its peak" do
    runtime = channel_runtime({ "task_readiness.event_channel" =>
                                  { capacity: 2, overflow: "block", send_timeout_ms: 5 } })
    channel = runtime.channel("task_readiness.event_channel")
    2.times { |i| channel.push(i) }
    expect { channel.push(:late) }.to raise_error(Tasker::Backpressure, /stayed full/)
    channel.pop(timeout: 1)
    families = parse_exposition(runtime.metrics)

    values = %w[
      mpsc_channel_messages_rejected_total mpsc_channel_blocked_total mpsc_channel_length mpsc_channel_high_water_mark
    ].to_h { |family| [family, series(families, family, "task_readiness.event_channel").map(&:last)] }
    expect(values).to eq(
      "mpsc_channel_messages_rejected_total" => [1], "mpsc_channel_blocked_total" => [1],
      "mpsc_channel_length" => [1], "mpsc_channel_high_water_mark" => [2]
    )
    expect(families.fetch("mpsc_channel_length")[:type]).to eq("gauge")
    expect(families.fetch("mpsc_channel_blocked_total")[:type]).to eq("counter")
  end

  it "reports the same values as stats" do
    runtime = busy_runtime
    families = parse_exposition(runtime.metrics)

    runtime.stats.each do |row|
      ObservabilitySpec::FAMILY_STATS.each do |family, key|
        samples = series(families, family, row[:channel])
        expect(samples.size).to eq(1)
        expect(samples.first.last).to be_within(1e-9).of(row[key]), "#{family} for #{row[:channel]}"
      end
      count = series(families, "mpsc_channel_send_wait_seconds", row[:channel])
              .find { |name, _labels, _value| name.end_with?("_count") }
      # Every message that entered the channel is one observation of its send wait.
      expect(count.last).to eq(row[:sent]), "send wait count for #{row[:channel]}"
    end
  end

  it "has cumulative histogram buckets whose +Inf bucket equals _count" do
    families = parse_exposition(busy_runtime.metrics)

    ChannelConfigHelpers::CHANNEL_NAMES.each do |channel|
      samples = series(families, "mpsc_channel_send_wait_seconds", channel)
      buckets = samples.select { |name, _labels, _value| name.end_with?("_bucket") }
      bounds = buckets.map { |_name, labels, _value| parse_value(labels.fetch("le")) }
      counts = buckets.map(&:last)
      sum = samples.find { |name, _labels, _value| name.end_with?("_sum") }.last
      count = samples.find { |name, _labels, _value| name.end_with?("_count") }.last

      expect(bounds).to eq(bounds.sort).and(eq(bounds.uniq))
      expect(bounds.last).to eq(Float::INFINITY)
      expect(counts.each_cons(2)).to all(satisfy { |low, high| low <= high })
      expect(counts.last).to eq(count)
      expect(sum).to be >= 0
    end
  end

  it "records a sender's wait for room in the histogram, the percentiles and blocked" do
    name = "worker.command_processor"
    runtime = channel_runtime({ name => { capacity: 1, overflow: "block" } })
    channel = runtime.channel(name)
    channel.push(:first)
    pusher = quiet_thread { channel.push(:second) }
    wait_for("the push to block") { channel_stats(runtime, name)[:blocked] == 1 }
    sleep 0.06 # the pusher waits at least this long
    channel.pop
    expect(pusher.join(5)&.value).to be(true)

    row = channel_stats(runtime, name)
    families = parse_exposition(runtime.metrics)
    samples = series(families, "mpsc_channel_send_wait_seconds", name)
    under_20ms = samples.find { |n, labels, _v| n.end_with?("_bucket") && labels["le"] == "0.02" }

    expect(row).to include(sent: 2, blocked: 1, full_events: 1) # one send: tried, then waited
    expect(row[:send_wait_p99_us]).to be >= 20_000
    expect(samples.find { |n, _labels, _v| n.end_with?("_sum") }.last).to be >= 0.06
    expect(under_20ms&.last).to eq(1) # only the first, unwaited send
  end
end

RSpec.describe "The saturation warning" do
  let(:name) { "worker.command_processor" }

  # Moves the channel (capacity 10) through `lengths` in a fresh process and returns its
  # stderr. `policy` is more TOML for [mpsc_channels.overflow_policy] (damping is off, so every
  # crossing speaks); `log` the TASKER_LOG value (nil: unset).
  def run_lengths(lengths, log: nil, policy: "")
    extra = "\n[mpsc_channels.overflow_policy]\nnotice_interval_ms = 0\n#{policy}"
    dir = channel_config_dir({ name => { capacity: 10, overflow: "drop" } }, extra: extra)
    script = <<~RUBY
      require "tasker_channels"
      runtime = Tasker::Channels::Runtime.new(environment: "test", config_dir: ARGV[0], dispatch: :manual)
      channel = runtime.channel(#{name.dump})
      ARGV[1].split(",").map { |length| Integer(length) }.each do |target|
        channel.push(:x) while channel.size < target
        channel.pop while channel.size > target
      end
      runtime.shutdown(timeout: 5)
    RUBY
    env = { "TASKER_LOG" => log, "TASKER_ENV" => nil, "TASKER_CONFIG_DIR" => nil }
    _out, err, status = Open3.capture3(env, RbConfig.ruby, "-I", ChildRuby::LIB,
                                       "-e", script, dir, lengths.join(","))
    expect(status).to be_success, err
    err
  end

  def warn_lines(stderr)
    stderr.lines.grep(/\bWARN\b/)
  end

  it "logs one WARN per crossing of 80%, re-armed only by a drain below 70%" do
    stderr = run_lengths([8, 10, 9, 6, 9, 10])

    expect(warn_lines(stderr).size).to eq(2), stderr
    expect(warn_lines(stderr)).to all(include("channel saturated").and(include("channel=#{name}")))
  end

  it "logs a single WARN when the drain stops at 70%" do
    stderr = run_lengths([8, 7, 10])

    expect(warn_lines(stderr).size).to eq(1), stderr
  end

  it "logs nothing below the threshold" do
    expect(warn_lines(run_lengths([7, 0, 7]))).to be_empty
  end

  it "warns at the configured log_warning_threshold" do
    stderr = run_lengths([5, 4], policy: "log_warning_threshold = 0.5\n")

    expect(warn_lines(stderr).size).to eq(1), stderr
  end

  it "logs the recovery at INFO when TASKER_LOG=info" do
    stderr = run_lengths([8, 6, 8], log: "info")

    expect(warn_lines(stderr).size).to eq(2), stderr
    expect(stderr.lines.grep(/\bINFO\b.*channel recovered/).size).to eq(1), stderr
  end

  it "logs nothing with TASKER_LOG=error" do
    stderr = run_lengths([8, 10, 6, 9], log: "error")

    expect(warn_lines(stderr)).to be_empty
    expect(stderr).to be_empty
  end
end
