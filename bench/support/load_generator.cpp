// DESIGN: wrk's shape (a few epoll threads, many keep-alive connections, one request in flight on each) with the
// two things wrk cannot do from precomputed bodies: a repeat must be of a delivery the server already acknowledged
// (else it races the original and either may be the one stored), and every answer is checked, not only counted.
#include "bench/support/load_generator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace orch::bench {

Target parse_target(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) throw std::invalid_argument("target must be http://host:port/path: " + url);
  std::string rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  std::string hostport = slash == std::string::npos ? rest : rest.substr(0, slash);
  Target t;
  t.path = slash == std::string::npos ? "/webhooks/plane" : rest.substr(slash);
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("target needs a port: " + url);
  t.host = hostport.substr(0, colon);
  t.port = std::stoi(hostport.substr(colon + 1));
  return t;
}

RequestSet make_requests(const PlaneBodySpec& spec, const std::string& secret, std::uint64_t first, std::size_t count,
                         int threads) {
  RequestSet set;
  set.requests.resize(count);
  const TimePoint base = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  auto work = [&](std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) {
      const std::uint64_t n = first + i;
      const std::string body = plane_issue_body(spec, n, base + std::chrono::microseconds(n));
      SignedRequest& r = set.requests[i];
      r.delivery_id = bench_uuid(2, n);
      r.tail = "X-Plane-Delivery: " + r.delivery_id + "\r\nX-Plane-Signature: " + hmac_sha256_hex(secret, body) +
               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      if (i == 0) set.body_bytes = body.size();
    }
  };
  threads = std::max(1, threads);
  std::vector<std::thread> pool;
  const std::size_t step = (count + static_cast<std::size_t>(threads) - 1) / static_cast<std::size_t>(threads);
  for (int t = 0; t < threads; ++t) {
    const std::size_t from = std::min(count, step * static_cast<std::size_t>(t));
    const std::size_t to = std::min(count, from + step);
    pool.emplace_back(work, from, to);
  }
  for (auto& th : pool) th.join();
  return set;
}

namespace {

// Plane sends Accept-Encoding: gzip, deflate (python-requests' default), so a server may compress its answer.
std::string gunzip(const std::string& in) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return {};
  std::string out;
  char buf[4096];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  }
  inflateEnd(&z);
  return rc == Z_STREAM_END ? out : std::string();
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

struct Conn {
  int fd = -1;
  std::size_t target = 0;
  bool connecting = false;
  bool busy = false;
  bool repeat = false;
  std::uint32_t index = 0;
  std::size_t written = 0;
  std::int64_t start_ns = 0;
  std::string in;
};

class Worker {
 public:
  Worker(const LoadOptions& o, const RequestSet& set, const std::vector<std::string>& heads,
         std::atomic<std::size_t>& next, int connections, std::uint64_t seed)
      : o_(o), set_(set), heads_(heads), next_(next), conns_(static_cast<std::size_t>(connections)), rng_(seed | 1) {}

