# frozen_string_literal: true

require "fileutils"
require "tmpdir"

# Temporary config dirs and environment variables for configuration specs.
module ConfigDirHelpers
  CONFIG_VARS = %w[TASKER_ENV TASKER_CONFIG_DIR].freeze
  # Every configured channel, in the order Config#channels lists them (docs/design.md §3).
  def channel_names
    ChannelConfigHelpers::CHANNEL_NAMES
  end

  # Creates a config dir holding `files` ({"base/mpsc_channels.toml" => "toml text"}), yields
  # its path and removes it afterwards.
  def with_config_dir(files = {})
    Dir.mktmpdir("tasker-config") do |dir|
      files.each { |relative, text| write_config_file(dir, relative, text) }
      yield dir
    end
  end

  def write_config_file(dir, relative, text)
    path = File.join(dir, relative)
    FileUtils.mkdir_p(File.dirname(path))
    File.binwrite(path, text)
    path
  end

  # Runs the block with the given environment variables set (nil unsets one), restoring every
  # one of them afterwards, even when the block fails.
  def with_env(vars)
    saved = vars.keys.to_h { |name| [name, ENV.fetch(name, nil)] }
    begin
      vars.each { |name, value| set_env(name, value) }
      yield
    ensure
      saved.each { |name, value| set_env(name, value) }
    end
  end

  # Runs the block with neither TASKER_ENV nor TASKER_CONFIG_DIR set.
  def without_config_env(&)
    with_env(CONFIG_VARS.to_h { |name| [name, nil] }, &)
  end

  # The path of a shipped file, as layers and sources name it.
  def shipped(relative)
    File.join(Tasker::Channels::SHIPPED_CONFIG_DIR, relative)
  end

  # Loads and returns the Tasker::ConfigError raised; fails the example if none is.
  def config_error(**options)
    Tasker::Channels::Config.load(**options)
  rescue Tasker::ConfigError => e
    e
  else
    raise RSpec::Expectations::ExpectationNotMetError, "expected Tasker::ConfigError for #{options.inspect}"
  end

  private

  def set_env(name, value)
    value.nil? ? ENV.delete(name) : ENV[name] = value
  end
end
