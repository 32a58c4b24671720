# frozen_string_literal: true

require_relative "tasker/channels/version"
# The extension looks these classes up when it loads; it defines none of its own.
require_relative "tasker/errors"
require "tasker_channels/tasker_channels"
require_relative "tasker/channels"
