// app/queue_page.h: GET /queue (the operator's page) and GET /queue.json (the document of docs/contracts.md
// "/queue.json", plus a `log_tail` on each failed job), both behind the admin token. The page is one self-contained
// HTML document (inline CSS and JS, no external asset) that renders the document with DOM text nodes only, so no stored
// string can become markup, and re-fetches /queue.json every few seconds instead of reloading. Handlers run on any
// server thread; the Store is thread-safe.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

#include "app/queue_document.h"
#include "engine/clock.h"
#include "engine/config.h"
#include "engine/layout.h"
#include "engine/secret.h"
#include "engine/store.h"
#include "webhooks/refusals.h"

namespace orch {

struct QueueLinks {  // where the page's links point: the Plane work item and the Gitea branch / PR
  std::string plane_base_url;
  std::string gitea_base_url;
};

class QueuePage {
 public:
  // With `refusals`, the document carries `refused_deliveries`: what the webhook routes refused since start.
  QueuePage(Store& store, const Clock& clock, const Config& config, const DataLayout& layout, QueueDefaults defaults,
            WaitingRules rules, QueueLinks links, const Leadership* leadership = nullptr,
            const RefusalCounts* refusals = nullptr);

  void register_routes(httplib::Server& server, const Secret& admin_token);

  // The /queue.json document with log tails; kUnavailable etc. from the store.
  Result<nlohmann::json> document();
  // The whole HTML page, with the current document embedded for the first paint.
  Result<std::string> html();

 private:
  nlohmann::json page_config() const;

  Store& store_;
  const Clock& clock_;
  const Config& config_;
  const DataLayout& layout_;
  const QueueDefaults defaults_;
  const WaitingRules rules_;
  const QueueLinks links_;
  const Leadership* leadership_;   // null: say nothing of leadership
  const RefusalCounts* refusals_;  // null: no refused_deliveries field
};

// The last `max_bytes` of a file ("" when it does not exist), starting at a line boundary when it can.
std::string tail_of_file(const std::string& path, std::size_t max_bytes);

// JSON safe to embed inside an HTML <script> element: '<', '>' and '&' become \u escapes.
std::string json_for_script(const nlohmann::json& value);

}  // namespace orch
