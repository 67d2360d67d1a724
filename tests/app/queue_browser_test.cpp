// The /queue page in a real browser: Debian's chromium, headless, against a running App. Skipped (with a message)
// only when chromium is not installed (scripts/install-deps.sh --with-browser installs it).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/app/app_harness.h"
#include "tests/support/cdp_browser.h"

namespace orch {
namespace {

using namespace orch::testing;

std::string run(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

std::string chromium_command(const TempDir& profile, const std::string& extra, const std::string& url) {
  return std::string(kChromium) +
         " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
         " --disable-component-update --disable-sync --disable-dev-shm-usage --user-data-dir=" +
         profile.path().string() + " --virtual-time-budget=3000 " + extra + " '" + url + "' 2>/dev/null";
}

// /queue of the running app, with the admin token as basic-auth credentials in the URL (the browser sends them).
std::string queue_url(RunningApp& app) {
  return "http://admin:" + std::string(kAdminToken) + "@127.0.0.1:" + std::to_string(app.app().port()) + "/queue";
}

// /queue of the running app in a headless chromium on a fresh profile, driven over DevTools, once its script has
// fetched /queue.json with the browser's credentials and rendered it (data-source="live").
struct LiveQueuePage {
  explicit LiveQueuePage(RunningApp& app) : chrome(profile), session(chrome.open(queue_url(app))) {
    REQUIRE_FALSE(session.empty());
    REQUIRE(eventually([&] { return js("document.getElementById('status')?.getAttribute('data-source')") == "live"; }));
  }
  ~LiveQueuePage() {
    try {  // DevTools' own destructor SIGKILLs chromium if this fails, and a destructor must not throw
      (void)chrome.call("Browser.close", nlohmann::json::object());
    } catch (...) {
    }
  }
  nlohmann::json js(const std::string& expression) { return chrome.eval(session, expression); }
  // The status line's data-last-action: what the last button press answered ("replay ID ok", ...).
  nlohmann::json last_action() { return js("document.getElementById('status').getAttribute('data-last-action')"); }

  TempDir profile;
  DevTools chrome;
  const std::string session;
};

// The page's DOM once its script has fetched /queue.json and rendered, from a fresh browser profile.
std::string dump_queue_dom(RunningApp& app) {
  TempDir profile;
  std::string dom = run(chromium_command(profile, "--dump-dom", queue_url(app)));
  REQUIRE_MESSAGE(dom.find("<html") != std::string::npos, dom);
  return dom;
}

struct Seeded {
  TaskRow created, analysis, development, review, done, blocked;
};

Seeded seed_every_stage(RunningApp& app) {
  Seeded s;
  s.created = app.add_task("SHOP-1", "Just arrived", {});
  s.analysis = app.add_task("SHOP-2", "Analyse checkout", {"analysis"});
  s.development = app.add_task("SHOP-3", "Build the cart", {"analysis", "development"});
  REQUIRE(app.store()
              .record_facts(s.development.id,
                            TaskFacts{.pr_number = 12,
                                      .pr_state = PrState::kOpen,
                                      .review_state = std::nullopt,
                                      .head_sha = "3f9a0c5",
                                      .tracker_state = std::nullopt},
                            SystemClock().now())
              .ok());
  s.review = app.add_task("SHOP-4", "Review the payment flow", {"analysis", "development", "review"});
  s.done = app.add_task("SHOP-5", "Shipped already", {"analysis", "development", "review", "done"});
  s.blocked = app.add_task("SHOP-6", kHostileTitle, {"analysis", "development"});
  REQUIRE(app.store().set_blocked(s.blocked.id, true, "agent failed 3 times", SystemClock().now()).ok());
  app.add_failed_job(s.blocked, "cloning...\n<script>alert(2)</script>\nagent exited with 1\n");
  app.add_failed_delivery("dlv-failed-1", "gitea unavailable");
  app.set_snapshot(R"({"last_pass_started_at":"2026-11-23T10:00:00Z","last_pass_duration_s":0.012,)"
                   R"("unblocked_total":3,"last_unblocked":"SHOP-42","last_error":null,"interval_s":60})");
  return s;
}

TEST_CASE("the queue page renders every section in headless chromium, hostile strings as text") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  seed_every_stage(app);
  app.start();
  const std::string dom = dump_queue_dom(app);
  CAPTURE(dom);

  for (const char* section : {R"(id="reconciler")", R"(id="tasks")", R"(id="jobs")", R"(id="inbox")",
                              R"(id="notifications")", R"(id="transitions")"})
    CHECK(dom.find(section) != std::string::npos);
  // The page re-fetched /queue.json with the browser's credentials and re-rendered.
  CHECK(dom.find(R"(data-source="live")") != std::string::npos);
  for (const char* key : {"SHOP-1", "SHOP-2", "SHOP-3", "SHOP-4", "SHOP-5", "SHOP-6"})
    CHECK(dom.find(key) != std::string::npos);
  for (const char* heading : {">created (1)<", ">analysis (1)<", ">development (2)<", ">review (1)<", ">done (1)<"})
    CHECK(dom.find(heading) != std::string::npos);
  // The hostile title is text: escaped in the serialised DOM, and no <img> element exists.
  CHECK(dom.find("&lt;img src=x onerror=alert(1)&gt;") != std::string::npos);
  CHECK(dom.find("<img") == std::string::npos);
  CHECK(dom.find("&lt;script&gt;alert(2)&lt;/script&gt;") != std::string::npos);  // the log tail
  CHECK(dom.find(R"(class="task blocked")") != std::string::npos);
  CHECK(dom.find("agent failed 3 times") != std::string::npos);
  // Why each task waits: the reason, then its sentence, as text.
  CHECK(dom.find(R"(<td class="waiting"><span class="reason">blocked</span> blocked in development)") !=
        std::string::npos);
  // Links to Plane and Gitea.
  CHECK(dom.find(std::string("href=\"") + kPlaneBase +
                 "/acme/projects/22b6fc9c-1849-45da-b103-52a3e3a6b4c1/issues/wi-SHOP-3\"") != std::string::npos);
  CHECK(dom.find(std::string("href=\"") + kGiteaBase + "/acme/shop/src/branch/orch/shop-3\"") != std::string::npos);
  CHECK(dom.find(std::string("href=\"") + kGiteaBase + "/acme/shop/pulls/12\"") != std::string::npos);
  // The reconcile block, the inbox with its replay button, the transitions with their cause.
  CHECK(dom.find("SHOP-42") != std::string::npos);
  CHECK(dom.find("dlv-failed-1") != std::string::npos);
  CHECK(dom.find(R"(class="replay")") != std::string::npos);
  CHECK(dom.find(R"(class="cause">webhook<)") != std::string::npos);
  CHECK(dom.find("gitea unavailable") != std::string::npos);

  // The screenshot, kept beside the test binaries as an artifact.
  const std::filesystem::path shot = std::filesystem::path(ORCH_BINARY).parent_path() / "queue.png";
  std::filesystem::remove(shot);
  TempDir profile2;
  run(chromium_command(profile2, "--screenshot=" + shot.string() + " --window-size=1280,1600", queue_url(app)));
  CHECK(std::filesystem::exists(shot));
  MESSAGE("screenshot: " << shot.string());
}

TEST_CASE("clicking Replay on a failed delivery in chromium replays it and the page shows it handled") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  seed_every_stage(app);
  app.start();
  LiveQueuePage page(app);
  auto js = [&](const std::string& expr) { return page.js(expr); };

