"""Records -> text for a terminal (`mcpwitness calls`, `show`, `sessions`, `alerts`)."""
from __future__ import annotations

import json


def _utc(t: str | None) -> str:
    """ISO UTC -> 'YYYY-MM-DD HH:MM:SS.mmm' UTC, compact."""
    if not t:
        return "-"
    return t[:10] + " " + t[11:23]


def _short(v, n: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return s if len(s) <= n else s[: n - 1] + "…"


def calls_table(rows) -> str:
    if not rows:
        return "no calls recorded (match)"
    head = f"{'TIME (UTC)':23}  {'CALL':12}  {'SERVER':18}  {'TOOL / METHOD':28}  {'STATUS':12}  {'MS':>8}  " \
           f"{'ATTRIBUTION':16}  {'EXACT':>9}  {'!':>2}  {'PRINCIPAL':28}  SUMMARY"
    lines = [head]
    for r in rows:
        what = r["tool"] if r["tool"] else r["method"] or "?"
        if r["tool"] and r["method"] != "tools/call":
            what = f"{r['method']} {r['tool']}"
        server = r["server_name"] or (r["server_exe"] or "").rsplit("/", 1)[-1] or "?"
        ms = f"{r['latency_ms']:.1f}" if r["latency_ms"] is not None else "-"
        summary = (r["summary"] or "").split(" / ", 1)[-1]
        lines.append(f"{_utc(r['time']):23}  {r['call_id']:12}  {_short(server, 18):18}  {_short(what, 28):28}  "
                     f"{r['status']:12}  {ms:>8}  {_short(r['quality'] or '-', 16):16}  {_exact_share(r):>9}  "
                     f"{r['violations'] or '':>2}  {_short(_col(r, 'principal') or '-', 28):28}  "
                     f"{_short(summary, 70)}")
    return "\n".join(lines)


def _col(row, name: str):
    try:
        return row[name]
    except (KeyError, IndexError):   # a store from before the column
        return None


def _exact_share(row) -> str:
    """EXACT: how many of the call's kernel events are exact (or by thread or wake-up evidence), of all."""
    try:
        att = json.loads(row["record"]).get("attribution") or {}
    except (KeyError, TypeError, ValueError):
        return "?"
    n = att.get("events") or sum(att.get(k, 0) for k in ("exact", "thread", "wakeup", "argument", "ambiguous",
                                                          "unknown"))
    return f"{att.get('exact', 0) + att.get('thread', 0) + att.get('wakeup', 0)}/{n}" if n else "-"


def _event_line(e: dict) -> str:
    t = e["type"]
    who = f"{e['pid']}/{e['tid']} {e['comm']}"
    if t == "open":
        what = f"open   {e.get('path')}{' (' + e['via'] + ')' if e.get('via') else ''}  [{e.get('risk')}{', ' + e['sensitive'] if e.get('sensitive') else ''}" \
               f"{', outside roots' if e.get('outside_roots') else ''}]" \
               + (f"  -> {e['error']}" if e.get("error") else f"  -> fd {e.get('fd')}")
    elif t == "exec":
        argv = " ".join(e.get("argv") or []).replace("\n", "\\n")
        what = f"exec   {e.get('file')}  {_short(argv, 80)}" \
               + (f"  [{e['category']}]" if e.get("category") else "") + (f"  -> {e['error']}" if e.get("error") else "")
    elif t == "connect":
        dest = e.get("unix_path") or f"{e.get('address')}:{e.get('port')}"
        what = f"connect {dest}" + (f" ({e['via']})" if e.get("via") else "") \
               + (f"  [{e['scope']}]" if e.get("scope") else "") \
               + (f"  -> {e['error']}" if e.get("error") else "  -> ok")
    elif t == "policy":
        what = f"POLICY {e.get('action').upper()} {e.get('check')} " \
               + (e.get("path") or f"{e.get('address')}:{e.get('port')}") \
               + (f" ({', '.join(e['access'])})" if e.get("access") else "") \
               + f"  by {e.get('mechanism')}" + (f"  -> {e['errno']}" if e.get("errno") else "") \
               + f"\n{'':>42}rule {e.get('rule') or e.get('rule_id')}"
    elif t == "fork":
        what = f"fork   -> child {e.get('child_pid')}"
    elif t == "exit":
        what = f"exit   {('signal ' + e['signal']) if e.get('signal') else 'code ' + str(e.get('exit_code'))}"
    else:
        what = t
    att = e.get("attribution", "?")
    if e.get("candidates"):
        att += f" of {len(e['candidates'])}: {', '.join(e['candidates'][:4])}" + ("…" if len(e["candidates"]) > 4 else "")
    return f"  {e['t_ms']:>10.3f} ms  {who:24}  {what}   ({att})"


def _ambiguous_groups(tl: list, call_id: str) -> list[str]:
    """The ambiguous events, grouped by the calls they are shared with."""
    groups: dict[tuple, list] = {}
    for e in tl:
        if e.get("attribution") == "ambiguous":
            groups.setdefault(tuple(c for c in e.get("candidates") or () if c != call_id), []).append(e)
    if not groups:
        return []
    out = ["", f"  ambiguous ({sum(map(len, groups.values()))} events): timing and threads could not tell these "
               "calls apart, and no single one's arguments name what the event touched"]
    for others, evs in sorted(groups.items(), key=lambda g: -len(g[1])):
        kinds: dict[str, int] = {}
        for e in evs:
            kinds[e["type"]] = kinds.get(e["type"], 0) + 1
        out.append(f"    shared with {', '.join(others) or '?'}: "
                   + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        for e in evs[:5]:
            out.append(f"      {e['t_ms']:>10.3f} ms  {e['type']:7} "
                       + _short(e.get("path") or e.get("file") or e.get("unix_path")
                                or (f"{e.get('address')}:{e.get('port')}" if e.get("address") else "")
                                or (f"child {e.get('child_pid')}" if e.get("child_pid") else ""), 90))
        if len(evs) > 5:
            out.append(f"      ... {len(evs) - 5} more")
    return out


def principal_lines(p: dict | None, indent: str = "  principal ") -> list[str]:
    """Who the client is, observed, with what it declared beside it."""
    if not isinstance(p, dict) or not p.get("id"):
        return []
    pad = " " * len(indent)
    out = [f"{indent}{p['id']}  ({p.get('kind')}: {p.get('source')})"]
    if p.get("kind") == "jwt":
        c = p.get("claims") or {}
        out.append(f"{pad}claims " + ", ".join(f"{k} {json.dumps(v)}" for k, v in c.items()))
        out.append(f"{pad}{p.get('verification')}" + ("   EXPIRED" if p.get("expired") else ""))
    elif p.get("fingerprint"):
        out.append(f"{pad}credential fingerprint {p['fingerprint']}" + (f", user {p['user']}" if p.get("user") else ""))
    if p.get("pid") is not None:
        who = p.get("user") or f"uid {p.get('uid')}"
        out.append(f"{pad}pid {p['pid']}  {who} (uid {p.get('uid')}, gid {p.get('gid')})  {p.get('app') or p.get('exe') or ''}"
                   + (f"  sha256 {p['exe_sha256'][:16]}…" if p.get("exe_sha256") else ""))
        if p.get("container"):
            c = p["container"]
            out.append(f"{pad}container {c.get('name') or '-'} ({c.get('runtime') or '?'} {(c.get('id') or '')[:12]}) "
                       f"image {c.get('image') or '-'}")
        if p.get("chain"):
            out.append(f"{pad}chain " + " <- ".join(
                f"{e.get('pid')} {e.get('exe') or e.get('comm')}" for e in p["chain"]))
    if p.get("address"):
        out.append(f"{pad}from {p['address']}")
    if p.get("declared"):
        d = p["declared"]
        out.append(f"{pad}declares {d.get('name', '?')} {d.get('version', '')}".rstrip())
    return out


def call_timeline(r: dict, later: list | None = None) -> str:
    out = []
    what = r.get("tool") or ""
    out.append(f"call {r['call_id']}  {r.get('method')} {what}".rstrip())
    out.append(f"  time      {_utc(r.get('time'))} UTC   session {r.get('session')}   request id {r.get('request_id')}")
    srv, cli = r.get("server") or {}, r.get("client") or {}
    si = srv.get("info") or {}
    ci = cli.get("info") or {}
    out.append(f"  server    {si.get('name', '?')} {si.get('version', '')}".rstrip()
               + f"  pid {srv.get('pid')}  {' '.join(srv.get('cmdline') or []) or srv.get('exe') or ''}"
               + ("" if srv.get("tracked") else "  (not tracked: no kernel view)"))
    out.append(f"  client    {ci.get('name', '?')} {ci.get('version', '')}".rstrip() + f"  pid {cli.get('pid')}"
               + (f"  {cli.get('exe')}" if cli.get("exe") else ""))
    out += principal_lines(r.get("principal"))
    if r.get("transport") not in (None, "stdio"):
        where = f"  {cli.get('address')} -> {srv.get('address')}" if srv.get("address") else ""
        out.append(f"  transport {r['transport']}{where}")
    for who, d in (("server", srv), ("client", cli)):
        if d.get("container") or (d.get("ns_pid") not in (None, d.get("pid"))):
            out.append(f"  {who:9} runs in container {d.get('container') or '-'}, pid {d.get('ns_pid')} in its "
                       f"PID namespace {d.get('pid_ns')}, network namespace {d.get('net_ns')}")
    if r.get("arguments") is not None:
        out.append(f"  arguments {_short(r['arguments'], 200)}")
    lat = f"{r['latency_ms']:.3f} ms" if r.get("latency_ms") is not None else "-"
    out.append(f"  status    {r.get('status')}   latency {lat}"
               + (f"   ({r['incomplete_reason']})" if r.get("incomplete_reason") else ""))
    if r.get("result"):
        out.append(f"  result    {_short(r['result'], 200)}")
    if r.get("error"):
        out.append(f"  error     {_short(r['error'], 200)}")
    att = r.get("attribution") or {}
    out.append(f"  attribution {att.get('quality')}"
               + "".join(f"  {k} {v}" for k, v in att.items() if k not in ("quality", "thread_evidence")))
    if att.get("thread_evidence"):
        out.append(f"            ({att['thread_evidence']})")
    for chain in r.get("lineage") or []:
        out.append(f"  lineage   {chain}")
    out.append(f"  summary   {r.get('summary')}")
    tl = r.get("timeline") or []
    out.append("")
    out.append(f"  timeline ({len(tl)} kernel events, ms from the server's read of the request)")
    out += [_event_line(e) for e in tl] or ["    (none)"]
    out += _ambiguous_groups(tl, r["call_id"])
    if later:
        out.append(f"  after the record was written ({len(later)}):")
        for ev in later:
            out.append(f"    {ev.get('time')}  {ev.get('type')}  pid {ev.get('pid')}  "
                       f"{ev.get('resolved') or ev.get('path') or ev.get('exe') or ev.get('address') or ''}")
    if r.get("violations"):
        out.append("")
        out.append("  violations")
        for v in r["violations"]:
            out.append(f"    {v['kind']}: {v['detail']}" + ("" if v.get("certain", True) else "  (ambiguous)"))
    if r.get("still_running"):
        out.append(f"  still running when written: {', '.join(map(str, r['still_running']))}")
    return "\n".join(out)




def sessions_table(recs: list[dict]) -> str:
    """Who talked to whom: one block per session."""
    if not recs:
        return "no sessions recorded (match)"
    out = []
    for r in recs:
        ci, si = r.get("client_info") or {}, r.get("server_info") or {}
        conn = r.get("connection") or {}
        state = "ended" if r.get("event") == "end" else "open"
        out.append(f"{_utc(r.get('time')):23}  {r.get('session')}  {r.get('transport')}  {state}  "
                   f"{r.get('messages', 0)} messages, {r.get('unanswered', 0)} unanswered  "
                   f"era {r.get('era') or '?'} {r.get('protocol_version') or ''}".rstrip())
        info = {"client": ci, "server": si}
        ends = {e.get("role"): e for e in r.get("ends") or ()}
        for role in ("client", "server"):
            e = ends.get(role)
            name = f"{info[role].get('name', '?')} {info[role].get('version', '')}".rstrip() if info[role] else "?"
            addr = conn.get(role)
            if e is None:
                out.append(f"  {role:7} {name}" + (f"  {addr}" if addr else "") + "  (process not tracked)")
                continue
            where = []
            if e.get("container"):
                where.append(f"container {e['container'][:12]}")
            if e.get("ns_pid") not in (None, e.get("pid")):
                where.append(f"pid {e['ns_pid']} in pid ns {e.get('pid_ns')}")
            if addr:
                where.append(f"{addr} (net ns {e.get('net_ns')})")
            cmd = " ".join(e.get("cmdline") or []) or e.get("exe") or ""
            out.append(f"  {role:7} {name}  pid {e.get('pid')}  {_short(cmd, 70)}"
                       + (f"  [{', '.join(where)}]" if where else ""))
        out += principal_lines(r.get("principal"), "  principal ")
    return "\n".join(out)


def alerts_table(recs: list[dict]) -> str:
    if not recs:
        return "no alerts recorded (match)"
    lines = [f"{'TIME (UTC)':23}  {'PRIORITY':13}  {'CALL':12}  {'RULE':38}  {'COUNT':>5}  {'PRINCIPAL':28}  OUTPUT"]
    for a in recs:
        lines.append(f"{_utc(a.get('time')):23}  {a.get('priority') or '-':13}  {a.get('call_id') or '-':12}  "
                     f"{_short(a.get('rule') or '?', 38):38}  {a.get('count') or 1:>5}  "
                     f"{_short(a.get('principal') or '-', 28):28}  {_short(a.get('output') or '', 110)}")
    return "\n".join(lines)
