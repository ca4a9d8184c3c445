"""Captured bytes -> newline-delimited frames, per byte stream.

A stream is one direction of one pipe or socket as one process used it:
(pid, fd, dev, inode, direction); its lines are numbered by their position in
the channel (dev, inode, direction), whoever moved the bytes. Bytes arrive in syscall-sized pieces; a
message may span many of them, and one of them may hold many messages or end
in the middle of one. Frames are the complete lines (without the newline),
stamped with the kernel time of the syscall that completed them; what is
left when a stream ends is flushed as an incomplete frame, never dropped.
"""
from __future__ import annotations

import msgspec

from ..records import IoEvent

C2S, S2C = "client->server", "server->client"  # the two directions of an MCP conversation


class Frame(msgspec.Struct, gc=False):
    pid: int
    tid: int
    comm: str
    fd: int
    kind: str              # "pipe", "unix", "tty", "tcp" or "tls"
    direction: str         # "read" or "write", as the process did it
    inode: int
    dev: int
    first_ktime_ns: int    # the syscall that moved its first byte
    ktime_ns: int          # the syscall that moved its last byte
    data: bytes
    offset: int            # position of its first byte in the byte stream (as this process saw it)
    complete: bool         # ended by a newline (False: flushed at end of stream)
    truncated: bool        # bytes of it were not captured
    notes: list[str]
    # set by http.py for TCP and TLS frames (None for pipes and Unix sockets)
    flow: str | None = None        # client->server or server->client, as HTTP says
    conv: object = None            # the conversation (session) key
    aliases: tuple = ()            # more keys for the same conversation
    dedup: object = None           # (connection, flow): one byte stream whichever end saw it
    http: object = None            # http.HttpInfo
    exchange: object = None        # http.Exchange: the request/response pair
    peer: object = None            # events.SockEvent: the connection's endpoints
    peer_inode: int = 0            # a Unix socket: the inode of its connected peer (0: not known)
    pair: bool = False             # a Unix socket with no name at either end: a socketpair (stdio-like)
    peer_cred: tuple | None = None  # a Unix socket: (pid, uid, gid) of its peer, as SO_PEERCRED says


class _Pending:
    __slots__ = ("parts", "size", "first", "offset", "truncated", "notes")

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0
        self.first = 0
        self.offset = 0
        self.truncated = False
        self.notes: list[str] = []


