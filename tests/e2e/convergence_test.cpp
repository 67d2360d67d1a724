// The convergence test of issue 7, end to end against the real binary: N Plane work items go through the whole
// pipeline (analysis -> human approval -> development -> CI -> review -> done) with script agents and a local bare
// repository as the remote, while the test plays Plane and Gitea: it changes the fakes' tables (the truth) and
// sends the matching signed webhook — or drops it (30 %), sends it twice (10 %), or adds a stale, out-of-order one.
// Every item must reach done with no duplicate task, job, branch, pull request or notification, and every dropped
// webhook must be recovered by the reconciler: one `reconciler` transition and one "unblocked" Telegram message
// each. The same run without loss must produce no unblock at all.
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <set>

#include "tests/e2e/e2e_world.h"
#include "tests/support/exposition.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

constexpr long long kAgentSettleMs = 300;
constexpr int kGraceS = 4;
constexpr auto kStartPace = std::chrono::milliseconds(150);  // one work item moved to In Progress per period

enum Step { kStart = 0, kApprove = 1, kCi = 2, kReview = 3, kFinished = 4 };
constexpr const char* kTargetStage[] = {"analysis", "development", "review", "done"};
constexpr const char* kStepName[] = {"start (Plane In Progress)", "approve (Plane Approved)", "CI success (Gitea status)",
                                     "review approved (Gitea review)"};

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
  long long truth_ms[4]{};        // when the test changed the fake's table for the step (system clock)
  long long task_updated_ms[4]{};  // the task's updated_at at that moment (gate-side steps)
  std::string start_body;         // the In Progress webhook as first built, re-sent late by some items
  std::string branch, sha;        // the task branch and its pushed head
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

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::map<std::string, TaskView> read_tasks(World& w) {
  std::map<std::string, TaskView> out;
  auto db = w.open_db();
  SQLite::Statement q(*db,
                      "SELECT t.work_item_id, t.id, t.stage, t.branch, t.blocked, COALESCE(t.pr_number, 0), "
                      "(SELECT COUNT(*) FROM jobs j WHERE j.task_id = t.id AND j.status IN ('queued', 'running')), "
                      "(SELECT COUNT(*) FROM jobs j WHERE j.task_id = t.id AND j.stage = t.stage AND "
                      " j.visit = t.visit AND j.status = 'succeeded'), t.updated_at, "
                      "(SELECT COALESCE(MAX(j.finished_at), 0) FROM jobs j WHERE j.task_id = t.id AND "
                      " j.stage = t.stage AND j.visit = t.visit AND j.status = 'succeeded') FROM tasks t");
  while (q.executeStep()) {
    TaskView v;
    v.id = q.getColumn(1).getInt64();
    v.stage = q.getColumn(2).getString();
    v.branch = q.getColumn(3).getString();
    v.blocked = q.getColumn(4).getInt() != 0;
    v.pr = q.getColumn(5).getInt64();
    v.active_jobs = q.getColumn(6).getInt64();
    v.succeeded_here = q.getColumn(7).getInt64();
    v.updated_ms = q.getColumn(8).getInt64();
    v.finished_ms = q.getColumn(9).getInt64();
    out[q.getColumn(0).getString()] = v;
  }
  return out;
}

bool accepted(const DeliveryResult& r) {
  return r.status == 202 || (r.status == 200 && r.body.find("duplicate") != std::string::npos);
}

struct RunResult {
  int items = 0, done = 0, dropped = 0, racy = 0, reconciler_transitions = 0, unblock_messages = 0;
  int agent_won = 0, dropped_by_agent = 0, racy_by_reconciler = 0;
  double seconds = 0;
};

