# frozen_string_literal: true

module Tasker
  # Bounded, monitored channels and the in-process event bus of a Tasker worker.
  module Channels
    # The gem's shipped configuration folder (base plus environment overrides).
    SHIPPED_CONFIG_DIR = File.expand_path("../../config/tasker", __dir__)
  end
end
