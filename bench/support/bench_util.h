// bench/support/bench_util.h: what the benchmark programs share: command-line flags, timing and percentiles, RSS
// from /proc, the RESULT line every program prints (bench/run.sh collects them, bench_report takes medians), a
// Plane issue body generator with Plane's exact serialisation, HMAC signing, and spawning `orch serve`.
// Benchmarks, not tests: nothing here asserts a time. Not thread-safe unless a function says so.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/clock.h"

namespace orch::bench {

// ---- flags ------------------------------------------------------------------------------------------------------

// "--name value" and "--flag" pairs; a name may repeat (all() returns every value in order).
class Flags {
 public:
  Flags(int argc, char** argv);
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  long long num(const std::string& name, long long fallback) const;
  double real(const std::string& name, double fallback) const;
  std::vector<std::string> all(const std::string& name) const;
  std::vector<long long> nums(const std::string& name, std::vector<long long> fallback) const;  // comma-separated

 private:
  std::multimap<std::string, std::string> values_;
};

// ---- time and statistics ----------------------------------------------------------------------------------------

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
inline double seconds_since(std::int64_t start_ns) { return static_cast<double>(now_ns() - start_ns) / 1e9; }

double median(std::vector<double> v);
// q in [0, 1], nearest-rank on a sorted copy.
double percentile(std::vector<double> v, double q);
// Nearest-rank on an already sorted vector.
double percentile_sorted(const std::vector<double>& sorted, double q);

// ---- processes and memory ---------------------------------------------------------------------------------------

// A field of /proc/<pid>/status in kB ("VmRSS", "VmHWM"); -1 when unreadable. pid 0 = this process.
long proc_status_kb(pid_t pid, const std::string& field);
// CPU time (user + system) a process has used so far, in seconds; pid 0 = this process. -1 when unreadable.
double cpu_seconds(pid_t pid);
// Resets this process's VmHWM to its current RSS (echo 5 > /proc/self/clear_refs). False if the kernel refused.
bool reset_peak_rss();

// Spawns argv[0] (a path) with exactly `env`, stdout and stderr appended to log_path. Returns the pid or -1.
pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& log_path);
// SIGTERM, then SIGKILL after `grace`; reaps. Returns the exit code, -signal, or -1000 on a wait failure.
// With ORCH_BENCH_STACKS_ON_KILL=FILE set, the stacks of a process that outlived the grace are appended to FILE
// (gdb) before the SIGKILL: where shutdown was stuck.
int stop_process(pid_t pid, std::chrono::milliseconds grace = std::chrono::seconds(10));
// True once `pid` has exited (reaped).
bool exited(pid_t pid, int* code = nullptr);

// GET http://127.0.0.1:port/path over a fresh connection; the status code, or -1 when no answer.
int http_get_status(int port, const std::string& path,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(200));
// A loopback port nobody listens on right now.
int free_port();
// Sets TCP_NODELAY on this process's listening socket for `port` (found through /proc/self/fd); Linux copies it to
// every connection accepted afterwards. The fakes of tests/fakes do not set it, so an answer written as two small
// segments (headers, then body) waits for the client's delayed ACK (~40 ms); real Gitea and Plane servers (Go's
// net/http, gunicorn behind nginx) answer without that stall. Returns false if no such socket was found.
bool set_nodelay_on_listener(int port);

// A caching reverse proxy on loopback for GET requests: the first request for a target (path and query) is
// forwarded to `upstream` and its answer kept; later ones are answered from memory, byte for byte the same. Used
// where a fake's own cost per request grows with its tables (the fake Plane sorts every work item for each page),
// so that a measured pass pays for the client, not for the fake. Thread-safe; TCP_NODELAY on.
class CachingProxy {
 public:
  explicit CachingProxy(std::string upstream_base_url);
  ~CachingProxy();
  CachingProxy(const CachingProxy&) = delete;
  CachingProxy& operator=(const CachingProxy&) = delete;
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::size_t hits() const;
  std::size_t misses() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// ---- output -----------------------------------------------------------------------------------------------------

// Prints "RESULT {json}" on stdout and appends the same JSON line to `out_path` when it is not empty.
// metrics: numbers bench_report takes the median of; info: anything else worth recording.
void emit_result(const std::string& out_path, const std::string& bench, const nlohmann::json& metrics,
                 const nlohmann::json& info = nlohmann::json::object());

// ---- payloads ---------------------------------------------------------------------------------------------------

// A deterministic, lowercase, hyphenated UUIDv4-shaped id from (namespace, n).
std::string bench_uuid(std::uint32_t ns, std::uint64_t n);
std::string hmac_sha256_hex(const std::string& key, const std::string& data);

struct PlaneBodySpec {
  std::string project_id;
  std::string workspace_id = "d2d97c94-a6ad-4012-b526-5577c0d7c769";
  std::string state_id = "b1e24c5d-0f3a-4e6b-8c7d-9a0b1c2d3e4f";  // Todo unless told otherwise
  std::string state_name = "Todo";
  std::string state_group = "unstarted";
  std::size_t target_bytes = 1536;  // the description is padded until the body is about this long
};
// One Plane CE `issue` / `updated` webhook body (plane.md §2) for work item number n, serialised exactly as Plane
// does (json.dumps: ", " and ": " separators, ASCII). Unique per n (id, sequence_id, updated_at differ).
std::string plane_issue_body(const PlaneBodySpec& spec, std::uint64_t n, TimePoint updated_at);

// ---- orch serve -------------------------------------------------------------------------------------------------

struct ServeConfig {
  std::string data_dir;
  std::string plane_base_url = "http://127.0.0.1:9";
  std::string gitea_base_url = "http://127.0.0.1:9";
  std::string project_id = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";
  std::string repo = "acme/shop";
  int workers = 2;
};
// Writes a config file in the shape of docs/contracts.md "The config file" (agents are /bin/true; the clone URL a path
// that is never used).
void write_serve_config(const std::string& path, const ServeConfig& c);

}  // namespace orch::bench
