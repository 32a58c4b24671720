# frozen_string_literal: true

module Tasker
  # PostgreSQL could not be reached or refused us: a bad URL, nothing listening there, wrong
  # credentials, an unknown database, a timeout. The message names the server (host or
  # socket directory, port, database, user) but never the password.
  class ConnectionError < Error
    # The host or Unix socket directory, when the URL named one.
    attr_reader :host
    # The SQLSTATE the server answered with ("28P01", "3D000", ...), or nil.
    attr_reader :code
    # :invalid_url, :refused, :authentication, :timeout, :server or :connection.
    attr_reader :reason

    def initialize(message = "could not connect to PostgreSQL", host: nil, code: nil, reason: nil)
      super(message)
      @host = host
      @code = code
      @reason = reason
    end
  end

  # An event too big to forward: PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more.
  # Raised by publish (before anything is accepted) for events a `forward` would send.
  class PayloadTooLarge < Error
    # The encoded size, and the most PostgreSQL takes.
    attr_reader :bytes, :limit
    # The PostgreSQL channel it was going to, when known.
    attr_reader :channel

    def initialize(message = "payload too large to forward", bytes: nil, limit: nil, channel: nil)
      super(message)
      @bytes = bytes
      @limit = limit
      @channel = channel
    end
  end
end
