// app/commands.h: one function per `orch` subcommand. Each returns the process exit code:
// 0 success, 1 failure (the reason is printed on stderr), 2 bad usage.
#pragma once

#include <optional>
#include <string>

#include "engine/model.h"

namespace orch {

struct CommonOptions {
  std::optional<std::string> config;  // --config, else ORCH_CONFIG
};

struct ReconcileOptions {
  bool once = false;
  bool dry_run = false;
  bool plane_only = false;
};

int cmd_check_config(const std::string& file);
int cmd_serve(const CommonOptions& common);
int cmd_migrate(const CommonOptions& common);
int cmd_status(const CommonOptions& common, bool json);
// Why one task waits, and what led there: its waiting reason, the gate side's last look, transitions and jobs.
int cmd_explain(const CommonOptions& common, const std::string& key, bool json);
// `orch task rerun KEY [--stage S]`: rerun_stage (app/admin_actions.h) on the newest task of KEY.
int cmd_task_rerun(const CommonOptions& common, const std::string& key, const std::optional<std::string>& stage);
// `orch task resume KEY [--raise-budget N]`: resume_held_task (app/admin_actions.h) on the newest task of KEY.
int cmd_task_resume(const CommonOptions& common, const std::string& key, double raise_usd);
int cmd_replay(const CommonOptions& common, const std::string& delivery_id);
int cmd_reconcile_switch(const CommonOptions& common, bool enable, bool plane_only);
int cmd_reconcile_once(const CommonOptions& common, bool dry_run);
int cmd_sweep_once(const CommonOptions& common);
// `orch job cancel ID`: cancel_job (app/admin_actions.h).
int cmd_job_cancel(const CommonOptions& common, JobId id);

struct RunnerCommand {
  std::string server;
  std::optional<std::string> token_file;
  std::string labels;
  int capacity = 1;
  std::string work_dir = "./runner-data";
  std::string name;             // register, revoke
  std::string register_labels;  // register
  bool json = false;            // list
};
// `orch runner --server URL ...`: runs agents for the server until SIGTERM (app/runner_agent.h).
int cmd_runner(const RunnerCommand& options);
int cmd_runner_register(const CommonOptions& common, const RunnerCommand& options);
int cmd_runner_list(const CommonOptions& common, bool json);
int cmd_runner_revoke(const CommonOptions& common, const std::string& name);

}  // namespace orch
