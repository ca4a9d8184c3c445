"""Event details on the real kernel: paths, argv, connects, identity, drops."""
import os
import socket
import subprocess
import sys

import pytest
from conftest import HOOK_SETS, run_tracked

from mcpwitness.agent import Agent
from mcpwitness.kernel.loader import LoadOptions
from mcpwitness.output.jsonl import ListSink
from mcpwitness.proc import ProcStat, read_stat
from mcpwitness.records import ConnectEvent, ExecEvent, OpenEvent

pytestmark = pytest.mark.kernel
PY = sys.executable


def opens_under(events, d):
    return [e for e in events if isinstance(e, OpenEvent) and e.path.startswith(str(d))]


def test_long_path_and_argv_span_many_records(agent, workdir):
    deep = workdir
    for i in range(12):  # ~ 12 * 250 = 3000 bytes: about 9 records per path
        deep = deep / (f"{i:02d}" + "d" * 240)
    os.makedirs(deep)
    target = deep / "file.txt"
    target.write_text("x")
    big_arg = "A" * 8000  # argv ~ 14.4 KiB in all: under the 16 KiB cap, ~41 records
    script = f"import sys; open({str(target)!r}).close(); open({str(target) + '.missing'!r}, 'rb')"
    _, code, events = run_tracked(agent, [PY, "-c", script, big_arg])
    assert code == 1
    ok, missing = opens_under(events, workdir)
    assert ok.path == str(target) and ok.resolved == str(target) and not ok.truncated
    assert missing.path == str(target) + ".missing" and missing.error == "ENOENT"
    ex = [e for e in events if isinstance(e, ExecEvent) and e.result == 0][0]
    assert ex.argv == [PY, "-c", script, big_arg] and not ex.truncated


def test_argv_beyond_the_limit_is_marked_truncated(workdir):
    a = Agent(ListSink(), LoadOptions(argv_max=64))
    a.start()
    _, _, events = run_tracked(a, ["/bin/echo", "x" * 200])
    ex = [e for e in events if isinstance(e, ExecEvent) and e.result == 0][0]
    assert ex.truncated and ex.argv_bytes == len("/bin/echo") + 1 + 201
    assert "".join(ex.argv).startswith("/bin/echox") and len("\0".join(ex.argv)) <= 64
    assert any("argv cut at 64" in n for n in ex.notes)


@pytest.mark.matrix("opens")
@pytest.mark.parametrize("agent", HOOK_SETS, indirect=True)
def test_open_variants(agent, workdir):
    script = f"""
import ctypes, errno, os, sys
wd = {str(workdir)!r}
os.chdir(wd)
open("rel.txt", "w").close()                               # relative, created
try: open("missing-rel.txt")                                # relative, fails
except FileNotFoundError: pass
d = os.open(wd, os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open("rel.txt", os.O_RDWR | os.O_APPEND, dir_fd=d))   # openat with a dirfd
os.symlink(wd + "/rel.txt", wd + "/link")
open(wd + "/link").close()                                  # resolved through the link
libc = ctypes.CDLL(None, use_errno=True)
libc.creat.argtypes = [ctypes.c_char_p, ctypes.c_uint]
os.close(libc.creat((wd + "/created").encode(), 0o640))     # creat(2)
try:                                                        # O_TMPFILE
    os.close(os.open(wd, os.O_TMPFILE | os.O_WRONLY, 0o600))
except OSError as e:  # overlayfs before 6.6 (a virtme guest's /tmp on 6.1) has no O_TMPFILE
    if e.errno != errno.EOPNOTSUPP:
        raise
"""
    _, code, events = run_tracked(agent, [PY, "-c", script])
    assert code == 0
    by = {}
    for e in opens_under(events, workdir) + [e for e in events if isinstance(e, OpenEvent) and
                                             not e.path.startswith("/")]:
        by.setdefault(e.path, []).append(e)
    rel = by["rel.txt"]
    assert rel[0].resolved == f"{workdir}/rel.txt" and "O_CREAT" in rel[0].flags and rel[0].mode == "0666"
    assert rel[1].dirfd is not None and rel[1].access == "readwrite" and "O_APPEND" in rel[1].flags
    assert rel[1].resolved == f"{workdir}/rel.txt"
    miss = by["missing-rel.txt"][0]
    assert miss.error == "ENOENT" and miss.resolved == f"{workdir}/missing-rel.txt"
    assert any("not opened" in n for n in miss.notes)
    assert by[f"{workdir}/link"][0].resolved == f"{workdir}/rel.txt"
    cr = by[f"{workdir}/created"][0]
    assert cr.syscall == "creat" and cr.flags == ["O_WRONLY", "O_CREAT", "O_TRUNC"] and cr.mode == "0640"
    tmp = [e for e in by[str(workdir)] if "O_TMPFILE" in e.flags]
    assert tmp and tmp[0].mode == "0600" and (tmp[0].result is not None or tmp[0].error in ("EOPNOTSUPP", "ENOTSUP"))


