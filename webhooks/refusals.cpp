#include "webhooks/refusals.h"

namespace orch {

const char* refusal_name(Refusal r) {
  switch (r) {
    case Refusal::kNotConfigured: return "not_configured";
    case Refusal::kTooLarge: return "too_large";
    case Refusal::kUnsupportedMediaType: return "unsupported_media_type";
    case Refusal::kMissingSignature: return "missing_signature";
    case Refusal::kBadSignature: return "bad_signature";
    case Refusal::kMalformed: return "malformed";
    case Refusal::kMissingHeader: return "missing_header";
    case Refusal::kUnreadable: return "unreadable";
    case Refusal::kStoreUnavailable: return "store_unavailable";
  }
  return "unknown";
}

void RefusalCounts::add(Source source, Refusal reason, TimePoint at, const std::string& error) {
  std::lock_guard lock(mu_);
  Row& row = rows_[source == Source::kPlane ? 0 : 1][static_cast<std::size_t>(reason)];
  ++row.count;
  row.last_at = at;
  row.last_error = error;
}

std::vector<RefusalCounts::Row> RefusalCounts::rows() const {
  std::vector<Row> out;
  std::lock_guard lock(mu_);
  for (std::size_t s = 0; s < 2; ++s)
    for (std::size_t r = 0; r < kRefusalKinds; ++r) {
      if (rows_[s][r].count == 0) continue;
      Row row = rows_[s][r];
      row.source = s == 0 ? Source::kPlane : Source::kGitea;
      row.reason = static_cast<Refusal>(r);
      out.push_back(std::move(row));
    }
  return out;
}

}  // namespace orch
