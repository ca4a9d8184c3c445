"""A server's stdio is one session however the client wired it (the MCP stage
alone, no kernel): pipes, two socketpairs (Node), one socketpair, a pty;
with one end tracked or both; with the kernel's stdio facts or without them."""
import json
from types import SimpleNamespace

from mcpwitness.decode.mcp import McpDecoder
from mcpwitness.decode.redact import Redactor
from mcpwitness.decode.streams import Reassembler
from mcpwitness.records import IoEvent, McpMessage, SessionRecord, StdioFd

DEV = 9
T = [0]


def line(**m) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **m}).encode() + b"\n"


INIT = line(id=0, method="initialize", params={"protocolVersion": "2025-06-18", "capabilities": {},
                                                "clientInfo": {"name": "c", "version": "1"}})
INIT_OK = line(id=0, result={"protocolVersion": "2025-06-18", "capabilities": {},
                             "serverInfo": {"name": "s", "version": "1"}})
CALL = line(id=1, method="tools/call", params={"name": "t", "arguments": {}})
CALL_OK = line(id=1, result={"content": []})


class Wire:
    """The MCP stage fed the way the agent feeds it."""

    def __init__(self):
        self.r = Reassembler()
        self.d = McpDecoder(Redactor(), identity=lambda pid: (f"/bin/p{pid}", [f"p{pid}"]))
        self.out = []

    def io(self, pid, direction, inode, data, kind="unix", fd=None):
        T[0] += 1000
        ev = IoEvent("", T[0], pid, pid, 1, 0, f"p{pid}", 1, 1, pid, [], False, [], fd if fd is not None else 5,
                     direction, kind, direction, inode, DEV, len(data), data)
        for f in self.r.feed(ev):
            self.out += self.d.feed(f)

    def peer(self, inode, peer, named=0):
        self.r.sock(SimpleNamespace(inode=inode, peer_inode=peer, unix_named=named, peer_pid=0))

    def stdio(self, pid, i, o, kind="unix", peers=(0, 0)):
        self.d.stdio(pid, StdioFd(kind, DEV, i, peers[0]), StdioFd(kind, DEV, o, peers[1]))

    def end(self):
        self.out += self.d.end_all(T[0] + 1)
        return self.out


def msgs(recs):
    return [r for r in recs if isinstance(r, McpMessage)]


def one_session(recs):
    ms = msgs(recs)
    assert len({m.session for m in ms}) == 1, [(m.session, m.direction, m.kind) for m in ms]
    assert all(m.direction != "unknown" for m in ms)
    for m in ms:
        if m.kind == "response":
            assert m.paired and m.latency_ms > 0
    return ms


def test_two_socketpairs_server_end_only():
    """Node hosts: stdin is one socketpair, stdout another; only the server is tracked."""
    w = Wire()
    w.stdio(20, 101, 103, peers=(100, 102))
    w.peer(101, 100)
    w.io(20, "read", 101, INIT)
    w.peer(103, 102)
    w.io(20, "write", 103, INIT_OK)
    w.io(20, "read", 101, CALL)
    w.io(20, "write", 103, CALL_OK)
    ms = one_session(w.end())
    assert [(m.direction, m.kind) for m in ms] == [("client->server", "request"), ("server->client", "response")] * 2
    end = [r for r in w.out if isinstance(r, SessionRecord)][-1]
    assert end.transport == "stdio" and end.stdio == {"stdin": {"kind": "unix", "inode": 101, "peer": 100},
                                                      "stdout": {"kind": "unix", "inode": 103, "peer": 102}}


def test_without_the_fix_there_would_be_two_sessions():
    """The same wiring with no stdio facts and no answer to join by: two sessions (the guard
    that the test above depends on the stdio facts)."""
    w = Wire()
    w.peer(101, 100)
    w.io(20, "read", 101, line(method="notifications/initialized"))
    w.peer(103, 102)
    w.io(20, "write", 103, line(method="notifications/message", params={"level": "info", "data": "x"}))
    assert len({m.session for m in msgs(w.end())}) == 2


def test_both_ends_tracked_client_first_each_message_once():
    """The client writes before the server's exec is known; the client's read of an answer
    may be decoded before the server's write of it."""
    w = Wire()
    w.peer(100, 101)
    w.io(10, "write", 100, INIT)        # the client, before anything says what 101 is
    w.stdio(20, 101, 103, peers=(100, 102))
    w.peer(101, 100)
    w.io(20, "read", 101, INIT)
    w.peer(102, 103)
    w.io(10, "read", 102, INIT_OK)      # the client's read came out of the ring first
    w.peer(103, 102)
    w.io(20, "write", 103, INIT_OK)
    w.io(10, "write", 100, CALL)
    w.io(20, "read", 101, CALL)
    w.io(20, "write", 103, CALL_OK)
    w.io(10, "read", 102, CALL_OK)
    ms = one_session(w.end())
    assert [(m.direction, m.kind, m.id) for m in ms] == [
        ("client->server", "request", 0), ("server->client", "response", 0),
        ("client->server", "request", 1), ("server->client", "response", 1)]
    assert w.d.stats["duplicates"] == 4
    end = [r for r in w.out if isinstance(r, SessionRecord)][-1]
    assert {e["pid"]: e["role"] for e in end.ends} == {10: "client", 20: "server"}


