// sandbox/main.cpp: `orch-sandbox`, the first-run sandbox (issue 21). `orch-sandbox serve` runs the local Plane,
// Gitea and Telegram and a page + JSON control API on its own port; every other verb is a client of that API, for
// scripts and tests. The server writes <data dir>/sandbox/sandbox.env (URLs only, no secrets) once it listens:
// serve.sh reads orch's base URLs from it, and the client verbs find the sandbox through it.
#include <httplib.h>
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/printable.h"
#include "sandbox/page.h"
#include "sandbox/sandbox.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace orch;
using namespace orch::sandbox;

namespace {

std::string env_or(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int http_status(Code c) {
  switch (c) {
    case Code::kInvalid: return 400;
    case Code::kNotFound: return 404;
    case Code::kConflict: return 409;
    case Code::kUnavailable: return 503;
    default: return 500;
  }
}

void answer(httplib::Response& res, const Result<json>& r) {
  if (r.ok()) {
    res.status = 200;
    res.set_content(r.value().dump(), "application/json");
  } else {
    res.status = http_status(r.status().code);
    res.set_content(json{{"error", r.status().message}}.dump(), "application/json");
  }
}

// A POST from a page on another site must not drive the sandbox: such a request cannot carry a JSON content type
// without a CORS preflight (which this server never grants), and browsers mark it cross-site.
bool acceptable_post(const httplib::Request& req, httplib::Response& res, json* body) {
  const std::string site = req.get_header_value("Sec-Fetch-Site");
  const std::string type = req.get_header_value("Content-Type");
  if (site == "cross-site" || site == "same-site" || type.rfind("application/json", 0) != 0) {
    res.status = 403;
    res.set_content(R"({"error":"the control API takes same-origin JSON requests only"})", "application/json");
    return false;
  }
  *body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
  if (body->is_discarded() || !body->is_object()) {
    res.status = 400;
    res.set_content(R"({"error":"the body must be a JSON object"})", "application/json");
    return false;
  }
  return true;
}

std::string str(const json& body, const char* key) {
  return body.contains(key) && body[key].is_string() ? body[key].get<std::string>() : "";
}

// host:port, "[::1]:port" without brackets.
bool split_listen(const std::string& listen, std::string* host, int* port) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  *host = listen.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  try {
    *port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    return false;
  }
  return *port >= 0 && *port <= 65535;
}

struct ServeOptions {
  std::string listen, orch_url, data_dir;
};

int serve(const ServeOptions& o) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  spdlog::logger log("sandbox", sink);
  log.set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l  %v", spdlog::pattern_time_type::utc);
  // Signals are taken by one thread with sigwait, so every other thread (the fakes', httplib's) never sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  SandboxOptions so;
  so.dir = fs::path(o.data_dir) / "sandbox";
  so.orch_url = o.orch_url;
  while (!so.orch_url.empty() && so.orch_url.back() == '/') so.orch_url.pop_back();
  so.plane_webhook_secret = env_or("ORCH_PLANE_WEBHOOK_SECRET");
  so.gitea_webhook_secret = env_or("ORCH_GITEA_WEBHOOK_SECRET");
  so.plane_api_key = env_or("ORCH_PLANE_API_KEY");
  so.gitea_token = env_or("ORCH_GITEA_TOKEN");
  so.gitea_review_token = env_or("ORCH_GITEA_REVIEW_TOKEN");
  so.telegram_bot_token = env_or("ORCH_TELEGRAM_BOT_TOKEN");
  so.telegram_chat_id = env_or("ORCH_TELEGRAM_CHAT_ID");
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, std::string>>{{"ORCH_PLANE_WEBHOOK_SECRET", so.plane_webhook_secret},
                                                        {"ORCH_GITEA_WEBHOOK_SECRET", so.gitea_webhook_secret},
                                                        {"ORCH_PLANE_API_KEY", so.plane_api_key},
                                                        {"ORCH_GITEA_TOKEN", so.gitea_token},
                                                        {"ORCH_TELEGRAM_BOT_TOKEN", so.telegram_bot_token},
                                                        {"ORCH_TELEGRAM_CHAT_ID", so.telegram_chat_id}}) {
    if (value.empty()) {
      std::cerr << "orch-sandbox serve: " << name << " is not set (scripts/serve.sh generates it)\n";
      return 1;
    }
  }
  Sandbox sandbox(so, log);
  if (Status s = sandbox.start(); !s.ok()) {
    std::cerr << "orch-sandbox serve: " << s.message << "\n";
    return 1;
  }

  httplib::Server server;
  server.set_keep_alive_timeout(2);
  server.Get("/", [&](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'");
    res.set_content(sandbox_page(so.orch_url), "text/html; charset=utf-8");
  });
  server.Get("/api/state", [&](const httplib::Request&, httplib::Response& res) { answer(res, sandbox.state()); });
  server.Get("/api/items", [&](const httplib::Request&, httplib::Response& res) { answer(res, sandbox.items()); });
  server.Get("/api/pulls", [&](const httplib::Request&, httplib::Response& res) { answer(res, sandbox.pulls()); });
  server.Get("/api/telegram",
             [&](const httplib::Request&, httplib::Response& res) { answer(res, sandbox.telegram()); });
  server.Get("/api/log", [&](const httplib::Request&, httplib::Response& res) { answer(res, sandbox.log_lines()); });
  server.Get(R"(/api/items/([^/]+)/comments)", [&](const httplib::Request& req, httplib::Response& res) {
    answer(res, sandbox.comments(req.matches[1]));
  });
  server.Post("/api/items", [&](const httplib::Request& req, httplib::Response& res) {
    json b;
    if (acceptable_post(req, res, &b)) answer(res, sandbox.create(str(b, "title"), str(b, "description")));
  });
  server.Post(R"(/api/items/([^/]+)/(move|ci|approve|request-changes|merge))",
              [&](const httplib::Request& req, httplib::Response& res) {
                json b;
                if (!acceptable_post(req, res, &b)) return;
                const std::string key = req.matches[1], verb = req.matches[2];
                if (verb == "move")
                  answer(res, sandbox.move(key, str(b, "state")));
                else if (verb == "ci")
                  answer(res, sandbox.ci(key, str(b, "state")));
                else if (verb == "approve")
                  answer(res, sandbox.review(key, true, str(b, "body")));
                else if (verb == "request-changes")
                  answer(res, sandbox.review(key, false, str(b, "body")));
                else
                  answer(res, sandbox.merge(key));
              });
  server.Post("/api/lose-next-webhook", [&](const httplib::Request& req, httplib::Response& res) {
    json b;
    if (acceptable_post(req, res, &b))
      answer(res, sandbox.lose_next_webhook(!b.contains("on") || (b["on"].is_boolean() && b["on"].get<bool>())));
  });

  std::string host = "127.0.0.1";
  int port = 0;
  if (!o.listen.empty()) {
    if (!split_listen(o.listen, &host, &port)) {
      std::cerr << "orch-sandbox serve: --listen '" << o.listen << "' is not host:port\n";
      return 2;
    }
    if (!server.bind_to_port(host.c_str(), port)) {
      std::cerr << "orch-sandbox serve: cannot listen on " << o.listen << "\n";
      return 1;
    }
    if (port == 0) port = server.bind_to_any_port(host.c_str());
  } else {
    // The next free port after orch's.
    std::string orch_host = "127.0.0.1";
    int orch_port = 8080;
    const std::string hostport =
        so.orch_url.substr(so.orch_url.find("://") == std::string::npos ? 0 : so.orch_url.find("://") + 3);
    split_listen(hostport, &orch_host, &orch_port);
    port = 0;
    for (int p = orch_port + 1; p < orch_port + 200 && p <= 65535; ++p)
      if (server.bind_to_port(host.c_str(), p)) {
        port = p;
        break;
      }
    if (port == 0) {
      std::cerr << "orch-sandbox serve: no free port after " << orch_port << "\n";
      return 1;
    }
  }
  const std::string url =
      "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  std::thread listener([&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  // URLs only: serve.sh sources this file; the client verbs read ORCH_SANDBOX_URL from it.
  const fs::path env_file = so.dir / "sandbox.env", tmp = so.dir / "sandbox.env.tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << "ORCH_SANDBOX_URL=" << url << "\nORCH_PLANE_BASE_URL=" << sandbox.plane_url()
      << "\nORCH_GITEA_BASE_URL=" << sandbox.gitea_url() << "\nORCH_TELEGRAM_API_BASE=" << sandbox.telegram_url()
      << "\n";
  }
  fs::rename(tmp, env_file);
  log.info("sandbox: page and control API on {}; Plane {}, Gitea {}, Telegram {}; webhooks to {}", url,
           sandbox.plane_url(), sandbox.gitea_url(), sandbox.telegram_url(), so.orch_url);

  int sig = 0;
  sigwait(&signals, &sig);
  log.info("sandbox: stopping ({})", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
  listener.join();
  std::error_code ec;
  fs::remove(env_file, ec);
  return 0;
}

