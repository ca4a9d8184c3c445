"""A bounded, ordered disk spool: what the agent has recorded and the broker
has not acknowledged yet (fleet/publish.py).

Entries are appended to segment files in one directory (the state
directory's spool/NAME), in order, each with its subject and the wall time it
was spooled; a cursor file says how far the broker acknowledged. A reader
takes entries from the cursor on; `ack` moves it (written atomically) and
removes the segments wholly behind it. An agent that stops with entries left
sends them when it starts again.

Bounded: past max_bytes, new entries are refused and counted (`dropped`);
nothing is dropped silently and nothing already spooled is overwritten.
The agent process can be killed at any point: a torn last entry is cut off at
the next start (counted as `torn`). Entries are flushed to the kernel, not
fsync'ed: a machine crash can lose the last ones, an agent crash cannot.
"""
from __future__ import annotations

import fcntl
import os
import struct
import threading
import time

_HEAD = struct.Struct("<IHQ")     # payload length, subject length, wall time (ns)
SEGMENT = 8 << 20


class Spool:
    def __init__(self, path: str, max_bytes: int = 1 << 30):
        self.path, self.max_bytes = path, max_bytes
        os.makedirs(path, mode=0o700, exist_ok=True)
        # one agent per spool: a second one gets BlockingIOError (and a spool of its own)
        self._lockf = open(os.path.join(path, "lock"), "a")
        try:
            fcntl.flock(self._lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockf.close()
            raise
        self.lock = threading.Lock()
        self.stats = {"spooled": 0, "dropped": 0, "acked": 0, "torn": 0}
        self.segments = sorted(int(f[:-4]) for f in os.listdir(path) if f.endswith(".seg") and f[:-4].isdigit())
        self.cursor = self._read_cursor()      # (segment, offset) acknowledged up to
        if not self.segments:
            self.segments = [0]
            open(self._seg(0), "ab").close()
        self._repair()
        last = self.segments[-1]
        self._out = open(self._seg(last), "ab")
        self.bytes = sum(os.path.getsize(self._seg(s)) for s in self.segments) - self.cursor[1]
        self.new_data = threading.Event()

    def _seg(self, n: int) -> str:
        return os.path.join(self.path, f"{n:016d}.seg")

    def _read_cursor(self) -> tuple[int, int]:
        try:
            with open(os.path.join(self.path, "cursor")) as f:
                seg, off = f.read().split()
                return int(seg), int(off)
        except (OSError, ValueError):
            return (self.segments[0] if self.segments else 0), 0

    def _repair(self) -> None:
        """Cut a torn entry off the last segment (the agent died mid-write)."""
        p = self._seg(self.segments[-1])
        good = 0
        with open(p, "rb") as f:
            data = f.read()
        while good + _HEAD.size <= len(data):
            n, ns, _ = _HEAD.unpack_from(data, good)
            if good + _HEAD.size + ns + n > len(data):
                break
            good += _HEAD.size + ns + n
        if good < len(data):
            with open(p, "r+b") as f:
                f.truncate(good)
            self.stats["torn"] += 1

    # --- writing ---------------------------------------------------------------------
    def append(self, entries: list[tuple[str, bytes]]) -> int:
        """Spool (subject, payload) entries in order; returns how many were refused (spool full)."""
        now = time.time_ns()
        with self.lock:
            buf, kept = [], 0
            for subject, payload in entries:
                sb = subject.encode()
                size = _HEAD.size + len(sb) + len(payload)
                if self.bytes + size > self.max_bytes:
                    self.stats["dropped"] += len(entries) - kept
                    break
                buf.append(_HEAD.pack(len(payload), len(sb), now) + sb + payload)
                self.bytes += size
                kept += 1
            if buf:
                self._out.write(b"".join(buf))
                self._out.flush()
                self.stats["spooled"] += kept
                if self._out.tell() >= SEGMENT:
                    self._out.close()
                    n = self.segments[-1] + 1
                    self.segments.append(n)
                    self._out = open(self._seg(n), "ab")
            refused = len(entries) - kept
        if kept:
            self.new_data.set()
        return refused

    # --- reading and acknowledging ------------------------------------------------------
    def read(self, max_entries: int = 256, max_bytes: int = 4 << 20) -> tuple[list[tuple[str, bytes]], tuple]:
        """Entries from the cursor on (in order), and the position after them, for ack."""
        with self.lock:
            seg, off = self.cursor
            out, size = [], 0
            while len(out) < max_entries and size < max_bytes:
                try:
                    with open(self._seg(seg), "rb") as f:
                        f.seek(off)
                        data = f.read()
                except FileNotFoundError:
                    break
                pos = 0
                while pos + _HEAD.size <= len(data) and len(out) < max_entries and size < max_bytes:
                    n, ns, _ = _HEAD.unpack_from(data, pos)
                    end = pos + _HEAD.size + ns + n
                    if end > len(data):
                        break
                    out.append((data[pos + _HEAD.size:pos + _HEAD.size + ns].decode(), data[pos + _HEAD.size + ns:end]))
                    size += end - pos
                    pos = end
                off += pos
                later = [x for x in self.segments if x > seg]
                if pos == len(data) and later:    # this segment is done: on to the next
                    seg, off = later[0], 0
                    continue
                break
            return out, (seg, off)

    def ack(self, position: tuple[int, int], count: int) -> None:
        """The broker acknowledged everything before position."""
        seg, off = position
        with self.lock:
            tmp = os.path.join(self.path, "cursor.tmp")
            with open(tmp, "w") as f:
                f.write(f"{seg} {off}\n")
            os.replace(tmp, os.path.join(self.path, "cursor"))
            self.cursor = (seg, off)
            self.stats["acked"] += count
            for s in [x for x in self.segments if x < seg]:
                try:
                    os.unlink(self._seg(s))
                except OSError:
                    pass
                self.segments.remove(s)
            self.bytes = sum(os.path.getsize(self._seg(x)) for x in self.segments
                             if os.path.exists(self._seg(x))) - off

    def oldest_age(self) -> float | None:
        """Seconds since the oldest entry not yet acknowledged was spooled (None: none)."""
        with self.lock:
            seg, off = self.cursor
            for s in [x for x in self.segments if x >= seg]:
                try:
                    with open(self._seg(s), "rb") as f:
                        f.seek(off if s == seg else 0)
                        head = f.read(_HEAD.size)
                except FileNotFoundError:
                    continue
                if len(head) == _HEAD.size:
                    return max(0.0, (time.time_ns() - _HEAD.unpack(head)[2]) / 1e9)
            return None

    def close(self) -> None:
        with self.lock:
            self._out.close()
            self._lockf.close()
