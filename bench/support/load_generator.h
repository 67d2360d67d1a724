// bench/support/load_generator.h: a closed-loop HTTP/1.1 keep-alive load generator for signed Plane webhooks.
// Every request is precomputed before the clock starts (body, HMAC-SHA256 hex in X-Plane-Signature, a unique
// X-Plane-Delivery); about one send in `dup_every` re-sends, byte for byte, a request that was already acknowledged
// (202), which the server must answer 200 {"duplicate": true}. Connections are spread round-robin over the targets
// (several replicas behind one inbox) and driven by `threads` epoll loops; each connection has one request in
// flight. Latency is measured per request, from the first byte written to the last byte of the answer read.
// Not thread-safe: one run() at a time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bench/support/bench_util.h"

namespace orch::bench {

struct Target {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/webhooks/plane";
};
// "http://host:port/path"; throws std::invalid_argument otherwise.
Target parse_target(const std::string& url);

struct SignedRequest {
  std::string delivery_id;
  std::string tail;  // the per-request headers, the blank line and the body
};

// Precomputes count requests numbered from `first`: bodies from plane_issue_body(), signed with `secret`.
struct RequestSet {
  std::vector<SignedRequest> requests;
  std::size_t body_bytes = 0;  // of one body (they are all about the same size)
};
RequestSet make_requests(const PlaneBodySpec& spec, const std::string& secret, std::uint64_t first, std::size_t count,
                         int threads);

struct LoadOptions {
  std::vector<Target> targets;
  int concurrency = 16;
  int threads = 2;
  int dup_every = 10;  // one send in dup_every repeats an acknowledged delivery; 0 = none
  int timeout_ms = 30000;
  // Send Accept-Encoding: gzip, deflate as Plane (python-requests) does; off, the server has nothing to compress.
  bool accept_gzip = true;
};

struct LoadResult {
  double seconds = 0;
  std::uint64_t sends = 0;
  std::uint64_t acked = 0;         // 202 {"delivery": id} for an original
  std::uint64_t dup_answered = 0;  // 200 {"duplicate": true} for a repeat
  std::uint64_t repeats = 0;
  std::uint64_t wrong_answers = 0;  // anything else (a repeat stored again, a 5xx, a malformed answer)
  std::uint64_t transport_errors = 0;
  std::uint64_t reconnects = 0;
  std::uint64_t compressed = 0;  // answers that came gzip-encoded
  std::map<int, std::uint64_t> statuses;
  std::vector<double> latencies_ms;          // sorted
  std::vector<std::uint32_t> acked_indices;  // into RequestSet::requests
  std::string first_wrong_answer;
};

// Sends every request of `set` once (plus the repeats), closed loop, and returns when all were answered.
LoadResult run_load(const LoadOptions& options, const RequestSet& set);

}  // namespace orch::bench
