"""The detect stage: every record the pipeline writes (MCP messages, sessions,
kernel events, call records) goes through the detectors (detectors.py) and
the rules (rules.py); a rule that matches writes an `alert` record, linked to
the call and the session it came from.

Rules are reloaded when a rule file changes or on request (SIGHUP): the new
set is compiled completely first; one that does not validate is refused
(a `rules` record says where and why) and the running set stays. The swap
happens between two batches: no record is looked at by neither set.
"""
from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict
from typing import Iterable

import msgspec

from ..records import Alert, Record, RulesLoad
from ..util import ConfigError, file_stamp, now_iso
from . import rules as rules_mod
from .detectors import Detectors, settings
from .rules import get as _get

_TAGS: dict = {}


def record_type(r) -> str | None:
    if type(r) is dict:
        return r.get("type")
    t = type(r)
    tag = _TAGS.get(t)
    if tag is None:
        cfg = getattr(t, "__struct_config__", None)
        tag = _TAGS[t] = (cfg.tag if cfg is not None else None) or ""
    return tag or None


class RuleSource:
    """The rule files in use (the packaged defaults first unless turned off)
    and their state on disk, to notice a change."""

    def __init__(self, paths: list[str] | None = None, defaults: bool = True, min_priority: str | None = None):
        self.paths = ([rules_mod.DEFAULT_RULES] if defaults else []) + list(paths or [])
        if min_priority is not None and min_priority not in rules_mod.PRIORITIES:
            raise rules_mod.RuleError(f"minimum priority must be one of {', '.join(rules_mod.PRIORITIES)} "
                                      f"(got {min_priority!r})")
        self.min_priority = min_priority
        self.stamp = self._stamp()

    def _stamp(self):
        return tuple(file_stamp(p) for p in self.paths)

    def changed(self) -> bool:
        s = self._stamp()
        if s != self.stamp:
            self.stamp = s
            return True
        return False

    def load(self) -> rules_mod.RuleSet:
        """RuleError (file:line: reason) if any file is unusable."""
        rs = rules_mod.load(self.paths)
        try:
            rs.detectors = settings(rs.detectors)
        except ConfigError as e:
            raise rules_mod.RuleError(str(e)) from None
        if self.min_priority is not None:  # as Falco's `priority:`: rules below it are not run
            cut = rules_mod.PRIORITIES.index(self.min_priority)
            for r in rs.rules:
                if rules_mod.PRIORITIES.index(r.priority) > cut:
                    r.enabled = False
            rules_mod.index(rs)
        return rs


