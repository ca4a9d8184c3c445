"""http.py on recorded bytes (no kernel): framing, bodies, SSE, sessions."""
import gzip
import json

from mcpwitness.decode.http import HttpReassembler, conn_key
from mcpwitness.decode.mcp import McpDecoder
from mcpwitness.decode.streams import Frame
from mcpwitness.records import IoEvent, SockEvent, TransportNotice

T = [1000]


def io(data, direction="read", pid=10, inode=77, moved=None, kind="tcp"):
    T[0] += 1000
    return IoEvent("", T[0], pid, pid, 1, 0, "srv", 0, 0, pid, [], False, [], 5, direction, kind, "read",
                   inode, 9, len(data) if moved is None else moved, data)


def sock(pid=10, inode=77, local=("127.0.0.1", 8000), remote=("127.0.0.1", 40000)):
    return SockEvent("", 0, pid, pid, 1, 0, "srv", 0, 0, pid, [], False, [], 5, inode, "inet", local[0], local[1],
                     remote[0], remote[1], 1, 3, 4026531840, "capture", 0)


def post(obj, extra=b""):
    body = json.dumps(obj).encode()
    return b"POST /mcp HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)


def resp(obj, extra=b"", status=b"200 OK"):
    body = json.dumps(obj).encode()
    return b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n%s" % (status, extra, len(body), body)


def feed_all(events, h=None):
    h = h or HttpReassembler()
    out = []
    for ev in events:
        if isinstance(ev, SockEvent):
            h.sock(ev)
        else:
            out += h.feed(ev)
    return h, out


def frames(out):
    return [f for f in out if isinstance(f, Frame)]


def test_request_split_anywhere_and_response_gzip():
    req = post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    body = gzip.compress(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}).encode())
    r = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    for cut in (3, 20, len(req) - 2):
        _, out = feed_all([sock(), io(req[:cut]), io(req[cut:]), io(r[:cut], "write"), io(r[cut:], "write")])
        f = frames(out)
        assert [json.loads(x.data)["id"] for x in f] == [1, 1]
        assert [x.flow for x in f] == ["client->server", "server->client"]
        assert f[0].http.method == "POST" and f[1].http.status == 200 and f[0].offset == req.index(b"{")


def test_chunked_with_extensions_and_trailers_and_100_continue():
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "result": {}}).encode()
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]) for i in range(0, len(body), 5))
    r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + \
        b"0\r\nX-Trailer: y\r\n\r\n"
    _, out = feed_all([io(post({"jsonrpc": "2.0", "id": 2, "method": "ping"})), io(r, "write")])
    assert [json.loads(f.data) for f in frames(out)][1] == {"jsonrpc": "2.0", "id": 2, "result": {}}


def test_keep_alive_many_exchanges_in_one_segment_and_head_has_no_body():
    reqs = post({"jsonrpc": "2.0", "id": 1, "method": "a"}) + b"HEAD /mcp HTTP/1.1\r\nHost: x\r\n\r\n" + \
        post({"jsonrpc": "2.0", "id": 3, "method": "c"})
    resps = resp({"jsonrpc": "2.0", "id": 1, "result": {}}) + b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n" + \
        resp({"jsonrpc": "2.0", "id": 3, "result": {}})
    _, out = feed_all([io(reqs), io(resps, "write")])
    assert [json.loads(f.data)["id"] for f in frames(out)] == [1, 3, 1, 3]


def test_sse_events_comments_multiline_and_crlf():
    r = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
         b": ping\r\n\r\nevent: message\r\nid: 9\r\ndata: {\"jsonrpc\": \"2.0\",\r\ndata: \"id\": 4, \"result\": {}}\r\n\r\n"
         b"retry: 100\n\n")
    h, out = feed_all([io(post({"jsonrpc": "2.0", "id": 4, "method": "x"})), io(r, "write")])
    f = frames(out)[1]
    assert json.loads(f.data) == {"jsonrpc": "2.0", "id": 4, "result": {}}
    assert f.http.sse_event == "message" and f.http.sse_id == "9"
    assert h.stats["sse_comments"] == 1 and h.stats["sse_events"] == 2


