# frozen_string_literal: true

require_relative "postgres_cluster"

# The examples tagged :postgres get a throwaway cluster (see postgres_cluster.rb), started
# before the first of them and stopped after the suite. Without PostgreSQL binaries they fail
# with a note saying so: the suite is meant to run them (bin/setup installs them).
RSpec.configure do |config|
  config.before(:context, :postgres) { PostgresCluster.ensure_started }
  config.after(:suite) { PostgresCluster.stop }
end
