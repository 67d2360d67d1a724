// Issue 21 end to end: scripts/serve.sh run as README says (a fresh data directory, free ports; the binaries are the
// ones ctest built, so ORCH_SERVE_SKIP_BUILD=1 and ORCH_SERVE_BUILD_DIR point it at them), one work item driven with
// the orch-sandbox CLI through the whole example pipeline to done, checked on /queue.json, in the sandbox's Plane
// comments and Telegram log, then SIGINT to serve.sh and no process left behind: neither orch, nor orch-sandbox,
// nor an agent. With "lose the next webhook" on before CI reports, the reconciler recovers the step. In headless
// chromium, a person clicks through the sandbox's page and sees the item reach done on /queue.
#include <doctest/doctest.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/cdp_browser.h"
#include "tests/support/orch_process.h"
#include "tests/support/temp_dir.h"

using namespace orch::testing;
using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// scripts/serve.sh as a child with exactly `env`, stdout and stderr to files.
class ServeScript {
 public:
  explicit ServeScript(const TempDir& tmp) : tmp_(tmp) {
    data_dir = tmp.file("var");
    orch_port = free_loopback_port();
    sandbox_port = free_loopback_port();
    env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"},
           {"HOME", tmp.path().string()},
           {"ORCH_DATA_DIR", data_dir},
           {"ORCH_LISTEN", "127.0.0.1:" + std::to_string(orch_port)},
           {"ORCH_SANDBOX_LISTEN", "127.0.0.1:" + std::to_string(sandbox_port)},
           {"ORCH_SERVE_SKIP_BUILD", "1"},
           {"ORCH_SERVE_BUILD_DIR", ORCH_BUILD_DIR},
           {"ORCH_LOG_FORMAT", "text"}};
  }
  // A test that stopped early: SIGTERM, which serve.sh passes on to orch and the sandbox, then whatever is left of
  // the processes this test started (found by its data directory) is SIGKILLed, so no failure leaves them behind.
  ~ServeScript() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      if (!eventually([&] { return exited(); }, 20s)) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
    }
    for (const std::string& p : leftovers()) ::kill(std::stoi(p.substr(0, p.find(' '))), SIGKILL);
  }

  bool start() {
    const std::string script = std::string(ORCH_SOURCE_DIR) + "/scripts/serve.sh";
    std::vector<std::string> envs;
    for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
    std::vector<char*> argv = {const_cast<char*>(script.c_str()), nullptr}, envp;
    for (auto& e : envs) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    // SIGINT / SIGTERM at their defaults in the child (a test runner may ignore them), so serve.sh can trap them.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGTERM);
    posix_spawnattr_setsigdefault(&attr, &def);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    const int rc = posix_spawn(&pid_, script.c_str(), &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return false;
    // serve.sh prints its addresses once orch answers /healthz.
    return eventually([&] { return line("sandbox: ").size() > 0 || exited(); }, 120s) && !exited();
  }

  // The rest of the first stdout line starting with `prefix` ("" if none yet).
  std::string line(const std::string& prefix) const {
    std::istringstream in(read_file(out_path()));
    for (std::string l; std::getline(in, l);)
      if (l.rfind(prefix, 0) == 0) return l.substr(prefix.size());
    return "";
  }

  bool exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    return false;
  }

  // SIGINT, as Ctrl-C; the exit code once it has exited, or -1.
  int interrupt(std::chrono::seconds deadline = 40s) {
    if (pid_ > 0) ::kill(pid_, SIGINT);
    if (!eventually([&] { return exited(); }, deadline)) return -1;
    return exit_code_;
  }

  // orch-sandbox VERB ARGS...: its exit code and stdout.
  int cli(const std::vector<std::string>& args, std::string* out = nullptr) const {
    std::vector<std::string> argv = {ORCH_SANDBOX_BINARY, "--data-dir", data_dir};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string o;
    const int code = run_capture(argv, env, &o);
    if (out) *out = o;
    return code;
  }
  json cli_json(const std::vector<std::string>& args) const {
    std::string out;
    if (cli(args, &out) != 0) return nullptr;
    auto j = json::parse(out, nullptr, false);
    return j.is_discarded() ? json(nullptr) : j;
  }

  json queue_json() const {
    httplib::Client c("127.0.0.1", orch_port);
    c.set_bearer_token_auth(line("token: ").c_str());
    c.set_read_timeout(10s);
    auto r = c.Get("/queue.json");
    if (!r || r->status != 200) return nullptr;
    return json::parse(r->body, nullptr, false);
  }
  json task(const std::string& key) const {
    json q = queue_json();
    if (!q.is_object()) return nullptr;
    for (const auto& t : q["tasks"])
      if (t["work_item_key"] == key) return t;
    return nullptr;
  }
  std::string stage(const std::string& key) const {
    json t = task(key);
    return t.is_object() ? t["stage"].get<std::string>() : "";
  }
  // The write-back comment kinds on a work item, in order ("<task>:<transition>:<kind>" -> kind).
  std::vector<std::string> comment_kinds(const std::string& key) const {
    std::vector<std::string> kinds;
    json cs = cli_json({"comments", key, "--json"});
    if (!cs.is_array()) return kinds;
    for (const auto& c : cs) {
      if (!c["external_id"].is_string()) continue;
      const std::string id = c["external_id"];
      kinds.push_back(id.substr(id.find(':', id.find(':') + 1) + 1));
    }
    return kinds;
  }
  json pull(const std::string& key) const {
    json ps = cli_json({"pulls", "--json"});
    if (ps.is_array())
      for (const auto& p : ps)
        if (p["key"] == key) return p;
    return nullptr;
  }
  int pending_webhooks() const {
    json s = cli_json({"state"});
    return s.is_object() ? s["webhooks"]["pending"].get<int>() : -1;
  }

  // Processes left behind: any whose environment names this data directory (orch, orch-sandbox, serve.sh) or whose
  // working directory is under it (an agent, which gets nothing of orch's environment).
  std::vector<std::string> leftovers() const {
    std::vector<std::string> found;
    const std::string marker = "ORCH_DATA_DIR=" + data_dir;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string pid = e.path().filename().string();
      if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(::getpid())) continue;
      std::error_code ec;
      const std::string environ = read_file(e.path() / "environ");
      const fs::path cwd = fs::read_symlink(e.path() / "cwd", ec);
      bool ours = false;
      for (size_t at = 0; at < environ.size();) {
        const size_t end = environ.find('\0', at);
        if (environ.compare(at, (end == std::string::npos ? environ.size() : end) - at, marker) == 0) ours = true;
        if (end == std::string::npos) break;
        at = end + 1;
      }
      if (!ec && cwd.string().rfind(tmp_.path().string(), 0) == 0) ours = true;
      if (ours) found.push_back(pid + " " + read_file(e.path() / "comm"));
    }
    return found;
  }

  std::string out_path() const { return tmp_.file("serve.out"); }
  std::string err_path() const { return tmp_.file("serve.err"); }
  std::string logs() const {
    return "---- stdout\n" + read_file(out_path()) + "---- stderr\n" + tail(read_file(err_path()));
  }
  static std::string tail(const std::string& s) { return s.size() > 8000 ? s.substr(s.size() - 8000) : s; }

  const TempDir& tmp_;
  std::string data_dir;
  int orch_port = 0, sandbox_port = 0;
  std::map<std::string, std::string> env;

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// Create → In Progress → (analyst) → Approved → (developer pushes, PR opens). Returns the key.
std::string drive_to_pull_request(ServeScript& s) {
  std::string key;
  REQUIRE(s.cli({"create", "Sandbox e2e: <b>greet</b> the shop"}, &key) == 0);
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  REQUIRE(key == "SHOP-2");  // SHOP-1 is the sandbox's seed item
  REQUIRE(s.cli({"move", key, "In Progress"}) == 0);
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        const auto k = s.comment_kinds(key);
                        return !k.empty() && k.front() == "analysis";
                      },
                      90s),
                  s.logs());
  CHECK(s.stage(key) == "analysis");
  REQUIRE(s.cli({"move", key, "Approved"}) == 0);
  REQUIRE_MESSAGE(eventually([&] { return s.pull(key).is_object(); }, 90s), s.logs());
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        json t = s.task(key);
                        return t.is_object() && t["stage"] == "development" && t["pr_number"].is_number();
                      },
                      60s),
                  s.logs());
  return key;
}

