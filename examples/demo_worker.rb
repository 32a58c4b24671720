# frozen_string_literal: true

# The tasker_channels demo worker: a burst of events several times the size of the FFI
# buffer, a deliberately slow handler, backpressure rescued and retried with backoff, live
# channel usage, then stats, metrics, a graceful shutdown and a summary that must show
# nothing lost. Run it with `bin/demo` (options: --help).

require "optparse"
require "tasker_channels"

module Demo
  # Parses the command line into a Hash of options.
  module Options
    def self.parse(argv)
      options = { events: nil, environment: nil, config_dir: nil }
      parser = OptionParser.new do |opts|
        opts.banner = "Usage: bin/demo [--events N] [--env NAME] [--config-dir DIR]"
        opts.on("--events N", Integer, "events to publish (default: 5 x shared.ffi capacity)") do |n|
          raise OptionParser::InvalidArgument, "--events must be positive" unless n.positive?

          options[:events] = n
        end
        opts.on("--env NAME", "configuration environment (default: TASKER_ENV or development)") do |name|
          options[:environment] = name
        end
        opts.on("--config-dir DIR", "directory with base/ and environments/ overrides") do |dir|
          options[:config_dir] = dir
        end
        opts.on("-h", "--help", "show this help") do
          puts opts
          exit 0
        end
      end
      parser.parse!(argv)
      options
    rescue OptionParser::ParseError => e
      warn "demo: #{e.message}\n#{parser}"
      exit 2
    end
  end

  # Draws one line of per-channel usage bars: redrawn in place on a terminal, printed as
  # plain lines otherwise (so logs and CI output stay readable).
  class Progress
    WATCHED = %w[shared.ffi worker.in_process_events shared.event_publisher].freeze
    BAR = 12

    def initialize(runtime, counters, out: $stdout)
      @runtime = runtime
      @counters = counters
      @out = out
      @tty = out.tty?
    end

    def start
      @thread = Thread.new do
        loop do
          draw
          sleep(@tty ? 0.1 : 0.5)
        end
      end
    end

    def stop
      @thread&.kill&.join
      draw
      @out.puts if @tty
    end

    private

    def draw
      line = "#{counts}  #{bars}"
      if @tty
        @out.print("\r#{line}\e[K")
      else
        @out.puts(line)
      end
      @out.flush
    end

    def counts
      c = @counters
      "published #{c[:published]}/#{c[:target]} refused #{c[:refused]} delivered #{c[:delivered]}"
    end

    def bars
      rows = @runtime.stats.select { |row| WATCHED.include?(row[:channel]) }
      rows.map do |row|
        filled = (row[:usage_percent] / 100.0 * BAR).round.clamp(0, BAR)
        format("%<name>s [%<bar>s] %<pct>3d%%", name: row[:channel], bar: ("#" * filled).ljust(BAR, "."),
                                                pct: row[:usage_percent].round)
      end.join("  ")
    end
  end

  # The worker itself.
  class Worker
    SLOW_HANDLER_SECONDS = 0.0002
    MAX_BACKOFF = 0.05

    def initialize(options)
      @runtime = Tasker::Channels::Runtime.new(environment: options[:environment], config_dir: options[:config_dir])
      ffi = @runtime.config.channels.find { |channel| channel[:name] == "shared.ffi" }
      @counters = Hash.new(0)
      @counters[:target] = options[:events] || (ffi[:capacity] * 5)
      @lock = Mutex.new
      @received = []
    end

    def run
      subscribe
      progress = Progress.new(@runtime, @counters)
      progress.start
      publish_burst
      clean = @runtime.shutdown(timeout: 60)
      progress.stop
      report(clean)
    end

    private

    def subscribe
      @runtime.subscribe("order.*") do |event|
        @lock.synchronize { @received << event.payload[:seq] }
        @counters[:delivered] += 1
      end
      # Deliberately slow: this is what fills the buffers and makes publish push back.
      @runtime.subscribe("order.shipped") { sleep SLOW_HANDLER_SECONDS }
      @runtime.subscribe("channel.*") { |event| @counters[event.name] += 1 }
      @runtime.on_error { |error, event| warn "demo: handler for #{event.name} failed: #{error.message}" }
    end

    def publish_burst
      @counters[:target].times do |seq|
        name = seq.even? ? "order.placed" : "order.shipped"
        publish_with_backoff(name, { seq: seq, customer: "c#{seq % 97}", total: seq * 1.5 })
      end
    end

    def publish_with_backoff(name, payload)
      backoff = 0.001
      begin
        @runtime.publish(name, payload)
        @counters[:published] += 1
      rescue Tasker::Backpressure => e
        @counters[:refused] += 1
        @last_refusal = e
        sleep backoff
        backoff = [backoff * 2, MAX_BACKOFF].min
        retry
      end
    end

    def report(clean)
      puts
      print_stats
      puts
      print_metrics
      puts
      print_summary(clean)
    end

    STATS_COLUMNS = %i[channel capacity high_water_mark policy sent received dropped rejected blocked
                       send_wait_p99_us].freeze

    def print_stats
      table = [STATS_COLUMNS.map(&:to_s)] + @runtime.stats.map { |row| STATS_COLUMNS.map { |c| row[c].to_s } }
      widths = table.transpose.map { |cells| cells.map(&:size).max }
      table.each { |cells| puts cells.zip(widths).map { |cell, width| cell.ljust(width) }.join("  ").rstrip }
    end

    def print_metrics
      puts "Prometheus excerpt (shared.ffi):"
      @runtime.metrics.each_line do |line|
        next unless line.include?('channel="shared.ffi"') && !line.include?("_bucket")

        puts "  #{line}"
      end
    end

    def print_summary(clean)
      delivered = @received.size
      lost = @counters[:published] - delivered
      in_order = @received == @received.sort
      puts "Summary"
      puts "  published:                #{@counters[:published]}"
      puts "  refused by backpressure:  #{@counters[:refused]}#{refusal_detail}"
      puts "  delivered:                #{delivered} (in order: #{in_order})"
      puts "  channel.* events seen:    #{channel_events}"
      puts "  graceful shutdown:        #{clean}"
      puts "  lost:                     #{lost}"
      exit(lost.zero? && clean ? 0 : 1)
    end

    def refusal_detail
      return "" unless @last_refusal

      " (#{@last_refusal.channel}, capacity #{@last_refusal.capacity}, policy #{@last_refusal.policy})"
    end

    def channel_events
      names = @counters.keys.grep(/\Achannel\./)
      names.empty? ? "none" : names.sort.map { |name| "#{name} x#{@counters[name]}" }.join(", ")
    end
  end
end

Demo::Worker.new(Demo::Options.parse(ARGV)).run
