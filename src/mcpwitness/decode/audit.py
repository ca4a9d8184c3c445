"""MCP records + kernel events -> one `call` record per request/response pair.

Input, in ring order: what mcp.py produces (McpMessage, SessionRecord,
NonJson and the internal Seen) and the kernel events. Output: the same
records to write (kernel events once their attribution is settled, with an
`attribution` field; their flags (flags.py) were set by the decoder), plus a CallRecord per request
when its response is seen and everything it caused is settled: its branch
processes exited (or `linger` passed: the record lists what still runs),
or on timeout / end of session / exit, marked incomplete.
"""
from __future__ import annotations

import os
from urllib.parse import unquote

from msgspec import UNSET
from msgspec.structs import replace

from ..records import (
    KERNEL_TAGS, CallAttribution, CallEnd, CallRecord, EventAttribution, McpMessage, ResultSummary, SessionRecord,
    ThreadEvent, TimelineEntry, WakeEvent
)
from ..util import call_id, id_key, tool_of, under
from .attribute import Attributor, Request, Verdict
from .evidence import Named, kind_of, name_of
from .mcp import Seen
from .streams import C2S, S2C


class _Call:
    __slots__ = ("id", "session", "direction", "req", "resp", "areq", "events", "end_ts", "reason", "status",
                 "written", "key", "dropped")

    def __init__(self, cid: str, req: McpMessage, key: tuple):
        self.id, self.req, self.key = cid, req, key
        self.session, self.direction = req.session, req.direction
        self.resp: McpMessage | None = None
        self.areq: Request | None = None
        self.events: list = []
        self.dropped: dict[str, int] | None = None  # events past the call's cap, by type
        self.end_ts: int | None = None
        self.reason: str | None = None
        self.status: str | None = None
        self.written = False


def declared_roots(answers) -> list[str] | None:
    """The file paths a client declared as its roots, from answers keyed by
    anything ({key: roots/list result or {result: ...}}, as in inputResponses),
    the last one found; None if there is none."""
    if not isinstance(answers, dict):
        return None
    found = None
    for v in answers.values():
        roots = v.get("roots") if isinstance(v, dict) else None
        if isinstance(v, dict) and isinstance(v.get("result"), dict):
            roots = v["result"].get("roots", roots)
        if isinstance(roots, list):
            found = []
            for r in roots:
                uri = r.get("uri") if isinstance(r, dict) else None
                if isinstance(uri, str) and uri.startswith("file://"):
                    found.append(os.path.normpath(unquote(uri[7:]) or "/"))
    return found


# A call's record keeps at most this many routine events (reads of files that are not
# sensitive, forks, exits), and at most CALL_EVENTS_MAX in all: a tool that opens a million files
# must not hold a million events in memory, nor write them into one record. Every event
# is still written on its own (JSON Lines, the store); what the record leaves out is
# counted in it (notes) and in stats calls.events_not_in_records. Policy events are
# always kept.
CALL_ROUTINE_MAX = 10_000
CALL_EVENTS_MAX = 50_000


