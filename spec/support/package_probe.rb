# frozen_string_literal: true

# Run by `rake package` with a plain ruby, outside the source tree, against the gem
# installed into an empty GEM_HOME: proves the installed gem loads and its native code runs.

require "rbconfig"
require "tasker_channels"

gem_home = ENV.fetch("GEM_HOME")
dlext = RbConfig::CONFIG.fetch("DLEXT")
location = $LOADED_FEATURES.grep(%r{tasker_channels/tasker_channels\.#{Regexp.escape(dlext)}\z}).first
abort "native extension not loaded from the installed gem" unless location&.start_with?(gem_home)

# Section names of an ELF file (nil for other formats), to tell a stripped library.
def elf_sections(path)
  File.open(path, "rb") do |file|
    header = file.read(64)
    return nil unless header&.start_with?("\x7FELF".b) && header.getbyte(4) == 2 # 64-bit

    section_offset, = header.unpack("@40Q<")
    entry_size, count, names_index = header.unpack("@58S<S<S<")
    sections = Array.new(count) do |i|
      file.seek(section_offset + (i * entry_size))
      file.read(entry_size).unpack("L<@24Q<Q<")
    end
    _, names_offset, names_size = sections.fetch(names_index)
    file.seek(names_offset)
    names = file.read(names_size)
    sections.map { |name, _, _| names[name..].unpack1("Z*") }
  end
end

# Footprint: one library in the gem's directory (RubyGems keeps one more copy in its
# extensions directory), stripped, and the whole install within the limit.
spec = Gem.loaded_specs.fetch("tasker_channels")
in_gem = Dir[File.join(spec.full_gem_path, "**", "*.#{dlext}")]
expected = [File.join(spec.full_gem_path, "lib", "tasker_channels", "tasker_channels.#{dlext}")]
abort "the installed gem should hold exactly #{expected.inspect}, holds #{in_gem.inspect}" unless in_gem == expected
elsewhere = Dir[File.join(gem_home, "**", "*.#{dlext}")] - in_gem
abort "libraries outside RubyGems' extension dir: #{elsewhere.inspect}" unless
  elsewhere.all? { |path| path.start_with?(spec.extension_dir) } && elsewhere.size <= 1
(in_gem + elsewhere).each do |library|
  sections = elf_sections(library)
  unstripped = sections & %w[.symtab .debug_info .debug_line]
  abort "#{library} is not stripped: it has #{unstripped.join(', ')}" if sections && !unstripped.empty?
end
footprint = Dir[File.join(gem_home, "**", "*")].select { |path| File.file?(path) }.sum { |path| File.size(path) }
limit = Integer(ENV.fetch("TASKER_FOOTPRINT_LIMIT"))
abort "the install takes #{footprint} bytes, more than #{limit}" if footprint > limit
library_sizes = (in_gem + elsewhere).map { |path| File.size(path) }

hierarchy = [Tasker::Backpressure, Tasker::ConfigError, Tasker::ClosedError].all? { |klass| klass < Tasker::Error }
abort "error hierarchy incomplete" unless hierarchy && Tasker::Error < StandardError

abort "native version #{Tasker::Channels::NATIVE_VERSION} != #{Tasker::Channels::VERSION}" unless
  Tasker::Channels::NATIVE_VERSION == Tasker::Channels::VERSION

config = Tasker::Channels::Config.load(environment: "production")
capacity = config["orchestration.command_processor.command_buffer_size"]
abort "shipped production config not compiled in (got #{capacity.inspect})" unless capacity == 5000

runtime = Tasker::Channels::Runtime.new(environment: "test", dispatch: :manual)
seen = []
runtime.subscribe("probe.event") { |event| seen << event.payload }
runtime.publish("probe.event", { ok: true })
runtime.shutdown(timeout: 10)
abort "event not delivered through the installed extension: #{seen.inspect}" unless seen == [{ ok: true }]

begin
  Tasker::Channels::Testing.panic!("probe")
  abort "native code did not run"
rescue Tasker::Error => e
  abort "unexpected native error: #{e.message}" unless e.message.include?("probe")
end

megabytes = ->(bytes) { (bytes / 1e6).round(2) }
puts "package probe: tasker_channels #{Tasker::Channels::VERSION} loaded from #{location}; install " \
     "#{megabytes[footprint]} MB, libraries #{library_sizes.map(&megabytes).join(' + ')} MB"
