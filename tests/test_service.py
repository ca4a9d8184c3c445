"""mcpwitness as a service: the configuration file (every option, checked
with file:line), the systemd unit shipped in the package (verified by
systemd-analyze, then its exact command line run as its user with its
capabilities and its notify socket, since systemd is not PID 1 here), and
rotation of the JSON Lines output."""
import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
from conftest import PY, SLOW, wait_for
from test_mcp_http import stop

import mcpwitness
from mcpwitness import cli
from mcpwitness.config import load
from mcpwitness.output.jsonl import JsonlSink, rotated_files
from mcpwitness.util import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
DEPLOY = os.path.join(os.path.dirname(mcpwitness.__file__), "deploy")
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


# --- the configuration file ----------------------------------------------------

def with_config(tmp_path, text, argv):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    argv = [argv[0], "--config", str(p), *argv[1:]]
    ap = cli.build_parser()
    return cli._with_config(ap, ap.parse_args(argv), argv)


def test_every_watch_and_run_option_has_a_key(tmp_path):
    parsers = cli._command_parsers(cli.build_parser())
    for cmd, p in parsers.items():
        keys = {o[2:].replace("-", "_") for a in p._actions for o in a.option_strings if o.startswith("--")}
        keys -= {"help", "config"}
        from mcpwitness.config import option_actions
        assert set(option_actions(p)) == keys, cmd


def test_the_file_sets_options_and_the_command_line_wins(tmp_path):
    a = with_config(tmp_path, """
watch:
  port: [8000, 8443]
  rotate-size: 1M
  rotate_age: 1d
  duration: 90s
  no_tls: true
  comm: mcp-server
  metrics_port: 9464
  syscall_hooks: syscalls
audit: {linger: 5s}
""", ["watch", "--port", "9000", "--syscall-hooks", "dispatch"])
    assert a.port == [8000, 8443, 9000]              # a repeatable option adds to the file's list
    assert a.syscall_hooks == "dispatch"             # the command line wins
    assert (a.rotate_size, a.rotate_age, a.duration, a.no_tls) == (1 << 20, 86400, 90, True)
    assert a.comm == ["mcp-server"] and a.metrics_port == 9464 and a.loaded_config.linger == 5
    r = with_config(tmp_path, "run: {argv_max: 512, no_redact: true}\n", ["run", "--", "true"])
    assert r.argv_max == 512 and r.no_redact and r.command == ["--", "true"]


@pytest.mark.parametrize("text,where,msg", [
    ("watch:\n  prot: 80\n", ":2:9", "unknown option 'prot'"),
    ("watch:\n  port: [8000, x]\n", ":2:16", r"watch.port\[1\]: not a TCP port"),
    ("watch:\n  ring_size: 3K\n", None, None),
    ("watch:\n  syscall_hooks: kprobe\n", ":2:18", "not one of fexit, dispatch, syscalls"),
    ("watch:\n  no_tls: 1\n", ":2:11", "true or false"),
    ("watch:\n  duration: soon\n", ":2:13", "not a duration"),
    ("watch:\n  metrics_port: '80'\n", ":2:17", "whole number"),
    ("run:\n  comm: x\n", ":2:9", "run: unknown option 'comm'"),
    ("watch: [1]\n", ":1:8", "must be a mapping"),
    ("wacth: {}\n", ":1:8", "unknown section 'wacth'"),
    ("store:\n  retention: forever\n", ":2:14", "not a duration"),
    ("watch:\n  port: [8000\n", ":3:1", "not valid YAML"),
])
def test_bad_values_are_refused_with_file_line_column(tmp_path, capsys, text, where, msg):
    if msg is None:  # a value argparse takes but the command refuses later: not the file's business
        assert with_config(tmp_path, text, ["watch"]).ring_size == 3 << 10
        return
    assert with_config(tmp_path, text, ["watch"]) is None
    err = capsys.readouterr().err
    assert re.search(re.escape(str(tmp_path / "c.yaml") + where) + r": .*" + msg, err), err
    # the same through load(): what a tool checking a file before deploying it sees
    with pytest.raises(ConfigError):
        load(str(tmp_path / "c.yaml"), "watch", cli._command_parsers(cli.build_parser()))


def test_the_shipped_configuration_is_valid():
    c = load(os.path.join(DEPLOY, "mcpwitness.yaml"), "watch", cli._command_parsers(cli.build_parser()))
    assert c.options["jsonl"] == "/var/log/mcpwitness/events.jsonl" and c.options["rotate_size"] == 256 << 20
    assert c.retention == 7 * 86400


# --- rotation ------------------------------------------------------------------

