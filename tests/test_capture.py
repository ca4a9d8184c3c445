"""Payload capture in the kernel: what a tracked process reads and writes on
pipes and Unix sockets, byte for byte, and nothing of non-JSON streams."""
import sys

import pytest
from conftest import HOOK_SETS, run_tracked

from mcpwitness.agent import Agent
from mcpwitness.kernel.loader import LoadOptions
from mcpwitness.output.jsonl import ListSink
from mcpwitness.records import IoEvent

pytestmark = pytest.mark.kernel
PY = sys.executable


def capture(script, options=None, args=()):
    got = []
    a = Agent(ListSink(), options, on_event=lambda e: got.append(e) if isinstance(e, IoEvent) else None)
    a.start()
    _, code, _ = run_tracked(a, [PY, "-c", script, *args])
    assert code == 0
    return got, a.sink.records[-1]


PIPES = r"""
import os, socket, sys, threading
msgs = [b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n', b'  {"a":' + b'1' * 1000 + b'}\n']
r, w = os.pipe()
for m in msgs:
    os.write(w, m); assert os.read(r, 65536) == m
os.writev(w, [b'{"v":', b'2}\n']); assert os.read(r, 100) == b'{"v":2}\n'
# a stream that is not JSON: never sent
r2, w2 = os.pipe()
for i in range(20):
    os.write(w2, b"log line %d\n" % i); os.read(r2, 100)
# unix socket pair, send/recv and sendmsg/recvmsg
a, b = socket.socketpair()
a.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); b.recv(100)
a.sendmsg([b'{"x":', b'[1,2]}\n']); b.recvmsg(100)
"""


@pytest.mark.matrix("payload: pipes, Unix sockets")
@pytest.mark.parametrize("hooks", HOOK_SETS)
def test_pipes_and_unix_sockets_byte_for_byte(hooks):
    got, stats = capture(PIPES, LoadOptions(hooks=hooks))
    by = [(e.kind, e.direction, e.syscall, e.data) for e in got]
    m1 = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n'
    m2 = b'  {"a":' + b"1" * 1000 + b"}\n"
    assert ("pipe", "write", "write", m1) in by and ("pipe", "read", "read", m1) in by
    assert ("pipe", "write", "write", m2) in by and ("pipe", "read", "read", m2) in by
    assert ("pipe", "write", "writev", b'{"v":2}\n') in by
    assert ("unix", "write", "sendto", b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n') in by
    assert ("unix", "read", "recvfrom", b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n') in by
    assert ("unix", "write", "sendmsg", b'{"x":[1,2]}\n') in by and ("unix", "read", "recvmsg", b'{"x":[1,2]}\n') in by
    assert not [e for e in got if b"log line" in e.data]
    assert stats["kernel"]["io_skipped"] >= 2 * 8  # both ends gave up after 8 chunks
    pipe_ino = {e.inode for e in got if e.data == m1}
    assert len(pipe_ino) == 1  # both ends name the same pipe
    assert all(not e.truncated and e.bytes == len(e.data) for e in got)


BIG = r"""
import os, sys, threading
n = int(sys.argv[1])
msg = b'{"jsonrpc":"2.0","id":7,"result":{"text":"' + b"x" * n + b'"}}\n'
r, w = os.pipe()
out = []
def reader():
    while sum(map(len, out)) < len(msg):
        out.append(os.read(r, 1 << 20))
t = threading.Thread(target=reader); t.start()
assert os.write(w, msg) == len(msg)   # one syscall, many pipe buffers
t.join()
assert b"".join(out) == msg
"""


ENVELOPE = len(b'{"jsonrpc":"2.0","id":7,"result":{"text":"') + len(b'"}}\n')


def test_five_mib_message_in_one_write_arrives_whole():
    n = 5 << 20
    got, stats = capture(BIG, args=[str(n)])
    writes = [e for e in got if e.direction == "write"]
    assert len(writes) == 1 and writes[0].bytes == n + ENVELOPE and len(writes[0].data) == n + ENVELOPE
    assert writes[0].data.endswith(b'"}}\n') and not writes[0].truncated
    reads = b"".join(e.data for e in got if e.direction == "read")
    assert reads == writes[0].data
    assert stats["lost"]["events"] == 0 and stats["kernel"]["ringbuf_full_chunks"] == 0


def test_capture_limit_keeps_real_length():
    got, stats = capture(BIG, LoadOptions(io_max=4096), args=[str(100_000)])
    w = [e for e in got if e.direction == "write"][0]
    assert w.truncated and w.bytes == 100_000 + ENVELOPE and len(w.data) == 4096
    assert f"captured 4096 of {100_000 + ENVELOPE} bytes" in w.notes[0]
    assert stats["kernel"]["io_truncated"] >= 1
