"""Stateful detectors: facts about a record that need memory of the traffic
before it. Rules (rules.py) read them as fields:

  call.*      the tool call a record belongs to: id, tool, method, session,
              client, server, arguments, candidates (ambiguous kernel events)
  rate.*      per client, server, tool and method: calls in the sliding window
              against a baseline learned from the traffic (`rate.client.burst`...)
  args.*      a request's arguments: traversal, sensitive, outside_roots,
              shell_meta, sql (destructive statements), long, repeated, max_length, roots
  content.*   what a tool answered (or a tools/list declared) says to the model:
              injection (instructions aimed at it), invisible (invisible or
              bidirectional characters), base64 (long runs), secrets (redacted)
  pair.*      a session's client and server: new (never seen), allowed
  size.*      a response against what that tool usually returns: response,
              request, typical, samples, ratio, anomalous, amplification
  behaviour.* a tool's kernel activity against its own past: first_write,
              new_destination, destination, prior_calls
  novelty.*   a server's kernel activity against its own past, across its tools:
              new_destination, first_egress, new_program, new_write_dir
  tooldefs.*  a tools/list answer against the server's earlier ones: changed, added, diff
  decl.*      what the tool's definition declares (read_only, closed_world... from its
              annotations; runs_commands from its name or description), on its calls' kernel events

Every detector works on record times (ktime_ns), never on the wall clock, so
a replayed file gives the same facts as the live run. State is bounded (LRU).
"""
from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import re
import zlib
from collections import OrderedDict, deque
from urllib.parse import unquote

from ..decode.audit import declared_roots
from ..decode.streams import C2S
from ..util import ConfigError, call_id, duration, strings, tool_of, under
from .rules import get as _get

# --- settings ----------------------------------------------------------------

DEFAULTS: dict[str, dict] = {
    # a burst: at least min_calls in `window`, and factor x the learned rate
    # (never below min_rate), once the key has been seen for `learn`; or
    # max_calls in `window` whatever the baseline
    "rate": {"window": 10.0, "learn": 60.0, "half_life": 600.0, "factor": 5.0, "min_calls": 10,
             "max_calls": 200, "min_rate": 0.05,
             # from the first second: a jump to jump_factor x the key's own rate so far, in a
             # jump_window, once it has jump_history of calls behind it; and, until its own
             # baseline is learned, factor x a prior: the fastest learned key of its kind (client,
             # server, tool, method) or prior_per_min, whichever is higher (0: none)
             "jump_window": 1.0, "jump_factor": 10.0, "jump_history": 2.0, "prior_per_min": 0.0},
    "args": {"max_length": 8192, "repeat_min_length": 1024, "repeat_ratio": 20.0, "max_strings": 512},
    # answers: the strings scanned and how far into each
    "content": {"max_strings": 512, "max_scan": 262144},
    # allow: [{client: glob, server: glob}]; empty: no allowlist (pair.allowed is null)
    "pair": {"learn": 0.0, "allow": []},
    "size": {"min_samples": 5, "half_life": 50.0, "factor": 10.0, "min_bytes": 65536},
    "behaviour": {"min_calls": 3},
    # per server, across its tools: what is new once it has served min_calls calls
    "novelty": {"min_calls": 3},
    # a client's declared clientInfo name against the program it really is (its principal's
    # executable, or one of its ancestors'): clients maps a name glob (case-insensitive) to the
    # program globs it may run as; a name seen before from other programs only is noted too
    "identity": {"clients": {
        "claude-code": ["node", "nodejs", "bun", "claude"],
        "claude-ai": ["claude", "Claude", "electron", "*[Cc]laude*"],
        "mcp-inspector*": ["node", "nodejs", "bun"],
        "inspector": ["node", "nodejs", "bun"],            # the MCP Inspector (its CLI too)
        "inspector-*": ["node", "nodejs", "bun"],
        "Visual Studio Code*": ["code", "code-insiders", "electron", "codium", "*code*"],
        "cursor*": ["cursor", "Cursor", "*cursor*"],
    }},
}
_DURATIONS = {("rate", "window"), ("rate", "learn"), ("rate", "half_life"), ("rate", "jump_window"),
              ("rate", "jump_history"), ("pair", "learn")}


def settings(given: dict | None) -> dict:
    """DEFAULTS overlaid with a rule set's `- detector:` items, checked."""
    out = {k: dict(v) for k, v in DEFAULTS.items()}
    for name, conf in (given or {}).items():
        where = conf.get("__where__", "rules") if isinstance(conf, dict) else "rules"
        if name not in DEFAULTS:
            raise ConfigError(f"{where}: unknown detector {name!r} (known: {', '.join(DEFAULTS)})")
        for k, v in conf.items():
            if k == "__where__":
                continue
            if k not in DEFAULTS[name]:
                raise ConfigError(f"{where}: detector {name}: unknown setting {k!r} "
                                  f"(known: {', '.join(DEFAULTS[name])})")
            if (name, k) in _DURATIONS:
                v = duration(v, f"{where}: detector {name}.{k}")
            elif k == "clients":
                if not isinstance(v, dict) or not all(
                        isinstance(n, str) and isinstance(g, list) and all(isinstance(x, str) for x in g)
                        for n, g in v.items()):
                    raise ConfigError(f"{where}: detector identity.clients: a mapping of client name glob to a "
                                      "list of program globs")
            elif k == "allow":
                if not isinstance(v, list) or not all(isinstance(x, dict) and set(x) <= {"client", "server"}
                                                      and all(isinstance(y, str) for y in x.values()) for x in v):
                    raise ConfigError(f"{where}: detector pair.allow: a list of {{client: glob, server: glob}}")
            elif not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{where}: detector {name}.{k}: must be a number >= 0 (got {v!r})")
            out[name][k] = v
    return out


class _Lru(OrderedDict):
    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def put(self, k, v) -> None:
        self[k] = v
        self.move_to_end(k)
        if len(self) > self.cap:
            self.popitem(last=False)

    def touch(self, k, make):
        v = self.get(k)
        if v is None:
            v = self[k] = make()
            if len(self) > self.cap:
                self.popitem(last=False)
        else:
            self.move_to_end(k)
        return v