RunResult run_pipeline(int n, const Loss& loss) {
  RunResult result;
  result.items = n;
  // Reconciler every second; the grace is what the test must beat with a delivered webhook, and the inbox is one
  // thread that creates each task's git worktree: on two busy cores a burst of starts queues for seconds.
  WorldOptions options;
  options.interval_s = 1;
  options.grace_s = kGraceS;
  World w(options);
  const long long grace_ms = kGraceS * 1000LL;
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
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
      REQUIRE_MESSAGE(!t.blocked, "task " << t.id << " blocked in " << t.stage << "\n" << w.orch->log_tail());
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
    if (result.done < n) std::this_thread::sleep_for(25ms);  // the poll period of this loop
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_MESSAGE(failed_sends == 0, (send_errors.empty() ? std::string() : send_errors.front()));
  REQUIRE_MESSAGE(result.done == n, "only " << result.done << " of " << n << " items reached done\n"
                                            << w.orch->log_tail());

  // ---- every item once: tasks, branches, pull requests, jobs, transitions ----
  auto db = w.open_db();
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
                "HAVING COUNT(*) > 1)") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status = 'succeeded' GROUP BY task_id, stage, visit "
                "HAVING COUNT(*) > 1)") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == 3LL * n);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status <> 'succeeded'") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT 1 FROM transitions GROUP BY task_id, to_stage HAVING COUNT(*) > 1)") ==
        0);

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
    SQLite::Statement q(*db, "SELECT COUNT(*) FROM deliveries WHERE handled_at >= ? AND (instr(CAST(body AS TEXT), ?) "
                             "> 0 OR (? <> '' AND instr(CAST(body AS TEXT), ?) > 0) OR (? <> '' AND "
                             "instr(CAST(body AS TEXT), ?) > 0))");
    q.bind(1, static_cast<std::int64_t>(since));
    q.bind(2, item.id);
    const std::string quoted_branch = item.branch.empty() ? "" : "\"" + item.branch + "\"";  // not orch/shop-10
    q.bind(3, quoted_branch);
    q.bind(4, quoted_branch);
    q.bind(5, item.sha);
    q.bind(6, item.sha);
    return q.executeStep() && q.getColumn(0).getInt64() > 0;
  };
  for (const Item& item : items) {
    auto task = read_tasks(w).at(item.id);
    for (int step = kStart; step <= kReview; ++step) {
      SQLite::Statement q(*db, "SELECT cause, at FROM transitions WHERE task_id = ? AND to_stage = ?");
      q.bind(1, static_cast<std::int64_t>(task.id));
      q.bind(2, kTargetStage[step]);
      REQUIRE_MESSAGE(q.executeStep(), "no transition to " << kTargetStage[step] << " for task " << task.id);
      const std::string cause = q.getColumn(0).getString();
      const long long at = q.getColumn(1).getInt64();
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
        CHECK_MESSAGE((cause == "webhook" || cause == "agent"),
                      name << " of task " << task.id << " was delivered (" << at - item.truth_ms[step]
                           << " ms after the truth), cause " << cause);
      }
    }
  }
  result.reconciler_transitions = static_cast<int>(w.count("SELECT COUNT(*) FROM transitions WHERE cause = 'reconciler'"));
  CHECK(result.reconciler_transitions ==
        result.dropped - dropped_by_agent - dropped_by_late_webhook + racy_by_reconciler);
  CHECK(w.count("SELECT COUNT(*) FROM transitions WHERE cause NOT IN ('webhook', 'reconciler', 'agent') AND "
                "to_stage IN ('analysis', 'development', 'review', 'done')") == 0);
  result.agent_won = agent_won;
  result.racy_by_reconciler = racy_by_reconciler;
  result.dropped_by_agent = dropped_by_agent;

  // ---- one "unblocked" Telegram message per reconciler transition, none twice ----
  auto unblocks = [&] {
    int k = 0;
    for (const auto& m : w.telegram.messages()) k += m.text.find("unblocked") != std::string::npos ? 1 : 0;
    return k;
  };
  CHECK(eventually([&] { return w.count("SELECT COUNT(*) FROM notifications WHERE status <> 'sent'") == 0; }, 30s));
  result.unblock_messages = unblocks();
  CHECK(result.unblock_messages == result.reconciler_transitions);
  std::set<std::string> texts;
  for (const auto& m : w.telegram.messages()) CHECK_MESSAGE(texts.insert(m.text).second, "sent twice: " << m.text);

  auto status = w.orch->status_json();
  REQUIRE(status.is_object());
  CHECK(status["inbox"]["pending"] == 0);
  CHECK(status["inbox"]["failed"] == 0);
  CHECK(status["notifications"]["failed"] == 0);
  int done_in_status = 0;
  for (const auto& t : status["tasks"]) done_in_status += t["stage"] == "done" ? 1 : 0;
  CHECK(done_in_status == n);
  CHECK(status["reconciler"]["unblocked_total"] == result.reconciler_transitions);

  // ---- what /metrics says of the same run: every unblock by side and stage, every agent run, every handled
  // delivery, and the API calls the run needed ----
  {
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
    CHECK(sum_samples(e, "orch_delivery_handling_duration_seconds_count",
                      {R"(source="plane")", R"(event="issue")"}) > 0);
    CHECK(sum_samples(e, "orch_api_calls_total", {R"(client="plane")", R"(outcome="ok")"}) > 0);
    CHECK(sum_samples(e, "orch_api_calls_total", {R"(client="gitea")", R"(outcome="ok")"}) > 0);
    CHECK(sum_samples(e, "orch_api_calls_total", {R"(client="telegram")", R"(outcome="ok")"}) ==
          static_cast<double>(w.telegram.messages().size()));
    CHECK(sum_samples(e, "orch_api_call_duration_seconds_count") == sum_samples(e, "orch_api_calls_total"));
  }
  CHECK(w.orch->terminate() == std::optional<int>(0));
  MESSAGE(n << " items done in " << result.seconds << " s; dropped " << result.dropped << ", racy " << result.racy
            << " (" << racy_by_reconciler << " won by the reconciler), won by the agent's own gate check "
            << agent_won << " (" << dropped_by_agent << " dropped), dropped but taken by a late webhook of the "
            << "same item " << dropped_by_late_webhook << ", reconciler transitions "
            << result.reconciler_transitions << ", unblock messages " << result.unblock_messages);
  return result;
}

