#include "integrations/plane_html.h"

#include <doctest/doctest.h>

using namespace orch;

TEST_CASE("comment html: paragraphs on blank lines, a <br /> per line break") {
  CHECK(text_to_comment_html("Analysis done.") == "<p>Analysis done.</p>");
  CHECK(text_to_comment_html("one\ntwo\n\n\nthree\r\n") == "<p>one<br />two</p><p>three</p>");
  CHECK(text_to_comment_html("") == "<p></p>");
  CHECK(text_to_comment_html(" \n\t\n") == "<p></p>");
}

TEST_CASE("comment html: hostile text arrives as text — no element, attribute or entity of its own survives") {
  const std::string html = text_to_comment_html(
      "<script>alert(1)</script>\n<img src=x onerror=\"alert('x')\">\n&lt; already &amp; escaped\n"
      "<a href=\"javascript:alert(1)\">click</a> <p>raw</p> <!-- hidden -->");
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("<a ") == std::string::npos);
  CHECK(html.find("<!--") == std::string::npos);
  CHECK(html.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("onerror=&quot;alert(&#39;x&#39;)&quot;") != std::string::npos);
  CHECK(html.find("&amp;lt; already &amp;amp; escaped") != std::string::npos);
  // The only tags are the renderer's own.
  for (std::size_t p = html.find('<'); p != std::string::npos; p = html.find('<', p + 1)) {
    const std::string_view rest = std::string_view(html).substr(p);
    CHECK((rest.starts_with("<p>") || rest.starts_with("</p>") || rest.starts_with("<br />")));
  }
}

TEST_CASE(
    "comment html: bare http(s) URLs become links, escaped, trailing punctuation outside, other schemes are not") {
  CHECK(
      text_to_comment_html("PR: https://gitea.example/acme/shop/pulls/12.") ==
      "<p>PR: <a href=\"https://gitea.example/acme/shop/pulls/12\">https://gitea.example/acme/shop/pulls/12</a>.</p>");
  CHECK(text_to_comment_html("see http://ci/x?a=1&b=2") ==
        "<p>see <a href=\"http://ci/x?a=1&amp;b=2\">http://ci/x?a=1&amp;b=2</a></p>");
  // A quote or an angle bracket ends the URL: it cannot break out of the attribute.
  CHECK(text_to_comment_html("http://x/\"onmouseover=\"alert(1)") ==
        "<p><a href=\"http://x/\">http://x/</a>&quot;onmouseover=&quot;alert(1)</p>");
  CHECK(text_to_comment_html("javascript:alert(1) data:text/html,x") == "<p>javascript:alert(1) data:text/html,x</p>");
  CHECK(text_to_comment_html("xhttp://a") == "<p>xhttp://a</p>");  // not at a word start
  CHECK(text_to_comment_html("https:// alone") == "<p>https:// alone</p>");
}

TEST_CASE("comment html: ``` fences make a verbatim, escaped preformatted block") {
  CHECK(text_to_comment_html("Log:\n```\nerror: <x> & y\n  indented\n```\nafter") ==
        "<p>Log:</p><pre><code>error: &lt;x&gt; &amp; y\n  indented</code></pre><p>after</p>");
  CHECK(text_to_comment_html("```\nunclosed <b>") == "<pre><code>unclosed &lt;b&gt;</code></pre>");
}

TEST_CASE("comment html: invalid UTF-8 becomes U+FFFD, control characters are dropped, valid UTF-8 is kept") {
  CHECK(text_to_comment_html("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x9A\x80") ==
        "<p>caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x9A\x80</p>");
  CHECK(text_to_comment_html("a\xFF"
                             "b\xC0\xAF"
                             "c") ==
        "<p>a\xEF\xBF\xBD"
        "b\xEF\xBF\xBD\xEF\xBF\xBD"
        "c</p>");
  CHECK(text_to_comment_html(std::string("a\0b\x1b[31mc\x7f", 11)) == "<p>ab[31mc</p>");
  CHECK(text_to_comment_html("\xED\xA0\x80") == "<p>\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD</p>");  // a surrogate
}