# --- shared context: sessions and calls ------------------------------------------

def _name(info) -> str | None:
    return info.get("name") if isinstance(info, dict) and isinstance(info.get("name"), str) else None


class _Session:
    __slots__ = ("client", "server", "client_name", "server_name", "client_exe", "server_exe", "roots", "paired",
                 "principal", "identified")

    def __init__(self):
        self.client = self.server = "unknown"
        self.client_name = self.server_name = self.client_exe = self.server_exe = None
        self.principal = None        # the client's principal id (decode/principal.py)
        self.roots = None
        self.paired = self.identified = False


class CallInfo:
    __slots__ = ("id", "tool", "method", "session", "client", "server", "req_size", "key", "arguments", "answered",
                 "principal")

    def as_facts(self) -> dict:
        return {"id": self.id, "tool": self.tool, "method": self.method, "session": self.session,
                "client": self.client, "server": self.server, "arguments": self.arguments,
                "principal": self.principal}


class Identity:
    """A client's declared clientInfo name against the program its principal
    runs: the configured expectations (identity.clients), and, per name,
    the programs seen declaring it so far."""

    def __init__(self, s: dict):
        self.clients = [(re.compile(fnmatch.translate(n), re.I), list(g)) for n, g in s["clients"].items()]
        self.seen = _Lru(20000)   # declared name -> {program}

    def observe(self, name: str, principal: dict) -> dict | None:
        exe = principal.get("exe")
        if not exe:
            return None
        prog = os.path.basename(exe)
        ancestors = [os.path.basename(e["exe"]) for e in principal.get("chain") or () if isinstance(e, dict)
                     and e.get("exe")]
        expected = next((g for pat, g in self.clients if pat.fullmatch(name)), None)
        mismatch = expected is not None and not any(fnmatch.fnmatchcase(p, g) for p in [prog] + ancestors
                                                    for g in expected)
        known = self.seen.get(name)
        new_program = known is not None and prog not in known
        before = sorted(known) if known else []
        self.seen.touch(name, set).add(prog)
        return {"declared": name, "program": prog, "exe": exe, "app": principal.get("app"),
                "ancestors": ancestors, "expected": expected, "mismatch": mismatch, "new_program": new_program,
                "programs_before": before, "principal": principal.get("id"), "uid": principal.get("uid"),
                "exe_sha256": principal.get("exe_sha256")}


# --- the detectors -----------------------------------------------------------------

