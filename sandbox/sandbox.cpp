// DESIGN: the fakes hold the truth (work items, pull requests, statuses, reviews, comments) and answer orch's API
// calls; this class adds what a person and the real tools' webhook senders do. Every action changes a fake's
// tables first and then queues the webhook; one sender thread posts the queue in order, with a few retries when
// orch does not answer (Plane and Gitea retry too), so an action never waits for orch. The "lose" switch drops the
// next queued delivery instead of posting it. Lock order: a fake's lock, then mu_ (the Gitea observer runs under the
// fake's lock and only queues); so nothing here calls into a fake while holding mu_.
#include "sandbox/sandbox.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "engine/thread_name.h"

namespace orch::sandbox {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;
using testing::DeliveryResult;
using testing::FakeGitea;
using testing::GiteaPull;
using testing::GiteaReview;
using testing::PlaneIssueWebhook;
using testing::PlaneWorkItemSeed;

namespace {

constexpr size_t kMaxLines = 200;
const std::vector<std::string> kExtraStates = {"Approved", "Rejected", "In Review"};
const std::vector<std::string> kStateNames = {"Backlog",  "Todo",      "In Progress", "Approved",
                                              "Rejected", "In Review", "Done",        "Cancelled"};

bool same_secret(const std::string& a, const std::string& b) {
  // Constant time: compare digests, so neither the length nor a prefix leaks.
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
  return CRYPTO_memcmp(da, db, sizeof da) == 0;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  int bits = 0, value = 0;
  for (char c : in) {
    int d;
    if (c >= 'A' && c <= 'Z')
      d = c - 'A';
    else if (c >= 'a' && c <= 'z')
      d = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      d = c - '0' + 52;
    else if (c == '+')
      d = 62;
    else if (c == '/')
      d = 63;
    else if (c == '=')
      break;
    else
      return std::nullopt;
    value = (value << 6) | d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((value >> bits) & 0xff);
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Plane's isoformat ("2026-05-19T10:15:42.118233Z", no fraction when zero) back to a time point.
std::optional<TimePoint> parse_isoformat(const std::string& s) {
  std::tm tm{};
  std::istringstream in(s);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  if (in.fail()) return std::nullopt;
  long long micros = 0;
  if (in.peek() == '.') {
    in.get();
    std::string digits;
    while (std::isdigit(in.peek())) digits += static_cast<char>(in.get());
    digits.resize(6, '0');
    micros = std::stoll(digits.substr(0, 6));
  }
  const std::time_t t = timegm(&tm);
  return TimePoint(
      std::chrono::duration_cast<TimePoint::duration>(std::chrono::seconds(t) + std::chrono::microseconds(micros)));
}

std::string describe(const DeliveryResult& r) {
  if (r.status < 0) return "no answer (" + r.error + ")";
  return std::to_string(r.status);
}

}  // namespace

Sandbox::Sandbox(SandboxOptions options, spdlog::logger& log)
    : options_(std::move(options)),
      log_(log),
      telegram_(options_.telegram_bot_token, options_.telegram_chat_id),
      git_(
          options_.dir / "git", {kRepo}, [this](const httplib::Request& req) { return authorised_git(req); },
          [this](const std::string& repo, const std::vector<RefChange>& changes) { on_push(repo, changes); },
          (options_.dir / "git.log").string()) {
  // A long-running fake must not keep every request it ever answered (packs included).
  for (testing::FakeServer* s : std::initializer_list<testing::FakeServer*>{&plane_, &gitea_, &telegram_})
    s->set_request_log_limit(100);
}

Sandbox::~Sandbox() {
  // The fakes' handlers call into this object (the git route, the Gitea observer): they stop first.
  for (testing::FakeServer* s : std::initializer_list<testing::FakeServer*>{&plane_, &gitea_, &telegram_})
    s->shutdown();
  sender_.request_stop();
  cv_.notify_all();
  if (sender_.joinable()) sender_.join();
  save();
}

Status Sandbox::start() {
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) return unavailable("cannot create " + options_.dir.string() + ": " + ec.message());
  if (Status s = git_.ensure_repo(kRepo); !s.ok()) return s;

  plane_.set_api_key(options_.plane_api_key);
  // Plane's service-token allowance (plane.md §3): orch paces itself under it.
  plane_.set_rate_limit(300);
  plane_.add_project(kWorkspace, kProjectId, kIdentifier);
  for (const auto& name : kExtraStates) plane_.add_state(kProjectId, name, "started");

  gitea_.set_token(options_.gitea_token);
  gitea_.set_api_user(kOrchUser);
  if (!options_.gitea_review_token.empty()) gitea_.add_user_token(options_.gitea_review_token, kReviewUser);
  gitea_.add_repo(kRepo);
  for (const auto& [branch, sha] : git_.branches(kRepo)) gitea_.set_branch(kRepo, branch, sha);
  gitea_.set_api_observer([this](const FakeGitea::ApiWrite& w) { on_api_write(w); });
  gitea_.set_git_handler([this](const httplib::Request& req, httplib::Response& res) { git_.handle(req, res); });

  load();
  bool empty;
  {
    std::lock_guard lock(mu_);
    empty = items_.empty();
  }
  if (empty && options_.seed_item) {
    auto made = create("Add a greeting to the shop's README",
                       "A first work item: move it to In Progress and watch it on /queue.");
    if (!made.ok()) return made.status();
  }
  sender_ = std::jthread([this](std::stop_token stop) { run_sender(stop); });
  return {};
}

void Sandbox::note(const std::string& line) {
  log_.info("sandbox: {}", line);
  std::lock_guard lock(mu_);
  lines_.push_back(line);
  while (lines_.size() > kMaxLines) lines_.pop_front();
}

void Sandbox::enqueue(Outgoing o) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(o));
  }
  cv_.notify_all();
}