class Auditor:
    def __init__(self, wall=None, grace_ns: int = 50_000_000,
                 linger_ns: int = 10_000_000_000, timeout_ns: int = 300_000_000_000):
        self.wall = wall or (lambda ns: "")
        self.grace_ns, self.linger_ns, self.timeout_ns = grace_ns, linger_ns, timeout_ns
        self.attr = Attributor(hint=lambda ev, cands: named_by_arguments(ev, cands, self._anchors))
        self.calls: dict[tuple, _Call] = {}     # (session, direction, id) -> call not written yet
        self.closing: list[_Call] = []          # answered or ended, waiting to be written
        self.sessions: dict[str, SessionRecord] = {}
        self.roots: dict[str, list[str]] = {}   # session -> declared roots (paths)
        self.principals: dict[str, dict] = {}   # principal id -> the principal, as session records said it
        self.cwds: dict[int, str | None] = {}   # server pid -> its working directory, read when first needed
        self.now = 0
        self.stats = {"calls": 0, "incomplete": 0, "late_events": 0, "errors": 0, "events_not_in_records": 0}
        self.errors: list[str] = []

    # --- input ------------------------------------------------------------
    def feed(self, records) -> list:
        out: list = []
        for rec in records:
            n = len(out)
            try:
                self._record(rec, out)
            except Exception as e:  # a bug this record found: it is still written, unattributed
                self.stats["errors"] += 1
                self.errors = (self.errors + [f"{type(rec).__name__}: {type(e).__name__}: {e}"])[-10:]
                tag = getattr(getattr(type(rec), "__struct_config__", None), "tag", None)
                if tag in KERNEL_TAGS and not any(type(x) is type(rec) and x.ktime_ns == rec.ktime_ns
                                                  and x.tid == rec.tid for x in out[n:]):
                    out.append(rec)
        out += self._ready()
        return out

    def _record(self, rec, out: list) -> None:
        t = type(rec)
        if t is Seen:
            self._seen(rec, out)
            return
        if t is ThreadEvent:
            self.attr.thread_created(rec)
            return
        if t is WakeEvent:
            self.attr.woke(rec)
            return
        tag = getattr(t, "__struct_config__", None)
        tag = tag.tag if tag is not None else None
        if tag in KERNEL_TAGS:
            self.now = max(self.now, rec.ktime_ns)
            self._place(self.attr.event(rec), out)
            return
        out.append(rec)
        if t is McpMessage:
            self.now = max(self.now, rec.ktime_ns)
            self._message(rec, out)
        elif t is SessionRecord:
            # the latest record of each session, for the call records; bounded: the least recently
            # heard-of sessions go first (a watch runs for months, a stateless HTTP client makes one per connection)
            self.sessions.pop(rec.session, None)
            self.sessions[rec.session] = rec
            if len(self.sessions) > 65536:
                del self.sessions[next(iter(self.sessions))]
            p = rec.principal
            if isinstance(p, dict) and p.get("id"):
                self.principals[p["id"]] = p
                if len(self.principals) > 4096:
                    del self.principals[next(iter(self.principals))]
            if rec.event == "end":
                for c in [c for c in self.calls.values() if c.session == rec.session and c.end_ts is None]:
                    self._end(c, rec.ktime_ns, "incomplete", "the session ended before the response", out)

    def _message(self, m: McpMessage, out: list) -> None:
        if m.kind == "request":
            key = (m.session, m.direction, id_key(m.id))
            old = self.calls.get(key)
            if old is not None and old.end_ts is None:
                self._end(old, m.ktime_ns, "incomplete", "a new request reused its id", out)
            c = _Call(m.call_id or call_id(m.session, m.id, m.ktime_ns), m, key)
            self.calls[key] = c
            self.stats["calls"] += 1
            if isinstance(m.params, dict):
                self._learn_roots(m.session, m.params.get("inputResponses"))
        elif m.kind in ("response", "error"):
            other = C2S if m.direction == S2C else S2C
            c = self.calls.get((m.session, other, id_key(m.id)))
            if c is None or c.resp is not None:
                return
            c.resp = m
            if m.method == "roots/list" and isinstance(m.result, dict):
                self._learn_roots(m.session, {"r": m.result})
            if m.kind == "error":
                status = "error"
            elif isinstance(m.result, dict) and m.result.get("isError") is True:
                status = "tool_error"
            elif m.result_type == "input_required":
                status = "input_required"
            else:
                status = "ok"
            c.status = status
            c.end_ts = m.ktime_ns
            self.closing.append(c)
        elif m.kind == "notification" and m.method == "notifications/cancelled" and isinstance(m.params, dict):
            rid = m.params.get("requestId")
            c = self.calls.get((m.session, m.direction, id_key(rid)))
            if c is not None and c.end_ts is None:
                self._end(c, m.ktime_ns, "cancelled", f"cancelled by the {'client' if m.direction == C2S else 'server'}"
                          + (f": {m.params['reason']}" if isinstance(m.params.get("reason"), str) else ""), out)

    def _anchors(self, r: Request) -> list[str]:
        """Where a relative name in r's arguments may lie: the server's working directory
        (read from /proc once per server) and the client's declared roots."""
        if r.server not in self.cwds:
            if len(self.cwds) > 4096:
                self.cwds.clear()
            try:
                self.cwds[r.server] = os.readlink(f"/proc/{r.server}/cwd")
            except OSError:
                self.cwds[r.server] = None
        cwd = self.cwds[r.server]
        return ([cwd] if cwd and cwd.startswith("/") else []) + list(self.roots.get(r.call.session) or ())

    def _learn_roots(self, session: str, answers) -> None:
        roots = declared_roots(answers)
        if roots is not None:
            self.roots[session] = roots

    def _seen(self, s: Seen, out: list) -> None:
        if s.role != "server":
            return
        self.now = max(self.now, s.ktime_ns)
        for kind, direction, mid in s.items:
            if kind == "request" and direction == C2S and s.io == "read":
                c = self.calls.get((s.session, C2S, id_key(mid)))
                if c is not None and c.areq is None and c.end_ts is None:
                    c.areq = self.attr.request_read(s.pid, s.tid, s.ktime_ns, c)
            elif kind in ("response", "error") and direction == S2C and s.io == "write":
                c = self.calls.get((s.session, C2S, id_key(mid)))
                if c is not None and c.areq is not None:
                    self._place(self.attr.response_written(c.areq, s.tid, s.ktime_ns), out)

    def _end(self, c: _Call, ts: int, status: str, reason: str, out: list) -> None:
        c.status, c.reason, c.end_ts = status, reason, ts
        self.closing.append(c)
        if c.areq is not None:
            self._place(self.attr.request_gone(c.areq), out)

    def _place(self, pairs, out: list) -> None:
        """Each event, settled: written as the auditor's copy of it, with its
        attribution (the decoder's event is left as it was)."""
        for ev, v in pairs:
            late = [r.call.id for r in v.requests if r.call.written]
            ev = replace(ev, attribution=_attribution(v, late))
            if late:
                self.stats["late_events"] += 1
            out.append(ev)
            for r in v.requests:
                if not r.call.written:
                    self._keep(r.call, ev, v)

    def _keep(self, c: _Call, ev, v) -> None:
        n = len(c.events)
        if n >= CALL_ROUTINE_MAX:
            tag = type(ev).__struct_config__.tag
            routine = tag in ("fork", "exit", "thread") or (tag == "open" and not ev.sensitive
                                                            and ev.risk in (None, "read"))
            if tag != "policy" and (routine or n >= CALL_EVENTS_MAX):
                c.dropped = c.dropped or {}
                c.dropped[tag] = c.dropped.get(tag, 0) + 1
                self.stats["events_not_in_records"] += 1
                return
        c.events.append((ev, v))

    # --- output -----------------------------------------------------------
    def _ready(self, force: bool = False) -> list:
        out: list = []
        keep = []
        now = self.now
        for c in self.closing:
            if c.written:
                continue
            a = c.areq
            settled = a is None or (a.done and a.waiting == 0)
            live = self.attr.live_branches(a) if a is not None else []
            if force or now >= c.end_ts + self.linger_ns or (settled and not live and now >= c.end_ts + self.grace_ns):
                if a is not None and not a.done:  # the server's write of the response was never seen
                    self._place(self.attr.request_gone(a), out)  # the server's write of it was never seen
                out.append(self._write(c, live))
            else:
                keep.append(c)
        self.closing = keep
        return out

    def tick(self, now: int) -> list:
        """Timers: now is CLOCK_MONOTONIC ns (the kernel's clock)."""
        self.now = max(self.now, now)
        out: list = []
        self._place(self.attr.tick(now), out)
        for c in list(self.calls.values()):
            if c.end_ts is None and now - c.req.ktime_ns > self.timeout_ns:
                self._end(c, now, "incomplete", f"no response after {self.timeout_ns / 1e9:.0f} s", out)
        return out + self._ready()

    def flush(self, now: int) -> list:
        """Everything still open is written, marked incomplete (the agent stops)."""
        self.now = max(self.now, now)
        out: list = []
        for c in list(self.calls.values()):
            if c.end_ts is None:
                self._end(c, now, "incomplete", "mcpwitness stopped before the response", out)
        self._place(self.attr.flush(), out)
        return out + self._ready(force=True)

    def _write(self, c: _Call, live: list[int]) -> CallRecord:
        c.written = True
        if self.calls.get(c.key) is c:
            del self.calls[c.key]
        if c.status in ("incomplete", "cancelled"):
            self.stats["incomplete"] += 1
        sess = self.sessions.get(c.session)
        principal = sess.principal if sess is not None else None
        want = c.req.http.principal if c.req.http is not None else None
        if want and (not isinstance(principal, dict) or principal.get("id") != want):
            principal = self.principals.get(want, principal)   # the request's own credentials
        rec = build_record(c, sess, self.roots.get(c.session), live, self.wall)
        rec.principal = principal if isinstance(principal, dict) else None
        c.events = []
        return rec