class Rate:
    """Sliding-window call counts per key against an EWMA baseline of the
    key's own rate, learned from closed windows. Before that baseline is
    learned, a key is judged by a jump against its own rate so far and by a
    prior from the keys of its kind. A burst fires once, on the call that
    crosses the threshold, and re-arms when the window drains."""

    class _K:
        __slots__ = ("times", "first", "base", "bstart", "bn", "armed", "buckets", "total", "recent")

        def __init__(self, t):
            self.times, self.first, self.base, self.bstart, self.bn, self.armed, self.buckets = \
                deque(), t, 0.0, t, 0, True, 0
            self.total = 0
            self.recent = deque()

    def __init__(self, s: dict):
        self.s = s
        self.w = max(float(s["window"]), 0.001)
        self.alpha = 1 - 0.5 ** (self.w / max(float(s["half_life"]), 0.001))
        self.keys = _Lru(50000)
        self.population: dict[str, float] = {}   # kind -> the fastest learned baseline (calls/s)
        self.restored: dict[str, tuple] = {}     # key -> (baseline, windows) from a saved state

    def _new(self, key: str, t: float) -> "Rate._K":
        k = Rate._K(t)
        r = self.restored.pop(key, None)
        if r is not None:       # learned in an earlier run: judged against that baseline at once
            k.first, (k.base, k.buckets) = t - self.s["learn"], r
        return k

    def observe(self, key: str, t: float) -> dict:
        s, w = self.s, self.w
        k = self.keys.touch(key, lambda: self._new(key, t))
        if t - k.bstart >= w:
            # each closed window is one sample of the rate: a plain mean while
            # there are few (no bias from the first one), an EWMA after
            closed = int((t - k.bstart) // w)
            k.buckets += 1
            k.base += max(self.alpha, 1 / k.buckets) * (k.bn / w - k.base)
            empty = closed - 1                      # the windows since, without a call
            while empty and (k.buckets + 1) * self.alpha < 1:  # still the plain mean
                k.buckets += 1
                k.base -= k.base / k.buckets
                empty -= 1
            k.buckets += empty
            k.base *= (1 - self.alpha) ** empty
            k.bstart += closed * w
            k.bn = 0
        k.bn += 1
        k.total += 1
        times = k.times
        times.append(t)
        while times and times[0] <= t - w:
            times.popleft()
        n = len(times)
        learned = t - k.first >= s["learn"] and k.buckets > 0
        kind = key.split(" ", 1)[0]
        if learned and k.base > self.population.get(kind, 0.0):
            self.population[kind] = k.base
        expected = max(k.base, s["min_rate"]) * w
        # a jump: the last jump_window against the key's own rate before it
        jw = max(float(s["jump_window"]), 0.001)
        recent = k.recent
        recent.append(t)
        while recent and recent[0] <= t - jw:
            recent.popleft()
        n1 = len(recent)
        before, span = k.total - n1, (t - jw) - k.first
        history = before / span if span >= s["jump_history"] and before >= 2 else None
        jump = history is not None and n1 >= s["min_calls"] and \
            n1 / jw >= s["jump_factor"] * max(history, s["min_rate"])
        # until learned: a prior from the population of its kind, or the configured one
        prior = max(self.population.get(kind, 0.0), s["prior_per_min"] / 60)
        over_prior = not learned and prior > 0 and n >= s["min_calls"] and n >= s["factor"] * prior * w
        over = n >= s["max_calls"] or (learned and n >= s["min_calls"] and n >= s["factor"] * expected) or \
            jump or over_prior
        burst = over and k.armed
        if burst:
            k.armed = False
        elif not k.armed and n < max(s["min_calls"], s["factor"] * expected) / 2 and not jump:
            k.armed = True
        return {"burst": burst, "count": n, "window_s": w, "baseline_per_min": round(k.base * 60, 3),
                "learning": not learned, "key": key, "jump": jump, "jump_count": n1, "jump_window_s": jw,
                "rate_before_per_min": round(history * 60, 3) if history is not None else None,
                "prior_per_min": round(prior * 60, 3) if prior else None,
                "why": ("ceiling" if n >= s["max_calls"] else "jump" if jump else "prior" if over_prior
                        else "baseline") if over else None}


_TRAVERSAL = re.compile(r"(?:^|[/\\])(?:\.\.(?:[/\\]|$)|\.\.\.\.[/\\]{2})")  # .. and the ....// filter bypass
_OVERLONG = (("%c0%ae", "."), ("%e0%80%ae", "."), ("%c0%af", "/"), ("%e0%80%af", "/"), ("%c1%9c", "\\"),
             ("%u002e", "."), ("%u2215", "/"), ("\uff0e", "."), ("\u2215", "/"))
_SHELL_WORDS = ("sh|bash|dash|zsh|ksh|fish|busybox|curl|wget|nc|ncat|netcat|socat|python[0-9.]*|perl|ruby|php|"
                "node|rm|cat|chmod|chown|echo|base64|sudo|su|id|whoami|uname|nohup|kill|pkill|mkfifo|tee|dd|"
                "xargs|env|eval|exec|scp|ssh|telnet|ftp|tftp|crontab|awk|sed|find|head|tail|ls|touch|mv|cp|"
                "printf|openssl|powershell|cmd|bin/[a-z]+")
# Every repetition is bounded or cannot overlap the next try, so the scan stays
# linear in the argument's length: arguments are the attacker's input.
_SHELL_META = re.compile(
    r"\$\([^)]{1,512}\)|`[^`\n]{1,512}`|\$\{[^}]{1,128}\}"         # command or parameter substitution
    r"|(?:;|&&|\|\||\||\n)[ \t]{0,16}(?:/usr)?(?:/bin/)?(?:" + _SHELL_WORDS + r")\b"  # chaining into a program, | sh
    r"|(?:^|\s)>{1,2}[ \t]{0,16}/[\w.-]")                         # redirect into an absolute path


# destructive SQL: DROP, TRUNCATE, GRANT ... ON, ALTER TABLE ... DROP, and DELETE or UPDATE
# without a WHERE. Bounded repetitions only: arguments are the attacker's input.
_SQL = re.compile(
    r"\b(?:drop\s+(?:table|database|schema|view|index|user|role|owned)\b"
    r"|truncate\s+table\s+[\w.\"`\[]|truncate\s+[\w.\"`\[\]]{1,128}\s*(?:;|,|$|\s(?:cascade|restart|continue)\b)"
    r"|grant\s+(?:all(?:\s+privileges)?|select|insert|update|delete|usage|execute|create|connect|references|"
    r"trigger|truncate|superuser)\b[\w ,]{0,200}?\s(?:on|to)\s"
    r"|alter\s+(?:table|database|user|role)\s+[\w.\"`]{1,128}\s+(?:drop|rename|owner|with\s+superuser)\b"
    r"|delete\s+from\s+[\w.\"`\[\]]{1,128}\s*(?:;|--|$)"
    r"|update\s+[\w.\"`]{1,128}\s+set\s(?:(?!\bwhere\b)[^;]){0,2048}(?:;|$))", re.I)


class Args:
    """Suspicious argument values in a request."""

    def __init__(self, s: dict, flagger):
        self.s = s
        self.flagger = flagger

    def observe(self, arguments, roots: list[str] | None) -> dict:
        s = self.s
        found = strings(arguments, s["max_strings"])
        trav, sens, outside, meta, long_, rep, sql = [], [], [], [], [], [], []
        maxlen = 0
        for name, v in found:
            n = len(v)
            maxlen = max(maxlen, n)
            shown = f"{name}={v[:160]}" + ("..." if n > 160 else "")
            low = v.lower()
            if ".." in v or "%" in v or "\uff0e" in v or "\u2215" in v:
                cands = {v}
                if "%" in v:
                    for bad, good in _OVERLONG:
                        low = low.replace(bad, good)
                    u1 = unquote(low)
                    cands |= {low, u1, unquote(u1)}
                elif "\uff0e" in v or "\u2215" in v:
                    for bad, good in _OVERLONG:
                        low = low.replace(bad, good)
                    cands.add(low)
                if any(_TRAVERSAL.search(c) for c in cands):
                    trav.append(shown)
            if n < 4096:
                p = _as_path(v)
                if p is not None:
                    label = self.flagger.sensitive(p) if self.flagger is not None else None
                    # naming a persistence location is not reading a secret: writing one is
                    # judged where it happens (Tool wrote a persistence location)
                    if label and label != "persistence locations":
                        sens.append(f"{shown} ({label})")
                    if roots is not None and p.startswith("/") and not under(p, roots):
                        outside.append(shown)
            if _SHELL_META.search(v):
                meta.append(shown)
            if n < 65536 and _SQL.search(v):
                sql.append(shown)
            if n > s["max_length"]:
                long_.append(f"{name} ({n} chars)")
            if n >= s["repeat_min_length"]:
                head = v[:65536].encode("utf-8", "surrogatepass")
                if len(zlib.compress(head, 1)) * s["repeat_ratio"] <= len(head):
                    rep.append(f"{name} ({n} chars, {len(head) // max(1, len(zlib.compress(head, 1)))}x compressible)")
        return {"traversal": trav, "sensitive": sens, "outside_roots": outside if roots is not None else None,
                "shell_meta": meta, "sql": sql, "long": long_, "repeated": rep, "max_length": maxlen,
                "roots": roots, "strings": len(found)}


# what a tool answer says to the model rather than to the user: hidden-instruction tags, the
# phrasing of an injected instruction, chat-template markers
_INJECTION = re.compile(
    r"<\s{0,4}/?\s{0,4}(?:important|system|instructions?|hidden|secret|admin|sys|assistant)\s{0,4}>"
    r"|\[/?INST\]|<\|im_start\|>|<\|(?:system|assistant)\|>"
    r"|\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+|of\s+){0,3}"
    r"(?:previous|prior|above|earlier|preceding|former|other)\s+(?:instructions|prompts?|rules|directions|"
    r"guidelines|messages|context)"
    r"|\bdo\s+not\s+(?:tell|inform|alert|notify|mention\s+(?:this|it)\s+to|reveal\s+(?:this|it)\s+to)\s+"
    r"(?:the\s+)?user"
    r"|\byou\s+(?:are|must)\s+now\s+(?:act|be|behave|obey|follow)\b"
    r"|\bnew\s+(?:system\s+)?instructions\s*:"
    r"|\b(?:reveal|print|output|send|upload|exfiltrate|include)\s+(?:your\s+|the\s+|all\s+){0,2}"
    r"(?:system\s+prompt|api\s+keys?|credentials|ssh\s+keys?|private\s+keys?|\.env\b)", re.I)
# invisible and bidirectional-control characters: zero-width space, the bidi embeddings,
# overrides and isolates (Trojan Source), invisible operators, Unicode tag characters (text
# smuggled past a reader). Left alone: joiners (emoji, Persian), LRM/RLM (right-to-left text).
_INVISIBLE = re.compile("[\u200b\u202a-\u202e\u2060-\u2064\u2066-\u2069\U000e0000-\U000e007f]")
_B64 = re.compile(r"[A-Za-z0-9+/]{1024,}={0,2}")


class Content:
    """What a tool's answer (or a server's tool definitions) says to the model."""

    def __init__(self, s: dict):
        self.s = s

    def observe(self, value) -> dict | None:
        found = strings(value, self.s["max_strings"])
        inj, inv, b64, sec = [], [], [], []
        for name, v in found:
            if len(v) < 8:
                continue
            head = v[:self.s["max_scan"]]
            m = _INJECTION.search(head)
            if m:
                a = max(0, m.start() - 40)
                inj.append(f"{name}: ...{head[a:m.end() + 40]!r}...")
            hits = _INVISIBLE.findall(head)
            if hits:
                kinds = sorted({f"U+{ord(c):04X}" for c in hits})
                inv.append(f"{name}: {len(hits)} ({', '.join(kinds[:6])})")
            if len(v) >= 1024 and not name.endswith((".data", ".blob")):   # images, audio, blobs: base64 by design
                for r in _B64.finditer(head):
                    run = r.group(0)
                    if len(set(run[:1024])) >= 24:    # random-looking, not a run of one letter
                        b64.append(f"{name}: {len(run)} chars")
                        break
            n = head.count("[REDACTED")
            if n:
                sec.append(f"{name}: {n} redacted")
        if not (inj or inv or b64 or sec):
            return None
        return {"injection": inj or None, "invisible": inv or None, "base64": b64 or None, "secrets": sec or None}


def _as_path(v: str) -> str | None:
    """A string that names a file: absolute, ~/, or a file:// uri -> a
    normalised absolute path."""
    if v.startswith("file://"):
        v = unquote(v[7:]) or "/"
    elif v.startswith("~/"):
        v = "/root/" + v[2:]
    elif v.startswith("../") and "\n" not in v:
        v = "/" + v  # climbing from anywhere ends at or below /: ../../etc/passwd names /etc/passwd
    if not v.startswith("/") or "\n" in v or "\x00" in v:
        return None
    return os.path.normpath(v)


class Pair:
    """Client-server pairs: new ones, and ones outside an allowlist."""

    def __init__(self, s: dict, known=()):
        self.s = s
        self.known = _Lru(100000)
        for k in known:
            self.known[k] = True
        self.t0 = None

    def observe(self, sess: _Session, t: float) -> dict:
        if self.t0 is None:
            self.t0 = t
        key = f"{sess.client} -> {sess.server}"
        new = key not in self.known
        self.known.touch(key, lambda: True)
        allowed = None
        if self.s["allow"]:
            allowed = any(_glob_any(a.get("client", "*"), (sess.client_name, sess.client_exe, sess.client,
                                                             sess.principal))
                          and _glob_any(a.get("server", "*"), (sess.server_name, sess.server_exe, sess.server))
                          for a in self.s["allow"])
        learning = t - self.t0 < self.s["learn"]
        return {"client": sess.client, "server": sess.server, "key": key, "new": new and not learning,
                "allowed": allowed, "learning": learning}


def _glob_any(pat: str, values) -> bool:
    return any(v is not None and fnmatch.fnmatchcase(v, pat) for v in values)


class Size:
    """Response sizes per tool (or resource, or method) of a server: an EWMA
    of log2(bytes); far above it is an anomaly."""

    class _K:
        __slots__ = ("n", "mean")

        def __init__(self):
            self.n, self.mean = 0, 0.0

    def __init__(self, s: dict):
        self.s = s
        self.keys = _Lru(50000)

    def observe(self, key: str, size: int, req_size: int | None) -> dict:
        s = self.s
        k = self.keys.touch(key, Size._K)
        typical = 2 ** k.mean if k.n else None
        anomalous = (k.n >= s["min_samples"] and size >= s["min_bytes"] and typical is not None
                     and size >= s["factor"] * typical)
        lg = math.log2(max(size, 1))
        k.n += 1
        a = max(1.0 / k.n, 1 - 0.5 ** (1 / max(s["half_life"], 1)))
        k.mean += a * (lg - k.mean)
        return {"response": size, "request": req_size, "typical": round(typical) if typical else None,
                "samples": k.n - 1, "ratio": round(size / typical, 2) if typical else None,
                "anomalous": anomalous, "key": key,
                "amplification": round(size / req_size, 1) if req_size else None}


class Behaviour:
    """A tool's kernel activity against its own past calls."""

    class _K:
        __slots__ = ("calls", "wrote", "dests")

        def __init__(self):
            self.calls, self.wrote, self.dests = 0, False, set()

    def __init__(self, s: dict):
        self.s = s
        self.keys = _Lru(20000)

    def called(self, key: str) -> None:
        self.keys.touch(key, Behaviour._K).calls += 1

    def observe(self, key: str, rtype: str, ev) -> dict | None:
        k = self.keys.get(key)
        if k is None:
            return None
        prior = max(0, k.calls - 1)
        learned = prior >= self.s["min_calls"]
        out = {"tool_key": key, "prior_calls": prior, "learning": not learned, "first_write": False,
               "new_destination": False, "destination": None}
        if rtype == "open":
            risk = _get(ev, "risk")
            path = _get(ev, "resolved") or _get(ev, "path") or ""
            if risk in ("write", "create", "truncate") and not path.startswith(("/dev/", "/proc/")) and not k.wrote:
                k.wrote = True
                out["first_write"] = learned
        elif rtype == "connect":
            dest = _destination(ev)
            if dest is None:
                return out
            out["destination"] = dest
            if dest not in k.dests:
                if len(k.dests) < 4096:
                    k.dests.add(dest)
                out["new_destination"] = learned
        return out


def _destination(ev) -> str | None:
    """A connect's destination as the behaviour facts name it: ADDR:PORT, [V6]:PORT or a Unix path."""
    dest = _get(ev, "unix_path")
    if dest:
        return dest
    addr = _get(ev, "address")
    if addr is None:
        return None
    return f"[{addr}]:{_get(ev, 'port')}" if ":" in addr else f"{addr}:{_get(ev, 'port')}"


class Novelty:
    """A server's kernel activity against everything it did before, across its tools:
    destinations, programs and the directories it writes to that are new once it has
    served min_calls calls, and its first connect beyond loopback whenever it comes."""

    class _K:
        __slots__ = ("calls", "dests", "programs", "dirs", "egress")

        def __init__(self):
            self.calls, self.dests, self.programs, self.dirs, self.egress = 0, set(), set(), set(), False

    def __init__(self, s: dict):
        self.s = s
        self.keys = _Lru(20000)

    def called(self, server: str) -> None:
        self.keys.touch(server, Novelty._K).calls += 1

    @staticmethod
    def _add(seen: set, v) -> bool:
        if v in seen:
            return False
        if len(seen) < 4096:
            seen.add(v)
        return True

    def observe(self, server: str, rtype: str, ev) -> dict | None:
        k = self.keys.get(server)
        if k is None:
            return None
        prior = max(0, k.calls - 1)
        learned = prior >= self.s["min_calls"]
        out = {"server": server, "prior_calls": prior, "learning": not learned, "new_destination": False,
               "destination": None, "first_egress": False, "new_program": False, "program": None,
               "new_write_dir": False, "write_dir": None}
        if rtype == "connect":
            dest = _destination(ev)
            if dest is None:
                return out
            if not _get(ev, "unix_path") and _get(ev, "scope") not in ("loopback", "unix", None) and not k.egress:
                k.egress = True
                out["first_egress"] = True
            out["destination"] = dest
            out["new_destination"] = self._add(k.dests, dest) and learned
        elif rtype == "exec":
            if _get(ev, "result") not in (0, None):
                return out
            prog = _get(ev, "exe") or _get(ev, "filename")
            out["program"] = prog
            out["new_program"] = bool(prog) and self._add(k.programs, prog) and learned
        elif rtype == "open":
            path = _get(ev, "resolved") or _get(ev, "path") or ""
            if _get(ev, "risk") in ("write", "create", "truncate") and path.startswith("/") and \
                    not path.startswith(("/dev/", "/proc/")):
                d = os.path.dirname(path)
                out["write_dir"] = d
                out["new_write_dir"] = self._add(k.dirs, d) and learned
        return out


class ToolDefs:
    """Each server's tool definitions from its tools/list answers: a digest per tool of
    its name, description, input schema and annotations, kept across sessions (and, read
    back from the store at start, across restarts). A changed or added definition on a
    server whose tools were seen before is reported with what changed. The annotations
    (readOnlyHint, openWorldHint...) are what a call's kernel events are held against."""

    def __init__(self):
        self.servers = _Lru(5000)     # server label -> {tool name: (digest, definition)}
        self._decl = _Lru(20000)      # (tool name, digest) -> its decl facts, worked out once

    def declared(self, server: str | None, tool: str | None) -> dict | None:
        """The decl facts of a tool's last definition (None if never listed), once per definition:
        asked on every kernel event of its calls."""
        d = (self.servers.get(server) or {}).get(tool) if server and tool else None
        if not d or not isinstance(d[1], dict):
            return None
        key = (tool, d[0])
        got = self._decl.get(key)
        if got is None:
            got = _declared(d[1], tool)
            self._decl.put(key, got)
        return got

    def observe(self, server: str, result) -> dict | None:
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return None
        defs = {}
        for t in tools[:2000]:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                d = {k: t.get(k) for k in ("description", "inputSchema", "annotations")}
                defs[t["name"]] = (hashlib.blake2b(_canonical(d).encode(), digest_size=16).hexdigest(), d)
        old = self.servers.get(server)
        merged = dict(old or {})
        merged.update(defs)
        self.servers.put(server, merged)
        if old is None:
            return {"known": False, "tools": len(defs), "changed": None, "added": None, "diff": None}
        changed = sorted(n for n in defs if n in old and old[n][0] != defs[n][0])
        added = sorted(n for n in defs if n not in old)
        diff = "; ".join([_tool_diff(n, old[n][1], defs[n][1]) for n in changed] +
                         [f"{n}: new tool ({_short_text((defs[n][1] or {}).get('description'))})" for n in added])
        return {"known": True, "tools": len(defs), "changed": changed or None, "added": added or None,
                "diff": diff or None}


def _canonical(v) -> str:
    import json
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)


