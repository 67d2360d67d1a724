// tests/e2e/pipeline_run.h: the convergence scenario of issue 7, shared by the end-to-end tests that run it (one
// replica on SQLite in convergence_test.cpp, three on PostgreSQL with the leader killed in pg/replicas_test.cpp).
// N Plane work items go through the whole pipeline (analysis -> human approval -> development -> CI -> review ->
// done) with script agents and a local bare repository as the remote, while the test plays Plane and Gitea: it
// changes the fakes' tables (the truth) and sends the matching signed webhook — or drops it, sends it twice, or
// adds a stale, out-of-order one. run_pipeline() then checks that every item reached done with no duplicate task,
// job, branch, pull request or notification, and that every dropped webhook was recovered by the reconciler: one
// `reconciler` transition and one "unblocked" Telegram message each.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <set>

#include "tests/e2e/e2e_world.h"
#include "tests/support/exposition.h"

namespace orch::testing::e2e {

using namespace std::chrono_literals;

constexpr long long kAgentSettleMs = 300;
constexpr int kGraceS = 4;
constexpr auto kStartPace = std::chrono::milliseconds(150);  // one work item moved to In Progress per period

enum Step { kStart = 0, kApprove = 1, kCi = 2, kReview = 3, kFinished = 4 };
constexpr const char* kTargetStage[] = {"analysis", "development", "review", "done"};
constexpr const char* kStepName[] = {"start (Plane In Progress)", "approve (Plane Approved)",
                                     "CI success (Gitea status)", "review approved (Gitea review)"};

struct Loss {
  double drop = 0.0;   // the webhook of a step is not sent (the fakes' tables change all the same)
  double twice = 0.0;  // it is sent twice
  double stale = 0.0;  // a stale webhook of the same item is sent after it (out of order)
  unsigned seed = 20261123;
};

struct Item {
  std::string id;
  int next = kStart;
  bool dropped[4]{};
  long long truth_ms[4]{};         // when the test changed the fake's table for the step (system clock)
  long long task_updated_ms[4]{};  // the task's updated_at at that moment (gate-side steps)
  std::string start_body;          // the In Progress webhook as first built, re-sent late by some items
  std::string branch, sha;         // the task branch and its pushed head
};

struct TaskView {
  long long id = 0;
  std::string stage, branch;
  bool blocked = false;
  long long pr = 0;
  long long active_jobs = 0;
  long long succeeded_here = 0;  // succeeded jobs of the current stage visit
  long long updated_ms = 0;
  long long finished_ms = 0;  // when the last succeeded job of the current stage visit finished
};

inline long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::map<std::string, TaskView> read_tasks(const World& w) {
  std::map<std::string, TaskView> out;
  // `blocked` is an integer on SQLite and a boolean on PostgreSQL: CASE reads both.
  for (const auto& r : w.rows("SELECT t.work_item_id, t.id, t.stage, t.branch, "
                              "CASE WHEN t.blocked THEN 1 ELSE 0 END, COALESCE(t.pr_number, 0), "
                              "(SELECT COUNT(*) FROM jobs j WHERE j.task_id = t.id AND j.status IN ('queued', "
                              "'running')), "
                              "(SELECT COUNT(*) FROM jobs j WHERE j.task_id = t.id AND j.stage = t.stage AND "
                              " j.visit = t.visit AND j.status = 'succeeded'), t.updated_at, "
                              "(SELECT COALESCE(MAX(j.finished_at), 0) FROM jobs j WHERE j.task_id = t.id AND "
                              " j.stage = t.stage AND j.visit = t.visit AND j.status = 'succeeded') FROM tasks t")) {
    TaskView v;
    v.id = std::stoll(r[1]);
    v.stage = r[2];
    v.branch = r[3];
    v.blocked = r[4] != "0";
    v.pr = std::stoll(r[5]);
    v.active_jobs = std::stoll(r[6]);
    v.succeeded_here = std::stoll(r[7]);
    v.updated_ms = std::stoll(r[8]);
    v.finished_ms = std::stoll(r[9]);
    out[r[0]] = v;
  }
  return out;
}

inline bool accepted(const DeliveryResult& r) {
  return r.status == 202 || (r.status == 200 && r.body.find("duplicate") != std::string::npos);
}

struct RunResult {
  // unblock_messages: distinct "unblocked" texts received; repeated_messages: messages received more than once.
  int items = 0, done = 0, dropped = 0, racy = 0, reconciler_transitions = 0, unblock_messages = 0;
  int repeated_messages = 0;
  int agent_won = 0, dropped_by_agent = 0, racy_by_reconciler = 0;
  double seconds = 0;
};

// What a run adds to the scenario. The defaults are the convergence test's: one replica on SQLite.
struct PipelineOptions {
  // The world to run in; run_pipeline sets its reconciler interval (1 s) and grace (kGraceS).
  WorldOptions world{};
  // Called once the world has started, before the first item moves (e.g. to start runners).
  std::function<void(World&)> on_started{};
  // Called on every round of the poll loop, once the round's webhooks were sent, with the items done so far.
  std::function<void(World&, int done)> on_round{};
  // Called once every item is done and every check below has run, while the replicas still run.
  std::function<void(World&, const RunResult&)> at_end{};
};

// Nothing doubled once `n` items reached done: one task, task branch, remote branch and pull request each, no job
// attempt twice, one succeeded job per (task, stage, visit) and one per stage of the pipeline in all, one transition
// per (task, stage it entered). What failed on the way (an orphaned attempt, say) is the caller's to judge.
inline void check_nothing_doubled(World& w, int n) {
  CHECK(w.count("SELECT COUNT(*) FROM tasks") == n);
  CHECK(w.count("SELECT COUNT(DISTINCT branch) FROM tasks") == n);
  std::set<std::string> remote_branches;
  for (const auto& b : w.bare_branches())
    if (b != "main") remote_branches.insert(b);
  CHECK(remote_branches.size() == static_cast<size_t>(n));
  auto pulls = w.gitea.pulls(kRepo);
  std::set<std::string> pull_heads;
  for (const auto& p : pulls) pull_heads.insert(p.head_ref);
  CHECK(pulls.size() == static_cast<size_t>(n));
  CHECK(pull_heads == remote_branches);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT 1 FROM jobs GROUP BY task_id, stage, visit, attempt "
                "HAVING COUNT(*) > 1) AS twice") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status = 'succeeded' GROUP BY task_id, stage, visit "
                "HAVING COUNT(*) > 1) AS twice") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == 3LL * n);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT 1 FROM transitions GROUP BY task_id, to_stage HAVING COUNT(*) > 1) "
                "AS twice") == 0);
}

