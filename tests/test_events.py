"""Decoder unit tests on synthetic records (no kernel): one stage alone."""
import socket
import struct

from mcpwitness.kernel import abi
from mcpwitness.decode.events import Decoder, decode_open_flags, decode_sockaddr
from mcpwitness.kernel.abi import DATA_LEN, RECORD


def rec(type_, data=b"", *, tid=100, ts=1000, seq=0, flags=abi.F_LAST, ret=0, args=(0, 0, 0, 0),
        depth=0, anc=(), dlen=None):
    anc = list(anc) + [0] * (abi.ANCESTORS - len(anc))
    return RECORD.unpack(RECORD.pack(abi.EVENT_SIZE, 0, ts, 5, 1, ret, *args, type_, seq, flags, 100, tid, 1, 0,
                                     100, depth, *anc, len(data) if dlen is None else dlen, 0,
                                     b"comm", data.ljust(DATA_LEN, b"\0")))


def open_args(n1, n2=0, kind=0, flags=0):
    return (flags, 0o644, 0xFFFFFF9C, n1 | n2 << 16 | kind << 32)


def chunks(type_, data, args, tid=100, ts=1000, drop=()):
    parts = [data[i:i + DATA_LEN] for i in range(0, len(data), DATA_LEN)]
    out = []
    for i, p in enumerate(parts):
        if i in drop:
            continue
        out.append(rec(type_, p, tid=tid, ts=ts, seq=i, flags=abi.F_LAST if i == len(parts) - 1 else 0,
                       args=args))
    return out


def test_multi_record_event_is_reassembled_across_interleaving():
    p1, p2 = b"/a" * 600, b"/b" * 400
    a = chunks(abi.EV_OPEN, p1, open_args(len(p1)), tid=1, ts=10)
    b = chunks(abi.EV_OPEN, p2, open_args(len(p2)), tid=2, ts=11)
    mixed = [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]
    out = list(Decoder(wall_offset_ns=0).feed(mixed))
    assert [e.path for e in out] == [p2.decode(), p1.decode()]
    assert not any(e.truncated for e in out)


def test_lost_continuation_is_marked_not_dropped():
    p = b"/x" * 900
    recs = chunks(abi.EV_OPEN, p, open_args(len(p)), drop=(2,))
    d = Decoder(wall_offset_ns=0)
    out = list(d.feed(recs))
    assert len(out) == 1 and out[0].truncated
    assert any("lost" in n for n in out[0].notes)


def test_event_left_waiting_is_flushed_or_closed_by_next_event_of_thread():
    p = b"/y" * 400
    first = chunks(abi.EV_OPEN, p, open_args(len(p)))[:1]
    d = Decoder(wall_offset_ns=0)
    assert list(d.feed(first)) == []
    out = list(d.feed([rec(abi.EV_EXIT, ts=2000)]))
    assert [type(e).__name__ for e in out] == ["OpenEvent", "ExitEvent"] and out[0].truncated
    d2 = Decoder(wall_offset_ns=0)
    list(d2.feed(first))
    assert len(list(d2.flush())) == 1 and d2.stats["incomplete"] == 1


def test_garbage_records_are_counted_not_fatal():
    d = Decoder(wall_offset_ns=0)
    out = list(d.feed([rec(99, b"junk"), rec(abi.EV_OPEN, b"/z", seq=3, flags=abi.F_LAST),
                       rec(abi.EV_OPEN, b"/ok", args=open_args(3))]))
    assert [e.path for e in out] == ["/ok"]
    assert d.stats["bad_records"] == 2


def test_exec_exit_fork_decoding():
    fn, exe, argv = b"/bin/sh", b"/usr/bin/dash", b"sh\0-c\0echo hi\0"
    d = Decoder(wall_offset_ns=0)
    e = list(d.feed([rec(abi.EV_EXEC, fn + exe + argv, args=(len(fn), len(exe), len(argv), len(argv)))]))[0]
    assert (e.filename, e.exe, e.argv) == ("/bin/sh", "/usr/bin/dash", ["sh", "-c", "echo hi"])
    x = list(d.feed([rec(abi.EV_EXIT, ret=(3 << 8), ts=2)]))[0]
    assert (x.exit_code, x.signal) == (3, None)
    x = list(d.feed([rec(abi.EV_EXIT, ret=0x80 | 11, ts=3)]))[0]
    assert (x.exit_code, x.signal_name, x.core_dumped) == (None, "SIGSEGV", True)
    f = list(d.feed([rec(abi.EV_FORK, args=(4242, 77, 0, 0), ts=4)]))[0]
    assert (f.child_pid, f.child_start_ns) == (4242, 77)


def test_open_flags():
    assert decode_open_flags(0o2000000 | 0o100 | 1) == (["O_WRONLY", "O_CREAT", "O_CLOEXEC"], "write")
    assert decode_open_flags(0o20200000 | 2)[0] == ["O_RDWR", "O_TMPFILE"]
    assert decode_open_flags(0o10000000)[1] == "path"


def test_sockaddr_decoding():
    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + socket.inet_aton("127.0.0.9") + b"\0" * 8
    assert decode_sockaddr(v4) == ("AF_INET", "127.0.0.9", 443, None)
    v6 = struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 8) + b"\0" * 4 + \
        socket.inet_pton(socket.AF_INET6, "::1") + b"\0" * 4
    assert decode_sockaddr(v6) == ("AF_INET6", "::1", 8, None)
    assert decode_sockaddr(struct.pack("<H", socket.AF_UNIX) + b"\0abs") == ("AF_UNIX", None, None, "@abs")
    assert decode_sockaddr(b"\x01") == ("unknown", None, None, None)


def test_deep_ancestry_is_completed_from_the_table():
    from mcpwitness.proc import ProcTable
    t = ProcTable()
    chain = list(range(200, 190, -1))  # 200's parent 199 ... 191
    for child, parent in zip(chain, chain[1:]):
        t.add(child, parent)
    d = Decoder(ancestry=t.extend, wall_offset_ns=0)
    r = rec(abi.EV_EXIT, depth=12, anc=list(range(199, 191, -1)))
    e = list(d.feed([r]))[0]
    assert e.ancestry[:8] == list(range(199, 191, -1)) and e.ancestry[8:] == [191]


def test_wall_time_format():
    d = Decoder(wall_offset_ns=1_700_000_000_000_000_000)
    assert d.wall_time(123) == "2023-11-14T22:13:20.000000123Z"
