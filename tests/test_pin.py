"""watch --pin: the kernel side outlives its agent. A real SDK client and
server go on while the agent is SIGKILLed and started again: a denied
connect is still refused with no agent, what the server does meanwhile is in
the pinned ring and recorded by the next agent, under the same session, and
`mcpwitness unload` detaches everything."""
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import pytest
from conftest import SLOW, wait_for

from mcpwitness.kernel.pin import PIN_ROOT

pytestmark = pytest.mark.kernel
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")

POLICY = """
policies:
  - name: audit
    match: {cmdline: "*audit_server.py*"}
    network:
      deny: ["127.0.0.3"]
"""


class Client:
    """stepped_client.py: one call per line, the server launched by the client."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "stepped_client.py"),
                                   sys.executable, SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"

    def call(self, tool, args):
        self.p.stdin.write(json.dumps([tool, args]) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(timeout=60 * SLOW) == 0


def records(path):
    with open(path) as f:
        return [json.loads(x) for x in f]


def has_call(path, tool, marker=""):
    try:
        return any(r["type"] == "call" and r.get("tool") == tool and marker in json.dumps(r.get("arguments"))
                   for r in records(path))
    except (OSError, ValueError):
        return False


def watch(name, out, pfile, *extra):
    w = subprocess.Popen([MW, "watch", "--pin", name, "--policy", str(pfile), "--jsonl", str(out), "--no-store",
                          "--comm", "python3.11", "--comm", "python3", "--comm", "python", *extra],
                         stderr=subprocess.PIPE, text=True)
    wait_for(lambda: w.poll() is not None or os.path.exists(out) and '"start"' in open(out).read(), 60 * SLOW)
    assert os.path.exists(out) and '"start"' in open(out).read(), w.stderr.read() if w.poll() is not None else ""
    return w


@pytest.fixture
def pin_name():
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run([MW, "unload", "-q", name], capture_output=True)


@pytest.mark.matrix("pinned programs: restart")
def test_a_killed_agent_loses_nothing_and_the_next_one_takes_over(tmp_path, listen, pin_name):
    pfile = tmp_path / "policy.yaml"
    pfile.write_text(POLICY)
    lst = listen("127.0.0.3")
    out1, out2 = tmp_path / "w1.jsonl", tmp_path / "w2.jsonl"
    marker = tmp_path / f"while-no-agent-{uuid.uuid4().hex[:6]}.txt"
    marker.write_text("x")
    w1 = watch(pin_name, out1, pfile)
    c = Client()
    try:
        assert c.call("read_file", {"path": "/etc/hostname"})["error"] is False
        assert wait_for(lambda: has_call(out1, "read_file"), 30 * SLOW)
        pins = os.listdir(os.path.join(PIN_ROOT, pin_name, "links"))
        assert pins and os.listdir(os.path.join(PIN_ROOT, pin_name, "maps"))
        w1.send_signal(signal.SIGKILL)                 # no drain, no goodbye: as the OOM killer does
        w1.wait(timeout=30)
        # no agent at all now: the pinned programs still refuse and still record
        r = c.call("connect", {"port": lst.port, "host": "127.0.0.3"})
        assert r["error"] is True and lst.accepted == []   # EPERM in the server (its log says so)
        assert c.call("read_file", {"path": str(marker)})["error"] is False
        w2 = watch(pin_name, out2, pfile)
        try:
            assert c.call("read_file", {"path": "/etc/hostname"})["error"] is False
            assert wait_for(lambda: has_call(out2, "read_file", "/etc/hostname"), 30 * SLOW)
        finally:
            c.close()
            w2.send_signal(signal.SIGTERM)
            assert w2.wait(timeout=60 * SLOW) == 0
    finally:
        if w1.poll() is None:
            w1.kill()
    r1, r2 = records(out1), records(out2)
    start = next(r for r in r2 if r["type"] == "start")
    assert start["pinned"]["adopted"] is True and start["pinned"]["previous_agent_pid"] == w1.pid
    assert start["pinned"]["replaced"] is None
    # the server the first agent found is taken up, as discovered by the pinned programs
    d = [r for r in r2 if r["type"] == "discovered"]
    assert len(d) == 1 and "pinned programs" in d[0]["reason"] and d[0]["policy"] == "audit"
    # the same session, under the same id
    sid = next(r["session"] for r in r1 if r["type"] == "session" and r["event"] == "identified")
    resumed = [r for r in r2 if r["type"] == "session" and r["event"] == "resumed"]
    assert [r["session"] for r in resumed] == [sid] and resumed[0]["role"] == "server"
    calls = [r for r in r2 if r["type"] == "call"]
    assert calls and {r["session"] for r in calls} == {sid}
    # what happened while no agent ran: in the ring, decoded by the second agent, in its calls
    conn = next(r for r in calls if r.get("tool") == "connect")
    pe = [e for e in conn["timeline"] if e["type"] == "policy"]
    assert len(pe) == 1 and pe[0]["errno"] == "EPERM" and pe[0]["policy"] == "audit"
    rf = next(r for r in calls if r.get("tool") == "read_file" and str(marker) in json.dumps(r["arguments"]))
    assert any(e["type"] == "open" and e.get("path") == str(marker) for e in rf["timeline"])
    stats = r2[-1]
    assert stats["type"] == "stats" and stats["pinned"]["during_restart"] >= 2 and stats["lost"]["events"] == 0
    assert stats["mcp"]["sessions_resumed"] == 1


def test_unload_detaches_everything(tmp_path, pin_name):
    pfile = tmp_path / "policy.yaml"
    pfile.write_text(POLICY)
    w = watch(pin_name, tmp_path / "w.jsonl", pfile, "--duration", str(3 * SLOW))
    # a second agent on the same pins would read half of the ring: refused
    second = subprocess.run([MW, "watch", "--pin", pin_name, "--jsonl", str(tmp_path / "x.jsonl"), "--no-store",
                             "--duration", "1"], capture_output=True, text=True, timeout=60 * SLOW)
    assert second.returncode == 1 and f"running agent (pid {w.pid})" in second.stderr, second.stderr
    assert w.wait(timeout=60 * SLOW) == 0
    assert "stay pinned" in w.stderr.read()
    links = os.path.join(PIN_ROOT, pin_name, "links")
    ids = []
    for name in os.listdir(links):
        show = subprocess.run(["bpftool", "-j", "link", "show", "pinned", os.path.join(links, name)],
                              capture_output=True, text=True, check=True)
        ids.append(json.loads(show.stdout)["id"])
    assert len(ids) > 10
    u = subprocess.run([MW, "unload", pin_name], capture_output=True, text=True)
    assert u.returncode == 0 and "detached" in u.stderr
    assert not os.path.exists(os.path.join(PIN_ROOT, pin_name))
    live = {x["id"] for x in json.loads(subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True,
                                                        text=True, check=True).stdout)}
    assert not live & set(ids)
    assert subprocess.run([MW, "unload", pin_name], capture_output=True).returncode == 1   # nothing left


def test_other_options_replace_the_pinned_programs_and_say_so(tmp_path, pin_name):
    pfile = tmp_path / "policy.yaml"
    pfile.write_text(POLICY)
    w = watch(pin_name, tmp_path / "a.jsonl", pfile, "--duration", "0.5", "-q")
    assert w.wait(timeout=60 * SLOW) == 0
    w = watch(pin_name, tmp_path / "b.jsonl", pfile, "--duration", "0.5", "-q", "--ring-size", "1M")
    assert w.wait(timeout=60 * SLOW) == 0
    start = next(r for r in records(tmp_path / "b.jsonl") if r["type"] == "start")
    assert start["pinned"]["adopted"] is False and "ring_size" in start["pinned"]["replaced"]
