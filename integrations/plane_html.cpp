#include "integrations/plane_html.h"

#include "integrations/utf8.h"

#include <cctype>
#include <vector>

namespace orch {
namespace {

// Valid UTF-8 is kept; each byte of an invalid sequence becomes U+FFFD. C0 controls other than \t and \n are
// dropped (\r too: "\r\n" is a newline), so nothing invisible reaches the page.
std::string clean_utf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  // Bytes below 0x80 are never inside a multi-byte sequence, so dropping controls after the repair is safe.
  for (char ch : valid_utf8(in)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 || (c >= 0x20 && c != 0x7f) || c == '\t' || c == '\n') out += ch;
  }
  return out;
}

bool url_char(char c) {
  // RFC 3986's unreserved, reserved and '%'; a URL ends at whitespace, quotes and angle brackets.
  const auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  return c != '"' && c != '<' && c != '>' && c != '\'' && c != '`' && c != '{' && c != '}' && c != '|' && c != '\\' &&
         c != '^';
}

// One line of text: escaped, with bare http(s) URLs linked. Trailing punctuation stays outside the link.
void render_inline(std::string_view line, std::string& out) {
  std::size_t i = 0;
  while (i < line.size()) {
    const std::size_t http = line.find("http", i);
    std::size_t start = std::string_view::npos;
    for (std::size_t p = http; p != std::string_view::npos; p = line.find("http", p + 1)) {
      const bool scheme = line.compare(p, 7, "http://") == 0 || line.compare(p, 8, "https://") == 0;
      const bool word_start = p == 0 || !std::isalnum(static_cast<unsigned char>(line[p - 1]));
      if (scheme && word_start) {
        start = p;
        break;
      }
    }
    if (start == std::string_view::npos) {
      out += html_escape(line.substr(i));
      return;
    }
    out += html_escape(line.substr(i, start - i));
    std::size_t end = start;
    while (end < line.size() && url_char(line[end])) ++end;
    while (end > start && std::string_view(".,;:!?)]").find(line[end - 1]) != std::string_view::npos) --end;
    const std::string_view url = line.substr(start, end - start);
    const std::size_t scheme_len = url.starts_with("https://") ? 8 : 7;
    if (url.size() == scheme_len) {  // "http://" alone links nothing
      out += html_escape(url);
    } else {
      const std::string e = html_escape(url);
      out += "<a href=\"" + e + "\">" + e + "</a>";
    }
    i = end;
  }
}

bool blank(std::string_view line) { return line.find_first_not_of(" \t") == std::string_view::npos; }

bool fence(std::string_view line) {
  const std::size_t p = line.find_first_not_of(" \t");
  return p != std::string_view::npos && line.compare(p, 3, "```") == 0;
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string text_to_comment_html(std::string_view text) {
  const std::string clean = clean_utf8(text);
  std::vector<std::string_view> lines;
  std::string_view rest = clean;
  while (true) {
    const std::size_t nl = rest.find('\n');
    lines.push_back(rest.substr(0, nl));
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  std::string out;
  std::vector<std::string_view> paragraph;
  auto flush = [&] {
    if (paragraph.empty()) return;
    out += "<p>";
    for (std::size_t k = 0; k < paragraph.size(); ++k) {
      if (k) out += "<br />";
      render_inline(paragraph[k], out);
    }
    out += "</p>";
    paragraph.clear();
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (fence(lines[i])) {
      flush();
      out += "<pre><code>";
      std::size_t j = i + 1;
      for (; j < lines.size() && !fence(lines[j]); ++j) {
        if (j > i + 1) out += "\n";
        out += html_escape(lines[j]);
      }
      out += "</code></pre>";
      i = j;  // the closing fence (or the end, for an unclosed block)
      continue;
    }
    if (blank(lines[i])) {
      flush();
    } else {
      paragraph.push_back(lines[i]);
    }
  }
  flush();
  return out.empty() ? "<p></p>" : out;
}

}  // namespace orch