void Sandbox::run_sender(std::stop_token stop) {
  name_this_thread("sandbox-send");
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    // Every 2 s, or after each delivery: the saved state follows what orch's database will hold.
    if (queue_.empty()) {
      lock.unlock();
      save();
      lock.lock();
      cv_.wait_for(lock, stop, std::chrono::seconds(2), [this] { return !queue_.empty(); });
      continue;
    }
    Outgoing o = std::move(queue_.front());
    queue_.pop_front();
    if (lose_next_) {
      lose_next_ = false;
      ++lost_;
      lock.unlock();
      note("lost: " + o.what + " (not sent; the reconciler should recover it)");
      lock.lock();
      continue;
    }
    sending_ = true;
    lock.unlock();
    DeliveryResult r;
    auto wait = std::chrono::milliseconds(500);
    for (int attempt = 1; attempt <= 6 && !stop.stop_requested(); ++attempt) {
      r = o.send();
      if (r.status >= 200 && r.status < 300) break;
      if (r.status >= 400 && r.status < 500 && r.status != 429) break;  // orch will not change its mind
      std::unique_lock w(mu_);
      cv_.wait_for(w, stop, wait, [] { return false; });
      wait *= 2;
    }
    note("sent: " + o.what + " -> " + describe(r));
    lock.lock();
    sending_ = false;
    ++sent_;
  }
}

bool Sandbox::authorised_git(const httplib::Request& req) const {
  // git sends orch's ORCH_GITEA_TOKEN as "Authorization: token ..." (http.extraHeader); a person's git client sends
  // basic auth with the token as the password.
  std::string h = req.get_header_value("Authorization");
  std::string presented;
  if (lower(h.substr(0, 6)) == "token ") {
    presented = h.substr(6);
  } else if (lower(h.substr(0, 6)) == "basic ") {
    const auto maybe = base64_decode(h.substr(6));
    if (!maybe) return false;
    const std::string& decoded = *maybe;
    const auto colon = decoded.find(':');
    if (colon != std::string::npos) presented = decoded.substr(colon + 1);
  }
  if (presented.empty()) return false;
  bool ok = same_secret(presented, options_.gitea_token);
  if (!options_.gitea_review_token.empty()) ok = same_secret(presented, options_.gitea_review_token) || ok;
  return ok;
}

std::string Sandbox::state_name(const std::string& state_id) const {
  for (const auto& name : kStateNames)
    if (plane_.state_id(kProjectId, name) == state_id) return name;
  return "";
}

Result<std::string> Sandbox::item_id(const std::string& key) const {
  std::lock_guard lock(mu_);
  for (const auto& i : items_)
    if (upper(i.key) == upper(key)) return i.id;
  return not_found("no work item " + key);
}

