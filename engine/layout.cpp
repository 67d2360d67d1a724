#include "engine/layout.h"

namespace orch {

std::string sanitize_component(std::string_view raw) {
  std::string out;
  bool dash = false;
  for (char c : raw) {
    unsigned char u = static_cast<unsigned char>(c);
    char lower = (u >= 'A' && u <= 'Z') ? static_cast<char>(u - 'A' + 'a') : c;
    bool ok = (lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9');
    if (ok) {
      if (dash && !out.empty()) out += '-';
      out += lower;
      dash = false;
    } else {
      dash = true;
    }
    if (out.size() >= 64) break;
  }
  if (out.empty()) out = "item";
  return out;
}

std::string branch_for(std::string_view work_item_key, std::string_view work_item_id) {
  return "orch/" + sanitize_component(work_item_key.empty() ? work_item_id : work_item_key);
}

}  // namespace orch