def named_by_arguments(ev, cands: list, anchors=lambda r: []) -> list:
    """[(request, what its arguments name)] for the candidates whose arguments name what ev
    touched (decode/evidence.py). anchors(request) -> the directories a relative name may
    be under: the server's working directory, the client's declared roots."""
    out = []
    for r in cands:
        if r.named is None:
            r.named = Named(r.call.req.params)
        what = name_of(ev, r.named, anchors(r) if r.named.rel_names else [])
        if what is not None:
            out.append((r, what))
    if len(out) == 1:
        # the one that names it is taken only if every other candidate names another thing of the
        # kind: one that names nothing of it (a tool that derives its file) may be the one
        kind = kind_of(ev)
        if any(not r.named.names_any(kind) for r in cands if r is not out[0][0]):
            return []
    return out


def _attribution(v: Verdict, late: list[str]) -> EventAttribution:
    reqs = v.requests
    cands = None
    if len(reqs) > 1:
        cands = [r.call.id for r in reqs]
    elif v.others:
        cands = [r.call.id for r in reqs + v.others]
    return EventAttribution(v.quality, reqs[0].call.id if len(reqs) == 1 else None, v.reason, cands, v.server,
                            v.branch, bool(late))


# --- building the record --------------------------------------------------

def _tool(method: str | None, params) -> tuple:
    """(what the request names, its arguments): tools/call and prompts/get
    name a tool or prompt and carry arguments; resources/* name a URI; other
    requests have no name and their params (without _meta) are the arguments."""
    if not isinstance(params, dict):
        return None, None
    name = tool_of(method, params)
    if method in ("tools/call", "prompts/get"):
        return name, params.get("arguments")
    if method.startswith("resources/") and "uri" in params:
        return name, None
    args = {k: v for k, v in params.items() if k != "_meta"}
    return None, args or None


