"""Least privilege, for real: each feature runs as an unprivileged user
(nobody) that holds only the capabilities kernel/caps.py lists for it, with
a real MCP client and server; one capability fewer is refused before
anything loads, with a message naming it; and with that check switched off
(MCPWITNESS_NO_CAP_CHECK=1), the kernel or /proc shows why the capability
is needed. A listed capability that was not needed would fail this test."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import anyio
import pytest
from conftest import PY, SLOW, free_port, wait_for
from mcp_client import RecordingStdio, client
from test_mcp_http import drive, server_argv, start_server, stop, url_of

from mcpwitness.kernel import caps
from mcpwitness.kernel.loader import Kernel, LoadOptions

pytestmark = pytest.mark.kernel
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
NOBODY = 65534
# what each case needs, from kernel/caps.py's table
SETS = {"run": ["CAP_BPF", "CAP_PERFMON"],
        "watch": ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"],
        "watch --port": ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"],
        "run --policy": ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]}
# an older libbpf on a kernel without the object's kfunc (Debian 12: libbpf 1.1, Linux 6.1) lists the
# modules' BTF, which takes CAP_SYS_ADMIN; it stands in for CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN
SYS_ADMIN = caps.module_btf_needs_sys_admin()
if SYS_ADMIN:
    SETS = {k: ["CAP_SYS_ADMIN"] + [c for c in v if c == "CAP_SYS_PTRACE"] for k, v in SETS.items()}


def test_the_sets_are_the_documented_table():
    if SYS_ADMIN:
        assert caps.needed("run", False, False) == ["record", "module_btf"]
        return
    table = {f: list(c) for f, (c, _) in caps.FEATURES.items()}
    assert SETS["run"] == table["record"]
    assert SETS["watch"] == table["record"] + table["others"]
    assert SETS["run --policy"] == table["record"] + table["policy"]
    assert caps.needed("watch", False, False) == ["record", "others"]
    assert caps.needed("run", True, False) == ["record", "policy"]
    assert caps.needed("run", False, True) == ["record", "others"]


@pytest.fixture
def home():
    d = tempfile.mkdtemp(prefix="mw-caps-", dir="/tmp")
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(capset, pythonpath, home, args, check_caps=True):
    c = ",".join(["-all"] + ["+" + x[4:].lower() for x in capset])
    env = [f"PYTHONPATH={pythonpath}", f"HOME={home}", f"MCPWITNESS_STATE_DIR={home}/state", "PATH=/usr/bin:/bin"]
    if not check_caps:
        env.append("MCPWITNESS_NO_CAP_CHECK=1")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", f"--inh-caps={c}",
            f"--ambient-caps={c}", f"--bounding-set={c}", "--", "env", "-i", *env, PY, "-m", "mcpwitness", *args]


def started(w, out):
    """Wait for the agent's start record; an agent that exits first fails at once."""
    wait_for(lambda: w.poll() is not None or os.path.exists(out) and '"start"' in open(out).read(), 60 * SLOW)
    assert w.poll() is None, f"the agent exited with {w.returncode}"
    assert '"start"' in open(out).read()


def load(path):
    with open(path) as f:
        return [json.loads(x) for x in f]


def call(recs, tool):
    return next(r for r in recs if r["type"] == "call" and r.get("tool") == tool)


# --- each feature with exactly its set ----------------------------------------

def run_session(capset, pp, home, extra=(), calls=(), check_caps=True):
    out = os.path.join(home, "run.jsonl")
    t = RecordingStdio("setpriv", as_nobody(capset, pp, home, ["run", "-q", "--jsonl", out, "--no-store", *extra,
                                                                "--", PY, SERVER], check_caps)[1:])
    results = []

    async def main():
        async with client(t) as c:
            for name, args in calls:
                r = await c.call_tool(name, args)
                results.append((r.is_error, r.content[0].text if r.content else ""))

    anyio.run(main)
    return load(out), results


