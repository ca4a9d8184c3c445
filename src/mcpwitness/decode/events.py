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

from ..kernel.abi import (
    ANCESTORS, EV_CONNECT, EV_EXEC, EV_EXIT, EV_FORK, EV_IO, EV_OPEN, EV_POLICY, EV_SOCK, EV_STDIO, EV_THREAD, EV_WAKE,
    CONNECT_SYSCALLS, EXEC_SYSCALLS, F_LAST, F_PATHERR, F_TRUNC, F_UNTRACKED, IO_KINDS, IO_SYSCALLS, OPEN_SYSCALLS, POLICY_ACCESS,
    POLICY_ACTIONS, POLICY_CHECKS, POLICY_MECHANISMS, POLICY_OUTCOMES, R_ANC, R_ARG0, R_CGROUP, R_COMM, R_DATA, R_DEPTH,
    R_DLEN, R_FLAGS, R_PID, R_POLICY, R_PPID, R_RET, R_ROOT, R_SEQ, R_START, R_TID, R_TS, R_TYPE, R_UID, SOCK_BINDINGS,
    SOCKINFO, STDIO_KINDS, STDIO_WHY
)
from ..records import (
    AnyEvent, ConnectEvent, ExecEvent, ExitEvent, ForkEvent, IoEvent, OpenEvent, PolicyEvent, SockEvent, StdioEvent,
    StdioFd, ThreadEvent, WakeEvent
)

# --- decoding helpers -----------------------------------------------------

_O_FLAGS = [  # x86_64/generic values; access mode handled apart
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"), (0o20000000 | 0o200000, "O_TMPFILE"),
]
_ACCESS = {0: ("O_RDONLY", "read"), 1: ("O_WRONLY", "write"), 2: ("O_RDWR", "readwrite"), 3: ("O_ACCMODE", "invalid")}


_FLAGS_CACHE: dict[int, tuple[list[str], str]] = {}


def decode_open_flags(flags: int) -> tuple[list[str], str]:
    """(names, access) of open(2) flags; the names list is shared: do not mutate."""
    hit = _FLAGS_CACHE.get(flags)
    if hit is None:
        hit = _FLAGS_CACHE[flags] = _decode_open_flags(flags)
    return hit


def _decode_open_flags(flags: int) -> tuple[list[str], str]:
    name, access = _ACCESS[flags & 3]
    names = [name]
    tmpfile = flags & 0o20200000 == 0o20200000  # O_TMPFILE includes the O_DIRECTORY bit
    for bit, n in _O_FLAGS:
        if n == "O_TMPFILE":
            if tmpfile:
                names.append(n)
        elif flags & bit and n != "O_LARGEFILE" and not (tmpfile and n == "O_DIRECTORY"):
            names.append(n)
    if flags & 0o10000000:
        access = "path"
    return names, access


_ERRNAMES = {-k: v for k, v in errno.errorcode.items()}


def errname(neg: int) -> str:
    return _ERRNAMES.get(neg) or f"E{-neg}"


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
    if fam == socket.AF_PACKET and len(raw) >= 8:  # sockaddr_ll: the device, and the protocol as the port
        return "AF_PACKET", f"ifindex {struct.unpack_from('<i', raw, 4)[0]}", struct.unpack_from(">H", raw, 2)[0], None
    if fam == 0:
        return "AF_UNSPEC", None, None, None
    return f"AF_{fam}", None, None, None


