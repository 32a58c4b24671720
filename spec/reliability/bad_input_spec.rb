# frozen_string_literal: true

require "fileutils"
require "tmpdir"

# The bad-input catalogue: every case must raise a clear error of the right class, enqueue
# nothing, and leave the runtime working. One auto-dispatch runtime serves a whole group, so
# a case that corrupted it would also fail every case after it.
#
# Config files that must fail to load with Tasker::ConfigError.
module BadConfigFiles
  TEST_FILE = "environments/test/mpsc_channels.toml"
  FFI_TABLE = "[mpsc_channels.shared.ffi]\n"

  # [label, files in the config dir, message]. Each problem must also name its file.
  CONFIG_FILES = [
    ["a TOML syntax error, with line and column",
     { TEST_FILE => "[mpsc_channels.shared.ffi\nruby_event_buffer_size = 8\n" },
     /mpsc_channels\.toml:1:\d+: TOML syntax error/],
    ["a value with a stray =", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = = 8\n" },
     /mpsc_channels\.toml:2:\d+: TOML syntax error/],
    ["a duplicate key", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = 8\nruby_event_buffer_size = 9\n" },
     /duplicate key/],
    ["an unknown key, with a suggestion", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_sise = 8\n" },
     /shared\.ffi\.ruby_event_buffer_sise: unknown key .*did you mean `ruby_event_buffer_size`/],
    ["an unknown channel", { TEST_FILE => "[mpsc_channels.shared.fii]\nruby_event_buffer_size = 8\n" },
     /shared\.fii: unknown key `fii`/],
    ["a capacity given as a string", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = \"8\"\n" },
     /shared\.ffi\.ruby_event_buffer_size: capacity must be an integer in 1\.\.=16777216, got the string "8"/],
    ["a capacity given as a float", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = 8.0\n" },
     /capacity must be an integer .*got 8\.0/],
    ["a capacity given as a table", { TEST_FILE => "[mpsc_channels.shared.ffi.ruby_event_buffer_size]\nx = 1\n" },
     /capacity must be an integer .*got a table/],
    ["a capacity of 0", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = 0\n" },
     /capacity must be an integer in 1\.\.=16777216, got 0/],
    ["a capacity above 16_777_216", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = 16777217\n" },
     /got 16777217/],
    ["an integer too large for TOML", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = 99999999999999999999\n" },
     /mpsc_channels\.toml:2:\d+: TOML syntax error/],
    ["a warning threshold of 0", { TEST_FILE => "[mpsc_channels.overflow_policy]\nlog_warning_threshold = 0.0\n" },
     /log_warning_threshold must be a fraction of capacity in \(0, 1\]/],
    ["a warning threshold of nan", { TEST_FILE => "[mpsc_channels.overflow_policy]\nlog_warning_threshold = nan\n" },
     /in \(0, 1\].*got NaN/],
    ["an unknown policy name", { TEST_FILE => "[mpsc_channels.overflow_policy]\ndrop_policy = \"dorp\"\n" },
     /unknown overflow policy "dorp" \(valid: "block", "drop", "drop_oldest", "error"\)/],
    ["a policy given as a number", { TEST_FILE => "#{FFI_TABLE}overflow = 1\n" },
     /overflow policy must be a string/],
    ["a negative send timeout", { TEST_FILE => "#{FFI_TABLE}send_timeout_ms = -1\n" },
     /send_timeout_ms must be an integer number of milliseconds in 0\.\.=3600000, got -1/],
    ["a send timeout above an hour", { TEST_FILE => "#{FFI_TABLE}send_timeout_ms = 3600001\n" },
     /in 0\.\.=3600000, got 3600001/],
    ["drop_oldest on shared.ffi, which would discard accepted events",
     { TEST_FILE => "#{FFI_TABLE}overflow = \"drop_oldest\"\n" },
     /shared\.ffi\.overflow: shared\.ffi cannot use "drop_oldest"/],
    ["a table outside [mpsc_channels]", { TEST_FILE => "[task_readiness.event_channel]\nbuffer_size = 5\n" },
     /write it as \[mpsc_channels\.task_readiness\.event_channel\]/],
    ["a top-level key", { TEST_FILE => "ruby_event_buffer_size = 5\n" },
     /every setting lives under \[mpsc_channels\]/],
    ["bytes that are not UTF-8", { TEST_FILE => "#{FFI_TABLE}ruby_event_buffer_size = 8 # \xFF\xFE\n".b },
     /not valid UTF-8/],
    ["nesting past the parser's recursion limit", { TEST_FILE => "x = #{'[' * 5000}#{']' * 5000}\n" },
     /recursion limit/],
    ["a bad base file in the config dir", { "base/mpsc_channels.toml" => "#{FFI_TABLE}ruby_event_buffer_size = -5\n" },
     %r{base/mpsc_channels\.toml:2:\d+: shared\.ffi\.ruby_event_buffer_size}],
    ["a config file that is a directory", { "#{TEST_FILE}/oops" => "" },
     /mpsc_channels\.toml: cannot read this file/]
  ].freeze

  def self.write_files(dir, files)
    files.each do |relative, text|
      path = File.join(dir, relative)
      FileUtils.mkdir_p(File.dirname(path))
      File.binwrite(path, text)
    end
  end