def test_pipes_and_a_helper_that_inherits_stdin_keeps_its_own_stdout():
    """A tool's child inherits the server's stdin but writes JSON to its own pipe, which the
    server reads: that is not the client's conversation, and it does not take stdin away."""
    w = Wire()
    w.stdio(20, 200, 201, kind="pipe")
    w.io(20, "read", 200, INIT, kind="pipe")
    w.io(20, "write", 201, INIT_OK, kind="pipe")
    w.stdio(21, 200, 300, kind="pipe")  # the child: stdin inherited, stdout a new pipe
    w.io(21, "write", 300, b'{"rows": 3}\n', kind="pipe")
    w.io(20, "read", 300, b'{"rows": 3}\n', kind="pipe")
    w.io(20, "read", 200, CALL, kind="pipe")
    w.io(20, "write", 201, CALL_OK, kind="pipe")
    recs = w.end()
    main = [m for m in msgs(recs) if m.kind in ("request", "response")]
    assert len({m.session for m in main}) == 1 and all(m.paired for m in main if m.kind == "response")
    assert len(main) == 4


def test_first_message_a_notification_from_the_server():
    """No method names a role yet: the process launched on the channel serves it."""
    w = Wire()
    w.stdio(20, 101, 103, peers=(100, 102))
    w.peer(103, 102)
    w.io(20, "write", 103, line(method="notifications/message", params={"level": "info", "data": "hello"}))
    w.peer(101, 100)
    w.io(20, "read", 101, INIT)
    w.io(20, "write", 103, INIT_OK)
    ms = one_session(w.end())
    assert ms[0].direction == "server->client" and ms[0].kind == "notification"


def test_one_socketpair_both_ways_and_a_pty():
    for kind in ("unix", "tty"):
        w = Wire()
        w.stdio(20, 101, 101, kind=kind, peers=(100, 100) if kind == "unix" else (0, 0))
        if kind == "unix":
            w.peer(101, 100)
        w.io(20, "read", 101, INIT, kind=kind)
        w.io(20, "write", 101, INIT_OK, kind=kind)
        ms = one_session(w.end())
        assert [m.direction for m in ms] == ["client->server", "server->client"]
        assert msgs(w.out)[0].transport == "stdio"


def test_stdio_moved_away_is_joined_by_the_answers():
    """Watch mode found a server after it moved its stdio (fds 0 and 1 are /dev/null and
    stderr by then): its stdout joins the session of the requests it answers there."""
    w = Wire()
    w.stdio(20, 0, 0, kind="other")
    w.peer(101, 100)
    w.io(20, "read", 101, INIT)
    w.peer(103, 102)
    w.io(20, "write", 103, INIT_OK)
    ms = one_session(w.end())
    assert ms[0].transport == "stdio"  # a socketpair: no name at either end


def test_answers_do_not_join_when_two_conversations_could_own_them():
    """A Unix socket server with two clients whose requests share an id: an answer written on a
    third channel is not guessed into either."""
    w = Wire()
    for ino, peer in ((101, 100), (111, 110)):
        w.peer(ino, peer, named=1)
        w.io(20, "read", ino, CALL)
    w.peer(121, 120, named=1)
    w.io(20, "write", 121, CALL_OK)
    assert len({m.session for m in msgs(w.end())}) == 3


def test_a_named_unix_socket_is_a_unix_session():
    w = Wire()
    w.peer(101, 100, named=1)
    w.io(20, "read", 101, INIT)
    w.io(20, "write", 101, INIT_OK)
    ms = one_session(w.end())
    assert {m.transport for m in ms} == {"unix"}


def test_children_write_the_answers_on_the_inherited_stdout():
    """Each answer written by a new child process (helper, printf): the lines are told apart by
    their position in the channel, not taken for the same bytes seen twice."""
    w = Wire()
    w.stdio(20, 101, 103, peers=(100, 102))
    w.peer(101, 100)
    w.peer(103, 102)
    for i, (q, a) in enumerate(((INIT, INIT_OK), (CALL, CALL_OK))):
        w.io(20, "read", 101, q)
        child = 30 + i
        w.d.forked(20, child)
        w.io(child, "write", 103, a)
    ms = one_session(w.end())
    assert [(m.pid, m.direction, m.kind) for m in ms] == [
        (20, "client->server", "request"), (30, "server->client", "response"),
        (20, "client->server", "request"), (31, "server->client", "response")]
    assert w.d.stats["duplicates"] == 0


def test_a_method_corrects_the_role_stdio_suggested():
    """A process launched on the channel that turns out to be the client (it writes requests on
    its stdout): the method wins over the assumption."""
    w = Wire()
    w.stdio(20, 200, 201, kind="pipe")
    w.io(20, "write", 201, INIT, kind="pipe")
    w.io(20, "read", 200, INIT_OK, kind="pipe")
    ms = one_session(w.end())
    assert [m.direction for m in ms] == ["client->server", "server->client"]
