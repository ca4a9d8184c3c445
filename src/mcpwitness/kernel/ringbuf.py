"""Reading the BPF ring buffer.

BatchReader is the one mcpwitness runs: it maps the ring into this process
and decodes every committed record since the last read with one
struct.iter_unpack call. That works because every record has the same size
(bpf/mcpwitness.h) and the kernel maps the data area twice in a row, so the
region from the consumer to the producer position is contiguous even when it
wraps. The BUSY bit is checked per record: reading stops at the first record
still being written, and the consumer position (one aligned 8-byte store)
only moves past what was read.

LibbpfReader is libbpf's own consumer (a ctypes callback per record): slower,
kept as the reference the tests cross-check BatchReader against.
"""
from __future__ import annotations

import ctypes
import mmap
import select
import struct

from . import libbpf
from .abi import EVENT_SIZE, RECORD, RECORD_SIZE

BUSY = 1 << 31
DISCARD = 1 << 30
_U64 = struct.Struct("<Q")
_HDR = struct.Struct(f"<I{RECORD_SIZE - 4}x")  # just the ring's length word of each record


def records(blob) -> list[tuple]:
    """RECORD tuples of a blob from read_blob(), discarded records left out."""
    return [r for r in RECORD.iter_unpack(blob) if r[0] == EVENT_SIZE]


class RingCorrupt(RuntimeError):
    pass


class BatchReader:
    def __init__(self, map_fd: int, size: int, max_batch_bytes: int = 8 << 20):
        if size & (size - 1):
            raise ValueError("ring size must be a power of two")
        page = mmap.PAGESIZE
        self.fd = map_fd
        self.size = size
        self.mask = size - 1
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_map = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)
        self._data = memoryview(self._prod_map)[page:]
        self.max_batch = max(RECORD_SIZE, max_batch_bytes - max_batch_bytes % RECORD_SIZE)
        # touch every page of the (double) mapping now, so the first pass over
        # the ring does not pay a page fault per 8 records mid-burst
        for off in range(0, len(self._data), page):
            self._data[off]
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN)
        self.discarded = 0

    def pending_bytes(self) -> int:
        return _U64.unpack_from(self._prod_map, 0)[0] - self._cons.value

    def read_blob(self) -> bytes:
        """Copy every committed record since the last call out of the ring (one
        memcpy; at most max_batch bytes) and release their space. Only the
        8-byte headers are looked at here: the BUSY bit per record, stopping at
        the first record still being written. Decode with records()."""
        cons = self._cons.value
        prod = _U64.unpack_from(self._prod_map, 0)[0]
        n = prod - cons
        if n <= 0:
            return b""
        if n > self.max_batch:
            n = self.max_batch
        start = cons & self.mask
        region = self._data[start:start + n - n % RECORD_SIZE]
        k = 0
        for (h,) in _HDR.iter_unpack(region):
            if h != EVENT_SIZE:
                if h & BUSY:
                    break
                if not h & DISCARD:
                    raise RingCorrupt(f"record of {h & ~(BUSY | DISCARD)} bytes, expected {EVENT_SIZE}")
                self.discarded += 1
            k += 1
        blob = region[:k * RECORD_SIZE].tobytes()
        region.release()
        self._cons.value = cons + k * RECORD_SIZE
        return blob

    def read(self) -> list[tuple]:
        """Every committed record since the last call, as RECORD tuples."""
        return records(self.read_blob())

    def wait(self, timeout: float) -> bool:
        """Block until the kernel signals data (or timeout). True if data is there."""
        if self.pending_bytes() > 0:
            return True
        self._ep.poll(timeout)
        return self.pending_bytes() > 0

    def close(self) -> None:
        self._ep.close()
        self._data.release()
        del self._cons
        self._cons_map.close()
        self._prod_map.close()


class LibbpfReader:
    """libbpf's ring_buffer__poll with a per-record callback (the reference)."""

    def __init__(self, map_fd: int):
        self._out: list[tuple] = []
        pad = b"\0" * 8

        def cb(_ctx, data, size):
            self._out.append(RECORD.unpack(pad + ctypes.string_at(data, size)))
            return 0

        self._cb = libbpf.RING_BUFFER_SAMPLE_FN(cb)
        with libbpf.capture_log() as log:
            self._rb = libbpf.check_ptr(libbpf.ring_buffer__new(map_fd, self._cb, None, None),
                                        "ring_buffer__new", log)

        self.discarded = 0  # libbpf skips discarded records itself

    def wait(self, timeout: float) -> bool:
        libbpf.check_int(libbpf.ring_buffer__poll(self._rb, int(timeout * 1000)), "ring_buffer__poll")
        return bool(self._out)

    def read(self) -> list[tuple]:
        libbpf.check_int(libbpf.ring_buffer__consume(self._rb), "ring_buffer__consume")
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        if self._rb:
            libbpf.ring_buffer__free(self._rb)
            self._rb = None