end

# Names, payloads and options, as [label, input, error class, message].
module BadInputCatalogue
  BIG = "x" * 10_000_000

  # [label, name, error, message]
  NAMES = [
    ["an empty name", "", ArgumentError, /empty/],
    ["nil", nil, TypeError, /String or Symbol, got NilClass/],
    ["an Integer", 42, TypeError, /String or Symbol, got Integer/],
    ["a Hash", { name: "x" }, TypeError, /String or Symbol/],
    ["256 bytes", "a" * 256, ArgumentError, /longer than 255 bytes/],
    ["a 10 MB name", BIG, ArgumentError, /longer than 255 bytes/],
    ["a bare *", "*", ArgumentError, /`\*` is reserved/],
    ["a ** segment", "step.**", ArgumentError, /`\*` is reserved/],
    ["a space", "step completed", ArgumentError, /whitespace/],
    ["a tab", "step\tcompleted", ArgumentError, /whitespace or control/],
    ["a trailing newline", "step.completed\n", ArgumentError, /whitespace or control/],
    ["a no-break space", "step\u00A0completed", ArgumentError, /whitespace or control/],
    ["a NUL byte", "step\0completed", ArgumentError, /control/],
    ["an empty segment", "step..completed", ArgumentError, /segments between dots must not be empty/],
    ["a leading dot", ".step", ArgumentError, /segments/],
    ["invalid UTF-8", "step.\xFF", ArgumentError, /UTF-8/],
    ["UTF-8 bytes labelled binary", "caf\xC3\xA9".b, ArgumentError, /UTF-8/],
    ["a Symbol that is not UTF-8", "\xFF".b.to_sym, ArgumentError, /UTF-8/]
  ].freeze

  CYCLIC_HASH = {}.tap { |hash| hash[:self] = hash }.freeze
  CYCLIC_ARRAY = [1].tap { |list| list << { inner: list } }.freeze
  DEPTH_65 = (1..65).reduce(1) { |inner, _| { "level" => inner } }.freeze
  PAYLOAD_STRUCT = Struct.new(:id)

  # [label, payload, error, message]
  PAYLOADS = [
    ["an Object", { user: Object.new }, TypeError, /payload\[:user\] is a Object/],
    ["an Object deep inside", { a: [1, { b: Object.new }] }, TypeError, /payload\[:a\]\[1\]\[:b\] is a Object/],
    ["a Bignum", { big: 2**64 }, RangeError, /payload\[:big\] is an Integer outside the 64-bit range/],
    ["an Integer just below i64", { small: -(2**63) - 1 }, RangeError, /64-bit/],
    ["a hash cycle", CYCLIC_HASH, ArgumentError, /cycle/],
    ["an array cycle", { list: CYCLIC_ARRAY }, ArgumentError, /payload\[:list\]\[1\]\[:inner\] contains itself/],
    ["nesting 65 deep", DEPTH_65, ArgumentError, /nests deeper than 64 levels/],
    ["a String that is not UTF-8", { text: "caf\xE9" }, ArgumentError,
     /payload\[:text\] is a String that is not valid UTF-8/],
    ["an Integer key", { 1 => "one" }, TypeError, /has a Integer key; hash keys must be Strings or Symbols/],
    ["a nil key", { nil => "none" }, TypeError, /NilClass key/],
    ["a key that is not UTF-8", { "\xFF" => 1 }, ArgumentError, /String key that is not valid UTF-8/],
    ["a Proc", { callback: -> {} }, TypeError, /payload\[:callback\] is a Proc/],
    ["a Range", { span: (1..2) }, TypeError, /payload\[:span\] is a Range/],
    ["a Rational", { ratio: 1/3r }, TypeError, /is a Rational/],
    ["a Struct", { record: PAYLOAD_STRUCT.new(1) }, TypeError, /payload\[:record\] is a/],
    ["a frozen hash holding an Object", { user: Object.new }.freeze, TypeError, /payload\[:user\]/]
  ].freeze

  # Publish-only: a worker channel carries any plain value, an event's payload is a Hash.
  PAYLOAD_ROOTS = [
    ["a nil payload", nil, TypeError, /payload must be a Hash, got NilClass/],
    ["an Array payload", [1, 2], TypeError, /payload must be a Hash, got Array/],
    ["a String payload", "text", TypeError, /payload must be a Hash, got String/],
    ["an Integer payload", 7, TypeError, /payload must be a Hash, got Integer/]
  ].freeze

  # [label, wait, error, message]
  WAITS = [
    ["a negative wait:", -1, ArgumentError, /wait: must be a finite number of seconds >= 0, got -1/],
    ["a NaN wait:", Float::NAN, ArgumentError, /wait: .*got NaN/],
    ["an infinite wait:", Float::INFINITY, ArgumentError, /wait: .*got inf/],
    ["a String wait:", "1", TypeError, /wait: must be a number of seconds, got String/],
    ["a Symbol wait:", :soon, TypeError, /wait: must be a number of seconds, got Symbol/],
    ["a true wait:", true, TypeError, /wait: .*TrueClass/]
  ].freeze

  # [label, timeout, error, message] for dispatch(timeout:) and Channel#pop(timeout:)
  TIMEOUTS = [
    ["a negative timeout:", -0.5, ArgumentError, /timeout: must be a finite number of seconds >= 0/],
    ["a NaN timeout:", Float::NAN, ArgumentError, /timeout: .*got NaN/],
    ["an infinite timeout:", Float::INFINITY, ArgumentError, /timeout: .*got inf/],
    ["a String timeout:", "1", TypeError, /timeout: must be a number of seconds or nil, got "1"/]
  ].freeze

  # The non-payload cases `rake spec:gc_stress` reruns (see "every FFI refusal in one pass").
  FFI_SAMPLE = ["nil", "an Integer", "invalid UTF-8", "UTF-8 bytes labelled binary", "a String wait:",
                "a NaN wait:", "a negative timeout:", "an infinite timeout:"].freeze
