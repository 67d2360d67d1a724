#include <doctest/doctest.h>

#include <atomic>
#include <cctype>
#include <thread>
#include <vector>

#include "tests/support/engine_fixture.h"
#include "webhooks/handlers/dispatcher.h"
#include "webhooks/handlers/handlers.h"

#include <nlohmann/json.hpp>

using namespace orch;
using namespace orch::testing;

namespace {

using Kind = HandleOutcome::Kind;
const std::string kSha = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";

struct HandlerFixture {
  EngineFixture f;
  Handlers h{*f.store, f.engine, f.plane, f.gitea, f.config, f.clock, f.log};
  const ProjectSpec& shop = f.config.projects.front();

  WorkItem item(const std::string& id, const std::string& state, std::int64_t seq = 42) {
    return WorkItem{id, shop.plane_project_id, seq, "Fix the parser; $(rm -rf ~)", "Needs legal sign-off.", state, {}};
  }
  std::vector<JobRow> jobs(TaskId id) { return f.store->jobs_for_task(id).value(); }
  std::vector<TransitionRow> transitions(TaskId id) { return f.store->transitions_for_task(id).value(); }
};

}  // namespace

TEST_CASE("In Progress with no task creates it (key and branch from the work item) and enqueues its first job") {
  HandlerFixture t;
  auto out = t.h.handle_status_start(t.shop, t.item("wi-42", "In Progress"), Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kChanged);
  auto task = t.f.store->find_task_by_work_item("wi-42").value();
  REQUIRE(task);
  CHECK(out->task_id == task->id);
  CHECK(task->work_item_key == "SHOP-42");
  CHECK(task->branch == "orch/shop-42");  // never from the title
  CHECK(task->title == "Fix the parser; $(rm -rf ~)");
  CHECK(task->stage == "analysis");
  CHECK(task->tracker_state == "In Progress");
  auto jobs = t.jobs(task->id);
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].agent == "analyst");
  REQUIRE(t.transitions(task->id).size() == 1);
  CHECK(t.transitions(task->id)[0].cause == Cause::kWebhook);

  // The same event again (a duplicate, a replay, the reconciler): nothing changes.
  auto again = t.h.handle_status_start(t.shop, t.item("wi-42", "In Progress"), Cause::kReconciler);
  REQUIRE(again.ok());
  CHECK(again->kind == Kind::kNoop);
  CHECK(t.jobs(task->id).size() == 1);
  CHECK(t.transitions(task->id).size() == 1);
  CHECK(t.f.store->count_tasks().value() == 1);
}

TEST_CASE("a task left in created by a crash between claim and advance is started by the next start event, once") {
  HandlerFixture t;
  auto claim = t.f.store->create_task_atomic({"shop", "wi-7", "SHOP-7", "t", "", "orch/shop-7"}, t.f.clock.now());
  REQUIRE(claim.ok());
  auto out = t.h.handle_status_start(t.shop, t.item("wi-7", "In Progress", 7), Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kChanged);
  CHECK(t.f.reload(claim.value().task.id).stage == "analysis");
  CHECK(t.jobs(claim.value().task.id).size() == 1);
  CHECK(t.h.handle_status_start(t.shop, t.item("wi-7", "In Progress", 7), Cause::kWebhook).value().kind == Kind::kNoop);
  CHECK(t.jobs(claim.value().task.id).size() == 1);
}

TEST_CASE("fifty racing start calls for one work item create one task, one branch and one first job") {
  HandlerFixture t;
  std::atomic<int> changed{0}, errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i)
    threads.emplace_back([&] {
      auto out = t.h.handle_status_start(t.shop, t.item("wi-race", "In Progress", 9), Cause::kWebhook);
      if (!out.ok())
        ++errors;
      else if (out->kind == Kind::kChanged)
        ++changed;
    });
  for (auto& th : threads) th.join();
  CHECK(errors == 0);
  CHECK(changed == 1);
  CHECK(t.f.store->count_tasks().value() == 1);
  auto task = t.f.store->find_task_by_work_item("wi-race").value();
  REQUIRE(task);
  CHECK(task->branch == "orch/shop-9");
  CHECK(t.jobs(task->id).size() == 1);
  CHECK(t.transitions(task->id).size() == 1);
}

