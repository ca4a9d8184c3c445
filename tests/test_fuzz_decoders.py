"""Fuzzing the decode stages with hypothesis, no kernel: the bytes a tracked
process could write, cut into syscalls any way, mutated, fed through the
pipeline (streams, HTTP, MCP, audit) as IoEvents.

Invariants:
- no stage raises on any input (the pipeline would catch it and count it in
  `stage_errors`; here that count must stay 0);
- valid input cut into syscalls any way decodes to the same messages as
  in one piece;
- a malformed message costs itself, not the messages around it.

The budget here is small (the suite runs it every time); scripts/fuzz runs
the same properties with a larger one."""
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpwitness.decode.pipeline import Pipeline
from mcpwitness.records import IoEvent, McpMessage, SockEvent

EXAMPLES = int(os.environ.get("MW_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def pipeline() -> Pipeline:
    return Pipeline(identity=lambda pid: ("/usr/bin/srv", ["srv"]))


def io(t, data, direction, kind="tcp", pid=10, inode=77, fd=5):
    return IoEvent("", t, pid, pid, 1, 0, "srv", 0, 0, pid, [], False, [], fd, direction, kind,
                   "read" if direction == "read" else "write", inode, 9, len(data), data)


def sock(pid=10, inode=77):
    return SockEvent("", 1, pid, pid, 1, 0, "srv", 0, 0, pid, [], False, [], 5, inode, "inet", "127.0.0.1", 8000,
                     "127.0.0.1", 40000, 1, 3, 4026531840, "capture", 0)


def rpc(i: int) -> tuple[bytes, bytes]:
    req = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                      "params": {"name": "read", "arguments": {"path": f"/srv/{i}.txt"}}}).encode()
    resp = json.dumps({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": "x" * i}]}}).encode()
    return req, resp


def http_conversation(n: int, status: bytes = b"200 OK") -> list[tuple[str, bytes]]:
    out = []
    for i in range(1, n + 1):
        req, resp = rpc(i)
        out.append(("read", b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(req), req)))
        out.append(("write", b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(resp), resp)))
    return out


def chunked(data: bytes, size: int = 17) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\nX-Trailer: 1\r\n\r\n"


