"""Where events go. JSON Lines for now: one object per line, `type` first."""
from __future__ import annotations

import os
import time
from typing import Any, Iterable

import msgspec


def default_state_dir() -> str:
    env = os.environ.get("MCPWITNESS_STATE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/mcpwitness"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "mcpwitness")


def default_jsonl_path(kind: str = "run") -> str:
    d = os.path.join(default_state_dir(), "events")
    os.makedirs(d, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(d, f"{kind}-{stamp}-{os.getpid()}.jsonl")


class JsonlSink:
    """Appends events to a JSON Lines file, one flush per batch so that a
    reader (tail -f, a crash) sees whole lines. Payloads hold secrets: the file
    is created 0600."""

    def __init__(self, path: str):
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._f = os.fdopen(fd, "ab", buffering=1 << 20)
        self._enc = msgspec.json.Encoder()
        self.lines = 0

    def write(self, events: Iterable[Any]) -> None:
        events = list(events)
        if not events:
            return
        self._f.write(self._enc.encode_lines(events))
        self._f.flush()
        self.lines += len(events)

    def write_encoded(self, events: list, lines: list[bytes]) -> None:
        """events, already encoded as JSON (one bytes object each)."""
        if lines:
            self._f.write(b"\n".join(lines) + b"\n")
            self._f.flush()
            self.lines += len(lines)

    def write_record(self, record) -> None:
        self.write([record])

    def close(self) -> None:
        self._f.close()


_SELF = frozenset({"start", "stats", "discovered", "policy_load", "rules", "alert"})


class ListSink:
    """Keeps events in memory (for library users and tests)."""

    def __init__(self):
        self.events: list = []
        self.records: list[dict] = []
        self.path = "<memory>"

    def write(self, events: Iterable[Any]) -> None:
        for ev in events:
            if isinstance(ev, dict) or type(ev).__struct_config__.tag in _SELF:
                self.write_record(ev)
            else:
                self.events.append(ev)

    def write_record(self, record) -> None:
        """Records about the run (start, stats, discovered, policy, rules, alerts): kept as written (JSON objects)."""
        self.records.append(record if isinstance(record, dict) else msgspec.to_builtins(record))

    def close(self) -> None:
        pass


class TeeSink:
    """Every record to several sinks (JSON Lines and the store); the first names the output."""

    def __init__(self, *sinks):
        self.sinks = [s for s in sinks if s is not None]
        self.path = self.sinks[0].path
        self._enc = msgspec.json.Encoder()

    def write(self, events: Iterable[Any]) -> None:
        events = list(events)
        if not events:
            return
        enc = self._enc.encode
        encoded = [enc(e) for e in events]  # once, for every sink that can take it
        for s in self.sinks:
            take = getattr(s, "write_encoded", None)
            if take is not None:
                take(events, encoded)
            else:
                s.write(events)

    def write_record(self, record) -> None:
        for s in self.sinks:
            s.write_record(record)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def default_db_path() -> str:
    return os.path.join(default_state_dir(), "mcpwitness.db")