inline RunResult run_pipeline(int n, const Loss& loss, PipelineOptions run = {}) {
  RunResult result;
  result.items = n;
  // Reconciler every second; the grace is what the test must beat with a delivered webhook, and the inbox is one
  // thread that creates each task's git worktree: on two busy cores a burst of starts queues for seconds.
  WorldOptions options = run.world;
  options.interval_s = 1;
  options.grace_s = kGraceS;
  World w(options);
  const long long grace_ms = kGraceS * 1000LL;
  REQUIRE_MESSAGE(w.start(), w.log_tails());
  if (run.on_started) run.on_started(w);
  const auto t0 = std::chrono::steady_clock::now();

  std::mt19937 rng(loss.seed);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<Item> items(n);
  for (int i = 0; i < n; ++i) items[i].id = w.add_item("Convergence item " + std::to_string(i));
  const std::string in_progress = w.plane.state_id(kProjectId, "In Progress");
  const std::string approved = w.plane.state_id(kProjectId, "Approved");

  int failed_sends = 0;
  std::vector<std::string> send_errors;
  auto send_all = [&](std::vector<std::function<DeliveryResult()>>& sends) {
    std::shuffle(sends.begin(), sends.end(), rng);  // out of order across items and events
    for (auto& s : sends) {
      DeliveryResult r = s();
      if (!accepted(r)) {
        ++failed_sends;
        send_errors.push_back(std::to_string(r.status) + " " + r.body + r.error);
      }
    }
    sends.clear();
  };
  // Queues a step's webhook according to its fate; returns whether it was dropped.
  auto fate = [&](Item& item, Step step, std::vector<std::function<DeliveryResult()>>& sends,
                  const std::function<DeliveryResult()>& send) {
    if (coin(rng) < loss.drop) {
      item.dropped[step] = true;
      return;
    }
    sends.push_back(send);
    if (coin(rng) < loss.twice) sends.push_back(send);
  };

  const auto deadline = std::chrono::steady_clock::now() + 200s;
  int started = 0;
  auto last_start = std::chrono::steady_clock::now() - 1s;
  std::vector<std::function<DeliveryResult()>> sends;
  while (result.done < n && std::chrono::steady_clock::now() < deadline) {
    // Plane: items move to In Progress at a steady pace, as people pick them up (not all 50 in one millisecond).
    if (started < n && std::chrono::steady_clock::now() - last_start >= kStartPace) {
      Item& item = items[started++];
      last_start = std::chrono::steady_clock::now();
      item.truth_ms[kStart] = now_ms();
      w.plane.set_work_item_state(item.id, in_progress);
      item.start_body = w.plane.issue_webhook_body(item.id);
      const std::string body = item.start_body;
      fate(item, kStart, sends, [&w, body] { return w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", body); });
      item.next = kApprove;
    }
    auto tasks = read_tasks(w);
    result.done = 0;
    for (Item& item : items) {
      auto it = tasks.find(item.id);
      if (it == tasks.end()) continue;
      const TaskView& t = it->second;
      REQUIRE_MESSAGE(!t.blocked, "task " << t.id << " blocked in " << t.stage << "\n" << w.log_tails());
      // The agent's job is finished and, a moment later, so is its own look at the gate (the worker marks the job
      // succeeded before it evaluates the gate). Changing the truth earlier would let the agent advance the task.
      const bool idle_after_agent =
          t.active_jobs == 0 && t.succeeded_here >= 1 && now_ms() - t.finished_ms > kAgentSettleMs;
      if (item.next == kApprove && t.stage == "analysis" && idle_after_agent) {
        // Plane: a human approves the analysis.
        item.truth_ms[kApprove] = now_ms();
        w.plane.set_work_item_state(item.id, approved);
        const std::string body = w.plane.issue_webhook_body(item.id);
        fate(item, kApprove, sends, [&w, body] { return w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", body); });
        if (coin(rng) < loss.stale) {  // the old In Progress event arrives late (a digest duplicate if it was sent)
          const std::string old = item.start_body;
          sends.push_back([&w, old] { return w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", old); });
        }
        item.next = kCi;
      } else if (item.next == kCi && t.stage == "development" && idle_after_agent && t.pr > 0) {
        // Gitea: CI runs on the pushed head (which the fake learnt from the post-receive hook) and goes green.
        const std::string sha = w.bare_head(t.branch);
        REQUIRE(sha.size() == 40);
        item.branch = t.branch;
        item.sha = sha;
        item.truth_ms[kCi] = now_ms();
        item.task_updated_ms[kCi] = t.updated_ms;
        w.gitea.add_status(kRepo, sha, "ci/build", "pending");
        w.gitea.add_status(kRepo, sha, "ci/build", "success");
        const std::string branch = t.branch;
        if (coin(rng) >= loss.drop)  // the push event only records the head: not a transition of its own
          sends.push_back([&w, branch, sha] {
            return w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "push",
                                        FakeGitea::push_payload(kRepo, branch, w.main_sha, sha));
          });
        fate(item, kCi, sends, [&w, sha] {
          return w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "status",
                                      FakeGitea::status_payload(kRepo, sha, "ci/build", "success"));
        });
        if (!item.dropped[kCi] && coin(rng) < loss.stale)  // the superseded "pending" arrives after the "success"
          sends.push_back([&w, sha] {
            return w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "status",
                                        FakeGitea::status_payload(kRepo, sha, "ci/build", "pending"));
          });
        item.next = kReview;
      } else if (item.next == kReview && t.stage == "review" && idle_after_agent) {
        // Gitea: a reviewer approves the pull request the worker opened.
        item.truth_ms[kReview] = now_ms();
        item.task_updated_ms[kReview] = t.updated_ms;
        w.gitea.add_review(kRepo, t.pr, GiteaReview{});
        auto payload = w.gitea.review_payload(kRepo, t.pr, true);
        fate(item, kReview, sends, [&w, payload] {
          return w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "pull_request_review_approved", payload);
        });
        item.next = kFinished;
      }
      if (t.stage == "done") ++result.done;
    }
    send_all(sends);
    if (run.on_round) run.on_round(w, result.done);
    if (result.done < n) std::this_thread::sleep_for(25ms);  // the poll period of this loop
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_MESSAGE(failed_sends == 0, (send_errors.empty() ? std::string() : send_errors.front()));
  if (result.done < n) {  // which items, and where each one stands: a log tail rarely names the one left behind
    const char* kStepNames[] = {"start", "approve", "ci", "review", "finished"};
    const auto tasks = read_tasks(w);
    std::string stuck;
    for (const Item& item : items) {
      auto it = tasks.find(item.id);
      if (it != tasks.end() && it->second.stage == "done") continue;
      stuck += "  item " + item.id + ": the test's next step " + kStepNames[item.next];
      for (int step = kStart; step <= kReview; ++step)
        if (item.dropped[step]) stuck += std::string(", dropped ") + kStepNames[step];
      if (it == tasks.end()) {
        stuck += "; no task\n";
        continue;
      }
      const TaskView& t = it->second;
      stuck += "; task " + std::to_string(t.id) + " in " + t.stage + ", active jobs " + std::to_string(t.active_jobs) +
               ", succeeded here " + std::to_string(t.succeeded_here) + ", pr " + std::to_string(t.pr) + "\n";
    }
    FAIL_CHECK("not done:\n" << stuck);
  }
  REQUIRE_MESSAGE(result.done == n, "only " << result.done << " of " << n << " items reached done\n" << w.log_tails());

  // ---- every item once: tasks, branches, pull requests, jobs, transitions ----
  check_nothing_doubled(w, n);
  if (!w.replicated()) {
    CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status <> 'succeeded'") == 0);
  } else {
    // A replica that was killed leaves the jobs it ran behind as `running`: the sweeper fails them (orphaned)
    // and another attempt runs elsewhere. Nothing else may fail.
    std::string killed = "false";
    for (std::size_t i = 0; i < w.replica_count(); ++i)
      if (!w.alive(i)) killed += " OR worker LIKE '" + w.replica_ids[i] + "/%'";
    for (const auto& j : w.rows("SELECT id, task_id, stage, attempt, status, worker, error FROM jobs WHERE "
                                "status <> 'succeeded' AND NOT (status = 'failed' AND (" +
                                killed +
                                ") AND "
                                "error LIKE 'orphaned%')"))
      FAIL_CHECK("job " << j[0] << " of task " << j[1] << " in " << j[2] << " (attempt " << j[3] << ") is " << j[4]
                        << " on " << j[5] << ": " << j[6]);
  }

  // ---- each event-driven transition: by the webhook, or by the reconciler when its webhook was dropped ----
  // The precise invariant: a dropped step can only be recovered by the reconciler (nobody else learns of it), and
  // a delivered step is made by its webhook unless the reconciler could legitimately get there first: it acts only
  // on what has been idle for the grace, so a delivered step is "racy" only when its transition came later than the
  // grace after what the reconciler measures from (the work item's update for the tracker side, the task's
  // updated_at for the gate side). Racy steps may go either way; they are counted and reported (normally zero).
  // A third, legitimate path: the worker marks a job succeeded and only then evaluates the gate itself (cause
  // `agent`). The test waits kAgentSettleMs after the job finished before changing the truth, but on a loaded
  // machine the agent's own check can still come later and find the gate green: that step is then the agent's,
  // dropped or not, and nobody was blocked. So exactly: reconciler transitions == unblock messages ==
  // dropped steps not taken by the agent + racy delivered steps the reconciler won. Likewise a dropped step may be
  // taken by an older webhook of the same item that was still queued in the inbox when the step's truth changed
  // (checked against the inbox rows: handled after the truth changed, naming the item, its branch or its sha).
  int racy_by_reconciler = 0, dropped_by_agent = 0, agent_won = 0, dropped_by_late_webhook = 0;
  // Whether a webhook about this item (its work item id, branch or head sha) was handled after `since`: an
  // earlier event still queued in the inbox (a duplicate, the stale "pending", a slow status) says "look again"
  // once the truth of a later step has changed, and legitimately takes that step.
  auto late_webhook = [&](const Item& item, long long since) {
    const std::string quoted_branch = item.branch.empty() ? "" : "\"" + item.branch + "\"";  // not orch/shop-10
    return w.count("SELECT COUNT(*) FROM deliveries WHERE handled_at >= $1 AND (" + w.body_contains("$2") +
                       " OR ($3 <> '' AND " + w.body_contains("$3") + ") OR ($4 <> '' AND " + w.body_contains("$4") +
                       "))",
                   {std::to_string(since), item.id, quoted_branch, item.sha}) > 0;
  };
  const auto tasks_at_end = read_tasks(w);
  for (const Item& item : items) {
    const TaskView& task = tasks_at_end.at(item.id);
    for (int step = kStart; step <= kReview; ++step) {
      auto found = w.rows("SELECT cause, at FROM transitions WHERE task_id = $1 AND to_stage = $2",
                          {std::to_string(task.id), kTargetStage[step]});
      REQUIRE_MESSAGE(!found.empty(), "no transition to " << kTargetStage[step] << " for task " << task.id);
      const std::string cause = found[0][0];
      const long long at = std::stoll(found[0][1]);
      const std::string name = kStepName[step];
      if (cause == "agent") ++agent_won;
      if (item.dropped[step]) {
        ++result.dropped;
        if (cause == "agent") ++dropped_by_agent;
        if (cause == "webhook") {
          ++dropped_by_late_webhook;
          CHECK_MESSAGE(late_webhook(item, item.truth_ms[step]),
                        name << " of task " << task.id << " was dropped, yet a webhook made it");
        } else {
          CHECK_MESSAGE((cause == "reconciler" || cause == "agent"),
                        name << " of task " << task.id << " was dropped, cause " << cause);
        }
        continue;
      }
      const long long since = (step == kStart || step == kApprove) ? item.truth_ms[step] : item.task_updated_ms[step];
      const bool racy = at - since > grace_ms - 300;
      if (racy) {
        ++result.racy;
        if (cause == "reconciler") ++racy_by_reconciler;
        CHECK_MESSAGE((cause == "webhook" || cause == "reconciler" || cause == "agent"), "cause " << cause);
      } else {
        CHECK_MESSAGE((cause == "webhook" || cause == "agent"), name << " of task " << task.id << " was delivered ("
                                                                     << at - item.truth_ms[step]
                                                                     << " ms after the truth), cause " << cause);
      }
    }
  }
  result.reconciler_transitions =
      static_cast<int>(w.count("SELECT COUNT(*) FROM transitions WHERE cause = 'reconciler'"));
  CHECK(result.reconciler_transitions ==
        result.dropped - dropped_by_agent - dropped_by_late_webhook + racy_by_reconciler);
  CHECK(w.count("SELECT COUNT(*) FROM transitions WHERE cause NOT IN ('webhook', 'reconciler', 'agent') AND "
                "to_stage IN ('analysis', 'development', 'review', 'done')") == 0);
  result.agent_won = agent_won;
  result.racy_by_reconciler = racy_by_reconciler;
  result.dropped_by_agent = dropped_by_agent;

  // ---- one "unblocked" Telegram message per reconciler transition, none twice ----
  // A notification the killed replica had claimed waits for its claim lease (2 min, telegram_notifier.h) to lapse.
  CHECK(eventually(
      [&] {
        return w.count("SELECT COUNT(*) FROM notifications WHERE status <> 'sent' AND channel = 'telegram'") == 0;
      },
      w.replicated() ? 150s : 30s));
  std::set<std::string> texts;
  for (const auto& m : w.telegram.messages()) {
    if (texts.insert(m.text).second) {
      result.unblock_messages += m.text.find("unblocked") != std::string::npos ? 1 : 0;
    } else {
      ++result.repeated_messages;
      MESSAGE("sent twice: " << m.text);
    }
  }
  if (!w.replicated()) {
    CHECK(result.unblock_messages == result.reconciler_transitions);
    CHECK(result.repeated_messages == 0);
  } else {
    // The replica is SIGKILLed once, and two windows of one write each are then open (ADR 0007):
    // - a transition and its notification are two writes (the notification is queued right after the transition,
    //   reconciler.cpp): a leader killed between the two loses that one message;
    // - sending a message and recording it sent are two steps (Telegram has no idempotency key): a replica killed
    //   between them leaves the row claimed, and another sends it again once the claim lapses.
    // So never more distinct messages than transitions, at most one fewer, and at most one sent twice.
    CHECK(result.unblock_messages <= result.reconciler_transitions);
    CHECK(result.unblock_messages >= result.reconciler_transitions - 1);
    CHECK(result.repeated_messages <= 1);
    if (result.unblock_messages != result.reconciler_transitions)
      MESSAGE((result.reconciler_transitions - result.unblock_messages)
              << " unblock message lost with the killed leader (killed between a transition and its notification)");
  }

  auto status = w.live().status_json();
  REQUIRE(status.is_object());
  CHECK(status["inbox"]["pending"] == 0);
  CHECK(status["inbox"]["failed"] == 0);
  CHECK(status["notifications"]["failed"] == 0);
  int done_in_status = 0;
  for (const auto& t : status["tasks"]) done_in_status += t["stage"] == "done" ? 1 : 0;
  CHECK(done_in_status == n);
  if (!w.replicated()) {
    CHECK(status["reconciler"]["unblocked_total"] == result.reconciler_transitions);
  } else {
    // The total is the leaders' read-add-write at each unblock, right after its transition: a leader killed between
    // the two takes that one count with it. Never more than the transitions, at most one fewer, reported when less.
    const long long total = status["reconciler"]["unblocked_total"].get<long long>();
    CHECK(total <= result.reconciler_transitions);
    CHECK(total >= result.reconciler_transitions - 1);
    if (total != result.reconciler_transitions)
      MESSAGE("reconciler.unblocked_total " << total << " of " << result.reconciler_transitions
                                            << " reconciler transitions (a leader died between the two writes)");
  }

  // ---- what /metrics says of the same run: every unblock by side and stage, every agent run, every handled
  // delivery, and the API calls the run needed. Counters are per process: with several replicas, and one of them
  // killed, only their consistency is checked (the run's own at_end checks leadership). ----
  if (w.replicated()) {
    for (std::size_t i : w.live_replicas()) {
      auto e = w.metrics(i);
      REQUIRE_MESSAGE(e, w.replica_ids[i] << " does not answer /metrics");
      for (const std::string& err : e->errors) FAIL_CHECK(w.replica_ids[i] << ": " << err);
      CHECK(sum_samples(*e, "orch_reconcile_unblocks_by_stage_total") <= result.reconciler_transitions);
      CHECK(sum_samples(*e, "orch_api_call_duration_seconds_count") == sum_samples(*e, "orch_api_calls_total"));
    }
  } else {
    httplib::Client c(w.orch->base_url());
    auto scraped = c.Get("/metrics");
    REQUIRE(scraped);
    REQUIRE(scraped->status == 200);
    Exposition e = parse_exposition(scraped->body);
    for (const std::string& err : e.errors) FAIL_CHECK(err);
    CHECK(sum_samples(e, "orch_reconcile_unblocks_by_stage_total") == result.reconciler_transitions);
    CHECK(sum_samples(e, "orch_reconcile_unblocks_by_stage_total", {R"(side="gate")"}) +
              sum_samples(e, "orch_reconcile_unblocks_by_stage_total", {R"(side="tracker")"}) ==
          result.reconciler_transitions);
    for (const char* agent : {"analyst", "developer", "reviewer"})
      CHECK_MESSAGE(sum_samples(e, "orch_agent_run_duration_seconds_count",
                                {std::string("agent=\"") + agent + "\"", R"(outcome="succeeded")"}) == n,
                    agent);
    const double handled = status["inbox"]["handled"].get<double>() + status["inbox"]["ignored"].get<double>();
    CHECK(sum_samples(e, "orch_delivery_handling_duration_seconds_count") == handled);
    CHECK(sum_samples(e, "orch_delivery_handling_duration_seconds_count", {R"(source="plane")", R"(event="issue")"}) >
          0);
    CHECK(sum_samples(e, "orch_api_calls_total", {R"(client="plane")", R"(outcome="ok")"}) > 0);
    CHECK(sum_samples(e, "orch_api_calls_total", {R"(client="gitea")", R"(outcome="ok")"}) > 0);
    CHECK(sum_samples(e, "orch_api_calls_total", {R"(client="telegram")", R"(outcome="ok")"}) ==
          static_cast<double>(w.telegram.messages().size()));
    CHECK(sum_samples(e, "orch_api_call_duration_seconds_count") == sum_samples(e, "orch_api_calls_total"));
  }
  if (run.at_end) run.at_end(w, result);
  for (std::size_t i : w.live_replicas())
    CHECK_MESSAGE(w.replicas[i]->terminate() == std::optional<int>(0), w.log_tails());
  MESSAGE(n << " items done in " << result.seconds << " s; dropped " << result.dropped << ", racy " << result.racy
            << " (" << racy_by_reconciler << " won by the reconciler), won by the agent's own gate check " << agent_won
            << " (" << dropped_by_agent << " dropped), dropped but taken by a late webhook of the "
            << "same item " << dropped_by_late_webhook << ", reconciler transitions " << result.reconciler_transitions
            << ", unblock messages " << result.unblock_messages << " (" << result.repeated_messages << " sent twice)");
  return result;
}

inline int item_count() {
  if (const char* n = std::getenv("ORCH_E2E_ITEMS"); n && *n) return std::max(1, std::atoi(n));
  return 50;
}

}  // namespace orch::testing::e2e
