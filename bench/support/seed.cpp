#include "bench/support/seed.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <cstdio>
#include <stdexcept>

#include "engine/store/sqlite_store.h"

namespace orch::bench {
namespace {
constexpr std::int64_t kRowsPerTransaction = 200000;
}

Seeder::Seeder(const std::string& path) {
  {
    auto store = SqliteStore::open(path);  // the schema, exactly as the binary creates it
    if (!store.ok()) throw std::runtime_error("seed: " + store.status().to_string());
  }
  db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE);
  db_->exec("PRAGMA journal_mode = WAL");
  db_->exec("PRAGMA synchronous = OFF");
  db_->exec("PRAGMA cache_size = -262144");  // 256 MB while building indexes
  task_ = std::make_unique<SQLite::Statement>(
      *db_,
      "INSERT INTO tasks (id, project, work_item_id, work_item_key, title, description, stage, visit, branch, "
      "head_sha, tracker_state, created_at, entered_stage_at, updated_at) "
      "VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?)");
  job_ = std::make_unique<SQLite::Statement>(
      *db_,
      "INSERT INTO jobs (task_id, visit, stage, agent, status, attempt, created_at, run_after, started_at, "
      "heartbeat_at, finished_at, project) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, "
      "(SELECT project FROM tasks WHERE id = ?1))");
  head_ = std::make_unique<SQLite::Statement>(
      *db_, "INSERT OR REPLACE INTO branch_heads (repo, branch, sha, updated_at) VALUES (?, ?, ?, ?)");
}

Seeder::~Seeder() {
  try {
    commit();
  } catch (...) {
  }
}

SQLite::Database& Seeder::db() { return *db_; }

void Seeder::begin_if_needed() {
  if (!open_tx_) {
    db_->exec("BEGIN");
    open_tx_ = true;
  }
  if (++writes_ % kRowsPerTransaction == 0) {
    db_->exec("COMMIT");
    db_->exec("BEGIN");
  }
}

void Seeder::commit() {
  if (!open_tx_) return;
  db_->exec("COMMIT");
  open_tx_ = false;
}

void Seeder::task(const SeedTask& t) {
  begin_if_needed();
  auto& s = *task_;
  s.reset();
  s.bind(1, static_cast<std::int64_t>(t.id));
  s.bind(2, t.project);
  s.bind(3, t.work_item_id);
  s.bind(4, t.work_item_key);
  s.bind(5, "Benchmark task " + t.work_item_key);
  s.bind(6, t.stage);
  s.bind(7, t.visit);
  s.bind(8, t.branch);
  s.bind(9, t.head_sha);
  s.bind(10, t.tracker_state);
  s.bind(11, static_cast<std::int64_t>(to_millis(t.created_at)));
  s.bind(12, static_cast<std::int64_t>(to_millis(t.entered_stage_at)));
  s.bind(13, static_cast<std::int64_t>(to_millis(t.updated_at)));
  s.exec();
}

void Seeder::job(const SeedJob& j) {
  begin_if_needed();
  auto& s = *job_;
  s.reset();
  s.bind(1, static_cast<std::int64_t>(j.task_id));
  s.bind(2, j.visit);
  s.bind(3, j.stage);
  s.bind(4, j.agent);
  s.bind(5, j.status);
  const std::int64_t created = to_millis(j.created_at);
  s.bind(6, created);
  s.bind(7, created);
  if (j.status == "queued") {
    s.bind(8);
    s.bind(9);
  } else {
    s.bind(8, created);
    s.bind(9, j.finished_at ? static_cast<std::int64_t>(to_millis(*j.finished_at)) : created);
  }
  if (j.finished_at)
    s.bind(10, static_cast<std::int64_t>(to_millis(*j.finished_at)));
  else
    s.bind(10);
  s.exec();
}

void Seeder::branch_head(const std::string& repo, const std::string& branch, const std::string& sha, TimePoint at) {
  begin_if_needed();
  auto& s = *head_;
  s.reset();
  s.bind(1, repo);
  s.bind(2, branch);
  s.bind(3, sha);
  s.bind(4, static_cast<std::int64_t>(to_millis(at)));
  s.exec();
}

std::string bench_branch(std::int64_t n) { return "orch/shop-" + std::to_string(n); }

std::string bench_sha(std::int64_t n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%016llx%016llx%08x", static_cast<unsigned long long>(n) * 0x9e3779b97f4a7c15ULL,
                static_cast<unsigned long long>(n), static_cast<unsigned>(n * 2654435761u));
  return std::string(buf, 40);
}

}  // namespace orch::bench