def _result_summary(m: McpMessage | None) -> ResultSummary | None:
    if m is None or m.kind != "response":
        return None
    r = m.result
    d = ResultSummary(m.size)
    if isinstance(r, dict):
        if "isError" in r:
            d.is_error = r.get("isError")
        items = r.get("content") if isinstance(r.get("content"), list) else \
            r.get("contents") if isinstance(r.get("contents"), list) else \
            r.get("messages") if isinstance(r.get("messages"), list) else None
        if items is not None:
            types: dict[str, int] = {}
            for it in items:
                k = it.get("type") if isinstance(it, dict) else None
                if k is None and isinstance(it, dict):
                    k = "blob" if "blob" in it else "text" if "text" in it else "message" if "role" in it else "?"
                types[k] = types.get(k, 0) + 1
            d.items = len(items)
            d.content_types = types
        if "structuredContent" in r:
            d.structured = True
        if r.get("resultType"):
            d.result_type = r["resultType"]
    return d


def _entry(ev, v: Verdict, t0: int, roots) -> TimelineEntry:
    tag = type(ev).__struct_config__.tag
    e = TimelineEntry(round((ev.ktime_ns - t0) / 1e6, 3), ev.time, tag, ev.pid, ev.tid, ev.comm, v.quality)
    if tag == "open":
        path = ev.resolved or ev.path
        e.path, e.flags, e.risk = path, ev.flags, ev.risk
        if ev.error:
            e.error = ev.error
        else:
            e.fd = ev.result
        if ev.sensitive:
            e.sensitive = ev.sensitive
        if roots and path.startswith("/") and not under(path, roots):
            e.outside_roots = True
        if ev.syscall in ("io_uring", "open_by_handle_at"):
            e.via = ev.syscall
    elif tag == "exec":
        e.file, e.argv = ev.exe or ev.filename, ev.argv   # (redacted by the pipeline, as written)
        if ev.category:
            e.category = ev.category
        if ev.error:
            e.error = ev.error
    elif tag == "connect":
        e.family, e.address, e.port = ev.family, ev.address, ev.port
        if ev.unix_path:
            e.unix_path = ev.unix_path
        if ev.scope:
            e.scope = ev.scope
        if ev.error:
            e.error = ev.error
        if ev.syscall != "connect":
            e.via = ev.syscall
    elif tag == "policy":
        e.check, e.action, e.outcome, e.mechanism, e.errno = ev.check, ev.action, ev.outcome, ev.mechanism, ev.errno
        e.policy, e.rule, e.rule_id = ev.policy, ev.rule, ev.rule_id
        if ev.path is not None:
            e.path, e.access = ev.path, ev.access
        else:
            e.family, e.address, e.port = ev.family, ev.address, ev.port
    elif tag == "fork":
        e.child_pid = ev.child_pid
    elif tag == "exit":
        if ev.signal_name:
            e.signal = ev.signal_name
        else:
            e.exit_code = ev.exit_code
    if len(v.requests) > 1 or v.others:
        e.candidates = [r.call.id for r in v.requests + v.others]
    if ev.truncated:
        e.truncated = True
    return e


