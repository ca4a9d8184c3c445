"""The agent's own OCI image (Containerfile, scripts/build-image) and its Kubernetes
DaemonSet (deploy/daemonset.yaml), run with podman on this machine:

- the image, run privileged with the host's PID and cgroup namespaces, records a real
  SDK server started on the host, from its first message;
- the DaemonSet's pod, played by `podman kube play` with exactly the manifest's
  capabilities (not privileged), does the same, and answers its liveness probe.

No registry is reachable here: the image is built on a Debian 12 base that
`scripts/build-image --local-base` makes with debootstrap (kept in .cache/image)."""
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid

import anyio
import pytest
import yaml
from conftest import SLOW, free_port, wait_for
from mcp_client import RecordingStdio, client

pytestmark = pytest.mark.kernel
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
TAG = "localhost/mcpwitness:test"
# podman on this VM: runc (crun refuses a hybrid cgroup hierarchy), rlimits it may set without
# CAP_SYS_RESOURCE
PODMAN_VM = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture(scope="module")
def image():
    if not shutil.which("podman"):
        pytest.fail("podman is not installed: run scripts/setup")
    p = subprocess.run([os.path.join(ROOT, "scripts", "build-image"), "--local-base", "--tag", TAG],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1] == TAG
    return TAG


def records(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.endswith("\n")]


def call_host_server(events, marker):
    """A real SDK client starts the audit server on the host and calls it; returns when the
    agent's file holds the call's record."""
    t = RecordingStdio(sys.executable, [SERVER])

    async def main():
        async with client(t) as c:
            r = await c.call_tool("read_file", {"path": marker})
            assert not r.is_error

    anyio.run(main)
    assert wait_for(lambda: os.path.exists(events) and any(
        r["type"] == "call" and r.get("tool") == "read_file" for r in records(events)), 30 * SLOW), \
        "the agent in the container never wrote the host server's call"


def check_call(recs, marker):
    assert [r["type"] for r in recs[:2]] == ["chain", "start"] and recs[1]["mode"] == "watch"
    found = [r for r in recs if r["type"] == "discovered"]
    assert found and found[0]["exe"] == os.path.realpath(sys.executable), found
    call = next(r for r in recs if r["type"] == "call" and r.get("tool") == "read_file")
    assert call["status"] == "ok" and call["arguments"]["path"] == marker
    opens = [e for e in call["timeline"] if e["type"] == "open" and e.get("path") == marker]
    assert opens and opens[0]["attribution"] == "exact", call["timeline"]
    # the host pid, as the host sees it: the agent runs in the host's PID namespace
    assert call["server"]["pid"] == found[0]["pid"]
    return call