@pytest.mark.matrix("least privilege: run")
def test_run_with_its_capability_set_only(system_python, home):
    recs, results = run_session(SETS["run"], system_python, home, calls=[
        ("read_file", {"path": "/etc/hostname"}),
        ("run", {"argv": ["sh", "-c", "grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status; id -u"]})])
    assert not results[0][0] and not results[1][0]
    start = next(r for r in recs if r["type"] == "start")
    assert start["type"] == "start" and start["agent_pid"]
    rf = call(recs, "read_file")
    assert any(e["type"] == "open" and e.get("path") == "/etc/hostname" and e["attribution"] == "exact"
               for e in rf["timeline"])
    run = call(recs, "run")
    assert [e["argv"][:2] for e in run["timeline"] if e["type"] == "exec" and e.get("result") in (None, 0)][:1] \
        == [["sh", "-c"]]
    # the command runs as the agent's user with none of its capabilities
    out = results[1][1]
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out, out
    assert "CapAmb:\t0000000000000000" in out and out.strip().endswith(str(NOBODY))


def watched_by_nobody(capset, pp, home, calls, check_caps=True):
    """A root client launches the audit server; `watch` runs as nobody with capset. Its records."""
    out, go, log = os.path.join(home, "w.jsonl"), os.path.join(home, "go"), os.path.join(home, "client.json")
    cfg = json.dumps({"command": sys.executable, "args": [SERVER], "calls": calls})
    cli = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "watched_client.py"), go, log, cfg])
    w = subprocess.Popen(as_nobody(capset, pp, home, ["watch", "-q", "--jsonl", out, "--no-store",
                                                      "--pid", str(cli.pid)], check_caps))
    try:
        started(w, out)
        open(go, "w").close()
        assert cli.wait(timeout=60 * SLOW) == 0
    finally:
        stop(w, signal.SIGTERM)
    return load(out)


@pytest.mark.matrix("least privilege: watch")
def test_watch_with_its_capability_set_only(system_python, home):
    recs = watched_by_nobody(SETS["watch"], system_python, home, [["read_file", {"path": "/etc/hostname"}]])
    found = [r for r in recs if r["type"] == "discovered"]
    # a root server, seen by an unprivileged agent: its executable and namespaces are read
    assert len(found) == 1 and found[0]["exe"] == os.path.realpath(sys.executable)
    ident = [r for r in recs if r["type"] == "session" and r["event"] == "identified"][-1]
    assert ident["ends"][0]["pid_ns"] and ident["ends"][0]["net_ns"]
    rf = call(recs, "read_file")
    assert any(e["type"] == "open" and e.get("path") == "/etc/hostname" for e in rf["timeline"])
    assert recs[-1]["type"] == "stats" and recs[-1]["lost"]["events"] == 0