// ---- the client verbs ----

struct Client {
  std::string url;  // http://host:port
  bool json_out = false;
};

std::string find_sandbox(const std::string& flag, const std::string& data_dir) {
  if (!flag.empty()) return flag;
  if (auto e = env_or("ORCH_SANDBOX_URL"); !e.empty()) return e;
  std::ifstream f(fs::path(data_dir) / "sandbox" / "sandbox.env");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("ORCH_SANDBOX_URL=", 0) == 0) return line.substr(17);
  return "";
}

// The answer's JSON, or nullopt after printing why not (exit 1).
std::optional<json> call(const Client& c, const std::string& method, const std::string& path, const json& body = {}) {
  httplib::Client http(c.url);
  http.set_connection_timeout(std::chrono::seconds(5));
  http.set_read_timeout(std::chrono::seconds(60));
  auto r = method == "GET" ? http.Get(path.c_str()) : http.Post(path.c_str(), body.dump(), "application/json");
  if (!r) {
    std::cerr << "orch-sandbox: cannot reach the sandbox at " << c.url << " (is scripts/serve.sh running?)\n";
    return std::nullopt;
  }
  auto j = json::parse(r->body, nullptr, false);
  if (r->status != 200) {
    std::cerr << "orch-sandbox: " << (j.is_object() && j.contains("error") ? j["error"].get<std::string>() : r->body)
              << "\n";
    return std::nullopt;
  }
  return j;
}