def _short_text(v, n: int = 80) -> str:
    t = v if isinstance(v, str) else _canonical(v)
    return t if len(t) <= n else t[:n - 1] + "…"


def _tool_diff(name: str, old: dict, new: dict) -> str:
    """What changed in one tool's definition, in words."""
    parts = []
    if old.get("description") != new.get("description"):
        parts.append(f"description {_short_text(old.get('description'))!r} -> {_short_text(new.get('description'))!r}")
    os_, ns = old.get("inputSchema") or {}, new.get("inputSchema") or {}
    if _canonical(os_) != _canonical(ns):
        op = set((os_.get("properties") or {}) if isinstance(os_, dict) else ())
        np_ = set((ns.get("properties") or {}) if isinstance(ns, dict) else ())
        what = [f"+{x}" for x in sorted(np_ - op)] + [f"-{x}" for x in sorted(op - np_)]
        parts.append("input schema changed" + (f" ({', '.join(what)})" if what else ""))
    if _canonical(old.get("annotations")) != _canonical(new.get("annotations")):
        parts.append(f"annotations {_short_text(old.get('annotations'))} -> {_short_text(new.get('annotations'))}")
    return f"{name}: " + ", ".join(parts)


# a tool that says it runs commands: a word of its name, or its description or title
_COMMAND_WORDS = frozenset(("shell", "bash", "sh", "zsh", "terminal", "cmd", "command", "commands", "subprocess",
                            "powershell", "pwsh", "console"))