def _violations(timeline: list[TimelineEntry]) -> list:
    out = []
    for i, e in enumerate(timeline):
        sure = e.attribution != "ambiguous"
        if e.get("sensitive") and e.type in ("open", "exec"):
            out.append({"kind": "sensitive_path", "detail": f"{e.type} {e.get('path') or e.get('file')} "
                        f"({e.sensitive})", "event": i, "certain": sure})
        if e.get("outside_roots") and e.get("risk") not in (None, "read"):
            out.append({"kind": "write_outside_roots", "detail": f"{e.risk} {e.path}", "event": i,
                        "certain": sure})
        if e.type == "policy":
            what = e.get("path") or (f"[{e.address}]:{e.port}" if e.get("family") == "inet6"
                                     else f"{e.get('address')}:{e.get('port')}")
            out.append({"kind": f"policy_{e.action}", "detail": f"{e.check} {what}: {e.get('rule')} "
                        f"({e.outcome}; {e.mechanism})", "event": i, "certain": sure})
        if e.type == "exec" and e.get("category") in ("shell", "downloader") and not e.get("error"):
            out.append({"kind": f"{e.category}_exec", "detail": " ".join(e.argv)[:200] or e.file,
                        "event": i, "certain": sure})
    return out


def _lineage(timeline: list, server_pid: int | None, parents: dict, names: dict) -> list[str]:
    pids = [p for p in dict.fromkeys(e.pid for e in timeline) if p != server_pid]
    kids = {parents.get(p) for p in pids}
    chains = []
    for p in pids:
        if p in kids:
            continue  # not a leaf
        chain, q, seen = [], p, set()
        while q is not None and q not in seen:
            seen.add(q)
            chain.append(f"{q} ({names.get(q, '?')})")
            if q == server_pid:
                break
            q = parents.get(q)
        chains.append(" -> ".join(reversed(chain)))
    return chains


