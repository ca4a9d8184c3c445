"""MCP over the network, end to end: the official-SDK server on Streamable
HTTP (plain and TLS) and on the HTTP+SSE transport, driven by the SDK's own
clients, seen by `mcpwitness run` (the server's tree tracked) and by
`mcpwitness watch --port` (both ends, filtered in the kernel); a server in its
own network namespace and one in its own PID namespace. The client's record
of what it sent and received is the truth."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import anyio
import pytest
from conftest import SLOW, free_port, wait_for
from mcp_client import RecordingHttp, check_against_client, client

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "sdk_http_server.py")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return str(crt), str(key)


def start_server(argv, env=None):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    assert line.strip() == "listening", f"server did not start: {line!r}"
    return p


def server_argv(kind, host, port, cert):
    return [sys.executable, SERVER, kind, host, str(port)] + (list(cert) if kind == "https" else [])


def url_of(kind, host, port):
    scheme = "https" if kind == "https" else "http"
    h = f"[{host}]" if ":" in host else host
    return f"{scheme}://{h}:{port}/" + ("sse" if kind == "sse" else "mcp")


def drive(url, calls, mode="auto"):
    t = RecordingHttp(url)

    async def main():
        async with client(t, mode=mode) as c:
            await c.list_tools()
            for name, args in calls:
                await c.call_tool(name, args)

    anyio.run(main)
    return t.log


def records(out):
    return [json.loads(x) for x in out.read_text().splitlines()]


def stop(p, sig=signal.SIGINT, timeout=min(30 * SLOW, 180)):
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # stuck: with PYTHONFAULTHANDLER set (scripts/guest-tests) SIGABRT prints every
        # thread's stack to its stderr, which pytest keeps with the failure
        p.send_signal(signal.SIGABRT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        raise AssertionError(f"{p.args[:3]} did not stop within {timeout:.0f} s of {sig!r}")


STOPPED = [0]  # CLOCK_MONOTONIC when the last run_mode/watch_mode asked mcpwitness to stop


def run_mode(tmp_path, kind, calls, cert, mode="auto", prefix=(), env=None, settle=0.0):
    """mcpwitness run -- SERVER: the server's tree tracked, the client (this test) not."""
    out, port = tmp_path / "run.jsonl", free_port()
    mw = start_server([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", *prefix,
                       *server_argv(kind, "127.0.0.1", port, cert)], env=env)
    try:
        time.sleep(settle)
        log = drive(url_of(kind, "127.0.0.1", port), calls, mode)
        time.sleep(0.3)
    finally:
        STOPPED[0] = time.monotonic_ns()
        stop(mw)
    return log, records(out), port


def watch_mode(tmp_path, server_cmd, url, port, calls, mode="auto", db=None, server_stop=signal.SIGTERM):
    """The server started by itself; mcpwitness watch --port PORT sees both ends."""
    out = tmp_path / "watch.jsonl"
    srv = start_server(server_cmd)
    store = ["--db", str(db)] if db else ["--no-store"]
    w = subprocess.Popen([MW, "watch", "-q", *store, "--jsonl", str(out), "--port", str(port)])
    try:
        assert wait_for(lambda: out.exists() and '"start"' in out.read_text(), 20)
        log = drive(url, calls, mode)
        time.sleep(0.3)
    finally:
        STOPPED[0] = time.monotonic_ns()
        assert stop(w, signal.SIGTERM) == 0
        stop(srv, server_stop)
    return log, records(out), srv.pid


def start_of(recs):
    return next(r for r in recs if r["type"] == "start")


def mcp_of(recs):
    return [r for r in recs if r["type"] == "mcp"]


def last_session(recs):
    return [r for r in recs if r["type"] == "session"][-1]


def check_common(log, recs, transport, port):
    mcp = mcp_of(recs)
    check_against_client(log, mcp)
    assert {r["transport"] for r in mcp} == {transport}
    for r in mcp:  # every message carries its HTTP side
        assert r["http"]["method"] in ("POST", "GET") and r["http"]["target"]
        if r["direction"] == "server->client" and r["http"].get("sse_event") is None:
            assert r["http"]["status"] == 200
    sess = last_session(recs)
    assert sess["event"] == "end" and sess["client_info"]["name"] == "mcp"
    assert sess["server_info"]["name"] == "witness-test-server"
    assert sess["connection"]["server"].endswith(f":{port}")
    stats = recs[-1]
    assert stats["type"] == "stats" and stats["lost"]["events"] == 0 and stats["mcp"]["nonjson"] == 0
    assert stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    return mcp, sess, stats


