// bench/report.cpp: turns the RESULT lines of one bench/run.sh run (a JSONL file) into the Markdown section that
// run.sh appends to bench/RESULTS.md: the medians of the repeated runs, the ratios the issue asks for, and each
// target met or missed and by how much. Reads only; knows the metric names the benchmark programs emit.
//
//   bench_report --results results.jsonl [--targets]   (Markdown on stdout)
#include <cmath>
#include <algorithm>
#include <optional>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "bench/support/bench_util.h"

namespace orch::bench {
namespace {

using Samples = std::map<std::string, std::map<std::string, std::vector<double>>>;  // bench -> metric -> values

std::optional<double> med(const Samples& s, const std::string& bench, const std::string& metric) {
  auto b = s.find(bench);
  if (b == s.end()) return std::nullopt;
  auto m = b->second.find(metric);
  if (m == b->second.end() || m->second.empty()) return std::nullopt;
  return median(m->second);
}

std::string num(double v) {
  char buf[64];
  const double a = std::fabs(v);
  if (a >= 1000 || v == std::floor(v))
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (a >= 10)
    std::snprintf(buf, sizeof buf, "%.1f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string ratio(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", v);
  return buf;
}

std::string opt(const std::optional<double>& v, const std::string& unit = "") { return v ? num(*v) + unit : "n/a"; }

struct Target {
  std::string what;
  std::optional<double> value;
  double limit;
  bool at_least;  // value >= limit (else value < limit)
  std::string unit;
};

std::string verdict(const Target& t) {
  if (!t.value) return "not measured";
  const double v = *t.value;
  const bool met = t.at_least ? v >= t.limit : v < t.limit;
  char buf[128];
  if (met) {
    std::snprintf(buf, sizeof buf, "**met** (%s%.0f %% margin)", t.at_least ? "+" : "",
                  t.at_least ? (v / t.limit - 1) * 100 : (1 - v / t.limit) * 100);
  } else {
    std::snprintf(
        buf, sizeof buf, "**missed** by %.0f %% (%s)", t.at_least ? (1 - v / t.limit) * 100 : (v / t.limit - 1) * 100,
        t.at_least ? ("needs " + num(t.limit / v) + "x").c_str() : ("needs " + num(v / t.limit) + "x less").c_str());
  }
  return buf;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  using namespace orch::bench;
  Flags f(argc, argv);
  std::ifstream in(f.get("results"));
  if (!in) {
    std::cerr << "bench_report: cannot read " << f.get("results") << "\n";
    return 1;
  }
  Samples s;
  std::map<std::string, int> runs, failed_runs;
  std::map<std::string, nlohmann::json> last_info;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("bench")) continue;
    const std::string bench = j["bench"];
    ++runs[bench];
    if (j["info"].contains("ok") && j["info"]["ok"] == false) ++failed_runs[bench];
    last_info[bench] = j["info"];
    for (auto& [k, v] : j["metrics"].items())
      if (v.is_number()) s[bench][k].push_back(v.get<double>());
  }

  std::ostringstream o;
  o << "### Medians\n\n";
  for (const auto& [bench, metrics] : s) {
    o << "**" << bench << "** (" << runs[bench] << " run" << (runs[bench] == 1 ? "" : "s");
    if (failed_runs[bench]) o << ", " << failed_runs[bench] << " reported a failed check";
    o << ")\n\n| metric | median | min | max |\n|---|---:|---:|---:|\n";
    for (const auto& [metric, values] : metrics) {
      const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
      o << "| " << metric << " | " << num(median(values)) << " | " << num(*lo) << " | " << num(*hi) << " |\n";
    }
    o << "\n";
  }