std::string Sandbox::key_of_branch(const std::string& branch) const {
  std::lock_guard lock(mu_);
  for (const auto& i : items_)
    if (branch == "orch/" + lower(i.key)) return i.key;
  return "";
}

std::optional<GiteaPull> Sandbox::pull_for(const std::string& key) const {
  const std::string branch = "orch/" + lower(key);
  std::optional<GiteaPull> found;
  for (const auto& p : gitea_.pulls(kRepo))
    if (p.head_ref == branch && (!found || p.state == "open" || found->state != "open")) found = p;
  return found;
}

Result<json> Sandbox::create(const std::string& title, const std::string& description) {
  if (title.find_first_not_of(" \t\r\n") == std::string::npos) return invalid("a work item needs a title");
  PlaneWorkItemSeed seed;
  seed.name = title;
  seed.state_id = plane_.state_id(kProjectId, "Todo");
  seed.description_html = "<p>" + html_escape(description) + "</p>";
  const std::string id = plane_.add_work_item(kProjectId, seed);
  const auto item = plane_.work_item(id);
  const std::string key = kIdentifier + "-" + std::to_string((*item)["sequence_id"].get<long long>());
  {
    std::lock_guard lock(mu_);
    items_.push_back({key, id});
  }
  PlaneIssueWebhook hook;
  hook.action = "created";
  hook.field = std::nullopt;
  const std::string body = plane_.issue_webhook_body(id, hook);
  enqueue({"plane issue created " + key, [this, body] {
             return plane_.deliver(options_.orch_url + "/webhooks/plane", options_.plane_webhook_secret, "issue", body);
           }});
  note("created " + key);
  save();
  return json{{"key", key}, {"id", id}, {"state", "Todo"}};
}

Result<json> Sandbox::move(const std::string& key, const std::string& state) {
  auto id = item_id(key);
  if (!id.ok()) return id.status();
  std::string name;
  for (const auto& n : kStateNames)
    if (lower(n) == lower(state)) name = n;
  const std::string to = name.empty() ? "" : plane_.state_id(kProjectId, name);
  if (to.empty()) {
    std::string known;
    for (const auto& n : kStateNames) known += (known.empty() ? "" : ", ") + n;
    return invalid("no state '" + state + "' (known: " + known + ")");
  }
  const auto before = plane_.work_item(id.value());
  const std::string from = (*before)["state"].get<std::string>();
  plane_.set_work_item_state(id.value(), to);
  PlaneIssueWebhook hook;  // field "state", a person (not orch's API user) as the actor
  hook.old_value = from;
  const std::string body = plane_.issue_webhook_body(id.value(), hook);
  const std::string k = (*before)["sequence_id"].is_number()
                            ? kIdentifier + "-" + std::to_string((*before)["sequence_id"].get<long long>())
                            : key;
  enqueue({"plane issue updated " + k + " (" + state_name(from) + " -> " + name + ")", [this, body] {
             return plane_.deliver(options_.orch_url + "/webhooks/plane", options_.plane_webhook_secret, "issue", body);
           }});
  note("moved " + k + " to " + name);
  save();
  return json{{"key", k}, {"state", name}};
}

Result<json> Sandbox::ci(const std::string& key, const std::string& state) {
  static const std::vector<std::string> states = {"success", "failure", "pending", "error"};
  if (std::find(states.begin(), states.end(), state) == states.end())
    return invalid("CI state must be success, failure, pending or error, not '" + state + "'");
  auto p = pull_for(key);
  std::string sha = p ? p->head_sha : "";
  if (sha.empty()) {
    auto branches = git_.branches(kRepo);
    auto it = branches.find("orch/" + lower(key));
    if (it == branches.end()) return not_found("no pull request or branch for " + key + " yet");
    sha = it->second;
  }
  gitea_.add_status(kRepo, sha, "ci/build", state);
  const auto payload = FakeGitea::status_payload(kRepo, sha, "ci/build", state, gitea_.base_url() + "/ci/" + sha);
  enqueue({"gitea status ci/build " + state + " on " + sha.substr(0, 12) + " (" + upper(key) + ")", [this, payload] {
             return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret, "status",
                                        payload);
           }});
  note("CI " + state + " on " + upper(key) + " (" + sha.substr(0, 12) + ")");
  save();
  return json{{"key", upper(key)}, {"sha", sha}, {"context", "ci/build"}, {"state", state}};
}

