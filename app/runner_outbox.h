// app/runner_outbox.h: the runner's file outbox (docs/adr/0023). A job's last word (its finish report and the log
// output not yet sent) is written here before the runner first tries to send it, and removed only once the server
// has answered it: accepted (200) or refused for good (409: the claim was taken over; 404: the job is gone). So a
// runner that loses the server, or is restarted, or dies between the agent's exit and the server's answer, still
// delivers the result when it comes back, and a result whose claim is no longer the job's is refused there.
// One file per job, `<work_dir>/outbox/<job id>.json`, each written whole (temporary file, fsync, rename, fsync of the
// folder), so a crash leaves the previous version or the new one, never half of one.
#pragma once

#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "engine/status.h"

namespace orch {

struct OutboxEntry {
  JobId job = 0;
  nlohmann::json finish;  // the body of POST /runner/v1/jobs/<id>/finish; it carries the claim
  std::string log;        // the agent's output not yet sent: goes first, then is dropped from the file
};

class RunnerOutbox {
 public:
  explicit RunnerOutbox(std::filesystem::path dir) : dir_(std::move(dir)) {}

  // Writes `entry` durably, replacing the job's earlier one.
  Status put(const OutboxEntry& entry);
  void remove(JobId job);
  // Every entry, by job id. A file that does not parse (not written by this code) is renamed to `<name>.corrupt` and
  // skipped, with its name in `skipped`, so that it never blocks the others.
  Result<std::vector<OutboxEntry>> pending(std::vector<std::string>* skipped = nullptr) const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path file_of(JobId job) const;
  std::filesystem::path dir_;
};

}  // namespace orch
