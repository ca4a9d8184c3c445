"""Kernel records -> typed events.

Mirrors bpf/mcpwitness.h. A ring record is one struct mw_event; an event whose
data does not fit continues in records with the same (tid, ts_ns). The
Decoder reassembles them and builds one msgspec struct per event; anything it
cannot complete is still emitted, marked truncated, with the reason.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Iterable, Iterator

import msgspec

# --- layout (checked against the object's BTF by tests/test_layout.py) ---
RECORD_SIZE = 512
EVENT_SIZE = RECORD_SIZE - 8
HDR_SIZE = 152
DATA_LEN = EVENT_SIZE - HDR_SIZE
ANCESTORS = 8
EVENT_FMT = "QQQq4QIHHIIIIII8III16s352s"
# the ring's own 8-byte header (len | BUSY | DISCARD, page offset) + the event
RECORD = struct.Struct("<II" + EVENT_FMT)
EVENT = struct.Struct("<" + EVENT_FMT)
PROC = struct.Struct("<QII8III")  # struct mw_proc
assert RECORD.size == RECORD_SIZE and EVENT.size == EVENT_SIZE

# tuple indices in a RECORD tuple
R_HDR, R_TS, R_START, R_CGROUP, R_RET = 0, 2, 3, 4, 5
R_ARG0 = 6
R_TYPE, R_SEQ, R_FLAGS, R_PID, R_TID, R_PPID, R_UID, R_ROOT, R_DEPTH = range(10, 19)
R_ANC = 19
R_DLEN, R_COMM, R_DATA = 27, 29, 30

EV_FORK, EV_EXEC, EV_EXIT, EV_OPEN, EV_CONNECT = 1, 2, 3, 4, 5
F_LAST, F_TRUNC, F_PATHERR, F_DEPTH = 0x1, 0x2, 0x4, 0x8

COUNTERS = [
    "ringbuf_full_events",   # events lost whole
    "ringbuf_full_chunks",   # continuation records lost (event truncated)
    "proc_map_full",         # children that could not be tracked
    "user_read_failures",    # user strings/structs unreadable
    "stale_entries",         # map entries dropped on pid reuse
    "events",                # events emitted
    "forks_tracked",         # children tracked in the kernel
    "threads_created",       # threads created in tracked processes
]

OPEN_SYSCALLS = {0: "openat", 1: "open", 2: "openat2", 3: "creat"}
EXEC_SYSCALLS = {4: "execve", 5: "execveat"}


class Event(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=False):
    ktime_ns: int
    time: str = ""
    pid: int
    tid: int
    ppid: int
    uid: int
    comm: str
    start_ns: int
    cgroup_id: int
    root: int
    ancestry: list[int]
    truncated: bool = False
    notes: list[str] = []


class ForkEvent(Event, tag="fork"):
    child_pid: int
    child_start_ns: int


class ExecEvent(Event, tag="exec"):
    filename: str
    exe: str | None
    argv: list[str]
    argv_bytes: int
    result: int
    error: str | None = None
    syscall: str | None = None


class ExitEvent(Event, tag="exit"):
    status: int
    exit_code: int | None
    signal: int | None
    signal_name: str | None
    core_dumped: bool


class OpenEvent(Event, tag="open"):
    syscall: str
    path: str
    resolved: str | None
    flags: list[str]
    flags_raw: int
    access: str
    mode: str | None
    dirfd: int | None
    result: int | None
    error: str | None


class ConnectEvent(Event, tag="connect"):
    fd: int
    family: str
    address: str | None
    port: int | None
    unix_path: str | None
    sock_type: str | None
    protocol: str | None
    result: int
    error: str | None


AnyEvent = ForkEvent | ExecEvent | ExitEvent | OpenEvent | ConnectEvent

# --- decoding helpers -----------------------------------------------------

_O_FLAGS = [  # x86_64/generic values; access mode handled apart
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"), (0o20000000 | 0o200000, "O_TMPFILE"),
]
_ACCESS = {0: ("O_RDONLY", "read"), 1: ("O_WRONLY", "write"), 2: ("O_RDWR", "readwrite"), 3: ("O_ACCMODE", "invalid")}


def decode_open_flags(flags: int) -> tuple[list[str], str]:
    name, access = _ACCESS[flags & 3]
    names = [name]
    for bit, n in _O_FLAGS:
        if n == "O_TMPFILE":
            if flags & bit == bit:
                names.append(n)
                names.remove("O_DIRECTORY") if "O_DIRECTORY" in names else None
        elif flags & bit and n != "O_LARGEFILE":
            names.append(n)
    if flags & 0o10000000:
        access = "path"
    return names, access


def errname(neg: int) -> str:
    return errno.errorcode.get(-neg, f"E{-neg}")


_SIGNALS = {int(s): s.name for s in __import__("signal").Signals}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}
_PROTOS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 262: "mptcp", 132: "sctp"}


def decode_sockaddr(raw: bytes) -> tuple[str, str | None, int | None, str | None]:
    """(family, address, port, unix_path) of a struct sockaddr as the program passed it."""
    if len(raw) < 2:
        return "unknown", None, None, None
    fam = struct.unpack_from("<H", raw)[0]
    if fam == socket.AF_INET and len(raw) >= 8:
        return "AF_INET", socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from(">H", raw, 2)[0], None
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return "AF_INET6", socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from(">H", raw, 2)[0], None
    if fam == socket.AF_UNIX:
        p = raw[2:]
        if p[:1] == b"\0":  # abstract namespace
            return "AF_UNIX", None, None, "@" + p[1:].rstrip(b"\0").decode("utf-8", "backslashreplace")
        return "AF_UNIX", None, None, p.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    if fam == 0:
        return "AF_UNSPEC", None, None, None
    return f"AF_{fam}", None, None, None


def _s(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _comm(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


class Decoder:
    """Records (RECORD tuples) -> typed events, in ring order.

    `ancestry(pid, inline)` may be given to extend lineages deeper than the
    kernel's inline MW_ANCESTORS (from userspace's process table).
    """

    def __init__(self, ancestry=None, wall_offset_ns: int | None = None):
        self.pending: dict[tuple[int, int], list] = {}
        self.ancestry = ancestry
        self.stats = {"records": 0, "events": 0, "incomplete": 0, "bad_records": 0}
        if wall_offset_ns is None:
            import time
            wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.wall_offset_ns = wall_offset_ns
        self._sec = -1
        self._prefix = ""

    def wall_time(self, ktime_ns: int) -> str:
        """ISO 8601 UTC with nanoseconds, from the kernel's monotonic stamp."""
        ns = ktime_ns + self.wall_offset_ns
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            import time
            self._sec, self._prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{frac:09d}Z"

    def feed(self, records: Iterable[tuple]) -> Iterator[AnyEvent]:
        stats = self.stats
        pending = self.pending
        for r in records:
            stats["records"] += 1
            flags = r[R_FLAGS]
            if r[R_SEQ] == 0:
                # a thread emits one event at a time: a new event from this
                # tid closes any of its events still waiting for chunks
                if pending:
                    yield from self._close_tid(r[R_TID])
                if flags & F_LAST:
                    ev = self._build(r, r[R_DATA][: r[R_DLEN]], False)
                    if ev is not None:
                        yield ev
                else:
                    pending[(r[R_TID], r[R_TS])] = [r, [r[R_DATA][: r[R_DLEN]]], 0]
                continue
            key = (r[R_TID], r[R_TS])
            p = pending.get(key)
            if p is None:  # first record lost: nothing to hang this on
                stats["bad_records"] += 1
                continue
            if r[R_SEQ] != p[2] + 1:
                p.append("continuation records lost (ring buffer full)")
            p[1].append(r[R_DATA][: r[R_DLEN]])
            p[2] = r[R_SEQ]
            if flags & F_LAST:
                del pending[key]
                ev = self._build(p[0], b"".join(p[1]), len(p) > 3)
                if ev is not None:
                    yield ev

    def _close_tid(self, tid: int) -> Iterator[AnyEvent]:
        for key in [k for k in self.pending if k[0] == tid]:
            yield from self._incomplete(key)

    def _incomplete(self, key) -> Iterator[AnyEvent]:
        p = self.pending.pop(key)
        self.stats["incomplete"] += 1
        ev = self._build(p[0], b"".join(p[1]), True)
        if ev is not None:
            ev.notes.append("continuation records lost (ring buffer full)")
            yield ev

    def flush(self) -> Iterator[AnyEvent]:
        """Emit whatever is still waiting for continuation records (at exit)."""
        for key in list(self.pending):
            yield from self._incomplete(key)

    def _common(self, r, truncated: bool) -> dict:
        depth = r[R_DEPTH]
        anc = [a for a in r[R_ANC:R_ANC + min(depth, ANCESTORS)]]
        if depth > ANCESTORS and self.ancestry is not None:
            anc = self.ancestry(r[R_PID], anc)
        ts = r[R_TS]
        notes = []
        if r[R_FLAGS] & F_PATHERR:
            notes.append("user memory unreadable: string or struct not captured")
        return dict(
            ktime_ns=ts, time=self.wall_time(ts), pid=r[R_PID], tid=r[R_TID], ppid=r[R_PPID], uid=r[R_UID],
            comm=_comm(r[R_COMM]), start_ns=r[R_START], cgroup_id=r[R_CGROUP], root=r[R_ROOT],
            ancestry=anc, truncated=bool(truncated or r[R_FLAGS] & F_TRUNC), notes=notes,
        )

    def _build(self, r, data: bytes, truncated: bool) -> AnyEvent | None:
        self.stats["events"] += 1
        t = r[R_TYPE]
        c = self._common(r, truncated)
        a0, a1, a2, a3 = r[R_ARG0:R_ARG0 + 4]
        ret = r[R_RET]
        if t == EV_OPEN:
            n1, n2, kind, sysno = a3 & 0xFFFF, (a3 >> 16) & 0xFFFF, (a3 >> 32) & 0xFF, (a3 >> 40) & 0xFF
            path = _s(data[:n1])
            second = _s(data[n1:n1 + n2]) if n2 else None
            if kind == 1:
                resolved = second
            elif kind == 2 and second is not None:
                resolved = os.path.normpath(os.path.join(second, path))
                c["notes"].append("resolved against the cwd/dirfd; the file was not opened")
            else:
                resolved = path if path.startswith("/") else None
            names, access = decode_open_flags(a0)
            mode = f"{a1:04o}" if a0 & 0o100 or (a0 & 0o20200000) == 0o20200000 else None
            dirfd = struct.unpack("<i", struct.pack("<I", a2 & 0xFFFFFFFF))[0]
            return OpenEvent(**c, syscall=OPEN_SYSCALLS.get(sysno, str(sysno)), path=path,
                             resolved=resolved, flags=names, flags_raw=a0, access=access,
                             mode=mode, dirfd=None if dirfd == -100 else dirfd,
                             result=ret if ret >= 0 else None, error=errname(ret) if ret < 0 else None)
        if t == EV_EXEC:
            if ret < 0:
                return ExecEvent(**c, filename=_s(data[:a0]), exe=None, argv=[], argv_bytes=0,
                                 result=ret, error=errname(ret),
                                 syscall=EXEC_SYSCALLS.get((a1 >> 40) & 0xFF))
            argv_raw = data[a0 + a1:a0 + a1 + a3]
            argv = [_s(x) for x in argv_raw.split(b"\0")]
            if argv and argv[-1] == "" and argv_raw.endswith(b"\0"):
                argv.pop()
            if a3 < a2:
                c["truncated"] = True
                c["notes"].append(f"argv cut at {a3} of {a2} bytes")
            return ExecEvent(**c, filename=_s(data[:a0]), exe=_s(data[a0:a0 + a1]) or None,
                             argv=argv, argv_bytes=a2, result=0)
        if t == EV_EXIT:
            st = ret & 0xFFFF
            sig = st & 0x7F
            return ExitEvent(**c, status=st, exit_code=None if sig else (st >> 8) & 0xFF,
                             signal=sig or None, signal_name=_SIGNALS.get(sig) if sig else None,
                             core_dumped=bool(st & 0x80))
        if t == EV_CONNECT:
            fam, addr, port, upath = decode_sockaddr(data)
            return ConnectEvent(**c, fd=a0, family=fam, address=addr, port=port, unix_path=upath,
                                sock_type=_SOCK_TYPES.get(a2 & 0xF) if a2 else None,
                                protocol=_PROTOS.get(a3) if a3 else None,
                                result=ret, error=errname(ret) if ret < 0 else None)
        if t == EV_FORK:
            return ForkEvent(**c, child_pid=a0, child_start_ns=a1)
        self.stats["events"] -= 1
        self.stats["bad_records"] += 1
        return None