Result<json> Sandbox::review(const std::string& key, bool approve, const std::string& body) {
  auto p = pull_for(key);
  if (!p) return not_found("no pull request for " + key + " yet");
  if (p->state != "open") return invalid("pull request #" + std::to_string(p->number) + " is not open");
  GiteaReview rv;
  rv.user = kHuman;
  rv.state = approve ? "APPROVED" : "REQUEST_CHANGES";
  rv.body = body.empty() ? (approve ? "Looks good." : "Please change this.") : body;
  gitea_.add_review(kRepo, p->number, rv);
  const auto payload = gitea_.review_payload(kRepo, p->number, approve, kHuman, rv.body);
  const std::string event = approve ? "pull_request_review_approved" : "pull_request_review_rejected";
  enqueue({"gitea " + event + " #" + std::to_string(p->number) + " (" + upper(key) + ")", [this, payload, event] {
             return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret, event,
                                        payload);
           }});
  note(std::string(approve ? "approved" : "requested changes on") + " #" + std::to_string(p->number) + " (" +
       upper(key) + ")");
  save();
  return json{{"key", upper(key)}, {"pr", p->number}, {"review", rv.state}};
}

Result<json> Sandbox::merge(const std::string& key) {
  auto p = pull_for(key);
  if (!p) return not_found("no pull request for " + key + " yet");
  if (p->state != "open") return invalid("pull request #" + std::to_string(p->number) + " is not open");
  const std::string before = git_.branches(kRepo)["main"];
  // A fast-forward of main to the head when it can be one; otherwise the PR is marked merged and main stays.
  const bool moved = !p->head_sha.empty() && git_.fast_forward(kRepo, p->base_ref, p->head_sha);
  gitea_.update_pull(kRepo, p->number, [](GiteaPull& pull) {
    pull.state = "closed";
    pull.merged = true;
  });
  if (moved) {
    gitea_.set_branch(kRepo, p->base_ref, p->head_sha);
    const auto push = FakeGitea::push_payload(kRepo, p->base_ref, before, p->head_sha,
                                              "Merge pull request #" + std::to_string(p->number) + "\n");
    enqueue({"gitea push " + p->base_ref + " (merge of #" + std::to_string(p->number) + ")", [this, push] {
               return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret, "push",
                                          push);
             }});
  }
  const auto payload = gitea_.pull_request_payload(kRepo, p->number, "closed");
  enqueue(
      {"gitea pull_request closed (merged) #" + std::to_string(p->number) + " (" + upper(key) + ")", [this, payload] {
         return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret,
                                    "pull_request", payload);
       }});
  note("merged #" + std::to_string(p->number) + " (" + upper(key) + ")" + (moved ? "" : "; main was not moved"));
  save();
  return json{{"key", upper(key)}, {"pr", p->number}, {"merged", true}, {"main_moved", moved}};
}

json Sandbox::lose_next_webhook(bool on) {
  {
    std::lock_guard lock(mu_);
    lose_next_ = on;
  }
  note(on ? "the next webhook will be lost" : "the next webhook will be sent");
  return json{{"lose_next_webhook", on}};
}

void Sandbox::on_push(const std::string& repo, const std::vector<RefChange>& changes) {
  const std::string zero(40, '0');
  for (const auto& c : changes) {
    if (c.after.empty())
      gitea_.delete_branch(repo, c.branch);
    else
      gitea_.set_branch(repo, c.branch, c.after);
    const auto push =
        FakeGitea::push_payload(repo, c.branch, c.before.empty() ? zero : c.before, c.after.empty() ? zero : c.after);
    enqueue({"gitea push " + c.branch + " " + (c.after.empty() ? "deleted" : c.after.substr(0, 12)), [this, push] {
               return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret, "push",
                                          push);
             }});
    note("push " + c.branch + " " + (c.before.empty() ? "new" : c.before.substr(0, 12)) + " -> " +
         (c.after.empty() ? "deleted" : c.after.substr(0, 12)));
    if (c.after.empty()) continue;
    // Gitea moves an open PR's head with its branch and sends pull_request "synchronized".
    for (const auto& p : gitea_.pulls(repo)) {
      if (p.state != "open" || p.head_ref != c.branch || p.head_sha == c.after) continue;
      gitea_.push_to_pull(repo, p.number, c.after);
      const auto payload = gitea_.pull_request_payload(repo, p.number, "synchronized", p.head_sha);
      enqueue({"gitea pull_request synchronized #" + std::to_string(p.number), [this, payload] {
                 return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret,
                                            "pull_request_sync", payload);
               }});
    }
  }
}