std::vector<std::string> secrets_of(const ServeScript& s) {
  std::vector<std::string> values;
  std::istringstream in(read_file(fs::path(s.data_dir) / "sandbox" / "secrets.env"));
  for (std::string l; std::getline(in, l);) {
    const auto eq = l.find('=');
    if (l.empty() || l[0] == '#' || eq == std::string::npos) continue;
    if (l.substr(0, eq) != "ORCH_TELEGRAM_CHAT_ID") values.push_back(l.substr(eq + 1));
  }
  return values;
}

}  // namespace

TEST_CASE(
    "e2e sandbox: serve.sh runs one item through the example pipeline to done, and Ctrl-C leaves nothing running") {
  TempDir tmp;
  ServeScript s(tmp);
  REQUIRE_MESSAGE(s.start(), s.logs());
  const std::string queue = s.line("queue: "), token = s.line("token: "), page = s.line("sandbox: ");
  CHECK(queue == "http://127.0.0.1:" + std::to_string(s.orch_port) + "/queue");
  CHECK(page == "http://127.0.0.1:" + std::to_string(s.sandbox_port) + "/");
  CHECK(token.size() >= 16);
  CHECK(s.line("try: ").find("In Progress") != std::string::npos);
  // The secrets are the sandbox's, in the data directory, readable by the owner only.
  const auto secrets = fs::status(fs::path(s.data_dir) / "sandbox" / "secrets.env").permissions();
  CHECK((secrets & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
  CHECK(secrets_of(s).size() == 7);

  const std::string key = drive_to_pull_request(s);
  REQUIRE(s.cli({"ci", key, "success"}) == 0);
  // The reviewer agent approves (post_review, as the second Gitea user), and the approval reaches done.
  REQUIRE_MESSAGE(eventually([&] { return s.stage(key) == "done"; }, 90s), s.logs());
  json p = s.pull(key);
  REQUIRE(p.is_object());
  bool agent_approved = false;
  for (const auto& r : p["reviews"]) agent_approved |= r["user"] == "orch-review" && r["state"] == "APPROVED";
  CHECK(agent_approved);
  CHECK(p["statuses"]["ci/build"] == "success");
  // What a person sees in the sandbox's Plane: write-back's comments, in order, and the item in Done.
  REQUIRE_MESSAGE(eventually([&] { return s.comment_kinds(key).size() >= 4; }, 30s), s.logs());
  CHECK(s.comment_kinds(key) == std::vector<std::string>{"analysis", "pr_opened", "review_approved", "done"});
  CHECK(eventually(
      [&] {
        json items = s.cli_json({"items", "--json"});
        if (items.is_array())
          for (const auto& i : items)
            if (i["key"] == key) return i["state"] == "Done";
        return false;
      },
      30s));
  std::string shown;
  REQUIRE(s.cli({"comments", key}, &shown) == 0);
  CHECK(shown.find("Analysis of " + key) != std::string::npos);  // the example analyst's summary.md
  // The example analyst reports a made-up 0.02 USD a run (its usage.json): on /queue.json per task and per stage.
  const json q = s.queue_json();
  bool spent = false;
  for (const auto& t : q["tasks"])
    if (t["work_item_key"] == key) spent = t["spend_usd"] == 0.02;
  CHECK(spent);
  CHECK(q["spend"]["stages"][0]["stage"] == "analysis");
  // Telegram: nothing was blocked or lost, so nothing to say.
  json telegram = s.cli_json({"telegram", "--json"});
  REQUIRE(telegram.is_array());
  for (const auto& m : telegram)
    CHECK_MESSAGE(m["text"].get<std::string>().find(" is blocked in ") == std::string::npos, m);
  // A person merges afterwards: main fast-forwards to the PR's head.
  REQUIRE(s.cli({"merge", key}) == 0);
  REQUIRE(eventually([&] { return s.pull(key)["merged"] == true; }, 10s));

  const int code = s.interrupt();
  CHECK_MESSAGE(code == 130, s.logs());
  const auto left = s.leftovers();
  CHECK_MESSAGE(left.empty(), (left.empty() ? std::string() : left.front()));
  // No secret in any log line, the sandbox's or orch's.
  const std::string logs = read_file(s.err_path()) + read_file(s.out_path());
  for (const auto& secret : secrets_of(s))
    if (secret != token) CHECK_MESSAGE(logs.find(secret) == std::string::npos, "a secret is in the logs");
  CHECK(read_file(s.err_path()).find(token) == std::string::npos);
}

TEST_CASE(
    "e2e sandbox: with lose-next-webhook on before CI reports, the item still reaches done through the reconciler") {
  TempDir tmp;
  ServeScript s(tmp);
  REQUIRE_MESSAGE(s.start(), s.logs());
  const std::string key = drive_to_pull_request(s);
  // The developer's job has finished and looked at its gate itself (CI pending), and every webhook so far is out:
  // the one lost is CI's, and only the reconciler can make up for it.
  REQUIRE_MESSAGE(
      eventually(
          [&] {
            return read_file(s.err_path()).find("developer succeeded for " + key + " in development; waiting") !=
                   std::string::npos;
          },
          60s),
      s.logs());
  REQUIRE(eventually([&] { return s.pending_webhooks() == 0; }, 30s));
  REQUIRE(s.cli({"lose-next-webhook"}) == 0);
  REQUIRE(s.cli({"ci", key, "success"}) == 0);
  std::string log;
  REQUIRE(eventually(
      [&] {
        s.cli({"log"}, &log);
        return log.find("lost: gitea status ci/build success") != std::string::npos;
      },
      20s));
  REQUIRE_MESSAGE(eventually([&] { return s.stage(key) == "done"; }, 120s), s.logs());
  json q = s.queue_json();
  REQUIRE(q.is_object());
  CHECK(q["reconciler"]["unblocked_total"].get<int>() >= 1);
  CHECK(q["reconciler"]["last_unblocked"] == key);
  bool by_reconciler = false;
  for (const auto& t : q["transitions"]) by_reconciler |= t["to"] == "review" && t["cause"] == "reconciler";
  CHECK_MESSAGE(by_reconciler, q["transitions"].dump());
  // The unblock is told on Telegram and in Plane.
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        json m = s.cli_json({"telegram", "--json"});
                        if (!m.is_array()) return false;
                        for (const auto& x : m)
                          if (x["text"].get<std::string>().find(key + " unblocked (lost webhook)") != std::string::npos)
                            return true;
                        return false;
                      },
                      30s),
                  s.logs());
  REQUIRE(eventually(
      [&] {
        const auto k = s.comment_kinds(key);
        return std::find(k.begin(), k.end(), "unblocked") != k.end() && k.back() == "done";
      },
      30s));
  CHECK(s.interrupt() == 130);
  CHECK(s.leftovers().empty());
}

