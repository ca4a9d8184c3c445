"""Enforcement on this kernel: an SDK server's tools under `mcpwitness run
--policy`, driven by the SDK client. What the policy refuses never happens
(the listener sees nothing), what it allows works, and the call record says
which rule refused what, by which mechanism, with which errno."""
import json
import os
import shutil
import subprocess
import sys

import anyio
import pytest
from conftest import npm_server
from mcp_client import RecordingStdio, client

from mcpwitness import policy
from mcpwitness.agent import Agent
from mcpwitness.kernel.tracking import spawn_tracked
from mcpwitness.kernel.enforce import Enforcer
from mcpwitness.kernel.loader import (
    MECH_CREATE_LSM, MECH_EXEC_KILL, MECH_EXEC_LSM, MECH_FILE_KILL, MECH_FILE_LSM, MECH_NET_CGROUP, Kernel, LoadOptions
)
from mcpwitness.output.jsonl import ListSink

pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(ROOT, "tests", "workloads", "audit_server.py")


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def session(tmp_path, pol: str, calls, extra=()):
    """Run the audit server under a policy; calls(c) drives it. Returns (records, results)."""
    pfile, out = tmp_path / "policy.yaml", tmp_path / "ev.jsonl"
    pfile.write_text(pol)
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--policy", str(pfile), *extra,
                            "--", sys.executable, SERVER])
    results = []

    async def main():
        async with client(t) as c:
            await calls(c, results)
            await anyio.sleep(0.3)

    anyio.run(main)
    return load(out), results


def calls_of(recs, tool):
    return [r for r in recs if r["type"] == "call" and r["tool"] == tool]


def policy_events(call):
    return [e for e in call["timeline"] if e["type"] == "policy"]


@pytest.mark.matrix("enforce: connect (cgroup sock_addr)")
def test_connects_allowed_and_refused_ipv4_ipv6(tmp_path, listen):
    ok4, ok6 = listen("127.0.0.1"), listen("::1")
    other_port, other_addr, other6 = listen("127.0.0.1"), listen("127.0.0.2"), listen("::1")
    pol = f"""
policies:
  - name: audit
    match: {{cmdline: "*audit_server.py*"}}
    network:
      default: deny
      allow: ["127.0.0.1:{ok4.port}", "[::1]:{ok6.port}"]
"""
    targets = [("127.0.0.1", ok4), ("127.0.0.1", other_port), ("127.0.0.2", other_addr), ("::1", ok6),
               ("::1", other6), ("::ffff:127.0.0.1", other_port)]

    async def calls(c, results):
        for host, lst in targets:
            r = await c.call_tool("connect", {"port": lst.port, "host": host})
            results.append((host, lst.port, r.is_error))

    recs, results = session(tmp_path, pol, calls)
    assert [e for _, _, e in results] == [False, True, True, False, True, True]
    # refused before any packet: the listeners never saw a connection
    assert len(ok4.accepted) == 1 and len(ok6.accepted) == 1
    assert other_port.accepted == [] and other_addr.accepted == [] and other6.accepted == []

    start = next(r for r in recs if r["type"] == "start")
    assert start["policy"]["mechanisms"]["network"] == MECH_NET_CGROUP
    assert start["policy"]["servers"] and list(start["policy"]["servers"].values()) == ["audit"]
    records = calls_of(recs, "connect")
    assert len(records) == len(targets)
    for rec, (host, port, refused) in zip(records, results):
        pe = policy_events(rec)
        conn = [e for e in rec["timeline"] if e["type"] == "connect"]
        assert len(conn) == 1 and conn[0]["port"] == port
        if not refused:
            assert pe == [] and conn[0].get("error") in (None, "EINPROGRESS")
            continue
        assert conn[0]["error"] == "EPERM"
        assert len(pe) == 1, rec["timeline"]
        e = pe[0]
        assert e["action"] == "denied" and e["errno"] == "EPERM" and e["check"] == "connect"
        assert e["mechanism"] == ("cgroup/connect6" if host == "::1" else "cgroup/connect4") or \
            (host.startswith("::ffff") and e["mechanism"] == "cgroup/connect6")
        assert e["port"] == port and e["policy"] == "audit" and "default deny" in e["rule"]
        assert "policy.yaml:6:" in e["rule"]  # file:line of the rule that decided
        assert e["attribution"] == "exact"
        assert any(v["kind"] == "policy_denied" for v in rec["violations"])
        assert "policy: 1 refused" in rec["summary"]
    # an IPv4-mapped IPv6 destination is judged by the IPv4 rules
    mapped = policy_events(records[-1])[0]
    assert mapped["family"] == "inet" and mapped["address"] == "127.0.0.1"


DENY_SECRET = """
policies:
  - name: audit
    match: {{cmdline: "*audit_server.py*"}}
    mode: {mode}
    files:
      deny: ["{secret}/**"]
    exec:
      deny: [sh]
"""


