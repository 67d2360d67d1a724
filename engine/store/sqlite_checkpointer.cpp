// engine/store/sqlite_checkpointer.cpp: SqliteCheckpointer (see the header for the two phases).
#include "engine/store/sqlite_checkpointer.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <system_error>
#include <utility>

#include "engine/thread_name.h"

namespace orch {

SqliteCheckpointer::SqliteCheckpointer(const std::string& path, Options options, WriteGate& gate)
    : options_(options),
      gate_(gate),
      conn_(path, SQLite::OPEN_READWRITE | SQLite::OPEN_NOMUTEX),
      db_fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (db_fd_ < 0) throw std::system_error(errno, std::generic_category(), "open " + path);
  // FULL, as every other connection of the store: the database file is fsynced before the log may start over.
  conn_.exec("PRAGMA synchronous = FULL");
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

SqliteCheckpointer::~SqliteCheckpointer() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
  ::close(db_fd_);
}

void SqliteCheckpointer::watch(sqlite3* db) { sqlite3_wal_hook(db, &SqliteCheckpointer::on_commit, this); }

SqliteCheckpointer::Counts SqliteCheckpointer::counts() const {
  return {.rounds = rounds_.load(),
          .restarts = restarts_.load(),
          .in_place = in_place_.load(),
          .gated = gated_.load(),
          .held_seconds = static_cast<double>(held_ns_.load()) / 1e9,
          .max_held_seconds = static_cast<double>(max_held_ns_.load()) / 1e9};
}

int SqliteCheckpointer::on_commit(void* self, sqlite3* db, const char* schema, int log_pages) {
  auto* c = static_cast<SqliteCheckpointer*>(self);
  if (log_pages >= c->options_.in_place_pages) {
    // The thread fell behind: this commit copies the log itself, as SQLite's auto-checkpoint would. A checkpoint
    // under way elsewhere makes this one SQLITE_BUSY, which is not the commit's error: it already succeeded.
    if (sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) == SQLITE_OK)
      c->in_place_.fetch_add(1);
  } else if (log_pages >= c->options_.start_pages) {
    {
      std::lock_guard lock(c->mu_);
      c->pending_ = true;
    }
    c->wake_.notify_one();
  }
  return SQLITE_OK;
}

SqliteCheckpointer::Progress SqliteCheckpointer::checkpoint_passive() {
  // A connection that has not read the database yet has not opened its log either: its checkpoint would find no
  // log and copy nothing (pnLog = -1). A read first.
  sqlite3_exec(conn_.getHandle(), "SELECT 1 FROM sqlite_master LIMIT 1", nullptr, nullptr, nullptr);
  Progress p;
  if (sqlite3_wal_checkpoint_v2(conn_.getHandle(), "main", SQLITE_CHECKPOINT_PASSIVE, &p.log, &p.copied) != SQLITE_OK)
    return {};
  return p;
}

void SqliteCheckpointer::run(std::stop_token stop) {
  name_this_thread("wal-checkpoint");
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(mu_);
      if (!wake_.wait(lock, stop, [&] { return pending_; })) return;
      pending_ = false;
    }
    rounds_.fetch_add(1);
    // Phase 1, beside the writers.
    Progress p = checkpoint_passive();
    for (int pass = 1; pass < options_.passes && p.ok() && p.left() > options_.finish_pages; ++pass) {
      const int before = p.left();
      p = checkpoint_passive();
      if (p.ok() && p.left() >= before) break;  // not catching up: the commits' own threshold is the fallback
    }
    // Phase 2, between two commits: only once the rest is short, so that no writer waits behind a long copy (if it
    // is still long, the next commit wakes the thread again). Even when phase 1 left nothing to copy: the log starts
    // over only for a writer whose transaction *begins* with every frame copied, and a commit may have begun before
    // phase 1 ended; with the gate held none has.
    if (p.ok() && p.left() <= options_.finish_pages) {
      // SQLite syncs the database file only when a checkpoint reaches the end of the log, so every page phase 1
      // copied is still dirty, and so are the pages of the frames appended meanwhile. Beside the writers: flush,
      // copy what was appended during the flush, and again while those copies are long (each flush is shorter than
      // the last); then flush the last copy. The gated copy is left what one short flush's time appended, and its
      // sync a few pages: what writers wait for is that, not phase 1's flush (ADR 0022 has the measurements).
      bool copied = true;
      for (int pass = 0; pass < options_.passes; ++pass) {
        ::fdatasync(db_fd_);
        const Progress next = checkpoint_passive();
        if (!next.ok()) {
          copied = false;
          break;
        }
        const int appended = next.copied - p.copied;  // negative if the log started over meanwhile
        p = next;
        if (appended <= options_.flushed_frames) break;
      }
      if (!copied) continue;  // the checkpoint failed (a commit's in-place one under way): the next commit wakes us
      ::fdatasync(db_fd_);
      // kNext: in as soon as the commit under way ends. A kNormal writer waits out max_yield (20 ms) under load,
      // and the log grows by what those 20 ms appended, which the gated copy then has to copy and sync.
      WriteGate::Hold hold = gate_.enter(WriteGate::Priority::kNext);
      const auto held = std::chrono::steady_clock::now();
      if (const Progress last = checkpoint_passive(); last.ok() && last.left() == 0) restarts_.fetch_add(1);
      count_hold(std::chrono::steady_clock::now() - held);
    }
  }
}

void SqliteCheckpointer::count_hold(std::chrono::steady_clock::duration held) {
  const auto ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(held).count());
  gated_.fetch_add(1);
  held_ns_.fetch_add(ns);
  std::uint64_t max = max_held_ns_.load();
  while (ns > max && !max_held_ns_.compare_exchange_weak(max, ns)) {
  }
}

}  // namespace orch
