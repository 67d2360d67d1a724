// bench/ceiling.cpp: benchmark 2, the ceiling. The raw SQLite rate of the durable unit of work behind one webhook
// (dedup claim + insert of the delivery, in an IMMEDIATE transaction, WAL, synchronous = FULL as SqliteStore sets
// it for the server) from one thread, no HTTP: SqliteStore::insert_delivery (one delivery per transaction) and
// SqliteStore::insert_deliveries (group commit: one transaction per batch), each on a fresh file. Bodies, digests
// and lanes are the ingest benchmark's, prepared before the clock starts.
//
//   bench_ceiling --work DIR [--single 3000] [--batches 16,64,512] [--batch-total 30000] [--whatif 64]
//       [--out results.jsonl]
//
// --whatif B: the same unit of work, B deliveries per transaction, on a connection of the benchmark's own (the
// store's schema, pragmas and statements, copied from engine/store/sqlite_store.cpp insert_one), once as the store does
// it and once per changed knob, with the pages each commit writes (SQLITE_DBSTATUS_CACHE_WRITE): evidence for the
// recommendations in RESULTS.md, not something the server does.
#include <filesystem>
#include <stdexcept>
#include <iostream>

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include "bench/support/bench_util.h"
#include "engine/store/sqlite_store.h"
#include "webhooks/signature.h"