class Engine:
    """Records in, alert records out. Not thread-safe: one caller."""

    def __init__(self, source: RuleSource, flagger=None, known_pairs=(), ruleset: rules_mod.RuleSet | None = None,
                 known_tools=()):
        self.source = source
        self.rules = ruleset or source.load()
        self.flagger = flagger
        self.detectors = Detectors(self.rules.detectors, flagger, known_pairs, known_tools)
        self.stats: Counter = Counter()
        self.alert_counts: Counter = Counter()   # (rule, priority) -> alerts
        self.loads: Counter = Counter({"applied": 1})
        self.errors: list[str] = []
        self._seen: OrderedDict = OrderedDict()  # (rule, call or session) already alerted
        self._containers: OrderedDict = OrderedDict()  # session -> its server's container, from session records
        self._principals: OrderedDict = OrderedDict()  # session -> its client's principal id, from session records
        self._reload_asked = False
        self._last_look = 0.0
        # aggregation: (rule, server, tool, key facts) -> the open window (oldest first)
        self._groups: OrderedDict = OrderedDict()
        self._closed: list[Alert] = []            # summaries of windows closed while processing

    # --- rules ------------------------------------------------------------
    def request_reload(self) -> None:
        self._reload_asked = True

    def maybe_reload(self, now: float | None = None, every: float = 1.0) -> RulesLoad | None:
        """At most once a second: reload if asked or a file changed. Returns
        the `rules` record to write, or None."""
        now = time.monotonic() if now is None else now
        if not self._reload_asked and now - self._last_look < every:
            return None
        self._last_look = now
        asked, self._reload_asked = self._reload_asked, False
        if not self.source.changed() and not asked:
            return None
        return self.reload()

    def reload(self) -> RulesLoad:
        base = {"time": now_iso(ns=True), "event": "reload", "files": self.source.paths}
        try:
            rs = self.source.load()
        except rules_mod.RuleError as e:
            self.loads["refused"] += 1
            self.errors.append(f"rules: {e}")
            return RulesLoad(**base, result="refused", error=str(e), running=len(self.rules.rules))
        self.rules = rs
        self.detectors.reconfigure(rs.detectors, self.flagger)
        self.loads["applied"] += 1
        return RulesLoad(**base, result="applied", rules=len(rs.rules), enabled=sum(r.enabled for r in rs.rules),
                         warnings=rs.warnings)

    def describe(self) -> dict:
        rs = self.rules
        return {"files": rs.files, "rules": len(rs.rules), "enabled": sum(r.enabled for r in rs.rules),
                "warnings": rs.warnings}

    # --- records ------------------------------------------------------------
    def process(self, records: Iterable) -> list[Alert]:
        out: list[Alert] = []
        by_type = self.rules.by_type
        anyrules = by_type.get("*", ())
        observe = self.detectors.observe
        n = 0
        for r in records:
            t = record_type(r)
            if t is None or t == "alert":
                continue
            n += 1
            try:
                if t == "session":
                    self._container_of(r)
                facts = observe(r, t)
            except Exception as e:  # a detector must not stop the pipeline
                self.stats["detector_errors"] += 1
                self._error(f"detector: {type(e).__name__}: {e}")
                facts = {}
            for rule in by_type.get(t, anyrules):
                try:
                    hit = rule.fn(r, t, facts)
                except Exception as e:
                    self.stats["rule_errors"] += 1
                    self._error(f"rule {rule.name!r}: {type(e).__name__}: {e}")
                    continue
                if hit:
                    a = self._alert(rule, r, t, facts)
                    if a is not None:
                        out.append(a)
        self.stats["records"] += n
        if self._closed:  # windows the records' times closed: their summaries first
            out, self._closed = self._closed + out, []
        return out

    def _error(self, msg: str) -> None:
        if len(self.errors) < 100:
            self.errors.append(msg)

    def _container_of(self, r) -> None:
        """Remember the container a session's server runs in (its `ends`)."""
        sid = _get(r, "session")
        if not isinstance(sid, str):   # a damaged record (replay): nothing to remember it by
            return
        p = _get(r, "principal")
        if isinstance(p, dict) and p.get("id"):
            self._principals[sid] = p["id"]
            if len(self._principals) > 10000:
                self._principals.popitem(last=False)
        end = next((e for e in _get(r, "ends") or () if isinstance(e, dict) and e.get("role") == "server"), None)
        if end is None or not end.get("container"):
            return
        self._containers[sid] = _container(end)
        if len(self._containers) > 10000:
            self._containers.popitem(last=False)

    def _alert(self, rule, r, t: str, facts: dict) -> Alert | None:
        call = facts.get("call") or {}
        call_id = call.get("id") or (_get(r, "call_id") if t == "call" else None)
        session = call.get("session") or _get(r, "session")
        if rule.once_per != "record":
            link = call_id if rule.once_per == "call" else None
            link = link or session
            if link is not None:
                key = (rule.name, link)
                if key in self._seen:
                    self.stats["suppressed"] += 1
                    return None
                self._seen[key] = True
                if len(self._seen) > 100000:
                    self._seen.popitem(last=False)
        kt = _get(r, "ktime_ns")
        key = None
        if rule.aggregate > 0 and kt is not None:
            if self._groups:
                self._closed += self.expire(kt)
            key = (rule.name, call.get("server"), call.get("tool") if call else _get(r, "tool"),
                   *(_key_value(g, r, t, facts) for g in rule.agg_getters))
            g = self._groups.get(key)
            if g is not None:                 # a repeat inside the window: counted, not written now
                g.add(kt, _get(r, "time"), call_id)
                self.alert_counts[(rule.name, rule.priority)] += 1
                self.stats["aggregated"] += 1
                return None
        output, fields = rules_mod.render(rule, r, t, facts)
        self.alert_counts[(rule.name, rule.priority)] += 1
        self.stats["alerts"] += 1
        server = _get(r, "server") if t == "call" else None
        server = server if isinstance(server, dict) else msgspec.to_builtins(server) if server is not None else None
        container = _container(server) if server and server.get("container") else self._containers.get(session)
        a = Alert(time=_get(r, "time") or now_iso(ns=True), ktime_ns=kt, rule=rule.name,
                  priority=rule.priority, output=output, tags=rule.tags, source=t, call_id=call_id,
                  session=session, tool=call.get("tool") if call else _get(r, "tool"),
                  candidates=call.get("candidates"), pid=_get(r, "pid"), fields=fields, container=container,
                  principal=call.get("principal") or self._principals.get(session))
        if key is not None:
            a.group = uuid.uuid4().hex[:16]
            self._groups[key] = _Group(a, int(rule.aggregate * 1e9))
        return a

    # --- aggregation ----------------------------------------------------------
    def expire(self, now_ns: int) -> list[Alert]:
        """Close the windows that ended before now_ns (record or monotonic time): the
        summaries of those with repeats."""
        out: list[Alert] = []
        while self._groups:
            key, g = next(iter(self._groups.items()))
            if now_ns - g.first_kt <= g.window_ns:
                # windows are kept in the order they opened; a longer one behind a
                # shorter one closes late, never early
                break
            del self._groups[key]
            if g.count > 1:
                out.append(g.summary())
        self.stats["summaries"] += len(out)
        return out

    def flush(self) -> list[Alert]:
        """Close every window (the agent stops, the replay ends)."""
        last = [g.summary() for g in self._groups.values() if g.count > 1]
        self.stats["summaries"] += len(last)
        out, self._closed = self._closed + last, []
        self._groups.clear()
        return out


