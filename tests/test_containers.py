"""MCP servers in containers (podman, installed by scripts/setup): found by
`watch --container NAME`, each call and session named by its container
(runtime, id, name, image) from the cgroup path and podman's own state. The
containers run the host's filesystem as an overlay (`--rootfs /:O`): no
registry is reachable here, and the SDK servers are on the host."""
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import anyio
import pytest
from conftest import SLOW, free_port, wait_for
from mcp_client import RecordingStdio, client
from test_mcp_http import drive, stop, url_of

from mcpwitness.proc import container_info

pytestmark = pytest.mark.kernel
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
HTTP_SERVER = os.path.join(HERE, "workloads", "sdk_http_server.py")
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


def podman_run(name, *args):
    """podman run for this VM: runc (crun refuses a hybrid cgroup hierarchy), rlimits it may set
    without CAP_SYS_RESOURCE, the host's filesystem as an overlay."""
    if not shutil.which("podman"):
        pytest.fail("podman is not installed: run scripts/setup")
    return ["podman", "run", "--rm", "--name", name, "--runtime", "runc", "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024", *args, "--rootfs", "/:O"]


@pytest.fixture
def name():
    n = f"mw-test-{uuid.uuid4().hex[:8]}"
    yield n
    subprocess.run(["podman", "rm", "-f", "-t", "0", n], capture_output=True)


def watch(out, *args):
    w = subprocess.Popen([MW, "watch", "-q", "--jsonl", str(out), "--no-store", *args], stderr=subprocess.PIPE,
                         text=True)
    wait_for(lambda: w.poll() is not None or out.exists() and '"start"' in out.read_text(), 60 * SLOW)
    assert w.poll() is None, w.stderr.read()
    return w


def records(out):
    return [json.loads(x) for x in out.read_text().splitlines()]


def check_named(recs, name, tool):
    cid = subprocess.run(["podman", "container", "inspect", name, "--format", "{{.Id}}"], capture_output=True,
                         text=True).stdout.strip() or None
    found = [r for r in recs if r["type"] == "discovered"]
    assert len(found) == 1, found        # the server in the container, not podman, conmon or the client
    calls = [r for r in recs if r["type"] == "call" and r.get("tool") == tool]
    assert calls
    srv = calls[0]["server"]
    assert srv["container_runtime"] == "podman" and srv["container_name"] == name
    assert srv["container_image"] == "rootfs:/" and len(srv["container"]) == 64
    assert cid is None or srv["container"] == cid
    assert srv["ns_pid"] != srv["pid"]   # its own PID namespace: the host pid and the container's differ
    end = next(e for r in recs if r["type"] == "session" for e in r["ends"] or () if e["role"] == "server")
    assert end["container_name"] == name and end["container_runtime"] == "podman"
    return calls[0]


def test_a_stdio_server_in_a_container_is_named_by_it(tmp_path, name):
    out = tmp_path / "w.jsonl"
    w = watch(out, "--container", name)
    try:
        t = RecordingStdio("podman", podman_run(name, "-i", "--network", "none")[1:] + [sys.executable, SERVER])

        async def main():
            async with client(t) as c:
                await c.call_tool("read_file", {"path": "/etc/hostname"})
                await c.call_tool("read_file", {"path": "/etc/shadow"})   # a default rule's alert

        anyio.run(main)
        assert wait_for(lambda: '"read_file"' in out.read_text() and '"type":"alert"' in out.read_text(), 30 * SLOW)
    finally:
        stop(w, signal.SIGTERM)
    recs = records(out)
    call = check_named(recs, name, "read_file")
    assert any(e["type"] == "open" and e.get("path") == "/etc/hostname" and e["attribution"] == "exact"
               for e in call["timeline"])
    # alerts carry the container too, whatever record raised them
    alerts = [r for r in recs if r["type"] == "alert"]
    assert alerts and all(a["container"]["name"] == name and a["container"]["runtime"] == "podman"
                          for a in alerts), alerts