int item_count() {
  if (const char* n = std::getenv("ORCH_E2E_ITEMS"); n && *n) return std::max(1, std::atoi(n));
  return 50;
}

}  // namespace

TEST_CASE("e2e convergence: 30 pct dropped / 10 pct doubled / out of order: all done / every drop unblocked once") {
  RunResult r = run_pipeline(item_count(), Loss{.drop = 0.30, .twice = 0.10 / 0.70, .stale = 0.15});
  CHECK(r.dropped > 0);
  CHECK(r.unblock_messages == r.reconciler_transitions);
}

TEST_CASE("e2e convergence without loss: doubled and out-of-order webhooks / zero unblock notifications") {
  RunResult r = run_pipeline(std::max(1, item_count() / 2), Loss{.drop = 0.0, .twice = 0.10, .stale = 0.15});
  CHECK(r.dropped == 0);
  // Every unblock of this run is a delivered webhook that waited in orch's own inbox longer than the grace (a
  // "racy" step, see run_pipeline): with nothing lost, no other unblock is allowed.
  CHECK(r.unblock_messages == r.racy_by_reconciler);
  CHECK(r.reconciler_transitions == r.racy_by_reconciler);
  // The issue's "zero unblock notifications": the reconciler waits while deliveries are pending in the inbox
  // (reconciler.cpp), so a webhook queued behind a burst of starts is handled by its own handler, not "unblocked".
  CHECK_MESSAGE(r.reconciler_transitions == 0, r.reconciler_transitions << " unblock(s) with no event lost");
}