class _Group:
    """An aggregation window: its first alert, and the exact count of matches since."""
    __slots__ = ("first", "first_kt", "window_ns", "count", "last_kt", "last_time", "calls")

    def __init__(self, first: Alert, window_ns: int):
        self.first, self.first_kt, self.window_ns = first, first.ktime_ns, window_ns
        self.count, self.last_kt, self.last_time = 1, first.ktime_ns, first.time
        self.calls = [first.call_id] if first.call_id else []

    def add(self, kt: int, time: str | None, call_id: str | None) -> None:
        self.count += 1
        if kt >= self.last_kt:
            self.last_kt, self.last_time = kt, time or self.last_time
        if call_id and len(self.calls) < 100 and call_id not in self.calls:
            self.calls.append(call_id)

    def summary(self) -> Alert:
        f = self.first
        return msgspec.structs.replace(
            f, time=self.last_time, ktime_ns=self.last_kt, delay_ms=None, count=self.count,
            first_time=f.time, last_time=self.last_time, calls=list(self.calls),
            output=f"{f.output} [{self.count} times from {f.time} to {self.last_time}]",
            fields={**f.fields, "mcpwitness.count": self.count})


def _key_value(getter, r, t, facts):
    try:
        v = getter(r, t, facts)
    except Exception:
        return None
    return tuple(v) if isinstance(v, list) else v if isinstance(v, (str, int, float, bool, type(None))) else str(v)


def _container(end: dict) -> dict:
    """A process end's container, as alerts carry it."""
    return {"runtime": end.get("container_runtime"), "id": end.get("container"), "name": end.get("container_name"),
            "image": end.get("container_image"), "pod": end.get("pod")}


FALCO_PRIORITY = {p: p.capitalize() for p in rules_mod.PRIORITIES}


def falco_json(alert: Alert, hostname: str | None = None) -> dict:
    """The alert in the shape Falco writes with json_output (and Falcosidekick
    accepts): uuid, output, priority, rule, time, output_fields, source, tags,
    hostname. Our own links go in output_fields under mcpwitness.*."""
    fields = dict(alert.fields or {})
    for k in ("call_id", "session", "tool", "pid", "source", "principal"):
        if getattr(alert, k) is not None:
            fields[f"mcpwitness.{k}"] = getattr(alert, k)
    c = alert.container
    if c:  # under Falco's own field names
        fields.update({"container.id": (c.get("id") or "")[:12], "container.full_id": c.get("id"),
                       "container.name": c.get("name"), "container.image": c.get("image"),
                       "container.type": c.get("runtime")})
        pod = c.get("pod") or {}
        if pod:
            fields.update({"k8s.pod.uid": pod.get("uid"), "k8s.ns.name": pod.get("namespace"),
                           "k8s.pod.name": pod.get("name")})
    return {"uuid": str(uuid.uuid4()), "output": alert.output, "priority": FALCO_PRIORITY[alert.priority],
            "rule": alert.rule, "time": alert.time, "output_fields": fields, "source": "mcpwitness",
            "tags": list(alert.tags or []), "hostname": hostname or socket.gethostname()}


class HttpAlerts:
    """POSTs each alert, Falco-shaped, to a URL (Falcosidekick's `/`), from
    a thread with a bounded queue: a slow or dead endpoint never slows the
    pipeline; what cannot be sent is counted."""

    def __init__(self, url: str, timeout: float = 5.0, queue_max: int = 10000, retries: int = 2):
        import queue
        from urllib.parse import urlsplit
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url, self.timeout, self.retries = url, timeout, retries
        self.q: queue.Queue = queue.Queue(queue_max)
        self.stats = Counter()
        self.errors: list[str] = []
        self.host = socket.gethostname()
        self._t = threading.Thread(target=self._loop, name="mcpwitness-alerts-http", daemon=True)
        self._t.start()

    def send(self, alerts: list[dict]) -> None:
        import queue
        for a in alerts:
            try:
                self.q.put_nowait(falco_json(a, self.host))
            except queue.Full:
                self.stats["dropped_queue_full"] += 1

    def _loop(self) -> None:
        import json
        import urllib.request
        while True:
            item = self.q.get()
            if item is None:
                return
            body = json.dumps(item).encode()
            for attempt in range(self.retries + 1):
                try:
                    req = urllib.request.Request(self.url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json",
                                                          "User-Agent": "mcpwitness"})
                    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                        resp.read()
                    self.stats["sent"] += 1
                    break
                except Exception as e:
                    if attempt == self.retries:
                        self.stats["failed"] += 1
                        if len(self.errors) < 20:
                            self.errors.append(f"{type(e).__name__}: {e}")
                    else:
                        time.sleep(0.2 * (attempt + 1))

    def close(self, wait: float = 5.0) -> None:
        try:
            self.q.put(None, timeout=wait)
        except Exception:
            return
        self._t.join(wait)


