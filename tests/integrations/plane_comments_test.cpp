#include "integrations/plane_html.h"

#include <doctest/doctest.h>

#include "integrations/plane_client.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/manual_clock.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

const std::string kProjectId = "5a1f0c1e-7b7e-4d55-9a0e-3c2b1d4e5f60";
const std::string kApiKey = "plane_api_fedcba9876543210fedcba9876543210";

// The real PlaneClient over real HTTP against the fake Plane, whose comment endpoint keeps Plane's unique
// (external_source, external_id) pair.
struct CommentFixture {
  FakePlane plane;
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<PlaneClient> client;
  ProjectSpec project;
  std::string item;

  CommentFixture() {
    plane.add_project("acme", kProjectId, "SHOP");
    plane.set_api_key(kApiKey);
    item = plane.add_work_item(kProjectId, {.state_id = plane.state_id(kProjectId, "In Progress")});
    HttpClientOptions o;
    o.name = "plane";
    o.base_url = plane.base_url();
    o.redact = {Secret(kApiKey)};
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
    client = std::make_unique<PlaneClient>(*http, Secret(kApiKey));
    project.name = "shop";
    project.plane_workspace = "acme";
    project.plane_project_id = kProjectId;
  }
};

}  // namespace

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

TEST_CASE("comment html: bare http(s) URLs become links, escaped, trailing punctuation outside, other schemes are not") {
  CHECK(text_to_comment_html("PR: https://gitea.example/acme/shop/pulls/12.") ==
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
  CHECK(text_to_comment_html("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x9A\x80") == "<p>caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x9A\x80</p>");
  CHECK(text_to_comment_html("a\xFF" "b\xC0\xAF" "c") == "<p>a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c</p>");
  CHECK(text_to_comment_html(std::string("a\0b\x1b[31mc\x7f", 11)) == "<p>ab[31mc</p>");
  CHECK(text_to_comment_html("\xED\xA0\x80") == "<p>\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD</p>");  // a surrogate
}

TEST_CASE("plane comments: a marked comment carries external_source orch and its id, and a second one is a delivered 409") {
  CommentFixture f;
  const std::string html = text_to_comment_html("Analysis finished.\n\nMove the item to Approved or Rejected.");
  REQUIRE(f.client->add_comment(f.project, f.item, html, "7:31:analysis_done").ok());
  // The same event again — a retry after an answer lost to a timeout, or another replica — is refused by Plane
  // with 409 and counts as delivered: the item still has one comment.
  REQUIRE(f.client->add_comment(f.project, f.item, html, "7:31:analysis_done").ok());
  auto comments = f.plane.comments(f.item);
  REQUIRE(comments.size() == 1);
  CHECK(comments[0]["external_source"] == "orch");
  CHECK(comments[0]["external_id"] == "7:31:analysis_done");
  CHECK(comments[0]["comment_html"] == "<p>Analysis finished.</p><p>Move the item to Approved or Rejected.</p>");
  auto posts = f.plane.requests_to("/comments/");
  REQUIRE(posts.size() == 2);
  CHECK(nlohmann::json::parse(posts[1].body)["external_id"] == "7:31:analysis_done");
  // A different event is a different comment.
  REQUIRE(f.client->add_comment(f.project, f.item, "<p>PR opened</p>", "7:32:pr_opened").ok());
  CHECK(f.plane.comments(f.item).size() == 2);
}

TEST_CASE("plane comments: a marked comment is retried after a 5xx (Plane dedupes it), an unmarked one is not") {
  CommentFixture f;
  f.plane.fail_next(1, 500);
  REQUIRE(f.client->add_comment(f.project, f.item, "<p>blocked</p>", "7:40:blocked").ok());
  CHECK(f.plane.comments(f.item).size() == 1);
  CHECK(f.plane.requests_to("/comments/").size() == 2);
  CHECK(f.sleeper.waits().size() == 1);

  f.plane.fail_next(1, 500);
  CHECK(f.client->add_comment(f.project, f.item, "<p>unmarked</p>").code == Code::kUnavailable);
  CHECK(f.plane.requests_to("/comments/").size() == 3);
  CHECK(f.plane.comments(f.item).size() == 1);
}

TEST_CASE("plane comments: a 409 for an unmarked comment, or any other refusal, is not taken for delivered") {
  CommentFixture f;
  f.plane.fail_next(1, 409);
  CHECK(f.client->add_comment(f.project, f.item, "<p>x</p>").code == Code::kConflict);
  CHECK(f.client->add_comment(f.project, "no-such-item", "<p>x</p>", "7:1:done").code == Code::kNotFound);
}
