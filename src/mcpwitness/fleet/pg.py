"""The central store: PostgreSQL (psycopg 3). Versioned schema migrations, the
collector's idempotent inserts, and a connection adapter that lets the query
commands (output/store.py's list_calls, get_call, list_sessions, list_alerts)
and the web timeline run on it as they run on SQLite.

Tables mirror the local store's (calls, events, sessions, alerts, other),
plus `rid` (the published record's id: unique, so a redelivery never makes a
second row) and `host` (the publishing host's hostname, machine id and boot
id: `host`, `machine_id`, `boot_id`).
"""
from __future__ import annotations

import json
import re

from ..output.store import wall_of

# each migration once, in order, recorded in schema_migrations (version, applied)
MIGRATIONS = [
    (1, """
CREATE TABLE IF NOT EXISTS calls (
    id BIGSERIAL PRIMARY KEY, rid TEXT NOT NULL UNIQUE, host TEXT NOT NULL, machine_id TEXT, boot_id TEXT,
    call_id TEXT NOT NULL, wall DOUBLE PRECISION, time TEXT, session TEXT, method TEXT, tool TEXT, status TEXT,
    latency_ms DOUBLE PRECISION, quality TEXT, violations INTEGER, server_name TEXT, server_exe TEXT,
    server_cmd TEXT, server_pid INTEGER, summary TEXT, record TEXT, principal TEXT,
    UNIQUE (machine_id, call_id));
CREATE INDEX IF NOT EXISTS calls_wall ON calls (wall);
CREATE INDEX IF NOT EXISTS calls_host_wall ON calls (host, wall);
CREATE INDEX IF NOT EXISTS calls_call_id ON calls (call_id text_pattern_ops);
CREATE INDEX IF NOT EXISTS calls_tool ON calls (tool);
CREATE INDEX IF NOT EXISTS calls_principal ON calls (principal);
CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY, rid TEXT NOT NULL UNIQUE, host TEXT NOT NULL, machine_id TEXT, boot_id TEXT,
    wall DOUBLE PRECISION, type TEXT, pid INTEGER, call_id TEXT, quality TEXT, record TEXT);
CREATE INDEX IF NOT EXISTS events_call ON events (call_id);
CREATE TABLE IF NOT EXISTS sessions (
    id BIGSERIAL PRIMARY KEY, rid TEXT NOT NULL UNIQUE, host TEXT NOT NULL, machine_id TEXT, boot_id TEXT,
    wall DOUBLE PRECISION, session TEXT, event TEXT, record TEXT, principal TEXT);
CREATE INDEX IF NOT EXISTS sessions_session ON sessions (session);
CREATE TABLE IF NOT EXISTS alerts (
    id BIGSERIAL PRIMARY KEY, rid TEXT NOT NULL UNIQUE, host TEXT NOT NULL, machine_id TEXT, boot_id TEXT,
    wall DOUBLE PRECISION, rule TEXT, priority TEXT, call_id TEXT, session TEXT, record TEXT, principal TEXT);
CREATE INDEX IF NOT EXISTS alerts_call ON alerts (call_id);
CREATE INDEX IF NOT EXISTS alerts_wall ON alerts (wall);
CREATE TABLE IF NOT EXISTS other (
    id BIGSERIAL PRIMARY KEY, rid TEXT NOT NULL UNIQUE, host TEXT NOT NULL, machine_id TEXT, boot_id TEXT,
    wall DOUBLE PRECISION, type TEXT, record TEXT);
"""),
]
KERNEL = {"fork", "exec", "exit", "open", "connect", "policy"}