TEST_CASE("Approved advances a task waiting in a human stage, the same approval again changes nothing") {
  HandlerFixture t;
  TaskRow task = t.f.task_in("analysis");
  auto out = t.h.handle_verdict(t.shop, t.item(task.work_item_id, "Approved"), true, "", Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kChanged);
  TaskRow after = t.f.reload(task.id);
  CHECK(after.stage == "development");
  CHECK(after.tracker_state == "Approved");
  auto jobs = t.jobs(task.id);
  REQUIRE(jobs.size() == 2);  // analyst (from task_in), then developer
  CHECK(jobs.back().agent == "developer");
  auto again = t.h.handle_verdict(t.shop, t.item(task.work_item_id, "Approved"), true, "", Cause::kReconciler);
  REQUIRE(again.ok());
  CHECK(again->kind == Kind::kIgnored);
  CHECK(t.f.reload(task.id).stage == "development");
  CHECK(t.jobs(task.id).size() == 2);
}

TEST_CASE("Rejected takes the declared rollback edge with the reason, once per tracker state") {
  HandlerFixture t;
  TaskRow task = t.f.task_in("analysis");
  const size_t jobs_before = t.jobs(task.id).size();
  auto out = t.h.handle_tracker_state(t.shop, t.item(task.work_item_id, "Rejected"), Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kChanged);
  TaskRow back = t.f.reload(task.id);
  CHECK(back.stage == "analysis");
  CHECK(back.visit == task.visit + 1);
  CHECK(back.rejection_reason == "rejected in Plane");
  CHECK(t.jobs(task.id).size() == jobs_before + 1);  // the analyst runs again, for the new visit

  // Plane's state + state_id pair, or the reconciler seeing the item still Rejected: no second rollback.
  auto dup = t.h.handle_tracker_state(t.shop, t.item(task.work_item_id, "Rejected"), Cause::kReconciler);
  REQUIRE(dup.ok());
  CHECK(dup->kind == Kind::kNoop);
  CHECK(t.f.reload(task.id).visit == back.visit);

  // The human moves it away and rejects it again: a new verdict.
  auto todo = t.h.handle_tracker_state(t.shop, t.item(task.work_item_id, "Todo"), Cause::kWebhook);
  REQUIRE(todo.ok());
  CHECK(todo->kind == Kind::kIgnored);
  CHECK(t.f.reload(task.id).tracker_state == "Todo");
  auto again = t.h.handle_tracker_state(t.shop, t.item(task.work_item_id, "Rejected"), Cause::kWebhook);
  REQUIRE(again.ok());
  CHECK(again->kind == Kind::kChanged);
  CHECK(t.f.reload(task.id).visit == back.visit + 1);
}

TEST_CASE("a verdict for a task outside a human stage, or for no task, is ignored with a logged reason") {
  HandlerFixture t;
  TaskRow dev = t.f.task_in("development");
  auto out = t.h.handle_verdict(t.shop, t.item(dev.work_item_id, "Rejected"), false, "no", Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kIgnored);
  CHECK(out->reason.find("not a human stage") != std::string::npos);
  CHECK(t.f.log.contains("info verdict: rejection of SHOP-1 ignored: development is not a human stage"));
  CHECK(t.f.reload(dev.id).stage == "development");
  auto unknown = t.h.handle_verdict(t.shop, t.item("wi-nobody", "Approved"), true, "", Cause::kWebhook);
  REQUIRE(unknown.ok());
  CHECK(unknown->kind == Kind::kIgnored);
  auto other = t.h.handle_tracker_state(t.shop, t.item("wi-nobody", "Backlog"), Cause::kWebhook);
  REQUIRE(other.ok());
  CHECK(other->kind == Kind::kIgnored);
  CHECK(t.f.store->count_tasks().value() == 1);
}

TEST_CASE("a CI status resolves its sha through recorded branch heads first") {
  HandlerFixture t;
  TaskRow one = t.f.task_in("development", "SHOP-1");
  t.f.task_in("development", "SHOP-2");  // the single-task fallback would be ambiguous
  REQUIRE(t.h.handle_push(t.shop, "orch/shop-1", kSha, Cause::kWebhook).ok());
  t.f.gitea.set_branch("orch/shop-1", kSha);
  t.f.gitea.set_status(kSha, CiState::kSuccess);
  auto out = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kChanged);
  CHECK(out->task_id == one.id);
  TaskRow after = t.f.reload(one.id);
  CHECK(after.stage == "review");
  CHECK(after.head_sha == kSha);
  CHECK(t.jobs(one.id).back().agent == "reviewer");
}

