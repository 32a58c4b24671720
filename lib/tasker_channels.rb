# frozen_string_literal: true

require_relative "tasker/channels/version"
require "tasker_channels/tasker_channels"
require_relative "tasker/channels"