_COMMAND_TEXT = re.compile(
    r"(?i)\b(?:run|runs|running|execute|executes|executing|exec)\s+(?:(?:a|an|the|any|arbitrary|one|given)\s+)*"
    r"(?:shell\s+|system\s+|terminal\s+|bash\s+)?(?:commands?|command\s+lines?|shell|scripts?|bash)\b"
    r"|\bshell\s+commands?\b|\bthrough\s+/bin/(?:ba)?sh\b|\bin\s+a\s+(?:shell|terminal)\b")


def runs_commands(name: str | None, definition: dict | None) -> bool:
    """What a tool's name, description or annotations' title say: it runs commands."""
    words = re.split(r"[_\-.\s]+|(?<=[a-z])(?=[A-Z])", name or "")
    if any(w.lower() in _COMMAND_WORDS for w in words if w) or (name or "").lower() == "exec":
        return True
    d = definition or {}
    ann = d.get("annotations") if isinstance(d.get("annotations"), dict) else {}
    text = " ".join(str(t) for t in (d.get("description"), ann.get("title")) if isinstance(t, str))
    text = text[:4000]
    # "does not run commands", "never executes shell commands": said, but not of itself
    return any(not re.search(r"(?i)\b(?:not|never|no|cannot|can't|won't|doesn't)\s+(?:\w+\s+)?$",
                             text[max(0, m.start() - 24):m.start()])
               for m in _COMMAND_TEXT.finditer(text))