@pytest.mark.matrix("connects")
@pytest.mark.parametrize("agent", HOOK_SETS, indirect=True)
def test_connect_families(agent, workdir):
    srv6 = socket.socket(socket.AF_INET6)
    srv6.bind(("::1", 0))
    srv6.listen(4)
    usock = str(workdir / "s.sock")
    srvu = socket.socket(socket.AF_UNIX)
    srvu.bind(usock)
    srvu.listen(4)
    p6 = srv6.getsockname()[1]
    script = f"""
import socket
s = socket.socket(socket.AF_INET6); s.connect(("::1", {p6})); s.close()
s = socket.socket(socket.AF_UNIX); s.connect({usock!r}); s.close()
s = socket.socket(socket.AF_UNIX)
try: s.connect("\\0mcpwitness-abstract-none")
except OSError: pass
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.2", 53)); s.close()
s = socket.socket()
try: s.connect(("127.0.0.1", 1))
except OSError: pass
"""
    _, code, events = run_tracked(agent, [PY, "-c", script])
    srv6.close()
    srvu.close()
    assert code == 0
    c = [e for e in events if isinstance(e, ConnectEvent)]
    assert [(e.family, e.address, e.port, e.unix_path, e.protocol, e.error) for e in c] == [
        ("AF_INET6", "::1", p6, None, "tcp", None),
        ("AF_UNIX", None, None, usock, None, None),
        ("AF_UNIX", None, None, "@mcpwitness-abstract-none", None, "ECONNREFUSED"),
        ("AF_INET", "127.0.0.2", 53, None, "udp", None),
        ("AF_INET", "127.0.0.1", 1, None, "tcp", "ECONNREFUSED"),
    ]
    assert c[3].sock_type == "dgram" and c[1].sock_type == "stream"


@pytest.mark.matrix("failed execs")
@pytest.mark.parametrize("agent", HOOK_SETS, indirect=True)
def test_failed_exec_is_reported(agent, workdir):
    script = f"import os\ntry: os.execv({str(workdir / 'nope')!r}, ['nope'])\nexcept OSError: pass"
    _, _, events = run_tracked(agent, [PY, "-c", script])
    f = [e for e in events if isinstance(e, ExecEvent) and e.result < 0]
    assert len(f) == 1 and f[0].filename == str(workdir / "nope") and f[0].error == "ENOENT"
    assert f[0].syscall == "execve"


@pytest.mark.matrix("fileless exec (memfd) and opens through /proc/self/fd")
def test_a_program_run_from_a_memfd_is_named_as_one(agent, workdir):
    """Fileless execution: a copy of a program in a memfd, run with fexecve
    (execveat AT_EMPTY_PATH). The binary has no path; the exec says so with
    the memfd's name, never a path it does not have. And a file opened
    through /proc/self/fd/N is resolved to the file itself."""
    (workdir / "a.txt").write_text("x")
    script = f"""
import os
m = os.memfd_create("not-on-disk", 0)
os.write(m, open("/bin/true", "rb").read())
pid = os.fork()
if pid == 0:
    os.execve(m, ["fileless"], {{}})
os.waitpid(pid, 0)
d = os.open({str(workdir)!r}, os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open(f"/proc/self/fd/{{d}}/a.txt", os.O_RDONLY))
"""
    _, code, events = run_tracked(agent, [PY, "-c", script])
    assert code == 0
    ex = [e for e in events if isinstance(e, ExecEvent) and e.argv == ["fileless"]]
    assert len(ex) == 1 and ex[0].result == 0, ex
    assert ex[0].exe == "memfd:not-on-disk" and not ex[0].exe.startswith("/"), ex[0]
    via = [e for e in events if isinstance(e, OpenEvent) and e.path.startswith("/proc/self/fd/")]
    assert [e.resolved for e in via] == [str(workdir / "a.txt")], via


