// webhooks/webhook_routes.cpp
//
// DESIGN: every check runs before anything is written, in the order of the cheapest and least trusting first:
// secret configured (503), size (413, from Content-Length before reading when it is there), content type (415),
// signature present and valid over the raw bytes (401; for Gitea's form content type over the decoded payload, as
// Gitea signs it), JSON syntax (400 with the byte offset), delivery id (400). Each refusal is counted by source and
// reason (webhooks/refusals.h), since it leaves nothing in the store.
// The body is read or skipped even when the headers already decided the answer, so that a keep-alive connection
// stays in step. Only then is the delivery stored, deduplicated by id, and for Plane also by body digest: Plane
// retries a timed-out delivery with a fresh id and the byte-identical body.
#include "webhooks/webhook_routes.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>

#include <nlohmann/json.hpp>

#include "webhooks/signature.h"
#include "engine/thread_name.h"

namespace orch {
namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxDeliveryIdLength = 200;

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Header values echoed back may be any bytes: never let them throw on the way out. The charset parameter is not
  // decoration: cpp-httplib gzips a bare "application/json" answer for every sender that accepts gzip (Plane does),
  // which for a body of a few dozen bytes costs more CPU than the rest of the request (bench/RESULTS.md).
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json; charset=utf-8");
}

void refuse(httplib::Response& res, int status, const std::string& message) {
  reply(res, status, {{"error", message}});
}

// The media type of a Content-Type value, lowercased, without parameters or surrounding space.
std::string media_type(const std::string& content_type) {
  std::string media = content_type.substr(0, content_type.find(';'));
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  media.erase(media.begin(), std::find_if(media.begin(), media.end(), not_space));
  media.erase(std::find_if(media.rbegin(), media.rend(), not_space).base(), media.end());
  std::transform(media.begin(), media.end(), media.begin(), [](unsigned char c) { return std::tolower(c); });
  return media;
}

constexpr std::string_view kFormMediaType = "application/x-www-form-urlencoded";

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding of one key or value: '+' is a space, %HH a byte. nullopt on a broken
// escape: a body that does not decode is malformed, not guessed at.
std::optional<std::string> form_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Gitea's form content type: the body is `payload=<urlencoded JSON>` (gitea.md §1.1), and the signature is over the
// decoded JSON, not over the body (§1.3). The one `payload` field's value, or an error saying what is wrong.
Result<std::string> form_payload(std::string_view body) {
  std::optional<std::string> payload;
  while (!body.empty()) {
    const std::size_t amp = body.find('&');
    std::string_view pair = body.substr(0, amp);
    body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    auto key = form_decode(pair.substr(0, eq));
    if (!key) return invalid("the form body has a broken %-escape");
    if (*key != "payload") continue;
    if (payload) return invalid("the form body has more than one payload field");
    payload = form_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    if (!payload) return invalid("the form body's payload has a broken %-escape");
  }
  if (!payload) return invalid("the form body has no payload field");
  return *payload;
}

std::optional<std::uint64_t> content_length(const httplib::Request& req) {
  if (!req.has_header("Content-Length")) return std::nullopt;
  const std::string v = req.get_header_value("Content-Length");
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

// A JSON syntax check that builds nothing, remembers where the first error is, and picks up the one field that names
// the delivery's project: `data.project` (Plane: the project id) or `repository.full_name` (Gitea).
class DeliveryScan final : public nlohmann::json_sax<json> {
 public:
  explicit DeliveryScan(Source source)
      : outer_(source == Source::kPlane ? "data" : "repository"),
        inner_(source == Source::kPlane ? "project" : "full_name") {}
  std::size_t error_byte = 0;
  std::string project_key;  // "" when absent

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t& v) override {
    if (at_field() && project_key.empty()) project_key = v;
    return value();
  }
  bool binary(binary_t&) override { return value(); }
  bool start_object(std::size_t) override {
    if (depth_ == 1) in_outer_ = key_ == outer_;  // entering the value of a top-level key
    ++depth_;
    return true;
  }
  bool key(string_t& k) override {
    key_ = k;
    return true;
  }
  bool end_object() override {
    --depth_;
    if (depth_ == 1) in_outer_ = false;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    error_byte = position;
    return false;
  }

 private:
  bool at_field() const { return depth_ == 2 && in_outer_ && key_ == inner_; }
  bool value() { return true; }

  const std::string outer_, inner_;
  int depth_ = 0;
  bool in_outer_ = false;
  std::string key_;
};

bool is_chunked(const httplib::Request& req) {
  std::string te = req.get_header_value("Transfer-Encoding");
  std::transform(te.begin(), te.end(), te.begin(), [](unsigned char c) { return std::tolower(c); });
  return te.find("chunked") != std::string::npos;
}

const char* secret_variable(Source s) {
  return s == Source::kPlane ? "ORCH_PLANE_WEBHOOK_SECRET" : "ORCH_GITEA_WEBHOOK_SECRET";
}

}  // namespace