void Sandbox::on_api_write(const FakeGitea::ApiWrite& w) {
  // Under the fake Gitea's lock: queue only; the payload is read when it is sent.
  const std::string repo = w.repo;
  const std::int64_t n = w.number;
  if (w.kind == "pull_opened") {
    enqueue({"gitea pull_request opened #" + std::to_string(n), [this, repo, n] {
               return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret,
                                          "pull_request", gitea_.pull_request_payload(repo, n, "opened"));
             }});
  } else if (w.kind == "review" && (w.state == "APPROVED" || w.state == "REQUEST_CHANGES")) {
    const bool approved = w.state == "APPROVED";
    const std::string user = w.user;
    const std::string event = approved ? "pull_request_review_approved" : "pull_request_review_rejected";
    enqueue({"gitea " + event + " #" + std::to_string(n) + " by " + user, [this, repo, n, approved, user, event] {
               return gitea_.send_webhook(options_.orch_url + "/webhooks/gitea", options_.gitea_webhook_secret, event,
                                          gitea_.review_payload(repo, n, approved, user, ""));
             }});
  }
}

json Sandbox::items() const {
  std::vector<ItemRecord> records;
  {
    std::lock_guard lock(mu_);
    records = items_;
  }
  json out = json::array();
  for (const auto& r : records) {
    const auto item = plane_.work_item(r.id);
    if (!item) continue;
    json j{{"key", r.key},
           {"id", r.id},
           {"title", (*item)["name"]},
           {"state", state_name((*item)["state"].get<std::string>())},
           {"updated_at", (*item)["updated_at"]},
           {"comments", plane_.comments(r.id).size()}};
    auto p = pull_for(r.key);
    j["pr"] = p ? json(p->number) : json(nullptr);
    out.push_back(std::move(j));
  }
  return out;
}

Result<json> Sandbox::comments(const std::string& key) const {
  auto id = item_id(key);
  if (!id.ok()) return id.status();
  json out = json::array();
  for (const auto& c : plane_.comments(id.value()))
    out.push_back(json{{"created_at", c["created_at"]},
                       {"external_source", c["external_source"]},
                       {"external_id", c["external_id"]},
                       {"comment_html", c["comment_html"]}});
  return out;
}

json Sandbox::pulls() const {
  json out = json::array();
  for (const auto& p : gitea_.pulls(kRepo)) {
    json statuses = json::object();
    for (const auto& s : gitea_.status_history(kRepo, p.head_sha))
      statuses[s["context"].get<std::string>()] = s["status"];
    json reviews = json::array();
    for (const auto& r : gitea_.reviews(kRepo, p.number))
      reviews.push_back(json{{"user", r.user}, {"state", r.state}, {"stale", r.stale}, {"body", r.body}});
    out.push_back(json{{"number", p.number},
                       {"key", key_of_branch(p.head_ref)},
                       {"title", p.title},
                       {"head", p.head_ref},
                       {"head_sha", p.head_sha},
                       {"base", p.base_ref},
                       {"state", p.state},
                       {"merged", p.merged},
                       {"statuses", statuses},
                       {"reviews", reviews}});
  }
  return out;
}

json Sandbox::telegram() const {
  json out = json::array();
  for (const auto& m : telegram_.messages())
    out.push_back(json{{"message_id", m.message_id}, {"chat_id", m.chat_id}, {"text", m.shown}});
  return out;
}

json Sandbox::log_lines() const {
  std::lock_guard lock(mu_);
  return json(std::vector<std::string>(lines_.begin(), lines_.end()));
}

json Sandbox::state() const {
  json j;
  j["items"] = items();
  j["pulls"] = pulls();
  j["telegram"] = telegram();
  j["log"] = log_lines();
  std::lock_guard lock(mu_);
  j["lose_next_webhook"] = lose_next_;
  j["webhooks"] = json{{"pending", queue_.size() + (sending_ ? 1 : 0)}, {"sent", sent_}, {"lost", lost_}};
  return j;
}

