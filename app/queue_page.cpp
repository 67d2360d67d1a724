#include "app/queue_page.h"

#include <fstream>

#include "app/admin_actions.h"
#include "app/auth.h"

namespace orch {
namespace {

using nlohmann::json;

constexpr std::size_t kLogTailBytes = 4096;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The page. Every value from the document is put in the DOM with textContent or as a URL component through
// encodeURIComponent; innerHTML is never given data.
constexpr const char* kPageHead = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>orch queue</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1rem 2rem;color:#222;background:#fafafa}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ccc}
h3{font-size:1rem;margin:.8rem 0 .2rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}tr.blocked td{background:#ffe0e0}tr.blocked td.stage::after{content:" BLOCKED";color:#b00;font-weight:bold}
.bad{color:#b00;font-weight:bold}.good{color:#070;font-weight:bold}.muted{color:#777}
pre{margin:0;max-height:12rem;overflow:auto;background:#222;color:#eee;padding:4px;font-size:12px;white-space:pre-wrap}
button{font-size:12px}#status{font-size:12px;color:#555}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dt{font-weight:bold}dd{margin:0}
</style></head><body>
<h1>orch queue</h1><div id="status" data-source="embedded">loading…</div>
<section id="reconciler"><h2>Reconciler</h2><div class="body"></div></section>
<section id="tasks"><h2>Tasks</h2><div class="body"></div></section>
<section id="jobs"><h2>Jobs</h2><div class="body"></div></section>
<section id="spend"><h2>Spend</h2><div class="body"></div></section>
<section id="inbox"><h2>Inbox</h2><div class="body"></div></section>
<section id="ledger"><h2>Delivery ledger</h2><div class="body"></div></section>
<section id="notifications"><h2>Notifications</h2><div class="body"></div></section>
<section id="write-back"><h2>Write-back</h2><div class="body"></div></section>
<section id="transitions"><h2>Recent transitions</h2><div class="body"></div></section>
<script type="application/json" id="orch-config">)HTML";

constexpr const char* kPageMiddle = R"HTML(</script>
<script type="application/json" id="orch-data">)HTML";

constexpr const char* kPageScript = R"HTML(</script>
<script>
"use strict";
const CONFIG = JSON.parse(document.getElementById('orch-config').textContent);
const REFRESH_MS = 5000;
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'onclick') e.onclick = v;
    else if (k === 'onchange') e.onchange = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
  return e;
}
function link(text, url) { return url ? el('a', {href: url}, text) : document.createTextNode(text); }
// Absolute and without user:password@ (a page opened as http://user:token@host/queue has them in its own URL, and
// fetch refuses such URLs); the browser still sends the credentials it authenticated the page with.
function api(p) { return location.origin + p; }
function seg(s) { return encodeURIComponent(String(s)); }
function path(s) { return String(s).split('/').map(seg).join('/'); }
function planeUrl(t) {
  const p = CONFIG.projects[t.project];
  if (!CONFIG.plane_base || !p || !p.workspace || !p.project_id || !t.work_item_id) return null;
  return CONFIG.plane_base + '/' + seg(p.workspace) + '/projects/' + seg(p.project_id) + '/issues/' + seg(t.work_item_id);
}
function repoUrl(t) {
  const p = CONFIG.projects[t.project];
  return (CONFIG.gitea_base && p && p.repo) ? CONFIG.gitea_base + '/' + path(p.repo) : null;
}
function ago(from, to) {
  if (!from) return '';
  let s = Math.max(0, Math.round((Date.parse(to) - Date.parse(from)) / 1000));
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return d ? d + 'd ' + h + 'h' : h ? h + 'h ' + m + 'm' : m ? m + 'm ' + s + 's' : s + 's';
}
function table(headers, rows) {
  if (!rows.length) return el('p', {class: 'muted'}, 'none');
  return el('table', {}, el('thead', {}, el('tr', {}, ...headers.map(h => el('th', {}, h)))), el('tbody', {}, ...rows));
}
function setBody(id, ...nodes) {
  const body = document.querySelector('#' + id + ' .body');
  body.replaceChildren(...nodes);
}
async function post(url, label) {
  const status = document.getElementById('status');
  try {
    const r = await fetch(api(url), {method: 'POST', credentials: 'same-origin'});
    const body = await r.json().catch(() => ({}));
    status.textContent = label + ': ' + (r.ok ? (body.status || 'ok') : ('HTTP ' + r.status + ' ' + (body.error || '')));
    status.setAttribute('data-last-action', label + (r.ok ? ' ok' : ' failed'));
  } catch (e) {
    status.textContent = label + ' failed: ' + e;
  }
  refresh();
}
function replay(id) { return post('/admin/deliveries/' + seg(id) + '/replay', 'replay ' + id); }
function retry(taskId) { return post('/admin/tasks/' + seg(taskId) + '/retry', 'retry task ' + taskId); }
function cancelJob(jobId) {
  if (!window.confirm('Cancel job ' + jobId + '? Its agent is stopped and its task blocked.')) return;
  return post('/admin/jobs/' + seg(jobId) + '/cancel', 'cancel job ' + jobId);
}
function rerun(taskId) { return post('/admin/tasks/' + seg(taskId) + '/rerun', 're-run task ' + taskId); }
function resume(taskId) {
  const raise = window.prompt('Lift the budget hold of task ' + taskId + ', raising its budget by (US dollars):', '1');
  if (raise === null) return;
  return post('/admin/tasks/' + seg(taskId) + '/resume?raise_budget=' + encodeURIComponent(raise), 'resume task ' + taskId);
}
function usd(v) { return v ? v.toFixed(2) + ' USD' : ''; }
function retryWrite(id) { return post('/admin/outbox/' + seg(id) + '/retry', 'retry write ' + id); }
function flip(enable, plane) {
  return post('/admin/reconcile/' + (enable ? 'enable' : 'disable') + (plane ? '?side=plane' : ''),
              (enable ? 'enable' : 'disable') + (plane ? ' tracker side' : ' reconciler'));
}
function renderReconciler(r) {
  const onoff = v => el('span', {class: v ? 'good' : 'bad'}, v ? 'enabled' : 'DISABLED');
  const row = (k, v) => [el('dt', {}, k), el('dd', {}, v)];
  setBody('reconciler', el('dl', {},
    ...row('reconciler', onoff(r.enabled)), ...row('tracker side', onoff(r.plane_enabled)),
    ...(r.replica === undefined ? [] : row('leader', el('span', {class: 'leader'},
        r.leader ? r.leader + (r.leading ? ' (this replica)' : ' (this page: ' + r.replica + ')')
                 : el('span', {class: 'bad'}, 'none: no replica holds the lock')))),
    ...row('interval', r.interval_s + ' s'),
    ...row('last pass', r.last_pass_started_at ? r.last_pass_started_at + ' (' + r.last_pass_duration_s + ' s)' : 'never'),
    ...row('unblocked total', r.unblocked_total), ...row('last unblocked', r.last_unblocked || '—'),
    ...row('last error', r.last_error ? el('span', {class: 'bad'}, r.last_error) : '—')),
    el('p', {},
      el('button', {class: 'switch', onclick: () => flip(!r.enabled, false)}, r.enabled ? 'Disable reconciler' : 'Enable reconciler'), ' ',
      el('button', {class: 'switch', onclick: () => flip(!r.plane_enabled, true)}, r.plane_enabled ? 'Disable tracker side' : 'Enable tracker side')));
}
function renderTasks(doc) {
  const byStage = new Map(CONFIG.stages.map(s => [s, []]));
  for (const t of doc.tasks) { if (!byStage.has(t.stage)) byStage.set(t.stage, []); byStage.get(t.stage).push(t); }
  const parts = [];
  for (const [stage, tasks] of byStage) {
    if (!tasks.length) continue;
    parts.push(el('h3', {class: 'stage-heading'}, stage + ' (' + tasks.length + ')'));
    parts.push(table(['item', 'title', 'stage', 'in stage for', 'waiting', 'spend', 'branch', 'PR', 'blocked', ''], tasks.map(t => {
      const repo = repoUrl(t);
      return el('tr', {class: t.blocked ? 'task blocked' : 'task', 'data-task-id': t.id},
        el('td', {class: 'key'}, link(t.work_item_key || t.work_item_id, planeUrl(t))),
        el('td', {class: 'title'}, t.title),
        el('td', {class: 'stage'}, t.stage),
        el('td', {}, ago(t.entered_stage_at, doc.generated_at)),
        el('td', {class: 'waiting'}, t.waiting ? el('span', {class: 'reason'}, t.waiting.reason) : '', t.waiting ? ' ' + t.waiting.text : ''),
        el('td', {class: 'spend'}, usd(t.spend_usd)),
        el('td', {}, t.branch ? link(t.branch, repo ? repo + '/src/branch/' + path(t.branch) : null) : ''),
        el('td', {}, t.pr_number !== null ? link('#' + t.pr_number + ' ' + t.pr_state, repo ? repo + '/pulls/' + seg(t.pr_number) : null) : ''),
        el('td', {class: 'bad'}, t.blocked ? (t.blocked_reason || 'blocked') : ''),
        el('td', {}, t.blocked ? el('button', {class: 'retry', onclick: () => retry(t.id)}, 'Retry') : '',
          t.budget_hold ? el('button', {class: 'resume', onclick: () => resume(t.id)}, 'Resume') : '',
          (CONFIG.rerunnable || []).includes(t.stage) ? el('button', {class: 'rerun', onclick: () => rerun(t.id)}, 'Re-run') : ''));
    })));
  }
  setBody('tasks', ...(parts.length ? parts : [el('p', {class: 'muted'}, 'no tasks')]));
}
function renderJobs(doc) {
  const keys = new Map(doc.tasks.map(t => [t.id, t.work_item_key]));
  const active = doc.jobs.filter(j => j.status === 'queued' || j.status === 'running');
  const failed = doc.jobs.filter(j => j.status === 'failed');
  setBody('jobs',
    el('h3', {}, 'Queued and running (' + active.length + ')'),
    table(['job', 'item', 'stage', 'agent', 'status', 'attempt', 'step', 'step tries', 'step error', 'runtime / waiting', 'where', 'log tail', ''], active.map(j =>
      el('tr', {class: 'job ' + j.status},
        el('td', {}, j.id), el('td', {}, keys.get(j.task_id) || ('task ' + j.task_id)), el('td', {}, j.stage),
        el('td', {}, j.agent), el('td', {}, j.status), el('td', {}, j.attempt),
        el('td', {class: 'step'}, j.step || ''), el('td', {}, j.step ? j.step_attempts : ''),
        el('td', {class: 'bad'}, j.step_error || ''),
        el('td', {}, j.status === 'running' ? ago(j.started_at, doc.generated_at) : ago(j.created_at, doc.generated_at)),
        el('td', {class: 'worker'}, j.worker || ''),
        el('td', {}, j.log_tail ? el('pre', {class: 'log-tail'}, j.log_tail) : ''),
        el('td', {}, j.cancel_requested ? el('span', {class: 'bad'}, 'cancelling') :
          el('button', {class: 'cancel-job', onclick: () => cancelJob(j.id)}, 'Cancel'))))),
    el('h3', {}, 'Runners (' + (doc.runners || []).length + ')'),
    table(['runner', 'labels', 'state', 'last heartbeat', 'job'], (doc.runners || []).map(r =>
      el('tr', {class: 'runner ' + r.state},
        el('td', {}, r.name), el('td', {}, r.labels.join(', ')),
        el('td', {class: r.state === 'online' ? '' : 'bad'}, r.state + (r.revoked ? ' (revoked)' : '')),
        el('td', {}, r.last_heartbeat_at ? ago(r.last_heartbeat_at, doc.generated_at) : 'never'),
        el('td', {}, r.job_id === null ? '' : r.job_id)))),
    el('h3', {}, 'Last failures (' + failed.length + ')'),
    table(['job', 'item', 'stage', 'agent', 'attempt', 'step', 'step tries', 'finished', 'error', 'log tail'], failed.map(j =>
      el('tr', {class: 'job failed'},
        el('td', {}, j.id), el('td', {}, keys.get(j.task_id) || ('task ' + j.task_id)), el('td', {}, j.stage),
        el('td', {}, j.agent), el('td', {}, j.attempt),
        el('td', {class: 'step'}, j.step || ''), el('td', {}, j.step ? j.step_attempts : ''),
        el('td', {}, j.finished_at || ''),
        el('td', {class: 'bad'}, j.error || ''),
        el('td', {}, j.log_tail ? el('pre', {class: 'log-tail'}, j.log_tail) : el('span', {class: 'muted'}, 'no log'))))));
}
function renderInbox(doc) {
  const i = doc.inbox;
  setBody('inbox',
    el('p', {class: 'counts'}, 'received ' + i.received + ', pending ' + i.pending + ', handled ' + i.handled +
       ', ignored ' + i.ignored + ', failed ' + i.failed),
    el('h3', {}, 'Failed deliveries'),
    table(['source', 'delivery', 'event', 'received', 'error', ''], i.failed_deliveries.map(d =>
      el('tr', {class: 'delivery', 'data-delivery-id': d.delivery_id},
        el('td', {}, d.source), el('td', {class: 'delivery-id'}, d.delivery_id), el('td', {}, d.event),
        el('td', {}, d.received_at), el('td', {class: 'bad'}, d.error),
        el('td', {}, el('button', {class: 'replay', onclick: () => replay(d.delivery_id)}, 'Replay'))))),
    el('h3', {}, 'Refused deliveries (not stored; since this server started)'),
    table(['source', 'reason', 'count', 'last', 'last error'], (doc.refused_deliveries || []).map(r =>
      el('tr', {class: 'refused', 'data-reason': r.source + ':' + r.reason},
        el('td', {}, r.source), el('td', {}, r.reason), el('td', {class: 'bad'}, r.count),
        el('td', {}, r.last_at), el('td', {}, r.last_error)))));
}
// Every stored delivery and refused duplicate, newest first, with what handling it concluded; the filter keeps the
// rows about one work item (kept across refreshes).
let ledgerFilter = '';
function renderLedger(doc) {
  const all = doc.inbox.ledger || [];
  const keys = [...new Set(all.map(e => e.work_item_key).filter(k => k))].sort();
  if (ledgerFilter && !keys.includes(ledgerFilter)) keys.push(ledgerFilter);
  const select = el('select', {id: 'ledger-filter', onchange: ev => { ledgerFilter = ev.target.value; renderLedger(doc); }},
    el('option', {value: ''}, 'all work items'), ...keys.map(k => el('option', {value: k}, k)));
  select.value = ledgerFilter;
  const shown = ledgerFilter ? all.filter(e => e.work_item_key === ledgerFilter) : all;
  const why = e => e.outcome === 'duplicate' ? 'duplicate of ' + e.duplicate_of : (e.detail || '');
  setBody('ledger', el('p', {}, 'item: ', select, ' (' + shown.length + ' of the last ' + all.length + ')'),
    table(['received', 'source', 'event', 'delivery', 'item', 'outcome', 'why', ''], shown.map(e =>
      el('tr', {class: 'ledger ' + e.outcome, 'data-ledger-delivery-id': e.delivery_id},
        el('td', {}, e.received_at), el('td', {}, e.source), el('td', {}, e.event),
        el('td', {class: 'delivery-id'}, e.delivery_id), el('td', {class: 'key'}, e.work_item_key || ''),
        el('td', {class: 'outcome ' + (e.outcome === 'failed' ? 'bad' : '')}, e.outcome),
        el('td', {class: 'why'}, why(e)),
        el('td', {}, e.outcome === 'duplicate' || e.outcome === 'pending' ? '' :
          el('button', {class: 'replay', onclick: () => replay(e.delivery_id)}, 'Replay'))))));
}
// The Plane and Gitea writes (never their text: only which write it is and how sending it went).
function renderWriteBack(w) {
  if (!w) return setBody('write-back', el('p', {class: 'muted'}, 'not reported'));
  const writeCells = x => [el('td', {}, x.channel), el('td', {class: 'kind'}, x.kind || ''),
    el('td', {class: 'key'}, x.key), el('td', {class: 'attempts'}, x.attempts)];
  setBody('write-back',
    el('p', {class: 'state'}, 'write-back: ',
       w.enabled ? el('span', {class: 'good'}, 'enabled') : el('span', {class: 'bad'}, 'off (kill switch)')),
    el('p', {class: 'counts'}, 'pending ' + w.pending + ', failed ' + w.failed),
    el('h3', {}, 'Failed writes'),
    table(['channel', 'kind', 'key', 'attempts', 'error', ''], w.failed_writes.map(x =>
      el('tr', {class: 'write failed', 'data-write-id': x.id}, ...writeCells(x),
        el('td', {class: 'bad'}, x.error),
        el('td', {}, el('button', {class: 'retry-write', onclick: () => retryWrite(x.id)}, 'Retry'))))),
    el('h3', {}, 'Pending writes'),
    table(['channel', 'kind', 'key', 'attempts', 'next attempt', 'last error'], w.pending_writes.map(x =>
      el('tr', {class: 'write pending', 'data-write-id': x.id}, ...writeCells(x),
        el('td', {}, x.next_attempt_at), el('td', {}, x.error || '')))));
}
function renderTransitions(doc) {
  setBody('transitions', table(['at', 'item', 'from', 'to', 'cause', 'detail'], doc.transitions.map(t =>
    el('tr', {class: 'transition'}, el('td', {}, t.at), el('td', {}, t.work_item_key || ('task ' + t.task_id)),
       el('td', {}, t.from), el('td', {}, t.to), el('td', {class: 'cause'}, t.cause), el('td', {}, t.detail || '')))));
}
function renderSpend(spend) {
  setBody('spend',
    table(['project', 'spent', 'budget'], spend.projects.map(p =>
      el('tr', {class: 'project-spend'}, el('td', {}, p.project), el('td', {}, usd(p.spend_usd) || '0.00 USD'),
         el('td', {}, p.budget_usd === null ? 'none' : usd(p.budget_usd))))),
    table(['project', 'stage', 'spent'], spend.stages.map(s =>
      el('tr', {class: 'stage-spend'}, el('td', {}, s.project), el('td', {}, s.stage), el('td', {}, usd(s.spend_usd))))));
}
function render(doc) {
  renderReconciler(doc.reconciler);
  renderTasks(doc);
  renderJobs(doc);
  renderSpend(doc.spend);
  renderInbox(doc);
  renderLedger(doc);
  const n = doc.notifications;
  setBody('notifications', el('p', {}, 'pending ' + n.pending + ', sent ' + n.sent + ', failed ' + n.failed));
  renderWriteBack(doc.write_back);
  renderTransitions(doc);
}
async function refresh() {
  const status = document.getElementById('status');
  try {
    const r = await fetch(api('/queue.json'), {credentials: 'same-origin', cache: 'no-store'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const doc = await r.json();
    render(doc);
    status.setAttribute('data-source', 'live');
    status.setAttribute('data-generated-at', doc.generated_at);
    if (!status.hasAttribute('data-last-action')) status.textContent = 'as of ' + doc.generated_at + ' (refreshes every ' + REFRESH_MS / 1000 + ' s)';
  } catch (e) {
    status.textContent = 'refresh failed: ' + e.message + ' (showing older data)';
  }
}
render(JSON.parse(document.getElementById('orch-data').textContent));
document.getElementById('status').textContent = 'as of page load';
refresh();
setInterval(refresh, REFRESH_MS);
</script></body></html>
)HTML";

}  // namespace

std::string tail_of_file(const std::string& path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  const auto cap = static_cast<std::streamoff>(max_bytes);
  std::streamoff start = size > cap ? size - cap : 0;
  in.seekg(start);
  std::string data(static_cast<std::size_t>(size - start), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<std::size_t>(in.gcount()));
  if (start > 0)
    if (auto nl = data.find('\n'); nl != std::string::npos && nl + 1 < data.size()) data.erase(0, nl + 1);
  return data;
}

std::string json_for_script(const json& value) {
  std::string raw = dump(value);
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    if (c == '<')
      out += "\\u003c";
    else if (c == '>')
      out += "\\u003e";
    else if (c == '&')
      out += "\\u0026";
    else
      out += c;
  }
  return out;
}