def secret_and_allowed(tmp_path):
    """A directory with a key the policies deny (DENY_SECRET), and a file they allow."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("TOPSECRET")
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("fine")
    return secret, allowed


@pytest.mark.matrix("enforce: SIGKILL fallback")
def test_denied_open_and_exec_are_stopped_by_the_fallback(tmp_path):
    secret, allowed = secret_and_allowed(tmp_path)

    async def calls(c, results):
        for argv in (["cat", str(allowed)], ["cat", str(secret / "key")], ["sh", "-c", "echo from-shell"]):
            r = await c.call_tool("run", {"argv": argv})
            results.append(r.content[0].text if r.content else "")
        # the server itself opening the file: the server is killed
        with pytest.raises(Exception):
            await c.call_tool("read_file", {"path": str(secret / "key")})

    recs, results = session(tmp_path, DENY_SECRET.format(mode="enforce", secret=secret), calls,
                            ["--no-lsm", "--no-seccomp"])
    assert results == ["fine", "", ""], "the killed cat printed nothing, the killed shell ran nothing"
    start = next(r for r in recs if r["type"] == "start")
    assert start["policy"]["mechanisms"]["files"] == MECH_FILE_KILL
    assert start["policy"]["mechanisms"]["exec"] == MECH_EXEC_KILL
    runs = calls_of(recs, "run")
    assert policy_events(runs[0]) == []

    pe = policy_events(runs[1])
    assert len(pe) == 1 and pe[0]["action"] == "killed" and pe[0]["check"] == "open"
    assert pe[0]["path"] == str(secret / "key") and pe[0]["access"] == ["read"]
    assert pe[0]["mechanism"].startswith("SIGKILL at sys_exit_open") and pe[0]["errno"] is None
    assert "files deny" in pe[0]["rule"] and pe[0]["attribution"] == "exact"
    cat_pid = pe[0]["pid"]
    assert any(e["type"] == "exit" and e["pid"] == cat_pid and e.get("signal") == "SIGKILL"
               for e in runs[1]["timeline"])

    pe = policy_events(runs[2])
    assert len(pe) == 1 and pe[0]["check"] == "exec" and pe[0]["action"] == "killed"
    assert os.path.basename(pe[0]["path"]) in ("sh", "dash", "bash")  # /bin/sh as the kernel resolved it
    assert "exec deny sh" in pe[0]["rule"]

    rf = calls_of(recs, "read_file")[0]
    pe = policy_events(rf)
    assert len(pe) == 1 and pe[0]["action"] == "killed" and pe[0]["pid"] == rf["server"]["pid"]
    assert rf["status"] == "incomplete"
    assert any(e["type"] == "exit" and e.get("signal") == "SIGKILL" for e in rf["timeline"])


def test_denied_open_create_and_exec_refused_by_seccomp_and_the_server_serves_on(tmp_path):
    """Without BPF LSM, run's seccomp filter refuses the call (EPERM) instead of killing the
    process: the server's own denied read is an error in that call, the next call is served, a
    refused O_CREAT leaves no file, and the record names the mechanism."""
    secret, allowed = secret_and_allowed(tmp_path)
    planted = secret / "planted"

    async def calls(c, results):
        # through a /proc magic link: judged by where it leads, refused. In a mount namespace of
        # its own, a process this layer cannot judge as the kernel would: left to the kernel, whose
        # fallback kills the reader (the layer never lets through what the kernel stops)
        magic = (f"import os; fd = os.open({str(secret / 'key')!r}, os.O_PATH)\n"
                 "try:\n    print(open(f'/proc/self/fd/{fd}').read())\nexcept PermissionError:\n    print('EPERM')")
        for argv in (["cat", str(allowed)], ["cat", str(secret / "key")], ["sh", "-c", "echo from-shell"],
                     [sys.executable, "-c", magic], ["unshare", "-m", "cat", str(secret / "key")]):
            r = await c.call_tool("run", {"argv": argv})
            results.append((r.is_error, r.content[0].text if r.content else ""))
        for tool, args in (("read_file", {"path": str(secret / "key")}),     # the server itself
                           ("touch_sync", {"path": str(planted)}),           # a create in the denied tree
                           ("read_file", {"path": str(allowed)})):           # and it serves the next call
            r = await c.call_tool(tool, args)
            results.append((r.is_error, r.content[0].text if r.content else ""))

    recs, results = session(tmp_path, DENY_SECRET.format(mode="enforce", secret=secret), calls, ["--no-lsm"])
    assert results[0] == (False, "fine")
    assert results[1] == (False, ""), "cat got EPERM and printed nothing on stdout"
    assert results[3] == (False, "EPERM\n"), "the read through the magic link was refused"
    assert results[4] == (False, ""), "the reader in its own mount namespace was killed before it printed"
    # the server's own exec of sh and its own read and create failed (PermissionError): tool errors
    assert [r[0] for r in results[2:3] + results[5:7]] == [True, True, True], results
    assert results[7] == (False, "fine"), "the server lived on and served the next call"
    assert not planted.exists(), "the refused create made no file"
    start = next(r for r in recs if r["type"] == "start")
    assert start["policy"]["mechanisms"]["files"] == MECH_FILE_KILL, "the kernel's fallback stays behind it"
    assert start["policy"]["refusal"]["mechanism"].startswith("seccomp user notification")
    server = calls_of(recs, "read_file")[0]["server"]["pid"]
    assert not any(r["type"] == "exit" and r["pid"] == server and r.get("signal") for r in recs), "never killed"
    want = [("run", 1, "open", ["read"], str(secret / "key"), "ok"), ("run", 2, "exec", ["exec"], None, "tool_error"),
            ("read_file", 0, "open", ["read"], str(secret / "key"), "tool_error"),
            ("touch_sync", 0, "open", ["write", "create"], str(planted), "tool_error")]
    for tool, i, check, access, path, status in want:
        call = calls_of(recs, tool)[i] if tool == "run" else calls_of(recs, tool)[0]
        pe = policy_events(call)
        # sh: subprocess tries each sh along PATH that exists (each one refused), then gives up
        assert len(pe) == 1 or check == "exec" and len(pe) >= 1, (tool, i, call["timeline"])
        e = pe[0]
        assert (e["check"], e["action"], e["errno"], e["access"]) == (check, "denied", "EPERM", access), e
        assert e["mechanism"].startswith("seccomp user notification") and e["attribution"] == "exact", e
        assert path is None and os.path.basename(e["path"]) in ("sh", "dash", "bash") or e["path"] == path, e
        assert e["rule"] and ("files deny" in e["rule"] or "exec deny sh" in e["rule"]), e
        assert call["status"] == status, (tool, call["status"])
        if check == "open":  # the kernel still saw the syscall end, with the errno the process got
            opens = [o for o in call["timeline"] if o["type"] == "open" and o.get("path") == path]
            assert [o.get("error") for o in opens] == ["EPERM"], opens
    assert policy_events(calls_of(recs, "run")[0]) == [] and policy_events(calls_of(recs, "read_file")[1]) == []
    pe = policy_events(calls_of(recs, "run")[3])
    assert [(e["action"], e["path"]) for e in pe] == [("denied", str(secret / "key"))], pe
    pe = policy_events(calls_of(recs, "run")[4])
    assert [(e["action"], e["path"]) for e in pe] == [("killed", str(secret / "key"))], pe
    assert pe[0]["mechanism"].startswith("SIGKILL at sys_exit_open")
    stats = next(r for r in recs if r["type"] == "stats")
    sec = stats["policy"]["seccomp"]
    assert sec["refused"] >= 4 and sec["checks"] > 4 and sec.get("errors", 0) == 0, sec
    assert sec["left_to_kernel_why"].get("another mount namespace or root", 0) >= 1, sec


def test_monitor_mode_reports_and_allows(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("TOPSECRET")

    async def calls(c, results):
        r = await c.call_tool("run", {"argv": ["cat", str(secret / "key")]})
        results.append(r.content[0].text)

    recs, results = session(tmp_path, DENY_SECRET.format(mode="monitor", secret=secret), calls)
    assert results == ["TOPSECRET"]
    pe = policy_events(calls_of(recs, "run")[0])
    assert len(pe) == 1 and pe[0]["action"] == "monitor" and pe[0]["errno"] is None
    assert any(v["kind"] == "policy_monitor" for v in calls_of(recs, "run")[0]["violations"])


def test_policy_file_reload_and_refusal(tmp_path, listen):
    a, b = listen(), listen()
    pfile, out = tmp_path / "policy.yaml", tmp_path / "ev.jsonl"
    v1 = f"""
