"""The embedded store: records in SQLite, no server to run.

One writer thread takes what the agent writes, in batches (one transaction
per batch: every ~200 ms or 2000 records). WAL journal with synchronous=NORMAL: a
crash of the agent (even SIGKILL) loses at most the batch being written and
leaves a database that opens and reads. Retention: records older than
max_age and, past max_bytes, the oldest records are deleted (every minute,
and at start), the space given back with incremental vacuum.

Tables: calls (one row per call record, the record as JSON plus the columns
the filters use), events (kernel events with the call they are attributed
to), messages, sessions, alerts (detect.py's, with their call and session),
other (start, stats, discovery, non-JSON...).
"""
from __future__ import annotations

import calendar
import json
import os
import queue
import sqlite3
import threading
import time

import msgspec

from ..records import KERNEL_TAGS
from ..util import now_iso
from .chain import ZERO, ledger_body, link, record_digest
from .jsonl import open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY, wall REAL, time TEXT, session TEXT, method TEXT, tool TEXT, status TEXT,
    latency_ms REAL, quality TEXT, violations INTEGER, server_name TEXT, server_exe TEXT, server_cmd TEXT,
    server_pid INTEGER, summary TEXT, record TEXT, principal TEXT);
CREATE INDEX IF NOT EXISTS calls_wall ON calls(wall);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, wall REAL, type TEXT, pid INTEGER, call_id TEXT, quality TEXT, record TEXT);
CREATE INDEX IF NOT EXISTS events_call ON events(call_id);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, wall REAL, session TEXT, direction TEXT, kind TEXT, method TEXT, msg_id TEXT,
    record TEXT);
CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY, wall REAL, session TEXT, event TEXT, record TEXT,
    principal TEXT);
CREATE TABLE IF NOT EXISTS other (id INTEGER PRIMARY KEY, wall REAL, type TEXT, record TEXT);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, wall REAL, rule TEXT, priority TEXT, call_id TEXT, session TEXT, record TEXT,
    principal TEXT);
CREATE INDEX IF NOT EXISTS alerts_call ON alerts(call_id);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY, tbl TEXT, key TEXT, digest BLOB, chain BLOB, pruned INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS ledger_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER, chain BLOB, first_ids TEXT);
CREATE TABLE IF NOT EXISTS baselines (
    id INTEGER PRIMARY KEY CHECK (id = 1), saved TEXT, state BLOB);