def build_record(c: _Call, sess: SessionRecord | None, roots, live: list[int], wall) -> CallRecord:
    req, resp = c.req, c.resp
    tool, args = _tool(req.method, req.params)
    t0 = c.areq.read_ts if c.areq is not None else req.ktime_ns
    evs = sorted(c.events, key=lambda p: p[0].ktime_ns)
    timeline = [_entry(ev, v, t0, roots) for ev, v in evs]
    # processes: who did what, with the lineage from the server down
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    procs: dict[int, dict] = {}
    for ev, _ in evs:
        tag = type(ev).__struct_config__.tag
        p = procs.setdefault(ev.pid, {"pid": ev.pid, "parent": ev.ancestry[0] if ev.ancestry else None,
                                      "comm": ev.comm})
        names.setdefault(ev.pid, ev.comm)
        if ev.ancestry:
            parents.setdefault(ev.pid, ev.ancestry[0])
        if tag == "exec" and not ev.error:
            p["exe"], p["argv"] = ev.exe or ev.filename, ev.argv
            names[ev.pid] = os.path.basename(ev.exe or ev.filename) or ev.comm
        elif tag == "fork":
            parents[ev.child_pid] = ev.pid
    server_pid = c.areq.server if c.areq is not None else None
    qualities = [e.attribution for e in timeline]
    counts = {q: qualities.count(q) for q in ("exact", "thread", "wakeup", "argument", "ambiguous", "unknown")
              if q in qualities}
    if c.areq is None:
        quality = "server not tracked" if c.direction == C2S else "not applicable (server->client request)"
    elif not timeline:
        quality = "nothing to attribute"
    elif "ambiguous" in counts:
        quality = "ambiguous" if len(counts) == 1 else "partly ambiguous"
    elif "argument" in counts:
        quality = "by argument" if len(counts) == 1 else "partly by argument"
    else:
        quality = "exact"
    att = CallAttribution(quality, **counts)
    if timeline:
        att.events = len(timeline)
    if c.areq is not None and c.areq.binding:
        att.thread_evidence = c.areq.binding[3]

    client = server = None
    if sess is not None:
        peers = sess.peers or []
        cpeer = next((p for p in peers if p.get("role") == "client"), None)
        spid = server_pid or (sess.pid if sess.role == "server" else None)
        # the process that read the request, as the session saw it (its role may have been
        # learnt after the session's last record: a server attached to mid-session)
        se = next((e for e in sess.ends or () if spid is not None and e.get("pid") == spid), {})
        server = CallEnd(spid, se.get("exe") or (sess.exe if sess.role == "server" else None), sess.server_info,
                         cmdline=se.get("cmdline") or (sess.cmdline if sess.role == "server" else None),
                         tracked=c.areq is not None)
        client = CallEnd(cpeer["pid"] if cpeer else (sess.pid if sess.role == "client" else None),
                         cpeer["exe"] if cpeer else (sess.exe if sess.role == "client" else None), sess.client_info)
        # where each end runs (container, namespaces) and, over the network, its address
        ends = {e.get("role"): e for e in sess.ends or ()}
        conn = sess.connection or {}
        for side, d in (("server", server), ("client", client)):
            e = ends.get(side)
            if e is not None:
                d.container, d.pid_ns, d.ns_pid, d.net_ns = (e.get(k) for k in ("container", "pid_ns", "ns_pid",
                                                                                  "net_ns"))
                if e.get("container"):  # named by its runtime (proc.container_info)
                    d.container_runtime, d.container_name, d.container_image, d.pod = (
                        e.get(k) for k in ("container_runtime", "container_name", "container_image", "pod"))
            if conn.get(side):
                d.address = conn[side]
    err = resp.error if resp is not None and resp.kind == "error" else None
    viol = _violations(timeline)
    status = c.status or "incomplete"
    rec = CallRecord(
        wall(req.ktime_ns), req.ktime_ns, c.id, c.session, c.direction, req.id, req.method, tool, args, status,
        status not in ("incomplete", "cancelled"), c.reason, resp.latency_ms if resp is not None else None,
        client, server, _result_summary(resp), err, att, list(procs.values()),
        _lineage(timeline, server_pid, parents, names), timeline, viol, "", sorted(live), c.end_ts,
        transport=sess.transport if sess is not None else None)
    rec.summary = summarize(rec)
    if live:
        rec.notes = [f"processes of this call were still running when the record was written: {sorted(live)}; "
                     "their later events carry this call id"]
    if c.dropped:
        rec.notes = rec.notes + [f"{sum(c.dropped.values())} more events of this call are not in its timeline "
                                 f"({', '.join(f'{n} {t}' for t, n in sorted(c.dropped.items()))}): each was "
                                 f"written on its own, with this call id"]
    return rec