policies:
  - name: audit
    network:
      default: deny
      allow: ["127.0.0.1:{a.port}", "127.0.0.1:{b.port}"]
"""
    v2 = v1.replace(f', "127.0.0.1:{b.port}"', "")
    broken = v2.replace("default: deny", "default: maybe")
    pfile.write_text(v1)
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--policy", str(pfile), "--",
                            sys.executable, SERVER])

    def policy_records():
        if not out.exists():
            return []
        return [json.loads(x) for x in out.read_text().splitlines() if '"type":"policy_load"' in x]

    async def wait_records(n):
        for _ in range(100):
            if len(policy_records()) >= n:
                return policy_records()
            await anyio.sleep(0.1)
        raise AssertionError(f"no policy reload record after 10 s: {policy_records()}")

    outcomes = []

    async def main():
        async with client(t) as c:
            async def try_b():
                r = await c.call_tool("connect", {"port": b.port})
                outcomes.append(not r.is_error)
            await try_b()
            pfile.write_text(v2)
            recs = await wait_records(1)
            assert recs[0]["result"] == "applied" and recs[0]["generation"] == 0
            await try_b()
            pfile.write_text(broken)
            recs = await wait_records(2)
            assert recs[1]["result"] == "refused"
            assert "policy.yaml:5:16" in recs[1]["error"] and "allow or deny" in recs[1]["error"]
            await try_b()  # the running policy (v2) stays
            r = await c.call_tool("connect", {"port": a.port})
            outcomes.append(not r.is_error)

    anyio.run(main)
    assert outcomes == [True, False, False, True]
    assert len(b.accepted) == 1 and len(a.accepted) == 1
    stats = [r for r in load(out) if r["type"] == "stats"][-1]
    assert stats["policy"] == {"reloads": 1, "refused_reloads": 1, "generation": 0}


RELOAD_CHILD = r"""
import errno, json, os, socket, sys
ok_port, bad_port, stop, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
n = {"ok": 0, "ok_failed": 0, "bad_refused": 0, "bad_through": 0, "bad_other": 0}
rounds = 0
while rounds <= 100 or not os.path.exists(stop):
    rounds += 1
    for port, good in ((ok_port, True), (bad_port, False)):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            n["ok" if good else "bad_through"] += 1
        except OSError as e:
            n["ok_failed" if good else ("bad_refused" if e.errno == errno.EPERM else "bad_other")] += 1
        finally:
            s.close()