namespace orch::bench {
namespace {

std::vector<NewDelivery> deliveries(std::uint64_t first, std::size_t n) {
  PlaneBodySpec spec;
  spec.project_id = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";
  const TimePoint now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  std::vector<NewDelivery> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    NewDelivery& d = out[i];
    d.source = Source::kPlane;
    d.delivery_id = bench_uuid(3, first + i);
    d.event = "issue";
    d.body = plane_issue_body(spec, first + i, now + std::chrono::microseconds(i));
    d.body_digest = sha256_hex(d.body);
    d.received_at = now;
    d.lane = "project:shop";
  }
  return out;
}

std::unique_ptr<SqliteStore> fresh_store(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  auto s = SqliteStore::open(path);
  if (!s.ok()) throw std::runtime_error(s.status().to_string());
  return std::move(s).value();
}

struct WhatIf {
  double rps = 0, pages_per_commit = 0, commit_ms = 0;
};

// insert_one of engine/store/sqlite_store.cpp, statement for statement, B deliveries per BEGIN IMMEDIATE ... COMMIT.
WhatIf whatif(const std::string& path, const std::vector<NewDelivery>& ds, std::size_t batch,
              const std::vector<std::string>& setup) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  for (const std::string& sql : setup)  // "before:" statements run on the empty file, before the schema exists
    if (sql.rfind("before:", 0) == 0) {
      SQLite::Database fresh(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      fresh.exec(sql.substr(7));
      fresh.exec("VACUUM");
    }
  {
    auto s = SqliteStore::open(path);
    if (!s.ok()) throw std::runtime_error(s.status().to_string());
  }
  SQLite::Database db(path, SQLite::OPEN_READWRITE);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA foreign_keys = ON");
  db.exec("PRAGMA synchronous = FULL");
  db.exec("PRAGMA wal_autocheckpoint = 32000");  // SqliteStoreOptions::checkpoint_pages
  for (const std::string& sql : setup)
    if (sql.rfind("before:", 0) != 0) db.exec(sql);
  SQLite::Statement digest(db, "SELECT seq FROM deliveries WHERE source = ? AND body_digest = ? ORDER BY seq LIMIT 1");
  SQLite::Statement ins(db,
                        "INSERT INTO deliveries (source, delivery_id, event, body_digest, body, received_at, lane, "
                        "run_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6) ON CONFLICT (source, delivery_id) DO "
                        "NOTHING RETURNING seq");
  SQLite::Statement begin(db, "BEGIN IMMEDIATE"), commit(db, "COMMIT");
  int cur = 0, hi = 0;
  sqlite3_db_status(db.getHandle(), SQLITE_DBSTATUS_CACHE_WRITE, &cur, &hi, 1);
  std::size_t commits = 0;
  const std::int64_t t0 = now_ns();
  for (std::size_t i = 0; i < ds.size(); i += batch) {
    begin.reset();
    begin.exec();
    for (std::size_t k = i; k < std::min(ds.size(), i + batch); ++k) {
      const NewDelivery& d = ds[k];
      digest.reset();
      digest.bind(1, "plane");
      digest.bind(2, d.body_digest);
      if (digest.executeStep()) throw std::runtime_error("what-if: unexpected digest duplicate");
      ins.reset();
      ins.bind(1, "plane");
      ins.bind(2, d.delivery_id);
      ins.bind(3, d.event);
      ins.bind(4, d.body_digest);
      ins.bind(5, static_cast<const void*>(d.body.data()), static_cast<int>(d.body.size()));
      ins.bind(6, static_cast<std::int64_t>(to_millis(d.received_at)));
      ins.bind(7, d.lane);
      if (!ins.executeStep()) throw std::runtime_error("what-if: unexpected id duplicate");
    }
    digest.reset();
    ins.reset();
    commit.reset();
    commit.exec();
    ++commits;
  }
  const double sec = seconds_since(t0);
  sqlite3_db_status(db.getHandle(), SQLITE_DBSTATUS_CACHE_WRITE, &cur, &hi, 0);
  WhatIf w;
  w.rps = static_cast<double>(ds.size()) / sec;
  w.pages_per_commit = static_cast<double>(cur) / static_cast<double>(commits);
  w.commit_ms = sec * 1000 / static_cast<double>(commits);
  return w;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  using namespace orch;
  using namespace orch::bench;
  try {
    Flags f(argc, argv);
    const std::string work = f.get("work", "bench-work");
    std::filesystem::create_directories(work);
    const std::size_t single = static_cast<std::size_t>(f.num("single", 3000));
    const std::size_t batch_total = static_cast<std::size_t>(f.num("batch-total", 30000));
    const auto batches = f.nums("batches", {16, 64, 512});
    nlohmann::json metrics = nlohmann::json::object();
    bool ok = true;

    {
      auto ds = deliveries(0, single);
      auto store = fresh_store(work + "/ceiling-single.db");
      const std::int64_t t0 = now_ns();
      for (const NewDelivery& d : ds) {
        auto r = store->insert_delivery(d, /*dedup_on_digest=*/true);
        if (!r.ok() || r.value().duplicate) {
          std::cerr << "insert_delivery: " << r.status().to_string() << "\n";
          ok = false;
          break;
        }
      }
      const double s = seconds_since(t0);
      metrics["single_rps"] = static_cast<double>(single) / s;
      metrics["single_commit_ms"] = s * 1000 / static_cast<double>(single);
      std::printf("ceiling single-row transactions: %8.0f deliveries/s (%.3f ms per commit, %zu deliveries)\n",
                  static_cast<double>(single) / s, s * 1000 / static_cast<double>(single), single);
    }
    for (long long b : batches) {
      auto ds = deliveries(1000000000ULL * static_cast<std::uint64_t>(b), batch_total);
      auto store = fresh_store(work + "/ceiling-batch.db");
      std::vector<bool> dedup(static_cast<std::size_t>(b), true);
      const std::int64_t t0 = now_ns();
      std::size_t commits = 0;
      for (std::size_t i = 0; i < ds.size(); i += static_cast<std::size_t>(b)) {
        const std::size_t end = std::min(ds.size(), i + static_cast<std::size_t>(b));
        std::vector<NewDelivery> batch(ds.begin() + static_cast<std::ptrdiff_t>(i),
                                       ds.begin() + static_cast<std::ptrdiff_t>(end));
        dedup.resize(batch.size(), true);
        auto r = store->insert_deliveries(batch, dedup);
        ++commits;
        if (!r.ok()) {
          std::cerr << "insert_deliveries: " << r.status().to_string() << "\n";
          ok = false;
          break;
        }
      }
      const double s = seconds_since(t0);
      const std::string key = "batch" + std::to_string(b) + "_rps";
      metrics[key] = static_cast<double>(ds.size()) / s;
      metrics["batch" + std::to_string(b) + "_commit_ms"] = s * 1000 / static_cast<double>(commits);
      std::printf("ceiling group commit, %4lld per transaction: %8.0f deliveries/s (%.3f ms per commit)\n", b,
                  static_cast<double>(ds.size()) / s, s * 1000 / static_cast<double>(commits));
    }
    if (f.has("whatif")) {
      const std::size_t b = static_cast<std::size_t>(f.num("whatif", 64));
      const std::vector<std::pair<std::string, std::vector<std::string>>> variants = {
          {"as_is", {}},
          // (Schema 3 dropped deliveries_delivery_id after the first runs here showed it cost 1.4x.)
          // No checkpoint during the run, and smaller thresholds than the store's 32 000 pages.
          {"no_autocheckpoint", {"PRAGMA wal_autocheckpoint = 0"}},
          {"autocheckpoint_1000", {"PRAGMA wal_autocheckpoint = 1000"}},  // SQLite's default
          {"autocheckpoint_4000", {"PRAGMA wal_autocheckpoint = 4000"}},  // the store's until 2026-12-03
          // Smaller pages: a random index insert dirties a 1 KB page instead of a 4 KB one (the body overflows).
          {"page_size_1024", {"before:PRAGMA page_size = 1024"}},
          {"page_size_2048", {"before:PRAGMA page_size = 2048"}},
          // A page cache that holds the random-key indexes (SQLite's default is 2 MB per connection).
          {"cache_size_32mb", {"PRAGMA cache_size = -32768"}},
          // Reads through a shared mapping of the file instead of copies into the connection's cache.
          {"mmap_256mb", {"PRAGMA mmap_size = 268435456"}},
          // Not durable: for scale only (what fsync costs).
          {"sync_normal_not_durable", {"PRAGMA synchronous = NORMAL"}},
      };
      auto ds = deliveries(2000000000ULL, batch_total);
      for (const auto& [name, setup] : variants) {
        WhatIf w = whatif(work + "/ceiling-whatif.db", ds, b, setup);
        metrics["whatif_" + name + "_rps"] = w.rps;
        metrics["whatif_" + name + "_pages_per_commit"] = w.pages_per_commit;
        std::printf(
            "what-if, %zu per transaction, %-26s %8.0f deliveries/s, %6.1f pages written per commit (%.2f "
            "per delivery), %.3f ms per commit\n",
            b, name.c_str(), w.rps, w.pages_per_commit, w.pages_per_commit / static_cast<double>(b), w.commit_ms);
      }
      for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(work + "/ceiling-whatif.db" + suffix);
    }
    for (const char* name : {"/ceiling-single.db", "/ceiling-batch.db"})
      for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(work + name + suffix);
    emit_result(f.get("out"), "ceiling", metrics,
                {{"single", single},
                 {"batch_total", batch_total},
                 {"synchronous", "FULL"},
                 {"journal", "WAL"},
                 {"dedup_on_digest", true},
                 {"ok", ok}});
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_ceiling: " << e.what() << "\n";
    return 1;
  }
}