def _declared(defn: dict | None, tool: str | None = None) -> dict | None:
    """What a tool's definition declares, as facts (null: the tool was never listed): its
    annotations (read_only, closed_world...), and whether it says it runs commands."""
    if defn is None:
        return None
    ann = defn.get("annotations") if isinstance(defn.get("annotations"), dict) else {}
    return {"read_only": ann.get("readOnlyHint") is True, "destructive": ann.get("destructiveHint") is True,
            "closed_world": ann.get("openWorldHint") is False, "open_world": ann.get("openWorldHint") is True,
            "runs_commands": runs_commands(tool, defn),
            "annotations": _short_text(ann, 200) if ann else None}


# --- all of them, over the record stream ---------------------------------------

KERNEL = frozenset(("open", "exec", "connect", "fork", "exit", "policy"))


class Detectors:
    """Facts for each record, in stream order. observe(record, type) -> facts."""

    def __init__(self, conf: dict, flagger=None, known_pairs=(), known_tools=()):
        self.conf = conf
        self.rate = Rate(conf["rate"])
        self.args = Args(conf["args"], flagger)
        self.content = Content(conf["content"])
        self.pair = Pair(conf["pair"], known_pairs)
        self.size = Size(conf["size"])
        self.behaviour = Behaviour(conf["behaviour"])
        self.novelty = Novelty(conf["novelty"])
        self.tooldefs = ToolDefs()
        self.identity = Identity(conf["identity"])
        for server, result in known_tools:     # what the store says each server offered before
            self.tooldefs.observe(server, result)
        self.sessions: _Lru = _Lru(50000)
        # call id -> CallInfo (it holds the arguments: bounded to the last 50k calls;
        # an older call's late kernel events keep their call id, without its facts)
        self.calls: _Lru = _Lru(50000)

    # --- what was learned, across restarts (the store's baselines table) ------------
    SNAPSHOT_VERSION = 1
    SNAPSHOT_KEYS = 5000   # the most recently used keys of each detector

    def snapshot(self) -> dict:
        """What the detectors learned, as plain data: rate baselines of learned keys, size
        baselines, each tool's and each server's history (tool definitions and pairs are
        read back from the stored records instead)."""
        n = self.SNAPSHOT_KEYS

        def last(lru):
            return list(lru.items())[-n:]
        rate = {k: [round(v.base, 6), v.buckets] for k, v in last(self.rate.keys) if v.buckets > 0}
        rate.update({k: list(v) for k, v in list(self.rate.restored.items())[-n:] if k not in rate})
        return {"v": self.SNAPSHOT_VERSION, "settings": {k: self.conf[k] for k in ("rate", "size")},
                "rate": rate, "population": self.rate.population,
                "size": {k: [v.n, round(v.mean, 6)] for k, v in last(self.size.keys)},
                "behaviour": {k: [v.calls, v.wrote, sorted(v.dests)[:512]] for k, v in last(self.behaviour.keys)},
                "novelty": {k: [v.calls, sorted(v.dests)[:512], sorted(v.programs)[:512], sorted(v.dirs)[:512],
                                v.egress] for k, v in last(self.novelty.keys)},
                "identity": {k: sorted(v)[:64] for k, v in last(self.identity.seen)}}

    def restore(self, snap: dict) -> str:
        """Take back a snapshot; returns what was restored, in words (or why not)."""
        if not isinstance(snap, dict) or snap.get("v") != self.SNAPSHOT_VERSION:
            return "baselines not restored: saved by another version"
        same = snap.get("settings") == {k: self.conf[k] for k in ("rate", "size")}
        if same:   # rate and size baselines mean something only under the same settings
            self.rate.restored = {k: (float(b), int(n)) for k, (b, n) in snap.get("rate", {}).items()}
            self.rate.population = {k: float(v) for k, v in snap.get("population", {}).items()}
            for k, (cnt, mean) in snap.get("size", {}).items():
                x = Size._K()
                x.n, x.mean = int(cnt), float(mean)
                self.size.keys.put(k, x)
        for k, (calls, wrote, dests) in snap.get("behaviour", {}).items():
            x = Behaviour._K()
            x.calls, x.wrote, x.dests = int(calls), bool(wrote), set(dests)
            self.behaviour.keys.put(k, x)
        for k, (calls, dests, programs, dirs, egress) in snap.get("novelty", {}).items():
            x = Novelty._K()
            x.calls, x.dests, x.programs, x.dirs, x.egress = int(calls), set(dests), set(programs), set(dirs), \
                bool(egress)
            self.novelty.keys.put(k, x)
        for k, progs in (snap.get("identity") or {}).items():
            self.identity.seen.put(k, set(progs))
        return (f"baselines restored: {len(self.rate.restored)} rates, {len(self.size.keys)} sizes, "
                f"{len(self.behaviour.keys)} tools, {len(self.novelty.keys)} servers, "
                f"{len(self.identity.seen)} client names"
                + ("" if same else " (rates and sizes left out: their settings changed)"))

    def reconfigure(self, conf: dict, flagger=None) -> None:
        """New settings: a detector whose settings changed starts afresh,
        the others keep what they learned."""
        if conf["rate"] != self.conf["rate"]:
            self.rate = Rate(conf["rate"])
        self.args = Args(conf["args"], flagger or self.args.flagger)
        self.content = Content(conf["content"])
        if conf["pair"] != self.conf["pair"]:
            known = list(self.pair.known)
            self.pair = Pair(conf["pair"], known)
        if conf["size"] != self.conf["size"]:
            self.size = Size(conf["size"])
        if conf["behaviour"] != self.conf["behaviour"]:
            self.behaviour = Behaviour(conf["behaviour"])
        if conf["novelty"] != self.conf["novelty"]:
            self.novelty = Novelty(conf["novelty"])
        if conf["identity"] != self.conf["identity"]:
            seen = self.identity.seen
            self.identity = Identity(conf["identity"])
            self.identity.seen = seen
        self.conf = conf

    def observe(self, r, rtype: str) -> dict:
        if rtype in KERNEL:
            return self._kernel(r, rtype)
        if rtype == "mcp":
            return self._mcp(r)
        if rtype == "session":
            return self._session(r)
        if rtype == "call":
            p = _get(r, "principal")
            pid = _get(p, "id") if isinstance(p, dict) else None
            facts = {"call": {"id": _get(r, "call_id"), "tool": _get(r, "tool"), "method": _get(r, "method"),
                              "session": _get(r, "session"), "arguments": _get(r, "arguments"),
                              "client": _ident(_get(r, "client"), pid), "server": _ident(_get(r, "server")),
                              "principal": pid}}
            chain = _chain(_get(r, "timeline") or ())
            if chain is not None:
                facts["chain"] = chain
            return facts
        return {}

    def _sess(self, sid) -> _Session:
        return self.sessions.touch(sid, _Session)

    def _session(self, r) -> dict:
        s = self._sess(_get(r, "session"))
        ci, si = _get(r, "client_info"), _get(r, "server_info")
        for end in _get(r, "ends") or ():
            role, exe = _get(end, "role"), _get(end, "exe")
            if exe and role == "client":
                s.client_exe = os.path.basename(exe)
            elif exe and role == "server":
                s.server_exe = os.path.basename(exe)
        if _get(r, "role") == "server" and _get(r, "exe") and not s.server_exe:
            s.server_exe = os.path.basename(_get(r, "exe"))
        if _name(ci):
            s.client_name = _name(ci)
        if _name(si):
            s.server_name = _name(si)
        p = _get(r, "principal")
        if isinstance(p, dict) and p.get("id"):
            s.principal = p["id"]
        # the client is who it is (its principal), whatever it calls itself: two clients with the
        # same clientInfo name are two keys
        s.client = _label(s.client_name, s.principal or s.client_exe)
        s.server = _label(s.server_name, s.server_exe)
        facts = {}
        if not s.identified and s.client_name and isinstance(p, dict):
            ident = self.identity.observe(s.client_name, p)
            if ident is not None:
                s.identified = True
                facts["identity"] = ident
        if not s.paired and s.client_name and s.server_name:
            s.paired = True
            facts["pair"] = self.pair.observe(s, (_get(r, "ktime_ns") or 0) / 1e9)
        if _get(r, "event") == "end":
            self.sessions.pop(_get(r, "session"), None)
        return facts

    def _mcp(self, m) -> dict:
        kind, direction = _get(m, "kind"), _get(m, "direction")
        sid = _get(m, "session")
        if kind == "request":
            if direction != C2S:
                return {}
            s = self._sess(sid)
            method, params = _get(m, "method"), _get(m, "params")
            c = CallInfo()
            # the call id mcp.py gave the request (a record from before it did: made the same way)
            c.id = _get(m, "call_id") or call_id(sid, _get(m, "id"), _get(m, "ktime_ns"))
            c.answered = False
            c.tool, c.method, c.session = tool_of(method, params), method, sid
            c.client, c.server, c.req_size = s.client, s.server, _get(m, "size")
            http = _get(m, "http")
            c.principal = (_get(http, "principal") if http is not None else None) or s.principal
            c.key = f"{s.server}/{c.tool or method}"
            c.arguments = params.get("arguments") if isinstance(params, dict) and method in (
                "tools/call", "prompts/get") else (params.get("uri") if isinstance(params, dict) else None)
            self.calls.put(c.id, c)
            roots = declared_roots(params.get("inputResponses")) if isinstance(params, dict) else None
            if roots is not None:
                s.roots = roots
            self.behaviour.called(c.key)
            self.novelty.called(s.server)
            t = (_get(m, "ktime_ns") or 0) / 1e9
            rate = {"client": self.rate.observe(f"client {s.client}", t),
                    "server": self.rate.observe(f"server {s.server}", t),
                    "method": self.rate.observe(f"method {s.server} {method}", t)}
            if c.tool is not None:
                rate["tool"] = self.rate.observe(f"tool {c.key}", t)
            rate["burst"] = any(v["burst"] for v in rate.values())
            facts = {"call": c.as_facts(), "rate": rate}
            if method in ("tools/call", "prompts/get", "resources/read") and isinstance(params, dict):
                facts["args"] = self.args.observe(c.arguments, s.roots)
                if method == "tools/call":
                    d = self.tooldefs.declared(c.server, c.tool)
                    if d is not None:
                        facts["decl"] = d
            return facts
        if kind in ("response", "error"):
            if direction == C2S:  # the client answering the server: roots/list
                if _get(m, "method") == "roots/list":
                    roots = declared_roots({"r": _get(m, "result")})
                    if roots is not None:
                        self._sess(sid).roots = roots
                return {}
            # the call mcp.py paired this response with; its first answer only
            c = self.calls.get(_get(m, "call_id"))
            if c is None or c.answered:
                return {}
            c.answered = True
            facts = {"call": c.as_facts(), "size": self.size.observe(c.key, _get(m, "size") or 0, c.req_size)}
            if c.method == "tools/list" and kind == "response":
                t = self.tooldefs.observe(c.server, _get(m, "result"))
                if t is not None:
                    facts["tooldefs"] = t
            if c.method in ("tools/call", "prompts/get", "resources/read", "tools/list", "prompts/list"):
                said = self.content.observe(_get(m, "result") if kind == "response" else _get(m, "error"))
                if said is not None:
                    facts["content"] = said
            return facts
        return {}

    def _kernel(self, ev, rtype: str) -> dict:
        a = _get(ev, "attribution")
        if a is None:
            return {}
        cid = _get(a, "call")
        if cid is None:
            cands = _get(a, "candidates")
            if not cands:
                return {}
            infos = [self.calls.get(x) for x in cands]
            keys = {c.key for c in infos if c is not None}
            facts = {"call": {"id": None, "candidates": cands, "tool": None, "method": None}}
            if len(keys) == 1 and all(infos):
                c = infos[0]
                facts["call"].update(tool=c.tool, method=c.method, session=c.session, client=c.client,
                                     server=c.server)
                b = self.behaviour.observe(c.key, rtype, ev)
                if b is not None:
                    facts["behaviour"] = b
            servers = {c.server for c in infos if c is not None}
            if len(servers) == 1 and all(infos) and rtype in ("open", "connect", "exec"):
                n = self.novelty.observe(servers.pop(), rtype, ev)   # the same server, whichever call
                if n is not None:
                    facts["novelty"] = n
            return facts
        c = self.calls.get(cid)
        if c is None:
            return {"call": {"id": cid}}
        facts = {"call": c.as_facts()}
        if rtype in ("open", "connect"):
            b = self.behaviour.observe(c.key, rtype, ev)
            if b is not None:
                facts["behaviour"] = b
        if rtype in ("open", "connect", "exec"):
            n = self.novelty.observe(c.server, rtype, ev)
            if n is not None:
                facts["novelty"] = n
            d = self.tooldefs.declared(c.server, c.tool)
            if d is not None:
                facts["decl"] = d
        return facts