  const std::string row = R"(document.querySelector('tr[data-delivery-id="dlv-failed-1"]'))";
  REQUIRE(js(row + " !== null") == true);
  CHECK(js(row + ".querySelector('button.replay').click(), true") == true);
  // The button's POST went through the admin endpoint with the page's credentials, and the refresh that follows
  // no longer lists the delivery.
  CHECK(eventually([&] { return page.last_action() == "replay dlv-failed-1 ok"; }));
  CHECK(eventually([&] { return js(row + " === null") == true; }));
  auto delivery = app.store().find_delivery("dlv-failed-1");
  REQUIRE(delivery.ok());
  REQUIRE(delivery.value());
  CHECK(delivery.value()->status != DeliveryStatus::kFailed);
  CHECK(app.log().contains("admin: delivery dlv-failed-1 replayed"));
}

TEST_CASE("the delivery ledger in chromium: outcomes, duplicates, hostile text, the filter by item and Replay") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  const Seeded s = seed_every_stage(app);
  const TimePoint now = SystemClock().now();
  auto stored = [&](const std::string& id, const std::string& event) {
    NewDelivery d{.source = Source::kGitea,
                  .delivery_id = id,
                  .event = event,
                  .body_digest = "digest-" + id,
                  .body = "{}",
                  .received_at = now};
    auto ins = app.store().insert_delivery(d, false);
    REQUIRE(ins.ok());
    return ins.value();
  };
  const InboxInsert pr = stored("dlv-pr-1", "pull_request");
  REQUIRE(
      app.store()
          .finish_delivery(pr.seq, {DeliveryStatus::kHandled, "", s.development.id, std::string(kHostileTitle)}, now)
          .ok());
  REQUIRE(stored("dlv-pr-1", "pull_request").duplicate);  // re-sent: refused, and on the ledger
  const InboxInsert other = stored("dlv-other-1", "push");
  REQUIRE(app.store()
              .finish_delivery(other.seq, {DeliveryStatus::kIgnored, "push to a branch of no task", 0, ""}, now)
              .ok());
  app.start();
  LiveQueuePage page(app);
  auto js = [&](const std::string& expr) { return page.js(expr); };
  auto rows = [&](const std::string& selector) {
    return js("document.querySelectorAll('#ledger tr.ledger" + selector + "').length");
  };

