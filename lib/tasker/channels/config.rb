# frozen_string_literal: true

module Tasker
  module Channels
    # The layered channel configuration (see README "Configuration"). The class and its
    # readers are defined by the extension; this file adds the Ruby-facing constructor.
    class Config
      class << self
        # Loads and validates the configuration. `environment` defaults to TASKER_ENV, then
        # "development"; `config_dir` to TASKER_CONFIG_DIR, then none (the shipped files only).
        # Raises Tasker::ConfigError listing every problem found, and ArgumentError when an
        # argument is not valid UTF-8 (the extension reads names and paths as UTF-8).
        def load(environment: nil, config_dir: nil)
          _load(*native_arguments(environment: environment, config_dir: config_dir))
        end

        # @api private: what the extension takes to load a configuration (also used by
        # Runtime.new), with names and paths normalized to UTF-8.
        def native_arguments(environment:, config_dir:)
          [utf8(environment, :environment), utf8(config_dir, :config_dir), SHIPPED_CONFIG_DIR]
        end

        private

        # ARGV and ENV strings arrive in the locale's encoding (US-ASCII or ASCII-8BIT under
        # LANG=C) even when their bytes are UTF-8; relabel or transcode them rather than let
        # the extension reject a perfectly good path.
        def utf8(value, name)
          return nil if value.nil?

          text = value.respond_to?(:to_path) ? value.to_path : value.to_s
          converted = to_utf8(text)
          return converted if converted&.valid_encoding?

          raise ArgumentError, "#{name} is not valid UTF-8: #{text.inspect}"
        end

        def to_utf8(text)
          case text.encoding
          when Encoding::UTF_8 then text
          when Encoding::BINARY, Encoding::US_ASCII then text.dup.force_encoding(Encoding::UTF_8)
          else text.encode(Encoding::UTF_8)
          end
        rescue EncodingError
          nil
        end
      end
    end
  end
end
