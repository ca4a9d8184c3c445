"""Stream reassembly, MCP decoding and redaction, one stage at a time (no kernel)."""
import json

from mcpwitness.decode.mcp import McpDecoder
from mcpwitness.decode.redact import Redactor
from mcpwitness.decode.streams import Reassembler
from mcpwitness.records import IoEvent, McpMessage, NonJson, SessionRecord

T = [0]


def io(data: bytes, direction="read", pid=10, fd=0, inode=100, kind="pipe", moved=None):
    T[0] += 1000
    return IoEvent("", T[0], pid, pid, 1, 0, "srv", 1, 1, pid, [], moved is not None, [], fd, direction, kind,
                   "read" if direction == "read" else "write", inode, 5, moved if moved is not None else len(data),
                   data)


def frames(events):
    r = Reassembler()
    out = []
    for e in events:
        out += r.feed(e)
    return out, r


def test_split_many_and_partial():
    msg = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    out, r = frames([io(msg[:5]), io(msg[5:20]), io(msg[20:] + b"\n" + msg + b"\n" + msg[:10])])
    assert [f.data for f in out] == [msg, msg]
    assert out[0].first_ktime_ns < out[0].ktime_ns
    rest = r.flush()
    assert len(rest) == 1 and rest[0].data == msg[:10] and not rest[0].complete


def test_blank_lines_skipped_and_streams_kept_apart():
    out, r = frames([io(b"\n\n{\"a\":1}\n"), io(b'{"b":', inode=200), io(b'{"c":3}\n'), io(b"2}\n", inode=200)])
    assert [f.data for f in out] == [b'{"a":1}', b'{"c":3}', b'{"b":2}']
    assert r.stats["blank"] == 2


def test_truncated_capture_is_marked():
    out, _ = frames([io(b'{"x":"' + b"a" * 10, moved=5000), io(b'"}\n')])
    assert out[0].truncated and "5000" in out[0].notes[0]


def test_a_cut_write_ends_its_line_and_spares_the_next_message():
    msg = b'{"jsonrpc":"2.0","id":2,"result":{}}'
    out, r = frames([io(b'{"jsonrp', moved=5000), io(msg + b"\n")])
    assert [f.data for f in out] == [b'{"jsonrp', msg]
    assert out[0].truncated and not out[0].complete and not out[1].truncated
    assert r.stats["cut"] == 1


def test_an_oversized_line_is_cut_once_and_the_rest_dropped_up_to_its_newline():
    r = Reassembler(max_frame=100)
    msg = b'{"jsonrpc":"2.0","id":3,"result":{}}'
    out = []
    for _ in range(10):  # a 500-byte line in 50-byte writes, then a message in the same write as its end
        out += r.feed(io(b"x" * 50))
    out += r.feed(io(b"y" * 20 + b"\n" + msg + b"\n"))
    assert [len(f.data) for f in out] == [150, len(msg)] and out[1].data == msg
    assert out[0].truncated and "cut here" in out[0].notes[-1]
    assert r.stats["oversized"] == 1 and r.stats["skipped_bytes"] == 350 + 20
    assert not r.skipping and not r.pending


def run(lines, directions=None, pid=10):
    d = McpDecoder(Redactor(), identity=lambda pid: ("/bin/srv", ["srv"]))
    r = Reassembler()
    recs = []
    for i, line in enumerate(lines):
        direction = (directions or [])[i] if directions else ("read" if i % 2 == 0 else "write")
        for f in r.feed(io(line + b"\n", direction, pid=pid, inode=100 if direction == "read" else 101)):
            recs += d.feed(f)
    return recs, d


def msgs(recs):
    return [r for r in recs if isinstance(r, McpMessage)]