def test_close_delimited_body_ends_with_the_process():
    h, out = feed_all([io(post({"jsonrpc": "2.0", "id": 5, "method": "x"})),
                       io(b"HTTP/1.0 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",", "write"),
                       io(b"\"id\":5,\"result\":{}}", "write")])
    assert len(frames(out)) == 1
    done = h.flush(10)
    assert json.loads(done[0].data)["id"] == 5 and done[0].complete


def test_not_http_http2_and_upgrade_are_reported_and_stopped():
    stopped = []
    h = HttpReassembler(stop_stream=lambda ino, dev: stopped.append((ino, dev)))
    _, out = feed_all([sock(inode=1), io(b"SSH-2.0-OpenSSH_9.2\r\n", inode=1)], h)
    _, out2 = feed_all([sock(inode=2, remote=("127.0.0.1", 40002)), io(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", inode=2)], h)
    _, out3 = feed_all([io(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", inode=3),
                        io(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "write", inode=3)], h)
    reasons = [n.reason for n in out + out2 + out3 if isinstance(n, TransportNotice)]
    assert reasons[0] == "not HTTP/1.x" and "HTTP/2" in reasons[1] and "websocket" in reasons[2]
    assert [s[0] for s in stopped] == [1, 2, 3]
    assert h.stats["not_http"] == h.stats["http2_connections"] == h.stats["upgraded"] == 1
    assert h.feed(io(post({"jsonrpc": "2.0", "id": 1, "method": "x"}), inode=1)) == []  # dead stays dead


def test_gap_inside_a_body_and_resync_at_the_next_message():
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"t": "x" * 100}}).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    _, out = feed_all([io(post({"jsonrpc": "2.0", "id": 1, "method": "x"})),
                       io(head + body[:50], "write", moved=len(head) + len(body))])  # the rest not captured
    f = frames(out)
    assert len(f) == 2 and f[1].truncated and "not captured" in f[1].notes[0]
    # a gap in the middle of a head: lost until a message starts a syscall
    h = HttpReassembler()
    out = h.feed(io(b"POST /mcp HTTP/1.1\r\nCont", moved=500))
    out += h.feed(io(b"garbage after the gap"))
    out += h.feed(io(post({"jsonrpc": "2.0", "id": 2, "method": "y"})))
    assert [json.loads(f.data)["id"] for f in frames(out)] == [2] and h.stats["resyncs"] == 1
    assert "not captured" in frames(out)[0].notes[0]


def test_both_ends_of_a_loopback_connection_name_it_alike():
    a = sock(pid=1, inode=5, local=("127.0.0.1", 8000), remote=("127.0.0.1", 40000))
    b = sock(pid=2, inode=6, local=("::ffff:127.0.0.1", 40000), remote=("::ffff:127.0.0.1", 8000))
    assert conn_key(a) == conn_key(b)
    c = sock(pid=2, inode=6, local=("127.0.0.1", 40000), remote=("127.0.0.1", 8001))
    assert conn_key(a) != conn_key(c)


def test_session_id_joins_connections_and_an_http_error_answers_its_request():
    h = HttpReassembler()
    dec = McpDecoder(identity=lambda pid: ("/srv", ["srv"]), namespaces=lambda pid: {})
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "clientInfo": {"name": "c"}, "capabilities": {}}}
    evs = [sock(inode=1), io(post(init), inode=1),
           io(resp({"jsonrpc": "2.0", "id": 1, "result": {"serverInfo": {"name": "s"}}},
                    b"Mcp-Session-Id: abc\r\n"), "write", inode=1),
           sock(inode=2, remote=("127.0.0.1", 40001)),
           io(post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "t"}},
                   b"Mcp-Session-Id: abc\r\n"), inode=2),
           io(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno such s", "write", inode=2)]
    recs = []
    for ev in evs:
        for f in (h.sock(ev) if isinstance(ev, SockEvent) else h.feed(ev)) or []:
            recs += dec.feed(f)
    mcp = [r for r in recs if type(r).__name__ == "McpMessage"]
    assert len({m.session for m in mcp}) == 1
    assert [(m.kind, m.id) for m in mcp] == [("request", 1), ("response", 1), ("request", 2), ("error", 2)]
    assert mcp[3].error == {"http_status": 404, "body": "no such s"} and mcp[3].paired


def test_http_that_is_not_mcp_is_counted_not_decoded_and_let_go():
    stopped = []
    h = HttpReassembler(stop_stream=lambda ino, dev: stopped.append(ino))
    evs = []
    for i in range(3):  # a tool's own REST calls: JSON, but no JSON-RPC
        evs += [io(b"GET /api/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i, "write"),
                io(resp({"items": [i], "ok": True}), "read")]
    _, out = feed_all(evs, h)
    assert out == [] and h.stats["non_mcp_bodies"] == 3 and h.stats["non_mcp_connections"] == 1
    assert stopped == [77]
    # an MCP connection with a plain JSON error body still answers its request
    dec = McpDecoder(identity=lambda pid: ("/srv", ["srv"]), namespaces=lambda pid: {})
    recs = []
    for f in feed_all([io(post({"jsonrpc": "2.0", "id": 9, "method": "tools/call"}), inode=5),
                       io(resp({"detail": "Not Found"}, status=b"404 Not Found"), "write", inode=5)])[1]:
        recs += dec.feed(f)
    err = [r for r in recs if type(r).__name__ == "McpMessage"][-1]
    assert (err.kind, err.id, err.error["http_status"]) == ("error", 9, 404)


def test_an_endless_sse_event_is_cut_and_the_stream_goes_on():
    h = HttpReassembler(max_body=1000)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    big = b"data: {\"jsonrpc\": \"2.0\", \"method\": \"n\", \"params\": {\"x\": \"" + b"y" * 3000
    ok = b"data: {\"jsonrpc\": \"2.0\", \"method\": \"after\"}\n\n"
    evs = [io(post({"jsonrpc": "2.0", "id": 1, "method": "x"})), io(head, "write")]
    evs += [io(big[i:i + 500], "write") for i in range(0, len(big), 500)]
    evs += [io(b"\"}}\n\n" + ok, "write")]
    _, out = feed_all(evs, h)
    f = frames(out)
    assert len(f) == 3 and f[1].truncated and "cut here" in f[1].notes[-1]
    assert json.loads(f[2].data)["method"] == "after" and not f[2].truncated


def test_a_tls_stream_tied_to_its_socket_late_stays_one_session():
    """Plaintext before the SSL object's socket was known goes under this
    process's own view; once known, the connection's key joins it."""
    h = HttpReassembler()
    dec = McpDecoder(identity=lambda pid: ("/c", ["c"]), namespaces=lambda pid: {})
    recs = []

    def tls(data, direction, sockino):
        ev = io(data, direction, pid=3, inode=0xABC, kind="tls")
        ev.dev = sockino
        for f in h.feed(ev):
            recs.extend(dec.feed(f))

    tls(post({"jsonrpc": "2.0", "id": 1, "method": "server/discover"}), "write", 0)  # not tied yet
    h.sock(sock(pid=3, inode=99, local=("127.0.0.1", 40000), remote=("127.0.0.1", 8443)))
    tls(resp({"jsonrpc": "2.0", "id": 1, "result": {}}), "read", 99)
    tls(post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}), "write", 99)
    tls(resp({"jsonrpc": "2.0", "id": 2, "result": {}}), "read", 99)
    mcp = [r for r in recs if type(r).__name__ == "McpMessage"]
    assert len(mcp) == 4 and len({m.session for m in mcp}) == 1 and all(m.paired for m in mcp if m.kind == "response")
    assert dec.stats["sessions"] == 1