  CHECK(rows("") == 4);  // the failed delivery of the seed, the handled one, its duplicate and the ignored push
  CHECK(rows(".handled") == 1);
  CHECK(rows(".duplicate") == 1);
  CHECK(rows(".ignored") == 1);
  CHECK(rows(".failed") == 1);
  CHECK(js("document.querySelector('#ledger tr.duplicate .why').textContent") == "duplicate of dlv-pr-1");
  CHECK(js("document.querySelector('#ledger tr.duplicate button.replay') === null") == true);
  CHECK(js("document.querySelector('#ledger tr.ignored .why').textContent") == "push to a branch of no task");
  // What handling concluded is text, however hostile.
  CHECK(js("document.querySelector('#ledger tr.handled .why').textContent") == kHostileTitle);
  CHECK(js("document.querySelector('#ledger img') === null") == true);
  CHECK(js("document.querySelector('#ledger tr.handled .key').textContent") == "SHOP-3");

  // The filter keeps the rows about one work item, across the page's refreshes.
  CHECK(js("(() => { const f = document.getElementById('ledger-filter'); f.value = 'SHOP-3';"
           " f.dispatchEvent(new Event('change')); return true; })()") == true);
  CHECK(rows("") == 2);
  CHECK(js("document.querySelector('#ledger tr.ignored') === null") == true);
  CHECK(js("refresh().then(() => document.body.setAttribute('data-refreshed', 'yes')), true") == true);
  CHECK(eventually([&] { return js("document.body.getAttribute('data-refreshed')") == "yes"; }));
  CHECK(rows("") == 2);

  // Replay from the ledger goes through the admin endpoint.
  CHECK(js("document.querySelector('#ledger tr.handled button.replay').click(), true") == true);
  CHECK(eventually([&] { return page.last_action() == "replay dlv-pr-1 ok"; }));
  CHECK(app.log().contains("admin: delivery dlv-pr-1 replayed"));
}

TEST_CASE("clicking Re-run on a task in chromium re-runs its stage, and human or done stages have no button") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  const Seeded s = seed_every_stage(app);
  app.start();
  LiveQueuePage page(app);
  auto js = [&](const std::string& expr) { return page.js(expr); };
  auto row = [](const TaskRow& t) {
    return "document.querySelector('tr[data-task-id=\"" + std::to_string(t.id) + "\"]')";
  };
  CHECK(js(row(s.analysis) + ".querySelector('button.rerun') === null") == true);  // a human stage
  CHECK(js(row(s.done) + ".querySelector('button.rerun') === null") == true);
  CHECK(js(row(s.review) + ".querySelector('button.rerun').click(), true") == true);
  CHECK(eventually([&] { return page.last_action() == "re-run task " + std::to_string(s.review.id) + " ok"; }));
  auto audit = app.store().transitions_for_task(s.review.id).value();
  REQUIRE_FALSE(audit.empty());
  CHECK(audit.back().from == "review");
  CHECK(audit.back().to == "review");
  CHECK(audit.back().cause == Cause::kManual);
  CHECK(app.log().contains("admin: task SHOP-4 re-runs review"));
}

TEST_CASE("a task held for its budget in chromium: its reason, its spend, the spend section and Resume with a raise") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  const Seeded s = seed_every_stage(app);
  const TaskRow held = app.add_task("SHOP-7", kHostileTitle, {"analysis", "development"});
  const JobRow job = app.add_failed_job(held, "spent\n");
  REQUIRE(app.store().record_usage(job.id, AgentUsage{100, 10, "large", 1'250'000}).ok());
  REQUIRE(app.store()
              .hold_task(held.id, "spent 1.25 USD of developer's budget per task (1.00 USD)", SystemClock().now(), {})
              .ok());
  app.start();
  LiveQueuePage page(app);
  auto js = [&](const std::string& expr) { return page.js(expr); };
  const std::string row = "document.querySelector('tr[data-task-id=\"" + std::to_string(held.id) + "\"]')";
  CHECK(js(row + ".querySelector('.reason').textContent") == "budget_exhausted");
  CHECK(js(row + ".querySelector('td.spend').textContent") == "1.25 USD");
  CHECK(js(row + ".querySelector('td.title').textContent") == kHostileTitle);  // as text, never markup
  const std::string other = "document.querySelector('tr[data-task-id=\"" + std::to_string(s.review.id) + "\"]')";
  CHECK(js(other + ".querySelector('button.resume') === null") == true);  // not held: no button
  CHECK(js("[...document.querySelectorAll('#spend tr.stage-spend td')].map(td => td.textContent).join('|')") ==
        "shop|development|1.25 USD");
  // Resume asks for the raise; the page posts it.
  CHECK(js("window.prompt = () => '2', " + row + ".querySelector('button.resume').click(), true") == true);
  CHECK(eventually([&] { return page.last_action() == "resume task " + std::to_string(held.id) + " ok"; }));
  const TaskRow after = *app.store().find_task(held.id).value();
  CHECK(after.budget_hold.empty());
  CHECK(after.budget_raise == 2'000'000);
  CHECK(app.store().transitions_for_task(held.id).value().back().detail ==
        "budget raised by 2.00 USD and resumed by a person");
}