TEST_CASE("a CI status resolves its sha through Gitea's open pull requests second, and remembers the branch") {
  HandlerFixture t;
  t.f.task_in("development", "SHOP-1");
  TaskRow two = t.f.task_in("development", "SHOP-2");
  t.f.gitea.set_pr("orch/shop-2", PullRequestInfo{7, true, false, "orch/shop-2", kSha, "main", "http://g/pulls/7"});
  t.f.gitea.set_branch("orch/shop-2", kSha);
  t.f.gitea.set_status(kSha, CiState::kSuccess);
  auto out = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kChanged);
  CHECK(out->task_id == two.id);
  CHECK(t.f.reload(two.id).stage == "review");
  auto remembered = t.f.store->branches_with_head("acme/shop", kSha).value();
  CHECK(remembered == std::vector<std::string>{"orch/shop-2"});
}

TEST_CASE("a CI status falls back to the single task in a CI-gated stage, zero or several resolve nothing") {
  HandlerFixture t;
  auto none = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE(none.ok());
  CHECK(none->kind == Kind::kIgnored);
  CHECK(t.f.log.contains("info ci status: ci success (ci/build) on 9e8d7c6 resolves to no task"));

  TaskRow one = t.f.task_in("development", "SHOP-1");
  t.f.gitea.set_branch("orch/shop-1", kSha);
  t.f.gitea.set_status(kSha, CiState::kPending);
  auto pending = t.h.handle_ci_status(t.shop, kSha, "pending", "ci/build", Cause::kWebhook);
  REQUIRE(pending.ok());
  CHECK(pending->kind == Kind::kNoop);  // resolved, but the gate is red: it waits
  CHECK(t.f.reload(one.id).stage == "development");
  CHECK(t.f.reload(one.id).head_sha.empty());  // a guessed task does not get the sha as its head

  TaskRow two = t.f.task_in("development", "SHOP-2");
  t.f.gitea.set_status(kSha, CiState::kSuccess);
  auto ambiguous = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE(ambiguous.ok());
  CHECK(ambiguous->kind == Kind::kIgnored);
  CHECK(t.f.log.contains("is ambiguous: 2 tasks (SHOP-1, SHOP-2)"));
  CHECK(t.f.reload(one.id).stage == "development");
  CHECK(t.f.reload(two.id).stage == "development");

  REQUIRE(t.f.engine.advance_stage(two.id, AdvanceRequest{}).ok());  // SHOP-2 leaves: SHOP-1 is the only one
  auto single = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE(single.ok());
  CHECK(single->kind == Kind::kChanged);
  CHECK(t.f.reload(one.id).stage == "review");
}

TEST_CASE("a Gitea event never moves a task out of a human stage: only the tracker verdict does") {
  HandlerFixture t;
  TaskRow task = t.f.task_in("analysis");
  t.f.plane.set_item(WorkItem{task.work_item_id, t.shop.plane_project_id, 1, "t", "", "Approved", {}});
  REQUIRE(t.h.handle_push(t.shop, task.branch, kSha, Cause::kWebhook).ok());
  auto out = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kNoop);
  CHECK(t.f.reload(task.id).stage == "analysis");
}