CALLS = [("echo", {"text": "over the network"}), ("big", {"n": 300_000}), ("echo", {"text": "again"})]


@pytest.mark.matrix("MCP over HTTP and HTTPS (TLS uprobes)")
@pytest.mark.parametrize("kind", ["http", "https"])
def test_streamable_http_tracked_server(kind, tmp_path, cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])
    log, recs, port = run_mode(tmp_path, kind, CALLS, cert)
    mcp, sess, stats = check_common(log, recs, kind, port)
    assert mcp[0]["method"] == "server/discover" and mcp[0]["http"]["mcp_method"] == "server/discover"
    call = [r for r in mcp if r["method"] == "tools/call" and r["kind"] == "request"][0]
    assert call["http"]["mcp_name"] == "echo"
    big = [r for r in mcp if r["kind"] == "response" and r["method"] == "tools/call"][1]
    assert len(big["result"]["content"][0]["text"]) == 300_000 and not big["truncated"]
    assert {r["pid"] for r in mcp} == {sess["pid"]}  # only the server is tracked
    server = [e for e in sess["ends"] if e["role"] == "server"][0]
    assert server["cmdline"][1] == SERVER
    # one call record per tools/call, from the server's own reads and writes
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    assert [c["status"] for c in calls] == ["ok"] * 3
    if kind == "https":
        assert stats["kernel"]["tls_calls"] > 0 and stats["kernel"]["tls_unbound"] == 0
        # probed for the server alone, once it opened libssl: other processes do not trap
        assert "per tracked process" in start_of(recs)["tls"]["mechanism"] and not start_of(recs)["tls"]["libraries"]
        assert any("libssl" in p for p in stats["tls_libraries"]) and stats["tls_processes"] >= 1
        assert {r["tls"]["library"] for r in mcp} == {"openssl"} and all("libssl" in r["tls"]["file"] for r in mcp)
    else:
        assert all(r["tls"] is None for r in mcp)


@pytest.mark.parametrize("kind,host", [("http", "127.0.0.1"), ("https", "127.0.0.1"), ("http", "::1")])
def test_streamable_http_port_filter_sees_both_ends_once(kind, host, tmp_path, cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])
    port = free_port(host)
    log, recs, srv_pid = watch_mode(tmp_path, server_argv(kind, host, port, cert), url_of(kind, host, port), port,
                                    CALLS)
    mcp, sess, stats = check_common(log, recs, kind, port)
    roles = {e["pid"]: e["role"] for e in sess["ends"]}
    assert roles == {srv_pid: "server", os.getpid(): "client"}  # one session, seen from both sides
    assert stats["mcp"]["duplicates"] == len(mcp)  # every message seen twice, recorded once
    found = [r for r in recs if r["type"] == "discovered"]
    assert [f["pid"] for f in found] == [srv_pid] and "watched port" in found[0]["reason"]
    conn = sess["connection"]
    assert conn["server"] == (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    assert conn["socket_cookie"] and conn["netns_cookie"]
    # the session ended when its connection closed (both sockets reached TCP_CLOSE), not at the agent's stop
    assert stats["http"]["closed"] == 2
    assert sess["ktime_ns"] < STOPPED[0]


def test_https_over_several_connections_both_ends_once(tmp_path, cert, monkeypatch):
    """The handshake era over HTTPS, under the port filter: the client opens a
    second connection (and frees one SSL object per connection, whose address
    the next one gets), both event loops drive OpenSSL through memory BIOs, so
    which socket an SSL object speaks over is learnt next to the call. Every
    message is recorded once, from both ends merged: an SSL object bound to
    another connection's socket, or one inheriting a freed object's socket and
    parser, shows as a message twice, or a body that does not parse."""
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])
    port = free_port()
    log, recs, srv_pid = watch_mode(tmp_path, server_argv("https", "127.0.0.1", port, cert),
                                    url_of("https", "127.0.0.1", port), port, CALLS, mode="legacy")
    mcp = mcp_of(recs)
    check_against_client(log, mcp)
    assert {r["pid"] for r in mcp} <= {srv_pid, os.getpid()}
    stats = recs[-1]
    assert stats["mcp"]["duplicates"] == len(mcp)  # each seen at both ends, recorded once
    assert stats["http"]["bad_encoding"] == 0 and stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0
    assert stats["kernel"].get("tls_unbound", 0) == 0 and stats["lost"]["events"] == 0
    assert all(c["status"] == "ok" for c in recs if c["type"] == "call"), [c for c in recs if c["type"] == "call"]


