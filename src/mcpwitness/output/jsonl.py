"""Where events go. JSON Lines for now: one object per line, `type` first."""
from __future__ import annotations

import errno
import os
import stat
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


def private_dir(path: str) -> str:
    """path as a directory only this user (or root) can change: made 0700 if
    missing; refused if it is a symbolic link, not a directory, owned by
    another user, or writable by others (where another user could swap the
    files audit records are written to)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    why = None
    if stat.S_ISLNK(st.st_mode):
        why = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        why = "is not a directory"
    elif st.st_uid not in (os.geteuid(), 0):
        why = f"is owned by uid {st.st_uid}"
    elif st.st_mode & 0o022:
        why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    if why:
        raise PermissionError(errno.EPERM, f"{path} {why}: refusing to keep audit records there")
    return path


def open_private(path: str, flags: int) -> int:
    """Open (create 0600) a file of ours, never through a symbolic link."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, f"{path} is a symbolic link: refusing to write audit records "
                                               "through it") from None
        raise


def default_jsonl_path(kind: str = "run") -> str:
    d = private_dir(os.path.join(private_dir(default_state_dir()), "events"))
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
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)
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


def default_db_path(create: bool = True) -> str:
    """The store's default place; create=True (writers): its directory made
    private, or refused (private_dir)."""
    d = default_state_dir()
    return os.path.join(private_dir(d) if create else d, "mcpwitness.db")