TEST_CASE("pull request events record the PR facts and the branch head, then let the gate look again") {
  HandlerFixture t;
  TaskRow task = t.f.task_in("review");
  PullRequestInfo pr{12, true, false, task.branch, kSha, "main", "http://g/pulls/12"};
  auto opened = t.h.handle_pull_request(t.shop, "opened", pr, Cause::kWebhook);
  REQUIRE(opened.ok());
  CHECK(opened->kind == Kind::kNoop);  // not approved, not merged
  TaskRow after = t.f.reload(task.id);
  CHECK(after.pr_number == 12);
  CHECK(after.pr_state == PrState::kOpen);
  CHECK(after.head_sha == kSha);
  CHECK(t.f.store->branches_with_head("acme/shop", kSha).value() == std::vector<std::string>{task.branch});

  CHECK(t.h.handle_pull_request(t.shop, "assigned", pr, Cause::kWebhook).value().kind == Kind::kIgnored);

  // Merged, and Gitea already renamed the deleted head branch: found through the recorded head sha.
  PullRequestInfo merged{12, false, true, "refs/pull/12/head", kSha, "main", "http://g/pulls/12"};
  t.f.gitea.set_pr(task.branch, PullRequestInfo{12, false, true, task.branch, kSha, "main", ""});
  auto closed = t.h.handle_pull_request(t.shop, "closed", merged, Cause::kWebhook);
  REQUIRE(closed.ok());
  CHECK(closed->kind == Kind::kChanged);
  TaskRow done = t.f.reload(task.id);
  CHECK(done.stage == "done");
  CHECK(done.pr_state == PrState::kMerged);

  auto stranger = t.h.handle_pull_request(
      t.shop, "opened", PullRequestInfo{3, true, false, "feature/x", "abc", "main", ""}, Cause::kWebhook);
  REQUIRE(stranger.ok());
  CHECK(stranger->kind == Kind::kIgnored);
}

TEST_CASE("an approving review advances review, a changes-requested review takes on_changes_requested") {
  HandlerFixture t;
  TaskRow a = t.f.task_in("review", "SHOP-1");
  PullRequestInfo pa{12, true, false, a.branch, kSha, "main", ""};
  t.f.gitea.set_pr(a.branch, pa);
  t.f.gitea.set_approved(12, true);
  auto approved = t.h.handle_review(t.shop, pa, true, Cause::kWebhook);
  REQUIRE(approved.ok());
  CHECK(approved->kind == Kind::kChanged);
  CHECK(t.f.reload(a.id).stage == "done");
  CHECK(t.f.reload(a.id).review_state == ReviewState::kApproved);

  TaskRow b = t.f.task_in("review", "SHOP-2");
  PullRequestInfo pb{13, true, false, b.branch, "beef", "main", ""};
  auto rejected = t.h.handle_review(t.shop, pb, false, Cause::kWebhook);
  REQUIRE(rejected.ok());
  CHECK(rejected->kind == Kind::kChanged);
  TaskRow back = t.f.reload(b.id);
  CHECK(back.stage == "development");
  CHECK(back.review_state == ReviewState::kChangesRequested);
  CHECK(back.rejection_reason == "changes requested in review of pr #13");
  CHECK(t.jobs(b.id).back().agent == "developer");
  // Gitea's manual redeliver of the same review: development declares no such edge; the gate stays red.
  auto again = t.h.handle_review(t.shop, pb, false, Cause::kWebhook);
  REQUIRE(again.ok());
  CHECK(again->kind == Kind::kNoop);
  CHECK(t.f.reload(b.id).stage == "development");
}

TEST_CASE("a push records the branch head and the task's head sha, deletes and tags are ignored") {
  HandlerFixture t;
  TaskRow task = t.f.task_in("development");
  auto out = t.h.handle_push(t.shop, task.branch, kSha, Cause::kWebhook);
  REQUIRE(out.ok());
  CHECK(out->kind == Kind::kNoop);
  CHECK(t.f.reload(task.id).head_sha == kSha);
  CHECK(t.f.store->branches_with_head("acme/shop", kSha).value() == std::vector<std::string>{task.branch});
  CHECK(t.h.handle_push(t.shop, "feature/x", "abc", Cause::kWebhook).value().kind == Kind::kNoop);
  CHECK(t.h.handle_push(t.shop, task.branch, std::string(40, '0'), Cause::kWebhook).value().kind == Kind::kIgnored);
  CHECK(t.h.handle_push(t.shop, "", "abc", Cause::kWebhook).value().kind == Kind::kIgnored);
  CHECK(t.f.reload(task.id).stage == "development");
}

TEST_CASE("a transient failure reading the truth is returned as kUnavailable, not swallowed") {
  HandlerFixture t;
  t.f.task_in("development", "SHOP-1");
  t.f.task_in("development", "SHOP-2");
  t.f.gitea.fail_with(Status{Code::kUnavailable, "gitea: 502"});
  auto out = t.h.handle_ci_status(t.shop, kSha, "success", "ci/build", Cause::kWebhook);
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code == Code::kUnavailable);
}

