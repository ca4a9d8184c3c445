"""`mcpwitness ui`: the web timeline, served from the store (docs/ui.md).

A small read-only JSON API over output/store.py's queries, and the static
front end in ui/static (plain JavaScript, no build step, no CDN). The store
is opened read-only for every request, so the UI runs beside a `watch` that
writes the same file. Safe by default:

- it binds to loopback unless told otherwise, and then only with a token;
- with a token, every request carries it (`Authorization: Bearer`, or the
  `mcpwitness_ui` cookie the first `?token=` page load sets), compared in
  constant time;
- a request whose Host is not the address it was bound to is refused (DNS
  rebinding: a web page in the user's browser cannot read the API through a
  name that resolves to 127.0.0.1);
- a strict Content-Security-Policy (scripts and styles from this origin only),
  and the front end writes recorded data as text, never as HTML: tool
  arguments and answers are attacker-controlled.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import sqlite3
from collections import Counter

import msgspec

from ..output.store import HOST_FILTER, principal_filter, connect, get_call, list_alerts, list_sessions, parse_since

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "mcpwitness_ui"
KINDS = ("open", "exec", "connect", "fork", "exit", "policy")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class UiError(ValueError):
    """A configuration the UI refuses to start with."""


def is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(addr: str, token: str | None) -> None:
    if not is_loopback(addr) and not token:
        raise UiError(f"refusing to serve on {addr}: not a loopback address, and no --token. The UI shows what "
                      "tools were asked and answered; off loopback it needs a token (--token or "
                      "MCPWITNESS_UI_TOKEN), and the network path should be TLS (a reverse proxy)")
    if token is not None and len(token) < 16:
        raise UiError("--token: at least 16 characters")


# --- the data ---------------------------------------------------------------------

def _db(path: str) -> sqlite3.Connection:
    if path.startswith(("postgresql://", "postgres://")):   # a fleet's central store (fleet/pg.py)
        from ..fleet.pg import connect as pg_connect
        return pg_connect(path)
    return connect(path, readonly=True)


def _counts(record: dict) -> dict:
    c = Counter(e.get("type") for e in record.get("timeline") or ())
    return {k: c[k] for k in KINDS if c[k]}


def call_rows(path: str, q: dict) -> dict:
    """The calls a filter names, newest first, as rows for the list; `after` (a
    store wall time) gives only the newer ones (the page's live refresh)."""
    db = _db(path)
    try:
        sql, args = "SELECT * FROM calls WHERE 1=1", []
        if q.get("server"):
            sql += " AND (server_name LIKE ? OR server_exe LIKE ? OR server_cmd LIKE ?)"
            args += [f"%{q['server']}%"] * 3
        if q.get("tool"):
            sql += " AND (tool LIKE ? OR method LIKE ?)"
            args += [f"%{q['tool']}%"] * 2
        if q.get("status"):
            sql += " AND status = ?"
            args.append(q["status"])
        if q.get("principal"):
            s2, a2 = principal_filter(q["principal"])
            sql, args = sql + s2, args + a2
        if q.get("host"):   # a central store
            sql += HOST_FILTER
            args += [q["host"], q["host"]]
        for key, op in (("since", ">="), ("until", "<=")):
            if q.get(key):
                sql += f" AND wall {op} ?"
                args.append(parse_since(q[key]))
        if q.get("after"):
            sql += " AND wall > ?"
            args.append(float(q["after"]))
        if q.get("violations"):
            sql += " AND violations > 0"
        if q.get("alerts"):
            sql += " AND call_id IN (SELECT call_id FROM alerts WHERE call_id IS NOT NULL)"
        sql += " ORDER BY wall DESC LIMIT ?"
        args.append(min(int(q.get("limit") or 200), 2000))
        rows = db.execute(sql, args).fetchall()
        ids = [r["call_id"] for r in rows]
        alerts: Counter = Counter()
        if ids:
            marks = ",".join("?" * len(ids))
            for r in db.execute(f"SELECT call_id, COUNT(*) AS n FROM alerts WHERE call_id IN ({marks}) "
                                "GROUP BY call_id", ids):
                alerts[r["call_id"]] = r["n"]
        out = []
        for r in rows:
            rec = json.loads(r["record"])
            att = rec.get("attribution") or {}
            out.append({"call_id": r["call_id"], "time": r["time"], "wall": r["wall"], "method": r["method"],
                        "tool": r["tool"], "status": r["status"], "latency_ms": r["latency_ms"],
                        "quality": r["quality"], "violations": r["violations"], "alerts": alerts[r["call_id"]],
                        "server": r["server_name"] or os.path.basename(r["server_exe"] or "") or None,
                        "principal": r["principal"], "events": _counts(rec),
                        "exact": sum(att.get(k, 0) for k in ("exact", "thread", "wakeup")),
                        "events_total": att.get("events") or 0, "summary": r["summary"]})
        newest = db.execute("SELECT MAX(wall) AS w FROM calls").fetchone()["w"]
        return {"calls": out, "newest": newest}
    finally:
        db.close()


def call_detail(path: str, call_id: str) -> dict:
    """One call: its record, the events attributed to it after the record was
    written, its alerts, and the other calls its ambiguous events name."""
    db = _db(path)
    try:
        rec, later = get_call(db, call_id)
        alerts = list_alerts(db, call=rec["call_id"], limit=500)
        cands = sorted({c for e in rec.get("timeline") or () for c in e.get("candidates") or ()
                        if c != rec["call_id"]})
        named = {}
        for c in cands[:200]:
            row = db.execute("SELECT call_id, tool, method, time FROM calls WHERE call_id = ?", (c,)).fetchone()
            named[c] = dict(row) if row else None
        return {"record": rec, "later": later, "alerts": alerts, "candidates": named}
    finally:
        db.close()


def graph(path: str, since: str | None = None) -> dict:
    """Who talked to whom: clients (by principal) and servers as nodes, one
    edge per pair with its sessions, calls, transports, containers and
    addresses; a pair is new where `New client-server pair` said so."""
    db = _db(path)
    try:
        sessions = list_sessions(db, since=parse_since(since) if since else None, limit=2000)
        new = {r["session"] for r in db.execute("SELECT session FROM alerts WHERE rule = 'New client-server pair'")}
        calls = Counter(r["session"] for r in db.execute("SELECT session FROM calls"))
        nodes, edges = {}, {}
        for s in sessions:
            ci, si = s.get("client_info") or {}, s.get("server_info") or {}
            ends = {e.get("role"): e for e in s.get("ends") or ()}
            p = s.get("principal") or {}
            client = p.get("id") or ci.get("name") or (ends.get("client") or {}).get("exe") or "unknown client"
            server = si.get("name") or os.path.basename((ends.get("server") or {}).get("exe") or s.get("exe") or "") \
                or "unknown server"
            cid, sid = "c:" + client, "s:" + server
            nodes.setdefault(cid, {"id": cid, "kind": "client", "label": client, "declared": set(), "containers": set()})
            nodes.setdefault(sid, {"id": sid, "kind": "server", "label": server, "exe": set(), "containers": set()})
            if ci.get("name"):
                nodes[cid]["declared"].add(ci["name"])
            if (ends.get("server") or {}).get("exe"):
                nodes[sid]["exe"].add(ends["server"]["exe"])
            for role, nid in (("client", cid), ("server", sid)):
                c = (ends.get(role) or {}).get("container_name") or (ends.get(role) or {}).get("container")
                if c:
                    nodes[nid]["containers"].add(c[:24])
            e = edges.setdefault((cid, sid), {"client": cid, "server": sid, "sessions": 0, "calls": 0,
                                              "transports": set(), "addresses": set(), "new": False, "last": ""})
            e["sessions"] += 1
            e["calls"] += calls[s.get("session")]
            e["transports"].add(s.get("transport") or "?")
            conn = s.get("connection") or {}
            if conn.get("client"):
                e["addresses"].add(f"{conn.get('client')} -> {conn.get('server')}")
            e["new"] = e["new"] or s.get("session") in new
            e["last"] = max(e["last"], s.get("time") or "")
        def plain(d):
            return {k: sorted(v) if isinstance(v, set) else v for k, v in d.items()}
        return {"nodes": [plain(n) for n in nodes.values()], "edges": [plain(e) for e in edges.values()]}
    finally:
        db.close()


def alert_rows(path: str, q: dict) -> list:
    db = _db(path)
    try:
        return list_alerts(db, since=parse_since(q["since"]) if q.get("since") else None, rule=q.get("rule"),
                           priority=q.get("priority"), principal=q.get("principal"),
                           limit=min(int(q.get("limit") or 200), 2000))
    finally:
        db.close()


# --- the web app ----------------------------------------------------------------------

def make_app(db_path: str, token: str | None = None, hosts: tuple = ()):
    """The ASGI app (Starlette). hosts: the Host header values accepted."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    enc = msgspec.json.Encoder()

    def js(data, status=200):
        return Response(enc.encode(data), status_code=status, media_type="application/json")

    def guard(fn):
        def wrapped(request):
            try:
                return fn(request)
            except KeyError as e:
                return JSONResponse({"error": str(e).strip("'\"")}, status_code=404)
            except ValueError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            except (sqlite3.Error, FileNotFoundError) as e:
                return JSONResponse({"error": f"the store: {e}"}, status_code=503)
        return wrapped

    @guard
    def api_calls(request):
        return js(call_rows(db_path, dict(request.query_params)))

    @guard
    def api_call(request):
        return js(call_detail(db_path, request.path_params["call_id"]))

    @guard
    def api_graph(request):
        return js(graph(db_path, request.query_params.get("since")))

    @guard
    def api_alerts(request):
        return js(alert_rows(db_path, dict(request.query_params)))

    def index(request):
        return FileResponse(os.path.join(STATIC, "index.html"))

    routes = [Route("/", index), Route("/api/calls", api_calls), Route("/api/calls/{call_id}", api_call),
              Route("/api/graph", api_graph), Route("/api/alerts", api_alerts),
              Mount("/static", StaticFiles(directory=STATIC))]
    app = Starlette(routes=routes)
    return _Guard(app, token, hosts)


class _Guard:
    """ASGI middleware: the Host check, the token, the security headers, GET only."""

    def __init__(self, app, token: str | None, hosts: tuple):
        self.app, self.token, self.hosts = app, token, {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        status, why, set_cookie = None, None, None
        if scope["method"] not in ("GET", "HEAD"):
            status, why = 405, "read-only: GET only"
        elif self.hosts and headers.get("host", "").lower() not in self.hosts:
            status, why = 421, "unexpected Host header"
        elif self.token is not None:
            given = None
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            for part in headers.get("cookie", "").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE and given is None:
                    given = v
            from urllib.parse import parse_qs
            q = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if given is None and q:
                given = q[0]
                set_cookie = f"{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict"
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                status, why = 401, "a token is needed (Authorization: Bearer TOKEN, or ?token=TOKEN once)"
        if status is not None:
            body = json.dumps({"error": why}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]
                        + [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                hs = list(msg.get("headers") or [])
                hs += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                if set_cookie:
                    hs.append((b"set-cookie", set_cookie.encode()))
                msg = dict(msg, headers=hs)
            await send(msg)
        await self.app(scope, receive, send_with_headers)


def serve(db_path: str, addr: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          quiet: bool = False) -> None:
    check_bind(addr, token)
    if not db_path.startswith(("postgresql://", "postgres://")) and not os.path.exists(db_path):
        raise UiError(f"no store at {db_path} (run or watch with --db writes one)")
    import uvicorn
    host = addr.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    hosts = {f"{shown}:{port}"}
    if is_loopback(host):
        hosts |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    app = make_app(db_path, token, tuple(hosts))
    if not quiet:
        print(f"mcpwitness ui: http://{shown}:{port}/" + ("?token=..." if token else "") +
              f"  (store {db_path.split('@')[-1]}, read-only)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