def test_rotation_by_size_keeps_every_line_once_and_the_newest_files(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(str(path), rotate_size=4096, keep=3)
    for i in range(400):
        sink.write([{"type": "x", "i": i, "pad": "p" * 40}])
    sink.write_record({"type": "stats"})          # as an agent ends its file
    sink.close()
    rotated = sink.rotated_files()
    assert sink.rotations >= 5 and len(rotated) == 3 and sink.removed == sink.rotations - 3
    names = [os.path.basename(f) for f in rotated]
    assert all(re.fullmatch(r"events\.\d{8}T\d{6}Z(-\d+)?\.jsonl", n) for n in names), names
    recs = [json.loads(x) for f in rotated + [str(path)] for x in open(f)]
    seen = [r["i"] for r in recs if r["type"] == "x"]
    assert seen == list(range(seen[0], 400))          # in order, none twice, none lost after the kept ones
    # each file begins with its chain record and each rotated one ends with its checkpoint
    for f in rotated:
        lines = [json.loads(x) for x in open(f)]
        assert (lines[0]["type"], lines[0]["event"], lines[-1]["event"]) == ("chain", "begin", "rotate")
    from mcpwitness.output.chain import verify_files
    findings, summaries = verify_files(rotated + [str(path)])
    assert findings == [], [str(f) for f in findings]
    assert summaries[0]["continues_from"]               # the oldest kept file names the pruned one it follows
    assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in rotated + [str(path)])


def test_rotation_by_age(tmp_path, monkeypatch):
    import mcpwitness.output.jsonl as jl
    now = [1_000_000.0]
    monkeypatch.setattr(jl.time, "time", lambda: now[0])
    sink = JsonlSink(str(tmp_path / "a.jsonl"), rotate_age=3600)
    sink.write([{"i": 0}])
    assert sink.rotations == 0
    now[0] += 3601
    sink.write([{"i": 1}])
    assert sink.rotations == 1 and len(sink.rotated_files()) == 1
    sink.close()


def test_run_rotates_its_output_and_loses_nothing(tmp_path):
    from mcp_client import RecordingStdio, client
    import anyio
    out = tmp_path / "ev.jsonl"
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--rotate-size", "8K", "--rotate-keep", "1000",
                            "--", sys.executable, SERVER])

    async def main():
        async with client(t) as c:
            for i in range(6):
                await c.call_tool("read_file", {"path": "/etc/hostname"})

    anyio.run(main)
    files = rotated_files(str(out)) + [str(out)]
    assert len(files) > 2
    recs = [json.loads(x) for f in files for x in open(f)]
    assert [r["type"] for r in recs[:2]] == ["chain", "start"] and recs[-1]["type"] == "stats"
    assert len([r for r in recs if r["type"] == "call" and r.get("tool") == "read_file"]) == 6


# --- the systemd unit ----------------------------------------------------------

def unit():
    cp = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(os.path.join(DEPLOY, "mcpwitness.service"))
    return cp


def test_the_unit_verifies_and_is_hardened(tmp_path):
    text = open(os.path.join(DEPLOY, "mcpwitness.service")).read()
    exe = shlex.split(unit()["Service"]["ExecStart"])[0]
    # only the executable's place changes: systemd-analyze checks that it exists
    local = tmp_path / "mcpwitness.service"
    local.write_text(text.replace(exe, MW))
    v = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert v.returncode == 0 and v.stderr.strip() == "" and v.stdout.strip() == "", v.stderr + v.stdout
    s = unit()["Service"]
    assert s["Type"] == "notify" and s["Restart"] == "on-failure" and s["WatchdogSec"]
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict" and s["User"] != "root"
    from mcpwitness.kernel import caps
    granted = set(s["AmbientCapabilities"].split())
    assert granted == set(s["CapabilityBoundingSet"].split())
    assert granted == {c for need, _ in caps.FEATURES.values() for c in need}   # the table, no more
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(local)], capture_output=True,
                         text=True)
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout + sec.stderr)
    assert level and float(level.group(1)) <= 5.0, sec.stdout[-400:]


def notify_socket(d):
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)
    return s, path


def messages(sock, want, timeout):
    """Datagrams until one holds `want` (a KEY=VALUE line); all of them."""
    got = []
    sock.settimeout(timeout)
    while True:
        try:
            m = sock.recv(4096).decode()
        except socket.timeout:
            raise AssertionError(f"no {want} within {timeout} s; got {got}") from None
        got.append(m)
        if want in m.split("\n"):
            return got


