#include "app/http_server.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

#include <sys/socket.h>

#include "engine/thread_name.h"

namespace orch {
namespace {

// A task queue that adds a thread whenever no idle one is free, up to max_threads. httplib::ThreadPool is fixed:
// with it, N idle keep-alive connections on N threads make every new request wait for an idle one to time out.
class ElasticThreadPool final : public httplib::TaskQueue {
 public:
  ElasticThreadPool(size_t min_threads, size_t max_threads, std::chrono::milliseconds idle_exit)
      : min_(min_threads), max_(std::max(min_threads, max_threads)), idle_exit_(idle_exit) {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < min_; ++i) spawn_locked();
  }
  ~ElasticThreadPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(fn));
      if (idle_ < jobs_.size() && live_ < max_) spawn_locked();
    }
    cv_.notify_one();
  }

  void shutdown() override {  // runs the queued jobs, then waits for every thread to leave
    std::unique_lock lock(mu_);
    shutdown_ = true;
    cv_.notify_all();
    done_.wait(lock, [this] { return live_ == 0; });
  }

 private:
  void spawn_locked() {
    ++live_;
    std::thread([this] { work(); }).detach();  // shutdown() waits for live_ == 0 before the pool goes away
  }

  void work() {
    name_this_thread("http-worker");
    std::unique_lock lock(mu_);
    while (true) {
      if (!jobs_.empty()) {
        auto fn = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        fn();
        lock.lock();
        continue;
      }
      if (shutdown_) break;
      ++idle_;
      const bool woken = cv_.wait_for(lock, idle_exit_, [this] { return shutdown_ || !jobs_.empty(); });
      --idle_;
      if (!woken && live_ > min_) break;
    }
    --live_;
    done_.notify_all();
  }

  const size_t min_, max_;
  const std::chrono::milliseconds idle_exit_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  size_t live_ = 0, idle_ = 0;              // guarded by mu_
  bool shutdown_ = false;                   // guarded by mu_
};

}  // namespace

HttpServer::HttpServer(HttpLimits limits) : listen_backlog_(limits.listen_backlog) {
  const size_t threads = static_cast<size_t>(std::max(1, limits.threads));
  const size_t max_threads = static_cast<size_t>(std::max(limits.threads, limits.max_threads));
  const auto idle_exit = std::chrono::duration_cast<std::chrono::milliseconds>(limits.keep_alive_idle);
  server_.new_task_queue = [threads, max_threads, idle_exit] {
    return new ElasticThreadPool(threads, max_threads, idle_exit);
  };
  server_.set_read_timeout(limits.read_timeout);
  server_.set_write_timeout(limits.write_timeout);
  server_.set_idle_interval(std::chrono::milliseconds(100));
  server_.set_keep_alive_timeout(limits.keep_alive_idle.count());
  server_.set_keep_alive_max_count(static_cast<size_t>(limits.keep_alive_max_requests));
  server_.set_tcp_nodelay(true);
  // Replaces httplib's default (SO_REUSEPORT, which would let a second server bind the same port): remember the
  // socket so that start() can raise its listen backlog.
  server_.set_socket_options([this](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd_ = sock;
  });
}

Status HttpServer::start(const std::string& host, int port) {
  if (port == 0) {
    port_ = server_.bind_to_any_port(host);
    if (port_ <= 0) return unavailable("cannot bind " + host + ":0");
  } else {
    if (!server_.bind_to_port(host, port)) return unavailable("cannot bind " + host + ":" + std::to_string(port));
    port_ = port;
  }
  if (listen_fd_ >= 0 && listen_backlog_ > 0) ::listen(listen_fd_, listen_backlog_);  // Linux: updates the backlog
  thread_ = std::thread([this] {
    name_this_thread("http-accept");
    server_.listen_after_bind();
  });
  // httplib's stop() does nothing until the loop has marked itself running: a stop() right after start() would
  // leave the thread listening forever and its join() hanging. The loop gets there at once; wait for it, bounded.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!server_.is_running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  return {};
}

void HttpServer::stop() {
  if (thread_.joinable()) {
    server_.stop();
    thread_.join();
  }
}

}  // namespace orch
