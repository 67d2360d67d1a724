// tests/e2e/load_balancer.h: the load balancer in front of several `orch serve` replicas, as a deployment has one,
// on a loopback port. Each POST goes to the next backend in turn that is not marked down; a backend that gives no
// HTTP answer (refused, reset, cut off by a SIGKILL while it handled the request) gets the very same request — same
// headers, same body, so the same delivery id and signature — re-sent to the next live backend, as a load
// balancer's retry does; a sender then sees the second backend's answer (a 200 duplicate when the first one had
// stored the delivery before it died). Every forwarded request is recorded: its source, delivery id, the backends
// tried, and the answer. Thread-safe: backends may be marked down from any thread while requests are forwarded.
#pragma once

#include <httplib.h>
#include <strings.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace orch::testing::e2e {

class LoadBalancer {
 public:
  struct Forwarded {
    std::string source;              // "plane" or "gitea" (from the path)
    std::string delivery_id;         // X-Plane-Delivery / X-Gitea-Delivery
    std::vector<std::size_t> tried;  // backends, in order; the last one answered unless status is 502
    int status = 0;                  // what the sender got
    std::string body;
  };

  explicit LoadBalancer(std::vector<int> backend_ports)
      : ports_(std::move(backend_ports)), down_(new std::atomic<bool>[ports_.size()]), in_flight_(ports_.size(), 0) {
    for (std::size_t i = 0; i < ports_.size(); ++i) down_[i] = false;
    // Enough threads that a burst of concurrent senders (the start race) reaches the replicas concurrently.
    server_.new_task_queue = [] { return new httplib::ThreadPool(64); };
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) { forward(req, res); });
    // cpp-httplib 0.11 listens with a backlog of 5: a burst of 50 connects overflows the accept queue, and the
    // connections it drops are reset (what the start race used to see). Raise it, as app/http_server.cpp does.
    server_.set_socket_options([this](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_fd_ = sock;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (listen_fd_ >= 0) ::listen(listen_fd_, 1024);  // Linux: updates the backlog of a listening socket
    // Bound and listening: a connection made before the accept loop runs waits in the backlog.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }

  ~LoadBalancer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  LoadBalancer(const LoadBalancer&) = delete;
  LoadBalancer& operator=(const LoadBalancer&) = delete;

  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  std::size_t backends() const { return ports_.size(); }
  // A backend marked down gets no new request (a health check that failed); requests in flight to it go on.
  void set_down(std::size_t backend, bool down) { down_[backend].store(down); }
  bool down(std::size_t backend) const { return down_[backend].load(); }
  // Requests forwarded to the backend and not yet answered.
  int in_flight(std::size_t backend) const {
    std::lock_guard lock(mu_);
    return in_flight_[backend];
  }
  // Waits until a request is being forwarded to the backend (sent, its answer not yet read), up to `deadline`.
  bool wait_in_flight(std::size_t backend, std::chrono::milliseconds deadline) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, deadline, [&] { return in_flight_[backend] > 0; });
  }

  std::vector<Forwarded> forwarded() const {
    std::lock_guard lock(mu_);
    return log_;
  }

 private:
  void forward(const httplib::Request& req, httplib::Response& res) {
    Forwarded f;
    f.source = req.path.find("/plane") != std::string::npos   ? "plane"
               : req.path.find("/gitea") != std::string::npos ? "gitea"
                                                              : "";
    f.delivery_id = req.has_header("X-Plane-Delivery")   ? req.get_header_value("X-Plane-Delivery")
                    : req.has_header("X-Gitea-Delivery") ? req.get_header_value("X-Gitea-Delivery")
                                                         : "";
    httplib::Headers headers;
    for (const auto& [k, v] : req.headers)
      if (!is_hop_by_hop(k)) headers.emplace(k, v);
    const std::string content_type = req.get_header_value("Content-Type");
    const std::size_t n = ports_.size();
    const std::size_t first = next_.fetch_add(1);
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t b = (first + k) % n;
      if (down_[b].load()) continue;
      f.tried.push_back(b);
      httplib::Client client("127.0.0.1", ports_[b]);
      client.set_connection_timeout(std::chrono::seconds(5));
      client.set_read_timeout(std::chrono::seconds(30));
      {
        std::lock_guard lock(mu_);
        ++in_flight_[b];
      }
      cv_.notify_all();
      auto answer = client.Post(req.path.c_str(), headers, req.body, content_type.c_str());
      {
        std::lock_guard lock(mu_);
        --in_flight_[b];
      }
      if (!answer) continue;  // no answer: the same request to the next live backend
      f.status = answer->status;
      f.body = answer->body;
      res.status = answer->status;
      res.set_content(answer->body, answer->get_header_value("Content-Type").c_str());
      record(std::move(f));
      return;
    }
    f.status = 502;
    f.body = R"({"error": "no live backend answered"})";
    res.status = f.status;
    res.set_content(f.body, "application/json");
    record(std::move(f));
  }

  static bool is_hop_by_hop(const std::string& name) {
    for (const char* h :
         {"Host", "Content-Length", "Content-Type", "Connection", "Keep-Alive", "Accept-Encoding", "Transfer-Encoding"})
      if (::strcasecmp(name.c_str(), h) == 0) return true;
    return false;
  }

  void record(Forwarded f) {
    std::lock_guard lock(mu_);
    log_.push_back(std::move(f));
  }

  const std::vector<int> ports_;
  std::unique_ptr<std::atomic<bool>[]> down_;
  std::atomic<std::size_t> next_{0};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // in_flight_ went up
  std::vector<int> in_flight_;          // guarded by mu_
  std::vector<Forwarded> log_;          // guarded by mu_
  httplib::Server server_;
  int listen_fd_ = -1;  // set by the socket-options hook while binding
  int port_ = 0;
  std::thread thread_;  // last: stopped before the rest goes
};

}  // namespace orch::testing::e2e