def _s(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


_COMMS: dict[bytes, str] = {}


def _comm(b: bytes) -> str:
    c = _COMMS.get(b)
    if c is None:
        if len(_COMMS) > 65536:
            _COMMS.clear()
        c = _COMMS[b] = b.split(b"\0", 1)[0].decode("utf-8", "replace")
    return c


class Decoder:
    """Records (RECORD tuples) -> typed events, in ring order.

    `ancestry(pid, inline)` may be given to extend lineages deeper than the
    kernel's inline MW_ANCESTORS (from userspace's process table).
    """

    def __init__(self, ancestry=None, wall_offset_ns: int | None = None, policy_names=None, flagger=None):
        self.pending: dict[tuple[int, int], list] = {}
        self.ancestry = ancestry
        # policy_names(slot, rule_id) -> (policy name, rule in words): from the running policy set
        self.policy_names = policy_names
        # flags.Flagger: the facts an open, exec or connect carries (risk, sensitive, category, scope)
        self.flagger = flagger
        self._by_type = self._table()
        self.stats = {"records": 0, "events": 0, "incomplete": 0, "bad_records": 0, "undecodable_records": 0}
        self.last_error: str | None = None
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
                    pending[(r[R_TID], r[R_TS])] = [r, [r[R_DATA][: r[R_DLEN]]], 0, False]
                continue
            key = (r[R_TID], r[R_TS])
            p = pending.get(key)
            if p is None:  # first record lost: nothing to hang this on
                stats["bad_records"] += 1
                continue
            if r[R_SEQ] != p[2] + 1:
                p[3] = True  # a continuation record in between was lost
            p[1].append(r[R_DATA][: r[R_DLEN]])
            p[2] = r[R_SEQ]
            if flags & F_LAST:
                del pending[key]
                yield from self._finish(p)

    def _close_tid(self, tid: int) -> Iterator[AnyEvent]:
        for key in [k for k in self.pending if k[0] == tid]:
            yield from self._incomplete(key)

    def _incomplete(self, key) -> Iterator[AnyEvent]:
        p = self.pending.pop(key)
        p[3] = True
        self.stats["incomplete"] += 1
        yield from self._finish(p)

    def _finish(self, p) -> Iterator[AnyEvent]:
        ev = self._build(p[0], b"".join(p[1]), p[3])
        if ev is not None:
            if p[3]:
                ev.notes = ev.notes + ["continuation records lost (ring buffer full): data cut short"]
            yield ev

    def flush(self) -> Iterator[AnyEvent]:
        """Emit whatever is still waiting for continuation records (at exit)."""
        for key in list(self.pending):
            yield from self._incomplete(key)

    def _base(self, r, truncated: bool, notes: list[str]) -> tuple:
        depth = r[R_DEPTH]
        if depth == 0:
            anc = []
        elif depth <= ANCESTORS:
            anc = list(r[R_ANC:R_ANC + depth])
        else:
            anc = list(r[R_ANC:R_ANC + ANCESTORS])
            if self.ancestry is not None:
                anc = self.ancestry(r[R_PID], anc)
        flags = r[R_FLAGS]
        if flags & F_PATHERR:
            notes = notes + ["user memory unreadable: string or struct not captured"]
        ts = r[R_TS]
        return (self.wall_time(ts), ts, r[R_PID], r[R_TID], r[R_PPID], r[R_UID], _comm(r[R_COMM]),
                r[R_START], r[R_CGROUP], r[R_ROOT], anc, bool(truncated or flags & F_TRUNC), notes)

    def _build(self, r, data: bytes, truncated: bool) -> AnyEvent | None:
        """One event; a record this code cannot decode is counted and kept
        out, never allowed to end the batch it came in."""
        try:
            ev = self._decode(r, data, truncated)
            if self.flagger is not None and type(ev) in _FLAGGED:
                self.flagger.flag(ev)
            return ev
        except Exception as e:  # a decoder bug or a record from a newer object
            self.stats["undecodable_records"] += 1
            self.last_error = f"type {r[R_TYPE]}: {type(e).__name__}: {e}"
            return None

    def _decode(self, r, data: bytes, truncated: bool) -> AnyEvent | None:
        build = self._by_type.get(r[R_TYPE])
        if build is None:
            self.stats["bad_records"] += 1
            return None
        self.stats["events"] += 1
        a0, a1, a2, a3 = r[R_ARG0:R_ARG0 + 4]
        return build(r, data, truncated, a0, a1, a2, a3, r[R_RET])

    def _io(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        notes = _NO_NOTES
        if a3 < ret or len(data) < a3:
            truncated = True
            notes = [f"captured {len(data)} of {ret} bytes"]
        return IoEvent(*self._base(r, truncated, notes), _fd(a0),
                       "write" if (a0 >> 32) & 0xFF else "read", IO_KINDS.get((a0 >> 40) & 0xFF, "other"),
                       IO_SYSCALLS.get((a0 >> 48) & 0xFF, "?"), a1, a2, ret, data,
                       bool(r[R_FLAGS] & F_UNTRACKED))

    def _sock(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        (la, ra, cookie, nscookie, nsino, lport, rport, fam, named, _, ssl, peer, peer_pid, peer_uid, peer_gid,
         _) = SOCKINFO.unpack_from(data.ljust(SOCKINFO.size, b"\0"))
        if fam == socket.AF_UNIX:
            family, laddr, raddr = "unix", "", ""
        elif fam == socket.AF_INET6:
            family, laddr, raddr = "inet6", socket.inet_ntop(socket.AF_INET6, la), socket.inet_ntop(
                socket.AF_INET6, ra)
        else:
            family, laddr, raddr = "inet", socket.inet_ntop(socket.AF_INET, la[:4]), socket.inet_ntop(
                socket.AF_INET, ra[:4])
        return SockEvent(*self._base(r, truncated, _NO_NOTES), _fd(a0), a1,
                         family, laddr, lport, raddr, rport, cookie or None, nscookie, nsino,
                         SOCK_BINDINGS.get((a0 >> 40) & 0xFF, "?"), ssl, bool(r[R_FLAGS] & F_UNTRACKED), peer,
                         named, peer_pid, peer_uid, peer_gid)

    def _open(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        n1, n2, kind = a3 & 0xFFFF, (a3 >> 16) & 0xFFFF, (a3 >> 32) & 0xFF
        path = data[:n1].decode("utf-8", "backslashreplace")
        notes = _NO_NOTES
        if kind == 1:
            resolved = data[n1:n1 + n2].decode("utf-8", "backslashreplace")
            if not n1:  # a file handle or io_uring: no path was passed, the file names itself
                path = resolved
        elif kind == 2 and n2:
            base = data[n1:n1 + n2].decode("utf-8", "backslashreplace")
            resolved = os.path.normpath(os.path.join(base, path))
            notes = ["resolved against the cwd/dirfd; the file was not opened"]
        else:
            resolved = path if path[:1] == "/" else None
        names, access = decode_open_flags(a0)
        dirfd = a2 & 0xFFFFFFFF
        if dirfd & 0x80000000:
            dirfd -= 1 << 32
        return OpenEvent(*self._base(r, truncated, notes), OPEN_SYSCALLS.get((a3 >> 40) & 0xFF, "?"),
                         path, resolved, names, a0, access,
                         f"{a1:04o}" if a0 & 0o100 or (a0 & 0o20200000) == 0o20200000 else None,
                         None if dirfd == -100 else dirfd,
                         ret if ret >= 0 else None, errname(ret) if ret < 0 else None)

    def _exec(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        if ret < 0:
            return ExecEvent(*self._base(r, truncated, _NO_NOTES), _s(data[:a0]), None, [], 0, ret,
                             errname(ret), EXEC_SYSCALLS.get((a1 >> 40) & 0xFF))
        argv_raw = data[a0 + a1:a0 + a1 + a3]
        argv = [_s(x) for x in argv_raw.split(b"\0")]
        if argv and argv[-1] == "" and argv_raw.endswith(b"\0"):
            argv.pop()
        notes = _NO_NOTES
        if a3 < a2:
            truncated = True
            notes = [f"argv cut at {a3} of {a2} bytes"]
        return ExecEvent(*self._base(r, truncated, notes), _s(data[:a0]), _s(data[a0:a0 + a1]) or None,
                         argv, a2, 0, None, None)

    def _exit(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        st = ret & 0xFFFF
        sig = st & 0x7F
        return ExitEvent(*self._base(r, truncated, _NO_NOTES), st, None if sig else (st >> 8) & 0xFF,
                         sig or None, _SIGNALS.get(sig) if sig else None, bool(st & 0x80))

    def _connect(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        fam, addr, port, upath = decode_sockaddr(data)
        fd = a0 & 0xFFFFFFFF
        return ConnectEvent(*self._base(r, truncated, _NO_NOTES), -1 if fd == 0xFFFFFFFF else fd, fam, addr, port,
                            upath, _SOCK_TYPES.get(a2 & 0xF) if a2 else None, _PROTOS.get(a3) if a3 else None,
                            ret, errname(ret) if ret < 0 else None, policy_slot=r[R_POLICY],
                            syscall=CONNECT_SYSCALLS.get(a0 >> 32, "?"))

    def _fork(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        return ForkEvent(*self._base(r, truncated, _NO_NOTES), a0, a1)

    def _stdio(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        p0, p1 = struct.unpack_from("<QQ", data.ljust(16, b"\0"))
        return StdioEvent(*self._base(r, truncated, _NO_NOTES),
                          StdioFd(STDIO_KINDS.get(a3 & 0xFF, "other"), a2 & 0xFFFFFFFF, a0, p0),
                          StdioFd(STDIO_KINDS.get((a3 >> 8) & 0xFF, "other"), a2 >> 32, a1, p1),
                          STDIO_WHY.get((a3 >> 16) & 0xFF, "?"))

    def _thread(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        return ThreadEvent(*self._base(r, truncated, _NO_NOTES), a0)

    def _wake(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        return WakeEvent(*self._base(r, truncated, _NO_NOTES), a0 & 0xFFFFFFFF, a1)

    def _policy(self, r, data: bytes, truncated: bool, a0: int, a1: int, a2: int, a3: int, ret: int):
        check = POLICY_CHECKS.get(a0 & 0xFF, "?")
        action = POLICY_ACTIONS.get((a0 >> 8) & 0xFF, "?")
        acc = (a0 >> 24) & 0xFF
        path = family = address = port = flags = None
        fam = (a2 >> 16) & 0xFFFF
        if check in ("connect", "sendmsg") and fam == socket.AF_UNIX:
            family, path = "unix", data[:a3].decode("utf-8", "backslashreplace")
        elif check in ("connect", "sendmsg"):
            port = a2 & 0xFFFF
            if fam == socket.AF_INET6:
                family, address = "inet6", socket.inet_ntop(socket.AF_INET6, data[:16].ljust(16, b"\0"))
            else:
                family, address = "inet", socket.inet_ntop(socket.AF_INET, data[:4].ljust(4, b"\0"))
        else:
            path = data[:a3].decode("utf-8", "backslashreplace")
            flags = a2
        slot = (a0 >> 32) & 0xFFFF
        policy, rule = self.policy_names(slot, a1) if self.policy_names is not None else (None, None)
        return PolicyEvent(*self._base(r, truncated, _NO_NOTES), check, action,
                           POLICY_OUTCOMES.get(action, action), POLICY_MECHANISMS.get((a0 >> 16) & 0xFF, "?"),
                           errname(ret) if ret < 0 else None, slot, a1,
                           [n for b, n in POLICY_ACCESS if acc & b], path, family, address, port, flags,
                           policy, rule)

    def _table(self) -> dict:
        """One small decoder per event type (struct mw_event's type)."""
        return {EV_IO: self._io, EV_SOCK: self._sock, EV_OPEN: self._open, EV_EXEC: self._exec, EV_EXIT: self._exit, EV_CONNECT: self._connect, EV_FORK: self._fork, EV_STDIO: self._stdio, EV_THREAD: self._thread, EV_WAKE: self._wake, EV_POLICY: self._policy}


_FLAGGED = (OpenEvent, ExecEvent, ConnectEvent)

# shared, never mutated: code that adds a note builds a new list
_NO_NOTES: list[str] = []


def _fd(a0: int) -> int:
    """The fd in an event's args[0] low 32 bits, signed (-1: none, as for TLS)."""
    fd = a0 & 0xFFFFFFFF
    return fd - (1 << 32) if fd & 0x80000000 else fd
