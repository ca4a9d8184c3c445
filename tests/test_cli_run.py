"""`mcpwitness run` as a client would use it: in front of a server command."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import wait_for

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


ECHO = ("import sys\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(data.upper())\n"
        "sys.stderr.write('server log\\n')\n"
        "open(sys.argv[1]).close()\n"
        "sys.exit(3)\n")


def test_stdio_passes_through_and_status_is_returned(tmp_path, workdir):
    out = tmp_path / "ev.jsonl"
    marker = workdir / "opened-by-server"
    marker.write_text("x")
    payload = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n' * 1000 + b"\xff\x00binary"
    p = subprocess.run([MW, "run", "-q", "--jsonl", str(out), "--", sys.executable, "-c", ECHO, str(marker)],
                       input=payload, capture_output=True, timeout=60)
    assert p.returncode == 3
    assert p.stdout == payload.upper()          # byte for byte, nothing of ours
    assert p.stderr == b"server log\n"          # -q: not a word of ours either
    evs = read_jsonl(out)
    # the file opens with its hash chain's start record (output/chain.py), then the run's
    assert evs[0]["type"] == "chain" and evs[0]["event"] == "begin" and evs[0]["prev"] == "0" * 32
    assert evs[1]["type"] == "start" and evs[-1]["type"] == "stats"
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    root = evs[1]["root_pid"]
    ex = [e for e in evs if e["type"] == "exec"]
    assert ex[0]["pid"] == root and ex[0]["argv"][:2] == [sys.executable, "-c"]
    # the command was tracked from its first instruction: its very first exec
    # is the first event, before the dynamic loader's first open
    assert [e["type"] for e in evs[2:4]] == ["exec", "open"]
    assert any(e["type"] == "open" and e["path"] == str(marker) and e["pid"] == root for e in evs)
    assert [e for e in evs if e["type"] == "exit" and e["pid"] == root][0]["exit_code"] == 3
    assert evs[-1]["lost"] == {"events": 0, "event_chunks": 0, "untracked_children": 0}


def test_default_path_is_printed_once(tmp_path):
    env = dict(os.environ, MCPWITNESS_STATE_DIR=str(tmp_path / "state"))
    p = subprocess.run([MW, "run", "--", "/bin/true"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout == ""
    lines = p.stderr.splitlines()
    first = [ln for ln in lines if ln.startswith("mcpwitness: events -> ")]
    assert len(first) == 1
    path = first[0].split(" -> ", 1)[1]
    assert path.startswith(str(tmp_path / "state")) and os.path.exists(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert any(e["type"] == "exec" for e in read_jsonl(path))


def test_missing_command_is_a_clear_error(tmp_path):
    p = subprocess.run([MW, "run", "--jsonl", str(tmp_path / "e.jsonl"), "--", "no-such-command-xyz"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 127
    assert "no-such-command-xyz: command not found" in p.stderr
    p = subprocess.run([MW, "run", "--jsonl", str(tmp_path / "e.jsonl"), "--", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 127 and "command not found" in p.stderr


def test_usage_errors():
    p = subprocess.run([MW, "run"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "either -- CMD" in p.stderr
    p = subprocess.run([MW, "run", "--ring-size", "3000", "--", "true"], capture_output=True, text=True)
    assert p.returncode == 2 and "power of two" in p.stderr
    p = subprocess.run([MW, "watch", "--port", "70000"], capture_output=True, text=True)
    assert p.returncode == 2 and "not a TCP port" in p.stderr
    many = [x for i in range(65) for x in ("--port", str(20000 + i))]
    p = subprocess.run([MW, "watch", *many], capture_output=True, text=True)
    assert p.returncode == 2 and "at most 64 ports" in p.stderr


def test_sigterm_is_forwarded_and_signal_status_returned(tmp_path):
    out = tmp_path / "ev.jsonl"
    p = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--", "/bin/sleep", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: out.exists() and '"exec"' in out.read_text(), 20)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 128 + signal.SIGTERM
    ex = [e for e in read_jsonl(out) if e["type"] == "exit" and e["comm"] == "sleep"]
    assert ex and ex[0]["signal"] == signal.SIGTERM and ex[0]["signal_name"] == "SIGTERM"


ATTACH_TREE = """
import os, sys, time
wd = sys.argv[1]
if os.fork() == 0:                       # an existing descendant
    while not os.path.exists(wd + "/go"):
        time.sleep(0.02)
    open(wd + "/child-saw-go").close()
    os._exit(0)
while not os.path.exists(wd + "/go"):
    time.sleep(0.02)
os.system("cat " + wd + "/go > /dev/null")  # a new descendant
os.wait()
sys.exit(4)
"""


def test_attach_to_running_tree(tmp_path, workdir):
    tree = subprocess.Popen([sys.executable, "-c", ATTACH_TREE, str(workdir)])
    time.sleep(0.5)
    out = tmp_path / "ev.jsonl"
    mw = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--pid", str(tree.pid)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: out.exists() and '"start"' in out.read_text(), 20)
    start = next(r for r in read_jsonl(out) if r["type"] == "start")
    assert start["mode"] == "attach" and start["root_pid"] == tree.pid and len(start["attached"]) == 2
    (workdir / "go").write_text("go")
    assert tree.wait(timeout=20) == 4
    assert mw.wait(timeout=20) == 4      # the target's status, from the kernel's exit event
    evs = read_jsonl(out)
    child = [p for p in start["attached"] if p != tree.pid][0]
    seen = [e for e in evs if e["type"] == "open" and e["path"] == f"{workdir}/child-saw-go"]
    assert seen and seen[0]["pid"] == child and seen[0]["ancestry"] == [tree.pid]
    cat = [e for e in evs if e["type"] == "exec" and e["argv"][:1] == ["cat"]]
    assert cat and cat[0]["ancestry"][-1] == tree.pid
    assert any(e["type"] == "exit" and e["pid"] == tree.pid and e["exit_code"] == 4 for e in evs)


def test_attach_to_missing_pid(tmp_path):
    p = subprocess.run([MW, "run", "--jsonl", str(tmp_path / "e.jsonl"), "--pid", "999999999"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "no process 999999999" in p.stderr


def test_the_tls_line_says_what_will_happen(tmp_path):
    """Per-process TLS probes attach later: at start `run` says when, not that no libssl exists
    (where this host has one)."""
    from mcpwitness.kernel.tls import system_libraries
    p = subprocess.run([MW, "run", "--no-store", "--jsonl", str(tmp_path / "e.jsonl"), "--", "/bin/true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    tls = [ln for ln in p.stderr.splitlines() if "TLS" in ln]
    assert len(tls) == 1 and "will not be captured" not in tls[0]
    if system_libraries():
        assert "probed in each tracked process that loads libssl (libssl.so" in tls[0]