def test_handshake_era_session_id_spans_connections(tmp_path, cert):
    """mode=legacy: initialize, Mcp-Session-Id, SSE-streamed responses and
    the standalone GET stream: one session."""
    log, recs, port = run_mode(tmp_path, "http", [("echo", {"text": "legacy"})], cert, mode="legacy")
    mcp, sess, _ = check_common(log, recs, "http", port)
    assert [r["method"] for r in mcp[:3]] == ["initialize", "initialize", "notifications/initialized"]
    assert sess["era"] == "handshake"
    sids = {r["http"].get("session_id") for r in mcp[2:]}
    assert len(sids) == 1 and None not in sids
    # the client's DELETE (terminate_on_close) ended the session, before mcpwitness stopped
    assert sess["ktime_ns"] < STOPPED[0]


@pytest.mark.parametrize("how", ["run", "watch"])
def test_legacy_sse_transport(how, tmp_path, cert):
    """2024-11-05 HTTP+SSE: requests POSTed to the endpoint the SSE stream
    named, every response back on the stream: one session (from both ends
    under watch --port)."""
    calls = [("echo", {"text": "sse"})]
    if how == "run":
        log, recs, port = run_mode(tmp_path, "sse", calls, cert, mode="legacy")
    else:
        port = free_port()
        log, recs, _ = watch_mode(tmp_path, server_argv("sse", "127.0.0.1", port, cert),
                                  url_of("sse", "127.0.0.1", port), port, calls, mode="legacy")
    mcp, sess, stats = check_common(log, recs, "http", port)
    if how == "watch":
        assert {e["role"] for e in sess["ends"]} == {"server", "client"}
    assert {r["http"]["target"].split("?")[0] for r in mcp if r["direction"] == "client->server"} == {"/messages/"}
    assert {r["http"]["sse_event"] for r in mcp if r["direction"] == "server->client"} == {"message"}
    assert stats["http"]["sse_events"] >= len([r for r in mcp if r["direction"] == "server->client"]) + 1
    assert sess["connection"]["server"] == f"127.0.0.1:{port}"


def _ns_inode(path):
    return os.stat(path).st_ino


@pytest.fixture
def netns():
    """A network namespace with a veth pair to it: (name, host address, namespace address)."""
    if not shutil.which("ip"):
        pytest.skip("iproute2 not installed")
    name = f"mw{uuid.uuid4().hex[:8]}"
    a, b = f"v{name}a"[:15], f"v{name}b"[:15]
    net = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    cmds = [["ip", "netns", "add", name], ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
            ["ip", "link", "set", b, "netns", name], ["ip", "addr", "add", f"{net}.1/30", "dev", a],
            ["ip", "link", "set", a, "up"], ["ip", "-n", name, "addr", "add", f"{net}.2/30", "dev", b],
            ["ip", "-n", name, "link", "set", b, "up"], ["ip", "-n", name, "link", "set", "lo", "up"]]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
        yield name, f"{net}.1", f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_server_in_its_own_network_namespace(tmp_path, netns, cert):
    name, host_addr, ns_addr = netns
    port = free_port()
    cmd = ["ip", "netns", "exec", name, *server_argv("http", ns_addr, port, cert)]
    log, recs, srv_pid = watch_mode(tmp_path, cmd, url_of("http", ns_addr, port), port, [("echo", {"text": "ns"})])
    mcp, sess, _ = check_common(log, recs, "http", port)
    ends = {e["role"]: e for e in sess["ends"]}
    assert ends["server"]["net_ns"] == _ns_inode(f"/run/netns/{name}")
    assert ends["client"]["net_ns"] == _ns_inode("/proc/self/ns/net") != ends["server"]["net_ns"]
    assert ends["client"]["pid"] == os.getpid()
    assert sess["connection"]["server"] == f"{ns_addr}:{port}"
    assert sess["connection"]["client"].startswith(host_addr + ":")
    call = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"][0]
    assert call["transport"] == "http" and call["server"]["address"] == f"{ns_addr}:{port}"
    assert call["server"]["net_ns"] == ends["server"]["net_ns"] and call["client"]["net_ns"] == ends["client"]["net_ns"]


