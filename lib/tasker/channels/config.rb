# frozen_string_literal: true

module Tasker
  module Channels
    # The layered channel configuration (see README "Configuration"). The class and its
    # readers are defined by the extension; this file adds the Ruby-facing constructor.
    class Config
      # Loads and validates the configuration. `environment` defaults to TASKER_ENV, then
      # "development"; `config_dir` to TASKER_CONFIG_DIR, then none (the shipped files only).
      # Raises Tasker::ConfigError listing every problem found.
      def self.load(environment: nil, config_dir: nil)
        _load(environment&.to_s, config_dir&.to_s, SHIPPED_CONFIG_DIR)
      end
    end
  end
end
