// tests/support/new_task.h: the task the store tests create for a work item id ("wi-<id>", "SHOP-<id>", branch
// "orch/shop-<id>"), one definition for the SQLite, PostgreSQL and contract suites.
#pragma once

#include <string>

#include "engine/model.h"

namespace orch::testing {

inline NewTask new_task(const std::string& id) {
  NewTask t;
  t.project = "shop";
  t.work_item_id = "wi-" + id;
  t.work_item_key = "SHOP-" + id;
  t.title = "title " + id;
  t.description = "description " + id;
  t.branch = "orch/shop-" + id;
  return t;
}

}  // namespace orch::testing