QueuePage::QueuePage(Store& store, const Clock& clock, const Config& config, const DataLayout& layout,
                     QueueDefaults defaults, WaitingRules rules, QueueLinks links, const Leadership* leadership,
                     const RefusalCounts* refusals)
    : store_(store),
      clock_(clock),
      config_(config),
      layout_(layout),
      defaults_(defaults),
      rules_(std::move(rules)),
      links_(std::move(links)),
      leadership_(leadership),
      refusals_(refusals) {}

Result<json> QueuePage::document() {
  auto doc = queue_document(store_, clock_.now(), defaults_, rules_, leadership_);
  if (!doc.ok()) return doc.status();
  json d = doc.value();
  if (refusals_) {
    // Refused deliveries left nothing in the store: this process's count is all there is (webhooks/refusals.h).
    d["refused_deliveries"] = json::array();
    for (const RefusalCounts::Row& r : refusals_->rows())
      d["refused_deliveries"].push_back({{"source", source_name(r.source)},
                                         {"reason", refusal_name(r.reason)},
                                         {"count", r.count},
                                         {"last_at", format_rfc3339(r.last_at)},
                                         {"last_error", r.last_error}});
  }
  // Failed jobs: why; running ones: what the agent prints now (a runner's arrives in chunks, docs/adr/0023).
  for (json& j : d["jobs"])
    if (j["status"] == "failed" || j["status"] == "running") {
      std::string tail = tail_of_file(layout_.job_log(j["id"].get<JobId>()).string(), kLogTailBytes);
      j["log_tail"] = tail.empty() ? json(nullptr) : json(tail);
    }
  return d;
}

