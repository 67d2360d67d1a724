#include "sandbox/page.h"

namespace orch::sandbox {

namespace {

// Every string from the API goes through textContent (or DOMParser's inert document for a comment's HTML, of which
// only the text is shown): a work item's title is attacker-controlled in a real Plane, and is here too.
const char* kPage = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orch sandbox</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:72em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{padding:.3em .5em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
button{margin:.1em;padding:.2em .6em;cursor:pointer}.muted{color:#777}.lost{color:#b00}.ok{color:#070}
#switch.on{background:#fdd;border-color:#b00}.comment{border-left:3px solid #ccd;padding-left:.5em;margin:.3em 0;white-space:pre-wrap}
</style></head><body>
<h1>orch sandbox</h1>
<p>A local Plane, Gitea and Telegram for orch. Move a work item to <b>In Progress</b>, then follow it on
<a id="queue" href="#">orch's /queue</a>. <span id="hooks" class="muted"></span></p>
<p><label>New work item: <input id="title" size="40" placeholder="title"></label> <button id="create">create</button>
<button id="switch">lose the next webhook: off</button></p>
<h2>Plane: work items</h2>
<table><thead><tr><th>key</th><th>title</th><th>state</th><th>PR</th><th></th></tr></thead><tbody id="items"></tbody></table>
<h2>Gitea: acme/shop pull requests</h2>
<table><thead><tr><th>#</th><th>branch</th><th>head</th><th>state</th><th>CI</th><th>reviews</th><th></th></tr></thead><tbody id="pulls"></tbody></table>
<h2>Plane: comments</h2><div id="comments"></div>
<h2>Telegram</h2><div id="telegram"></div>
<h2>Sandbox log</h2><div id="log"></div>
<script>
"use strict";
const ORCH = __ORCH_URL__;
document.getElementById("queue").href = ORCH + "/queue";
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; }
function button(label, action) { const b = el("button", label); b.addEventListener("click", action); return b; }
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})});
  const j = await r.json().catch(() => ({}));
  if (!r.ok) alert(j.error || ("HTTP " + r.status));
  refresh();
}
const items = document.getElementById("items"), pulls = document.getElementById("pulls");
let lose = false;
document.getElementById("create").addEventListener("click", () => {
  const t = document.getElementById("title"); if (t.value.trim()) post("/api/items", {title: t.value}); t.value = "";
});
document.getElementById("switch").addEventListener("click", () => post("/api/lose-next-webhook", {on: !lose}));
function plain(html) { return new DOMParser().parseFromString(String(html), "text/html").body.textContent; }
async function refresh() {
  let s; try { s = await (await fetch("/api/state")).json(); } catch (e) { return; }
  lose = s.lose_next_webhook;
  const sw = document.getElementById("switch");
  sw.textContent = "lose the next webhook: " + (lose ? "ON" : "off"); sw.className = lose ? "on" : "";
  document.getElementById("hooks").textContent = "webhooks sent " + s.webhooks.sent + ", lost " + s.webhooks.lost + ", pending " + s.webhooks.pending;
  items.replaceChildren();
  for (const it of s.items) {
    const tr = el("tr"); tr.dataset.key = it.key;
    tr.append(el("td", it.key), el("td", it.title), el("td", it.state, "state"), el("td", it.pr === null ? "" : "#" + it.pr));
    const td = el("td");
    for (const st of ["In Progress", "Approved", "Rejected"])
      td.append(button(st, () => post("/api/items/" + encodeURIComponent(it.key) + "/move", {state: st})));
    tr.append(td); items.append(tr);
  }
  pulls.replaceChildren();
  for (const p of s.pulls) {
    const tr = el("tr"); tr.dataset.key = p.key;
    const ci = Object.entries(p.statuses).map(([c, v]) => c + ": " + v).join(", ");
    const rv = p.reviews.map(r => r.user + " " + r.state + (r.stale ? " (stale)" : "")).join(", ");
    tr.append(el("td", "#" + p.number), el("td", p.head), el("td", String(p.head_sha).slice(0, 12)),
              el("td", p.merged ? "merged" : p.state, "pr-state"), el("td", ci), el("td", rv));
    const td = el("td"), k = encodeURIComponent(p.key);
    if (p.key && p.state === "open") {
      td.append(button("CI green", () => post("/api/items/" + k + "/ci", {state: "success"})),
                button("CI red", () => post("/api/items/" + k + "/ci", {state: "failure"})),
                button("approve", () => post("/api/items/" + k + "/approve", {})),
                button("request changes", () => post("/api/items/" + k + "/request-changes", {body: "Please change this."})),
                button("merge", () => post("/api/items/" + k + "/merge", {})));
    }
    tr.append(td); pulls.append(tr);
  }
  const comments = document.getElementById("comments"); comments.replaceChildren();
  for (const it of s.items) {
    if (!it.comments) continue;
    const r = await fetch("/api/items/" + encodeURIComponent(it.key) + "/comments"); if (!r.ok) continue;
    comments.append(el("h3", it.key + ": " + it.title));
    for (const c of await r.json()) comments.append(el("div", plain(c.comment_html), "comment"));
  }
  const tg = document.getElementById("telegram"); tg.replaceChildren();
  for (const m of s.telegram) tg.append(el("div", m.text, "comment"));
  if (!s.telegram.length) tg.append(el("p", "no messages yet", "muted"));
  const log = document.getElementById("log"); log.replaceChildren();
  for (const line of s.log.slice().reverse()) log.append(el("div", line, line.startsWith("lost") ? "lost" : ""));
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
)HTML";

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      out += '\\', out += static_cast<char>(c);
    else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
      static const char* hex = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else
      out += static_cast<char>(c);
  }
  return out + "\"";
}

}  // namespace

std::string sandbox_page(const std::string& orch_url) {
  std::string page = kPage;
  const std::string marker = "__ORCH_URL__";
  page.replace(page.find(marker), marker.size(), json_string(orch_url));
  return page;
}

}  // namespace orch::sandbox
