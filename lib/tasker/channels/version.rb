# frozen_string_literal: true

module Tasker
  module Channels
    VERSION = "0.1.0"
  end
end