def migrate(conn) -> list[int]:
    """Apply the migrations this database lacks, each in its own transaction; returns the versions applied."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7217390512)")   # two collectors starting at once
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied TIMESTAMPTZ NOT NULL DEFAULT now())")
        have = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    done = []
    for version, sql in MIGRATIONS:
        if version in have:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7217390512)")
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            done.append(version)
    return done


def rows_of(envelope: dict) -> tuple[str, tuple]:
    """(table, row) for one published envelope {id, host, type, record}."""
    rid, host, t, r = envelope["id"], envelope.get("host") or {}, envelope.get("type"), envelope["record"]
    js = json.dumps(r, separators=(",", ":"))
    base = (rid, host.get("hostname") or "?", host.get("machine_id"), host.get("boot_id"))
    w = wall_of(r.get("time"))
    if t == "call":
        srv = r.get("server") or {}
        info = srv.get("info") if isinstance(srv.get("info"), dict) else {}
        p = r.get("principal") if isinstance(r.get("principal"), dict) else {}
        att = r.get("attribution") or {}
        return "calls", base + (r["call_id"], w, r.get("time"), r.get("session"), r.get("method"), r.get("tool"),
                                r.get("status"), r.get("latency_ms"), att.get("quality"),
                                len(r.get("violations") or ()), info.get("name"), srv.get("exe"),
                                " ".join(srv.get("cmdline") or []), srv.get("pid"), r.get("summary"), js, p.get("id"))
    if t in KERNEL:
        a = r.get("attribution") or {}
        return "events", base + (w, t, r.get("pid"), a.get("call"), a.get("quality"), js)
    if t == "session":
        p = r.get("principal") if isinstance(r.get("principal"), dict) else {}
        return "sessions", base + (w, r.get("session"), r.get("event"), js, p.get("id"))
    if t == "alert":
        return "alerts", base + (w, r.get("rule"), r.get("priority"), r.get("call_id"), r.get("session"), js,
                                 r.get("principal"))
    return "other", base + (w, t, js)


COLUMNS = {
    "calls": "rid, host, machine_id, boot_id, call_id, wall, time, session, method, tool, status, latency_ms, "
             "quality, violations, server_name, server_exe, server_cmd, server_pid, summary, record, principal",
    "events": "rid, host, machine_id, boot_id, wall, type, pid, call_id, quality, record",
    "sessions": "rid, host, machine_id, boot_id, wall, session, event, record, principal",
    "alerts": "rid, host, machine_id, boot_id, wall, rule, priority, call_id, session, record, principal",
    "other": "rid, host, machine_id, boot_id, wall, type, record",
}


def insert(conn, envelopes: list[dict]) -> int:
    """Insert a batch in the caller's transaction; a row whose rid (or call) is
    already there is left alone. Returns the rows inserted."""
    by: dict[str, list] = {}
    for e in envelopes:
        t, row = rows_of(e)
        by.setdefault(t, []).append(row)
    n = 0
    with conn.cursor() as cur:
        for t, rows in by.items():
            cols = COLUMNS[t]
            marks = ",".join(["%s"] * len(cols.split(",")))
            cur.executemany(f"INSERT INTO {t} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
            n += cur.rowcount      # psycopg 3: the rows all the statements inserted
    return n


# --- the query commands on PostgreSQL ---------------------------------------------

class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def __iter__(self):
        return iter(self.rows)


def glob_regex(pattern: str) -> str:
    """A shell glob (* ?) as an anchored PostgreSQL regular expression."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return "^" + "".join(out) + "$"


class Conn:
    """What output/store.py's queries ask of a sqlite3 connection, on PostgreSQL:
    execute(sql with ? placeholders, args) -> rows addressable by column name.
    GLOB becomes a regular expression match. `dialect` tells the queries where
    they differ (the host column exists here)."""
    dialect = "postgresql"

    def __init__(self, dsn: str):
        import psycopg
        from psycopg.rows import dict_row
        self.pg = psycopg.connect(dsn, row_factory=dict_row, autocommit=True)
        self.pg.execute("SET default_transaction_read_only = on")

    def execute(self, sql: str, args=()):
        args = list(args)
        out, parts = [], sql.split("?")
        for k, part in enumerate(parts[:-1]):
            if part.rstrip().endswith("GLOB"):
                part = part.rstrip()[:-4] + "~ "
                args[k] = glob_regex(args[k])
            out.append(part + "%s")
        out.append(parts[-1])
        return _Rows(self.pg.execute("".join(out), args).fetchall())

    def close(self) -> None:
        self.pg.close()


def connect(dsn: str) -> Conn:
    return Conn(dsn)