def http_variants(n: int) -> list[tuple[str, bytes]]:
    """The same calls in every framing the reassembler knows: content-length,
    chunked, gzip, SSE (the 2025 Streamable HTTP stream), a 100-continue,
    and a session ended by DELETE."""
    import gzip
    out = []
    for i in range(1, n + 1):
        req, resp = rpc(i)
        style = i % 4
        out.append(("read", b"POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: s1\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(req), req)))
        if style == 0:
            out.append(("write", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(resp), resp)))
        elif style == 1:
            out.append(("write", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(resp)))
        elif style == 2:
            z = gzip.compress(resp)
            out.append(("write", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(z), z)))
        else:
            sse = b"event: message\r\nid: %d\r\ndata: %s\r\n\r\n: keepalive\r\n\r\n" % (i, resp)
            out.append(("write", b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n" + chunked(sse, 40)))
    out.append(("read", b"DELETE /mcp HTTP/1.1\r\nMcp-Session-Id: s1\r\n\r\n"))
    out.append(("write", b"HTTP/1.1 204 No Content\r\n\r\n"))
    return out


def stdio_conversation(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(1, n + 1):
        req, resp = rpc(i)
        out += [("read", req + b"\n"), ("write", resp + b"\n")]
    return out


def run(messages, cuts, kind="tcp"):
    """Feed each message cut at the given sizes (cycled); returns (pipeline, records)."""
    p = pipeline()
    recs = []
    t = 1000
    if kind == "tcp":
        recs += p.events([sock()])
    cuts = cuts or [1 << 20]
    k = 0
    for direction, data in messages:
        pos = 0
        while pos < len(data):
            n = max(1, cuts[k % len(cuts)])
            k += 1
            t += 1000
            recs += p.events([io(t, data[pos:pos + n], direction, kind=kind,
                                 inode=77 if kind == "tcp" else (78 if direction == "read" else 79))])
            pos += n
    recs += p.finish(t + 10_000_000_000)
    return p, recs


def messages(recs):
    return [(r.kind, r.direction, r.id, r.method) for r in recs if type(r) is McpMessage]


def cut_any_way(conv, cuts, n, kind="tcp"):
    """conv cut at `cuts` decodes to the messages conv gives in one piece: its 2n messages."""
    p, recs = run(conv, cuts, kind=kind)
    _, whole = run(conv, [], kind=kind)
    assert not p.stage_errors, p.errors
    assert messages(recs) == messages(whole)
    assert len(messages(whole)) == 2 * n


@FUZZ
@given(cuts=st.lists(st.integers(1, 200), min_size=1, max_size=30), n=st.integers(1, 4))
def test_http_cut_any_way_decodes_the_same(cuts, n):
    cut_any_way(http_conversation(n), cuts, n)


@FUZZ
@given(cuts=st.lists(st.integers(1, 200), min_size=1, max_size=30), n=st.integers(1, 4))
def test_stdio_cut_any_way_decodes_the_same(cuts, n):
    cut_any_way(stdio_conversation(n), cuts, n, kind="pipe")


MUTATION = st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 10_000),
                     st.binary(min_size=1, max_size=8))


def mutate(conv, muts):
    conv = [list(x) for x in conv]
    for op, pos, blob in muts:
        m = conv[pos % len(conv)]
        data = m[1]
        i = (pos // len(conv)) % (len(data) + 1)
        if op == "replace":
            data = data[:i] + blob + data[i + len(blob):]
        elif op == "insert":
            data = data[:i] + blob + data[i:]
        else:
            data = data[:i] + data[i + len(blob):]
        m[1] = data
    return [tuple(x) for x in conv]


@FUZZ
@given(cuts=st.lists(st.integers(1, 200), min_size=1, max_size=30), n=st.integers(1, 8))
def test_every_http_framing_cut_any_way_decodes_the_same(cuts, n):
    cut_any_way(http_variants(n), cuts, n)


@FUZZ
@given(muts=st.lists(MUTATION, min_size=1, max_size=12), cuts=st.lists(st.integers(1, 300), max_size=10),
       kind=st.sampled_from(["tcp", "variants", "pipe"]))
def test_mutated_bytes_never_break_a_stage(muts, cuts, kind):
    base = {"tcp": lambda: http_conversation(3), "variants": lambda: http_variants(5),
            "pipe": lambda: stdio_conversation(3)}[kind]()
    conv = mutate(base, muts)
    p, _ = run(conv, cuts, kind="pipe" if kind == "pipe" else "tcp")
    assert not p.stage_errors, p.errors


@FUZZ
@given(junk=st.binary(max_size=400), cuts=st.lists(st.integers(1, 100), max_size=10),
       kind=st.sampled_from(["tcp", "pipe"]), direction=st.sampled_from(["read", "write"]))
def test_garbage_never_breaks_a_stage(junk, cuts, kind, direction):
    p, _ = run([(direction, junk)], cuts, kind=kind)
    assert not p.stage_errors, p.errors


def test_a_malformed_status_costs_nothing():
    """The hardening issue's case: a server answering `HTTP/1.1 2²0 OK` to three
    tools/call POSTs. Every request and every answer is still recorded (the
    status said to be malformed), and the calls are paired."""
    conv = http_conversation(3, status="2²0 OK".encode())
    p, recs = run(conv, [])
    assert not p.stage_errors, p.errors
    msgs = [r for r in recs if type(r) is McpMessage]
    assert [(m.kind, m.id) for m in msgs] == [("request", 1), ("response", 1), ("request", 2), ("response", 2),
                                              ("request", 3), ("response", 3)]
    assert all(m.paired for m in msgs if m.kind == "response")
    assert all(any("malformed HTTP status" in n for n in m.notes) for m in msgs if m.kind == "response")
    assert p.http.stats["bad_status"] == 3
    calls = [r for r in recs if type(r).__name__ == "CallRecord"]
    assert len(calls) == 3


def test_a_malformed_message_costs_only_itself():
    """After MCP was seen on a connection, a message whose start line is not
    HTTP is skipped and said; the messages after it on the same connection
    still decode."""
    conv = http_conversation(3)
    conv[3] = ("write", b"GARBAGE LINE\r\nContent-Length: 2\r\n\r\n{}")
    p, recs = run(conv, [])
    assert not p.stage_errors, p.errors
    msgs = [(m.kind, m.id) for m in recs if type(m) is McpMessage]
    assert ("request", 3) in msgs and ("response", 3) in msgs and ("response", 2) not in msgs
    assert p.http.stats["bad_messages"] == 1


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                    max_leaves=12)
KEYS = ["jsonrpc", "id", "method", "params", "result", "error", "_meta", "name", "arguments", "uri", "requestId",
        "protocolVersion", "clientInfo", "capabilities", "resultType", "inputRequests", "requestState",
        "inputResponses", "roots", "isError", "content", "io.modelcontextprotocol/protocolVersion"]
METHODS = ["initialize", "server/discover", "tools/call", "resources/read", "notifications/cancelled", "roots/list",
           "sampling/createMessage", "notifications/initialized", "ping"]


def rpc_like():
    """JSON-RPC-shaped objects whose fields hold anything: the keys the MCP
    decoder reads, with values of every JSON type, nested."""
    value = JSON | st.sampled_from(METHODS) | st.just("2.0")
    obj = st.dictionaries(st.sampled_from(KEYS), st.deferred(lambda: value | st.dictionaries(
        st.sampled_from(KEYS), value, max_size=5)), max_size=8)
    return st.one_of(obj, st.lists(obj, max_size=3), JSON)


@FUZZ
@given(docs=st.lists(rpc_like(), min_size=1, max_size=8), kind=st.sampled_from(["tcp", "pipe"]))
def test_any_json_never_breaks_the_mcp_decoder_or_the_auditor(docs, kind):
    """Whatever JSON a peer sends (ids, methods, params of any type, batches,
    era metadata), every stage keeps going, and each document is recorded."""
    lines = [json.dumps(d).encode() for d in docs]
    if kind == "pipe":
        conv = [("read" if i % 2 == 0 else "write", x + b"\n") for i, x in enumerate(lines)]
    else:
        conv = [("read", b"POST /mcp HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(x), x)) if i % 2 == 0 else
                ("write", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(x), x))
                for i, x in enumerate(lines)]
    p, recs = run(conv, [], kind=kind)
    assert not p.stage_errors, p.errors
    assert not p.audit.stats["errors"], p.audit.errors


@FUZZ
@given(raw=st.lists(st.binary(min_size=512, max_size=512), min_size=1, max_size=12),
       types=st.lists(st.integers(0, 12), min_size=1, max_size=12), flags=st.integers(0, 0x1F))
def test_arbitrary_ring_records_never_break_a_stage(raw, types, flags):
    """Ring records with any bytes (a newer object, a kernel bug): the event
    decoder builds what it can and counts the rest; nothing raises, in it or
    in the stages after it."""
    from mcpwitness.kernel.abi import R_FLAGS, R_SEQ, R_TYPE, RECORD
    recs = []
    for i, b in enumerate(raw):
        r = list(RECORD.unpack(b))
        r[R_TYPE], r[R_SEQ], r[R_FLAGS] = types[i % len(types)], 0 if i % 3 else r[R_SEQ] & 3, flags | 1
        recs.append(tuple(r))
    p = pipeline()
    p.feed(recs)
    p.finish(1 << 62)
    assert not p.stage_errors, p.errors
    d = p.decoder.stats
    assert d["records"] == len(recs)


# --- the configuration parsers: any text gets a clear refusal, never a crash ------------------

POLICY_WORDS = ["policies:", "- name: p", "name:", "match:", "exe:", "cmdline:", "cgroup:", "container:",
                "mode:", "enforce", "monitor", "files:", "network:", "exec:", "default:", "deny", "allow",
                "allow:", "deny:", "[", "]", "{", "}", ",", '"/tmp/**"', '"127.0.0.1:80"', '"[::1]:1-65535"',
                '"*:443"', '"10.0.0.0/8"', "sh", "curl", "-", ":", "  ", "    ", "\n", "\t", "*", "**", "null", "1",
                "-3", "1e9", '"x"', "&a", "*a", "!!python/object:os.system", "%", "'", '"']
RULE_WORDS = ["- rule: r", "- macro: m", "- list: l", "- detector: rate", "condition:", "output:", "priority:",
              "warning", "critical", "items:", "[", "]", "exceptions:", "- name: e", "fields:", "values:",
              "enabled:", "false", "once_per:", "call", "evt.type", "type", "=", "!=", "in", "and", "or", "not",
              "(", ")", "path", "startswith", "contains", "glob", "pmatch", "exists", "open", "/etc",
              '"x"', "%path", "%call.id", "m", "l", "rate.client.burst", "window:", "10s", "-1", "\n", "  ", "    ",
              ":", ",", "{", "}", "&a", "*a", "!!binary", "'"]


def yamlish(words):
    return st.lists(st.sampled_from(words) | st.text(max_size=6), max_size=40).map(" ".join)


@FUZZ
@given(text=yamlish(POLICY_WORDS))
def test_any_policy_text_is_parsed_or_refused_with_a_reason(text):
    from mcpwitness.policy import PolicyError, parse
    try:
        parse(text.replace(" \n ", "\n"), "<fuzz>")
    except PolicyError as e:
        assert str(e).startswith("<fuzz>"), e  # where, then why


@FUZZ
@given(text=yamlish(RULE_WORDS))
def test_any_rule_text_is_loaded_or_refused_with_a_reason(text, tmp_path_factory):
    from mcpwitness.detect import rules
    f = tmp_path_factory.mktemp("rules") / "r.yaml"
    f.write_text(text.replace(" \n ", "\n"))
    try:
        rules.load([str(f)])
    except rules.RuleError as e:
        assert str(e).startswith(str(f)), e


VALID_POLICY = """policies:
  - name: p
    match: {exe: ["/usr/bin/python3*"], cmdline: ["*server*"]}
    mode: enforce
    files:
      default: deny
      allow: ["/tmp/**", "/usr/**"]
      deny: ["/etc/shadow", "~/.ssh/**"]
    network:
      allow: ["127.0.0.1:8000-8100", "[::1]:1-65535", "10.0.0.0/8"]
      deny: ["*:25"]
    exec:
      deny: [sh, curl]
  - name: q
    mode: monitor
    network: {default: deny}
"""

VALID_RULES = """- list: shells
  items: [sh, bash]
- macro: opened
  condition: type = open and path startswith /etc
- rule: r1
  condition: opened and not comm in (shells)
  output: "%path by %comm (%attribution.quality)"
  priority: warning
  once_per: call
  exceptions:
    - name: hosts
      fields: [path]
      values: [[/etc/hosts]]
- rule: r2
  condition: type = mcp and rate.client.burst = true
  output: burst %rate.client.count
  priority: critical
- detector: rate
  window: 10s
  factor: 3
"""

LINE_OPS = st.tuples(st.sampled_from(["delete", "duplicate", "indent", "dedent", "token", "swap"]),
                     st.integers(0, 1000), st.sampled_from(POLICY_WORDS + RULE_WORDS))


def mutate_lines(text, ops):
    lines = text.splitlines()
    for op, pos, word in ops:
        if not lines:
            break
        i = pos % len(lines)
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        elif op == "swap":
            j = (pos // 7) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        else:
            toks = lines[i].split(" ")
            toks[(pos // 3) % len(toks)] = word
            lines[i] = " ".join(toks)
    return "\n".join(lines) + "\n"


@FUZZ
@given(ops=st.lists(LINE_OPS, min_size=1, max_size=6))
def test_a_damaged_policy_is_parsed_or_refused_with_a_reason(ops):
    from mcpwitness.policy import PolicyError, parse
    try:
        parse(mutate_lines(VALID_POLICY, ops), "<fuzz>")
    except PolicyError as e:
        assert str(e).startswith("<fuzz>"), e


@FUZZ
@given(ops=st.lists(LINE_OPS, min_size=1, max_size=6))
def test_damaged_rules_are_loaded_or_refused_with_a_reason(ops, tmp_path_factory):
    from mcpwitness.detect import rules
    f = tmp_path_factory.mktemp("rules") / "r.yaml"
    f.write_text(mutate_lines(VALID_RULES, ops))
    try:
        rules.load([str(f)])
    except rules.RuleError as e:
        assert str(e).startswith(str(f)), e


def test_an_exception_without_values_excepts_nothing(tmp_path):
    """Found by the fuzzing above: an exception with fields and no values
    (Falco allows it: a later file may append values) made the compiler
    raise a TypeError; it excepts nothing."""
    from mcpwitness.detect import rules
    f = tmp_path / "r.yaml"
    f.write_text("- rule: r\n  condition: type = open and path startswith /etc\n  output: x\n  priority: warning\n"
                 "  exceptions:\n    - name: hosts\n      fields: [path]\n")
    rule = rules.load([str(f)]).rules[0]
    assert rule.fn({"type": "open", "path": "/etc/hosts"}, "open", {})
    assert not rule.fn({"type": "open", "path": "/tmp/x"}, "open", {})


def _recorded_lines() -> list[dict]:
    """Real records of every kind the pipeline writes for an HTTP conversation (sessions,
    messages, calls, the stats-free rest), as replay reads them: JSON objects."""
    import msgspec
    _, recs = run(http_variants(3), [])
    return [json.loads(msgspec.json.encode(r)) for r in recs]


RECORDED = _recorded_lines()
# an edit of one recorded line: a field set to any JSON value, a field dropped, or the line replaced
EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 100), JSON),
    st.tuples(st.just("drop"), st.integers(0, 10_000), st.integers(0, 100)),
    st.tuples(st.just("raw"), st.integers(0, 10_000), st.binary(max_size=60)),
)


@FUZZ
@given(edits=st.lists(EDIT, max_size=12))
def test_replay_judges_or_counts_every_line(edits):
    """detect --replay over a recorded file edited any way: it never raises, and every
    line is either judged as a record or counted as skipped."""
    from collections import Counter

    from mcpwitness.decode.flags import Flagger
    from mcpwitness.detect.engine import Engine, RuleSource, replay
    docs: list = [dict(r) for r in RECORDED]
    raw: dict[int, bytes] = {}
    for e in edits:
        i = e[1] % len(docs)
        keys = sorted(docs[i]) if isinstance(docs[i], dict) else []
        if e[0] == "set" and keys:
            docs[i][keys[e[2] % len(keys)]] = e[3]
        elif e[0] == "drop" and keys:
            docs[i].pop(keys[e[2] % len(keys)])
        elif e[0] == "raw":
            raw[i] = e[2].replace(b"\n", b" ")
    lines = [raw.get(i, json.dumps(d).encode()) for i, d in enumerate(docs)]
    src = RuleSource()
    engine = Engine(src, Flagger(), ruleset=src.load())
    bad: Counter = Counter()
    list(replay(lines, engine, bad, Counter()))
    assert engine.stats["records"] + sum(bad.values()) == sum(1 for x in lines if x.strip())


def test_a_session_record_with_a_damaged_session_field_is_judged():
    """Found by the replay property above: a session record whose `session` is a list (not
    hashable) raised out of the engine; now it is judged like any other damaged record."""
    from collections import Counter

    from mcpwitness.decode.flags import Flagger
    from mcpwitness.detect.engine import Engine, RuleSource, replay
    doc = next(dict(r) for r in RECORDED if r.get("type") == "session" and r.get("principal"))
    doc["session"] = []
    src = RuleSource()
    engine = Engine(src, Flagger(), ruleset=src.load())
    bad: Counter = Counter()
    list(replay([json.dumps(doc).encode()], engine, bad, Counter()))
    assert engine.stats["records"] == 1 and not bad
