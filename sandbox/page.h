// sandbox/page.h: the sandbox's own page (GET /): work items, pull requests, Telegram, the log and the
// "lose the next webhook" switch, drawn by a script from /api/state. Text from Plane is put in as text only.
#pragma once

#include <string>

namespace orch::sandbox {

// The whole HTML document; `orch_url` is linked as orch's /queue.
std::string sandbox_page(const std::string& orch_url);

}  // namespace orch::sandbox