"""
# baselines: what the detectors learned (rates, sizes, destinations...), saved now and then
# and at stop, read back at start. Not a record of what happened: outside the ledger.
# The ledger (output/chain.py): one row per stored row, in the order they were
# written, each chained to the one before; retention marks the entries of the
# rows it deletes (pruned) and folds the oldest into the anchor.
# Only the calls table is indexed by time: the others are appended in time
# order and read by call id or by retention (a scan once a minute). Records are
# stored as the JSON bytes already encoded for the JSON Lines file.
TABLES = ("calls", "events", "messages", "sessions", "other", "alerts")


_SECONDS: dict[str, int] = {}


def wall_of(t: str | None) -> float:
    """ISO 8601 UTC (as the records write it) -> Unix seconds."""
    if not t:
        return time.time()
    sec = _SECONDS.get(t[:19])
    if sec is None:
        try:
            sec = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return time.time()
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[t[:19]] = sec
    frac = t[19:].rstrip("Z")
    return sec + (float(frac) if frac.startswith(".") and frac[1:].isdigit() else 0.0)


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no database at {path}")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    else:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        fd = open_private(path, os.O_RDWR)  # payloads: private, never through a symbolic link
        os.close(fd)
        db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        for t in ("calls", "sessions", "alerts"):   # a store made before principals were recorded
            if "principal" not in {r[1] for r in db.execute(f"PRAGMA table_info({t})")}:
                db.execute(f"ALTER TABLE {t} ADD COLUMN principal TEXT")
    db.row_factory = sqlite3.Row
    return db


class Store:
    """A sink: write()/write_record()/close(), as sinks.py's."""

    def __init__(self, path: str, max_age: float = 7 * 86400, max_bytes: int = 1 << 30,
                 interval: float = 0.2, batch: int = 2000):
        self.path = path
        self.max_age, self.max_bytes = max_age, max_bytes
        self.interval, self.batch = interval, batch
        self.db = connect(path)
        self._ledger_start()
        self._enc = msgspec.json.Encoder()
        self._q: queue.Queue = queue.Queue()
        self.stats = {"written": 0, "batches": 0, "errors": 0, "deleted_by_retention": 0}
        self.errors: list[str] = []
        self._last_retention = 0.0  # the writer thread applies retention first
        self._t = threading.Thread(target=self._loop, name="mcpwitness-store", daemon=True)
        self._t.start()

    def write(self, records) -> None:
        records = list(records)
        if records:
            self._q.put([(r, None) for r in records])

    def write_encoded(self, records: list, encoded: list[bytes]) -> None:
        """records with their JSON, encoded once for every sink (TeeSink)."""
        if records:
            self._q.put(list(zip(records, encoded)))

    def write_record(self, record) -> None:
        self._q.put([(record, None)])

    def save_baselines(self, state: bytes) -> None:
        """The detectors' learned state (JSON), written by the writer thread after what came before."""
        self._q.put(("baselines", state))

    def close(self) -> None:
        self._q.put(None)
        self._t.join()
        self.db.close()

    # --- writer thread ----------------------------------------------------
    def _loop(self) -> None:
        done = False
        while not done:
            pending: list = []
            deadline = time.monotonic() + self.interval
            while len(pending) < self.batch:
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                if isinstance(item, tuple):     # ("baselines", state)
                    if pending:
                        self._commit(pending)
                        pending = []
                    self._save_baselines(item[1])
                    continue
                pending.extend(item)
            if pending:
                self._commit(pending)
            if time.monotonic() - self._last_retention > 60:
                self._retain()

    def _save_baselines(self, state: bytes) -> None:
        try:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO baselines (id, saved, state) VALUES (1, ?, ?)",
                                (now_iso(), state))
        except sqlite3.Error as e:
            self.stats["errors"] += 1
            self.errors = (self.errors + [f"baselines: {e}"])[-10:]

    def _ledger_start(self) -> None:
        """Where the ledger goes on from: its last link, and the next id of each table."""
        db = self.db
        self._next = {t: (db.execute(f"SELECT MAX(rowid) FROM {t}").fetchone()[0] or 0) + 1 for t in TABLES}
        last = db.execute("SELECT seq, chain FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        anchor = db.execute("SELECT seq, chain FROM ledger_anchor WHERE id = 1").fetchone()
        if anchor is None:
            # a store older than the ledger: its rows so far are outside it, and verify says so
            with db:
                db.execute("INSERT INTO ledger_anchor VALUES (1, 0, ?, ?)",
                           (ZERO, json.dumps({t: self._next[t] - 1 for t in TABLES})))
            anchor = (0, ZERO)
        self._head = bytes(last[1]) if last else bytes(anchor[1])
        self._seq = last[0] if last else anchor[0]

    def _commit(self, records: list) -> None:
        rows: dict[str, list] = {t: [] for t in TABLES}
        entries = []
        nxt, head, seq = dict(self._next), self._head, self._seq
        for r, js in records:
            try:
                t, key, js = self._row(r, rows, js, nxt)
            except Exception as e:  # a record that cannot be stored is counted, the rest still is
                self.stats["errors"] += 1
                self.errors = (self.errors + [f"{type(e).__name__}: {e}"])[-20:]
                continue
            d = record_digest(js)
            seq += 1
            head = link(head, ledger_body(t, key, d))
            entries.append((seq, t, key, d, head))
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT OR REPLACE INTO calls (call_id, wall, time, session, method, tool, "
                                    "status, latency_ms, quality, violations, server_name, server_exe, server_cmd, "
                                    "server_pid, summary, record, principal) "
                                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows["calls"])
                self.db.executemany("INSERT INTO events (id, wall, type, pid, call_id, quality, record) "
                                    "VALUES (?,?,?,?,?,?,?)", rows["events"])
                self.db.executemany("INSERT INTO messages (id, wall, session, direction, kind, method, msg_id, "
                                    "record) VALUES (?,?,?,?,?,?,?,?)", rows["messages"])
                self.db.executemany("INSERT INTO sessions (id, wall, session, event, record, principal) "
                                    "VALUES (?,?,?,?,?,?)", rows["sessions"])
                self.db.executemany("INSERT INTO other (id, wall, type, record) VALUES (?,?,?,?)", rows["other"])
                self.db.executemany("INSERT INTO alerts (id, wall, rule, priority, call_id, session, record, "
                                    "principal) VALUES (?,?,?,?,?,?,?,?)", rows["alerts"])
                self.db.executemany("INSERT INTO ledger (seq, tbl, key, digest, chain) VALUES (?,?,?,?,?)",
                                    entries)
            self._next, self._head, self._seq = nxt, head, seq
            self.stats["written"] += len(records)
            self.stats["batches"] += 1
        except sqlite3.Error as e:
            self.stats["errors"] += len(records)
            self.errors = (self.errors + [f"sqlite: {e}"])[-20:]

    def _row(self, r, rows: dict, js: bytes | None, nxt: dict) -> tuple[str, str, bytes]:
        """Add r's row; (table, its key in the ledger, its JSON)."""
        if js is None:
            js = self._enc.encode(r)

        def add(t, *cols):
            i = nxt[t]
            nxt[t] = i + 1
            rows[t].append((i, *cols))
            return t, str(i), js
        if isinstance(r, dict):  # a record built by hand (library users): by its type
            if r.get("type") == "alert":
                return add("alerts", wall_of(r.get("time")), r.get("rule"), r.get("priority"), r.get("call_id"),
                           r.get("session"), js, r.get("principal"))
            return add("other", wall_of(r.get("time")), r.get("type"), js)
        tag = type(r).__struct_config__.tag
        w = wall_of(r.time)
        if tag == "call":
            srv = r.server
            info = srv.info if srv is not None and isinstance(srv.info, dict) else {}
            cmdline = srv.cmdline if srv is not None and isinstance(srv.cmdline, list) else []
            rows["calls"].append((r.call_id, w, r.time, r.session, r.method, r.tool, r.status, r.latency_ms,
                                  r.attribution.quality, len(r.violations), info.get("name"),
                                  srv.exe if srv is not None else None, " ".join(cmdline),
                                  srv.pid if srv is not None else None, r.summary, js,
                                  r.principal.get("id") if isinstance(r.principal, dict) else None))
            return "calls", r.call_id, js
        if tag in KERNEL_TAGS:
            a = r.attribution
            return add("events", w, tag, r.pid, a.call if a else None, a.quality if a else None, js)
        if tag == "mcp":
            return add("messages", w, r.session, r.direction, r.kind, r.method,
                       None if r.id is None else str(r.id), js)
        if tag == "session":
            return add("sessions", w, r.session, r.event, js,
                       r.principal.get("id") if isinstance(r.principal, dict) else None)
        if tag == "alert":
            return add("alerts", w, r.rule, r.priority, r.call_id, r.session, js, r.principal)
        return add("other", w, tag, js)

    def _retain(self) -> None:
        self._last_retention = time.monotonic()
        try:
            cut = time.time() - self.max_age
            n = 0
            with self.db:
                # rows are appended in time order: delete below the first young
                # row's id (reads only the old rows, no index needed)
                for t, key in (("calls", "rowid"), ("events", "id"), ("messages", "id"), ("sessions", "id"),
                               ("other", "id"), ("alerts", "id")):
                    n += self.db.execute(
                        f"DELETE FROM {t} WHERE {key} < COALESCE((SELECT {key} FROM {t} WHERE wall >= ? "
                        f"ORDER BY {key} LIMIT 1), (SELECT MAX({key}) + 1 FROM {t}), 0)", (cut,)).rowcount
            # by size: drop the oldest tenth of every table until under the limit
            for _ in range(20):
                if self.size() <= self.max_bytes:
                    break
                with self.db:
                    for t in TABLES:
                        total = self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                        if total:
                            n += self.db.execute(
                                f"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} ORDER BY rowid LIMIT ?)",
                                (max(1, total // 10),)).rowcount
                self.db.execute("PRAGMA incremental_vacuum")
            self.stats["deleted_by_retention"] += n
            if n:
                self._prune_ledger()
        except sqlite3.Error as e:
            self.errors = (self.errors + [f"retention: {e}"])[-20:]

    def _prune_ledger(self) -> None:
        """Mark the ledger entries of rows retention deleted, and fold the
        oldest run of them into the anchor."""
        db = self.db
        with db:
            for t in TABLES:
                if t == "calls":
                    db.execute("UPDATE ledger SET pruned = 1 WHERE tbl = 'calls' AND pruned = 0 "
                               "AND key NOT IN (SELECT call_id FROM calls)")
                else:
                    db.execute(f"UPDATE ledger SET pruned = 1 WHERE tbl = ? AND pruned = 0 AND CAST(key AS INTEGER) "
                               f"< COALESCE((SELECT MIN(id) FROM {t}), ?)", (t, self._next[t]))
            keep = db.execute("SELECT MIN(seq) FROM ledger WHERE pruned = 0").fetchone()[0]
            upto = (keep - 1) if keep is not None else self._seq
            last = db.execute("SELECT seq, chain FROM ledger WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
                              (upto,)).fetchone()
            if last is not None:
                db.execute("UPDATE ledger_anchor SET seq = ?, chain = ? WHERE id = 1", (last[0], last[1]))
                db.execute("DELETE FROM ledger WHERE seq <= ?", (last[0],))

    def size(self) -> int:
        """Bytes in use (the file less its free pages), plus the WAL."""
        ps = self.db.execute("PRAGMA page_size").fetchone()[0]
        used = (self.db.execute("PRAGMA page_count").fetchone()[0]
                - self.db.execute("PRAGMA freelist_count").fetchone()[0]) * ps
        try:
            used += os.path.getsize(self.path + "-wal")
        except OSError:
            pass
        return used


# --- queries (mcpwitness calls / show) -------------------------------------

def parse_since(text: str, now: float | None = None) -> float:
    """'10m', '2h', '3d', '45s' ago, or an ISO 8601 UTC time -> Unix seconds."""
    now = time.time() if now is None else now
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if t[-1:] in units and t[:-1].replace(".", "", 1).isdigit():
        return now - float(t[:-1]) * units[t[-1]]
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(t, fmt)))
        except ValueError:
            continue
    raise ValueError(f"not a time: {text!r} (e.g. 10m, 2h, 1d, 2026-11-22T10:00:00)")


# a central store (fleet/pg.py): the publishing host, by its name or machine id (args: host twice)
HOST_FILTER = " AND (host = ? OR machine_id = ?)"


def principal_filter(text: str) -> tuple[str, list]:
    """principal: a substring of the principal's id, or a glob (* ?) of all of it."""
    if any(c in text for c in "*?"):
        return " AND principal GLOB ?", [text]
    return " AND principal LIKE ?", [f"%{text}%"]


def list_calls(db: sqlite3.Connection, server=None, tool=None, status=None, since=None, until=None,
               has_violations=False, limit=50, principal=None, host=None) -> list[sqlite3.Row]:
    q, args = "SELECT * FROM calls WHERE 1=1", []
    if host:
        q, args = q + HOST_FILTER, args + [host, host]
    if principal:
        q2, a2 = principal_filter(principal)
        q, args = q + q2, args + a2
    if server:
        q += " AND (server_name LIKE ? OR server_exe LIKE ? OR server_cmd LIKE ? OR CAST(server_pid AS TEXT) = ?)"
        args += [f"%{server}%"] * 3 + [server]
    if tool:
        q += " AND (tool = ? OR method = ?)"
        args += [tool, tool]
    if status:
        q += " AND status = ?"
        args.append(status)
    if since is not None:
        q += " AND wall >= ?"
        args.append(since)
    if until is not None:
        q += " AND wall <= ?"
        args.append(until)
    if has_violations:
        q += " AND violations > 0"
    q += " ORDER BY wall DESC LIMIT ?"
    args.append(limit)
    return db.execute(q, args).fetchall()


def get_call(db: sqlite3.Connection, prefix: str, host=None) -> tuple[dict, list[dict]]:
    """(record, later events): the call whose id starts with prefix, and the
    events attributed to it after its record was written."""
    where, args = ("call_id LIKE ?", [prefix + "%"])
    if host:
        where, args = where + HOST_FILTER, args + [host, host]
    rows = db.execute(f"SELECT record FROM calls WHERE {where} LIMIT 2", args).fetchall()
    if not rows:
        raise KeyError(f"no call {prefix!r}")
    if len(rows) > 1:
        raise KeyError(f"{prefix!r} names more than one call: give more of its id")
    rec = msgspec.json.decode(rows[0]["record"])
    later = [msgspec.json.decode(r["record"]) for r in db.execute(
        "SELECT record FROM events WHERE call_id = ? ORDER BY wall", (rec["call_id"],))]
    later = [e for e in later if (e.get("attribution") or {}).get("after_record")]
    return rec, later


def list_sessions(db: sqlite3.Connection, since=None, limit=50, principal=None, host=None) -> list[dict]:
    """The newest sessions, each as its latest record (end, else the last
    identified or start), newest first; with principal, the sessions one of
    whose records names it."""
    where, args = ("WHERE wall >= ?", [since]) if since is not None else ("", [])
    if host:
        where = (where or "WHERE 1=1") + HOST_FILTER
        args = args + [host, host]
    if principal:
        q2, a2 = principal_filter(principal)
        where = (where or "WHERE 1=1") + f" AND session IN (SELECT session FROM sessions WHERE 1=1{q2})"
        args = args + a2
    rows = db.execute(f"SELECT record FROM sessions WHERE id IN (SELECT MAX(id) FROM sessions {where} "
                      "GROUP BY session) ORDER BY id DESC LIMIT ?", args + [limit]).fetchall()
    return [msgspec.json.decode(r["record"]) for r in rows]


def list_alerts(db: sqlite3.Connection, since=None, rule=None, priority=None, call=None, limit=50,
                principal=None, host=None) -> list[dict]:
    """The newest alerts first; rule is a substring, call an id prefix."""
    q, args = "SELECT record FROM alerts WHERE 1=1", []
    if host:
        q, args = q + HOST_FILTER, args + [host, host]
    if principal:
        q2, a2 = principal_filter(principal)
        q, args = q + q2, args + a2
    if since is not None:
        q += " AND wall >= ?"
        args.append(since)
    if rule:
        q += " AND rule LIKE ?"
        args.append(f"%{rule}%")
    if priority:
        q += " AND priority = ?"
        args.append(priority)
    if call:
        q += " AND call_id LIKE ?"
        args.append(call + "%")
    q += " ORDER BY id DESC"
    # an aggregation window's closing alert (count > 1) stands for its first one: the same
    # group id, the newest row first, so the first is left out (the rows stay as written:
    # the store's ledger chains each one)
    out, seen = [], set()
    for r in db.execute(q, args):
        a = msgspec.json.decode(r["record"])
        g = a.get("group") if isinstance(a, dict) else None
        if g is not None:
            if g in seen:
                continue
            seen.add(g)
        out.append(a)
        if len(out) >= limit:
            break
    return out


def read_baselines(db: sqlite3.Connection) -> bytes | None:
    """The detectors' state saved last (JSON), or None."""
    try:
        row = db.execute("SELECT state FROM baselines WHERE id = 1").fetchone()
    except sqlite3.Error:   # a store from before baselines were kept
        return None
    return bytes(row[0]) if row else None


def tools_list_answers(db: sqlite3.Connection, limit: int = 20000) -> list[bytes]:
    """The newest `limit` answers to tools/list, oldest first, as stored (JSON)."""
    rows = db.execute("SELECT record FROM messages WHERE kind = 'response' AND method = 'tools/list' "
                      "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [rec for (rec,) in reversed(rows)]


def session_records(db: sqlite3.Connection, limit: int = 50000) -> list[bytes]:
    """The newest `limit` session records (not their starts), newest first, as stored (JSON)."""
    return [rec for (rec,) in db.execute("SELECT record FROM sessions WHERE event != 'start' ORDER BY id DESC "
                                         "LIMIT ?", (limit,))]