// state.json holds what is not in the git repository: the work items with their comments, and the pull requests
// with their statuses and reviews. Telegram messages are not kept.
void Sandbox::save() const {
  std::lock_guard save_lock(save_mu_);
  std::vector<ItemRecord> records;
  {
    std::lock_guard lock(mu_);
    records = items_;
  }
  ojson doc;
  doc["version"] = 1;
  doc["items"] = ojson::array();
  for (const auto& r : records) {
    auto item = plane_.work_item(r.id);
    if (!item) continue;
    // State ids are made afresh by each run's fake Plane: the state is kept by name.
    ojson j{{"key", r.key},
            {"state", state_name((*item)["state"].get<std::string>())},
            {"work_item", *item},
            {"comments", plane_.comments(r.id)}};
    doc["items"].push_back(std::move(j));
  }
  doc["pulls"] = ojson::array();
  for (const auto& p : gitea_.pulls(kRepo)) {
    ojson reviews = ojson::array();
    for (const auto& rv : gitea_.reviews(kRepo, p.number))
      reviews.push_back(ojson{{"user", rv.user},
                              {"state", rv.state},
                              {"dismissed", rv.dismissed},
                              {"stale", rv.stale},
                              {"commit_id", rv.commit_id},
                              {"body", rv.body}});
    ojson statuses = ojson::array();
    for (const auto& s : gitea_.status_history(kRepo, p.head_sha))
      statuses.push_back(ojson{{"context", s["context"]}, {"state", s["status"]}});
    doc["pulls"].push_back(ojson{{"number", p.number},
                                 {"head", p.head_ref},
                                 {"head_sha", p.head_sha},
                                 {"base", p.base_ref},
                                 {"title", p.title},
                                 {"body", p.body},
                                 {"state", p.state},
                                 {"merged", p.merged},
                                 {"user", p.user},
                                 {"reviews", reviews},
                                 {"statuses", statuses}});
  }
  const fs::path file = options_.dir / "state.json", tmp = options_.dir / "state.json.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << doc.dump(1) << "\n";
    if (!out) return;
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
}

void Sandbox::load() {
  std::ifstream in(options_.dir / "state.json");
  if (!in) return;
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = ojson::parse(ss.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    note("state.json is unreadable; starting empty");
    return;
  }
  try {
    for (const auto& j : doc.value("items", ojson::array())) {
      const ojson& w = j["work_item"];
      PlaneWorkItemSeed seed;
      seed.id = w["id"];
      seed.name = w["name"];
      seed.description_html = w["description_html"];
      seed.sequence_id = w["sequence_id"];
      const std::string state = j.value("state", "");
      seed.state_id = plane_.state_id(kProjectId, state.empty() ? "Todo" : state);
      seed.created_at = parse_isoformat(w["created_at"]);
      seed.updated_at = parse_isoformat(w["updated_at"]);
      plane_.add_work_item(kProjectId, seed);
      for (const auto& c : j["comments"]) plane_.restore_comment(seed.id, c);
      std::lock_guard lock(mu_);
      items_.push_back({j["key"], seed.id});
    }
    for (const auto& j : doc.value("pulls", ojson::array())) {
      GiteaPull p;
      p.number = j["number"];
      p.head_ref = j["head"];
      p.head_sha = j["head_sha"];
      p.base_ref = j["base"];
      p.title = j["title"];
      p.body = j["body"];
      p.state = j["state"];
      p.merged = j["merged"];
      p.user = j["user"];
      gitea_.add_pull(kRepo, p);
      for (const auto& s : j["statuses"]) gitea_.add_status(kRepo, p.head_sha, s["context"], s["state"]);
      for (const auto& r : j["reviews"]) {
        GiteaReview rv;
        rv.user = r["user"];
        rv.state = r["state"];
        rv.dismissed = r["dismissed"];
        rv.stale = r["stale"];
        rv.commit_id = r["commit_id"];
        rv.body = r["body"];
        gitea_.add_review(kRepo, p.number, rv);
      }
    }
  } catch (const std::exception& e) {
    note(std::string("state.json is incomplete (") + e.what() + "); kept what was read");
  }
  std::size_t n;
  {
    std::lock_guard lock(mu_);
    n = items_.size();
  }
  note("restored " + std::to_string(n) + " work item(s) from state.json");
}

}  // namespace orch::sandbox
