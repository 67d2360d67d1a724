// app/main.cpp: the `orch` command line. Exit codes: 0 success, 1 failure, 2 bad usage (docs/contracts.md "CLI").
#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>
#include <string>

#include "app/commands.h"

int main(int argc, char** argv) {
  using namespace orch;
  CLI::App cli{"orch: a webhook-driven pipeline engine with a drift reconciler"};
  cli.require_subcommand(1);
  CommonOptions common;
  auto add_config = [&](CLI::App* sub) {
    sub->add_option("--config", common.config, "TOML config file (else ORCH_CONFIG)");
  };

  auto* serve = cli.add_subcommand("serve", "run the engine: webhooks, workers, reconciler, /queue");
  add_config(serve);

  std::string check_file;
  auto* check = cli.add_subcommand("check-config", "validate a config file; errors name the line");
  check->add_option("FILE", check_file, "the TOML file")->required();

  auto* migrate = cli.add_subcommand("migrate", "create or upgrade the database schema");
  add_config(migrate);

  bool status_json = false;
  auto* status = cli.add_subcommand("status", "tasks by stage, the job queue, the reconciler (from the database)");
  add_config(status);
  status->add_flag("--json", status_json, "print /queue.json's document");

  std::string explain_key;
  bool explain_json = false;
  auto* explain = cli.add_subcommand("explain", "why one task waits: its reason, gate, transitions and jobs");
  add_config(explain);
  explain->add_option("KEY", explain_key, "the work item's key, e.g. SHOP-42")->required();
  explain->add_flag("--json", explain_json, "print the document as JSON");

  std::string task_key;
  std::optional<std::string> rerun_stage;
  auto* task = cli.add_subcommand("task", "act on one task (by its work item key)");
  task->require_subcommand(1);
  add_config(task);
  auto* rerun = task->add_subcommand("rerun", "re-run a stage: after any job still running, never killing it");
  add_config(rerun);
  rerun->add_option("KEY", task_key, "the work item's key, e.g. SHOP-42")->required();
  rerun->add_option("--stage", rerun_stage, "the stage to re-run: the current one (default) or an earlier one");
  double raise_budget = 0;
  auto* resume = task->add_subcommand("resume", "lift a task's budget hold, raising its budget (docs/adr/0021)");
  add_config(resume);
  resume->add_option("KEY", task_key, "the work item's key, e.g. SHOP-42")->required();
  resume->add_option("--raise-budget", raise_budget, "US dollars added to the task's budget limits")
      ->check(CLI::NonNegativeNumber);

  std::string delivery_id;
  auto* replay = cli.add_subcommand("replay", "handle a stored delivery again (e.g. a failed one)");
  add_config(replay);
  replay->add_option("DELIVERY_ID", delivery_id, "the sender's delivery id")->required();

  ReconcileOptions reconcile_opts;
  auto* reconcile = cli.add_subcommand("reconcile", "run one reconcile pass, or flip the kill switches");
  add_config(reconcile);
  reconcile->add_flag("--once", reconcile_opts.once, "run one pass now");
  reconcile->add_flag("--dry-run", reconcile_opts.dry_run, "with --once: print what would change, change nothing");
  auto* enable = reconcile->add_subcommand("enable", "enable the reconciler (or only its tracker side)");
  enable->add_flag("--plane", reconcile_opts.plane_only, "only the tracker (Plane) side");
  auto* disable = reconcile->add_subcommand("disable", "disable the reconciler (or only its tracker side)");
  disable->add_flag("--plane", reconcile_opts.plane_only, "only the tracker (Plane) side");

  bool sweep_once = false;
  auto* sweep = cli.add_subcommand("sweep", "fail orphaned, timed-out and expired jobs");
  add_config(sweep);
  sweep->add_flag("--once", sweep_once, "run one sweep now")->required();

  // `orch runner --server URL`: a runner on this host; `orch runner register|list|revoke`: the server's registry.
  RunnerCommand runner_opts;
  auto* runner = cli.add_subcommand("runner", "run agents for a server on this host, or manage the registered runners");
  runner->require_subcommand(0, 1);
  runner->add_option("--server", runner_opts.server, "the orch server's URL, e.g. http://orch.internal:8080");
  runner->add_option("--token-file", runner_opts.token_file,
                     "the file holding this runner's token (else ORCH_RUNNER_TOKEN)");
  runner->add_option("--labels", runner_opts.labels, "labels offered, comma-separated (at most the registered ones)");
  runner->add_option("--capacity", runner_opts.capacity, "jobs at once")->check(CLI::Range(1, 64));
  runner->add_option("--work-dir", runner_opts.work_dir, "clones, worktrees and logs (default ./runner-data)");
  auto* runner_register = runner->add_subcommand("register", "register a runner; prints its token once");
  add_config(runner_register);
  runner_register->add_option("--name", runner_opts.name, "the runner's name: A-Z a-z 0-9 . _ -")->required();
  runner_register->add_option("--labels", runner_opts.register_labels, "its labels, comma-separated");
  auto* runner_list = runner->add_subcommand("list", "the registered runners, their state and current job");
  add_config(runner_list);
  runner_list->add_flag("--json", runner_opts.json, "print them as /queue.json's runners");
  auto* runner_revoke = runner->add_subcommand("revoke", "revoke a runner's token: its next request is refused");
  add_config(runner_revoke);
  runner_revoke->add_option("NAME", runner_opts.name, "the runner's name")->required();

  JobId cancel_id = 0;
  auto* job = cli.add_subcommand("job", "act on one job (by its id, as /queue.json shows it)");
  job->require_subcommand(1);
  auto* job_cancel = job->add_subcommand("cancel", "stop a job: its agent's process group is stopped and checked gone");
  add_config(job_cancel);
  job_cancel->add_option("ID", cancel_id, "the job's id")->required()->check(CLI::PositiveNumber);

  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e) == 0 ? 0 : 2;
  } catch (const CLI::CallForAllHelp& e) {
    return cli.exit(e) == 0 ? 0 : 2;
  } catch (const CLI::ParseError& e) {
    cli.exit(e);
    return 2;
  }

  if (*check) return cmd_check_config(check_file);
  if (*serve) return cmd_serve(common);
  if (*migrate) return cmd_migrate(common);
  if (*status) return cmd_status(common, status_json);
  if (*explain) return cmd_explain(common, explain_key, explain_json);
  if (*task && *rerun) return cmd_task_rerun(common, task_key, rerun_stage);
  if (*task && *resume) return cmd_task_resume(common, task_key, raise_budget);
  if (*replay) return cmd_replay(common, delivery_id);
  if (*reconcile) {
    if (*enable || *disable) return cmd_reconcile_switch(common, enable->parsed(), reconcile_opts.plane_only);
    if (!reconcile_opts.once) {
      std::cerr << "orch reconcile: say --once, enable or disable (see --help)\n";
      return 2;
    }
    return cmd_reconcile_once(common, reconcile_opts.dry_run);
  }
  if (*sweep) return cmd_sweep_once(common);
  if (*job && *job_cancel) return cmd_job_cancel(common, cancel_id);
  if (*runner) {
    if (*runner_register) return cmd_runner_register(common, runner_opts);
    if (*runner_list) return cmd_runner_list(common, runner_opts.json);
    if (*runner_revoke) return cmd_runner_revoke(common, runner_opts.name);
    return cmd_runner(runner_opts);
  }
  return 2;
}
