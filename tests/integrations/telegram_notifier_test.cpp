#include "integrations/telegram_notifier.h"

#include <doctest/doctest.h>

#include <set>
#include <thread>

#include "engine/store/sqlite_store.h"
#include "integrations/gitea_client.h"
#include "integrations/plane_client.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/fake_telegram.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/manual_clock.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

struct SenderFixture {
  FakeTelegram telegram;
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<TelegramSender> sender;

  SenderFixture() {
    HttpClientOptions o;
    o.name = "telegram";
    o.base_url = telegram.base_url();
    o.max_attempts = 1;  // the outbox retries, not the request
    o.redact = {Secret(telegram.token())};
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
    sender = std::make_unique<TelegramSender>(*http, Secret(telegram.token()), telegram.chat_id());
  }
};

struct OutboxFixture : SenderFixture {
  TempDir dir;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<OutboxDrainer> drainer;

  explicit OutboxFixture(OutboxOptions options = {}) {
    auto opened = SqliteStore::open(dir.file("orch.db"));
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    drainer = std::make_unique<OutboxDrainer>(*store, *sender, clock, log.logger(), options);
  }
  void enqueue(const std::string& key, const std::string& text) {
    REQUIRE(store->enqueue_notification(key, text, clock.now()).value());
  }
  NotificationRow row(const std::string& key) {
    auto all = store->all_notifications();
    REQUIRE(all.ok());
    for (const auto& n : all.value())
      if (n.dedup_key == key) return n;
    FAIL("no notification " << key);
    return {};
  }
};

}  // namespace

TEST_CASE("telegram_escape escapes &, < and > (ampersand first)") {
  CHECK(telegram_escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d");
  CHECK(telegram_escape("&lt;") == "&amp;lt;");
  CHECK(telegram_escape("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;");
  CHECK(telegram_escape("plain") == "plain");
}

TEST_CASE("TelegramSender posts sendMessage as HTML with link previews off") {
  SenderFixture f;
  SendResult r = f.sender->send("SHOP-42 moved to review <&>");
  REQUIRE(r.status.ok());
  auto msgs = f.telegram.messages();
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].chat_id == f.telegram.chat_id());
  CHECK(msgs[0].text == "SHOP-42 moved to review &lt;&amp;&gt;");  // the sender escapes the plain text
  CHECK(msgs[0].shown == "SHOP-42 moved to review <&>");
  CHECK(msgs[0].parse_mode == "HTML");
  CHECK(msgs[0].link_preview_disabled);
  auto req = f.telegram.requests().at(0);
  CHECK(req.path == "/bot" + f.telegram.token() + "/sendMessage");
  auto body = nlohmann::json::parse(req.body);
  CHECK(body["chat_id"].is_number_integer());  // a numeric chat id travels as a number
  CHECK(body["link_preview_options"] == nlohmann::json{{"is_disabled", true}});
}

