# frozen_string_literal: true

module Tasker
  # Errors that carry named details besides their message: `new(message, **details)` with a
  # reader for each detail, nil when not given. The extension raises them that way, and specs
  # can build the same errors to exercise a rescue path.
  module ErrorDetails
    private

    def details(default_message, *names)
      attr_reader(*names)

      define_method(:initialize) do |message = default_message, **given|
        unknown = given.keys - names
        unless unknown.empty?
          raise ArgumentError, "unknown keyword#{'s' if unknown.size > 1}: #{unknown.map(&:inspect).join(', ')}"
        end

        super(message)
        names.each { |name| instance_variable_set(:"@#{name}", given[name]) }
      end
    end
  end
  private_constant :ErrorDetails

  # PostgreSQL could not be reached or refused us: a bad URL, nothing listening there, wrong
  # credentials, an unknown database, a timeout. The message names the server (host or
  # socket directory, port, database, user) but never the password.
  #
  # `host`: the host or Unix socket directory, when the URL named one. `code`: the SQLSTATE
  # the server answered with ("28P01", "3D000", ...), or nil. `reason`: :invalid_url,
  # :refused, :authentication, :timeout, :server or :connection.
  class ConnectionError < Error
    extend ErrorDetails

    details "could not connect to PostgreSQL", :host, :code, :reason
  end

  # An event too big to forward: PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more.
  # Raised by publish (before anything is accepted) for events a `forward` would send.
  #
  # `bytes`: the encoded size; `limit`: the most PostgreSQL takes; `channel`: the PostgreSQL
  # channel it was going to, when known.
  class PayloadTooLarge < Error
    extend ErrorDetails

    details "payload too large to forward", :bytes, :limit, :channel
  end
end
