"""The hard cases of MCP over HTTP, with hand-written servers whose bytes we
choose, under `mcpwitness watch --port` (this test is the client, captured
without being tracked; the server is tracked once it speaks HTTP)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import free_port, wait_for

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, "workloads", "raw_http_server.py")


def post(obj, host_port) -> bytes:
    body = json.dumps(obj).encode()
    return (b"POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
            % (host_port.encode(), len(body), body))


def session(tmp_path, mode, talk, watch_args=("--no-store",), until=None):
    """Serve MODE on a fresh port under watch --port (with watch_args);
    talk(sock, "host:port") is the client. The agent is stopped once
    until(the JSON Lines written so far) holds (default: 0.3 s after the
    server's exit)."""
    port = free_port()
    out = tmp_path / "watch.jsonl"
    srv = subprocess.Popen([sys.executable, RAW, mode, str(port)], stdout=subprocess.PIPE, text=True)
    w = subprocess.Popen([MW, "watch", "-q", *watch_args, "--jsonl", str(out), "--port", str(port)])
    try:
        assert srv.stdout.readline().strip() == "listening"
        assert wait_for(lambda: out.exists() and '"start"' in out.read_text(), 20)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            talk(s, f"127.0.0.1:{port}")
        assert srv.wait(timeout=20) == 0
        if until is not None:
            assert wait_for(lambda: until(out.read_text()), 20)
        else:
            time.sleep(0.3)
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=30) == 0
        if srv.poll() is None:
            srv.kill()
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    return recs, srv.pid


def read_all(s) -> bytes:
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return data
        data += d


def kinds(recs):
    return [(r["direction"], r["kind"], r["id"], r["method"]) for r in recs if r["type"] == "mcp"]


def test_sse_response_in_many_chunks(tmp_path):
    def talk(s, hp):
        s.sendall(post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                        "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": 1}}}, hp))
        assert read_all(s).endswith(b"0\r\n\r\n")

    recs, _ = session(tmp_path, "sse-chunks", talk)
    assert kinds(recs) == [("client->server", "request", 7, "tools/call"),
                           ("server->client", "notification", None, "notifications/progress"),
                           ("server->client", "notification", None, "notifications/progress"),
                           ("server->client", "response", 7, "tools/call")]
    mcp = [r for r in recs if r["type"] == "mcp"]
    assert [r["params"]["progress"] for r in mcp[1:3]] == [1, 2]
    assert mcp[3]["paired"] and mcp[3]["result"]["content"][0]["text"] == "done"
    assert [r["http"]["sse_id"] for r in mcp[1:]] == ["0", "1", "2"]
    stats = recs[-1]
    assert stats["http"]["sse_comments"] == 2 and stats["mcp"]["duplicates"] == 4  # each end parsed it, recorded once
    assert [c["status"] for c in recs if c["type"] == "call"] == ["ok"]


def test_two_pipelined_requests_on_one_connection(tmp_path):
    def talk(s, hp):
        s.sendall(post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, hp) +
                  post({"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}, hp))  # one write, two requests
        assert read_all(s).count(b"HTTP/1.1 200") == 2

    recs, _ = session(tmp_path, "pipelined", talk)
    assert kinds(recs) == [("client->server", "request", 1, "tools/list"),
                           ("client->server", "request", 2, "prompts/list"),
                           ("server->client", "response", 1, "tools/list"),
                           ("server->client", "response", 2, "prompts/list")]
    assert all(r["paired"] for r in recs if r["type"] == "mcp" and r["kind"] == "response")
    assert len({r["session"] for r in recs if r["type"] == "mcp"}) == 1


def test_http_error_without_json_rpc_body_ends_the_call(tmp_path):
    def talk(s, hp):
        s.sendall(post({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                        "params": {"name": "x", "arguments": {}}}, hp))
        assert read_all(s).startswith(b"HTTP/1.1 500")

    recs, _ = session(tmp_path, "error", talk)
    assert kinds(recs) == [("client->server", "request", 5, "tools/call"), ("server->client", "error", 5, "tools/call")]
    err = [r for r in recs if r["type"] == "mcp"][1]
    assert err["error"] == {"http_status": 500, "body": "server broke"} and err["http"]["status"] == 500
    assert [c["status"] for c in recs if c["type"] == "call"] == ["error"]


def test_a_service_that_is_not_http_on_the_watched_port(tmp_path):
    def talk(s, hp):
        for line in (b"hello\n", b"not http at all\n", b"bye\n"):
            s.sendall(line)
            assert s.recv(100) == line

    recs, srv_pid = session(tmp_path, "echo", talk)
    assert not [r for r in recs if r["type"] in ("mcp", "session", "discovered", "call")]
    stats = recs[-1]
    assert stats["kernel"]["port_matched"] >= 6 and stats["kernel"]["io_skipped"] >= 6  # looked at, not sent
    assert stats["discovered"] == [] and stats["events"].get("io", 0) == 0


def test_a_malformed_status_line_erases_nothing(tmp_path):
    """A server that answers `HTTP/1.1 2²0 OK` (a status that passes
    str.isdigit(), not int()), and then a line that is not HTTP: every request
    and every answer is still recorded and paired, the malformed status said
    on its message, nothing counted as a decoder error."""
    def talk(s, hp):
        for i in (1, 2, 3):
            s.sendall(post({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                            "params": {"name": "x", "arguments": {}}}, hp))
            data = b""
            while not data.rstrip().endswith(b"}"):
                data += s.recv(65536)

    recs, _ = session(tmp_path, "bad-status", talk)
    assert kinds(recs) == [(d, k, i, "tools/call") for i in (1, 2, 3)
                           for d, k in (("client->server", "request"), ("server->client", "response"))]
    answers = [r for r in recs if r["type"] == "mcp" and r["kind"] == "response"]
    assert all(r["paired"] and r["http"]["status"] == 0 for r in answers)
    assert all(any("malformed HTTP status" in n for n in r["notes"]) for r in answers)
    assert [c["status"] for c in recs if c["type"] == "call"] == ["ok"] * 3
    stats = recs[-1]
    assert stats["stage_errors"] == {} and not [e for e in stats["errors"] if "Error" in e], stats["errors"]
    assert stats["http"]["bad_status"] >= 3


def test_an_http2_connection_is_reported_not_decoded(tmp_path):
    def talk(s, hp):
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        s.recv(100)
        s.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")  # SETTINGS ack: not sent up any more

    recs, _ = session(tmp_path, "h2", talk)
    notes = [r for r in recs if r["type"] == "transport"]
    assert len(notes) == 1 and "HTTP/2" in notes[0]["reason"]  # one connection, said once (both ends saw it)
    assert notes[0]["local"].startswith("127.0.0.1:") and notes[0]["remote"].startswith("127.0.0.1:")
    assert "PRI * HTTP/2.0" in notes[0]["preview"]
    assert not [r for r in recs if r["type"] == "mcp"]
    stats = recs[-1]
    assert stats["http"]["http2_connections"] == 1
