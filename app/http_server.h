// app/http_server.h: the cpp-httplib server of `orch serve`, on its own thread from start() until stop().
// Routes are registered by their owners (webhooks/, app/queue_page, app/metrics) before start(). Read and write
// timeouts and a bounded thread pool keep slow or idle clients from starving real deliveries.
// Only the owner calls start() and stop().
#pragma once

#include <httplib.h>

#include <memory>
#include <string>
#include <thread>

#include "engine/status.h"

namespace orch {

struct HttpLimits {
  int threads = 16;  // resident worker threads
  // cpp-httplib holds a thread per connection, idle keep-alive ones included (up to keep_alive_idle): the pool
  // grows on demand up to this many, so idle or slow clients cannot starve real deliveries; threads above
  // `threads` leave after idling keep_alive_idle.
  int max_threads = 256;
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of concurrent connects overflows it and loses
  // connections (SYN-cookie resets). start() raises it to this.
  int listen_backlog = 1024;
  std::chrono::seconds read_timeout{5};
  std::chrono::seconds write_timeout{5};
  std::chrono::seconds keep_alive_idle{5};
  int keep_alive_max_requests = 1000;
};

class HttpServer {
 public:
  explicit HttpServer(HttpLimits limits = {});
  ~HttpServer() { stop(); }
  httplib::Server& routes() { return server_; }
  // Binds (port 0 picks a free one), then serves on the owned thread. kUnavailable if the address is taken.
  Status start(const std::string& host, int port);
  int port() const { return port_; }
  void stop();

 private:
  httplib::Server server_;
  const int listen_backlog_;
  int listen_fd_ = -1;  // the last socket httplib created for binding (set in its socket-options hook)
  int port_ = 0;
  std::thread thread_;  // last: joined before the server is destroyed
};

}  // namespace orch