  void run(std::size_t first_target) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      conns_[i].target = (first_target + i) % o_.targets.size();
      open(conns_[i]);
    }
    epoll_event events[256];
    while (active_ > 0) {
      const int n = epoll_wait(ep_, events, 256, 100);
      for (int k = 0; k < n; ++k) {
        Conn& c = conns_[events[k].data.u32];
        if (c.fd < 0) continue;
        if (events[k].events & (EPOLLERR | EPOLLHUP) && !(events[k].events & EPOLLIN)) {
          fail(c);
          continue;
        }
        if (c.connecting) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            fail(c);
            continue;
          }
          c.connecting = false;
          if (!c.busy) {
            start_next(c);
            continue;
          }
        }
        if (events[k].events & EPOLLOUT) write_some(c);
        if (c.fd >= 0 && (events[k].events & EPOLLIN)) read_some(c);
      }
      check_timeouts();
    }
    close(ep_);
  }

  LoadResult result;

 private:
  void open(Conn& c) {
    const Target& t = o_.targets[c.target];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(t.port));
    if (inet_pton(AF_INET, t.host == "localhost" ? "127.0.0.1" : t.host.c_str(), &addr.sin_addr) != 1) {
      addrinfo hints{}, *res = nullptr;
      hints.ai_family = AF_INET;
      if (getaddrinfo(t.host.c_str(), nullptr, &hints, &res) == 0 && res) {
        addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
        freeaddrinfo(res);
      }
    }
    c.connecting = true;
    c.in.clear();
    const int rc = connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (rc != 0 && errno != EINPROGRESS) {
      ::close(c.fd);
      c.fd = -1;
      ++result.transport_errors;
      if (c.busy) c.busy = false;
      return;  // this connection is lost; the others go on
    }
    if (!counted_[&c - conns_.data()]) {
      counted_[&c - conns_.data()] = true;
      ++active_;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.u32 = static_cast<std::uint32_t>(&c - conns_.data());
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
  }

  void finish(Conn& c) {  // no more work for this connection
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    --active_;
  }

  void reconnect(Conn& c) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    ++result.reconnects;
    const std::size_t slot = static_cast<std::size_t>(&c - conns_.data());
    counted_[slot] = false;
    --active_;
    open(c);
  }

  void fail(Conn& c) {  // the request in flight (if any) has no answer: it is not acknowledged
    if (c.busy) {
      ++result.transport_errors;
      c.busy = false;
    }
    reconnect(c);
  }

  std::uint64_t rand() {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return rng_;
  }

  void start_next(Conn& c) {
    const bool repeat =
        o_.dup_every > 0 &&
        sends_ % static_cast<std::uint64_t>(o_.dup_every) == static_cast<std::uint64_t>(o_.dup_every - 1) &&
        !result.acked_indices.empty();
    if (repeat) {
      c.index = result.acked_indices[rand() % result.acked_indices.size()];
    } else {
      const std::size_t i = next_.fetch_add(1);
      if (i >= set_.requests.size()) return finish(c);
      c.index = static_cast<std::uint32_t>(i);
    }
    ++sends_;
    c.repeat = repeat;
    c.busy = true;
    c.written = 0;
    c.in.clear();
    c.start_ns = now_ns();
    write_some(c);
  }

  void write_some(Conn& c) {
    if (!c.busy || c.connecting) return;
    const std::string& head = heads_[c.target];
    const std::string& tail = set_.requests[c.index].tail;
    const std::size_t total = head.size() + tail.size();
    while (c.written < total) {
      iovec iov[2];
      int n = 0;
      if (c.written < head.size()) {
        iov[n++] = {const_cast<char*>(head.data() + c.written), head.size() - c.written};
        iov[n++] = {const_cast<char*>(tail.data()), tail.size()};
      } else {
        const std::size_t off = c.written - head.size();
        iov[n++] = {const_cast<char*>(tail.data() + off), tail.size() - off};
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<std::size_t>(n);
      const ssize_t w = sendmsg(c.fd, &msg, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return fail(c);
      }
      c.written += static_cast<std::size_t>(w);
    }
    epoll_event ev{};
    ev.events = c.written < total ? (EPOLLOUT | EPOLLIN) : EPOLLIN;
    ev.data.u32 = static_cast<std::uint32_t>(&c - conns_.data());
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void read_some(Conn& c) {
    char buf[16384];
    bool eof = false;
    while (true) {
      const ssize_t r = recv(c.fd, buf, sizeof buf, 0);
      if (r > 0) {
        c.in.append(buf, static_cast<std::size_t>(r));
        continue;
      }
      if (r == 0) {
        eof = true;
        break;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return fail(c);
    }
    bool close_after = false;
    if (!c.busy || !complete(c, close_after)) {
      if (eof) fail(c);  // closed with the answer incomplete (or while idle: simply reconnect)
      return;
    }
    if (eof || close_after) return reconnect(c);
    start_next(c);
  }

  // True once the whole answer is in; then records it.
  bool complete(Conn& c, bool& close_after) {
    const std::size_t end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    const std::string headers = lower(c.in.substr(0, end + 2));
    long length = 0;
    if (auto p = headers.find("\r\ncontent-length:"); p != std::string::npos)
      length = std::strtol(headers.c_str() + p + 17, nullptr, 10);
    if (c.in.size() < end + 4 + static_cast<std::size_t>(length)) return false;
    const double ms = static_cast<double>(now_ns() - c.start_ns) / 1e6;
    const int status = c.in.size() > 12 ? std::atoi(c.in.c_str() + 9) : -1;
    std::string body = c.in.substr(end + 4, static_cast<std::size_t>(length));
    if (headers.find("\r\ncontent-encoding: gzip") != std::string::npos) {
      body = gunzip(body);
      ++result.compressed;
    }
    close_after = headers.find("\r\nconnection: close") != std::string::npos;
    c.busy = false;
    latencies_.push_back(ms);
    ++result.statuses[status];
    const SignedRequest& req = set_.requests[c.index];
    if (c.repeat) {
      ++result.repeats;
      if (status == 200 && body.find("\"duplicate\":true") != std::string::npos)
        ++result.dup_answered;
      else
        wrong(status, body, "repeat of " + req.delivery_id);
    } else if (status == 202 && body.find(req.delivery_id) != std::string::npos) {
      ++result.acked;
      result.acked_indices.push_back(c.index);
    } else {
      wrong(status, body, "original " + req.delivery_id);
    }
    return true;
  }

  void wrong(int status, const std::string& body, const std::string& what) {
    if (result.wrong_answers++ == 0)
      result.first_wrong_answer = what + ": " + std::to_string(status) + " " + body.substr(0, 200);
  }

  void check_timeouts() {
    const std::int64_t now = now_ns();
    for (Conn& c : conns_)
      if (c.fd >= 0 && c.busy && now - c.start_ns > static_cast<std::int64_t>(o_.timeout_ms) * 1000000) fail(c);
  }

 public:
  std::vector<double> latencies_;

 private:
  const LoadOptions& o_;
  const RequestSet& set_;
  const std::vector<std::string>& heads_;
  std::atomic<std::size_t>& next_;
  std::vector<Conn> conns_;
  std::vector<bool> counted_ = std::vector<bool>(conns_.size(), false);
  int ep_ = -1;
  int active_ = 0;
  std::uint64_t sends_ = 0;
  std::uint64_t rng_;
};

}  // namespace

LoadResult run_load(const LoadOptions& o, const RequestSet& set) {
  if (o.targets.empty()) throw std::invalid_argument("no target");
  std::vector<std::string> heads;
  for (const Target& t : o.targets)
    heads.push_back("POST " + t.path + " HTTP/1.1\r\nHost: " + t.host + ":" + std::to_string(t.port) +
                    "\r\nUser-Agent: Autopilot\r\n" + (o.accept_gzip ? "Accept-Encoding: gzip, deflate\r\n" : "") +
                    "Accept: */*\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
                    "X-Plane-Event: issue\r\n");
  std::atomic<std::size_t> next{0};
  const int threads = std::max(1, std::min(o.threads, o.concurrency));
  std::vector<std::unique_ptr<Worker>> workers;
  std::size_t first_target = 0;
  for (int t = 0; t < threads; ++t) {
    const int conns = o.concurrency / threads + (t < o.concurrency % threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(o, set, heads, next, conns, 0x9e3779b97f4a7c15ULL * (t + 1)));
    workers.back()->latencies_.reserve(set.requests.size() / static_cast<std::size_t>(threads) * 12 / 10 + 16);
  }
  const std::int64_t start = now_ns();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t, first_target] { workers[static_cast<std::size_t>(t)]->run(first_target); });
    first_target += static_cast<std::size_t>(o.concurrency / threads);
  }
  for (auto& th : pool) th.join();
  LoadResult out;
  out.seconds = seconds_since(start);
  for (auto& w : workers) {
    LoadResult& r = w->result;
    out.acked += r.acked;
    out.dup_answered += r.dup_answered;
    out.repeats += r.repeats;
    out.wrong_answers += r.wrong_answers;
    out.transport_errors += r.transport_errors;
    out.reconnects += r.reconnects;
    out.compressed += r.compressed;
    for (auto [s, n] : r.statuses) out.statuses[s] += n;
    out.acked_indices.insert(out.acked_indices.end(), r.acked_indices.begin(), r.acked_indices.end());
    out.latencies_ms.insert(out.latencies_ms.end(), w->latencies_.begin(), w->latencies_.end());
    if (out.first_wrong_answer.empty()) out.first_wrong_answer = r.first_wrong_answer;
  }
  out.sends = out.latencies_ms.size() + out.transport_errors;
  std::sort(out.latencies_ms.begin(), out.latencies_ms.end());
  return out;
}

}  // namespace orch::bench