  // Ratios.
  o << "### Ratios\n\n| ratio | value |\n|---|---:|\n";
  const auto single = med(s, "ceiling", "single_rps");
  for (const char* c : {"16", "64"}) {
    const auto rps = med(s, std::string("ingest_c") + c, "rps");
    if (rps && single)
      o << "| ingest c=" << c << " / single-row durable-write ceiling | " << ratio(*rps / *single) << " |\n";
    for (const char* b : {"16", "64", "512"}) {
      const auto group = med(s, "ceiling", std::string("batch") + b + "_rps");
      if (rps && group)
        o << "| ingest c=" << c << " / group-commit ceiling (" << b << " per transaction) | " << ratio(*rps / *group)
          << " |\n";
    }
  }
  // The same ratio round by round (each round runs the ceiling and the ingest back to back), then its median:
  // the disk's speed moves between rounds, and this pairs each ingest with the ceiling of its own moment.
  if (const auto ce = s.find("ceiling"); ce != s.end() && ce->second.count("single_rps"))
    for (const char* c : {"16", "64"}) {
      auto in = s.find(std::string("ingest_c") + c);
      if (in == s.end() || !in->second.count("rps")) continue;
      const auto& a = in->second.at("rps");
      const auto& b = ce->second.at("single_rps");
      std::vector<double> per_round;
      for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) per_round.push_back(a[i] / b[i]);
      std::string list;
      for (double v : per_round) list += (list.empty() ? "" : ", ") + ratio(v);
      o << "| ingest c=" << c << " / single-row ceiling, per round (" << list << "), median | "
        << ratio(median(per_round)) << " |\n";
    }
  // Diagnostics (same rounds): what the rest of `orch serve` and answer compression cost ingest at c=64.
  if (const auto full = med(s, "ingest_c64", "rps")) {
    if (const auto routes = med(s, "ingest_routes_only_c64", "rps"))
      o << "| ingest c=64, webhook routes alone / full `orch serve` | " << ratio(*routes / *full) << " |\n";
    if (const auto plain = med(s, "ingest_no_gzip_c64", "rps"))
      o << "| ingest c=64, no Accept-Encoding / Plane's Accept-Encoding: gzip | " << ratio(*plain / *full) << " |\n";
  }
  // Issue #11: the same load on N replicas sharing one PostgreSQL database, against the single SQLite node.
  if (const auto sqlite = med(s, "ingest_c64", "rps"))
    for (const auto& [bench, metrics] : s)
      if (bench.rfind("ingest_pg", 0) == 0 && bench.size() > 4 && bench.compare(bench.size() - 4, 4, "_c64") == 0)
        if (const auto pg = med(s, bench, "rps"))
          o << "| ingest c=64, " << bench.substr(9, bench.size() - 13)
            << " replica(s) on PostgreSQL / one SQLite node | " << ratio(*pg / *sqlite) << " |\n";
  if (const auto as_is = med(s, "ceiling", "whatif_as_is_rps"))
    for (const char* w : {"no_autocheckpoint", "autocheckpoint_1000", "page_size_1024", "sync_normal_not_durable"})
      if (const auto v = med(s, "ceiling", std::string("whatif_") + w + "_rps"))
        o << "| ceiling what-if (64 per transaction), " << w << " / as is | " << ratio(*v / *as_is) << " |\n";
  if (const auto it = s.find("reconcile"); it != s.end()) {
    for (const auto& [metric, values] : it->second)
      if (metric.rfind("us_per_candidate@", 0) == 0)
        o << "| reconcile time per candidate, " << metric.substr(17) << " tasks | " << num(median(values)) << " us |\n";
    const auto small = med(s, "reconcile", "us_per_candidate@1000");
    const auto big = med(s, "reconcile", "us_per_candidate@1000000");
    if (small && big) o << "| reconcile per-candidate cost, 1 M tasks / 1 k tasks | " << ratio(*big / *small) << " |\n";
  }
  if (const auto g = med(s, "tracker", "peak_rss_growth_kb"))
    o << "| tracker pass peak RSS, largest minus smallest page count | " << num(*g) << " kB |\n";
  if (const auto g = med(s, "tracker", "peak_rss_less_sqlite_growth_kb"))
    o << "| the same, less the growth of SQLite's page caches during the pass | " << num(*g) << " kB |\n";
  o << "\n";

  // Targets (issue #9), judged only at the sizes the issue names.
  const double mb = 1024;  // kB per MiB
  const bool full_startup = last_info.count("startup") && last_info["startup"].value("tasks", 0) == 100000;
  if (!full_startup) s["startup"].erase("rss_with_tasks_kb"), s["startup"].erase("startup_with_tasks_ms");
  std::vector<Target> targets = {
      {"ingest c=64 requests/s >= 15 000", med(s, "ingest_c64", "rps"), 15000, true, ""},
      {"ingest c=64 p99 < 10 ms", med(s, "ingest_c64", "p99_ms"), 10, false, " ms"},
      {"ingest c=64 >= 1.0x single-thread durable-write ceiling",
       med(s, "ingest_c64", "rps") && single ? std::optional<double>(*med(s, "ingest_c64", "rps") / *single)
                                             : std::nullopt,
       1.0, true, "x"},
      {"reconcile gate side, 1 M tasks, 1 % red candidates < 1 s", med(s, "reconcile", "pass_ms@1000000"), 1000, false,
       " ms"},
      {"idle RSS < 30 MB",
       med(s, "startup", "rss_idle_kb").has_value() ? std::optional<double>(*med(s, "startup", "rss_idle_kb") / mb)
                                                    : std::nullopt,
       30, false, " MiB"},
      {"RSS with 100 k tasks < 100 MB",
       med(s, "startup", "rss_with_tasks_kb").has_value()
           ? std::optional<double>(*med(s, "startup", "rss_with_tasks_kb") / mb)
           : std::nullopt,
       100, false, " MiB"},
      {"start-up with replay of 100 k tasks < 2 s", med(s, "startup", "startup_with_tasks_ms"), 2000, false, " ms"},
  };
  o << "### Targets\n\n| target | median | verdict |\n|---|---:|---|\n";
  for (const Target& t : targets) o << "| " << t.what << " | " << opt(t.value, t.unit) << " | " << verdict(t) << " |\n";
  // Rows read must equal the candidates at every size (1 %), and the scan must never be a full scan.
  if (const auto it = s.find("reconcile"); it != s.end()) {
    bool proportional = true, any = false;
    for (const auto& [metric, values] : it->second) {
      if (metric.rfind("rows_read@", 0) != 0) continue;
      any = true;
      const double n = std::stod(metric.substr(10));
      proportional = proportional && median(values) == std::floor(n / 100);
    }
    const auto fs = med(s, "reconcile", "scan_fullscan_steps@1000000");
    o << "| reconcile rows read proportional to candidates (rows read = candidates at every size; no full-scan step) | "
      << (any ? (proportional ? "rows = candidates" : "rows != candidates") : "n/a") << " | "
      << (any && proportional && (!fs || *fs == 0) ? "**met**"
          : any                                    ? "**missed**"
                                                   : "not measured")
      << " |\n";
  }
  for (const auto& entry : last_info) {
    const std::string& name = entry.first;
    if (name.rfind("ingest_c", 0) != 0 && name.rfind("ingest_pg", 0) != 0) continue;
    o << "| " << name << ": every acknowledged delivery in the inbox exactly once"
      << (name.rfind("ingest_pg", 0) == 0 ? ", every replica exits 0 on SIGTERM" : "") << " (all runs) | "
      << (failed_runs[name] ? std::to_string(failed_runs[name]) + " failed" : "ok") << " | "
      << (failed_runs[name] ? "**missed**" : "**met**") << " |\n";
  }
  o << "\n";
  std::cout << o.str();
  return 0;
}