def test_pid_reuse_entry_is_refused(agent, workdir):
    """An entry whose start time is not the running process's is a leftover
    for a pid now reused: the kernel drops it and reports nothing."""
    p = subprocess.Popen([PY, "-c", f"import time; time.sleep(0.5); open({str(workdir / 'reused')!r}, 'w')"])
    st = read_stat(p.pid)
    stale = ProcStat(st.pid, st.comm, st.state, st.ppid, st.start_ticks - 100)  # 1 s earlier
    agent.kernel.track(p.pid, stale, root=p.pid)
    assert p.wait(timeout=10) == 0
    agent.stop()
    assert not opens_under(agent.sink.events, workdir)
    assert not [e for e in agent.sink.events if e.pid == p.pid]
    assert agent.sink.records[-1]["kernel"]["stale_entries"] == 1


def test_seeded_entry_is_confirmed_by_start_time(agent, workdir):
    p = subprocess.Popen([PY, "-c", f"import time; time.sleep(0.5); open({str(workdir / 'seeded')!r}, 'w')"])
    ticks = read_stat(p.pid).start_ticks
    agent.kernel.track(p.pid)  # ticks from /proc: confirmed, then refined to ns
    assert p.wait(timeout=10) == 0
    agent.stop()
    o = opens_under(agent.sink.events, workdir)
    assert len(o) == 1 and o[0].pid == p.pid
    assert o[0].start_ns // 10_000_000 == ticks and o[0].start_ns % 10_000_000 != 0


def test_full_ring_is_counted_exactly(workdir):
    """With a tiny ring and no consumer, what is lost is counted, and
    decoded + lost adds up to what the kernel emitted."""
    a = Agent(ListSink(), LoadOptions(ring_size=1 << 16))  # 128 records
    n = 2000
    script = f"import os\nfor i in range({n}):\n    try: os.open('{workdir}/n-%d' % i, os.O_RDONLY)\n    except OSError: pass"
    pid = a.spawn_tracked([PY, "-c", script])
    os.waitpid(pid, 0)
    stats = a.stop(settle=0)
    kc = stats["kernel"]
    assert kc["ringbuf_full_events"] > 0
    assert stats["lost"]["events"] == kc["ringbuf_full_events"]
    decoded = sum(stats["events"].values())
    assert decoded == kc["events"]
    mine = [e for e in opens_under(a.sink.events, workdir)]
    assert 0 < len(mine) < n
    assert mine == sorted(mine, key=lambda e: e.ktime_ns)


def _workload_events(reader):
    a = Agent(ListSink(), reader=reader)
    a.start()
    script = ("import os, sys\n"
              "for i in range(3000):\n"
              "    try: os.open(sys.argv[1] + '/f-%05d-' % i + 'x' * (i % 700), os.O_RDONLY)\n"
              "    except OSError: pass\n")
    wd = f"/tmp/mw-cross-{os.getpid()}"
    _, _, events = run_tracked(a, [PY, "-c", script, wd])
    return [(e.path, e.flags, e.error) for e in events if isinstance(e, OpenEvent) and e.path.startswith(wd)], \
        a.sink.records[-1]


def test_batch_reader_matches_libbpf_consumer():
    batch, s1 = _workload_events("batch")
    ref, s2 = _workload_events("libbpf")
    assert len(batch) == 3000
    assert batch == ref
    assert s1["lost"]["events"] == s2["lost"]["events"] == 0