std::string encode(const std::string& s) {
  std::string out;
  static const char* hex = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      out += '%', out += hex[c >> 4], out += hex[c & 15];
  }
  return out;
}

int print_list(const Client& c, const std::optional<json>& j, const std::function<void(const json&)>& line) {
  if (!j) return 1;
  if (c.json_out) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  if (j->empty()) std::cout << "(none)\n";
  for (const auto& row : *j) line(row);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"orch-sandbox: a local Plane, Gitea and Telegram for trying orch (scripts/serve.sh starts it)"};
  app.require_subcommand(1);
  std::string sandbox_flag, data_dir = env_or("ORCH_DATA_DIR", "./var");
  app.add_option("--sandbox", sandbox_flag,
                 "the sandbox's URL (default: ORCH_SANDBOX_URL, else <data dir>/sandbox/sandbox.env)");
  app.add_option("--data-dir", data_dir, "orch's data directory (default: ORCH_DATA_DIR, else ./var)");

  ServeOptions so;
  so.listen = env_or("ORCH_SANDBOX_LISTEN");
  so.orch_url = "http://" + env_or("ORCH_LISTEN", "127.0.0.1:8080");
  auto* serve_cmd =
      app.add_subcommand("serve", "run the sandbox until SIGINT or SIGTERM (secrets from ORCH_* variables)");
  serve_cmd->add_option(
      "--listen", so.listen,
      "host:port of the page and control API (default: ORCH_SANDBOX_LISTEN, else the next free port after orch's)");
  serve_cmd->add_option("--orch", so.orch_url, "orch's base URL, where webhooks go (default: http://$ORCH_LISTEN)");

  Client client;
  std::string title, description, key, state, body;
  auto* create_cmd = app.add_subcommand("create", "create a work item in Todo; prints its key");
  create_cmd->add_option("TITLE", title, "the title")->required();
  create_cmd->add_option("--description", description, "its description");
  auto* items_cmd = app.add_subcommand("items", "list the work items: key, state, PR, title");
  items_cmd->add_flag("--json", client.json_out, "print JSON");
  auto* move_cmd = app.add_subcommand("move", "move a work item to a state (In Progress, Approved, Rejected, ...)");
  move_cmd->add_option("KEY", key, "e.g. SHOP-1")->required();
  move_cmd->add_option("STATE", state, "the state's name")->required();
  auto* ci_cmd = app.add_subcommand("ci", "report CI (context ci/build) on the head of a work item's PR");
  ci_cmd->add_option("KEY", key, "e.g. SHOP-1")->required();
  ci_cmd->add_option("STATE", state, "success or failure (also pending, error)")
      ->required()
      ->check(CLI::IsMember({"success", "failure", "pending", "error"}));
  auto* approve_cmd = app.add_subcommand("approve", "approve a work item's PR (as the human reviewer ada)");
  approve_cmd->add_option("KEY", key, "e.g. SHOP-1")->required();
  auto* changes_cmd = app.add_subcommand("request-changes", "request changes on a work item's PR");
  changes_cmd->add_option("KEY", key, "e.g. SHOP-1")->required();
  changes_cmd->add_option("--body", body, "the review's text");
  auto* merge_cmd = app.add_subcommand("merge", "merge a work item's PR (fast-forwards main when it can)");
  merge_cmd->add_option("KEY", key, "e.g. SHOP-1")->required();
  auto* comments_cmd = app.add_subcommand("comments", "the Plane comments on a work item (orch's write-back)");
  comments_cmd->add_option("KEY", key, "e.g. SHOP-1")->required();
  comments_cmd->add_flag("--json", client.json_out, "print JSON");
  auto* telegram_cmd = app.add_subcommand("telegram", "the Telegram messages orch sent");
  telegram_cmd->add_flag("--json", client.json_out, "print JSON");
  auto* pulls_cmd = app.add_subcommand("pulls", "the pull requests of acme/shop");
  pulls_cmd->add_flag("--json", client.json_out, "print JSON");
  auto* log_cmd = app.add_subcommand("log", "the sandbox's recent log: webhooks sent and lost");
  log_cmd->add_flag("--json", client.json_out, "print JSON");
  bool off = false;
  auto* lose_cmd =
      app.add_subcommand("lose-next-webhook", "the next webhook is not sent (the reconciler must recover it)");
  lose_cmd->add_flag("--off", off, "turn the switch off again");
  auto* state_cmd = app.add_subcommand("state", "everything the page shows, as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; bad usage: 2, as orch's verbs
  }
  if (serve_cmd->parsed()) return serve(ServeOptions{so.listen, so.orch_url, data_dir});

  client.url = find_sandbox(sandbox_flag, data_dir);
  if (client.url.empty()) {
    std::cerr << "orch-sandbox: no sandbox found: pass --sandbox URL or start scripts/serve.sh (it writes "
              << (fs::path(data_dir) / "sandbox" / "sandbox.env").string() << ")\n";
    return 1;
  }
  const std::string item = "/api/items/" + encode(key);
  if (create_cmd->parsed()) {
    auto j = call(client, "POST", "/api/items", {{"title", title}, {"description", description}});
    if (!j) return 1;
    std::cout << (*j)["key"].get<std::string>() << "\n";
    return 0;
  }
  if (items_cmd->parsed())
    return print_list(client, call(client, "GET", "/api/items"), [](const json& r) {
      std::cout << r["key"].get<std::string>() << "\t" << r["state"].get<std::string>() << "\t"
                << (r["pr"].is_null() ? "-" : "#" + std::to_string(r["pr"].get<long long>())) << "\t"
                << printable(r["title"].get<std::string>()) << "\n";
    });
  auto act = [&](const std::string& path, const json& b, const std::string& done) {
    auto j = call(client, "POST", path, b);
    if (!j) return 1;
    std::cout << done << "\n";
    return 0;
  };
  if (move_cmd->parsed()) return act(item + "/move", {{"state", state}}, key + " moved to " + state);
  if (ci_cmd->parsed()) return act(item + "/ci", {{"state", state}}, "CI " + state + " on " + key);
  if (approve_cmd->parsed()) return act(item + "/approve", json::object(), key + ": pull request approved");
  if (changes_cmd->parsed()) return act(item + "/request-changes", {{"body", body}}, key + ": changes requested");
  if (merge_cmd->parsed()) return act(item + "/merge", json::object(), key + ": pull request merged");
  if (lose_cmd->parsed())
    return act("/api/lose-next-webhook", {{"on", !off}},
               off ? "the next webhook will be sent" : "the next webhook will be lost");
  if (comments_cmd->parsed())
    return print_list(client, call(client, "GET", item + "/comments"), [](const json& c) {
      std::cout << (c["external_id"].is_string() ? c["external_id"].get<std::string>() : "-") << "\t"
                << printable(c["comment_html"].get<std::string>()) << "\n";
    });
  if (telegram_cmd->parsed())
    return print_list(client, call(client, "GET", "/api/telegram"),
                      [](const json& m) { std::cout << printable(m["text"].get<std::string>()) << "\n"; });
  if (pulls_cmd->parsed())
    return print_list(client, call(client, "GET", "/api/pulls"), [](const json& p) {
      std::cout << "#" << p["number"].get<long long>() << "\t"
                << (p["merged"].get<bool>() ? "merged" : p["state"].get<std::string>()) << "\t"
                << p["head"].get<std::string>() << "\t" << p["head_sha"].get<std::string>().substr(0, 12) << "\t"
                << p["statuses"].dump() << "\n";
    });
  if (log_cmd->parsed())
    return print_list(client, call(client, "GET", "/api/log"),
                      [](const json& l) { std::cout << printable(l.get<std::string>()) << "\n"; });
  if (state_cmd->parsed()) {
    auto j = call(client, "GET", "/api/state");
    if (!j) return 1;
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  return 2;
}
