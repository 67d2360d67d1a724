// integrations/plane_html.h: the HTML of a comment orch writes into Plane, made from plain text.
// The text is attacker-influenced (agent summaries, work-item titles, CI descriptions, git's stderr), so nothing of
// it is ever markup: every character that HTML gives a meaning to is escaped, and the only elements are the ones
// this renderer emits itself — paragraphs, line breaks, preformatted blocks (``` fences, the way summaries quote
// logs) and links for bare http(s) URLs. No raw HTML passes, whatever the input.
#pragma once

#include <string>
#include <string_view>

namespace orch {

// Blank lines separate paragraphs (<p>); a single newline is a <br />; lines between two ``` fence lines are a
// <pre><code> block, kept verbatim (escaped); an http:// or https:// URL becomes <a href="…">…</a> with the URL
// escaped in both places. Invalid UTF-8 is replaced by U+FFFD, NUL and other C0 controls but tab and newline are
// dropped. An empty or all-blank text gives "<p></p>" (Plane refuses an empty comment_html).
std::string text_to_comment_html(std::string_view text);

// The HTML escape used above: & < > " ' become entities. Exposed for the few callers that build one element.
std::string html_escape(std::string_view text);

}  // namespace orch
