# frozen_string_literal: true

require "json"
require "open3"
require "socket"
require "timeout"
require_relative "../support/postgres"

# How big the burst examples go: 100,000 in the normal run, 1,000,000 with PG_STRESS=1
# (`rake stress:postgres`).
module PostgresScale
  BURST = ENV["PG_STRESS"] == "1" ? 1_000_000 : 100_000
end

# A handler that holds the dispatcher on its first event until `release` is called.
class PostgresGate
  def initialize
    @opened = Queue.new
    @held = false
  end

  def hold_once
    return if @held

    @held = true
    @opened.pop
  end

  def release
    @opened << true
  end
end

RSpec.describe "PostgreSQL notifications and forwarding", :postgres do
  let(:runtime) { build_runtime }

  # A runtime whose listener path holds only a few events, so the handlers fall behind at once.
  def small_runtime
    dir = Dir.mktmpdir("tasker-pg-config")
    (@config_dirs ||= []) << dir
    FileUtils.mkdir_p(File.join(dir, "environments", "test"))
    File.write(File.join(dir, "environments", "test", "mpsc_channels.toml"), <<~TOML)
      [mpsc_channels.orchestration.event_listeners]
      pgmq_event_buffer_size = 4

      [mpsc_channels.worker.in_process_events]
      broadcast_buffer_size = 4
    TOML
    build_runtime(config_dir: dir)
  end

  after { (@config_dirs || []).each { |dir| FileUtils.remove_entry(dir) } }

  def url(**options)
    PostgresCluster.url(**options)
  end

  def sql(statement, database: "postgres")
    PostgresCluster.sql(statement, database: database)
  end

  def rss_kb
    Integer(File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1])
  end

  # Connections the listener (or forwarder) with this id has open on the server.
  # Listeners and forwarders number themselves separately, so a listener and a forwarder can
  # share an id: count the connections of one kind of owner.
  def open_connections(id, owner: :listener)
    names = owner == :listener ? ["listener #{id}", "queue sampler #{id}"] : ["forwarder #{id}"]
    list = names.map { |name| "'tasker_channels #{name}'" }.join(", ")
    sql("SELECT count(*) FROM pg_stat_activity WHERE application_name IN (#{list})").first.to_i
  end

  describe "listening" do
    it "delivers every notification exactly once, named after its channel" do
      payloads = Queue.new
      runtime.subscribe("pg.exactly_once") { |event| payloads << event }
      listener = runtime.listen(url, channels: ["exactly_once"])
      sql("SELECT pg_notify('exactly_once', 'n' || g) FROM generate_series(1, 20000) g")
      events = Array.new(20_000) { Timeout.timeout(30) { payloads.pop } }
      expect(events.map { |event| event.payload[:payload] }).to eq((1..20_000).map { |n| "n#{n}" })
      first = events.first
      expect(first.name).to eq("pg.exactly_once")
      expect(first.source).to eq(:rust)
      expect(first.payload.keys).to eq(%i[channel payload backend_pid])
      expect(first.payload[:channel]).to eq("exactly_once")
      expect(first.payload[:backend_pid]).to be_positive
      expect(listener.stats).to include(received: 20_000, events: 20_000, connected: true)
    end

    it "lets the existing patterns select Tasker's and pgmq's channels" do
      seen = Queue.new
      runtime.subscribe("pg.pgmq.*.INSERT") do |event|
        seen << [:insert, event.payload[:channel], event.payload[:payload]]
      end
      runtime.subscribe("pg.pgmq_message_ready.*") { |event| seen << [:namespace, event.payload[:channel]] }
      runtime.subscribe("pg.pgmq_message_ready") { |event| seen << [:global, JSON.parse(event.payload[:payload])] }
      runtime.listen(url, channels: ["pgmq.q_orders.INSERT", "pgmq.q_billing.INSERT", "pgmq_message_ready",
                                     "pgmq_message_ready.fulfillment"])
      sql(<<~SQL)
        NOTIFY "pgmq.q_orders.INSERT";
        NOTIFY "pgmq.q_billing.INSERT";
        SELECT pg_notify('pgmq_message_ready.fulfillment', '{"queue":"fulfillment_queue"}');
        SELECT pg_notify('pgmq_message_ready', '{"queue":"orders_queue","msg_id":42}');
      SQL
      got = Array.new(4) { Timeout.timeout(10) { seen.pop } }
      expect(got).to contain_exactly(
        [:insert, "pgmq.q_orders.INSERT", ""], [:insert, "pgmq.q_billing.INSERT", ""],
        [:namespace, "pgmq_message_ready.fulfillment"], [:global, { "queue" => "orders_queue", "msg_id" => 42 }]
      )
    end

    it "listens and unlistens while running, with quoted, case-kept names" do
      seen = Queue.new
      runtime.subscribe("pg.**") { |event| seen << event.payload.values_at(:channel, :payload) }
      listener = runtime.listen(url)
      expect(listener.listen(:later, "Mixed Case", 'with "quotes"')).to be(true)
      expect(listener.channels).to eq(["later", "Mixed Case", 'with "quotes"'])
      sql("SELECT pg_notify('later', '1'); SELECT pg_notify('mixed case', 'not ours');" +
          %q( SELECT pg_notify('Mixed Case', '2'); SELECT pg_notify('with "quotes"', '3')))
      expect(Array.new(3) { Timeout.timeout(10) { seen.pop } })
        .to eq([%w[later 1], ["Mixed Case", "2"], ['with "quotes"', "3"]])
      expect(listener.unlisten("later", "never")).to be(true)
      sql("SELECT pg_notify('later', 'gone'); SELECT pg_notify('Mixed Case', 'still')")
      expect(Timeout.timeout(10) { seen.pop }).to eq(["Mixed Case", "still"])
    end

    it "refuses channel names PostgreSQL would not keep, before connecting" do
      expect { runtime.listen(url, channels: [""]) }.to raise_error(ArgumentError, /channel name "": it is empty/)
      expect { runtime.listen(url, channels: ["x" * 64]) }.to raise_error(ArgumentError, /longer than 63 bytes/)
      expect { runtime.listen(url, channels: ["a\0b"]) }.to raise_error(ArgumentError, /NUL/)
      expect { runtime.listen(url, channels: [42]) }.to raise_error(TypeError, /Strings or Symbols/)
      listener = runtime.listen(url, channels: ["fine"])
      expect { listener.listen("") }.to raise_error(ArgumentError)
    end
  end

  describe "failing to connect" do
    it "names the host and never the password", :ffi do
      expect { runtime.listen("postgresql://worker:s3cret@db.internal:notaport/app", channels: ["x"]) }
        .to raise_error(Tasker::ConnectionError) { |error|
          expect(error.reason).to eq(:invalid_url)
          expect(error.message).to include("db.internal:notaport").and include("worker:***@")
          expect(error.message).not_to include("s3cret")
        }
      expect { runtime.listen("host=/nonexistent/sockets user=postgres", channels: ["x"]) }
        .to raise_error(Tasker::ConnectionError) { |error|
          expect([error.reason, error.host]).to eq([:refused, "/nonexistent/sockets"])
          expect(error.message).to include("/nonexistent/sockets")
        }
      wrong = url(user: PostgresCluster::PASSWORD_ROLE, password: "wrong s3cret")
      expect { runtime.listen(wrong, channels: ["x"]) }.to raise_error(Tasker::ConnectionError) { |error|
        expect([error.reason, error.code, error.host]).to eq([:authentication, "28P01", PostgresCluster.socket_dir])
        expect(error.message).to include(PostgresCluster.socket_dir).and include(PostgresCluster::PASSWORD_ROLE)
        expect(error.message).not_to include("s3cret")
        expect(error).to be_a(Tasker::Error)
      }
      expect { runtime.listen(url(database: "no_such_db"), channels: ["x"]) }
        .to raise_error(Tasker::ConnectionError, /3D000.*no_such_db/) { |error| expect(error.reason).to eq(:server) }
      right = runtime.listen(url(user: PostgresCluster::PASSWORD_ROLE, password: PostgresCluster::PASSWORD),
                             channels: ["x"])
      expect(right).to be_connected
      expect(right.inspect).not_to include("horse")
    end

    it "asks for a URL when there is none" do
      saved = ENV.delete("DATABASE_URL")
      expect { runtime.listen(channels: ["x"]) }.to raise_error(ArgumentError, /DATABASE_URL/)
    ensure
      ENV["DATABASE_URL"] = saved if saved
    end

    it "reads DATABASE_URL by default" do
      saved = ENV.fetch("DATABASE_URL", nil)
      ENV["DATABASE_URL"] = url
      expect(runtime.listen(channels: ["from_env"])).to be_connected
    ensure
      saved ? ENV["DATABASE_URL"] = saved : ENV.delete("DATABASE_URL")
    end
  end

  describe "backpressure" do
    it "holds a stalled burst in PostgreSQL, keeps RSS flat and loses nothing once handlers resume" do
      count = PostgresScale::BURST
      gate = PostgresGate.new
      seen = Array.new(count + 1, false)
      duplicates = 0
      delivered = 0
      notices = Queue.new
      runtime.subscribe("pg.burst") do |event|
        gate.hold_once
        n = Integer(event.payload[:payload])
        duplicates += 1 if seen[n]
        seen[n] = true
        delivered += 1
      end
      runtime.subscribe("listener.*") { |event| notices << event.name if event.name.start_with?("listener.queue_") }
      listener = runtime.listen(url, channels: ["burst"], queue_warning: 0.000_01)
      GC.start
      rss_before = rss_kb
      sql("DO $$ BEGIN PERFORM pg_notify('burst', g::text) FROM generate_series(1, #{count}) g; END $$")
      expect(eventually(within: 30) { listener.stats[:backpressured] && listener.stats[:queue_usage].to_f.positive? })
        .to be(true)
      rss_stalled = rss_kb
      sleep 3 # handlers stalled for several seconds
      stalled = listener.stats
      rss_after_stall = rss_kb
      capacities = runtime.stats.to_h { |row| [row[:channel], row[:capacity]] }
      # Both channels, the relay's batch, the dispatcher's batch, and the one in the listener's hand.
      bound = capacities["orchestration.event_listeners"] + capacities["worker.in_process_events"] + 64 +
              Tasker::Channels::Runtime::BATCH_SIZE + 1
      expect(stalled[:received]).to be <= bound
      expect(stalled[:backpressured]).to be(true)
      expect(stalled[:queue_usage]).to be_positive
      expect(rss_after_stall - rss_stalled).to be < 8 * 1024
      expect(rss_after_stall - rss_before).to be < 64 * 1024
      gate.release
      expect(eventually(within: 180, every: 0.05) { delivered == count }).to be(true)
      expect(duplicates).to eq(0)
      expect(seen.count(true)).to eq(count)
      expect(Timeout.timeout(10) { notices.pop }).to eq("listener.queue_saturated")
      expect(listener.stats).to include(received: count, backpressured: false)
      if ENV["STRESS_REPORT"] == "1"
        warn "postgres burst: #{count} notifications, read while stalled #{stalled[:received]} (bound #{bound}), " \
             "RSS before #{rss_before} kB, at backpressure #{rss_stalled} kB, " \
             "after 3 s stalled #{rss_after_stall} kB, " \
             "server queue usage #{stalled[:queue_usage]}, delivered #{delivered}, duplicates #{duplicates}"
      end
    end

    it "coalesces identical wake-ups while the handlers are behind, with exact counts" do
      runtime = small_runtime
      gate = PostgresGate.new
      events = Queue.new
      runtime.subscribe("pg.wake") do |event|
        gate.hold_once
        events << event.payload
      end
      listener = runtime.listen(url, channels: ["wake"], coalesce: true, coalesce_limit: 16)
      rounds = 500
      # Separate transactions: PostgreSQL itself folds identical pairs inside one.
      sql("DO $$ BEGIN FOR i IN 1..#{rounds} LOOP PERFORM pg_notify('wake', 'orders'); " \
          "PERFORM pg_notify('wake', 'billing'); COMMIT; END LOOP; END $$")
      # Coalescing keeps reading while the handler is stalled: everything gets read.
      expect(eventually(within: 30) { listener.stats[:received] == 2 * rounds }).to be(true)
      expect(listener.stats[:coalesce_pending]).to be <= 2
      gate.release
      payloads = []
      payloads << Timeout.timeout(10) { events.pop } until payloads.sum { |p| p[:count] } == 2 * rounds
      counts = payloads.group_by { |p| p[:payload] }.transform_values { |list| list.sum { |p| p[:count] } }
      expect(counts).to eq("orders" => rounds, "billing" => rounds)
      expect(payloads.size).to be < 2 * rounds
      stats = listener.stats
      expect(stats[:coalesced]).to eq((2 * rounds) - payloads.size)
      expect(stats[:coalesce_pending_notifications]).to eq(0)
    end
  end

  describe "losing the connection" do
    def record_listener_events(into)
      runtime.subscribe("listener.*") { |event| into << [event.name, event.payload] }
      runtime.subscribe("pg.**") { |event| into << [event.name, event.payload[:payload]] }
    end

    it "reconnects after pg_terminate_backend, re-LISTENs and says so" do
      seen = Queue.new
      record_listener_events(seen)
      listener = runtime.listen(url, channels: %w[terminated pgmq.q_x.INSERT])
      pid = listener.stats[:backend_pid]
      sql("SELECT pg_terminate_backend(#{pid})")
      disconnected = Timeout.timeout(10) { seen.pop }
      expect(disconnected[0]).to eq("listener.disconnected")
      expect(disconnected[1]).to include(code: "57P01", channels: %w[terminated pgmq.q_x.INSERT])
      reconnected = Timeout.timeout(20) { seen.pop }
      expect(reconnected[0]).to eq("listener.reconnected")
      expect(reconnected[1][:attempts]).to be >= 1
      sql(%q(SELECT pg_notify('terminated', 'after'); NOTIFY "pgmq.q_x.INSERT"))
      expect(Array.new(2) { Timeout.timeout(10) { seen.pop } })
        .to eq([%w[pg.terminated after], ["pg.pgmq.q_x.INSERT", ""]])
      expect(listener.stats).to include(disconnects: 1, reconnects: 1, connected: true)
      expect(listener.stats[:backend_pid]).not_to eq(pid)
    end

    it "survives a server restart mid-stream; what was read before it is delivered in order" do
      seen = Queue.new
      record_listener_events(seen)
      listener = runtime.listen(url, channels: ["restart"])
      sql("SELECT pg_notify('restart', g::text) FROM generate_series(1, 1000) g")
      expect(eventually { listener.stats[:received] == 1000 }).to be(true)
      PostgresCluster.restart
      before = Array.new(1000) { Timeout.timeout(10) { seen.pop } }
      expect(before.map(&:last)).to eq((1..1000).map(&:to_s))
      expect(Timeout.timeout(10) { seen.pop }.first).to eq("listener.disconnected")
      expect(Timeout.timeout(30) { seen.pop }.first).to eq("listener.reconnected")
      sql("SELECT pg_notify('restart', 'after')")
      expect(Timeout.timeout(10) { seen.pop }).to eq(%w[pg.restart after])
    end

    it "counts a payload that cannot reach it as UTF-8, reconnects and goes on" do
      seen = Queue.new
      record_listener_events(seen)
      raw = url(database: PostgresCluster::RAW_DATABASE)
      listener = runtime.listen(raw, channels: ["raw"])
      sql("SELECT pg_notify('raw', 'fine'); SELECT pg_notify('raw', convert_from('\\xff41'::bytea, 'SQL_ASCII'))",
          database: PostgresCluster::RAW_DATABASE)
      expect(Timeout.timeout(10) { seen.pop }).to eq(%w[pg.raw fine])
      disconnected = Timeout.timeout(10) { seen.pop }
      expect(disconnected[0]).to eq("listener.disconnected")
      expect(disconnected[1][:code]).to eq("22021")
      expect(Timeout.timeout(20) { seen.pop }.first).to eq("listener.reconnected")
      expect(listener.stats[:undecodable]).to eq(1)
      sql("SELECT pg_notify('raw', 'later')", database: PostgresCluster::RAW_DATABASE)
      expect(Timeout.timeout(10) { seen.pop }).to eq(%w[pg.raw later])
    end
  end

  describe "observability" do
    it "reports stats and Prometheus families for each listener", :ffi do
      listener = runtime.listen(url, channels: ["observed"])
      sql("SELECT pg_notify('observed', g::text) FROM generate_series(1, 10) g")
      expect(eventually { listener.stats[:received] == 10 && listener.stats[:queue_samples].positive? }).to be(true)
      text = runtime.metrics
      id = listener.id
      expect(text).to include(%(tasker_pg_notifications_received_total{listener="#{id}"} 10))
      expect(text).to include(%(tasker_pg_listener_connected{listener="#{id}"} 1))
      expect(text).to include(%(tasker_pg_listener_reconnects_total{listener="#{id}"} 0))
      expect(text).to match(/^tasker_pg_notification_queue_usage_ratio\{listener="#{id}"\} 0/)
      expect(text.scan("# TYPE tasker_pg_notifications_received_total counter").size).to eq(1)
      expect(listener.metrics).to include(%(tasker_pg_notifications_coalesced_total{listener="#{id}"} 0))
      expect(runtime.listeners).to eq([listener])
    end
  end

  describe "forwarding" do
    let(:payload) { { step_id: 1, "label" => :urgent, ratio: 1.0, nested: [{ "k" => nil }, :sym, -1], "" => "" } }

    it "delivers to a runtime in another process as remote events with key kinds intact" do
      receiver = File.expand_path("../support/postgres_receiver.rb", __dir__)
      command = [RbConfig.ruby, "-I", ChildRuby::LIB, receiver, url, "cross_process", "20"]
      Open3.popen3(*command) do |stdin, stdout, stderr, wait|
        stdin.close
        expect(Timeout.timeout(30) { stdout.gets }).to eq("ready\n")
        runtime.forward("step.*", to: "cross_process", url: url)
        ids = Array.new(20) { |n| runtime.publish("step.completed", payload.merge(step_id: n)) }
        stdout.binmode
        received = Marshal.load(Timeout.timeout(60) { stdout.read }) # rubocop:disable Security/MarshalLoad
        expect(wait.value).to be_success, stderr.read
        expect(received.map(&:first)).to all(eq("step.completed"))
        expect(received.map { |_, _, source, _| source }).to all(eq(:remote))
        received.each_with_index do |(_, remote_payload, _, _), n|
          origin = remote_payload.fetch(:tasker_origin)
          expect(remote_payload.except(:tasker_origin)).to eq(payload.merge(step_id: n))
          expect(origin).to include(pid: Process.pid, id: ids[n], source: :ruby)
          expect(origin[:host]).to eq(Socket.gethostname)
        end
      end
    end

    it "refuses at publish what could not be forwarded, and accepts nothing of it", :ffi do
      runtime.forward("step.*", to: "limits", url: url)
      published = runtime.event_stats[:published]
      expect { runtime.publish("step.big", { blob: "x" * 8_000 }) }.to raise_error(Tasker::PayloadTooLarge) { |error|
        expect(error.bytes).to be > 8_000
        expect(error.limit).to eq(7_999)
        expect(error.message).to include("step.big")
      }
      expect { runtime.publish("step.origin", { tasker_origin: 1 }) }.to raise_error(ArgumentError, /reserved/)
      expect(runtime.event_stats[:published]).to eq(published)
      # Events no forward matches are not limited.
      expect(runtime.publish("other.big", { blob: "x" * 8_000 })).to be_a(Integer)
    end

    it "never sends remote events on, so runtimes forwarding to each other do not echo" do
      seen = Queue.new
      runtime.subscribe("echo.*") { |event| seen << event.source }
      forwarder = runtime.forward("echo.*", to: "echo", url: url)
      runtime.listen(url, channels: ["echo"])
      runtime.publish("echo.once", { n: 1 })
      expect(Array.new(2) { Timeout.timeout(10) { seen.pop } }).to contain_exactly(:ruby, :remote)
      sleep 0.3
      expect(seen).to be_empty
      expect(forwarder.stats).to include(sent: 1, lost: 0)
    end
  end

  describe "lifecycle" do
    it "stops listeners and closes their connections at shutdown" do
      delivered = Queue.new
      runtime.subscribe("pg.closing") { |event| delivered << event.payload[:payload] }
      listener = runtime.listen(url, channels: ["closing"])
      forwarder = runtime.forward("any.*", to: "closing_forward", url: url)
      sql("SELECT pg_notify('closing', g::text) FROM generate_series(1, 500) g")
      expect(eventually { listener.stats[:events] == 500 && open_connections(listener.id) == 2 }).to be(true)
      expect(runtime.shutdown(timeout: 10)).to be(true)
      expect(Array.new(500) { delivered.pop(true) }.size).to eq(500)
      expect([listener.stopped?, listener.connected?, forwarder.stopped?]).to eq([true, false, true])
      expect(eventually do
               open_connections(listener.id).zero? && open_connections(forwarder.id, owner: :forwarder).zero?
             end).to be(true)
      expect(runtime.listeners).to be_empty
      expect { runtime.listen(url, channels: ["again"]) }.to raise_error(Tasker::ClosedError)
    end

    it "keeps a listener in the parent: a forked child starts its own" do
      seen = Queue.new
      runtime.subscribe("pg.*") { |event| seen << [Process.pid, event.payload[:payload]] }
      listener = runtime.listen(url, channels: ["forked"])
      reader, writer = IO.pipe
      child = fork do
        reader.close
        report = { inherited: runtime.listeners.size, connected: listener.connected?, stopped: listener.stopped? }
        own = runtime.listen(url, channels: ["forked_child"])
        writer.puts(JSON.generate(report.merge(own_connected: own.connected?)))
        writer.flush
        got = Timeout.timeout(10) { seen.pop }
        writer.puts(JSON.generate(got))
        writer.flush
        exit!(0)
      end
      writer.close
      report = JSON.parse(Timeout.timeout(20) { reader.gets }, symbolize_names: true)
      expect(report).to eq(inherited: 0, connected: false, stopped: true, own_connected: true)
      sql("SELECT pg_notify('forked_child', 'to the child')")
      child_got = JSON.parse(Timeout.timeout(20) { reader.gets })
      expect(child_got).to eq([child, "to the child"])
      _, status = Process.wait2(child)
      expect(status).to be_success
      sql("SELECT pg_notify('forked', 'to the parent')")
      expect(Timeout.timeout(10) { seen.pop }).to eq([Process.pid, "to the parent"])
      expect(listener).to be_connected
    end
  end

  describe "interrupts" do
    it "reach a thread waiting to connect" do
      Dir.mktmpdir("tasker-silent") do |dir|
        server = UNIXServer.new(File.join(dir, ".s.PGSQL.5432"))
        accepted = Thread.new { server.accept } # accepts and never answers
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        expect { Timeout.timeout(0.5) { runtime.listen("host=#{dir} user=postgres", channels: ["x"]) } }
          .to raise_error(Timeout::Error)
        expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 5
        accepted.kill
        server.close
      end
    end

    it "reach a thread waiting for a LISTEN while the listener is backpressured" do
      runtime = small_runtime
      gate = PostgresGate.new
      runtime.subscribe("pg.held") { |_event| gate.hold_once }
      listener = runtime.listen(url, channels: ["held"])
      sql("SELECT pg_notify('held', g::text) FROM generate_series(1, 1000) g")
      expect(eventually { listener.stats[:backpressured] }).to be(true)
      waiter = Thread.new do
        listener.listen("more")
      rescue RuntimeError => e
        e
      end
      expect(listener.listen("more", timeout: 0.2)).to be(false)
      waiter.raise(RuntimeError, "stop waiting")
      expect(Timeout.timeout(5) { waiter.value }.message).to eq("stop waiting")
      gate.release
      expect(listener.listen("more", timeout: 30)).to be(true)
      expect(listener.channels).to eq(%w[held more])
    end
  end
end