TEST_CASE(
    "e2e sandbox: a person clicks In Progress, Approved, CI green and merge on the sandbox page in chromium, and "
    "/queue shows the item done and merged") {
  if (!fs::exists(kChromium)) {
    MESSAGE("SKIPPED: " << kChromium << " is not installed; run scripts/install-deps.sh --with-browser");
    return;
  }
  TempDir tmp;
  ServeScript s(tmp);
  REQUIRE_MESSAGE(s.start(), s.logs());
  // A hostile title, created through the page's own form: it must arrive as text.
  const std::string hostile = "<img src=x onerror=alert(1)> greet";
  TempDir profile;
  DevTools chrome(profile);
  const std::string page = chrome.open(s.line("sandbox: "));
  REQUIRE(!page.empty());
  auto js = [&](const std::string& expr) { return chrome.eval(page, expr); };
  const std::string key = "SHOP-1";  // the sandbox's seed item, as a newcomer would try it
  const std::string item_row = "document.querySelector('#items tr[data-key=\"" + key + "\"]')";
  const std::string hostile_row = "document.querySelector('#items tr[data-key=\"SHOP-2\"]')";
  const std::string pull_row = "document.querySelector('#pulls tr[data-key=\"" + key + "\"]')";
  auto click = [&](const std::string& row, const std::string& label) {
    return js("(() => { const r = " + row +
              "; if (!r) return false; const b = [...r.querySelectorAll('button')]"
              ".find(b => b.textContent === " +
              json(label).dump() + "); if (!b) return false; b.click(); return true; })()") == true;
  };
  REQUIRE(eventually([&] { return js(item_row + " !== null") == true; }));
  REQUIRE(js("document.getElementById('title').value = " + json(hostile).dump() +
             ", document.getElementById('create').click(), true") == true);
  REQUIRE(eventually([&] { return js(hostile_row + " !== null") == true; }));
  CHECK(js(hostile_row + ".children[1].textContent") == hostile);
  CHECK(js("document.querySelector('#items img') === null") == true);

  REQUIRE(click(item_row, "In Progress"));
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        const auto k = s.comment_kinds(key);
                        return !k.empty() && k.front() == "analysis";
                      },
                      90s),
                  s.logs());
  // The analysis comment is on the page, as text.
  REQUIRE(eventually([&] {
    return js("document.getElementById('comments').textContent.includes('Analysis of " + key + "')") == true;
  }));
  REQUIRE(click(item_row, "Approved"));
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        return read_file(s.err_path()).find("developer succeeded for " + key + " in development") !=
                               std::string::npos;
                      },
                      90s),
                  s.logs());
  REQUIRE(eventually([&] { return js(pull_row + " !== null") == true; }));
  REQUIRE(click(pull_row, "CI green"));
  // The reviewer agent approves and the approval reaches done; the person merges the PR afterwards.
  REQUIRE_MESSAGE(eventually([&] { return s.stage(key) == "done"; }, 60s), s.logs());
  REQUIRE(eventually([&] { return js(pull_row + ".querySelector('.pr-state').textContent") == "open"; }));
  REQUIRE(click(pull_row, "merge"));
  REQUIRE(eventually([&] { return js(pull_row + ".querySelector('.pr-state').textContent") == "merged"; }));

  // orch's /queue, with the printed token as the basic-auth password, shows the item done.
  const std::string queue = s.line("queue: ");
  const std::string with_auth = "http://admin:" + s.line("token: ") + "@" + queue.substr(std::string("http://").size());
  const std::string q = chrome.open(with_auth);
  REQUIRE(!q.empty());
  const std::string done_row =
      "[...document.querySelectorAll('#tasks tr.task')].some(r => r.querySelector('td.key').textContent === '" + key +
      "' && r.querySelector('td.stage').textContent === 'done' && r.textContent.includes('#1 merged'))";
  REQUIRE_MESSAGE(eventually([&] { return chrome.eval(q, done_row) == true; }, 60s), s.logs());
  // The README's picture of /queue, kept beside the test binaries (docs/queue.png is a copy of it).
  (void)chrome.call("Emulation.setDeviceMetricsOverride",
                    {{"width", 1280}, {"height", 1000}, {"deviceScaleFactor", 1}, {"mobile", false}}, q);
  const std::string shot = std::string(ORCH_BUILD_DIR) + "/sandbox-queue.png";
  CHECK(chrome.screenshot(q, shot));
  MESSAGE("screenshot: " << shot);
  (void)chrome.call("Browser.close", nlohmann::json::object());
  CHECK(s.interrupt() == 130);
  CHECK(s.leftovers().empty());
}