def test_server_in_its_own_pid_namespace(tmp_path, cert):
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare not installed")
    port = free_port()
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *server_argv("http", "127.0.0.1", port, cert)]
    db = tmp_path / "store.db"
    # unshare does not pass SIGTERM on; killed, it takes the server with it (--kill-child)
    log, recs, _ = watch_mode(tmp_path, cmd, url_of("http", "127.0.0.1", port), port, [("echo", {"text": "pidns"})],
                              db=db, server_stop=signal.SIGKILL)
    mcp, sess, _ = check_common(log, recs, "http", port)
    server = [e for e in sess["ends"] if e["role"] == "server"][0]
    assert server["pid_ns"] != _ns_inode("/proc/self/ns/pid")
    assert server["ns_pid"] == 1 and server["pid"] != 1  # the host pid and the pid inside the namespace
    call = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"][0]
    assert call["server"]["ns_pid"] == 1 and call["server"]["pid_ns"] == server["pid_ns"]
    # `mcpwitness sessions`: who talked to whom, from the store
    table = subprocess.run([MW, "sessions", "--db", str(db)], capture_output=True, text=True, check=True).stdout
    assert f"pid {server['pid']}" in table and f"pid 1 in pid ns {server['pid_ns']}" in table
    assert f"pid {os.getpid()}" in table and f"127.0.0.1:{port}" in table
    js = [json.loads(x) for x in subprocess.run([MW, "sessions", "--db", str(db), "--json"], capture_output=True,
                                                text=True, check=True).stdout.splitlines()]
    assert [r["session"] for r in js] == [sess["session"]]
    client_end = [e for e in sess["ends"] if e["role"] == "client"][0]
    assert client_end["ns_pid"] == client_end["pid"] == os.getpid()


