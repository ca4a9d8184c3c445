"""The evasion suite: an MCP server whose tools try to get past mcpwitness the
way a tool that knows it would (tests/workloads/evasion.c), run under `mcpwitness
run --policy` in monitor mode and in enforce mode, driven by the SDK client.

For every case the test asserts the outcome docs/security.md states for it:
- recorded: the action is in the call record of the tool call that did it,
  attributed exactly, and the policy judged it (a monitor event);
- refused (enforce mode): the action did not take effect, and the record says
  which rule refused it by which mechanism;
- a known gap: what gets through, asserted as such, so that the day it
  changes this test fails and the table is corrected.
"""
import json
import os
import socket
import subprocess
import sys
import threading

import anyio
import pytest
from conftest import SLOW
from mcp_client import RecordingStdio, client


pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_enforce import MW, load  # noqa: E402

SERVER = os.path.join(ROOT, "tests", "workloads", "evasion_server.py")
HOST = "127.0.0.3"  # the denied destination (loopback)

# case: what it acts on. Outcomes per kernel mechanism are in expected() below.
FILES = ["open", "io_uring_openat", "openat2_resolve", "open_by_handle_at", "dirfd_relative", "proc_self_fd",
         "symlink", "hard_link", "bind_mount"]
EXECS = ["execve", "memfd_fexecve", "execveat_empty_path", "posix_spawn", "vfork", "clone3_parent",
         "clone3_newpid", "shebang_chain", "ld_so"]
NETS = ["connect", "io_uring_connect", "sendto_udp", "sendmmsg", "dns_udp", "ipv4_mapped", "raw_socket",
        "packet_socket", "scm_rights"]
TREE = ["double_fork_setsid", "subreaper", "unshare", "cgroup_move", "process_vm_writev"]
ALL = FILES + EXECS + NETS + TREE


@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    exe = tmp_path_factory.mktemp("evasion") / "evasion"
    subprocess.run(["gcc", "-O1", "-o", str(exe), os.path.join(ROOT, "tests", "workloads", "evasion.c")],
                   check=True)
    return str(exe)


class Sinks:
    """What reached the denied destination: TCP connections and bytes, UDP datagrams."""

    def __init__(self):
        self.tcp = socket.socket()
        self.tcp.bind((HOST, 0))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((HOST, 0))
        self.tcp_port, self.udp_port = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        self.connections, self.datagrams, self.bytes = 0, [], b""
        self._stop = False
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._accept, self._recv)]
        for t in self._threads:
            t.start()

    def _accept(self):
        self.tcp.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                continue
            self.connections += 1
            c.settimeout(2)
            try:
                while d := c.recv(4096):
                    self.bytes += d
            except OSError:
                pass
            c.close()

    def _recv(self):
        self.udp.settimeout(0.2)
        while not self._stop:
            try:
                self.datagrams.append(self.udp.recv(4096))
            except OSError:
                continue

    def close(self):
        self._stop = True
        for t in self._threads:
            t.join()
        self.tcp.close()
        self.udp.close()


class Broker:
    """An untracked process's stand-in: hands a TCP socket it connected to HOST over SCM_RIGHTS."""

    def __init__(self, path, port):
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(1)
        self.port = port
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.srv.settimeout(60 * SLOW)
        try:
            c, _ = self.srv.accept()
        except OSError:
            return
        s = socket.create_connection((HOST, self.port))
        socket.send_fds(c, [b"x"], [s.fileno()])
        c.close()
        s.close()

    def close(self):
        self.srv.close()


