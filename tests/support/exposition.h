// tests/support/exposition.h: a small checker of the Prometheus text exposition format (0.0.4), shared by the /metrics
// tests in-process and against the real binary. Every line is blank, a comment (# HELP / # TYPE name kind), or
// `name{label="value",...} value`; every sample belongs to a family with a # TYPE.
#pragma once

#include <cstring>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace orch::testing {

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter|gauge|histogram|summary|untyped
  std::map<std::string, double> samples;     // "name{labels}" -> value
  std::vector<std::string> errors;
};
inline Exposition parse_exposition(const std::string& text) {
  static const std::regex type_re(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex help_re(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*)");
  static const std::string name = R"([a-zA-Z_:][a-zA-Z0-9_:]*)";
  static const std::string label = R"([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")";
  static const std::string value = R"([-+]?([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|Inf|NaN))";
  // Groups: 1 name, 2 the {labels} block, 7 the value.
  static const std::regex sample_re("(" + name + R"()(\{()" + label + "(," + label + R"()*,?)?\})? ()" + value +
                                    ")( [0-9]+)?");
  Exposition e;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    if (line.empty()) continue;
    if (std::regex_match(line, m, type_re)) {
      e.types[m[1]] = m[2];
    } else if (std::regex_match(line, m, help_re)) {
    } else if (line[0] == '#') {
      e.errors.push_back("line " + std::to_string(n) + ": unknown comment: " + line);
    } else if (std::regex_match(line, m, sample_re)) {
      std::string name = m[1];
      std::string family = name;
      for (const char* suffix : {"_bucket", "_sum", "_count"})
        if (!e.types.count(family) && family.size() > std::strlen(suffix) &&
            family.compare(family.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
          family = family.substr(0, family.size() - std::strlen(suffix));
      if (!e.types.count(family)) e.errors.push_back("line " + std::to_string(n) + ": no # TYPE for " + name);
      std::string value = m[7];
      e.samples[name + std::string(m[2])] = value == "+Inf" || value == "Inf" ? 1e308 : std::stod(value);
    } else {
      e.errors.push_back("line " + std::to_string(n) + ": not a sample: " + line);
    }
  }
  return e;
}

// The sum of every sample of `name` whose labels include all of `labels` (each `key="value"`).
inline double sum_samples(const Exposition& e, const std::string& name, const std::vector<std::string>& labels = {}) {
  double total = 0;
  for (const auto& [key, value] : e.samples) {
    if (key.compare(0, name.size(), name) != 0) continue;
    if (key.size() > name.size() && key[name.size()] != '{') continue;
    bool all = true;
    for (const std::string& l : labels) all = all && key.find(l) != std::string::npos;
    if (all) total += value;
  }
  return total;
}

}  // namespace orch::testing