_OFF_HOST = ("private", "public", "link-local")


def _chain(timeline) -> dict | None:
    """Within one call's timeline (its own events: exact, thread, wake-up or argument, not
    ambiguous ones): a sensitive file read, then a connect off the host. Both named."""
    read = None
    for e in timeline:
        if _get(e, "attribution") == "ambiguous":
            continue
        t = _get(e, "type")
        if t == "open" and read is None and _get(e, "sensitive") and not _get(e, "error"):
            read = e
        elif t == "connect" and read is not None and _get(e, "scope") in _OFF_HOST and not (
                _get(e, "error") not in (None, "EINPROGRESS")):
            dest = f"{_get(e, 'address')}:{_get(e, 'port')}"
            return {"sensitive_then_egress": True, "read": _get(read, "path"), "sensitive": _get(read, "sensitive"),
                    "read_ms": _get(read, "t_ms"), "connect": dest, "connect_ms": _get(e, "t_ms"),
                    "read_pid": _get(read, "pid"), "connect_pid": _get(e, "pid")}
    return None


def _label(name: str | None, exe: str | None) -> str:
    if name and exe:
        return f"{name} ({exe})"
    return name or exe or "unknown"


def _ident(end, principal: str | None = None) -> str | None:
    if end is None:
        return None
    info = _get(end, "info")
    exe = _get(end, "exe")
    return _label(_name(info), principal or (os.path.basename(exe) if exe else None))