def run_cases(tmp_path, helper, mode, cases, cgroup_root):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret-" + mode)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    forbidden = bindir / "forbidden"
    forbidden.write_bytes(open("/bin/echo", "rb").read())
    forbidden.chmod(0o755)
    (tmp_path / "alias").mkdir()
    (tmp_path / "scripts").mkdir()
    sinks = Sinks()
    broker = Broker(str(tmp_path / "broker.sock"), sinks.tcp_port)
    puppet = subprocess.Popen([helper, "puppet"], stdout=subprocess.PIPE, text=True)  # not tracked
    ppid, paddr = puppet.stdout.readline().split()
    pol = tmp_path / "policy.yaml"
    pol.write_text(f"""policies:
  - name: evasion
    mode: {mode}
    files:
      deny: ["{secret}"]
    exec:
      deny: ["{forbidden}", "memfd:**"]
    network:
      deny: ["{HOST}"]
""")
    args = {c: [str(secret)] for c in FILES + TREE}
    args.update({c: [str(forbidden)] for c in EXECS})
    args.update({c: [HOST, str(sinks.tcp_port), str(sinks.udp_port)] for c in NETS})
    args["symlink"] += [str(tmp_path / "sym")]
    args["hard_link"] += [str(tmp_path / "hard")]
    args["bind_mount"] += [str(tmp_path / "alias")]
    args["shebang_chain"] += [str(tmp_path / "scripts")]
    args["scm_rights"] = [str(tmp_path / "broker.sock")]
    args["cgroup_move"] += [os.path.join(cgroup_root, f"mw-evasion-{os.getpid()}")]
    args["process_vm_writev"] = [ppid, paddr, str(secret)]
    out = tmp_path / "ev.jsonl"
    env = {**os.environ, "MW_EVASION": helper, "MW_EVASION_CASES": ",".join(cases)}
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--policy", str(pol), "--",
                            sys.executable, SERVER], env=env)
    answers = {}

    async def main():
        async with client(t) as c:
            for case in cases:
                r = await c.call_tool(case, {"args": args[case]})
                answers[case] = r.content[0].text if r.content else ""
            await anyio.sleep(0.3 * SLOW)

    try:
        anyio.run(main)
    finally:
        broker.close()
        puppet.kill()
        puppet_said = puppet.communicate()[0]
        sinks.close()
        try:
            os.rmdir(args["cgroup_move"][1])
        except OSError:
            pass
    recs = load(out)
    calls = {r["tool"]: r for r in recs if r["type"] == "call" and r["tool"]}
    return dict(answers=answers, calls=calls, sinks=sinks, puppet=puppet_said, secret=str(secret),
                forbidden=str(forbidden), tmp=str(tmp_path))


def touched(case, res, policy=False):
    """The events in the case's call record that act on the target (the file, the program, HOST).
    policy: count policy events too (an open LSM refused has no path of its own when none was
    passed: io_uring, a file handle; its policy event names the file)."""
    call = res["calls"][case]
    secret, forbidden, tmp = res["secret"], res["forbidden"], res["tmp"]
    hits = []
    for e in call["timeline"]:
        said = " ".join(str(v) for k, v in e.items() if k not in ("comm", "rule"))
        if e["type"] == "policy" and not policy:
            continue
        if e["type"] in ("open", "policy") and case in FILES + TREE:
            if secret in said or tmp + "/hard" in said or tmp + "/sym" in said or tmp + "/alias/" in said:
                hits.append(e)
        elif e["type"] in ("exec", "policy") and case in EXECS:
            if forbidden in said.split() or "memfd:" in said or "/scripts/s1" in said:
                hits.append(e)
        elif e["type"] in ("connect", "policy") and case in NETS:
            if HOST in said:
                hits.append(e)
    return hits


def cgroup2_dir():
    for path in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(path, "cgroup.procs")) and os.path.exists(
                os.path.join(path, "cgroup.subtree_control")):
            return path
    return None


# case: (recorded in its call's record, refused in enforce mode). False is a known gap, listed
# with its reason in docs/security.md; the same on every kernel mechanism (fallbacks and LSM).
EXPECTED = {
    "open": (True, True), "io_uring_openat": (True, True), "openat2_resolve": (True, True),
    "open_by_handle_at": (True, True), "dirfd_relative": (True, True), "proc_self_fd": (True, True),
    "symlink": (True, True),
    "hard_link": (True, False),  # recorded under the link's name, judged by it
    "bind_mount": (True, False),  # recorded under the alias, judged by it
    "execve": (True, True),
    "memfd_fexecve": (True, True),  # recorded as memfd:NAME, refused by the rule memfd:**
    "execveat_empty_path": (True, True), "posix_spawn": (True, True), "vfork": (True, True),
    "clone3_parent": (True, True), "clone3_newpid": (True, True), "shebang_chain": (True, True),
    "ld_so": (True, False),  # the exec is ld.so's; the program is only opened and mapped
    "connect": (True, True), "io_uring_connect": (True, True), "sendto_udp": (True, True),
    "sendmmsg": (True, True), "dns_udp": (True, True), "ipv4_mapped": (True, True),
    "raw_socket": (True, False),  # recorded (first datagram per address); no cgroup hook for raw sends
    "packet_socket": (True, False),  # recorded as AF_PACKET to a device; no address to judge
    "scm_rights": (False, False),  # the connect was an untracked process's; the tracked one only writes
    "double_fork_setsid": (True, True), "subreaper": (True, True), "unshare": (True, True),
    "cgroup_move": (True, True),
    "process_vm_writev": (False, False),  # the untracked puppet acts: not tracked, not judged
}


def worked(case, res, answer):
    """Did the action take effect (the secret read, the program run, the bytes sent)?"""
    if case == "shebang_chain":  # the program (echo) prints its arguments: the scripts
        return "/scripts/s2 " in answer
    if case in EXECS:
        return "ran" in answer
    if case in NETS:
        return "\nok " in answer
    if case == "process_vm_writev":
        return "s3cret" in res["puppet"]
    return "s3cret" in answer