def test_watch_port_with_its_capability_set_only(system_python, home):
    port = free_port()
    out = os.path.join(home, "p.jsonl")
    srv = start_server(server_argv("http", "127.0.0.1", port, None))
    w = subprocess.Popen(as_nobody(SETS["watch --port"], system_python, home,
                                   ["watch", "-q", "--jsonl", out, "--no-store", "--port", str(port)]))
    try:
        started(w, out)
        drive(url_of("http", "127.0.0.1", port), [("echo", {"text": "least privilege"})])
        assert wait_for(lambda: '"echo"' in open(out).read() and '"call"' in open(out).read(), 30 * SLOW)
    finally:
        stop(w, signal.SIGTERM)
        stop(srv)
    recs = load(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    assert {r["transport"] for r in mcp} == {"http"}
    assert any(r["method"] == "tools/call" and r["direction"] == "client->server" for r in mcp)
    disc = [r for r in recs if r["type"] == "discovered"]
    assert disc and disc[0]["pid"] == srv.pid and disc[0]["exe"] == os.path.realpath(sys.executable)


POLICY = """
policies:
  - name: audit
    match: {{cmdline: "*audit_server.py*"}}
    network:
      deny: ["127.0.0.3"]
    files:
      deny: ["{secret}"]
"""


def policy_session(capset, pp, home, listen, check_caps=True):
    lst = listen("127.0.0.3")
    secret = os.path.join(home, "secret.txt")
    with open(secret, "w") as f:
        f.write("s")
    os.chmod(secret, 0o644)
    pfile = os.path.join(home, "policy.yaml")
    with open(pfile, "w") as f:
        f.write(POLICY.format(secret=secret))
    os.chmod(pfile, 0o644)
    recs, results = run_session(capset, pp, home, ["--policy", pfile],
                                [("connect", {"port": lst.port, "host": "127.0.0.3"})], check_caps)
    return recs, results, lst


@pytest.mark.matrix("least privilege: run --policy")
def test_run_policy_with_its_capability_set_only(system_python, home, listen):
    recs, results, lst = policy_session(SETS["run --policy"], system_python, home, listen)
    assert results[0][0] and lst.accepted == []      # refused before any packet
    pe = [e for e in call(recs, "connect")["timeline"] if e["type"] == "policy"]
    assert len(pe) == 1 and pe[0]["errno"] == "EPERM" and pe[0]["mechanism"] == "cgroup/connect4"
    # every enforcement mechanism root would use here (BPF LSM where the kernel has it) is used
    with Kernel.load(LoadOptions(ring_size=1 << 16, max_procs=64, enforce=True)) as k:
        as_root = dict(k.mechanisms)
    used = next(r for r in recs if r["type"] == "start")["policy"]["mechanisms"]
    assert used == {k: v for k, v in as_root.items() if k in used}


# --- one fewer: refused, naming it; and what the kernel does without it ---------

@pytest.mark.parametrize("case,drop", [(c, x) for c in SETS for x in SETS[c] if c != "watch --port"])
def test_one_capability_fewer_is_refused_naming_it(system_python, home, case, drop):
    kept = [x for x in SETS[case] if x != drop]
    mode, _, rest = case.partition(" ")
    args = [mode, "-q", "--jsonl", os.path.join(home, "x.jsonl"), "--no-store"]
    if rest == "--policy":
        pfile = os.path.join(home, "p.yaml")
        with open(pfile, "w") as f:
            f.write(POLICY.format(secret="/nonexistent"))
        os.chmod(pfile, 0o644)
        args += ["--policy", pfile]
    args += ["--duration", "1"] if mode == "watch" else ["--", "true"]
    p = subprocess.run(as_nobody(kept, system_python, home, args), capture_output=True, text=True,
                       timeout=60 * SLOW)
    assert p.returncode == 1, p.stderr
    m = re.search(r"needs (.*?), which this process does not hold", p.stderr)
    assert m and drop in m.group(1).split(", "), p.stderr
    assert not os.path.exists(os.path.join(home, "x.jsonl"))   # refused before anything was written


@pytest.mark.parametrize("drop", SETS["run"])
def test_without_a_loading_capability_the_kernel_refuses_the_programs(system_python, home, drop):
    kept = [x for x in SETS["run"] if x != drop]
    p = subprocess.run(as_nobody(kept, system_python, home, ["run", "-q", "--jsonl", os.path.join(home, "x.jsonl"),
                                                             "--no-store", "--", "true"], check_caps=False),
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 1 and "cannot load the kernel programs" in p.stderr, p.stderr
    # a refusal for want of a capability is not told as a kernel that lacks features
    assert " lacks " not in p.stderr and "the kernel said EPERM" in p.stderr, p.stderr


def test_without_ptrace_watch_cannot_name_another_users_server(system_python, home):
    recs = watched_by_nobody(SETS["run"], system_python, home, [], check_caps=False)
    found = [r for r in recs if r["type"] == "discovered"]
    assert len(found) == 1 and found[0]["exe"] is None     # /proc/PID/exe of a root process: EACCES


def test_without_net_admin_a_denied_connect_goes_through(system_python, home, listen):
    if SYS_ADMIN:
        pytest.skip("CAP_SYS_ADMIN is needed here and stands in for CAP_NET_ADMIN")
    recs, results, lst = policy_session(["CAP_BPF", "CAP_PERFMON"], system_python, home, listen, check_caps=False)
    start = next(r for r in recs if r["type"] == "start")
    assert "mw_connect4" in start["programs_skipped"] and start["policy"]["mechanisms"]["network"] is None
    assert not results[0][0] and len(lst.accepted) == 1