def known_pairs(session_records) -> list[str]:
    """The client-server pairs of stored session records (JSON), as Pair keys:
    what `New client-server pair` has already seen."""
    import msgspec
    d = Detectors(settings(None))
    keys = []
    for rec in session_records:
        try:
            facts = d.observe(msgspec.json.decode(rec), "session")
        except (msgspec.DecodeError, TypeError, ValueError):
            continue
        p = facts.get("pair")
        if p is not None:
            keys.append(p["key"])
    return keys


def known_tools(session_records, answers) -> list[tuple[str, dict]]:
    """(server label, tools/list result) for stored tools/list answers (JSON, oldest first),
    the label made from the stored session records (JSON) as the live run makes it: what
    `Tool definition changed` compares the next answer of each server with."""
    import msgspec
    d = Detectors(settings(None))
    labels = {}
    for rec in session_records:
        try:
            r = msgspec.json.decode(rec)
            d.observe(r, "session")
        except (msgspec.DecodeError, TypeError, ValueError, AttributeError):
            continue
        if isinstance(r, dict) and r.get("session") is not None:
            s = d.sessions.get(r["session"])
            labels[r["session"]] = s.server if s is not None else None
            if s is None:   # an end record: _session dropped it; make the label again
                s2 = _Session()
                s2.server_name = _name(r.get("server_info"))
                exe = next((e.get("exe") for e in r.get("ends") or () if isinstance(e, dict)
                            and e.get("role") == "server" and e.get("exe")), None)
                s2.server_exe = os.path.basename(exe) if exe else None
                labels[r["session"]] = _label(s2.server_name, s2.server_exe)
    out = []
    for rec in answers:
        try:
            m = msgspec.json.decode(rec)
        except msgspec.DecodeError:
            continue
        label = labels.get(m.get("session")) if isinstance(m, dict) else None
        if label and label != "unknown" and isinstance(m.get("result"), dict):
            out.append((label, m["result"]))
    return out