TEST_CASE("TelegramSender: 429 is transient with retry_after — 400/401/403 are permanent — 5xx is transient") {
  SenderFixture f;
  f.telegram.rate_limit_next(1, 35);
  SendResult r = f.sender->send("hello");
  CHECK(r.status.code == Code::kUnavailable);
  REQUIRE(r.retry_after.has_value());
  CHECK(*r.retry_after == 35s);
  CHECK(f.sleeper.waits().empty());  // the request itself did not wait

  f.telegram.fail_next_with(1, 403, "Forbidden: bot was kicked from the supergroup chat");
  r = f.sender->send("hello");
  CHECK(r.status.code == Code::kInvalid);
  CHECK(r.status.message.find("kicked") != std::string::npos);

  f.telegram.fail_next(1, 502);
  CHECK(f.sender->send("hello").status.code == Code::kUnavailable);

  // Telegram's HTML parser refusing a message is permanent (the sender escapes, so it only happens on a bug).
  f.telegram.fail_next_with(1, 400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0");
  r = f.sender->send("hello");
  CHECK(r.status.code == Code::kInvalid);
  CHECK(r.status.message.find("can't parse entities") != std::string::npos);
  CHECK(f.telegram.messages().empty());

  // A tag-like title is plain text to the sender: escaped, delivered, shown as written.
  r = f.sender->send("title with <unknown> tag & more");
  CHECK(r.status.ok());
  REQUIRE(f.telegram.messages().size() == 1);
  CHECK(f.telegram.messages()[0].shown == "title with <unknown> tag & more");
}

TEST_CASE("the fake Telegram refuses malformed HTML and over-long text with 400, as Telegram does") {
  // The fake must be strict for the sender's escaping tests to mean anything: raw requests, no sender.
  FakeTelegram telegram;
  httplib::Client c(telegram.base_url());
  auto post = [&](const std::string& text) {
    nlohmann::json body = {{"chat_id", telegram.chat_id()}, {"text", text}, {"parse_mode", "HTML"}};
    auto r = c.Post("/bot" + telegram.token() + "/sendMessage", body.dump(), "application/json");
    REQUIRE(r);
    return std::make_pair(r->status, nlohmann::json::parse(r->body, nullptr, false));
  };
  for (const std::string bad : {"a <unknown> tag", "a < b", "x > y", "fish & chips", "&nbsp;"}) {
    auto [status, body] = post(bad);
    CHECK_MESSAGE(status == 400, bad);
    CHECK_MESSAGE(body["ok"] == false, bad);
    CHECK_MESSAGE(body.value("description", "").find("can't parse entities") != std::string::npos, bad);
  }
  auto [status, body] = post(telegram_escape("a <unknown> tag, a < b, x > y, fish & chips") + " <b>bold</b>");
  CHECK(status == 200);
  REQUIRE(telegram.messages().size() == 1);
  CHECK(telegram.messages()[0].shown == "a <unknown> tag, a < b, x > y, fish & chips bold");
  // The limit counts the shown text: 4097 characters are refused, 4096 escaped ones (more bytes) are not.
  CHECK(post(std::string(4097, 'x')).first == 400);
  CHECK(post(telegram_escape(std::string(4096, '<'))).first == 200);
  CHECK(telegram.messages().size() == 2);
}

TEST_CASE("TelegramSender follows a group's migration to a supergroup") {
  SenderFixture f;
  f.telegram.migrate_chat(f.telegram.chat_id(), "-1009999999999");
  REQUIRE(f.sender->send("after the upgrade").status.ok());
  REQUIRE(f.telegram.messages().size() == 1);
  CHECK(f.telegram.messages()[0].chat_id == "-1009999999999");
  REQUIRE(f.sender->send("next").status.ok());
  CHECK(f.telegram.requests().size() == 3);  // refused, resent, then straight to the new chat
}

TEST_CASE("LogOnlySender logs the message text instead of sending it") {
  TestLog log;
  LogOnlySender sender(log.logger());
  CHECK(sender.send("SHOP-42 unblocked").status.ok());
  CHECK(log.contains("SHOP-42 unblocked"));
}

TEST_CASE("telegram_fit cuts to 4096 UTF-16 units with an ellipsis, never inside a UTF-8 sequence") {
  CHECK(telegram_fit("short") == "short");
  CHECK(telegram_fit(std::string(4096, 'x')) == std::string(4096, 'x'));
  CHECK(telegram_fit(std::string(4097, 'x')) == std::string(4095, 'x') + "\u2026");
  CHECK(telegram_fit("abcdef", 4) == "abc\u2026");
  // "é" is 2 bytes and 1 unit; "😀" is 4 bytes and 2 units (a surrogate pair): neither is split.
  CHECK(telegram_fit("ééééé", 4) == "ééé\u2026");
  CHECK(telegram_fit("a😀😀", 4) == "a😀\u2026");
  CHECK(telegram_fit("ab😀😀", 4) == "ab\u2026");  // ab😀… would be 5 units: the pair is not split
  CHECK(telegram_fit("a😀b", 4) == "a😀b");
}

TEST_CASE("the outbox delivers a blocked reason with <, & and > intact, escaped once by the sender") {
  OutboxFixture f;
  // What JobRunner::block queues: plain text, with an agent's (or git's) stderr in it.
  const std::string text = "SHOP-42 is blocked in development: git: error: <stdin>:3: bad ref 'a&b' -> x > y";
  f.enqueue("blocked:1:1", text);
  CHECK(f.drainer->drain_once() == 1);
  auto msgs = f.telegram.messages();
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].parse_mode == "HTML");
  CHECK(msgs[0].shown == text);
  CHECK(f.row("blocked:1:1").status == NotificationStatus::kSent);
}

TEST_CASE("the outbox cuts a 5000-character message to Telegram's limit instead of failing it") {
  OutboxFixture f;
  std::string text = "SHOP-42 is blocked in development: ";
  while (text.size() < 4090) text += "a<b ";
  text += "ééé😀😀😀 and more";  // multi-byte sequences around the cut
  while (text.size() < 5000) text += "x";
  f.enqueue("long", text);
  CHECK(f.drainer->drain_once() == 1);
  auto msgs = f.telegram.messages();
  REQUIRE(msgs.size() == 1);
  CHECK(f.row("long").status == NotificationStatus::kSent);
  const std::string& shown = msgs[0].shown;
  size_t units = 0;
  for (unsigned char c : shown)
    if ((c & 0xC0) != 0x80) units += c >= 0xF0 ? 2 : 1;
  CHECK(units <= 4096);
  CHECK(units >= 4000);
  REQUIRE(shown.size() >= 3);
  CHECK(shown.substr(shown.size() - 3) == "\u2026");
  CHECK(text.compare(0, shown.size() - 3, shown, 0, shown.size() - 3) == 0);  // a prefix of the text
}

