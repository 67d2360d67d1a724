#include "integrations/agent_usage.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/budget.h"
#include "integrations/utf8.h"

namespace orch {
namespace {

using json = nlohmann::json;

Result<std::int64_t> tokens(const json& doc, const char* field) {
  if (!doc.contains(field) || doc[field].is_null()) return std::int64_t{0};
  const json& v = doc[field];
  if (v.is_number_unsigned() && v.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX))
    return static_cast<std::int64_t>(v.get<std::uint64_t>());
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return v.get<std::int64_t>();
  return invalid(std::string("usage.json: '") + field + "' must be a whole number of tokens, at least 0");
}

}  // namespace

Result<std::optional<AgentUsage>> read_agent_usage(const std::filesystem::path& output_dir) {
  const std::filesystem::path file = output_dir / "usage.json";
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return std::optional<AgentUsage>{};
  if (!S_ISREG(st.st_mode)) return invalid("usage.json is not a regular file");
  if (static_cast<std::size_t>(st.st_size) > kMaxUsageBytes)
    return invalid("usage.json is larger than " + std::to_string(kMaxUsageBytes) + " bytes");
  std::ifstream in(file, std::ios::binary);
  std::string text;
  text.resize(kMaxUsageBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxUsageBytes)
    return invalid("usage.json is larger than " + std::to_string(kMaxUsageBytes) + " bytes");
  const json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return invalid("usage.json is not a JSON object");
  AgentUsage usage;
  auto in_tokens = tokens(doc, "tokens_in");
  if (!in_tokens.ok()) return in_tokens.status();
  auto out_tokens = tokens(doc, "tokens_out");
  if (!out_tokens.ok()) return out_tokens.status();
  usage.tokens_in = in_tokens.value();
  usage.tokens_out = out_tokens.value();
  if (doc.contains("model") && !doc["model"].is_null()) {
    if (!doc["model"].is_string()) return invalid("usage.json: 'model' must be a string");
    usage.model = std::string(utf8_prefix(valid_utf8(doc["model"].get<std::string>()), kMaxModelBytes));
  }
  if (doc.contains("cost_usd") && !doc["cost_usd"].is_null()) {
    const json& cost = doc["cost_usd"];
    std::optional<MicroUsd> micros = cost.is_number() ? usd_to_micros(cost.get<double>()) : std::nullopt;
    if (!micros) return invalid("usage.json: 'cost_usd' must be a number of dollars, at least 0");
    usage.cost = *micros;
  }
  return std::optional<AgentUsage>(std::move(usage));
}

}  // namespace orch
