"""Remote MCP over HTTPS between the clients and servers people run, each
pairing under `watch --port`: clients the Python SDK (the system's libssl),
the TypeScript SDK on Node's official build (its own OpenSSL) and on Bun
(BoringSSL, stripped), Claude Code (Bun-built: `claude mcp add --transport
http`, then `claude mcp list`), a Go client (crypto/tls) and the TypeScript
SDK on Deno (rustls: not read); servers the Python SDK, the TypeScript SDK on
Node and on Bun, and Go.

Each end is read from its own TLS library, the other end's left to its own
probes: every message is then seen twice, once at each end, and kept once, so
the duplicates say that each end alone gave every message, at the same byte
offsets (where the client is Deno, the server's end alone gives them all).
Checked against the client's own log of what it sent and received (Claude
Code keeps none: against the Go server's log, or the conversation's own
pairing), every record naming the library of the end it was kept from.
The single-end tests, with the other end refused, are in test_real_clients.py."""
import json
import os
import re
import signal
import subprocess
import sys

import anyio
import pytest
from conftest import free_port, wait_for
from mcp_client import RecordingHttp, check_against_client, client
from test_real_clients import (BUN, CLAUDE, DENO, HERE, NPM_DIR, TIMEOUT, TS_CLIENT, _go, _node, _probed_first,
                               _run_pid, ca_and_leaf, records, stop, uprobe_in, watch_port)

pytestmark = pytest.mark.kernel

CLIENTS = ["python-sdk", "ts-node", "ts-bun", "claude", "go", "deno"]
SERVERS = ["python-sdk", "ts-node", "ts-bun", "go"]
CALLS = [["echo", {"text": "paired"}], ["big", {"n": 200000}]]


def _libssl_of(pid: int) -> str | None:
    """The libssl process pid maps under its own soname (libssl.so.3, libssl.so.1.1): the one
    Python's ssl module links. (Other copies may be mapped beside it: after the fleet tests
    the test process also maps psycopg's bundled libssl-<hash>.so.3.)"""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and re.fullmatch(r"libssl\.so(\.\d+)*", os.path.basename(parts[5])):
                    return os.path.realpath(parts[5])
    except OSError:
        pass
    return None


def _start_server(name, port, crt, key, slog, deno_client):
    """The server, listening and probed: (its process, the tls a record read at its end names)."""
    if name == "python-sdk":
        srv = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "sdk_http_server.py"), "https",
                                "127.0.0.1", str(port), str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        tls = lambda: {"library": "openssl", "file": _libssl_of(srv.pid)}  # noqa: E731
        probed = lambda: _libssl_of(srv.pid) and uprobe_in(srv.pid, _libssl_of(srv.pid), "SSL_write")  # noqa: E731
    elif name in ("ts-node", "ts-bun"):
        exe = _node("official") if name == "ts-node" else BUN
        srv = subprocess.Popen([exe, os.path.join(HERE, "workloads", "ts_https_server.js"), NPM_DIR, str(port),
                                str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        if name == "ts-node":
            tls = lambda: {"library": "openssl(node)", "file": exe}  # noqa: E731
            probed = lambda: uprobe_in(srv.pid, exe, "SSL_write")  # noqa: E731
        else:
            from mcpwitness.kernel import boringssl
            off = boringssl.locate(BUN)["SSL_write"]
            tls = lambda: {"library": "boringssl(bun)", "file": os.path.realpath(BUN)}  # noqa: E731
            probed = lambda: uprobe_in(srv.pid, BUN, "SSL_write", off)  # noqa: E731
    else:
        exe = _go("server")
        # (Go's TLS servers offer HTTP/2, which Deno's fetch takes: reported, not decoded)
        srv = subprocess.Popen([exe, "-log", str(slog)] + (["-http1"] if deno_client else []) +
                               [f"127.0.0.1:{port}", str(crt), str(key)], stdout=subprocess.PIPE, text=True)
        tls = lambda: {"library": "go", "file": exe}  # noqa: E731
        probed = lambda: uprobe_in(srv.pid, exe, "crypto/tls.(*Conn).Write")  # noqa: E731
    assert srv.stdout.readline().strip() == "listening", f"{name} did not start"
    assert wait_for(probed, TIMEOUT), f"the {name} server's TLS was never probed"
    return srv, tls()


def _ts_config(tmp_path, url, log, start=None):
    cfg = tmp_path / "ts.json"
    calls = [["tools/list"]] + [["tool", n, a] for n, a in CALLS]
    cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "url": url, "calls": calls,
                               **({"start": str(start)} if start else {})}))
    return cfg