TEST_CASE("the queue page's jobs table shows a job's failing follow-up step, its tries and its error") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  TaskRow dev = app.add_task("SHOP-9", "Fix login", {"analysis", "development"});
  app.add_job_in_failing_step(dev, "open_pr", "open_pr: gitea answered 500");
  app.start();
  const std::string dom = dump_queue_dom(app);
  CAPTURE(dom);
  CHECK(dom.find(R"(data-source="live")") != std::string::npos);
  CHECK(dom.find("<th>step</th>") != std::string::npos);
  CHECK(dom.find(R"(<td class="step">open_pr</td><td>1</td>)") != std::string::npos);
  CHECK(dom.find("open_pr: gitea answered 500") != std::string::npos);
}

TEST_CASE("the queue page lists a failed write-back, and pressing its Retry in chromium makes it pending") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app;
  const NotificationId id = app.add_write(
      "plane", "6:11:comment",
      std::string(R"({"kind":"comment","project":"shop","work_item_id":"wi-SHOP-6","text":")") + kHostileTitle + "\"}",
      "plane answered 422 <b>bad</b>");
  app.start();
  LiveQueuePage page(app);
  auto js = [&](const std::string& expr) { return page.js(expr); };

  const std::string sid = std::to_string(id);
  const std::string failed_row = "document.querySelector('#write-back tr.write.failed[data-write-id=\"" + sid + "\"]')";
  const std::string pending_row =
      "document.querySelector('#write-back tr.write.pending[data-write-id=\"" + sid + "\"]')";
  CHECK(js("document.querySelector('#write-back .state').textContent") == "write-back: enabled");
  CHECK(js("document.querySelector('#write-back .counts').textContent") == "pending 0, failed 1");
  REQUIRE(js(failed_row + " !== null") == true);
  CHECK(js(failed_row + ".querySelector('td.key').textContent") == "6:11:comment");
  CHECK(js(failed_row + ".querySelector('td.kind').textContent") == "comment");
  // The error is text, and the write's own text (a hostile title) is not on the page at all.
  CHECK(js(failed_row + ".querySelector('td.bad').textContent") == "plane answered 422 <b>bad</b>");
  CHECK(js("document.querySelector('#write-back b') === null") == true);
  CHECK(js("document.body.textContent.includes('onerror')") == false);

  CHECK(js(failed_row + ".querySelector('button.retry-write').click(), true") == true);
  CHECK(eventually([&] { return page.last_action() == "retry write " + sid + " ok"; }));
  CHECK(eventually([&] { return js(failed_row + " === null") == true; }));
  CHECK(eventually([&] { return js(pending_row + " !== null") == true; }));
  CHECK(js("document.querySelector('#write-back .counts').textContent") == "pending 1, failed 0");
  auto rows = app.store().messages("plane", NotificationStatus::kPending, 10);
  REQUIRE(rows.ok());
  REQUIRE(rows.value().size() == 1);
  CHECK(rows.value()[0].id == id);
  CHECK(rows.value()[0].attempts == 0);
  CHECK(app.log().contains("admin: outbox message " + sid + " retried"));
}

TEST_CASE("the queue page's write-back section says off (kill switch) when ORCH_PLANE_WRITE_BACK is off") {
  if (!std::filesystem::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  RunningApp app(Env{{"ORCH_PLANE_WRITE_BACK", "0"}});
  app.start();
  const std::string dom = dump_queue_dom(app);
  CAPTURE(dom);
  CHECK(dom.find(R"(data-source="live")") != std::string::npos);
  CHECK(dom.find(R"(id="write-back")") != std::string::npos);
  CHECK(dom.find(R"(<p class="state">write-back: <span class="bad">off (kill switch)</span></p>)") !=
        std::string::npos);
  CHECK(dom.find(R"(<p class="counts">pending 0, failed 0</p>)") != std::string::npos);
}

}  // namespace
}  // namespace orch