def test_the_units_command_line_runs_as_its_user_with_its_capabilities(system_python):
    """What systemd would run, run here: the unit's User (made by the shipped
    sysusers file), its capability sets, NoNewPrivileges, UMask, Environment,
    its state and logs directories owned by that user, the shipped
    configuration at the path ExecStart names, and a notify socket with a
    watchdog. /etc and /var are overlays in a mount namespace of its own, so
    the host is not changed. Sandboxing directives (ProtectSystem...) are
    systemd's to apply and are not reproduced."""
    s = unit()["Service"]
    argv = shlex.split(s["ExecStart"])
    user = s["User"]
    ambient = ",".join(["-all"] + ["+" + c[4:].lower() for c in s["AmbientCapabilities"].split()])
    bounding = ",".join(["-all"] + ["+" + c[4:].lower() for c in s["CapabilityBoundingSet"].split()])
    env = [e for e in shlex.split(s["Environment"])] + [f"PYTHONPATH={system_python}", "PATH=/usr/bin:/bin"]
    state = "/var/lib/" + s["StateDirectory"]
    logs = "/var/log/" + s["LogsDirectory"]
    confdir = "/etc/" + s["ConfigurationDirectory"]
    config_path = argv[argv.index("--config") + 1]
    assert os.path.dirname(config_path) == confdir
    d = tempfile.mkdtemp(prefix="mw-unit-", dir="/tmp")
    os.chmod(d, 0o755)
    for sub in ("etc-up", "etc-work", "var-up", "var-work"):
        os.mkdir(os.path.join(d, sub))
    sock, npath = notify_socket(d)
    pre = s["ExecStartPre"].lstrip("+")   # "+": run with full privileges, as root here
    pinned = pre.split()[-1] + "/" + load(os.path.join(DEPLOY, "mcpwitness.yaml"), "watch",
                                          cli._command_parsers(cli.build_parser())).options["pin"]
    if os.path.exists(pinned):
        pytest.skip(f"{pinned} exists: a real mcpwitness service runs here; not touched")
    setup = " && ".join([
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc-up,workdir={d}/etc-work /etc",
        f"mount -t overlay overlay -o lowerdir=/var,upperdir={d}/var-up,workdir={d}/var-work /var",
        f"systemd-sysusers {shlex.quote(os.path.join(DEPLOY, 'sysusers.conf'))} >/dev/null",
        f"mkdir -p {confdir} {state} {logs}",
        f"cp {shlex.quote(os.path.join(DEPLOY, 'mcpwitness.yaml'))} {config_path}",
        # systemd gives StateDirectory= and LogsDirectory= to the unit's user, recursively when
        # they already exist with another owner (a store root wrote before the service existed)
        f"chown -R {user}:{s['Group']} {state} {logs}",
        f"chmod {s['StateDirectoryMode']} {state}", f"chmod {s['LogsDirectoryMode']} {logs}",
        pre,
        f"umask {s['UMask']}",
        "exec \"$@\""])
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
           "setpriv", f"--reuid={user}", f"--regid={s['Group']}", "--clear-groups", f"--inh-caps={ambient}",
           f"--ambient-caps={ambient}", f"--bounding-set={bounding}",
           *(["--no-new-privs"] if s["NoNewPrivileges"] == "yes" else []),
           "env", "-i", *env, f"NOTIFY_SOCKET={npath}", "WATCHDOG_USEC=2000000",
           PY, "-m", "mcpwitness", *argv[1:]]        # the unit's arguments, exactly
    go, log = os.path.join(d, "go"), os.path.join(d, "client.json")
    w = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        first = messages(sock, "READY=1", 60 * SLOW)
        assert f"MAINPID={w.pid}" in first[-1]
        # a real session, started after READY=1: recorded from its first message
        cfg = json.dumps({"command": sys.executable, "args": [SERVER],
                          "calls": [["read_file", {"path": "/etc/hostname"}]]})
        open(go, "w").close()
        cli_p = subprocess.run([sys.executable, os.path.join(HERE, "workloads", "watched_client.py"), go, log, cfg],
                               timeout=60 * SLOW)
        assert cli_p.returncode == 0
        messages(sock, "WATCHDOG=1", 10 * SLOW)        # the agent is healthy and says so
        events = os.path.join(d, "var-up", logs[len("/var/"):], "events.jsonl")
        assert wait_for(lambda: os.path.exists(events) and '"read_file"' in open(events).read()
                        and '"type":"call"' in open(events).read(), 30 * SLOW)
        w.send_signal(signal.SIGHUP)                    # ExecReload: the policy and rules again
        w.send_signal(signal.SIGTERM)
        messages(sock, "STOPPING=1", 30 * SLOW)
        assert stop(w, signal.SIGTERM) == 0, w.stderr.read()
        recs = [json.loads(x) for x in open(events)]
        st = os.stat(events)
        with open(os.path.join(d, "etc-up", "passwd")) as f:
            uid = next(int(x.split(":")[2]) for x in f if x.startswith(user + ":"))
        assert st.st_uid == uid and st.st_mode & 0o777 == 0o600
        assert recs[1]["type"] == "start" and recs[-1]["type"] == "stats" and recs[-1]["lost"]["events"] == 0
        call = next(r for r in recs if r["type"] == "call" and r.get("tool") == "read_file")
        assert any(e["type"] == "open" and e.get("path") == "/etc/hostname" for e in call["timeline"])
        disc = next(r for r in recs if r["type"] == "discovered")
        assert disc["exe"] == os.path.realpath(sys.executable)
        db = os.path.join(d, "var-up", state[len("/var/"):], "mcpwitness.db")
        assert os.path.exists(db) and os.stat(db).st_uid == uid
        # its programs stay pinned, by the service's user, for the next start
        assert os.listdir(os.path.join(pinned, "links")) and os.stat(pinned).st_uid == uid
        start = next(r for r in recs if r["type"] == "start")
        assert start["pinned"]["dir"] == pinned and start["pinned"]["adopted"] is False
    finally:
        subprocess.run([MW, "unload", "-q", os.path.basename(pinned)], capture_output=True)
        if w.poll() is None:
            w.kill()
            w.wait()
        sock.close()
        shutil.rmtree(d, ignore_errors=True)
