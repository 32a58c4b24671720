# frozen_string_literal: true

require "optparse"
require_relative "version"

module Tasker
  module Channels
    # The `tasker-channels` command. `config` shows the effective channel configuration and
    # where each value came from, or every problem in it.
    #
    #   Tasker::Channels::CLI.run(ARGV, out: $stdout, err: $stderr) # => exit status
    #
    # Exit status: 0 success, 1 invalid configuration, 2 bad usage.
    class CLI
      PROGRAM = "tasker-channels"
      USAGE = <<~TEXT.freeze
        Usage: #{PROGRAM} config [--env NAME] [--config-dir DIR] [--json]
               #{PROGRAM} --help | --version

        Commands:
          config    Show every channel's capacity, overflow policy and send timeout, the file
                    each value came from, the layers merged and the overflow_policy settings.
                    Exits 1 and lists every problem when the configuration is invalid
                    (with --json, as {"errors": [...]} on stdout).

        Options for config:
          --env NAME          environment (default: TASKER_ENV, else development)
          --config-dir DIR    directory with base/ and environments/<env>/mpsc_channels.toml
                              (default: TASKER_CONFIG_DIR, else the shipped files only)
          --json              print one JSON document instead of a table
          -h, --help          show this help
      TEXT

      SUCCESS = 0
      INVALID_CONFIG = 1
      BAD_USAGE = 2

      # Bad command-line usage: reported with the usage text, exit status 2.
      class UsageError < StandardError; end

      def self.run(argv, out: $stdout, err: $stderr)
        new(out:, err:).run(argv)
      end

      def initialize(out:, err:)
        @out = out
        @err = err
      end

      def run(argv)
        args = argv.map(&:to_s)
        return SUCCESS if global_options(args) == :done

        command = args.shift
        raise UsageError, "missing command" if command.nil?
        raise UsageError, "unknown command: #{command}" unless command == "config"

        config_command(args)
      rescue UsageError, OptionParser::ParseError => e
        usage_error(e.message)
      end

      private

      def usage_error(message)
        @err.puts("#{PROGRAM}: #{message}")
        @err.puts
        @err.print(USAGE)
        BAD_USAGE
      end

      # Handles the options before the command; :done when one of them answered already.
      def global_options(args)
        done = false
        parser = OptionParser.new do |opts|
          opts.on("-h", "--help") { done = help }
          opts.on("--version") { done = version }
        end
        parser.order!(args)
        done ? :done : nil
      end

      def help
        @out.print(USAGE)
        true
      end

      def version
        @out.puts("#{PROGRAM} #{VERSION}")
        true
      end

      def config_command(args)
        options = parse_config_options(args)
        return SUCCESS if options[:help]

        config = load_config(options)
        return INVALID_CONFIG unless config

        report = ConfigReport.new(config)
        @out.print(options[:json] ? report.json : report.table)
        SUCCESS
      end

      def parse_config_options(args)
        options = {}
        rest = config_parser(options).parse(args)
        raise UsageError, "unexpected argument: #{rest.first}" unless rest.empty? || options[:help]

        options
      end

      def config_parser(options)
        OptionParser.new do |opts|
          opts.on("-h", "--help") { options[:help] = help }
          opts.on("--env NAME") { |name| options[:environment] = option_value(name) }
          opts.on("--config-dir DIR") { |dir| options[:config_dir] = option_value(dir) }
          opts.on("--json") { options[:json] = true }
        end
      end

      # OptionParser hands `--env --json` the next word as the value; treat it as missing.
      def option_value(value)
        raise OptionParser::MissingArgument if value.start_with?("-")

        value
      end

      # The loaded configuration, or nil once every problem in it has been reported: as
      # {"errors": [problem, ...]} on stdout with --json, as text on stderr otherwise.
      def load_config(options)
        require "tasker_channels"
        Config.load(environment: options[:environment], config_dir: options[:config_dir])
      rescue ArgumentError => e
        raise UsageError, e.message
      rescue Tasker::ConfigError => e
        options[:json] ? @out.print(ConfigReport.problems_json(e.errors)) : @err.puts(e.message)
        nil
      rescue Tasker::Error => e
        @err.puts(e.message)
        nil
      end

      # The effective configuration with the file behind every value, as a table or JSON.
      class ConfigReport
        NOT_SET = "-"
        CHANNEL_HEADER = %w[CHANNEL SETTING VALUE SOURCE].freeze
        POLICY_TABLE = "overflow_policy"
        POLICY_KEYS = %w[log_warning_threshold drop_policy notice_interval_ms].freeze

        # What a problem says about itself, in this order.
        PROBLEM_FIELDS = %i[file line column key message].freeze

        def initialize(config)
          @config = config
        end

        # The problems of a configuration that did not load, as one JSON document.
        def self.problems_json(problems)
          require "json"
          errors = problems.map do |problem|
            PROBLEM_FIELDS.to_h { |field| [field, problem.is_a?(Hash) ? problem[field] : problem.public_send(field)] }
          end
          "#{JSON.pretty_generate({ errors: errors })}\n"
        end

        # One JSON document: environment, layers, channels (values and sources), overflow_policy.
        def json
          require "json"
          "#{JSON.pretty_generate(data)}\n"
        end

        def data
          {
            environment: @config.environment,
            layers: @config.layers,
            channels: @config.channels.map { |channel| channel_data(channel) },
            overflow_policy: policy_data
          }
        end

        # The same facts as #data, as aligned text tables.
        def table
          [
            "Environment: #{@config.environment}",
            "Layers (lowest first):",
            *@config.layers.each_with_index.map { |file, index| "  #{index + 1}. #{file}" },
            "",
            *align([CHANNEL_HEADER, *@config.channels.flat_map { |channel| channel_rows(channel) }]),
            "",
            "Overflow policy:",
            *align(POLICY_KEYS.map { |key| [key, *policy_row(key)] }).map { |line| "  #{line}" }
          ].join("\n") << "\n"
        end

        private

        def channel_data(channel)
          name = channel[:name]
          channel.merge(
            sources: {
              capacity: origin("#{name}.#{capacity_key(name)}"),
              overflow: origin(overflow_key(name)),
              send_timeout_ms: origin("#{name}.send_timeout_ms")
            }
          )
        end

        def policy_data
          values = POLICY_KEYS.to_h { |key| [key.to_sym, @config["#{POLICY_TABLE}.#{key}"]] }
          values.merge(sources: POLICY_KEYS.to_h { |key| [key.to_sym, origin("#{POLICY_TABLE}.#{key}")] })
        end

        # The dotted key that set a value and the file it is in; nil when the key is unset.
        def origin(dotted)
          file = @config.source(dotted)
          file && { key: dotted, file: }
        end

        def channel_rows(channel)
          name = channel[:name]
          sources = channel_data(channel)[:sources]
          [
            [name, "capacity (#{capacity_key(name)})", channel[:capacity].to_s, sources[:capacity][:file]],
            [name, "overflow", channel[:overflow], policy_source(name, sources[:overflow])],
            [name, "send_timeout_ms", (channel[:send_timeout_ms] || NOT_SET).to_s,
             sources[:send_timeout_ms]&.fetch(:file) || NOT_SET]
          ]
        end

        # The file that set a channel's policy, naming the default policy key when it applied.
        def policy_source(name, origin)
          return origin[:file] if origin[:key] == "#{name}.overflow"

          "#{origin[:file]} (via #{origin[:key]})"
        end

        def policy_row(key)
          dotted = "#{POLICY_TABLE}.#{key}"
          [@config[dotted].to_s, @config.source(dotted) || NOT_SET]
        end

        # The channel table's key that is neither `overflow` nor `send_timeout_ms`.
        def capacity_key(name)
          (@config[name].keys - %w[overflow send_timeout_ms]).first
        end

        # The dotted key that decided a channel's policy: its own, else the default policy.
        def overflow_key(name)
          own = "#{name}.overflow"
          @config.source(own) ? own : "#{POLICY_TABLE}.drop_policy"
        end

        # Left-aligns every column but the last, which is never padded.
        def align(rows)
          widths = rows.transpose[0...-1].map { |column| column.map(&:length).max }
          rows.map do |row|
            (row[0...-1].each_with_index.map { |cell, i| cell.ljust(widths[i]) } << row.last).join("  ").rstrip
          end
        end
      end
    end
  end
end
