// bench/support/seed.h: fast set-up of benchmark databases. The schema comes from SqliteStore::open (so it is always
// the binary's own, migrated); the rows go in through one SQLiteCpp connection in large transactions with
// synchronous = OFF, which is fine for set-up and never used for anything measured.
// Not thread-safe: one Seeder per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/clock.h"

namespace SQLite {
class Database;
class Statement;
}  // namespace SQLite

namespace orch::bench {

struct SeedTask {
  std::int64_t id = 0;
  std::string project = "shop";
  std::string work_item_id;
  std::string work_item_key;
  std::string stage = "development";
  int visit = 3;  // created -> analysis -> development
  std::string branch;
  std::string head_sha;
  std::string tracker_state;
  TimePoint created_at{};
  TimePoint entered_stage_at{};
  TimePoint updated_at{};
};

struct SeedJob {
  std::int64_t task_id = 0;
  int visit = 3;
  std::string stage = "development";
  std::string agent = "developer";
  std::string status = "succeeded";  // queued, running, succeeded, failed
  TimePoint created_at{};
  std::optional<TimePoint> finished_at;
};

class Seeder {
 public:
  // Creates (or migrates) the database at `path` through SqliteStore::open, then opens the bulk connection.
  explicit Seeder(const std::string& path);
  ~Seeder();
  Seeder(const Seeder&) = delete;
  Seeder& operator=(const Seeder&) = delete;

  void task(const SeedTask& t);
  void job(const SeedJob& j);
  void branch_head(const std::string& repo, const std::string& branch, const std::string& sha, TimePoint at);
  void commit();  // ends the current transaction (one is begun on the first write after a commit)
  SQLite::Database& db();

 private:
  void begin_if_needed();
  std::unique_ptr<SQLite::Database> db_;
  std::unique_ptr<SQLite::Statement> task_, job_, head_;
  bool open_tx_ = false;
  std::int64_t writes_ = 0;
};

// Branch and sha of the n-th benchmark task: "orch/shop-<n>" and a 40-hex sha derived from n.
std::string bench_branch(std::int64_t n);
std::string bench_sha(std::int64_t n);

}  // namespace orch::bench