class DetectSink:
    """A sink in front of the others: passes every record on, then writes the
    alerts those records raised (in the same flush, so the alert line follows
    its cause), and sends them on (HTTP)."""

    SAVE_EVERY_NS = 60_000_000_000

    def __init__(self, inner, engine: Engine, http: HttpAlerts | None = None, clock=time.monotonic_ns, save=None):
        self.inner = inner
        self.engine = engine
        self.http = http
        self.path = inner.path
        self.clock = clock
        self.save = save              # save(bytes): the store keeps what the detectors learned
        self._saved = clock()

    def write(self, events) -> None:
        events = list(events)
        if events:
            self.inner.write(events)
            alerts = self.engine.process(events)
            alerts += self.engine.expire(self.clock())
            if alerts:
                now = self.clock()
                for a in alerts:  # from the kernel timestamp of the cause to this write
                    if a.ktime_ns:
                        a.delay_ms = round((now - a.ktime_ns) / 1e6, 3)
                self.inner.write(alerts)
                if self.http is not None:
                    self.http.send(alerts)
        rec = self.engine.maybe_reload()
        if rec is not None:
            self.inner.write_record(rec)
        if self.save is not None and self.clock() - self._saved > self.SAVE_EVERY_NS:
            self._save()

    def _save(self) -> None:
        self._saved = self.clock()
        try:
            self.save(msgspec.json.encode(self.engine.detectors.snapshot()))
        except Exception as e:  # never take the pipeline down for it
            self.engine.stats["baseline_save_errors"] += 1
            self.engine._error(f"baselines: {type(e).__name__}: {e}")

    def write_record(self, record) -> None:
        self.inner.write_record(record)

    def flush(self) -> None:
        """Write the summaries of every open aggregation window (before the stats record), and
        save what the detectors learned."""
        alerts = self.engine.flush()
        if alerts:
            self.inner.write(alerts)
            if self.http is not None:
                self.http.send(alerts)
        if self.save is not None:
            self._save()

    def stats(self) -> dict:
        e = self.engine
        out = {"records": e.stats["records"], "alerts": e.stats["alerts"], "suppressed": e.stats["suppressed"],
               "aggregated": e.stats["aggregated"], "summaries": e.stats["summaries"],
               "rule_errors": e.stats["rule_errors"], "detector_errors": e.stats["detector_errors"],
               "by_rule": [[r, p, n] for (r, p), n in sorted(e.alert_counts.items())],
               "reloads": dict(e.loads), "rules": e.describe(), "errors": e.errors[-10:]}
        if self.http is not None:
            out["http"] = dict(self.http.stats)
            out["http_errors"] = self.http.errors[-5:]
        return out

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self.inner.close()


def replay(lines: Iterable[bytes], engine: Engine, bad: Counter, loose: Counter | None = None) -> Iterable[Alert]:
    """Alert records for a recorded JSON Lines stream (mcpwitness detect --replay),
    decoded into the same record types the live pipeline writes. A record
    that does not fit its type's current schema (a file from another
    version, a record cut by hand) is judged as the JSON object it is and
    counted in `loose`; lines that are not JSON objects with a type are
    counted in `bad`, and skipped."""
    import msgspec
    typed = msgspec.json.Decoder(Record)
    plain = msgspec.json.Decoder()
    batch: list = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            r = typed.decode(line)
        except msgspec.DecodeError:  # ValidationError too
            try:
                r = plain.decode(line)
            except msgspec.DecodeError:
                bad["not_json"] += 1
                continue
            if not isinstance(r, dict) or not isinstance(r.get("type"), str):
                bad["not_a_record"] += 1
                continue
            if r["type"] == "chain":  # the file's hash chain (output/chain.py), not something that happened
                continue
            if loose is not None:
                loose[r["type"]] += 1
        batch.append(r)
        if len(batch) >= 512:
            yield from engine.process(batch)
            batch = []
    if batch:
        yield from engine.process(batch)
    yield from engine.flush()