end

RSpec.describe "Bad input catalogue" do
  # The lasting parts of the runtime's state a refused call must not touch.
  def footprint(runtime)
    {
      published: runtime.event_stats[:published],
      channels: runtime.stats.to_h { |row| [row[:channel], row.values_at(:sent, :length, :dropped)] }
    }
  end

  # A normal publish still reaches a handler.
  def expect_healthy(runtime, seen)
    id = runtime.publish("probe.healthy", { after: "bad input" })
    expect(eventually { seen.include?(id) }).to be(true)
  end

  # Runs the block, expecting `error` with `message`; then nothing enqueued, runtime healthy.
  def expect_refused(runtime, seen, error, message, &)
    before = footprint(runtime)
    expect(&).to raise_error(error, message)
    expect(footprint(runtime)).to eq(before)
    expect_healthy(runtime, seen)
  end

  shared_context "a shared runtime" do
    # One runtime for the whole group: state from earlier cases is part of the test.
    before(:context) do
      @shared_runtime = Tasker::Channels::Runtime.new(environment: "test")
      @seen = []
      @shared_runtime.subscribe("probe.**") { |event| @seen << event.id }
    end

    after(:context) { @shared_runtime.shutdown(timeout: 10) }

    let(:runtime) { @shared_runtime }
    let(:seen) { @seen }
  end

  describe "config files raise Tasker::ConfigError naming the file and the key" do
    include_context "a shared runtime"

    BadConfigFiles::CONFIG_FILES.each do |label, files, message|
      it "refuses #{label}" do
        Dir.mktmpdir("tasker-bad-config") do |dir|
          BadConfigFiles.write_files(dir, files)
          error = nil
          expect_refused(runtime, seen, Tasker::ConfigError, message) do
            Tasker::Channels::Config.load(environment: "test", config_dir: dir)
          rescue Tasker::ConfigError => e
            error = e
            raise
          end
          expect(error.errors).not_to be_empty
          error.errors.each do |problem|
            expect(problem.file).to be_a(String).and(satisfy { |file| !file.empty? })
            expect(problem.message).to be_a(String).and(satisfy { |text| !text.empty? })
          end
          expect { Tasker::Channels::Runtime.new(environment: "test", config_dir: dir) }
            .to raise_error(Tasker::ConfigError, message)
        end
      end
    end

    it "lists every problem of a file at once" do
      text = "[mpsc_channels.shared.ffi]\nruby_event_buffer_size = 0\noverflow = \"x\"\nsend_timeout_ms = -5\n" \
             "[mpsc_channels.worker.command_processor]\ncommand_buffer_sizee = 1\n"
      Dir.mktmpdir("tasker-bad-config") do |dir|
        BadConfigFiles.write_files(dir, BadConfigFiles::TEST_FILE => text)
        expect_refused(runtime, seen, Tasker::ConfigError, /4 problems/) do
          Tasker::Channels::Config.load(environment: "test", config_dir: dir)
        end
      end
    end

    it "refuses an unknown environment, listing the known ones" do
      expect_refused(runtime, seen, Tasker::ConfigError,
                     /unknown environment "staging".*known environments: development, production, test/m) do
        Tasker::Channels::Runtime.new(environment: "staging")
      end
    end

    it "refuses an environment name that would leave the environments folder" do
      expect_refused(runtime, seen, Tasker::ConfigError, %r{environment name "\.\./test" .*cannot name a folder}) do
        Tasker::Channels::Config.load(environment: "../test")
      end
    end

    it "refuses a config dir that does not exist" do
      missing = File.join(Dir.tmpdir, "tasker-no-such-dir-#{Process.pid}")
      expect_refused(runtime, seen, Tasker::ConfigError, /#{Regexp.escape(missing)}: config dir .*does not exist/) do
        Tasker::Channels::Runtime.new(environment: "test", config_dir: missing)
      end
    end

    it "refuses a config dir that is a file" do
      expect_refused(runtime, seen, Tasker::ConfigError, /is not a directory/) do
        Tasker::Channels::Config.load(environment: "test", config_dir: __FILE__)
      end
    end

    it "refuses environment and config_dir arguments that are not UTF-8 with ArgumentError" do
      expect_refused(runtime, seen, ArgumentError, /environment is not valid UTF-8/) do
        Tasker::Channels::Runtime.new(environment: "\xFF".b)
      end
      expect_refused(runtime, seen, ArgumentError, /config_dir is not valid UTF-8/) do
        Tasker::Channels::Config.load(environment: "test", config_dir: "\xFF".b)
      end
    end
  end

  describe "event names" do
    include_context "a shared runtime"

    BadInputCatalogue::NAMES.each do |label, name, error, message|
      it "refuses #{label} with #{error}, frozen or not" do
        names = name.is_a?(String) ? [name.dup.freeze, +name] : [name]
        names.each do |variant|
          expect_refused(runtime, seen, error, message) { runtime.publish(variant, { ok: true }) }
        end
      end
    end

    it "refuses bad subscription patterns without adding a subscription" do
      count = runtime.event_stats[:subscriptions]
      expect { runtime.subscribe(nil) { nil } }.to raise_error(TypeError, /String, Symbol or Regexp/)
      expect { runtime.subscribe("") { nil } }.to raise_error(ArgumentError, /empty/)
      expect { runtime.subscribe("step.comp*") { nil } }.to raise_error(ArgumentError, /whole segment/)
      expect { runtime.subscribe("step.*") }.to raise_error(ArgumentError, /needs a block/)
      expect(runtime.event_stats[:subscriptions]).to eq(count)
      expect_healthy(runtime, seen)
    end
  end

  describe "payloads" do
    include_context "a shared runtime"

    # Published payloads travel by reference and are never walked; these rules hold where a
    # payload crosses into Rust: Rust-emitted events (here) and worker channels (below).
    BadInputCatalogue::PAYLOADS.each do |label, payload, error, message|
      it "refuses #{label} with #{error} where it crosses into Rust" do
        expect_refused(runtime, seen, error, message) { runtime.emit("probe.bad", payload) }
      end
    end

    BadInputCatalogue::PAYLOAD_ROOTS.each do |label, payload, error, message|
      it "refuses #{label} with #{error}" do
        expect_refused(runtime, seen, error, message) { runtime.publish("probe.bad", payload) }
      end
    end

    it "refuses the same payloads on a worker channel, leaving it empty" do
      channel = runtime.channel("worker.command_processor")
      BadInputCatalogue::PAYLOADS.each do |_label, payload, error, message|
        message = Regexp.new(message.source.gsub("payload", "value"))
        expect_refused(runtime, seen, error, message) { channel.push(payload) }
      end
      expect(channel.size).to eq(0)
    end

    it "accepts the edge values that are plain data: i64 bounds, NaN, infinities, depth 64" do
      edge = { min: -(2**63), max: (2**63) - 1, nan: Float::NAN, inf: -Float::INFINITY, neg_zero: -0.0 }
      deep = (1..63).reduce(1) { |inner, _| [inner] }
      delivered = []
      subscription = runtime.subscribe("probe.edge") { |event| delivered << event.payload }
      runtime.publish("probe.edge", edge)
      runtime.publish("probe.edge", { deep: deep })
      expect(eventually { delivered.size == 2 }).to be(true)
      subscription.unsubscribe
      expect(delivered[0].except(:nan)).to eq(edge.except(:nan))
      expect(delivered[0][:nan]).to be_nan
      expect(delivered[0][:neg_zero].to_s).to eq("-0.0")
      expect(delivered[1]).to eq({ deep: deep })
    end
  end

  describe "options" do
    include_context "a shared runtime"

    BadInputCatalogue::WAITS.each do |label, wait, error, message|
      it "refuses #{label} on publish with #{error}" do
        expect_refused(runtime, seen, error, message) { runtime.publish("probe.bad", { ok: true }, wait: wait) }
      end
    end

    BadInputCatalogue::TIMEOUTS.each do |label, timeout, error, message|
      it "refuses #{label} on dispatch and Channel#pop with #{error}" do
        manual = build_runtime(dispatch: :manual)
        manual.publish("queued", { kept: true })
        queued = -> { manual.stats.find { |row| row[:channel] == "shared.ffi" }[:length] }
        expect(eventually { queued.call == 1 }).to be(true)
        channel = runtime.channel("task_readiness.event_channel")
        expect_refused(runtime, seen, error, message) { channel.pop(timeout: timeout) }
        expect { manual.dispatch(timeout: timeout) }.to raise_error(error, message)
        expect(manual.event_stats).to include(published: 1, delivered: 0)
        expect(queued.call).to eq(1)
      end
    end

    it "refuses a bad dispatch: mode with ArgumentError" do
      [:automatic, "manual", nil].each do |mode|
        expect_refused(runtime, seen, ArgumentError, /dispatch: must be one of \[:auto, :manual, :inline\]/) do
          Tasker::Channels::Runtime.new(environment: "test", dispatch: mode)
        end
      end
    end

    it "refuses bad threads: with ArgumentError, starting no dispatcher" do
      dispatchers = runtime.dispatchers
      [0, -1, 1.5, "2", nil].each do |threads|
        expect_refused(runtime, seen, ArgumentError, /threads: must be a positive Integer/) do
          runtime.start(threads: threads)
        end
      end
      expect(runtime.dispatchers).to eq(dispatchers)
    end

    [[-1, ArgumentError], [Float::NAN, ArgumentError], [Float::INFINITY, ArgumentError], ["1", TypeError],
     [nil, TypeError]].each do |timeout, error|
      it "refuses shutdown(timeout: #{timeout.inspect}) with #{error} before closing anything" do
        other = build_runtime
        expect { other.shutdown(timeout: timeout) }.to raise_error(error, /timeout: must be/)
        expect(other).not_to be_closed
        expect(other.publish("still.open")).to be_a(Integer)
      end
    end
  end

  describe "channel names" do
    include_context "a shared runtime"

    it "refuses an unknown channel, listing the known ones" do
      known = /unknown channel "nope" \(known: orchestration\.command_processor/
      expect_refused(runtime, seen, ArgumentError, known) do
        runtime.channel("nope")
      end
    end

    it "refuses the bus's own channels to push and pop" do
      channel = runtime.channel("shared.ffi")
      expect_refused(runtime, seen, ArgumentError, %r{use publish/subscribe instead of push}) { channel.push(1) }
      expect_refused(runtime, seen, ArgumentError, /instead of pop/) { channel.pop(timeout: 0) }
    end

    it "refuses a channel name that is not a String or Symbol with TypeError" do
      [nil, 42].each do |name|
        expect_refused(runtime, seen, TypeError, /channel name must be a String or Symbol, got #{name.inspect}/) do
          runtime.channel(name)
        end
      end
    end
  end

  # `rake spec:gc_stress` reruns this one under GC.stress, where every allocation costs a full
  # GC: every payload refusal (where the extension walks Ruby objects) and a sample of the
  # others, with the runtime and the calls built beforehand, outside the stressed example.
  describe "every FFI refusal in one pass", :ffi do
    def self.refusals(runtime, channel)
      catalogue = BadInputCatalogue
      sample = ->(table) { table.select { |label, *| catalogue::FFI_SAMPLE.include?(label) } }
      catalogue::PAYLOADS.map { |label, value, error| [label, error, -> { runtime.emit("p", value) }] } +
        catalogue::PAYLOAD_ROOTS.map { |label, value, error| [label, error, -> { runtime.publish("p", value) }] } +
        sample.call(catalogue::NAMES).map { |label, name, error| [label, error, -> { runtime.publish(name, {}) }] } +
        sample.call(catalogue::WAITS).map { |label, wait, error| [label, error, -> { runtime.publish("p", wait:) }] } +
        sample.call(catalogue::TIMEOUTS).map { |label, timeout, error| [label, error, -> { channel.pop(timeout:) }] }
    end

    # Manual dispatch: an idle dispatcher thread would wake every 100 ms and allocate, each
    # allocation a full GC. The sleeping companion keeps the main thread from being the only
    # Ruby thread (see the pending example in gc_pressure_spec.rb).
    before(:context) do
      @companion = Thread.new { sleep }
      @runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
      @seen = []
      @runtime.subscribe("probe.*") { |event| @seen << event.payload }
      @channel = @runtime.channel("worker.command_processor")
      @refusals = self.class.refusals(@runtime, @channel)
      @expected_after = { "still" => ["working", :yes, 1.5] }.freeze
    end

    after(:context) do
      @runtime.shutdown(timeout: 10)
      @companion.kill.join
    end

    it "raises the right class for each, enqueues nothing and keeps delivering" do
      wrong = @refusals.filter_map do |label, error, call|
        call.call
        label
      rescue StandardError => e
        label unless e.instance_of?(error)
      end

      expect(wrong).to eq([])
      expect(@refusals.size).to eq(BadInputCatalogue::PAYLOADS.size + BadInputCatalogue::PAYLOAD_ROOTS.size +
                                   BadInputCatalogue::FFI_SAMPLE.size)
      expect(@runtime.event_stats).to include(published: 0, emitted: 0)
      expect(@channel.size).to eq(0)
      @runtime.publish("probe.after", @expected_after)
      expect(@runtime.dispatch(timeout: 10)).to eq(1)
      expect(@seen).to eq([@expected_after])
    end
  end

  describe "huge, frozen and mutated inputs" do
    include_context "a shared runtime"

    it "delivers a 10 MB string payload by reference" do
      delivered = []
      subscription = runtime.subscribe("probe.big") { |event| delivered << event.payload[:text] }
      runtime.publish("probe.big", { text: BadInputCatalogue::BIG })
      expect(eventually { delivered.any? }).to be(true)
      subscription.unsubscribe
      expect(delivered.first).to equal(BadInputCatalogue::BIG)
      expect_healthy(runtime, seen)
    end

    it "accepts frozen inputs and leaves them as they were" do
      payload = { "name" => "frozen", list: ["a", :b, 1.5].freeze }.freeze
      name = "probe.frozen"
      delivered = []
      subscription = runtime.subscribe(name) { |event| delivered << event.payload }
      runtime.publish(name, payload)
      expect(eventually { delivered.any? }).to be(true)
      subscription.unsubscribe
      expect(delivered.first).to eq(payload)
      expect(payload).to be_frozen
      expect(payload[:list]).to be_frozen
    end

    it "freezes the payload's top level at publish, so the publisher cannot change what handlers get" do
      payload = { "list" => [1, 2], "text" => +"before" }
      delivered = []
      subscription = runtime.subscribe("probe.frozen_top") { |event| delivered << event.payload }
      runtime.publish("probe.frozen_top", payload)
      expect { payload[:added] = true }.to raise_error(FrozenError)
      expect(eventually { delivered.any? }).to be(true)
      subscription.unsubscribe
      expect(delivered.first).to equal(payload)
      expect(delivered.first).to eq({ "list" => [1, 2], "text" => "before" })
    end

    it "checks a name String again after it was changed in place, whatever name went before" do
      name = +"probe.mutated"
      delivered = []
      subscription = runtime.subscribe("probe.mutated") { |event_name, _payload| delivered << event_name }
      2.times { runtime.publish(name, {}) }
      name.replace("not a valid name!")
      expect { runtime.publish(name, {}) }.to raise_error(ArgumentError)
      name.replace("probe.mutated")
      runtime.publish(name, {})
      expect(eventually { delivered.size == 3 }).to be(true)
      subscription.unsubscribe
      expect(delivered).to all(eq("probe.mutated").and(be_frozen))
    end

    it "refuses to publish after shutdown with Tasker::ClosedError, bad input still first" do
      closed = build_runtime
      closed.shutdown(timeout: 5)
      expect { closed.publish("late.event") }.to raise_error(Tasker::ClosedError, /shut down/)
      expect { closed.publish("", {}) }.to raise_error(ArgumentError)
      expect { closed.publish("late.event", [1]) }.to raise_error(TypeError)
      expect(closed.event_stats[:published]).to eq(0)
    end
  end
end