open(out, "w").write(json.dumps(n))
"""


def reload_while(tmp_path, texts, child, ok, bad, mechanism=None, at_least=101):
    """Run `child` (OK BAD STOP OUT) tracked under policy p, replacing the policy with
    the next of `texts` again and again until it exits. The child tries both at least
    101 times and goes on until STOP exists, made after the `at_least`th reload: every reload
    lands while it is trying, however slow the machine (no clock). Returns (reloads,
    its counts)."""
    k = Kernel.load(LoadOptions(ring_size=1 << 16, enforce=True))
    try:
        if mechanism:
            assert k.mechanisms[mechanism[0]] == mechanism[1]
        enf = Enforcer(k)
        enf.apply(policy.parse(texts[0]))
        result = tmp_path / "n.json"
        stop = tmp_path / "stop"
        pid = spawn_tracked(k, [sys.executable, "-c", child, str(ok), str(bad), str(stop), str(result)],
                            policy=enf.slots["p"])
        reloads = 0
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            enf.apply(policy.parse(texts[reloads % len(texts)], first_rule=enf.next_rule_id()))
            reloads += 1
            if reloads == at_least:
                stop.touch()
    finally:
        k.close()
    return reloads, json.loads(result.read_text())


@pytest.mark.matrix("enforce: reload under load")
def test_reload_under_a_stream_of_connects_never_lets_a_refused_one_through(tmp_path, listen):
    ok, bad = listen(), listen()
    # every variant refuses `bad` and allows `ok`, each in another way
    variants = [
        f'network: {{default: deny, allow: ["127.0.0.1:{ok.port}"]}}',
        f'network: {{deny: ["127.0.0.1:{bad.port}"]}}',
        f'network: {{allow: ["127.0.0.0/8"], deny: ["127.0.0.1/32:{bad.port}"]}}',
        f'network: {{default: deny, allow: ["127.0.0.1:{ok.port}", "[::1]:1-65535"], deny: ["*:{bad.port}"]}}',
        f'network: {{deny: ["127.0.0.1:{bad.port}-{bad.port}"], allow: ["127.0.0.1:{bad.port + 1}-65535"]}}',
    ]
    texts = [f"policies:\n  - name: p\n    {v}\n" for v in variants]
    for t in texts:  # each variant alone is right, in Python
        p = policy.parse(t).policies[0]
        assert policy.net_decide(p, "127.0.0.1", bad.port) and not policy.net_decide(p, "127.0.0.1", ok.port)
    reloads, n = reload_while(tmp_path, texts, RELOAD_CHILD, ok.port, bad.port)
    assert reloads > 100, reloads
    assert n["bad_refused"] > 100 and n["ok"] > 100, n
    assert n["bad_through"] == 0 and n["bad_other"] == 0 and n["ok_failed"] == 0, n
    assert bad.accepted == []


@pytest.mark.matrix("enforce: BPF LSM programs built, and run where the kernel has BPF LSM")
def test_lsm_programs_are_built_and_run_where_the_kernel_has_bpf_lsm(tmp_path):
    """The LSM programs are in the object (built, with their sections). They
    run only where the kernel has BPF LSM enabled (lsm=...,bpf); elsewhere
    this test says so and the fallbacks above are the proof."""
    from mcpwitness.kernel.probes import run_probe
    k = Kernel.load(LoadOptions(ring_size=1 << 16, enforce=True))
    try:
        progs = {n: s for n, s in k.programs.items() if s.startswith("lsm/")}
        assert set(progs.values()) == {"lsm/file_open", "lsm/bprm_check_security", "lsm/socket_connect", "lsm/path_mknod"}
        probe = run_probe("probe_lsm_file_open", "attach")
        if not probe.ok:
            assert k.mechanisms["files"] == MECH_FILE_KILL and "mw_lsm_file_open" in k.skipped
            pytest.skip(f"no BPF LSM on this kernel ({probe.detail}): enforcement uses the fallbacks, "
                        "tested by the other tests of this file")
        assert k.mechanisms["files"] == MECH_FILE_LSM and k.mechanisms["exec"] == MECH_EXEC_LSM
        assert "mw_lsm_file_open" not in k.skipped
        secret = tmp_path / "secret"
        secret.mkdir()
        (secret / "key").write_text("x")
        enf = Enforcer(k)
        enf.apply(policy.parse(f'policies:\n  - name: p\n    files: {{deny: ["{secret}/**"]}}\n'
                               f'    exec: {{deny: [sh]}}\n'))
        out = tmp_path / "out"
        code = (f"import errno, subprocess\nr = []\ntry:\n    open({str(secret / 'key')!r})\n    r.append('opened')\n"
                f"except OSError as e:\n    r.append(errno.errorcode[e.errno])\n"
                f"try:\n    subprocess.run(['sh', '-c', 'true'])\n    r.append('ran')\n"
                f"except OSError as e:\n    r.append(errno.errorcode[e.errno])\n"
                f"open({str(out)!r}, 'w').write(' '.join(r))\n")
        pid = spawn_tracked(k, [sys.executable, "-c", code], policy=enf.slots["p"])
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 0, "refused with EPERM, not killed"
        assert out.read_text() == "EPERM EPERM"
    finally:
        k.close()


def test_bad_policy_file_is_refused_before_anything_runs(tmp_path):
    pfile = tmp_path / "p.yaml"
    pfile.write_text("policies:\n  - name: x\n    files:\n      deny: [etc/passwd]\n")
    r = subprocess.run([MW, "run", "--no-store", "--jsonl", str(tmp_path / "e.jsonl"), "--policy", str(pfile),
                        "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"policy refused: {pfile}:4:14:" in r.stderr and "absolute" in r.stderr


UDP_CHILD = r"""
import errno, socket, sys
out, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
res = []
for host, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
    for port in ports:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.sendto(b"ping", (host, port))
            res.append("sent")
        except OSError as e:
            res.append(errno.errorcode[e.errno])
        s.close()