TEST_CASE("the outbox sends due notifications once and marks them sent") {
  OutboxFixture f;
  f.enqueue("a", "first");
  f.enqueue("b", "second");
  CHECK(f.drainer->drain_once() == 2);
  CHECK(f.drainer->drain_once() == 0);
  auto msgs = f.telegram.messages();
  REQUIRE(msgs.size() == 2);
  CHECK(msgs[0].text == "first");
  CHECK(msgs[1].text == "second");
  CHECK(f.row("a").status == NotificationStatus::kSent);
  CHECK(f.store->outbox_counts().value().sent == 2);
}

TEST_CASE("a Telegram outage delays messages, which are then delivered exactly once, in order") {
  OutboxFixture f;
  f.enqueue("m1", "one");
  f.enqueue("m2", "two");
  f.enqueue("m3", "three");
  f.telegram.fail_next(1000, 502);  // down until cleared

  CHECK(f.drainer->drain_once() == 0);
  CHECK(f.telegram.request_count() == 1);  // the first failure ends the batch: no hammering
  NotificationRow m1 = f.row("m1");
  CHECK(m1.status == NotificationStatus::kPending);
  CHECK(m1.attempts == 1);
  CHECK(m1.next_attempt_at == kMonday9am + 5s);

  // While down, each drain probes with one message, and backs off per message.
  for (int i = 0; i < 6; ++i) {
    f.clock.advance(1min);
    f.drainer->drain_once();
  }
  CHECK(f.telegram.messages().empty());
  CHECK(f.telegram.request_count() == 7);
  auto pending = f.store->all_notifications();
  for (const auto& n : pending.value()) {
    CHECK(n.status == NotificationStatus::kPending);
    CHECK(n.attempts >= 2);
  }
  CHECK(f.log.contains("not sent"));

  f.telegram.clear_faults();  // Telegram is back
  f.clock.advance(1h);
  CHECK(f.drainer->drain_once() == 3);
  for (int i = 0; i < 3; ++i) {
    f.clock.advance(1h);
    CHECK(f.drainer->drain_once() == 0);
  }
  auto msgs = f.telegram.messages();
  REQUIRE(msgs.size() == 3);
  std::vector<std::string> texts;
  for (const auto& m : msgs) texts.push_back(m.text);
  std::sort(texts.begin(), texts.end());
  CHECK(texts == std::vector<std::string>{"one", "three", "two"});
  auto counts = f.store->outbox_counts().value();
  CHECK(counts.sent == 3);
  CHECK(counts.pending == 0);
  CHECK(counts.failed == 0);
}

TEST_CASE("a 429 holds every send until Telegram's retry_after has passed") {
  OutboxFixture f;
  f.enqueue("m1", "one");
  f.enqueue("m2", "two");
  f.telegram.rate_limit_next(1, 30);
  CHECK(f.drainer->drain_once() == 0);
  CHECK(f.row("m1").next_attempt_at == kMonday9am + 30s);
  f.clock.advance(29s);
  CHECK(f.drainer->drain_once() == 0);
  CHECK(f.telegram.request_count() == 1);  // m2 was due, but the bot is throttled
  f.clock.advance(1s);
  CHECK(f.drainer->drain_once() == 2);
  CHECK(f.telegram.messages().size() == 2);
}

TEST_CASE("a permanent error fails that notification, and the next one is still sent") {
  OutboxFixture f;
  f.enqueue("bad", "one");
  f.enqueue("good", "two");
  f.telegram.fail_next_with(1, 400, "Bad Request: chat not found");
  CHECK(f.drainer->drain_once() == 1);
  NotificationRow bad = f.row("bad");
  CHECK(bad.status == NotificationStatus::kFailed);
  CHECK(bad.error.find("chat not found") != std::string::npos);
  CHECK(f.row("good").status == NotificationStatus::kSent);
  CHECK(f.log.contains("failed"));
}

TEST_CASE("a notification is failed after max_attempts transient failures") {
  OutboxOptions o;
  o.max_attempts = 3;
  OutboxFixture f(o);
  f.enqueue("m", "one");
  f.telegram.fail_next(100, 500);
  for (int i = 0; i < 5; ++i) {
    f.drainer->drain_once();
    f.clock.advance(1h);
  }
  NotificationRow m = f.row("m");
  CHECK(m.status == NotificationStatus::kFailed);
  CHECK(m.attempts == 3);
  CHECK(f.telegram.request_count() == 3);
}