WebhookRoutes::WebhookRoutes(InboxStore& inbox, const Clock& clock, spdlog::logger& log, WebhookSecrets secrets,
                             WebhookRouteOptions options)
    : inbox_(inbox), clock_(clock), log_(log), secrets_(std::move(secrets)), options_(options) {}

void WebhookRoutes::register_routes(httplib::Server& server) {
  server.set_payload_max_length(options_.max_body_bytes);
  server.Post("/webhooks/plane",
              [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                serve(Source::kPlane, req, res, reader);
              });
  server.Post("/webhooks/gitea",
              [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                serve(Source::kGitea, req, res, reader);
              });
  for (Source s : {Source::kPlane, Source::kGitea}) {
    const Secret& secret = s == Source::kPlane ? secrets_.plane : secrets_.gitea;
    if (!secret.empty()) continue;
    if (secrets_.allow_unsigned)
      log_.warn("webhooks: {} webhooks are accepted UNSIGNED: {} is not set and ORCH_ALLOW_UNSIGNED_WEBHOOKS=1",
                source_name(s), secret_variable(s));
    else
      log_.warn("webhooks: {} webhooks are refused (503) until {} is set", source_name(s), secret_variable(s));
  }
}

void WebhookRoutes::serve(Source source, const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& reader) {
  const bool plane = source == Source::kPlane;
  const char* name = source_name(source);
  const Secret& secret = plane ? secrets_.plane : secrets_.gitea;
  const bool check_signature = !secret.empty();
  const std::size_t max = options_.max_body_bytes;
  const auto length = content_length(req);

  // What the headers alone decide.
  int early_status = 0;
  Refusal early_reason{};
  std::string early_error;
  const std::string media = media_type(req.get_header_value("Content-Type"));
  const bool form = !plane && media == kFormMediaType;
  if (secret.empty() && !secrets_.allow_unsigned) {
    early_status = 503;
    early_reason = Refusal::kNotConfigured;
    early_error = std::string(name) + " webhooks are not accepted: " + secret_variable(source) +
                  " is not set (ORCH_ALLOW_UNSIGNED_WEBHOOKS=1 accepts them unsigned)";
  } else if (length && *length > max) {
    early_status = 413;
    early_reason = Refusal::kTooLarge;
    early_error = "body exceeds " + std::to_string(max) + " bytes";
  } else if (media != "application/json" && !form) {
    early_status = 415;
    early_reason = Refusal::kUnsupportedMediaType;
    early_error = plane ? "content type must be application/json"
                        : "content type must be application/json or application/x-www-form-urlencoded";
  } else if (check_signature && (plane ? req.get_header_value("X-Plane-Signature").empty()
                                       : req.get_header_value("X-Gitea-Signature").empty() &&
                                             req.get_header_value("X-Hub-Signature-256").empty())) {
    early_status = 401;
    early_reason = Refusal::kMissingSignature;
    early_error = plane ? "missing X-Plane-Signature" : "missing X-Gitea-Signature";
  }

  // Read the body (or skip it: past the payload limit the server discards it unread). A request with neither
  // Content-Length nor chunked encoding has no body (RFC 9112 §6.3).
  std::string body;
  bool too_big = false;
  bool read_ok = true;
  if (length || is_chunked(req)) {
    read_ok = reader([&](const char* data, std::size_t n) {
      if (early_status) return true;
      if (body.size() + n > max) {  // chunked bodies announce no length
        too_big = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
  }
  auto refused = [&](int status, Refusal reason, const std::string& why) {
    log_.info("webhooks: refused a {} delivery: {} ({})", name, why, status);
    count_refusal(source, reason, why);
    refuse(res, status, why);
  };
  if (early_status) return refused(early_status, early_reason, early_error);
  if (too_big) return refused(413, Refusal::kTooLarge, "body exceeds " + std::to_string(max) + " bytes");
  if (!read_ok) return refused(400, Refusal::kUnreadable, "the body could not be read");

  // A form body carries the JSON in its payload field; from here on (signature, syntax, the stored body) the
  // delivery is that JSON, exactly as if the hook had been set to the JSON content type.
  if (form) {
    auto payload = form_payload(body);
    if (!payload.ok()) return refused(400, Refusal::kMalformed, payload.status().message);
    body = std::move(payload).value();
  }

  if (check_signature) {
    const bool valid = plane ? verify_plane_signature(secret.reveal(), body, req.get_header_value("X-Plane-Signature"))
                             : verify_gitea_signature(secret.reveal(), body, req.get_header_value("X-Gitea-Signature"),
                                                      req.get_header_value("X-Hub-Signature-256"));
    if (!valid) return refused(401, Refusal::kBadSignature, "invalid signature");
  }

  DeliveryScan scan(source);
  if (!json::sax_parse(body, &scan, json::input_format_t::json, /*strict=*/true)) {
    log_.info("webhooks: refused a {} delivery: malformed JSON at byte {} (400)", name, scan.error_byte);
    count_refusal(source, Refusal::kMalformed, "malformed JSON at byte " + std::to_string(scan.error_byte));
    return reply(res, 400, {{"error", "malformed JSON"}, {"byte", scan.error_byte}});
  }

  const char* id_header = plane ? "X-Plane-Delivery" : "X-Gitea-Delivery";
  std::string delivery_id = req.get_header_value(id_header);
  if (delivery_id.empty() || delivery_id.size() > kMaxDeliveryIdLength)
    return refused(400, Refusal::kMissingHeader, std::string("missing or oversized ") + id_header + " header");
  std::string event = plane ? req.get_header_value("X-Plane-Event") : req.get_header_value("X-Gitea-Event-Type");
  if (!plane && event.empty()) event = req.get_header_value("X-Gitea-Event");  // senders before X-Gitea-Event-Type
  if (event.empty() || event.size() > kMaxDeliveryIdLength)
    return refused(400, Refusal::kMissingHeader,
                   plane ? "missing X-Plane-Event header" : "missing X-Gitea-Event-Type header");

  NewDelivery delivery;
  delivery.source = source;
  delivery.delivery_id = delivery_id;
  delivery.event = std::move(event);
  delivery.body_digest = sha256_hex(body);
  delivery.body = std::move(body);
  delivery.received_at = clock_.now();
  delivery.lane =
      options_.lane_of ? options_.lane_of(source, scan.project_key) : std::string(name) + ":" + scan.project_key;
  auto stored = store(std::move(delivery), /*dedup_on_digest=*/plane);
  if (!stored.ok()) {
    log_.warn("webhooks: a {} delivery was not stored (503, not acknowledged): {}", name, stored.status().to_string());
    count_refusal(source, Refusal::kStoreUnavailable, "the inbox is unavailable: " + stored.status().message);
    return refuse(res, 503, "the inbox is unavailable; the delivery was not acknowledged");
  }
  if (stored.value().duplicate) return reply(res, 200, {{"duplicate", true}});
  log_.debug("webhooks: stored {} delivery as #{}", name, stored.value().seq);
  reply(res, 202, {{"delivery", delivery_id}});
  if (on_stored_) on_stored_();
}

void WebhookRoutes::count_refusal(Source source, Refusal reason, const std::string& error) {
  refusals_.add(source, reason, clock_.now(), error);
  options_.telemetry->delivery_refused(source, refusal_name(reason));
}

Result<InboxInsert> WebhookRoutes::store(NewDelivery delivery, bool dedup_on_digest) {
  if (!options_.group_commit) return inbox_.insert_delivery(delivery, dedup_on_digest);
  Pending pending{std::move(delivery), dedup_on_digest, std::chrono::steady_clock::now(), {}};
  auto done = pending.done.get_future();
  {
    std::lock_guard lock(mu_);
    if (!accepting_) return unavailable("the inbox committer is not running");
    queue_.push_back(&pending);
  }
  cv_.notify_one();
  return done.get();  // answered only after the transaction that holds it committed (or failed)
}

void WebhookRoutes::start() {
  if (!options_.group_commit || committer_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    accepting_ = true;
  }
  committer_ = std::jthread([this](std::stop_token stop) { commit_loop(stop); });
}

void WebhookRoutes::stop() {
  {
    std::lock_guard lock(mu_);
    accepting_ = false;
  }
  committer_.request_stop();  // wakes the wait; what is queued is still committed before the loop ends
  if (committer_.joinable()) committer_.join();
}

// DESIGN: group commit. Requests that arrive while a transaction is being written queue up; the next transaction
// takes all of them (up to max_batch). An idle server commits a lone delivery at once: there is no timer to wait
// for, so group commit costs no latency and turns concurrency into fewer fsyncs.
void WebhookRoutes::commit_loop(std::stop_token stop) {
  name_this_thread("inbox-commit");
  while (true) {
    std::vector<Pending*> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, stop, [this] { return !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and nothing left to commit
      const std::size_t n = std::min(queue_.size(), options_.max_batch);
      batch.assign(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    std::vector<NewDelivery> deliveries;
    std::vector<bool> dedup;
    deliveries.reserve(batch.size());
    for (Pending* p : batch) {
      deliveries.push_back(std::move(p->delivery));
      dedup.push_back(p->dedup_on_digest);
    }
    const auto began = std::chrono::steady_clock::now();
    auto written = inbox_.insert_deliveries(deliveries, dedup);
    options_.telemetry->inbox_commit(batch.size(),
                                     std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count(),
                                     std::chrono::duration<double>(began - batch.front()->queued_at).count());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!written.ok())
        batch[i]->done.set_value(written.status());
      else if (i < written.value().size())
        batch[i]->done.set_value(written.value()[i]);
      else
        batch[i]->done.set_value(internal("group commit returned fewer results than deliveries"));
    }
  }
}

}  // namespace orch