def test_the_image_run_privileged_records_a_host_server(tmp_path, image):
    name = f"mw-agent-{uuid.uuid4().hex[:8]}"
    pin = name.replace("-", "_")
    log, lib = tmp_path / "log", tmp_path / "lib"
    log.mkdir(), lib.mkdir()
    marker = str(tmp_path / "marker.txt")
    open(marker, "w").write("x")
    events = str(log / "events.jsonl")
    # the shipped configuration (records under /var/log and /var/lib, programs pinned), the pin
    # under its own name so this test leaves the host's pins alone
    run = subprocess.run(["podman", "run", "-d", "--name", name, *PODMAN_VM, "--privileged", "--pid", "host",
                          "--cgroupns", "host", "--network", "none", "-v", "/sys/fs/bpf:/sys/fs/bpf",
                          "-v", f"{log}:/var/log/mcpwitness", "-v", f"{lib}:/var/lib/mcpwitness",
                          image, "watch", "--config", "/etc/mcpwitness/mcpwitness.yaml", "--pin", pin],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    try:
        wait_started(name, events)
        call_host_server(events, marker)
        stop_cleanly(name, events, marker)
        # the pins are on the host's bpffs: they outlive the container, and the host's
        # mcpwitness removes them
        assert os.path.isdir(f"/sys/fs/bpf/mcpwitness/{pin}")
        # a chain the host's mcpwitness verifies
        v = subprocess.run([MW, "verify", events], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        subprocess.run([MW, "unload", "-q", pin], capture_output=True)
    assert not os.path.exists(f"/sys/fs/bpf/mcpwitness/{pin}")


def wait_started(name, events):
    assert wait_for(lambda: os.path.exists(events) and '"start"' in open(events).read()
                    or not _running(name), 120 * SLOW), "the agent never started"
    assert _running(name), _logs(name)


def stop_cleanly(name, events, marker):
    """`podman stop` (SIGTERM): exit 0, the host server's call in the file, nothing lost."""
    stop = subprocess.run(["podman", "stop", "-t", "30", name], capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr
    assert _exit_code(name) == "0", _logs(name)
    recs = records(events)
    check_call(recs, marker)
    assert recs[-1]["type"] == "stats" and recs[-1]["lost"]["events"] == 0
    return recs


def _exit_code(name):
    return subprocess.run(["podman", "inspect", name, "--format", "{{.State.ExitCode}}"], capture_output=True,
                          text=True).stdout.strip()


def _running(name):
    p = subprocess.run(["podman", "inspect", name, "--format", "{{.State.Running}}"], capture_output=True, text=True)
    return p.stdout.strip() == "true"


def _logs(name):
    p = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
    return p.stdout + p.stderr


# --- the DaemonSet ---------------------------------------------------------------------------

DAEMONSET = os.path.join(ROOT, "deploy", "daemonset.yaml")
CAPS = {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH"}


def pod_as_podman_run(name, image, tmp, port, extra_args=(), drop_fields=()):
    """The DaemonSet's pod template as one `podman run`, field by field, as a kubelet would
    run it. podman 4.3's `kube play` cannot: it plays Pods and Deployments only (no
    DaemonSet), ignores `hostPID` (supported from podman 4.5) and
    `securityContext.seccompProfile`. A field this translation does not know fails the
    test, so the manifest gains nothing untested. Host paths of records go under `tmp`."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(open(DAEMONSET))}
    assert set(docs) == {"ConfigMap", "DaemonSet"}
    tpl = docs["DaemonSet"]["spec"]["template"]
    spec = dict(tpl["spec"])
    argv = ["podman", "run", "-d", "--name", name, *PODMAN_VM]
    for k, v in tpl["metadata"].get("labels", {}).items():
        argv += ["--label", f"{k}={v}"]
    if spec.pop("hostPID", False):
        argv += ["--pid", "host"]
    spec.pop("tolerations", None)                       # scheduling only
    argv += ["--stop-timeout", str(spec.pop("terminationGracePeriodSeconds", 30))]
    (c,) = spec.pop("containers")
    volumes = {v["name"]: v for v in spec.pop("volumes")}
    assert not spec, f"pod fields this test does not run: {sorted(spec)}"
    c = dict(c)
    c.pop("name"), c.pop("image"), c.pop("imagePullPolicy", None)
    sc = dict(c.pop("securityContext"))
    for f in drop_fields:
        sc.pop(f, None)
    assert sc.pop("privileged") is False
    argv += ["--user", str(sc.pop("runAsUser"))]
    if sc.pop("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if sc.pop("readOnlyRootFilesystem"):
        argv += ["--read-only"]
    caps = sc.pop("capabilities")
    argv += [x for d in caps["drop"] for x in ("--cap-drop", d)] + [x for a in caps["add"] for x in ("--cap-add", a)]
    if "seccompProfile" in sc:
        assert sc.pop("seccompProfile") == {"type": "Unconfined"}
        argv += ["--security-opt", "seccomp=unconfined"]
    assert not sc, f"securityContext fields this test does not run: {sorted(sc)}"
    (p,) = c.pop("ports")
    argv += ["-p", f"127.0.0.1:{port}:{p['containerPort']}"]
    probe = c.pop("livenessProbe")["httpGet"]            # the test asks it, as the kubelet would
    assert probe["port"] == p["containerPort"]
    res = c.pop("resources")
    argv += ["--memory", res["limits"]["memory"].replace("Gi", "g").replace("Mi", "m")]
    for m in c.pop("volumeMounts"):
        v = volumes.pop(m["name"])
        if "configMap" in v:
            d = tmp / "configmap"
            d.mkdir()
            for fname, text in docs["ConfigMap"]["data"].items():
                (d / fname).write_text(text)
            argv += ["-v", f"{d}:{m['mountPath']}:ro"]
        elif "hostPath" in v:
            path = v["hostPath"]["path"]
            if path.startswith("/var/"):                # records: under the test's tmp
                path = str(tmp / path.strip("/").replace("/", "_"))
                os.makedirs(path, exist_ok=True)
            assert os.path.isdir(path), path
            opts = (["ro"] if m.get("readOnly") else []) + \
                {"HostToContainer": ["rslave"], None: []}[m.get("mountPropagation")]
            argv += ["-v", f"{path}:{m['mountPath']}" + (":" + ",".join(opts) if opts else "")]
        elif "emptyDir" in v:
            argv += ["--tmpfs", m["mountPath"]]
        else:
            raise AssertionError(f"volume kind this test does not run: {v}")
    assert not volumes, f"volumes never mounted: {sorted(volumes)}"
    args = c.pop("args")
    assert not c, f"container fields this test does not run: {sorted(c)}"
    return argv + [image, *args, *extra_args], probe["path"]


def test_the_daemonsets_pod_records_a_host_server_with_its_capabilities_only(tmp_path, image):
    name = f"mw-ds-{uuid.uuid4().hex[:8]}"
    pin = name.replace("-", "_")
    port = free_port()
    # the ConfigMap's configuration, with its own pin name so the host's pins stay untouched
    argv, probe = pod_as_podman_run(name, image, tmp_path, port, extra_args=["--pin", pin])
    marker = str(tmp_path / "marker.txt")
    open(marker, "w").write("x")
    events = str(tmp_path / "var_log_mcpwitness" / "events.jsonl")
    run = subprocess.run(argv, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    try:
        wait_started(name, events)
        # not privileged: exactly the manifest's capabilities, in the container and in the agent
        eff = subprocess.run(["podman", "inspect", name, "--format", "{{.EffectiveCaps}}"], capture_output=True,
                             text=True).stdout
        assert set(eff.strip("[] \n").split()) == CAPS
        start = next(r for r in records(events) if r["type"] == "start")
        status = open(f"/proc/{start['agent_pid']}/status").read()   # hostPID: the same pid here
        capeff = int(next(x for x in status.splitlines() if x.startswith("CapEff:")).split()[1], 16)
        from mcpwitness.kernel.caps import CAP_BITS
        assert capeff == sum(1 << CAP_BITS[c] for c in CAPS), hex(capeff)
        call_host_server(events, marker)
        # the liveness probe, as the kubelet asks it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=10) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
        stop_cleanly(name, events, marker)
        assert os.path.exists(str(tmp_path / "var_lib_mcpwitness" / "mcpwitness.db"))
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        subprocess.run([MW, "unload", "-q", pin], capture_output=True)


def test_without_seccomp_unconfined_the_pod_says_why(tmp_path, image):
    """The runtime's default seccomp profile refuses bpf() without CAP_SYS_ADMIN: the
    manifest's `seccompProfile: Unconfined` is needed, and without it the agent says so."""
    name = f"mw-ds-{uuid.uuid4().hex[:8]}"
    argv, _ = pod_as_podman_run(name, image, tmp_path, free_port(), drop_fields=["seccompProfile"])
    assert "seccomp=unconfined" not in argv
    try:
        assert subprocess.run(argv, capture_output=True).returncode == 0
        assert wait_for(lambda: not _running(name), 60 * SLOW)
        logs = _logs(name)
        assert _exit_code(name) == "1", logs
        assert "cannot load the kernel programs" in logs and "seccomp filter" in logs and " lacks " not in logs, logs
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