json QueuePage::page_config() const {
  auto trim = [](std::string s) {
    while (!s.empty() && s.back() == '/') s.pop_back();
    return s;
  };
  json c = {{"plane_base", trim(links_.plane_base_url)},
            {"gitea_base", trim(links_.gitea_base_url)},
            {"projects", json::object()},
            {"stages", json::array({std::string(kStageCreated)})}};
  for (const ProjectSpec& p : config_.projects)
    c["projects"][p.name] = {
        {"workspace", p.plane_workspace}, {"project_id", p.plane_project_id}, {"repo", p.gitea_repo}};
  c["rerunnable"] = json::array();  // the stages whose tasks get a Re-run button
  for (const StageSpec& s : config_.stages) {
    c["stages"].push_back(s.name);
    if (rerunnable(s).ok()) c["rerunnable"].push_back(s.name);
  }
  c["stages"].push_back(std::string(kStageDone));
  return c;
}

Result<std::string> QueuePage::html() {
  auto doc = document();
  if (!doc.ok()) return doc.status();
  std::string page = kPageHead;
  page += json_for_script(page_config());
  page += kPageMiddle;
  page += json_for_script(doc.value());
  page += kPageScript;
  return page;
}

void QueuePage::register_routes(httplib::Server& server, const Secret& admin_token) {
  auto unavailable = [](httplib::Response& res, const Status& s) {
    res.status = s.code == Code::kUnavailable ? 503 : 500;
    res.set_content(dump(json{{"error", s.message}}), "application/json");
  };
  server.Get("/queue", require_token(admin_token, [this, unavailable](const httplib::Request&, httplib::Response& res) {
               auto page = html();
               if (!page.ok()) return unavailable(res, page.status());
               res.set_header("Cache-Control", "no-store");
               // Nothing external is needed, so nothing external is allowed.
               res.set_header("Content-Security-Policy",
                              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                              "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'");
               res.set_content(page.value(), "text/html; charset=utf-8");
             }));
  server.Get("/queue.json",
             require_token(admin_token, [this, unavailable](const httplib::Request&, httplib::Response& res) {
               auto doc = document();
               if (!doc.ok()) return unavailable(res, doc.status());
               res.set_header("Cache-Control", "no-store");
               res.set_content(dump(doc.value()), "application/json");
             }));
}

}  // namespace orch