def _gated(cmd, exe, fn, start, env) -> int:
    """Run a client that connects once the file start exists: written when the
    agent has probed fn of exe in it (its exec told the agent). Its pid."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert wait_for(lambda: uprobe_in(p.pid, exe, fn), TIMEOUT), f"{exe}: {fn} never probed"
    start.write_text("go")
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0 and "paired" in out, (out, err)
    return p.pid


def _run_client(name, url, tmp_path, ca, legacy):
    """Run the client to its end: (its pid, its log of messages or None, the tls its end's records name)."""
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(ca), "SSL_CERT_FILE": str(ca)}
    log = tmp_path / "client-log.json"
    if name == "python-sdk":
        t = RecordingHttp(url)

        async def main():
            async with client(t, **({"mode": "legacy"} if legacy else {})) as c:
                await c.list_tools()
                for n, a in CALLS:
                    await c.call_tool(n, a)
        old = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(ca)
        try:
            anyio.run(main)
        finally:
            os.environ.pop("SSL_CERT_FILE") if old is None else os.environ.__setitem__("SSL_CERT_FILE", old)
        return os.getpid(), t.log, {"library": "openssl", "file": _libssl_of(os.getpid())}
    if name == "ts-node":
        node, start = _node("official"), tmp_path / "start"
        pid = _gated([node, TS_CLIENT, str(_ts_config(tmp_path, url, log, start))], node, "SSL_write", start, env)
        return pid, [tuple(x) for x in json.loads(log.read_text())], {"library": "openssl(node)", "file": node}
    if name in ("ts-bun", "claude"):
        exe = BUN if name == "ts-bun" else CLAUDE
        assert os.access(exe, os.X_OK), f"{exe} missing: run scripts/setup"
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env.update(HOME=str(home), DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
        # the first run of a Bun binary under this watch is read once its code has been searched
        _probed_first([BUN, "-e", "process.stdin.resume()"] if name == "ts-bun" else [CLAUDE, "mcp", "serve"], exe,
                      cwd=home, env=env)
        tls = {"library": f"boringssl({os.path.basename(os.path.realpath(exe))})", "file": os.path.realpath(exe)}
        if name == "ts-bun":
            pid, out, err, rc = _run_pid([BUN, TS_CLIENT, str(_ts_config(tmp_path, url, log))], env=env)
            assert rc == 0 and "paired" in out, (out, err)
            return pid, [tuple(x) for x in json.loads(log.read_text())], tls
        subprocess.run([CLAUDE, "mcp", "add", "--transport", "http", "witness", url], cwd=home, env=env, check=True,
                       capture_output=True, timeout=TIMEOUT)
        pid, out, err, rc = _run_pid([CLAUDE, "mcp", "list"], cwd=home, env=env)
        assert rc == 0 and "witness" in out and "Connected" in out, (out, err)
        return pid, None, tls
    if name == "go":
        exe, start = _go("client"), tmp_path / "start"
        pid = _gated([exe, url, str(ca), str(log), json.dumps(CALLS), str(start)], exe, "crypto/tls.(*Conn).Write",
                     start, env)
        return pid, [tuple(x) for x in json.loads(log.read_text())], {"library": "go", "file": exe}
    assert os.access(DENO, os.X_OK), f"{DENO} missing: run scripts/setup"
    script = tmp_path / "ts_client.cjs"  # (Deno runs CommonJS from a .cjs file)
    script.write_bytes(open(TS_CLIENT, "rb").read())
    env.update(DENO_CERT=str(ca), DENO_NO_UPDATE_CHECK="1", DENO_DIR=str(tmp_path / "deno-dir"))
    pid, out, err, rc = _run_pid([DENO, "run", "-A", str(script), str(_ts_config(tmp_path, url, log))], env=env)
    assert rc == 0 and "paired" in out, (out, err)
    return pid, [tuple(x) for x in json.loads(log.read_text())], None


# Known, not fixed (issue 32's notes): between Bun and the Python SDK, one run in three or four
# goes wrong at one end: the Python client's notifications/initialized recorded a second time
# from the Bun server's end (not merged), or a connection of the Bun client's counted not_http.
FLAKY = {("python-sdk", "ts-bun"): "the Bun server's copy of a notification is sometimes not merged",
         ("ts-bun", "python-sdk"): "a Bun client connection is sometimes counted not_http"}


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("client_name", CLIENTS)
def test_https_pairing_read_at_each_end_under_watch_port(client_name, server_name, tmp_path, request):
    if (client_name, server_name) in FLAKY:
        request.node.add_marker(pytest.mark.xfail(reason=FLAKY[client_name, server_name], strict=False))
    port, out, slog = free_port(), tmp_path / "ev.jsonl", tmp_path / "server-log.json"
    ca, crt, key = ca_and_leaf(tmp_path)
    url = f"https://127.0.0.1:{port}/mcp"
    w = watch_port(port, out)
    srv = None
    try:
        srv, server_tls = _start_server(server_name, port, crt, key, slog, client_name == "deno")
        pid, log, client_tls = _run_client(client_name, url, tmp_path, ca, legacy=server_name == "go")
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    mcp = [r for r in recs if r["type"] == "mcp"]
    stats = recs[-1]
    why = (stats["tls_libraries"], stats["tls_unread"], stats["tls_errors"])
    if log is None and server_name == "go":  # Claude Code keeps no log: the Go server's, from its side
        log = [tuple(x) for x in json.loads(slog.read_text())]
    # a server that refuses server/discover answers HTTP 400 with id null; the client took it as the answer
    for r in mcp:
        if log and r["kind"] == "error" and r["id"] is None and r["paired"]:
            r["id"] = next(m["id"] for w_, m in log if w_ == "sent" and m.get("method") == r["method"])
    if log is not None:
        check_against_client(log, mcp)
    assert mcp and all(r["paired"] for r in mcp if r["kind"] in ("response", "error")), mcp
    requests = [r for r in mcp if r["kind"] == "request"]
    assert len(requests) == len([r for r in mcp if r["kind"] in ("response", "error")]), "a request unanswered"
    assert {r["transport"] for r in mcp} == {"https"}
    for r in mcp:  # each record names the library of the end whose copy was kept
        assert r["tls"] == (client_tls if r["pid"] == pid else server_tls), (r["pid"], pid, srv.pid, r["tls"], why)
    refused = [r for r in recs if r["type"] == "nonjson" and r["reason"].startswith("HTTP 4")]
    if client_tls is None:  # Deno: the server's end alone
        assert {r["pid"] for r in mcp} == {srv.pid} and stats["mcp"]["duplicates"] == 0
        said = (stats["tls_unread"] or {}).get(os.path.realpath(DENO), "")
        assert "rustls" in said and "not read" in said, stats["tls_unread"]
    else:
        assert stats["mcp"]["duplicates"] == len(mcp) + len(refused), ("an end was not read whole", why)
    assert stats["kernel"]["tls_unbound"] == 0, why
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    if client_name == "claude":
        sess = [r for r in recs if r["type"] == "session" and r["event"] == "end"][-1]
        assert sess["client_info"]["name"].startswith("claude"), sess["client_info"]
    else:
        calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
        assert len(calls) == len(CALLS) and all(c["status"] == "ok" and c["complete"] for c in calls), calls
        big = [r for r in mcp if r["kind"] == "response" and r["method"] == "tools/call"][-1]
        assert len(big["result"]["content"][0]["text"]) == CALLS[-1][1]["n"] and not big["truncated"]