TEST_CASE("no token or API key appears in any log line or error message, whatever fails") {
  const std::string plane_key = "plane_api_feedfacefeedfacefeedfacefeedface";
  const std::string gitea_token = "gitea-secret-0badc0de0badc0de0badc0de";
  OutboxFixture f;
  FakePlane plane;
  FakeGitea gitea;
  plane.add_project("acme", "p1", "SHOP");
  plane.add_state("p1", "Approved", "completed");
  plane.add_state("p1", "Rejected", "cancelled");
  gitea.set_branch("acme/shop", "main", "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e");

  HttpClientOptions po;
  po.name = "plane";
  po.base_url = plane.base_url();
  po.total_timeout = 200ms;
  po.redact = {Secret(plane_key)};
  HttpClient plane_http(po, f.sleeper, f.clock, f.log.logger());
  PlaneClient plane_client(plane_http, Secret(plane_key));
  HttpClientOptions go;
  go.name = "gitea";
  go.base_url = gitea.base_url();
  go.redact = {Secret(gitea_token)};
  HttpClient gitea_http(go, f.sleeper, f.clock, f.log.logger());
  GiteaClient gitea_client(gitea_http, Secret(gitea_token));
  ProjectSpec project;
  project.name = "shop";
  project.plane_workspace = "acme";
  project.plane_project_id = "p1";

  std::vector<std::string> messages;
  plane.rate_limit_next(2, 3);
  plane.fail_next(1, 500);
  plane.delay_next(1, 1000ms);
  messages.push_back(plane_client.project_identifier(project).status().message);
  plane.set_api_key("another");
  messages.push_back(plane_client.move_work_item(project, "w1", TrackerState::kApproved).message);
  gitea.fail_next(3, 502);
  gitea.set_token("another");
  messages.push_back(gitea_client.branch_head("acme/shop", "main").status().message);
  messages.push_back(gitea_client.combined_status("acme/shop", "main").status().message);
  f.enqueue("t1", "one");
  f.telegram.fail_next(1, 500);
  f.drainer->drain_once();
  f.clock.advance(1h);
  f.telegram.rate_limit_next(1, 5);
  f.drainer->drain_once();
  f.clock.advance(1h);
  f.telegram.fail_next_with(1, 401, "Unauthorized");
  f.drainer->drain_once();

  CHECK(f.log.lines().size() >= 5);  // the failures were logged...
  for (const std::string& secret : {plane_key, gitea_token, f.telegram.token()}) {
    CHECK_MESSAGE(f.log.all().find(secret) == std::string::npos, "secret in the log");  // ...without a secret
    for (const auto& m : messages) CHECK(m.find(secret) == std::string::npos);
    auto all = f.store->all_notifications();
    for (const auto& n : all.value()) CHECK(n.error.find(secret) == std::string::npos);
  }
}

TEST_CASE("two drainers on one outbox (two replicas) send each notification exactly once") {
  OutboxFixture f;
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) f.enqueue("m" + std::to_string(i), "message " + std::to_string(i));
  // A second drainer over a second connection pool to the same file, as a second process would have.
  auto second_store = SqliteStore::open(f.dir.file("orch.db"));
  REQUIRE(second_store.ok());
  OutboxDrainer second(*second_store.value(), *f.sender, f.clock, f.log.logger());
  int sent_first = 0, sent_second = 0;
  std::thread a([&] {
    for (int n; (n = f.drainer->drain_once()) > 0;) sent_first += n;
  });
  std::thread b([&] {
    for (int n; (n = second.drain_once()) > 0;) sent_second += n;
  });
  a.join();
  b.join();
  CHECK(sent_first + sent_second == kMessages);
  auto msgs = f.telegram.messages();
  CHECK(msgs.size() == kMessages);
  std::set<std::string> texts;
  for (const auto& m : msgs) texts.insert(m.text);
  CHECK(texts.size() == kMessages);  // none twice
  CHECK(f.store->outbox_counts().value().sent == kMessages);
}

TEST_CASE("a notification claimed by a drainer that died comes due again after the claim lease") {
  OutboxOptions o;
  o.claim_lease = 2min;
  OutboxFixture f(o);
  f.enqueue("m", "hello");
  // A drainer claimed it and died before sending.
  REQUIRE(f.store->claim_due_notifications(f.clock.now(), 2min, 10).value().size() == 1);
  CHECK(f.drainer->drain_once() == 0);
  f.clock.advance(2min);
  CHECK(f.drainer->drain_once() == 1);
  CHECK(f.telegram.messages().size() == 1);
}