open(out, "w").write(" ".join(res))
"""


def test_udp_sends_to_a_refused_address_never_leave(tmp_path):
    import socket
    receivers = []
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for _ in range(2):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.settimeout(0.5)
            receivers.append(s)
    ok4, bad4, ok6, bad6 = receivers
    assert ok4.getsockname()[1] != bad4.getsockname()[1]
    k = Kernel.load(LoadOptions(ring_size=1 << 20, enforce=True))
    try:
        enf = Enforcer(k)
        enf.apply(policy.parse(
            f'policies:\n  - name: p\n    network:\n      deny: ["127.0.0.1:{bad4.getsockname()[1]}", '
            f'"[::1]:{bad6.getsockname()[1]}"]\n'))
        out = tmp_path / "out"
        ports4 = [str(ok4.getsockname()[1]), str(bad4.getsockname()[1])]
        # one port list for both families: v6 ports checked by the second pair of results
        pid = spawn_tracked(k, [sys.executable, "-c", UDP_CHILD, str(out), *ports4], policy=enf.slots["p"])
        os.waitpid(pid, 0)
        results = out.read_text().split()
        assert results[:2] == ["sent", "EPERM"]
        assert ok4.recv(16) == b"ping"
        with pytest.raises(socket.timeout):
            bad4.recv(16)
        pid = spawn_tracked(k, [sys.executable, "-c", UDP_CHILD, str(out), str(ok6.getsockname()[1]),
                                str(bad6.getsockname()[1])], policy=enf.slots["p"])
        os.waitpid(pid, 0)
        assert out.read_text().split()[2:] == ["sent", "EPERM"]
        assert ok6.recv(16) == b"ping"
        with pytest.raises(socket.timeout):
            bad6.recv(16)
        assert k.counters()["policy_denied"] == 2
    finally:
        k.close()
        for s in receivers:
            s.close()


UNIX_CHILD = r"""
import errno, socket, sys
out, paths = sys.argv[1], sys.argv[2:]
res = []
for p in paths:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("\0" + p[1:] if p.startswith("@") else p)
        res.append("connected")
    except OSError as e:
        res.append(errno.errorcode[e.errno])
    s.close()
