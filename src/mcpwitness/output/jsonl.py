"""Where events go. JSON Lines for now: one object per line, `type` first."""
from __future__ import annotations

import errno
import os
import re
import stat
import time
from typing import Any, Iterable

import msgspec

from ..util import now_iso
from .chain import VERSION as CHAIN_VERSION, ZERO, Chain, resume_state


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
    is created 0600.

    Rotation (rotate_size bytes, rotate_age seconds; 0 = never): the file is
    renamed to NAME.<UTC time>.jsonl between two batches and a new one is
    started at the same path; the newest `keep` rotated files are kept."""

    def __init__(self, path: str, rotate_size: int = 0, rotate_age: float = 0, keep: int = 10,
                 chain: bool = True):
        self.path = path
        self.rotate_size = rotate_size
        self.rotate_age = rotate_age
        self.keep = keep
        self.rotations = 0
        self.removed = 0           # rotated files deleted beyond `keep`
        self._last = ("", 0)       # the last rotated name: its second and its -N
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self._enc = msgspec.json.Encoder()
        self.lines = 0
        # the hash chain (output/chain.py): None with chain=False
        self.chain = Chain() if chain else None
        self._prev = (None, ZERO, 0)   # the file before this one: name, last link, last seq
        self._open()

    def _open(self) -> None:
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        self._f = os.fdopen(fd, "ab", buffering=1 << 20)
        st = os.fstat(fd)
        self._size = st.st_size
        # an existing file's age counts from its creation (ctime: its last rename or chmod at worst)
        self._opened = st.st_ctime if st.st_size else time.time()
        if self.chain is None:
            return
        rec = {"type": "chain", "event": "begin", "v": CHAIN_VERSION, "time": now_iso(ns=True),
               "file": os.path.basename(self.path), "hash": "blake2b-128", "agent_pid": os.getpid()}
        if st.st_size:
            head, seq, cut = resume_state(self.path)
            if cut:
                self._f.write(b"\n")            # close the line a crash cut, then say so
                self._size += 1
            if seq:
                rec.update(event="resume", prev=head.hex(), prev_seq=seq, cut_bytes=cut)
                self.chain = Chain(head, seq)
            else:   # a file written without the chain: start one here
                rec.update(prev=ZERO.hex(), prev_file=None, prev_seq=0, cut_bytes=cut)
                self.chain = Chain()
        else:
            name, head, seq = self._prev
            rec.update(prev=head.hex(), prev_file=name, prev_seq=seq)
            self.chain = Chain(head, 0)
        self._emit_lines([self._enc.encode(rec)], count=False)

    def write(self, events: Iterable[Any]) -> None:
        events = list(events)
        if not events:
            return
        if self.chain is None:
            self._emit(self._enc.encode_lines(events), len(events))
        else:
            enc = self._enc.encode
            self._emit_lines([enc(e) for e in events])

    def write_encoded(self, events: list, lines: list[bytes]) -> None:
        """events, already encoded as JSON (one bytes object each)."""
        if lines:
            if self.chain is None:
                self._emit(b"\n".join(lines) + b"\n", len(lines))
            else:
                self._emit_lines(lines)

    def _emit_lines(self, lines: list[bytes], count: bool = True) -> None:
        data = self.chain.seal_lines(lines)
        if count:
            self._emit(data, len(lines))
        else:   # a chain record: written and flushed, never a reason to rotate
            self._f.write(data)
            self._f.flush()
            self._size += len(data)

    def _emit(self, data: bytes, n: int) -> None:
        self._f.write(data)
        self._f.flush()
        self.lines += n
        self._size += len(data)
        if (self.rotate_size and self._size >= self.rotate_size) or \
                (self.rotate_age and time.time() - self._opened >= self.rotate_age):
            self.rotate()

    def rotated_files(self) -> list[str]:
        return rotated_files(self.path)

    def rotate(self) -> str | None:
        """Start a new file; the current one is renamed (returned)."""
        if self.chain is not None:   # the checkpoint the next file starts from
            self._emit_lines([self._enc.encode({"type": "chain", "event": "rotate", "time": now_iso(ns=True),
                                                "lines": self.chain.seq + 1,
                                                "next_file": os.path.basename(self.path)})], count=False)
        self._f.close()
        d, base, stem = _parts(self.path)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        # within one second: -2, -3... after the plain name, never reusing one pruned meanwhile
        n = self._last[1] + 1 if self._last[0] == stamp else 1

        def name(k):
            return os.path.join(d, f"{stem}.{stamp}.jsonl" if k == 1 else f"{stem}.{stamp}-{k}.jsonl")
        while os.path.exists(name(n)):
            n += 1
        target = name(n)
        self._last = (stamp, n)
        try:
            os.rename(self.path, target)
        except OSError:
            target = None          # keep appending to the same file rather than lose records
        if self.chain is not None:
            self._prev = (os.path.basename(target or self.path), self.chain.head, self.chain.seq)
        self._open()
        if target is not None:
            self.rotations += 1
            old = self.rotated_files()
            for f in old[:max(0, len(old) - self.keep)]:
                try:
                    os.unlink(f)
                    self.removed += 1
                except OSError:
                    pass
        return target

    def write_record(self, record) -> None:
        self.write([record])

    def close(self) -> None:
        self._f.close()


def _parts(path: str) -> tuple[str, str, str]:
    """(directory, file name, name without .jsonl): what rotated names are made of."""
    d, base = os.path.split(os.path.abspath(path))
    return d, base, base[:-6] if base.endswith(".jsonl") else base


def rotated_files(path: str) -> list[str]:
    """The rotated predecessors of the JSON Lines file at path, oldest first."""
    d, base, stem = _parts(path)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    found = []
    for n in names:
        m = _ROTATED.fullmatch(n[len(stem) + 1:-6]) if n.startswith(stem + ".") and n.endswith(".jsonl") else None
        if m and n != base:  # in the order they were written: time, then the -N of the same second
            found.append(((m.group(1), int(m.group(2) or 1)), os.path.join(d, n)))
    return [p for _, p in sorted(found)]


_ROTATED = re.compile(r"(\d{8}T\d{6}Z)(?:-(\d+))?")


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
