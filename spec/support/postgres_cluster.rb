# frozen_string_literal: true

require "fileutils"
require "open3"
require "tmpdir"

# A throwaway PostgreSQL cluster: initdb into a temp dir, started on a Unix socket only
# (listen_addresses='', no TCP), fsync off, removed by `stop`. As root the server runs as
# the `postgres` user, who owns the cluster's directories. The specs (spec/support/postgres.rb)
# and the benchmark (bench/postgres.rb) use it.
#
# Binaries: TASKER_PG_BIN, else the newest /usr/lib/postgresql/*/bin (bin/setup installs
# Debian's postgresql-15).
module PostgresCluster
  PASSWORD_ROLE = "needs_password"
  PASSWORD = "correct horse"
  RAW_DATABASE = "rawbytes"

  class << self
    attr_reader :socket_dir

    def bin
      @bin ||= ENV.fetch("TASKER_PG_BIN") { newest_debian_bin }
    end

    def newest_debian_bin
      installed = Dir["/usr/lib/postgresql/*/bin"].select { |dir| File.exist?(File.join(dir, "initdb")) }
      installed.max_by { |dir| dir[%r{/(\d+)/bin}, 1].to_i }
    end

    def available?
      !bin.nil? && File.executable?(File.join(bin, "initdb"))
    end

    def running?
      !@root.nil?
    end

    def ensure_started
      return if running?
      raise "PostgreSQL binaries not found (set TASKER_PG_BIN or run bin/setup)" unless available?

      @root = Dir.mktmpdir("tasker-pg")
      @data = File.join(@root, "data")
      @socket_dir = File.join(@root, "sock")
      FileUtils.mkdir_p([@data, @socket_dir])
      FileUtils.chown_R("postgres", "postgres", @root) if root_user?
      owner_run(File.join(bin, "initdb"), "-D", @data, "-A", "trust", "-E", "UTF8", "--no-sync", "-U", "postgres")
      hba = File.join(@data, "pg_hba.conf")
      File.write(hba, "local all #{PASSWORD_ROLE} scram-sha-256\n#{File.read(hba)}")
      start_server
      sql("CREATE ROLE #{PASSWORD_ROLE} LOGIN PASSWORD '#{PASSWORD}'")
      sql("CREATE DATABASE #{RAW_DATABASE} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    end

    def stop
      return unless running?

      owner_run(File.join(bin, "pg_ctl"), "-D", @data, "-m", "immediate", "-w", "stop", allow_failure: true)
      FileUtils.remove_entry(@root)
      @root = nil
    end

    # Stops the server (fast: connections are told and closed), then starts it again.
    def restart
      owner_run(File.join(bin, "pg_ctl"), "-D", @data, "-m", "fast", "-w", "stop")
      start_server
    end

    def url(database: "postgres", user: "postgres", password: nil)
      text = "host=#{@socket_dir} user=#{user} dbname=#{database}"
      password ? "#{text} password='#{password}'" : text
    end

    # libpq's URL form of the same target (what ruby-pg and other processes take).
    def libpq_url(database: "postgres", user: "postgres")
      "postgresql://#{user}@/#{database}?host=#{@socket_dir}"
    end

    # Runs SQL through psql; returns the rows' first column.
    def sql(statement, database: "postgres")
      out, err, status = Open3.capture3(File.join(bin, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                                        "-h", @socket_dir, "-U", "postgres", "-d", database, "-c", statement,
                                        close_others: true)
      raise "psql failed: #{statement}\n#{err}" unless status.success?

      out.lines.map(&:chomp)
    end

    private

    def root_user?
      Process.uid.zero?
    end

    def start_server
      options = "-k #{@socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
      owner_run(File.join(bin, "pg_ctl"), "-D", @data, "-l", File.join(@root, "server.log"), "-w", "-t", "60",
                "-o", options, "start")
    end

    # Inherited descriptors (the test runner's pipes, a parent's lock fds) must not reach the
    # server, or whoever waits for them to close waits forever.
    def owner_run(*command, allow_failure: false)
      command = ["runuser", "-u", "postgres", "--", *command] if root_user?
      out, status = Open3.capture2e(*command, in: File::NULL, close_others: true)
      return out if status.success? || allow_failure

      raise "#{command.join(' ')} failed:\n#{out}"
    end
  end
end

at_exit { PostgresCluster.stop }