TEST_CASE("the dispatcher ignores orch's own Plane writes coming back, by the configured actor id") {
  HandlerFixture t;
  DispatcherOptions options;
  options.plane_echo_actor_ids = {"0b0b0b0b-0000-4000-8000-00000000b07"};
  Dispatcher echo_aware(t.h, t.f.config, options);
  Dispatcher plain(t.h, t.f.config);
  nlohmann::json body = {
      {"event", "issue"},
      {"action", "updated"},
      {"data",
       {{"id", "wi-echo"},
        {"project", t.shop.plane_project_id},
        {"sequence_id", 5},
        {"name", "n"},
        {"state", {{"id", "In Progress"}, {"name", "In Progress"}, {"group", "started"}}}}},
      {"activity", {{"field", "state"}, {"actor", {{"id", "0b0b0b0b-0000-4000-8000-00000000b07"}}}}}};
  DeliveryRow row;
  row.source = Source::kPlane;
  row.delivery_id = "echo-1";
  row.event = "issue";
  row.body = body.dump();
  auto ignored = echo_aware.handle_delivery(row);
  REQUIRE(ignored.ok());
  CHECK(ignored->kind == Kind::kIgnored);
  CHECK(ignored->reason == "our own write (orch's Plane change coming back)");
  CHECK(t.f.store->count_tasks().value() == 0);
  Dispatcher learner(t.h, t.f.config);  // learns the id at run time, as the app does from GET /users/me/
  learner.add_plane_echo_actor("0b0b0b0b-0000-4000-8000-00000000b07");
  auto learnt = learner.handle_delivery(row);
  REQUIRE(learnt.ok());
  CHECK(learnt->kind == Kind::kIgnored);
  CHECK(t.f.store->count_tasks().value() == 0);
  auto started = plain.handle_delivery(row);
  REQUIRE(started.ok());
  CHECK(started->kind == Kind::kChanged);
  CHECK(t.f.store->count_tasks().value() == 1);
}

TEST_CASE("a Gitea delivery naming the repository as Acme/Shop reaches the project configured as acme/shop") {
  // Gitea sends repository.full_name with the owner's own capitalisation and resolves names case-insensitively, so
  // its REST calls work either way; a case-sensitive match would ignore every webhook of such a repository.
  HandlerFixture t;
  REQUIRE(t.shop.gitea_repo == "acme/shop");
  TaskRow task = t.f.task_in("development");
  Dispatcher dispatcher(t.h, t.f.config);
  DeliveryRow row;
  row.source = Source::kGitea;
  row.delivery_id = "push-1";
  row.event = "push";
  row.body = nlohmann::json{{"ref", "refs/heads/" + task.branch},
                            {"after", kSha},
                            {"repository", {{"full_name", "Acme/Shop"}, {"name", "Shop"}}}}
                 .dump();
  auto out = dispatcher.handle_delivery(row);
  REQUIRE(out.ok());
  CHECK(out->kind != Kind::kIgnored);
  CHECK(t.f.reload(task.id).head_sha == kSha);
  // Recorded under the configured spelling, which is what the gates and the REST calls use.
  CHECK(t.f.store->branches_with_head("acme/shop", kSha).value() == std::vector<std::string>{task.branch});
  // A repository that is not configured in any case is still ignored, with its name in the reason.
  row.body =
      nlohmann::json{{"ref", "refs/heads/x"}, {"after", kSha}, {"repository", {{"full_name", "Acme/Other"}}}}.dump();
  auto other = dispatcher.handle_delivery(row);
  REQUIRE(other.ok());
  CHECK(other->kind == Kind::kIgnored);
  CHECK(other->reason == "unknown gitea repository Acme/Other");
}

TEST_CASE("a Plane delivery whose project id is spelled in upper case reaches its project") {
  HandlerFixture t;
  std::string upper = t.shop.plane_project_id;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  REQUIRE(upper != t.shop.plane_project_id);
  CHECK(t.f.config.find_project_by_plane_id(upper) == &t.shop);
  CHECK(t.f.config.find_project_by_repo("ACME/SHOP") == &t.shop);
  CHECK(t.f.config.find_project_by_repo("acme/shop2") == nullptr);
}
