# frozen_string_literal: true

# PostgreSQL: the specs tagged :postgres (they also run in `rake spec`), the long burst, and
# the benchmark against ruby-pg. Each starts a throwaway cluster on a Unix socket and removes
# it afterwards (spec/support/postgres_cluster.rb); bin/setup installs postgresql-15 and ruby-pg.

postgres_root = File.expand_path("..", __dir__)

namespace :spec do
  desc "Run only the PostgreSQL specs (a throwaway cluster, Unix socket only)"
  task postgres: :compile do
    sh RbConfig.ruby, "-S", "rspec", "spec/integration/postgres_spec.rb", chdir: postgres_root
  end
end

namespace :stress do
  desc "PostgreSQL burst at 1,000,000 notifications into stalled handlers, with its figures"
  task postgres: :compile do
    sh({ "PG_STRESS" => "1", "STRESS_REPORT" => "1" }, RbConfig.ruby, "-S", "rspec",
       "spec/integration/postgres_spec.rb", "-e", "stalled burst", chdir: postgres_root)
  end
end

# `rake stress` runs the long PostgreSQL burst too.
task(:stress) { Rake::Task["stress:postgres"].invoke }

namespace :bench do
  desc "PostgreSQL notifications -> handler vs ruby-pg, and RSS under a stalled 1,000,000 burst"
  task postgres: "compile:release" do
    ruby "-I", File.join(postgres_root, "lib"), File.join(postgres_root, "bench/postgres.rb")
  end
end

# `rake bench` runs the PostgreSQL benchmark after the others.
task(:bench) { Rake::Task["bench:postgres"].invoke }
