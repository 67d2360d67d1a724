// engine/store/sqlite_checkpointer.h: SqliteCheckpointer, the SQLite store's WAL checkpoints, off the commit path.
//
// SQLite's auto-checkpoint runs inside the commit that crosses its threshold: that writer copies the whole log into
// the database file and fsyncs it before it returns, and with one write lock it is often the webhook committer, so
// every sender of that batch waits 50-250 ms (the p99 of the side-by-side run, docs/adr/0022). This class does the
// copy on a thread and a connection of its own, in two phases:
// 1. beside the writers: PASSIVE checkpoints copy what the log holds while commits go on appending to it (they do
//    not block each other); repeated while the part left to copy shrinks, at most `passes` times;
// 2. between two commits: the database file is flushed and the frames appended meanwhile copied, again while those
//    copies are long, and the file flushed once more, still beside the writers; then, with this process's write gate
//    held (entered as kNext: right after the commit under way, so an acknowledging write waits behind one short copy at
//    most), one more PASSIVE checkpoint copies the few frames appended since, to the end of the log, so that the next
//    commit starts the log over. Without this phase the log never restarts under continuous ingest (every checkpoint
//    ends behind the committer: ADR 0008's measurement).
// Connections report each commit through `wal_hook()` (sqlite3_wal_hook, which replaces SQLite's auto-checkpoint);
// a commit that finds the log `in_place_pages` long checkpoints in place, as auto-checkpoint would, so that the log
// stays bounded even if the thread falls behind.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "engine/write_gate.h"

namespace orch {

class SqliteCheckpointer {
 public:
  struct Options {
    int start_pages = 4000;      // a commit that leaves the log this long wakes the thread
    int in_place_pages = 32000;  // a commit that leaves it this long checkpoints in place (the fallback)
    int finish_pages = 256;      // phase 2 starts once at most this many frames are left to copy
    int passes = 16;          // phase 1's PASSIVE checkpoints, at most, while the rest shrinks (and phase 2's flushes)
    int flushed_frames = 64;  // phase 2 flushes again while a copy beside the writers took more frames than this
  };
  struct Counts {
    std::uint64_t rounds = 0;    // the thread's checkpoints (both phases)
    std::uint64_t restarts = 0;  // rounds that copied the log to its end, so that the next commit starts it over
    std::uint64_t in_place = 0;  // commits that checkpointed in place
    std::uint64_t gated = 0;     // phase 2 runs: writers waited behind each
    double held_seconds = 0;     // phase 2's time with the gate held, in all (what writers may have waited)
    double max_held_seconds = 0;
  };

  // Opens a connection of its own to `path` (which must exist) and starts the thread. Throws SQLite::Exception.
  SqliteCheckpointer(const std::string& path, Options options, WriteGate& gate);
  ~SqliteCheckpointer();  // stops and joins the thread; a round under way finishes first
  SqliteCheckpointer(const SqliteCheckpointer&) = delete;
  SqliteCheckpointer& operator=(const SqliteCheckpointer&) = delete;

  // Installs this checkpointer as `db`'s WAL hook. The connection must not outlive it.
  void watch(sqlite3* db);
  Counts counts() const;

 private:
  static int on_commit(void* self, sqlite3* db, const char* schema, int log_pages);
  void run(std::stop_token stop);
  // One PASSIVE checkpoint on conn_: the log's frames and those copied so far (SQLite's pnLog and pnCkpt; -1 on an
  // error). left() == 0: the log is copied to its end.
  struct Progress {
    int log = -1, copied = -1;
    bool ok() const { return log >= 0 && copied >= 0; }
    int left() const { return log - copied; }
  };
  Progress checkpoint_passive();
  void count_hold(std::chrono::steady_clock::duration held);  // one phase 2 with the gate held this long

  const Options options_;
  WriteGate& gate_;
  SQLite::Database conn_;  // the thread's only; opened before it starts, closed after it ends
  const int db_fd_;        // the database file, to flush phase 1's copies before phase 2

  mutable std::mutex mu_;
  std::condition_variable_any wake_;
  bool pending_ = false;  // guarded by mu_
  std::atomic<std::uint64_t> rounds_{0}, restarts_{0}, in_place_{0}, gated_{0};
  std::atomic<std::uint64_t> held_ns_{0}, max_held_ns_{0};
  std::jthread thread_;  // last member: stopped and joined before the rest is destroyed
};

}  // namespace orch