def test_handshake_era_session_identity_and_pairing():
    lines = [
        b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        b'"capabilities":{"roots":{}},"clientInfo":{"name":"cli","version":"1"}}}',
        b'{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},'
        b'"serverInfo":{"name":"srv","version":"2"}}}',
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
        b'{"jsonrpc":"2.0","id":"a","method":"roots/list"}',          # server -> client request
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{}}}',
        b'{"jsonrpc":"2.0","id":"a","result":{"roots":[]}}',          # client answers it
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}',
    ]
    dirs = ["read", "write", "read", "write", "read", "read", "write"]
    recs, d = run(lines, dirs)
    m = msgs(recs)
    assert [(x.direction, x.kind, x.id, x.method, x.paired) for x in m] == [
        ("client->server", "request", 0, "initialize", None),
        ("server->client", "response", 0, "initialize", True),
        ("client->server", "notification", None, "notifications/initialized", None),
        ("server->client", "request", "a", "roots/list", None),
        ("client->server", "request", 1, "tools/call", None),
        ("client->server", "response", "a", "roots/list", True),
        ("server->client", "error", 1, "tools/call", True),
    ]
    ident = [r for r in recs if isinstance(r, SessionRecord) and r.event == "identified"][-1]
    assert ident.era == "handshake" and ident.protocol_version == "2025-11-25" and ident.role == "server"
    assert ident.client_info == {"name": "cli", "version": "1"} and ident.server_info["name"] == "srv"
    assert ident.client_capabilities == {"roots": {}} and ident.server_capabilities == {"tools": {}}
    assert d.stats["unpaired_responses"] == 0


def test_stateless_era_meta_identity():
    meta = b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' \
           b'"io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1"},' \
           b'"io.modelcontextprotocol/clientCapabilities":{}}'
    lines = [b'{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{' + meta + b'}}',
             b'{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{},'
             b'"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":""}}}}']
    recs, _ = run(lines)
    ident = [r for r in recs if isinstance(r, SessionRecord) and r.event == "identified"]
    assert ident[0].era == "stateless" and ident[0].client_info == {"name": "mcp", "version": "0.1"}
    assert ident[-1].server_info == {"name": "s", "version": ""}
    assert msgs(recs)[0].protocol_version == "2026-07-28"


def test_batch_ids_are_per_session_and_latency():
    batch = b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]'
    resp = b'[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}]'
    recs, _ = run([batch, resp])
    m = msgs(recs)
    assert [(x.kind, x.id, x.method, x.batch) for x in m] == [
        ("request", 1, "tools/list", 0), ("request", 2, "ping", 1),
        ("response", 2, "ping", 0), ("response", 1, "tools/list", 1)]
    assert all(x.latency_ms is not None and x.latency_ms > 0 for x in m[2:])


def test_string_and_number_ids_differ():
    recs, d = run([b'{"jsonrpc":"2.0","id":1,"method":"ping"}', b'{"jsonrpc":"2.0","id":"1","result":{}}'])
    assert not msgs(recs)[1].paired and d.stats["unpaired_responses"] == 1


def test_garbage_is_kept_and_counted():
    recs, d = run([b"\xff\xfe binary \x00 garbage", b"Traceback (most recent call last):",
                   b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"caf\xe9"}}', b'{"no":"rpc"}', b"[]"])
    nj = [r for r in recs if isinstance(r, NonJson)]
    assert [n.reason for n in nj] == ["invalid UTF-8", nj[1].reason] and nj[1].reason.startswith("not JSON")
    m = msgs(recs)
    assert m[0].method == "ping" and "invalid UTF-8 replaced" in m[0].notes[0]
    assert [x.kind for x in m[1:]] == ["invalid", "invalid"]
    assert d.stats["invalid_utf8"] == 2 and d.stats["nonjson"] == 2


def test_secrets_are_redacted_before_output():
    line = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "fetch", "arguments": {"url": "https://u:hunter2@h/x", "headers": {"Authorization": "Bearer abc.def.ghi"},
                                       "note": "key AKIAABCDEFGHIJKLMNOP and sk-ant-REDACTME0123456789abcdef"}}}).encode()
    recs, d = run([line])
    out = json.dumps(msgs(recs)[0].params)
    for secret in ("hunter2", "abc.def.ghi", "AKIAABCDEFGHIJKLMNOP", "sk-ant-REDACTME"):
        assert secret not in out
    assert "[REDACTED:aws-access-key-id]" in out and d.redactor.count == 4
    off = Redactor(enabled=False)
    assert off.value({"password": "x"}) == {"password": "x"}
    custom = Redactor(extra_keys={"X-Internal"}, extra_patterns=[("ticket", r"TCK-\d+")])
    assert custom.value({"x_internal": "v", "t": "see TCK-1234"}) == {"x_internal": "[REDACTED]",
                                                                      "t": "see [REDACTED:ticket]"}