open(out, "w").write(" ".join(res))
"""


@pytest.mark.matrix("enforce: Unix socket paths")
def test_unix_socket_paths_refused_before_connecting(tmp_path):
    import socket

    from mcpwitness.decode.events import Decoder
    from mcpwitness.kernel.loader import MECH_UNIX_CGROUP
    from mcpwitness.kernel.ringbuf import records
    from mcpwitness.records import PolicyEvent
    k = Kernel.load(LoadOptions(ring_size=1 << 20, enforce=True))
    socks = []
    try:
        if k.mechanisms["unix"] != MECH_UNIX_CGROUP:
            pytest.skip("no cgroup/connect_unix on this kernel (6.7+): unix paths are reported in userspace")
        (tmp_path / "private").mkdir()
        ok, bad, inside = str(tmp_path / "ok.sock"), str(tmp_path / "bad.sock"), str(tmp_path / "private" / "s")
        abstract_ok, abstract_bad = f"@mw-ok-{os.getpid()}", f"@mw-bad-{os.getpid()}"
        for p in (ok, bad, inside, abstract_ok, abstract_bad):
            s = socket.socket(socket.AF_UNIX)
            s.bind("\0" + p[1:] if p.startswith("@") else p)
            s.listen(8)
            s.setblocking(False)
            socks.append(s)
        enf = Enforcer(k)
        enf.apply(policy.parse(f'policies:\n  - name: p\n    network:\n      deny: ["unix:{bad}", '
                               f'"unix:{tmp_path}/private/", "unix:{abstract_bad}"]\n'))
        out = tmp_path / "out"
        pid = spawn_tracked(k, [sys.executable, "-c", UNIX_CHILD, str(out), ok, bad, inside, abstract_ok,
                                abstract_bad], policy=enf.slots["p"])
        os.waitpid(pid, 0)
        assert out.read_text().split() == ["connected", "EPERM", "EPERM", "connected", "EPERM"]
        for s, expect in zip(socks, (True, False, False, True, False)):
            try:
                s.accept()[0].close()
                got = True
            except BlockingIOError:
                got = False
            assert got == expect, "a refused connect never reached the listener"
        evs = [e for e in Decoder().feed(records(k.batch_reader().read_blob())) if isinstance(e, PolicyEvent)]
        assert [(e.family, e.path, e.mechanism, e.errno) for e in evs] == [
            ("unix", bad, "cgroup/connect_unix", "EPERM"), ("unix", inside, "cgroup/connect_unix", "EPERM"),
            ("unix", abstract_bad, "cgroup/connect_unix", "EPERM")]
    finally:
        k.close()
        for s in socks:
            s.close()


def test_lsm_programs_refused_at_load_fall_back_to_the_fallbacks(monkeypatch):
    """A kernel whose trivial LSM probe passes may still refuse the real LSM
    programs: mcpwitness must run with the fallbacks and say why, not fail.
    Simulated here by claiming LSM where the kernel refuses it."""
    from mcpwitness.kernel.loader import LSM_FILES
    from mcpwitness.kernel.probes import run_probe
    if run_probe("probe_lsm_file_open", "attach").ok:
        pytest.skip("this kernel has BPF LSM: the LSM programs load, nothing to fall back from")
    orig = Kernel._choose_enforcement

    def claim_lsm(self):
        orig(self)
        if self.options.lsm is not False:
            self.mechanisms["files"] = MECH_FILE_LSM
            self.lsm_bits |= LSM_FILES

    monkeypatch.setattr(Kernel, "_choose_enforcement", claim_lsm)
    k = Kernel.load(LoadOptions(ring_size=1 << 16, enforce=True))
    try:
        assert k.mechanisms["files"] == MECH_FILE_KILL and k.lsm_bits == 0
        assert "did not load" in k.fallback_reason and "Operation not permitted" in k.fallback_reason
        assert k.skipped["mw_lsm_file_open"] == k.fallback_reason
        assert "mw_connect4" not in k.skipped  # the rest of enforcement is attached
    finally:
        k.close()


def test_reload_that_changes_which_policy_a_running_server_has(tmp_path, listen):
    """A reload matches running servers again: a server that no policy matched
    gets one, and its whole tree (children forked before the reload too) follows."""
    target = listen()
    pfile, out = tmp_path / "policy.yaml", tmp_path / "ev.jsonl"
    v1 = f'policies:\n  - name: other\n    match: {{cmdline: "*not-this-server*"}}\n' \
         f'    network: {{deny: ["127.0.0.1:{target.port}"]}}\n'
    v2 = v1.replace("*not-this-server*", "*audit_server.py*")
    pfile.write_text(v1)
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--policy", str(pfile), "--",
                            sys.executable, SERVER])
    outcomes = []

    async def main():
        async with client(t) as c:
            r = await c.call_tool("connect", {"port": target.port})
            outcomes.append(r.is_error)
            pfile.write_text(v2)
            for _ in range(100):
                if out.exists() and '"result":"applied"' in out.read_text():
                    break
                await anyio.sleep(0.1)
            r = await c.call_tool("connect", {"port": target.port})
            outcomes.append(r.is_error)
            # a subprocess started now inherits the policy in the kernel
            code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {target.port}))\n"
                    f"    print('connected')\nexcept OSError as e:\n    print('errno', e.errno)\n")
            r = await c.call_tool("run", {"argv": [sys.executable, "-c", code]})
            outcomes.append(r.content[0].text.strip())

    anyio.run(main)
    recs = load(out)
    reload = next(r for r in recs if r["type"] == "policy_load")
    assert reload["result"] == "applied" and list(reload["servers"].values()) == ["other"]
    assert len(reload["retagged"]) == 1
    assert outcomes == [False, True, "errno 1"] and len(target.accepted) == 1


def test_filesystem_server_under_a_policy(tmp_path):
    """A reference server written by others (@modelcontextprotocol/server-filesystem,
    Node, whose reads run on libuv's worker threads): an allowed read works, a read in a
    denied subtree is refused by run's seccomp layer (EPERM: the tool answers an error) and
    the server serves the next call; with --no-seccomp the fallback stops the server. The
    record says which rule, by which mechanism."""
    exe = npm_server("mcp-server-filesystem")
    root = tmp_path / "files"
    (root / "private").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "private" / "key").write_text("secret\n")
    pfile = tmp_path / "policy.yaml"
    pfile.write_text(f'policies:\n  - name: fs\n    match: {{cmdline: "*mcp-server-filesystem*"}}\n'
                     f'    files: {{deny: ["{root}/private/**"]}}\n    exec: {{deny: [sh, curl]}}\n')
    for extra in ([], ["--no-seccomp"]):
        out = tmp_path / f"ev{len(extra)}.jsonl"
        t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--policy", str(pfile), "--no-lsm",
                                *extra, "--", exe, str(root)])
        got = []

        async def main():
            async with client(t) as c:
                for name in ("a.txt", "private/key", "a.txt"):
                    try:
                        r = await c.call_tool("read_text_file", {"path": str(root / name)})
                        got.append((r.is_error, r.content[0].text if r.content else ""))
                    except Exception:
                        got.append("gone")
                        return

        anyio.run(main)
        recs = load(out)
        start = next(r for r in recs if r["type"] == "start")
        assert list(start["policy"]["servers"].values()) == ["fs"]
        calls = [r for r in recs if r["type"] == "call" and r["tool"] == "read_text_file"]
        assert policy_events(calls[0]) == [] and calls[0]["status"] == "ok"
        pe = policy_events(calls[1])
        assert len(pe) == 1 and pe[0]["path"] == str(root / "private" / "key"), calls[1]["timeline"]
        assert pe[0]["pid"] == calls[1]["server"]["pid"] and "files deny" in pe[0]["rule"]
        if not extra:
            assert got[0] == (False, "alpha\n") and got[1][0] and got[2] == (False, "alpha\n"), got
            assert "secret" not in got[1][1]
            assert pe[0]["action"] == "denied" and pe[0]["errno"] == "EPERM", pe
            assert pe[0]["mechanism"].startswith("seccomp user notification") and pe[0]["attribution"] == "exact"
            assert calls[1]["status"] == "tool_error" and calls[2]["status"] == "ok"
        else:
            assert got == [(False, "alpha\n"), "gone"], got
            assert pe[0]["action"] == "killed" and calls[1]["status"] == "incomplete"


def lsm_or_skip():
    from mcpwitness.kernel.probes import run_probe
    probe = run_probe("probe_lsm_file_open", "attach")
    if not probe.ok:
        pytest.skip(f"no BPF LSM on this kernel ({probe.detail}): enforcement uses the fallbacks, tested above; "
                    "scripts/test-kernels runs this on Debian 12 and 13")


@pytest.mark.matrix("enforce: BPF LSM open, create, exec")
def test_lsm_refuses_before_the_action(tmp_path):
    """Where the kernel has BPF LSM, each refusal happens before the action and
    the caller lives on: a denied open fails with EPERM, a denied O_CREAT makes
    no file, a denied exec never runs the program, and the server itself gets
    EPERM instead of being killed. Each refusal is in its call's record with
    its lsm/ mechanism."""
    lsm_or_skip()
    secret, allowed = secret_and_allowed(tmp_path)
    created = secret / "new.txt"

    async def calls(c, results):
        for name, args in (("run", {"argv": ["cat", str(secret / "key")]}),
                           ("touch_sync", {"path": str(created)}),
                           ("run", {"argv": ["sh", "-c", "echo from-shell"]}),
                           ("read_file", {"path": str(secret / "key")}),
                           ("run", {"argv": ["cat", str(allowed)]})):
            r = await c.call_tool(name, args)
            results.append("ERROR" if r.is_error else (r.content[0].text if r.content else ""))

    recs, results = session(tmp_path, DENY_SECRET.format(mode="enforce", secret=secret), calls)
    assert results == ["", "ERROR", "ERROR", "ERROR", "fine"], results
    assert not created.exists(), "the refused O_CREAT made no file"
    start = next(r for r in recs if r["type"] == "start")
    mech = start["policy"]["mechanisms"]
    assert mech["files"] == MECH_FILE_LSM and mech["exec"] == MECH_EXEC_LSM and mech["create"] == MECH_CREATE_LSM

    runs, touch, rf = calls_of(recs, "run"), calls_of(recs, "touch_sync")[0], calls_of(recs, "read_file")[0]
    pe = policy_events(runs[0])
    assert len(pe) == 1, runs[0]["timeline"]
    e = pe[0]
    assert (e["action"], e["check"], e["mechanism"], e["errno"]) == ("denied", "open", "lsm/file_open", "EPERM")
    assert e["path"] == str(secret / "key") and e["attribution"] == "exact" and "files deny" in e["rule"]
    cat_exit = [x for x in runs[0]["timeline"] if x["type"] == "exit" and x["pid"] == e["pid"]]
    assert cat_exit and cat_exit[0].get("signal") is None and cat_exit[0].get("exit_code") == 1, "cat lived on"

    pe = policy_events(touch)
    assert [(x["check"], x["mechanism"], x["path"], x["access"], x["errno"]) for x in pe] == [
        ("open", "lsm/path_mknod", str(created), ["create"], "EPERM")]

    # Python's subprocess tries each PATH entry after an EPERM: one refusal per sh it finds
    pe = policy_events(runs[1])
    assert pe and {(x["check"], x["mechanism"], x["action"]) for x in pe} == {("exec", "lsm/bprm_check_security",
                                                                              "denied")}
    assert all("exec deny sh" in x["rule"] and x["errno"] == "EPERM" for x in pe)
    assert not [x for x in runs[1]["timeline"] if x["type"] == "exec" and x.get("error") is None], \
        "the shell never ran"

    pe = policy_events(rf)
    assert len(pe) == 1 and pe[0]["pid"] == rf["server"]["pid"] and pe[0]["mechanism"] == "lsm/file_open"
    assert rf["status"] == "tool_error", "the server got EPERM and answered; it was not killed"
    assert policy_events(runs[2]) == [] and runs[2]["status"] == "ok"


@pytest.mark.matrix("enforce: BPF LSM connect")
def test_lsm_socket_connect_where_it_is_the_network_mechanism(tmp_path, listen, monkeypatch):
    """lsm/socket_connect is the network mechanism where the cgroup sock_addr
    hooks cannot be used (no cgroup2 mounted, simulated here): a denied connect
    fails with EPERM before any packet and is reported with its mechanism."""
    lsm_or_skip()
    from mcpwitness.kernel import loader
    from mcpwitness.kernel.loader import MECH_NET_LSM
    from mcpwitness.records import PolicyEvent
    monkeypatch.setattr(loader, "cgroup2_root", lambda: None)
    ok, bad = listen(), listen()
    pfile = tmp_path / "p.yaml"
    pfile.write_text(f'policies:\n  - name: p\n    network: {{deny: ["127.0.0.1:{bad.port}"]}}\n')
    sink = ListSink()
    a = Agent(sink, LoadOptions(ring_size=1 << 20), policy_path=str(pfile))
    a.start()
    try:
        assert a.kernel.mechanisms["network"] == MECH_NET_LSM
        assert "mw_lsm_socket_connect" not in a.kernel.skipped and "mw_connect4" in a.kernel.skipped
        out = tmp_path / "out"
        code = ("import errno, socket, sys\nr = []\nfor port in sys.argv[1:3]:\n    s = socket.socket()\n"
                "    try:\n        s.connect(('127.0.0.1', int(port)))\n        r.append('ok')\n"
                "    except OSError as e:\n        r.append(errno.errorcode[e.errno])\n"
                "open(sys.argv[3], 'w').write(' '.join(r))\n")
        pid = a.spawn_tracked([sys.executable, "-c", code, str(ok.port), str(bad.port), str(out)])
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 0
    finally:
        a.stop()
    assert out.read_text() == "ok EPERM"
    assert len(ok.accepted) == 1 and bad.accepted == []
    pe = [e for e in sink.events if isinstance(e, PolicyEvent)]
    assert [(e.check, e.action, e.mechanism, e.port) for e in pe] == [
        ("connect", "denied", "lsm/socket_connect", bad.port)]


OPEN_RELOAD_CHILD = r"""
import errno, json, os, sys
ok_path, bad_path, stop, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
n = {"ok": 0, "ok_failed": 0, "bad_refused": 0, "bad_through": 0, "bad_other": 0}
rounds = 0
while rounds <= 100 or not os.path.exists(stop):
    rounds += 1
    for path, good in ((ok_path, True), (bad_path, False)):
        try:
            open(path).close()
            n["ok" if good else "bad_through"] += 1
        except OSError as e:
            n["ok_failed" if good else ("bad_refused" if e.errno == errno.EPERM else "bad_other")] += 1
open(out, "w").write(json.dumps(n))
"""


@pytest.mark.matrix("enforce: BPF LSM reload under load")
def test_lsm_reload_under_a_stream_of_opens_never_lets_a_refused_one_through(tmp_path):
    """Policies replaced again and again while a process opens a denied and an
    allowed file in a loop: under BPF LSM every denied open fails with EPERM,
    every allowed one works, whichever version of the policy is in the maps."""
    lsm_or_skip()
    d = tmp_path / "d"
    (d / "secret").mkdir(parents=True)
    ok, bad = d / "ok.txt", d / "secret" / "key"
    ok.write_text("x")
    bad.write_text("x")
    runtime = ", ".join(f'"{p}/**"' for p in sorted({"/usr", "/lib", "/etc", "/proc", "/dev", "/sys", sys.prefix,
                                                         sys.base_prefix}))
    # the default-deny variant: on overlayfs (6.5+, the guests' /tmp) lsm/file_open also sees
    # the overlay's backing file, whose path is cut at a private mount; only the process's open counts.
    # It allows the child's result file too: the child writes it while the policies still change
    variants = [f'files: {{deny: ["{d}/secret/**"]}}',
                f'files: {{default: deny, allow: ["{d}/ok.txt", "{tmp_path}/n.json", {runtime}]}}',
                f'files: {{deny: ["{bad}"]}}',
                f'files: {{allow: ["{d}/**", {runtime}], deny: ["{d}/secret/**"]}}',
                f'files: {{allow: ["{d}/**"], deny: ["{d}/secret/**"]}}']
    texts = [f"policies:\n  - name: p\n    {v}\n" for v in variants]
    for t in texts:  # each variant alone is right, in Python
        p = policy.parse(t).policies[0]
        assert policy.path_decide(p, str(bad), 1)[0] and not policy.path_decide(p, str(ok), 1)[0]
    reloads, n = reload_while(tmp_path, texts, OPEN_RELOAD_CHILD, ok, bad, mechanism=("files", MECH_FILE_LSM),
                                at_least=31)
    assert reloads > 10, reloads
    assert n["bad_refused"] > 10 and n["ok"] > 10, n
    assert n["bad_through"] == 0 and n["bad_other"] == 0 and n["ok_failed"] == 0, n


PROC_SELF = """
policies:
  - name: audit
    match: {cmdline: "*audit_server.py*"}
    mode: enforce
    files:
      deny: ["/proc/self/environ", "/proc/thread-self/comm"]
"""


def _proc_self_session(tmp_path, extra):
    """/proc/self in a policy means the process judged, in the kernel: each process's own
    /proc/<pid>/environ is refused, another's is not; /proc/thread-self likewise."""
    async def calls(c, results):
        for argv in (["cat", "/proc/self/environ"],                   # its own: refused
                     ["sh", "-c", "cat /proc/$PPID/environ | wc -c"],  # the server's, read by cat: allowed
                     ["cat", "/proc/thread-self/comm"],               # its own thread's: refused
                     ["cat", "/proc/self/comm"]):                     # (the rule names thread-self/comm only)
            r = await c.call_tool("run", {"argv": argv})
            results.append(r.content[0].text.strip() if r.content else "")
        try:
            r = await c.call_tool("read_file", {"path": "/proc/self/environ"})   # the server's own
            results.append(r.is_error)
        except Exception:
            results.append("gone")
    recs, results = session(tmp_path, PROC_SELF, calls, extra)
    assert results[0] == "" and results[2] == "", results
    assert int(results[1]) > 0 and results[3] == "cat", results
    runs = calls_of(recs, "run")
    for i, name in ((0, "environ"), (2, "comm")):
        pe = policy_events(runs[i])
        assert len(pe) == 1 and pe[0]["check"] == "open", runs[i]["timeline"]
        own = f"/proc/{pe[0]['pid']}/environ" if name == "environ" else f"/proc/{pe[0]['pid']}/task/"
        assert pe[0]["path"].startswith(own), (pe[0]["path"], own)
        assert f"/proc/{'self' if name == 'environ' else 'thread-self'}/{name}" in pe[0]["rule"], pe[0]["rule"]
    assert policy_events(runs[1]) == [] and policy_events(runs[3]) == []
    rf = calls_of(recs, "read_file")[0]
    pe = policy_events(rf)
    assert len(pe) == 1 and pe[0]["pid"] == rf["server"]["pid"], rf["timeline"]
    return recs, results, pe[0]


@pytest.mark.matrix("enforce: SIGKILL fallback")
def test_proc_self_rules_mean_the_process_judged_under_the_fallback(tmp_path):
    _, results, server = _proc_self_session(tmp_path, ["--no-lsm", "--no-seccomp"])
    assert server["action"] == "killed" and results[4] == "gone"


@pytest.mark.matrix("enforce: BPF LSM open, create, exec")
def test_lsm_proc_self_rules_mean_the_process_judged(tmp_path):
    lsm_or_skip()
    _, results, server = _proc_self_session(tmp_path, [])
    assert server["action"] == "denied" and server["errno"] == "EPERM" and results[4] is True, (server, results)


def test_a_policy_naming_a_process_by_number_is_refused_and_proc_self_is_not_resolved():
    with pytest.raises(ValueError, match="by its number"):
        policy.path_keys("/proc/1234/environ")
    with pytest.raises(ValueError, match="by its number"):
        policy.path_keys("/proc/1/**")
    assert policy.path_keys("/proc/self/environ") == [b"/proc/self/environ\0"]
    assert b"/proc/self/" in policy.path_keys("/proc/self/**")
    assert policy.path_keys("/proc/cpuinfo") == [b"/proc/cpuinfo\0"]
    p = policy.parse(PROC_SELF).policies[0]
    me = os.getpid()
    assert policy.path_decide(p, f"/proc/{me}/environ", policy.ACC_READ, pid=me)[1] == policy.ACC_READ
    assert policy.path_decide(p, f"/proc/{me}/environ", policy.ACC_READ, pid=me + 1) == (0, 0)
    assert policy.path_decide(p, f"/proc/{me}/task/77/comm", policy.ACC_READ, pid=me, tid=77)[1] == policy.ACC_READ
    assert policy.path_decide(p, f"/proc/{me}/comm", policy.ACC_READ, pid=me) == (0, 0)
