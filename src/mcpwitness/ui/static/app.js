// mcpwitness ui: the calls, one call (the application's view beside the kernel's), who talked
// to whom, the alerts. Plain JavaScript, no dependencies, no build step. Recorded data is
// attacker-controlled (tool arguments, answers, process names): it is only ever written as
// text (textContent, SVG text nodes), never as HTML.
"use strict";

const KINDS = ["open", "exec", "connect", "fork", "exit", "policy"];
const SVGNS = "http://www.w3.org/2000/svg";
let timer = null;

// --- DOM helpers ----------------------------------------------------------------------
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "text") e.textContent = v; else e.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) if (kid) e.appendChild(kid);
  return e;
}
function title(text) { return svg("title", {text}); }
function show(...nodes) { const m = document.getElementById("main"); m.replaceChildren(...nodes); }
function utc(t) { return t ? t.slice(0, 10) + " " + t.slice(11, 23) : "-"; }
function ms(v) { return v === null || v === undefined ? "-" : (v < 10 ? v.toFixed(2) : v.toFixed(1)) + " ms"; }
function short(s, n) { s = typeof s === "string" ? s : JSON.stringify(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
function badge(v, extra) { return el("span", {class: "badge " + (v || ""), "data-test": extra}, v || "-"); }
function callLink(id, label) { return el("a", {href: "#/call/" + encodeURIComponent(id), "data-test": "call-link"}, label || id); }
function pretty(v) { return el("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2)); }

async function api(path) {
  const r = await fetch(path, {credentials: "same-origin", headers: {"Accept": "application/json"}});
  const body = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function fail(e) { show(el("p", {class: "err"}, "Error: " + e.message)); }

// --- routing ----------------------------------------------------------------------------
function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const hash = location.hash || "#/calls";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === (parts[0] === "call" ? "calls" : parts[0]));
  document.getElementById("live").textContent = "";
  if (parts[0] === "call" && parts[1]) return callPage(decodeURIComponent(parts[1])).catch(fail);
  if (parts[0] === "sessions") return sessionsPage(params).catch(fail);
  if (parts[0] === "alerts") return alertsPage(params).catch(fail);
  return callsPage(params).catch(fail);
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// --- the calls --------------------------------------------------------------------------
const FILTERS = ["server", "tool", "status", "principal", "since", "until"];

function filterForm(params) {
  const input = (name, ph) => el("label", {}, name, el("input", {name, value: params.get(name) || "", placeholder: ph}));
  const status = el("select", {name: "status"}, el("option", {value: ""}, "any"),
    ...["ok", "tool_error", "error", "input_required", "cancelled", "incomplete"].map(s =>
      el("option", {value: s, selected: params.get("status") === s}, s)));
  const check = (name, label) => el("label", {class: "check"},
    el("input", {type: "checkbox", name, checked: params.get(name) === "1"}), label);
  const form = el("form", {class: "filters", "data-test": "filters"},
    input("server", "name, exe, pid"), input("tool", "tool or method"), el("label", {}, "status", status),
    input("principal", "id substring or glob"), input("since", "10m, 2h, 2026-12-01"), input("until", ""),
    check("violations", "has violations"), check("alerts", "has alerts"), el("button", {type: "submit"}, "Filter"));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const f of FILTERS) { const v = form.elements[f].value.trim(); if (v) q.set(f, v); }
    for (const f of ["violations", "alerts"]) if (form.elements[f].checked) q.set(f, "1");
    location.hash = "#/calls" + (q.toString() ? "?" + q : "");
  });
  return form;
}

function callRow(c, fresh) {
  const what = c.tool ? (c.method === "tools/call" ? c.tool : c.method + " " + c.tool) : (c.method || "?");
  const chips = KINDS.filter(k => c.events[k]).map(k => el("span", {class: "chip " + k, title: k}, k + " " + c.events[k]));
  return el("tr", {class: fresh ? "new" : null, "data-test": "call-row", "data-call": c.call_id},
    el("td", {class: "mono"}, utc(c.time)),
    el("td", {}, callLink(c.call_id)),
    el("td", {}, c.server || "?"),
    el("td", {"data-test": "call-tool"}, what),
    el("td", {}, badge(c.status)),
    el("td", {class: "num"}, ms(c.latency_ms)),
    el("td", {}, c.quality || "-", c.events_total ? el("span", {class: "muted"}, ` (${c.exact}/${c.events_total} exact)`) : null),
    el("td", {}, chips.length ? chips : el("span", {class: "muted"}, "none")),
    el("td", {class: "num"}, c.violations || ""),
    el("td", {class: "num"}, c.alerts ? el("span", {class: "badge warning"}, c.alerts) : ""),
    el("td", {class: "mono", title: c.principal || ""}, short(c.principal || "-", 48)));
}

async function callsPage(params) {
  const q = new URLSearchParams(params);
  q.set("limit", "200");
  const data = await api("/api/calls?" + q);
  const body = el("tbody", {}, data.calls.map(c => callRow(c, false)));
  const table = el("table", {"data-test": "calls"},
    el("thead", {}, el("tr", {}, ...["time (UTC)", "call", "server", "tool / method", "status", "latency",
      "attribution", "kernel events", "violations", "alerts", "principal"].map(h => el("th", {}, h)))), body);
  const empty = el("p", {class: "empty", hidden: data.calls.length ? true : null}, "No calls recorded (match).");
  show(el("h1", {}, "Tool calls"), filterForm(params), table, empty);
  let newest = data.newest || 0;
  const live = document.getElementById("live");
  const seen = new Set(data.calls.map(c => c.call_id));
  const tick = async () => {
    try {
      const nq = new URLSearchParams(params);
      if (newest) nq.set("after", String(newest));
      const d = await api("/api/calls?" + nq);
      const fresh = d.calls.filter(c => !seen.has(c.call_id));
      for (const c of fresh.reverse()) { seen.add(c.call_id); body.insertBefore(callRow(c, true), body.firstChild); }
      if (fresh.length) empty.hidden = true;
      newest = Math.max(newest, d.newest || 0);
      live.textContent = "live · checked " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (e) { live.textContent = "live: " + e.message; }
  };
  live.textContent = "live";
  timer = setInterval(tick, 1500);
}

// --- one call -----------------------------------------------------------------------------
function what(e) {
  switch (e.type) {
    case "open": return (e.path || "") + (e.flags ? "  [" + e.flags.join("|") + "]" : "") + (e.error ? "  → " + e.error : "");
    case "exec": return (e.argv && e.argv.length ? e.argv : [e.file]).join(" ") + (e.error ? "  → " + e.error : "");
    case "connect": return (e.unix_path || `${e.address}:${e.port}`) + (e.scope ? `  (${e.scope})` : "") + (e.error ? "  → " + e.error : "");
    case "fork": return "child " + e.child_pid;
    case "exit": return e.signal ? "killed by " + e.signal : "exit " + e.exit_code;
    case "policy": return `${e.action} ${e.check} ${e.path || ((e.address || "") + (e.port ? ":" + e.port : ""))}`;
    default: return "";
  }
}

function timeline(rec) {
  const tl = rec.timeline || [];
  const kinds = KINDS.filter(k => tl.some(e => e.type === k));
  const W = 900, left = 70, right = 20, rowH = 30, top = 26;
  const H = top + Math.max(1, kinds.length) * rowH + 30;
  const end = Math.max(rec.latency_ms || 0, ...tl.map(e => e.t_ms), 0.001);
  const start = Math.min(0, ...tl.map(e => e.t_ms));
  const x = t => left + (t - start) / (end * 1.04 - start) * (W - left - right);
  const s = svg("svg", {class: "timeline", viewBox: `0 0 ${W} ${H}`, "data-test": "timeline", role: "img"});
  s.appendChild(title("The call's kernel events on a time axis from the server's read of the request"));
  if (rec.latency_ms !== null && rec.latency_ms !== undefined) {
    s.appendChild(svg("rect", {class: "after", x: x(rec.latency_ms), y: top - 6, width: Math.max(0, W - right - x(rec.latency_ms)), height: H - top - 18},
      title("after the response: processes that outlived it")));
  }
  s.appendChild(svg("line", {class: "axis", x1: left, x2: W - right, y1: H - 22, y2: H - 22}));
  for (const [t, label] of [[0, "request read"], [rec.latency_ms, "response"]]) {
    if (t === null || t === undefined) continue;
    s.appendChild(svg("line", {class: "mark", x1: x(t), x2: x(t), y1: top - 10, y2: H - 22}));
    const near = x(t) > W - 200;
    s.appendChild(svg("text", {x: x(t) + (near ? -3 : 3), y: top - 12, "text-anchor": near ? "end" : "start",
      text: `${label} (${ms(t)})`}));
  }
  for (let i = 0; i <= 4; i++) {
    const t = start + (end * 1.04 - start) * i / 4;
    s.appendChild(svg("text", {x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", text: ms(t)}));
  }
  kinds.forEach((k, i) => {
    const y = top + i * rowH + rowH / 2;
    s.appendChild(svg("text", {x: 6, y: y + 4, text: k}));
    s.appendChild(svg("line", {class: "axis", x1: left, x2: W - right, y1: y, y2: y, "stroke-dasharray": "1 4"}));
    for (const e of tl.filter(e => e.type === k)) {
      const flagged = e.type === "policy" || e.sensitive || e.outside_roots || e.category;
      s.appendChild(svg("circle", {class: `ev ${k} ${e.attribution === "ambiguous" ? "ambiguous" : ""} ${flagged ? "flagged" : ""}`,
        cx: x(e.t_ms), cy: y, r: 6, "data-test": "tl-" + k},
        title(`${ms(e.t_ms)}  ${k}  pid ${e.pid} ${e.comm}  ${what(e)}  [${e.attribution}]`)));
    }
  });
  return s;
}

function lineage(rec) {
  const procs = rec.processes || [];
  const byPid = new Map(procs.map(p => [p.pid, p]));
  const kids = new Map();
  for (const p of procs) {
    if (p.parent !== null && p.parent !== undefined && byPid.has(p.parent) && p.parent !== p.pid) {
      if (!kids.has(p.parent)) kids.set(p.parent, []);
      kids.get(p.parent).push(p);
    }
  }
  const server = rec.server && rec.server.pid;
  const roots = procs.filter(p => !byPid.has(p.parent) || p.pid === server);
  const seen = new Set();
  const node = p => {
    if (seen.has(p.pid)) return null;
    seen.add(p.pid);
    const label = el("span", {class: "proc", "data-test": "proc", "data-pid": p.pid},
      el("span", {class: "pid"}, p.pid + " "), el("b", {}, p.exe ? p.exe.split("/").pop() : p.comm),
      p.argv ? el("span", {class: "argv"}, "  " + short(p.argv.join(" "), 160)) : null,
      p.pid === server ? el("span", {class: "muted"}, "  (the server)") : null);
    const children = (kids.get(p.pid) || []).map(node).filter(Boolean);
    return el("li", {}, label, children.length ? el("ul", {}, children) : null);
  };
  const items = roots.map(node).filter(Boolean);
  return items.length ? el("ul", {class: "tree", "data-test": "lineage"}, items) : el("p", {class: "muted"}, "No process of this call did anything the kernel records.");
}

function attributionCell(e, cands) {
  if (e.attribution !== "ambiguous" && !(e.candidates && e.candidates.length)) return el("span", {}, e.attribution);
  return el("span", {}, e.attribution + ": ", ...(e.candidates || []).map(c => {
    const n = cands[c];
    return el("span", {}, callLink(c, n ? `${c} (${n.tool || n.method})` : c), " ");
  }));
}

async function callPage(id) {
  const d = await api("/api/calls/" + encodeURIComponent(id));
  const r = d.record, srv = r.server || {}, cli = r.client || {};
  const p = r.principal;
  const head = el("h1", {}, `${r.method || "?"} ${r.tool || ""} `, badge(r.status, "call-status"),
    el("span", {class: "muted"}, `  ${ms(r.latency_ms)}  ·  ${utc(r.time)} UTC  ·  call ${r.call_id}`));
  const app = el("section", {class: "card", "data-test": "app-view"},
    el("h2", {}, "What the application asked and got"),
    el("dl", {class: "kv"},
      el("dt", {}, "server"), el("dd", {}, `${(srv.info || {}).name || "?"} ${(srv.info || {}).version || ""}  pid ${srv.pid}  `,
        el("span", {class: "mono"}, (srv.cmdline || []).join(" ") || srv.exe || "")),
      el("dt", {}, "client"), el("dd", {}, `${(cli.info || {}).name || "?"} ${(cli.info || {}).version || ""}`, cli.pid ? `  pid ${cli.pid}` : ""),
      el("dt", {}, "principal"), el("dd", {class: "mono", "data-test": "principal"}, p ? `${p.id}  (${p.kind}: ${p.source})` : "-"),
      p && p.claims ? [el("dt", {}, "claims"), el("dd", {class: "mono"}, JSON.stringify(p.claims) + (p.verified ? "  verified" : "  " + (p.verification || "unverified")))] : null,
      el("dt", {}, "transport"), el("dd", {}, r.transport || "-"),
      el("dt", {}, "session"), el("dd", {class: "mono"}, r.session),
      el("dt", {}, "status"), el("dd", {}, r.status, r.incomplete_reason ? ` (${r.incomplete_reason})` : "")),
    el("h2", {}, "Arguments"), r.arguments === null || r.arguments === undefined ? el("p", {class: "muted"}, "none") : pretty(r.arguments),
    el("h2", {}, "Answer"), r.result ? pretty(r.result) : el("p", {class: "muted"}, "no result"),
    r.error ? [el("h2", {}, "Error"), pretty(r.error)] : null,
    el("h2", {}, "Summary"), el("p", {}, r.summary || ""));

  const tl = r.timeline || [];
  const refusals = tl.filter(e => e.type === "policy").map(e => el("div", {class: "refusal", "data-test": "policy-refusal"},
    el("b", {}, `${e.outcome || e.action}: ${e.check} ${e.path || `${e.address}:${e.port}`}`),
    el("div", {}, `rule `, el("b", {"data-test": "policy-rule"}, e.rule || `#${e.rule_id}`), ` of policy ${e.policy || "?"}`,
      ` · mechanism `, el("b", {"data-test": "policy-mechanism"}, e.mechanism || "?"),
      ` · the process saw ${e.errno || "no error (killed)"} · pid ${e.pid} ${e.comm} at ${ms(e.t_ms)}`)));
  const rows = tl.map(e => el("tr", {"data-test": "event-row", "data-type": e.type},
    el("td", {class: "num"}, ms(e.t_ms)), el("td", {}, el("span", {class: "chip " + e.type}, e.type)),
    el("td", {class: "num"}, e.pid), el("td", {}, e.comm),
    el("td", {class: "mono", "data-test": e.type === "exec" ? "exec-argv" : null}, what(e)),
    el("td", {}, attributionCell(e, d.candidates))));
  const kernel = el("section", {class: "card", "data-test": "kernel-view"},
    el("h2", {}, `What the kernel saw (${tl.length} events; attribution ${(r.attribution || {}).quality || "-"})`),
    timeline(r),
    refusals.length ? [el("h2", {}, "Refused by policy"), refusals] : null,
    (r.violations || []).length ? [el("h2", {}, "Violations"), r.violations.map(v =>
      el("div", {class: "violation", "data-test": "violation"}, `${v.kind}: ${v.detail}`, v.certain === false ? " (ambiguous)" : ""))] : null,
    d.alerts.length ? [el("h2", {}, "Alerts"), d.alerts.map(a => el("div", {class: "alertline", "data-test": "call-alert"},
      badge(a.priority), " ", el("b", {}, a.rule), a.count > 1 ? ` ×${a.count}` : "", el("div", {}, a.output)))] : null,
    el("h2", {}, "Process lineage"), lineage(r),
    el("h2", {}, "Events"),
    tl.length ? el("table", {"data-test": "events"}, el("thead", {}, el("tr", {}, ...["ms", "type", "pid", "comm", "what", "attribution"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows)) : el("p", {class: "muted"}, "No kernel events."),
    d.later.length ? [el("h2", {}, `After the record was written (${d.later.length})`), el("ul", {}, d.later.map(e =>
      el("li", {class: "mono"}, `${utc(e.time)} ${e.type} pid ${e.pid} ${e.resolved || e.path || e.exe || e.address || ""}`)))] : null,
    (r.still_running || []).length ? el("p", {class: "muted"}, "still running when written: " + r.still_running.join(", ")) : null);
  show(el("p", {}, el("a", {href: "#/calls"}, "← calls")), head, el("div", {class: "grid"}, app, kernel));
}

// --- who talked to whom -------------------------------------------------------------------
async function sessionsPage(params) {
  const g = await api("/api/graph" + (params.get("since") ? "?since=" + encodeURIComponent(params.get("since")) : ""));
  const clients = g.nodes.filter(n => n.kind === "client"), servers = g.nodes.filter(n => n.kind === "server");
  const W = 1000, rowH = 46, H = 40 + Math.max(clients.length, servers.length, 1) * rowH;
  const pos = new Map();
  clients.forEach((n, i) => pos.set(n.id, [20, 30 + i * rowH]));
  servers.forEach((n, i) => pos.set(n.id, [W - 320, 30 + i * rowH]));
  const s = svg("svg", {class: "graph", viewBox: `0 0 ${W} ${H}`, "data-test": "graph"});
  for (const e of g.edges) {
    const [x1, y1] = pos.get(e.client), [x2, y2] = pos.get(e.server);
    const a = [x1 + 300, y1 + 14], b = [x2, y2 + 14], mx = (a[0] + b[0]) / 2;
    s.appendChild(svg("path", {class: "edge" + (e.new ? " new" : ""), d: `M${a[0]},${a[1]} C${mx},${a[1]} ${mx},${b[1]} ${b[0]},${b[1]}`,
      "stroke-width": Math.min(8, 1 + Math.log2(1 + e.calls))}, title(`${e.sessions} sessions, ${e.calls} calls, ${e.transports.join(", ")}`)));
    // the label a third of the way along the curve, where edges from one client do not meet yet
    const t = 0.3, u = 1 - t;
    const lx = u * u * u * a[0] + 3 * u * u * t * mx + 3 * u * t * t * mx + t * t * t * b[0];
    const ly = u * u * u * a[1] + 3 * u * u * t * a[1] + 3 * u * t * t * b[1] + t * t * t * b[1];
    s.appendChild(svg("text", {x: lx, y: ly - 5, class: e.new ? "new" : "",
      text: `${e.calls} calls${e.new ? " · NEW" : ""}`}));
  }
  for (const n of g.nodes) {
    const [x, y] = pos.get(n.id);
    const label = n.kind === "client" ? (n.declared.length ? `${n.declared.join(", ")} · ` : "") + n.label : n.label;
    s.appendChild(svg("g", {class: "node " + n.kind},
      svg("rect", {x, y, width: 300, height: 28, rx: 5}),
      svg("text", {x: x + 8, y: y + 18, text: short(label, 46)}), title(label + (n.containers.length ? "  containers: " + n.containers.join(", ") : ""))));
  }
  const rows = g.edges.map(e => el("tr", {class: e.new ? "newpair" : null, "data-test": "pair-row"},
    el("td", {class: "mono"}, e.client.slice(2)), el("td", {}, e.server.slice(2)), el("td", {class: "num"}, e.sessions),
    el("td", {class: "num"}, e.calls), el("td", {}, e.transports.join(", ")),
    el("td", {}, [...new Set([...(g.nodes.find(n => n.id === e.client).containers), ...(g.nodes.find(n => n.id === e.server).containers)])].join(", ") || "-"),
    el("td", {class: "mono"}, e.addresses.join("; ") || "-"), el("td", {}, e.new ? el("span", {class: "badge warning"}, "new pair") : ""),
    el("td", {class: "mono"}, utc(e.last))));
  show(el("h1", {}, "Who talked to whom"),
    g.edges.length ? s : el("p", {class: "empty"}, "No sessions recorded."),
    el("h2", {}, "Pairs"),
    el("table", {"data-test": "pairs"}, el("thead", {}, el("tr", {}, ...["client (principal)", "server", "sessions", "calls", "transports", "containers", "addresses", "", "last seen"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows)));
}

// --- alerts ---------------------------------------------------------------------------------
async function alertsPage(params) {
  const q = new URLSearchParams(params); q.set("limit", "500");
  const alerts = await api("/api/alerts?" + q);
  const rows = alerts.map(a => el("tr", {"data-test": "alert-row"},
    el("td", {class: "mono"}, utc(a.time)), el("td", {}, badge(a.priority)), el("td", {}, el("b", {}, a.rule)),
    el("td", {class: "num"}, a.count || 1), el("td", {}, a.call_id ? callLink(a.call_id, a.call_id + (a.tool ? " " + a.tool : "")) : "-"),
    el("td", {class: "mono"}, short(a.principal || "-", 40)), el("td", {}, a.output)));
  show(el("h1", {}, "Alerts"), alerts.length ? el("table", {"data-test": "alerts"},
    el("thead", {}, el("tr", {}, ...["time (UTC)", "priority", "rule", "count", "call", "principal", "output"].map(h => el("th", {}, h)))),
    el("tbody", {}, rows)) : el("p", {class: "empty"}, "No alerts recorded."));
}