def test_pipe_pairs_make_sessions_and_crash_flush_ends_them():
    d = McpDecoder(Redactor(), identity=lambda pid: (None, None))
    r = Reassembler()
    recs = []
    for e in [io(b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}\n', "read", fd=6, inode=1),
              io(b'{"jsonrpc":"2.0","id":1,"resu', "write", fd=7, inode=2)]:
        for f in r.feed(e):
            recs += d.feed(f)
    for f in r.flush(10):  # the server died mid-message
        recs += d.feed(f)
    recs += d.end_process(10, 10**9)
    m = msgs(recs)
    assert len(m) == 1 and m[0].method == "tools/call"
    cut = recs[-2]
    assert isinstance(cut, NonJson) and cut.reason.startswith("incomplete") and cut.session == m[0].session
    assert cut.size == len(b'{"jsonrpc":"2.0","id":1,"resu') and cut.direction == "server->client"
    assert isinstance(recs[-1], SessionRecord) and recs[-1].event == "end" and recs[-1].unanswered == 1


def test_multi_round_trip_input_required_is_linked():
    meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
    ask = ('{"jsonrpc":"2.0","id":%d,"result":{"resultType":"input_required","requestState":"%s",'
           '"inputRequests":{"confirm":{"method":"elicitation/create","params":{"message":"Really?",'
           '"requestedSchema":{"type":"object","properties":{}}}}}}}')
    lines = [
        ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"rm","arguments":{},%s}}' % meta).encode(),
        (ask % (7, "st-1")).encode(),
        ('{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"rm","arguments":{},"requestState":"st-1",'
         '"inputResponses":{"confirm":{"action":"accept","content":{}}},%s}}' % meta).encode(),
        (ask % (8, "st-2")).encode(),
        ('{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"rm","arguments":{},"requestState":"st-2",'
         '"inputResponses":{"confirm":{"action":"accept","content":{}}},%s}}' % meta).encode(),
        b'{"jsonrpc":"2.0","id":9,"result":{"resultType":"complete","content":[]}}',
        ('{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"rm","requestState":"forged",%s}}'
         % meta).encode(),
    ]
    recs, _ = run(lines)
    m = msgs(recs)
    assert m[1].result_type == "input_required" and m[1].input_requests == {"confirm": "elicitation/create"}
    assert m[2].continues == {"id": 7, "round": 1}
    assert m[4].continues == {"id": 7, "round": 2}
    assert m[5].result_type == "complete" and m[5].input_requests is None
    assert m[6].continues is None  # a state the server never handed out links to nothing


def test_every_builtin_pattern_passes_the_hint_gate():
    """Strings skip the regex unless they contain one of redact.HINTS: a new
    pattern needs a hint, or its secrets would go through unredacted."""
    from mcpwitness.decode.redact import PATTERNS
    samples = {"private-key": "-----BEGIN RSA PRIVATE KEY-----abc", "bearer": "Authorization: Bearer abcdefgh12345",
               "basic-auth": "Basic dXNlcjpwYXNzd29yZA==", "jwt": "eyJhbGciOiJI.eyJzdWIiOiIx.sflKxwRJSMeKKF2QT4",
               "aws-access-key-id": "id AKIAABCDEFGHIJKLMNOP", "github-token": "ghp_" + "a" * 36,
               "slack-token": "xoxb-1234567890-abc", "anthropic-key": "sk-ant-" + "a" * 24,
               "openai-key": "sk-" + "a" * 24, "google-api-key": "AIza" + "a" * 35, "stripe-key": "sk_live_" + "a" * 20,
               "url-password": "https://bob:hunter2@host/x", "pem-block": "-----BEGIN CERTIFICATE-----\nMIIB\n",
               "gitlab-token": "glpat-" + "a1" * 10, "npm-token": "npm_" + "a" * 36,
               "slack-webhook": "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX",
               "azure-sas": "https://a.blob.core.windows.net/c?sv=1&sig=abcdefghijklmnop%3D"}
    r = Redactor()
    for name, _ in PATTERNS:
        assert f"[REDACTED:{name}]" in r.text(samples[name]), name
    assert r.text("an ordinary sentence with words") == "an ordinary sentence with words"