def attribution_words(tl: list, call_id: str) -> str:
    """How much of a timeline is exact, and why the rest is not, in words."""
    if not tl:
        return ""
    n = {}
    for e in tl:
        n[e.attribution] = n.get(e.attribution, 0) + 1
    sure = n.get("exact", 0) + n.get("thread", 0) + n.get("wakeup", 0)
    if sure == len(tl):
        return f"attribution: all {len(tl)} events exact"
    why = []
    if n.get("argument"):
        why.append(f"{n['argument']} by argument (of the overlapping calls, only this one's arguments name "
                   "what they touched)")
    if n.get("ambiguous"):
        others = {c for e in tl if e.attribution == "ambiguous" for c in e.get("candidates") or () if c != call_id}
        why.append(f"{n['ambiguous']} ambiguous (shared with {len(others)} overlapping "
                   f"call{'s' if len(others) != 1 else ''}: the thread that did them served several)")
    if n.get("unknown"):
        why.append(f"{n['unknown']} unknown (their branch's fork was not seen)")
    return f"attribution: {sure} of {len(tl)} events exact; " + ", ".join(why)


def summarize(r: CallRecord) -> str:
    """What the application reported, against what the kernel saw."""
    if r.status == "ok":
        app = "completed successfully"
        if r.result and r.result.items is not UNSET:
            kinds = ", ".join(f"{n} {k}" for k, n in (r.result.content_types or {}).items())
            app += f" ({kinds or 'no content'}, {r.result.bytes} bytes)"
    elif r.status == "tool_error":
        app = "the tool reported an error (isError)"
    elif r.status == "error":
        e = r.error if isinstance(r.error, dict) else {}
        app = f"JSON-RPC error {e.get('code')}: {str(e.get('message'))[:80]}"
    elif r.status == "input_required":
        app = "asked the client for input (input_required)"
    else:
        app = f"{r.status}: {r.incomplete_reason}"
    if not r.server or not r.server.tracked:
        return f"{app} / the server process is not tracked: no kernel view"
    tl = r.timeline
    parts = []
    opens = [e for e in tl if e.type == "open"]
    if opens:
        s = f"{len(opens)} file{'s' if len(opens) != 1 else ''} opened"
        extra = []
        n = sum(1 for e in opens if e.get("sensitive"))
        if n:
            extra.append(f"{n} sensitive")
        n = sum(1 for e in opens if e.get("risk") not in (None, "read"))
        if n:
            extra.append(f"{n} for writing")
        n = sum(1 for e in opens if e.get("outside_roots"))
        if n:
            extra.append(f"{n} outside the declared roots")
        n = sum(1 for e in opens if e.get("error"))
        if n:
            extra.append(f"{n} failed")
        parts.append(s + (f" ({', '.join(extra)})" if extra else ""))
    execs = [e for e in tl if e.type == "exec" and not e.get("error")]
    if execs:
        names = ", ".join(dict.fromkeys(os.path.basename(e.file) for e in execs))
        parts.append(f"{len(execs)} program{'s' if len(execs) != 1 else ''} run: {names}")
    forks = [e for e in tl if e.type == "fork"]
    if forks and not execs:
        parts.append(f"{len(forks)} subprocess{'es' if len(forks) != 1 else ''}")
    conns = [e for e in tl if e.type == "connect"]
    if conns:
        dests = ", ".join(dict.fromkeys(
            (e.get("unix_path") or f"{e.get('address')}:{e.get('port')}")
            + (" (in progress, outcome not seen)" if e.get("error") == "EINPROGRESS"
               else f" ({e.error})" if e.get("error") else "")
            for e in conns))
        parts.append(f"{len(conns)} connect{'s' if len(conns) != 1 else ''}: {dests}")
    pol = [e for e in tl if e.type == "policy"]
    if pol:
        n = {a: sum(1 for e in pol if e.action == a)
             for a in ("denied", "killed", "kill_failed", "monitor", "reported")}
        words = {"denied": "refused", "killed": "stopped by SIGKILL", "kill_failed": "NOT stopped (SIGKILL failed)",
                 "monitor": "would be refused (monitor)", "reported": "against policy, not refusable"}
        parts.append("policy: " + ", ".join(f"{v} {words[k]}" for k, v in n.items() if v))
    doubt = attribution_words(tl, r.call_id)
    if doubt:
        parts.append(doubt)
    if r.still_running:
        parts.append(f"still running: {', '.join(map(str, r.still_running))}")
    return f"{app} / " + ("; ".join(parts) if parts else "no file, process or network activity")