class Reassembler:
    def __init__(self, max_frame: int = 64 << 20, max_channels: int = 65536):
        self.max_frame = max_frame
        self.pending: dict[tuple, _Pending] = {}
        self.meta: dict[tuple, IoEvent] = {}
        # bytes moved so far through each channel end and direction (dev, inode, read/write),
        # by every process that uses it: a line's offset names it whichever process wrote it
        # (a server's children writing on the stdout they inherited) and whichever end saw it.
        # A channel outlives the processes that used it so far: kept, the least recently used
        # going first past max_channels
        self.pos: dict[tuple, int] = {}
        self.max_channels = max_channels
        self.stats = {"frames": 0, "incomplete": 0, "oversized": 0, "blank": 0, "cut": 0, "skipped_bytes": 0}
        # channels whose line grew past max_frame: its head was sent on, the rest of the line
        # is counted and dropped up to its newline (memory stays at one max_frame per line)
        self.skipping: dict[tuple, None] = {}
        self.peers: dict[int, int] = {}  # Unix socket inode -> its connected peer's inode
        self.pairs: set[int] = set()     # Unix socket inodes with no name at either end (socketpairs)
        self.creds: dict[int, tuple] = {}  # Unix socket inode -> its peer's (pid, uid, gid) (SO_PEERCRED)

    def sock(self, ev) -> None:
        """A Unix socket's peer (events.SockEvent): its frames name the conversation
        so that both ends, when both are tracked, are one session."""
        if ev.peer_inode:
            self.peers[ev.inode] = ev.peer_inode
            if not ev.unix_named:
                self.pairs.add(ev.inode)
            if ev.peer_pid:
                self.creds[ev.inode] = (ev.peer_pid, ev.peer_uid, ev.peer_gid)
            if len(self.peers) > 65536:
                first = next(iter(self.peers))
                self.pairs.discard(first)
                self.creds.pop(first, None)
                del self.peers[first]

    @staticmethod
    def key(ev: IoEvent) -> tuple:
        return (ev.pid, ev.fd, ev.dev, ev.inode, ev.direction)

    def feed(self, ev: IoEvent) -> list[Frame]:
        k = self.key(ev)
        self.meta[k] = ev
        p = self.pending.get(k)
        data = ev.data
        ck = k[2:]
        base = self.pos.pop(ck, 0)
        # positions advance by what the syscall moved, captured or not
        self.pos[ck] = base + ev.bytes
        if len(self.pos) > self.max_channels:
            del self.pos[next(iter(self.pos))]
        out: list[Frame] = []
        start = 0
        if k in self.skipping:
            i = data.find(b"\n")
            if i < 0:
                self.stats["skipped_bytes"] += len(data)
                if ev.truncated:  # the line ends in this write's gap
                    del self.skipping[k]
                return out
            del self.skipping[k]
            self.stats["skipped_bytes"] += i
            start = i + 1
        if ev.truncated:
            if p is None:
                p = self.pending[k] = _Pending()
                p.first = ev.ktime_ns
                p.offset = base + start
            p.truncated = True
            p.notes = p.notes + [gap := f"a syscall moved {ev.bytes} bytes, {len(ev.data)} were captured: "
                                        "the message ends in the gap"]
        while True:
            i = data.find(b"\n", start)
            if i < 0:
                break
            if p is None:
                line = data[start:i]
                first, off, trunc, notes = ev.ktime_ns, base + start, False, []
            else:
                p.parts.append(data[start:i])
                line = b"".join(p.parts)
                first, off, trunc, notes = p.first, p.offset, p.truncated, p.notes
                del self.pending[k]
                p = None
            start = i + 1
            if not line.strip():
                self.stats["blank"] += 1
                continue
            out.append(self._frame(ev, line, first, off, True, trunc, notes))
        if ev.truncated and start < len(data):
            # the bytes not captured are this syscall's last ones: the line under way ends
            # there, most likely (one write per message). Joined to the next write, it would
            # take the next message down with it.
            if p is None:
                p = self.pending[k] = _Pending()
                p.first, p.offset, p.truncated, p.notes = ev.ktime_ns, base + start, True, [gap]
            p.parts.append(data[start:])
            del self.pending[k]
            self.stats["cut"] += 1
            out.append(self._frame(ev, b"".join(p.parts), p.first, p.offset, False, True, p.notes))
            return out
        if start < len(data):
            if p is None:
                p = self.pending[k] = _Pending()
                p.first = ev.ktime_ns
                p.offset = base + start
            p.parts.append(data[start:])
            p.size += len(data) - start
            if p.size > self.max_frame:
                self.stats["oversized"] += 1
                out.append(self._frame(ev, b"".join(p.parts), p.first, p.offset, False, True,
                                       p.notes + [f"line longer than {self.max_frame} bytes: cut here, "
                                                  "the rest of it is dropped"]))
                del self.pending[k]
                self.skipping[k] = None
                if len(self.skipping) > self.max_channels:
                    del self.skipping[next(iter(self.skipping))]
        return out

    def reset(self, ev: IoEvent) -> None:
        """The reassembly failed on ev (a bug this input found): what was
        waiting on its stream is dropped, the stream goes on from here."""
        self.pending.pop(self.key(ev), None)
        self.skipping.pop(self.key(ev), None)

    def _frame(self, ev: IoEvent, data: bytes, first: int, offset: int, complete: bool, truncated: bool,
               notes: list[str]) -> Frame:
        self.stats["frames"] += 1
        f = Frame(ev.pid, ev.tid, ev.comm, ev.fd, ev.kind, ev.direction, ev.inode, ev.dev, first,
                  ev.ktime_ns, data, offset, complete, truncated, notes)
        peer = self.peers.get(ev.inode) if ev.kind == "unix" else None
        if peer:
            f.peer_inode = peer
            f.pair = ev.inode in self.pairs
            f.peer_cred = self.creds.get(ev.inode)
            # one conversation whichever end; one byte stream per writer
            f.conv = ("unix", ev.dev) + ((ev.inode, peer) if ev.inode < peer else (peer, ev.inode))
            f.dedup = (f.conv, ev.inode if ev.direction == "write" else peer)
        return f

    def flush(self, pid: int | None = None) -> list[Frame]:
        """Frames for what is still buffered (of one process, or all): the
        stream ended in the middle of a message."""
        out = []
        for k in [k for k in self.pending if pid is None or k[0] == pid]:
            p = self.pending.pop(k)
            ev = self.meta[k]
            data = b"".join(p.parts)
            if not data.strip():
                continue
            self.stats["incomplete"] += 1
            out.append(self._frame(ev, data, p.first, p.offset, False, p.truncated,
                                   p.notes + ["stream ended before the end of this line"]))
        if pid is not None:
            for k in [k for k in self.meta if k[0] == pid]:
                del self.meta[k]
                if k[4] == "read":
                    self.peers.pop(k[3], None)
                    self.pairs.discard(k[3])
        return out