@pytest.mark.matrix("evasion: actions a hostile tool hides")
@pytest.mark.parametrize("mode", ["monitor", "enforce"])
def test_evasion_cases(tmp_path, helper, mode):
    cgroup_root = cgroup2_dir()
    cases = [c for c in ALL if c != "cgroup_move" or cgroup_root]
    res = run_cases(tmp_path, helper, mode, cases, cgroup_root or "/nonexistent")
    wrong = []
    for case in cases:
        answer = res["answers"][case]
        if "\nunsupported" in answer:
            continue  # this kernel lacks what the case needs (said in its answer)
        recorded, refused = EXPECTED[case]
        call = res["calls"].get(case)
        assert call and call["complete"], f"{case}: no complete call record"
        hits = touched(case, res, policy=mode == "enforce")
        if case == "ld_so":
            hits = [e for e in call["timeline"] if e["type"] == "exec" and "ld-linux" in e.get("file", "")
                    and res["forbidden"] in e.get("argv", [])]
        if case == "packet_socket":
            hits = [e for e in call["timeline"] if e["type"] == "connect" and e.get("family") == "AF_PACKET"]
        pols = [e for e in call["timeline"] if e["type"] == "policy"]
        if bool(hits) != recorded:
            wrong.append(f"{case}: recorded {bool(hits)}, expected {recorded}")
        if hits and any(e["attribution"] != "exact" for e in hits):
            wrong.append(f"{case}: attributed {[e['attribution'] for e in hits]}")
        if mode == "monitor":
            if not worked(case, res, answer):
                wrong.append(f"{case}: did not work in monitor mode: {answer!r}")
            if refused and not any(p["action"] == "monitor" for p in pols):
                wrong.append(f"{case}: no policy judgement in monitor mode")
        else:
            if worked(case, res, answer) == refused:
                wrong.append(f"{case}: {'went through' if refused else 'was refused'}: {answer!r}")
            if refused and not any(p["action"] in ("denied", "killed") for p in pols):
                wrong.append(f"{case}: refused without a policy event")
    assert not wrong, "\n".join(wrong)


TRICKS = os.path.join(ROOT, "tests", "workloads", "trick_server.py")
# the way an answer is written: captured (its request is answered in the record)?
PAYLOAD_TRICKS = {
    "plain": True,
    "bytewise": True,  # one write per byte: reassembled
    "writev_tiny": False,  # one iovec per byte: the first 8 are followed, the write is marked cut (counted)
    "after_the_cut": True,  # a plain answer right after the cut one: decoded on its own
    "splice": False,  # from a pipe: no user buffer passes a hooked syscall
    "sendfile": False,
    "vmsplice": False,
}


@pytest.mark.matrix("evasion: payload tricks")
@pytest.mark.parametrize("client_kind", ["pipe", "socketpair"])
def test_payload_tricks(tmp_path, client_kind):
    """Answers written past the hooked read/write family: the client gets each one; the record
    has those the table says, and the others show as requests without an answer (never lost
    silently)."""
    out = tmp_path / "ev.jsonl"
    if client_kind == "pipe":
        p = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--no-store", "--", sys.executable, TRICKS],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        send, recv = p.stdin, p.stdout
    else:  # a Node host's stdio: one socketpair (vmsplice needs a pipe: written plainly there)
        mine, theirs = socket.socketpair()
        p = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--no-store", "--", sys.executable, TRICKS],
                             stdin=theirs, stdout=theirs)
        theirs.close()
        send = recv = mine.makefile("rwb")
    for i, way in enumerate(PAYLOAD_TRICKS, 1):
        send.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": way}).encode() + b"\n")
        send.flush()
        got = json.loads(recv.readline())
        assert got["id"] == i and got["result"]["way"] == way
    if client_kind == "pipe":
        p.stdin.close()
    else:
        mine.shutdown(socket.SHUT_WR)
    assert p.wait(timeout=30 * SLOW) == 0
    recs = load(out)
    answered = {r["method"]: r["complete"] for r in recs if r["type"] == "call"}
    expected = dict(PAYLOAD_TRICKS)
    if client_kind == "socketpair":
        expected["vmsplice"] = True  # vmsplice refuses a socket: the server wrote it plainly
    assert answered == expected
    end = [r for r in recs if r["type"] == "session" and r["event"] == "end"]
    assert end and end[0]["unanswered"] == sum(not v for v in expected.values())
    stats = recs[-1]
    assert stats["kernel"]["io_truncated"] >= 1  # the cut writev is counted