def test_a_tracked_servers_own_http_calls_are_not_mcp(tmp_path):
    """A stdio server whose tool calls a REST API over HTTP: its connect is in the
    call's record, the JSON it fetched makes no MCP records, and after three
    bodies without JSON-RPC the kernel stops sending that connection."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mcp_client import RecordingStdio

    class Api(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = json.dumps({"item": self.path, "ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    out = tmp_path / "ev.jsonl"
    t = RecordingStdio(MW, ["run", "-q", "--no-store", "--jsonl", str(out), "--", sys.executable,
                            os.path.join(HERE, "workloads", "audit_server.py")])
    try:
        async def main():
            async with client(t) as c:
                r = await c.call_tool("http_get", {"port": api.server_address[1], "times": 5})
                assert json.loads(r.content[0].text)["item"] == "/api/items/4"

        anyio.run(main)
    finally:
        api.shutdown()
    recs = records(out)
    mcp = mcp_of(recs)
    check_against_client(t.log, mcp)
    assert {r["transport"] for r in mcp} == {"stdio"}
    stats = recs[-1]
    assert stats["http"]["non_mcp_connections"] == 1 and stats["http"]["non_mcp_bodies"] == 3
    assert stats["http"]["http_requests"] >= 3
    call = [r for r in recs if r["type"] == "call" and r["tool"] == "http_get"][0]
    assert [e["port"] for e in call["timeline"] if e["type"] == "connect"] == [api.server_address[1]]


def test_tls_with_single_uprobes_the_fallback_for_kernels_before_6_6(tmp_path, cert, monkeypatch):
    """Kernels without uprobe_multi (before 6.6) get one uprobe per function:
    the same plaintext, the same messages (forced here; this kernel has both)."""
    import msgspec

    from mcpwitness.agent import Agent
    from mcpwitness.kernel.loader import LoadOptions
    from mcpwitness.output.jsonl import ListSink

    monkeypatch.setenv("SSL_CERT_FILE", cert[0])
    sink = ListSink()
    agent = Agent(sink, LoadOptions(uprobe_multi=False))
    assert not agent.kernel.uprobe_multi and "mw_ssl_entry_multi" in agent.kernel.skipped
    agent.start()
    port = free_port()
    srv = start_server(server_argv("https", "127.0.0.1", port, cert))
    try:
        agent.attach(srv.pid)  # a running process: its maps say which libssl to probe, for it alone
        assert {lib["attached_by"] for lib in agent.tls.report()} == {"uprobes, per tracked process"}
        log = drive(url_of("https", "127.0.0.1", port), [("echo", {"text": "single uprobes"})])
    finally:
        stop(srv)
        stats = agent.stop(settle=0.3)
    mcp = [r for r in (msgspec.to_builtins(e) for e in sink.events) if r.get("type") == "mcp"]
    check_against_client(log, mcp)
    assert {r["transport"] for r in mcp} == {"https"}
    assert stats["kernel"]["tls_calls"] > 0 and stats["kernel"]["tls_unbound"] == 0


def test_a_private_libssl_the_server_maps_is_probed_too(tmp_path, cert, monkeypatch):
    """The server loads its own copy of libssl (LD_LIBRARY_PATH), not the
    system's: mcpwitness sees the server open it and probes it for the server,
    or there would be no plaintext and no messages."""
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])
    import _ssl
    # the libssl Python's _ssl links (libssl.so.N), not another library's bundled copy (psycopg's wheel
    # brings a libssl-HASH.so.3 that this process maps too once a test has imported it)
    system = [line.split()[-1] for line in open(f"/proc/{os.getpid()}/maps")
              if os.path.basename(line.split()[-1]).startswith("libssl.so")][0]
    private = tmp_path / "lib"
    private.mkdir()
    shutil.copy(system, private / os.path.basename(system))
    env = {**os.environ, "LD_LIBRARY_PATH": str(private)}
    assert _ssl  # this process maps the system libssl; the server will map the copy
    log, recs, port = run_mode(tmp_path, "https", [("echo", {"text": "private libssl"})], cert, env=env,
                               settle=0)  # probed when the server opens it, before its first TLS byte
    mcp, sess, stats = check_common(log, recs, "https", port)
    assert str(private / os.path.basename(system)) in stats["tls_libraries"]
    assert not any(str(private) in lib["path"] for lib in start_of(recs)["tls"]["libraries"])  # not known at start
    assert not any(os.path.realpath(system) == p for p in stats["tls_libraries"])  # the system's never probed


def test_node_server_everything_on_streamable_http(tmp_path):
    """@modelcontextprotocol/server-everything (Node, Express) on Streamable
    HTTP under `run`: it refuses server/discover with HTTP 400 (a JSON-RPC error
    with id null), the client falls back to initialize, the session goes on by
    Mcp-Session-Id over several connections, responses stream as SSE."""
    from conftest import npm_server

    port, out, err = free_port(), tmp_path / "run.jsonl", tmp_path / "server.log"
    with open(err, "w") as ef:
        mw = subprocess.Popen([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--",
                               npm_server("mcp-server-everything"), "streamableHttp"],
                              env={**os.environ, "PORT": str(port)}, stderr=ef)
    try:
        assert wait_for(lambda: "listening on port" in err.read_text(), 30), err.read_text()
        log = drive(f"http://127.0.0.1:{port}/mcp", [("echo", {"message": "from node"}),
                                                      ("get-sum", {"a": 2, "b": 3})])
        time.sleep(0.3)
    finally:
        STOPPED[0] = time.monotonic_ns()
        stop(mw)
    recs = records(out)
    mcp = mcp_of(recs)
    refused = [r for r in mcp if r["kind"] == "error" and r["id"] is None]
    assert len(refused) == 1 and refused[0]["paired"] and refused[0]["method"] == "server/discover"
    assert refused[0]["http"]["status"] == 400 and "answers request 1" in refused[0]["notes"][-1]
    # the client saw that error as the answer to its request 1
    check_against_client(log, [dict(r, id=1) if r is refused[0] else r for r in mcp])
    sess = last_session(recs)
    assert sess["era"] == "handshake" and sess["server_info"]["name"]
    assert sess["event"] == "end" and sess["ktime_ns"] < STOPPED[0]  # ended by the client's DELETE
    assert {r["http"].get("sse_event") for r in mcp if r["direction"] == "server->client" and r["id"] != 1
            and r["id"] is not None} == {"message"}
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    assert [c["status"] for c in calls] == ["ok", "ok"]


def test_the_client_end_tracked_alone(tmp_path, cert):
    """`mcpwitness run` in front of an HTTP client, the server untracked: the
    client's end of each message, its role, the server's address, and call
    records that say the server has no kernel view."""
    port, out, log = free_port(), tmp_path / "run.jsonl", tmp_path / "client.json"
    srv = start_server(server_argv("http", "127.0.0.1", port, cert))
    try:
        subprocess.run([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", sys.executable,
                        os.path.join(HERE, "workloads", "http_client.py"), url_of("http", "127.0.0.1", port),
                        str(log)], check=True, timeout=60)
    finally:
        stop(srv)
    recs = records(out)
    mcp = mcp_of(recs)
    check_against_client([tuple(x) for x in json.loads(log.read_text())], mcp)
    sess = last_session(recs)
    assert sess["role"] == "client" and [e["role"] for e in sess["ends"]] == ["client"]
    assert sess["connection"]["server"] == f"127.0.0.1:{port}"
    call = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"][0]
    assert call["status"] == "ok" and not call["server"]["tracked"]
    assert call["server"]["address"] == f"127.0.0.1:{port}" and call["transport"] == "http"


FAILURES = os.path.join(HERE, "workloads", "ssl_failures.py")


@pytest.mark.matrix("MCP over HTTP and HTTPS (TLS uprobes)", ids=["plain"])  # the -1 path; _ex's is the same code
@pytest.mark.parametrize("api", ["plain", "ex"])
def test_openssl_failure_returns_are_never_taken_for_bytes(api, tmp_path, cert):
    """SSL_read/SSL_write return an int, -1 on failure (in eax; the upper half
    of rax is zero). Every failure a real client meets (WANT_READ on a
    non-blocking socket, WANT_WRITE on a full one and the retry, EOF after
    close_notify, a dropped connection) moves no bytes and is recorded as
    nothing: one request whole, one answer, and the probes counted exactly the
    calls that moved bytes, though each failing read had a stale, well-formed
    HTTP answer in its buffer."""
    port, calls, out = free_port(), tmp_path / "calls.json", tmp_path / "run.jsonl"
    srv = start_server([sys.executable, FAILURES, "server", *cert, str(port)])
    try:
        p = subprocess.run([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--",
                            sys.executable, FAILURES, "client", str(port), str(srv.pid), str(calls), api],
                           timeout=120 * SLOW, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    finally:
        stop(srv, signal.SIGTERM)
    seen = json.loads(calls.read_text())
    errors = {c["error"] for c in seen["calls"] if c["rc"] <= 0}
    assert {2, 3, 6} <= errors and errors & {1, 5}, seen["calls"]  # WANT_READ, WANT_WRITE, EOF, the drop
    if api == "plain":
        assert {c["rc"] for c in seen["calls"] if c["rc"] <= 0} >= {-1}
    moved = [c for c in seen["calls"] if c["moved"]]
    recs = records(out)
    stats = recs[-1]
    assert stats["type"] == "stats"
    assert stats["kernel"]["tls_calls"] == len(moved), (stats["kernel"], seen["calls"])
    mcp = mcp_of(recs)
    assert [(r["direction"], r["kind"], r["id"]) for r in mcp] == [
        ("client->server", "request", 7), ("server->client", "response", 7)], mcp
    req, answer = mcp
    body = json.loads(seen["answer"].split("\r\n\r\n", 1)[1])
    assert req["size"] == seen["request_body"] and not req["truncated"]
    assert answer["paired"] and answer["result"] == body["result"] and answer["transport"] == "https"
    assert stats["http"]["not_http"] == 0 and stats["http"]["resyncs"] == 0 and stats["mcp"]["nonjson"] == 0
    assert stats["lost"]["events"] == 0