def test_an_http_server_in_a_container_is_named_by_it(tmp_path, name):
    out, port = tmp_path / "w.jsonl", free_port()
    w = watch(out, "--port", str(port), "--container", name)
    srv = subprocess.Popen(podman_run(name, "-i", "--network", "host") + [sys.executable, HTTP_SERVER, "http",
                                                                          "127.0.0.1", str(port)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        drive(url_of("http", "127.0.0.1", port), [("echo", {"text": "from a container"})])
        assert wait_for(lambda: '"echo"' in out.read_text() and '"type":"call"' in out.read_text(), 30 * SLOW)
    finally:
        stop(w, signal.SIGTERM)
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        srv.wait(timeout=60)
    recs = records(out)
    assert {r["transport"] for r in recs if r["type"] == "mcp"} == {"http"}
    check_named(recs, name, "echo")


def test_the_filter_leaves_out_servers_in_other_containers_and_on_the_host(tmp_path, name):
    out = tmp_path / "w.jsonl"
    w = watch(out, "--container", name)          # a container that is not the one that runs
    try:
        other = name + "-other"
        for cmd in (podman_run(other, "-i", "--network", "none")[1:] + [sys.executable, SERVER],
                    [SERVER]):
            t = RecordingStdio("podman" if cmd[0] == "run" else sys.executable, cmd)

            async def main():
                async with client(t) as c:
                    await c.call_tool("read_file", {"path": "/etc/hostname"})

            anyio.run(main)
    finally:
        stop(w, signal.SIGTERM)
        subprocess.run(["podman", "rm", "-f", "-t", "0", name + "-other"], capture_output=True)
    recs = records(out)
    assert [r for r in recs if r["type"] == "discovered"] == []
    assert recs[-1]["type"] == "stats" and recs[-1]["rejected_by_filter"] >= 2


@pytest.mark.parametrize("cgroup,want", [
    ("/libpod_parent/libpod-" + "a" * 64, {"runtime": "podman", "pod": None}),
    ("/machine.slice/libpod-" + "b" * 64 + ".scope/container", {"runtime": "podman", "pod": None}),
    ("/system.slice/docker-" + "c" * 64 + ".scope", {"runtime": "docker", "pod": None}),
    ("/docker/" + "d" * 64, {"runtime": "docker", "pod": None}),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_1111_2222_3333_444455556666.slice/"
     "cri-containerd-" + "e" * 64 + ".scope",
     {"runtime": "containerd", "pod": {"uid": "1b2c3d4e-1111-2222-3333-444455556666", "namespace": None,
                                       "name": None}}),
    ("/kubepods/besteffort/pod0a0b0c0d-1111-2222-3333-444455556666/" + "f" * 64,
     {"runtime": "cri", "pod": {"uid": "0a0b0c0d-1111-2222-3333-444455556666", "namespace": None, "name": None}}),
    ("/kubepods.slice/kubepods-pod0a0b0c0d_1111_2222_3333_444455556667.slice/crio-" + "0" * 64 + ".scope",
     {"runtime": "cri-o", "pod": {"uid": "0a0b0c0d-1111-2222-3333-444455556667", "namespace": None, "name": None}}),
    ("/user.slice/user-1000.slice/session-2.scope", None),
])
def test_container_identity_from_the_cgroup_path(cgroup, want):
    got = container_info(cgroup)
    if want is None:
        assert got is None
        return
    assert {k: got[k] for k in want} == want and len(got["id"]) == 64


def test_falco_output_names_the_container_with_falcos_fields():
    from mcpwitness.detect.engine import falco_json
    from mcpwitness.records import Alert
    pod = {"uid": "0a0b0c0d-1111-2222-3333-444455556666", "namespace": "agents", "name": "mcp-fs-0"}
    a = Alert(time="2026-12-03T00:00:00Z", ktime_ns=1, rule="r", priority="warning", output="o", tags=[],
              source="call", call_id="c", session="s", tool="t", candidates=None, pid=1, fields={},
              container={"runtime": "containerd", "id": "e" * 64, "name": "fs", "image": "mcp/fs:1", "pod": pod})
    f = falco_json(a)["output_fields"]
    assert f["container.id"] == "e" * 12 and f["container.name"] == "fs" and f["container.image"] == "mcp/fs:1"
    assert (f["k8s.ns.name"], f["k8s.pod.name"], f["container.type"]) == ("agents", "mcp-fs-0", "containerd")
