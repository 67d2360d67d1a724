#include "tests/support/cdp_browser.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

namespace orch::testing {

DevTools::DevTools(const TempDir& profile) {
  int to_chrome[2], from_chrome[2];
  REQUIRE(pipe(to_chrome) == 0);
  REQUIRE(pipe(from_chrome) == 0);
  // Built before fork(): the child of a threaded process may only call async-signal-safe functions.
  const std::string user_data = "--user-data-dir=" + profile.path().string();
  pid_ = fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    int null = ::open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    int in = fcntl(to_chrome[0], F_DUPFD, 10), out = fcntl(from_chrome[1], F_DUPFD, 10);  // clear of 3 and 4
    dup2(in, 3);
    dup2(out, 4);
    execl(kChromium, kChromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
          "--remote-debugging-pipe", user_data.c_str(), "about:blank", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_chrome[0]);
  close(from_chrome[1]);
  write_fd_ = to_chrome[1];
  read_fd_ = from_chrome[0];
}

DevTools::~DevTools() {
  close(write_fd_);
  close(read_fd_);
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

nlohmann::json DevTools::call(const std::string& method, nlohmann::json params, const std::string& session) {
  nlohmann::json msg = {{"id", ++next_id_}, {"method", method}, {"params", std::move(params)}};
  if (!session.empty()) msg["sessionId"] = session;
  std::string wire = msg.dump();
  wire.push_back('\0');
  REQUIRE(write(write_fd_, wire.data(), wire.size()) == static_cast<ssize_t>(wire.size()));
  const int id = next_id_;
  while (true) {
    auto reply = next_message();
    if (!reply) return {{"error", "no answer to " + method}};
    if (reply->value("id", -1) == id)
      return reply->contains("error") ? nlohmann::json{{"error", (*reply)["error"]}} : (*reply)["result"];
  }
}

nlohmann::json DevTools::eval(const std::string& session, const std::string& expression) {
  auto r = call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}}, session);
  if (!r.contains("result") || !r["result"].contains("value")) return nullptr;
  return r["result"]["value"];
}

std::string DevTools::open(const std::string& url) {
  auto target = call("Target.createTarget", {{"url", url}});
  if (!target.contains("targetId")) return "";
  auto attached = call("Target.attachToTarget", {{"targetId", target["targetId"]}, {"flatten", true}});
  return attached.contains("sessionId") ? attached["sessionId"].get<std::string>() : "";
}

bool DevTools::screenshot(const std::string& session, const std::string& png_path) {
  auto shot = call("Page.captureScreenshot", {{"format", "png"}, {"captureBeyondViewport", true}}, session);
  if (!shot.contains("data") || !shot["data"].is_string()) return false;
  const std::string b64 = shot["data"];
  std::string png;
  int bits = 0, value = 0;
  for (char c : b64) {
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
    else
      continue;  // '=' padding
    value = (value << 6) | d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      png += static_cast<char>((value >> bits) & 0xff);
    }
  }
  std::ofstream(png_path, std::ios::binary | std::ios::trunc) << png;
  return png.size() > 8;
}

std::optional<nlohmann::json> DevTools::next_message() {
  while (true) {
    if (auto nul = buffer_.find('\0'); nul != std::string::npos) {
      std::string one = buffer_.substr(0, nul);
      buffer_.erase(0, nul + 1);
      return nlohmann::json::parse(one, nullptr, false);
    }
    pollfd p{read_fd_, POLLIN, 0};
    if (poll(&p, 1, 20000) <= 0) return std::nullopt;
    char buf[65536];
    ssize_t n = read(read_fd_, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace orch::testing
