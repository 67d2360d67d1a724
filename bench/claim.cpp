// bench/claim.cpp: the cost of one job claim with a backlog, the fair, limited claim of docs/adr/0018 against the
// oldest-first statement it replaced, in the same run on the same SQLite file. Each measured step is a claim and a
// requeue of the claimed job (so the backlog keeps its size); R jobs stay running throughout, spread over the
// projects, as busy workers would hold them.
//
//   bench_claim --work DIR [--backlogs 100,1000,10000] [--projects 4] [--running 4] [--claims 2000]
#include <SQLiteCpp/SQLiteCpp.h>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/support/bench_util.h"
#include "bench/support/seed.h"
#include "engine/store/sqlite_store.h"

namespace orch::bench {
namespace {

// The claim before docs/adr/0018 (oldest due job across all projects, no limits), for the comparison.
constexpr const char* kOldestFirstClaim =
    "UPDATE jobs SET status = 'running', worker = 'bench', started_at = ?1, heartbeat_at = ?1 "
    "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ?1 "
    "ORDER BY run_after, id LIMIT 1) AND status = 'queued' RETURNING id";

std::vector<long long> parse_list(const std::string& s) {
  std::vector<long long> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

struct Timing {
  double median_us = 0, p99_us = 0;
};

Timing summarize(std::vector<double> us) { return {median(us), percentile(us, 0.99)}; }

int run(int argc, char** argv) {
  std::string work;
  std::string backlogs = "100,1000,10000";
  int projects = 4, running = 4, claims = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--work")
      work = v;
    else if (a == "--backlogs")
      backlogs = v;
    else if (a == "--projects")
      projects = std::stoi(v);
    else if (a == "--running")
      running = std::stoi(v);
    else if (a == "--claims")
      claims = std::stoi(v);
    else {
      std::cerr << "bench_claim: unknown option " << a << "\n";
      return 2;
    }
  }
  if (work.empty() || projects < 1 || running < 0 || claims < 1) {
    std::cerr << "usage: bench_claim --work DIR [--backlogs 100,1000,10000] [--projects 4] [--running 4] "
                 "[--claims 2000]\n";
    return 2;
  }
  std::filesystem::create_directories(work);
  std::cout << "backlog\tclaim\tmedian_us\tp99_us\n";
  for (long long backlog : parse_list(backlogs)) {
    const std::string path = work + "/claim-" + std::to_string(backlog) + ".db";
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
    const TimePoint t0 = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    {
      Seeder seed(path);
      for (long long i = 1; i <= backlog + running; ++i) {
        SeedTask t;
        t.id = i;
        t.project = "p" + std::to_string(i % projects);
        t.work_item_id = "wi-" + std::to_string(i);
        t.work_item_key = "P-" + std::to_string(i);
        t.branch = "orch/p-" + std::to_string(i);
        t.created_at = t.entered_stage_at = t.updated_at = t0;
        seed.task(t);
        SeedJob j;
        j.task_id = i;
        j.status = i <= running ? "running" : "queued";
        j.created_at = t0 - std::chrono::seconds(backlog + running - i);
        seed.job(j);
      }
      seed.commit();
    }
    auto opened = SqliteStore::open(path);
    if (!opened.ok()) {
      std::cerr << "bench_claim: " << opened.status().to_string() << "\n";
      return 1;
    }
    auto store = std::move(opened).value();
    JobLimits limits;
    limits.max_running = running + 1;
    limits.per_project["p0"] = running + 1;
    limits.per_agent["developer"] = running + 1;
    TimePoint now = t0 + std::chrono::hours(1);
    auto measure_store = [&](const JobLimits& l) {
      std::vector<double> us;
      for (int c = 0; c < claims; ++c) {
        now += std::chrono::milliseconds(1);
        const auto start = now_ns();
        auto job = store->claim_job("bench", now, l);
        us.push_back(static_cast<double>(now_ns() - start) / 1e3);
        if (!job.ok() || !job.value()) throw std::runtime_error("claim_job found nothing to claim");
        if (!store->requeue_job(job.value()->id, now).ok()) throw std::runtime_error("requeue_job failed");
      }
      return summarize(us);
    };
    auto measure_oldest_first = [&] {
      SQLite::Database db(path, SQLite::OPEN_READWRITE);
      std::vector<double> us;
      for (int c = 0; c < claims; ++c) {
        now += std::chrono::milliseconds(1);
        const std::int64_t at = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
        const auto start = now_ns();
        SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
        SQLite::Statement claim(db, kOldestFirstClaim);
        claim.bind(1, static_cast<std::int64_t>(at));
        if (!claim.executeStep()) throw std::runtime_error("the oldest-first claim found nothing");
        const long long id = claim.getColumn(0).getInt64();
        claim.reset();
        tx.commit();
        us.push_back(static_cast<double>(now_ns() - start) / 1e3);
        if (!store->requeue_job(id, now).ok()) throw std::runtime_error("requeue_job failed");
      }
      return summarize(us);
    };
    // Interleaved twice, so a drift of the machine shows as a difference between the rounds.
    for (int round = 0; round < 2; ++round) {
      const Timing old_claim = measure_oldest_first();
      const Timing fair = measure_store(JobLimits{});
      const Timing limited = measure_store(limits);
      std::cout << backlog << "\toldest-first (before)\t" << old_claim.median_us << "\t" << old_claim.p99_us << "\n"
                << backlog << "\tfair, no limits\t" << fair.median_us << "\t" << fair.p99_us << "\n"
                << backlog << "\tfair, 3 limits\t" << limited.median_us << "\t" << limited.p99_us << "\n";
    }
  }
  return 0;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  try {
    return orch::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_claim: " << e.what() << "\n";
    return 1;
  }
}
