"""Frames -> MCP messages, sessions and request/response pairs.

A session is one client-server conversation, whichever of its ends were
tracked: a server's stdio (its stdin and stdout, whatever the client made
them of: pipes, one socketpair, two socketpairs as Node and Electron hosts
use, a pty, or a mix; whatever fds the server moved them to), one Unix
socket connection, or a network conversation named by http.py. Both protocol eras:

- up to 2025-11-25, `initialize` / `notifications/initialized` opens the
  session and carries protocolVersion, clientInfo, serverInfo, capabilities;
- from 2026-07-28 there is no handshake: `server/discover` is usually first,
  and every request carries `io.modelcontextprotocol/protocolVersion`,
  `.../clientInfo` and `.../clientCapabilities` in `params._meta`; results
  carry `resultType` ("input_required": the server asks the client something
  inside the result, and the client repeats the request with the answers).

Request ids are only unique within a session and direction, so pending
requests are keyed by (session, sender side, id). Responses are paired the
other way for server-to-client requests (sampling, elicitation, roots).
"""
from __future__ import annotations


import msgspec
from msgspec.structs import replace

from ..proc import identity as proc_identity
from ..proc import namespaces as proc_namespaces
from ..records import HttpInfo, McpMessage, NonJson, SessionRecord
from ..util import call_id, id_key
from .http import endpoint
from .principal import Identifier, local_id
from .redact import Redactor
from .streams import C2S, S2C, Frame

META = "io.modelcontextprotocol/"
# requests only a client sends (their receiver is the server)
CLIENT_METHODS = {
    "initialize", "server/discover", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get",
    "completion/complete", "logging/setLevel", "tasks/get", "tasks/list", "tasks/cancel", "tasks/result",
}
SERVER_METHODS = {"sampling/createMessage", "elicitation/create", "roots/list"}


class Seen(msgspec.Struct, gc=False):
    """Internal, never written: process pid (thread tid) read or wrote these
    messages at ktime_ns. Every tracked end produces one, the deduplicated
    end too: attribution needs the server's own read of a request and write
    of its response, whoever was seen first."""
    session: str
    pid: int
    tid: int
    ktime_ns: int
    role: str | None     # pid's role in the session (server, client, None: unknown yet)
    io: str              # read or write, as the process did it
    items: list          # [(kind, direction, id)] of the messages in these bytes


_SEEN_KEEP = 4096  # per pipe: offsets of recent frames, to name what a duplicate end saw


class _Session:
    __slots__ = ("id", "transport", "pid", "role", "era", "version", "client_info", "server_info",
                 "client_caps", "server_caps", "pending", "messages", "exe", "cmdline", "sides", "rounds",
                 "roles", "flow", "emitted", "pids", "idents", "seen_at", "ns", "conn", "uses", "stdio",
                 "chans", "assumed", "principal", "creds", "auth")

    def __init__(self, sid, transport, pid):
        self.id, self.transport, self.pid = sid, transport, pid
        self.role = self.era = self.version = None
        self.client_info = self.server_info = self.client_caps = self.server_caps = None
        self.pending: dict[tuple, tuple] = {}
        self.messages = 0
        self.sides: dict[int, dict[str, int]] = {}  # pipes: pid -> read/write -> inode
        self.roles: dict[int, str] = {}              # pid -> server/client
        self.flow: dict[tuple, str] = {}             # writer (see _writer) -> C2S/S2C
        self.uses: dict[int, dict[tuple, str]] = {}  # local channels: pid -> writer -> read/write
        self.stdio: dict | None = None               # the server's stdio as the kernel said it (stdio())
        self.chans: dict[tuple, dict] = {}           # (pid, read/write) -> the first local channel it used
        self.assumed: set[int] = set()               # pids whose role only their stdio says (see _join)
        self.emitted: dict[tuple, int] = {}          # pipe (dev, inode) -> stream offset recorded up to
        self.seen_at: dict[tuple, dict] = {}         # pipe (dev, inode) -> {offset: items} of recent frames
        self.pids: set[int] = {pid}
        self.idents: dict[int, tuple] = {}
        self.ns: dict[int, dict] = {}                # pid -> proc.namespaces()
        self.conn: dict | None = None                # network: the connection's endpoints
        # multi round-trip (input_required) chains waiting for the client's retry:
        # [(requestState or None, frozenset of input keys, first id, method, round)]
        self.rounds: list[tuple] = []
        self.exe = self.cmdline = None
        self.principal: dict | None = None          # the client's observed identity (principal.py)
        self.creds: dict[int, tuple] = {}            # pid -> its Unix socket peer's (pid, uid, gid), from the kernel
        self.auth: dict | None = None                # HTTP: the last request's credentials, as a principal


class McpDecoder:
    """Frames in, records (McpMessage, SessionRecord, NonJson) out, in order."""

    def __init__(self, redactor: Redactor | None = None, wall=None, identity=proc_identity,
                 namespaces=proc_namespaces, identifier: Identifier | None = None):
        self.redactor = redactor or Redactor()
        self.tls_of = None          # pid -> TlsInfo | None: the TLS library a process is read from (kernel/tls.py)
        self.wall = wall or (lambda ns: "")
        # command lines are written (sessions, call records): with their secrets redacted
        self.identity = lambda pid: _redacted(identity(pid), self.redactor)
        self.namespaces = namespaces
        self.ident = identifier or Identifier()
        self.ident.redact = self.redactor.text
        self._convs: dict = {}  # network conversations: conv key -> session
        self.sessions: dict[tuple, _Session] = {}
        self._open_local: dict[int, list[_Session]] = {}  # pid -> the local sessions it is in
        self._chan: dict[tuple, _Session] = {}      # local channel end (dev, inode) -> its conversation
        # stdio facts (StdioEvent): pid -> its (stdin, stdout) ends; an end (or its peer) -> the
        # stdio pair it belongs to; a pair -> its session, and what its ends are
        self._stdio: dict[int, tuple] = {}
        self._parent: dict[int, int] = {}   # pid -> its parent as the kernel saw it at exec (a server gone
                                            # before its client was looked up is still traced from there)
        self._std_of: dict[tuple, tuple] = {}
        self._std_sess: dict[tuple, _Session] = {}
        self._std_info: dict[tuple, dict] = {}
        self.stats = {"messages": 0, "nonjson": 0, "invalid_utf8": 0, "sessions": 0, "duplicates": 0,
                      "unpaired_responses": 0, "sessions_resumed": 0}
        self._dec = msgspec.json.Decoder()
        self._fps: dict[str, str] = {}

    # --- across an agent restart (kernel/pin.py) ----------------------------
    def snapshot(self) -> list[dict]:
        """The local sessions (stdio, Unix sockets) open now, as much as a
        restarted agent needs to go on with them under the same id: which
        channels they are, who is server and client, what the handshake said.
        Requests in flight are not kept: their answers come unpaired."""
        out, seen = [], set()
        for s in self.sessions.values():
            if id(s) in seen or s.transport not in ("stdio", "unix"):
                continue
            seen.add(id(s))
            chans = [list(k) for k, x in self._chan.items() if x is s]
            if not chans:
                continue
            out.append({"id": s.id, "transport": s.transport, "pid": s.pid, "role": s.role, "era": s.era,
                        "version": s.version, "client_info": s.client_info, "server_info": s.server_info,
                        "client_caps": s.client_caps, "server_caps": s.server_caps, "messages": s.messages,
                        "roles": {str(p): r for p, r in s.roles.items()},
                        "flow": [[list(w), d] for w, d in s.flow.items()], "chans": chans,
                        "exe": s.exe, "cmdline": s.cmdline, "stdio": s.stdio, "principal": s.principal})
        return out

    def resume(self, snaps: list[dict], ktime: int) -> list:
        """Sessions a previous agent had open, taken up under their ids: their
        channels lead to them again. Returns their `resumed` session records."""
        out = []
        for d in snaps:
            try:
                s = _Session(d["id"], d["transport"], int(d["pid"]))
                s.role, s.era, s.version = d.get("role"), d.get("era"), d.get("version")
                s.client_info, s.server_info = d.get("client_info"), d.get("server_info")
                s.client_caps, s.server_caps = d.get("client_caps"), d.get("server_caps")
                s.messages = int(d.get("messages") or 0)
                s.roles = {int(p): r for p, r in (d.get("roles") or {}).items()}
                s.flow = {tuple(w): fl for w, fl in d.get("flow") or []}
                s.exe, s.cmdline, s.stdio = d.get("exe"), d.get("cmdline"), d.get("stdio")
                s.principal = d.get("principal") if isinstance(d.get("principal"), dict) else None
                s.idents[s.pid] = (s.exe, s.cmdline)
                s.ns[s.pid] = self.namespaces(s.pid)
                chans = [tuple(c) for c in d["chans"]]
            except (KeyError, TypeError, ValueError):
                continue  # a state file from another version: that session starts anew
            for c in chans:
                self._chan[c] = s
            self.sessions[(s.pid, "resumed", s.id)] = s   # ended with its process, as any other
            self.stats["sessions_resumed"] += 1
            out.append(self._record(s, "resumed", ktime))
        return out

    # --- sessions ---------------------------------------------------------
    def stdio(self, pid: int, stdin, stdout, ppid: int = 0) -> None:
        """What pid's fd 0 and fd 1 are (events.StdioFd each: from the kernel at
        exec or discovery, or from /proc). A process's stdin and stdout are one
        conversation with the one that launched it, whatever they are made
        of. Their ends, and the ends' peers (the client's ends of socketpairs),
        are noted here; the session is made when bytes are captured on one of
        them. An end keeps the first pair it was seen in: a child that
        inherits the server's stdin but got its own stdout does not take the
        server's stdin away."""
        fds = (stdin, stdout)
        if ppid:
            self._parent[pid] = ppid
            _bound(self._parent)
        ends = tuple((fd.dev, fd.inode) if fd.kind in _LOCAL and fd.inode else None for fd in fds)
        if ends == (None, None):
            self._stdio.pop(pid, None)
            return
        self._stdio[pid] = ends
        if ends not in self._std_info:
            self._std_info[ends] = {name: {"kind": fd.kind, "inode": fd.inode or None, "peer": fd.peer or None}
                                    for name, fd in zip(("stdin", "stdout"), fds)}
            _bound(self._std_info)
        for fd, end in zip(fds, ends):
            if end is not None:
                self._std_pair(end, ends)
                if fd.peer:
                    self._std_pair((fd.dev, fd.peer), ends)
        _bound(self._std_of)
        _bound(self._stdio)

    def _std_pair(self, end, ends) -> None:
        """end belongs to the stdio pair `ends`: the first pair it was seen in
        keeps it, unless this one completes it (the same ends, one that was
        missing now known: a fact read while a process was exiting); then
        the pair and its session move to the complete one."""
        old = self._std_of.get(end)
        if old is None:
            self._std_of[end] = ends
        elif old != ends and all(a is None or a == b for a, b in zip(old, ends)):
            self._std_of[end] = ends
            if old in self._std_sess and ends not in self._std_sess:
                self._std_sess[ends] = self._std_sess[old]

    def forked(self, parent: int, child: int) -> None:
        """A child shares its parent's stdio until it execs (which says again)."""
        ends = self._stdio.get(parent)
        if ends is not None and child not in self._stdio:
            self._stdio[child] = ends

    def _session(self, f: Frame, out: list):
        if f.kind in _LOCAL:
            return self._local_session(f, out)
        return self._conv_session(f, out)

    def _local_session(self, f: Frame, out: list) -> _Session:
        """Pipes, Unix sockets and ptys. A channel is one conversation whoever
        uses it (both ends tracked: the second process joins the session the
        first one started; a socket's two ends are joined by their peer
        inodes). A server's stdin and stdout are joined by the stdio facts
        (stdio()). Without them (nothing said what a process's stdio is):
        a process's first pipe read and first pipe write are one session
        (servers often dup their stdio, so fd numbers say nothing), and a
        Unix socket is a session of its own."""
        key = (f.pid, f.kind, f.dev, f.inode, f.direction)
        s = self.sessions.get(key)
        if s is not None:
            return s
        here = (f.dev, f.inode)
        peer = (f.dev, f.peer_inode) if f.peer_inode else None
        s = self._chan.get(here) or (self._chan.get(peer) if peer else None)
        std = self._std_of.get(here) or (self._std_of.get(peer) if peer else None)
        if s is None and std is not None:
            s = self._std_sess.get(std)
        if s is None and std is None and f.direction == "write":
            s = self._answering(f)
        if s is None and std is None and f.kind == "pipe":
            other = "write" if f.direction == "read" else "read"
            s = next((x for x in self._open_local.get(f.pid, ()) if x.sides.get(f.pid, {}).get(other)
                      and not x.sides.get(f.pid, {}).get(f.direction)), None)
        if s is None:
            # a socketpair (no name at either end) is stdio-like: a private channel to the process
            # launched on it; a connection to a named socket is a Unix socket transport
            s = self._new(f, "unix" if f.kind == "unix" and std is None and not f.pair else "stdio", out,
                          stdio=self._std_info.get(std) if std is not None else None)
        if std is not None and std not in self._std_sess and (s.stdio is None or s.stdio is self._std_info.get(std)):
            self._std_sess[std] = s
            s.stdio = self._std_info.get(std)
            s.transport = "stdio"  # (a socket seen first from its client end, before the facts)
            for end in std:
                if end is not None:
                    self._chan.setdefault(end, s)
        self._chan.setdefault(here, s)
        if peer:
            self._chan.setdefault(peer, s)
        _bound(self._chan)
        self.sessions[key] = s
        if f.kind == "pipe":
            s.sides.setdefault(f.pid, {})[f.direction] = f.inode
        self._join(s, f)
        return s

    def _conv_session(self, f: Frame, out: list) -> _Session:
        """Network transports: the conversation http.py named (a connection,
        an Mcp-Session-Id, an HTTP+SSE stream), whichever end saw it."""
        s = self._convs.get(f.conv)
        for k in f.aliases:
            if s is not None:
                break
            s = self._convs.get(k)
        if s is None:
            transport = "unix" if f.kind == "unix" else (
                ("https" if f.kind == "tls" else "http") if f.http is not None and f.flow else "tcp")
            conn = None
            if f.peer is not None:
                p = f.peer
                conn = {"local": endpoint(p.local_addr, p.local_port), "remote": endpoint(p.remote_addr, p.remote_port),
                        "seen_by": f.pid, "netns": p.netns_ino, "netns_cookie": p.netns_cookie,
                        "socket_cookie": p.cookie}
                if f.flow is not None:
                    server = (f.flow == C2S) == (f.direction == "read")
                    conn["server"], conn["client"] = (conn["local"], conn["remote"]) if server else (
                        conn["remote"], conn["local"])
            s = self._new(f, transport, out, conn)
        for k in (f.conv, *f.aliases):
            if k not in self._convs:
                self._convs[k] = s
                if len(self._convs) > 65536:
                    del self._convs[next(iter(self._convs))]
        key = (f.pid, "conv", f.conv)
        if key not in self.sessions:
            self.sessions[key] = s
        if f.pid not in s.pids or f.pid not in s.ns:
            s.pids.add(f.pid)
            if f.pid not in s.idents:
                s.idents[f.pid] = self.identity(f.pid)
            s.ns[f.pid] = self.namespaces(f.pid)
        if f.flow is not None and f.pid not in s.roles:
            # who reads the requests serves them
            s.roles[f.pid] = "server" if (f.flow == C2S) == (f.direction == "read") else "client"
            if f.pid == s.pid:
                s.role = s.roles[f.pid]
        return s

    def _answering(self, f: Frame) -> _Session | None:
        """A process writes JSON on a channel no session knows: the session
        whose requests it answers there, when it only read so far in exactly
        one such session. This joins a server's stdout to its stdin when the
        kernel could not say what its stdio was (a server found by watch
        mode after it moved its stdio to other fds, as the Python SDK does)."""
        halves = [x for x in self._open_local.get(f.pid, ())
                  if x.uses.get(f.pid) and "write" not in x.uses[f.pid].values() and x.pending]
        if not halves or not f.complete:
            return None
        try:
            doc = self._dec.decode(f.data)
        except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
            return None
        ids = [id_key(m.get("id")) for m in (doc if isinstance(doc, list) else [doc])
               if isinstance(m, dict) and "id" in m and ("result" in m or "error" in m)]
        match = [x for x in halves if any((C2S, i) in x.pending for i in ids)]
        return match[0] if len(match) == 1 else None

    @staticmethod
    def _writer(f: Frame) -> tuple:
        """The end that wrote f's bytes, which names their direction: a pipe
        is one channel one way; a socket or a pty carries both ways, so its
        bytes are named by the end that wrote them (a read's writer is the
        peer, or, where the peer is not seen, this end's other way)."""
        if f.kind == "pipe":
            return (f.dev, f.inode)
        if f.direction == "write":
            return (f.dev, f.inode, "w")
        return (f.dev, f.peer_inode, "w") if f.peer_inode else (f.dev, f.inode, "r")

    def _join(self, s: _Session, f: Frame) -> None:
        s.pids.add(f.pid)
        if f.peer_cred is not None and f.pid not in s.creds:
            s.creds[f.pid] = f.peer_cred
            if s.principal is not None and "peer_cred" not in s.principal:
                s.principal = None   # said again, with what the kernel says of the peer
        if f.pid not in s.idents:
            s.idents[f.pid] = self.identity(f.pid)
        if f.pid not in s.ns:
            s.ns[f.pid] = self.namespaces(f.pid)
        mine = self._open_local.setdefault(f.pid, [])
        if s not in mine:
            mine.append(s)
        w = self._writer(f)
        s.uses.setdefault(f.pid, {})[w] = f.direction
        s.chans.setdefault((f.pid, f.direction), {"kind": f.kind, "inode": f.inode, "peer": f.peer_inode or None})
        if f.pid in s.roles:
            self._set_flows(s, f.pid)
        elif w in s.flow:  # the channel says which end this is
            s.roles[f.pid] = "server" if (s.flow[w] == C2S) == (f.direction == "read") else "client"
            self._set_flows(s, f.pid)
        else:
            ends = self._stdio.get(f.pid)
            if ends is not None and (f.dev, f.inode) == ends[0 if f.direction == "read" else 1]:
                # nothing said yet who is who: a process launched on a channel (reading its stdin,
                # writing its stdout) serves it, until a method says otherwise (_learn_role)
                s.roles[f.pid] = "server"
                s.assumed.add(f.pid)
                if f.pid == s.pid:
                    s.role = "server"
                self._set_flows(s, f.pid)

    def _set_flows(self, s: _Session, pid: int, force: bool = False) -> None:
        """pid's role is known: every channel end it uses now has a direction,
        and the other processes on those channels have their roles."""
        todo = [pid]
        while todo:
            p = todo.pop()
            server = s.roles[p] == "server"
            for w, d in s.uses.get(p, {}).items():
                if force and p == pid:
                    s.flow[w] = C2S if server == (d == "read") else S2C
                else:
                    s.flow.setdefault(w, C2S if server == (d == "read") else S2C)
            for q, uses in s.uses.items():
                if q in s.roles:
                    continue
                for w, d in uses.items():
                    flow = s.flow.get(w)
                    if flow is not None:
                        s.roles[q] = "server" if (flow == C2S) == (d == "read") else "client"
                        if q == s.pid:
                            s.role = s.roles[q]
                        todo.append(q)
                        break

    def _new(self, f: Frame, transport: str, out: list, conn: dict | None = None, stdio: dict | None = None) -> _Session:
        sid = f"{f.pid}-{transport}-{f.inode}-{f.first_ktime_ns}"
        s = _Session(sid, transport, f.pid)
        s.conn, s.stdio = conn, stdio
        s.exe, s.cmdline = s.idents[f.pid] = self.identity(f.pid)
        s.ns[f.pid] = self.namespaces(f.pid)
        self.stats["sessions"] += 1
        out.append(self._record(s, "start", f.first_ktime_ns))
        return s

    def _record(self, s: _Session, event: str, ktime: int) -> SessionRecord:
        r = self.redactor.value
        # the server's end when it is tracked, else the first process seen
        pid = next((p for p, role in s.roles.items() if role == "server"), s.pid)
        exe, cmdline = s.idents.get(pid, (s.exe, s.cmdline))
        peers = [{"pid": p, "role": s.roles.get(p), "exe": s.idents.get(p, (None, None))[0]}
                 for p in sorted(s.pids)] if len(s.pids) > 1 else None
        ends = [{"pid": p, "role": s.roles.get(p), "exe": s.idents.get(p, (None, None))[0],
                 "cmdline": s.idents.get(p, (None, None))[1], **s.ns[p]} for p in sorted(s.ns)] or None
        stdio = s.stdio
        if s.roles.get(pid) == "server" and (pid, "read") in s.chans:
            # what the server really read its requests from and wrote its answers to
            stdio = {"stdin": s.chans[(pid, "read")], "stdout": s.chans.get((pid, "write"))}
        principal = self._principal(s)
        return SessionRecord(self.wall(ktime), ktime, event, s.id, s.transport, pid, s.roles.get(pid), exe,
                             cmdline, s.era, s.version, r(s.client_info), r(s.server_info), s.client_caps,
                             s.server_caps, s.messages, len(s.pending), peers, ends, s.conn,
                             stdio if s.transport == "stdio" else None, principal)

    # --- who the client is (principal.py) ------------------------------------
    def _principal(self, s: _Session) -> dict | None:
        """The client's observed identity, with its declared clientInfo beside it."""
        if s.auth is not None:
            p = dict(s.auth)
            client = (s.conn or {}).get("client")
            if client:
                p["address"] = client
        elif s.principal is not None:
            p = s.principal
        else:
            p = s.principal = self._observe(s)
            if p is None:
                return None
        info = s.client_info
        if isinstance(info, dict) and (info.get("name") or info.get("version")):
            declared = {k: self.redactor.text(str(info[k]))[:256] for k in ("name", "version", "title") if info.get(k)}
            if p.get("declared") != declared:
                p = dict(p, declared=declared)
                if s.auth is None:
                    s.principal = p
        return p

    def _observe(self, s: _Session) -> dict | None:
        """What the kernel and /proc say of the client end: None until the
        session's roles say which end that is."""
        if s.transport in ("http", "https", "tcp"):
            addr = (s.conn or {}).get("client")
            if not addr:
                return None
            host = addr.rsplit(":", 1)[0].strip("[]")
            return {"id": f"address:{host}", "kind": "address", "source": "the connection (no credentials)",
                    "address": addr}
        server = next((p for p, r in s.roles.items() if r == "server"), None)
        client = next((p for p, r in s.roles.items() if r == "client"), None)
        if server is None and client is None:
            return None
        cred = s.creds.get(server) if server is not None else None
        if client is not None:
            how = "the client's end is tracked"
        elif cred is not None:
            client, how = cred[0], "the kernel's credentials of the socket's peer (SO_PEERCRED)"
        elif s.transport == "stdio":
            # the channel the server really reads its requests from, else what its fd 0 is
            read = s.chans.get((server, "read"))
            client, how = self.ident.stdio_client(server, {"stdin": read} if read else s.stdio,
                                                  self._parent.get(server, 0))
        else:
            return None
        if client is None:
            return None
        ids = cred[1:] if cred is not None and cred[0] == client else (None, None)
        d = self.ident.process(client, *ids)
        p = {"id": local_id(s.transport, d), "kind": "unix_peer" if s.transport == "unix" else "process",
             "source": how, **d}
        if cred is not None:
            p["peer_cred"] = {"pid": cred[0], "uid": cred[1], "gid": cred[2]}
        chain = self.ident.chain(client)
        if chain:
            p["chain"] = chain
        return p

    def _credentials(self, s: _Session, f: Frame) -> tuple[str | None, bool]:
        """An HTTP request's credentials: the session's principal from now on.
        (the principal's id, whether it changed)."""
        if f.exchange is None or f.flow != C2S:
            return None, False
        p = self.ident.credentials(f.exchange.headers)
        if p is None:
            return None, False
        if s.auth is None or s.auth.get("id") != p.get("id"):
            s.auth = p
            return p["id"], True
        return p["id"], False

    def end_process(self, pid: int, ktime: int) -> list:
        """pid exited: its sessions end when no tracked process is left in them."""
        out, done = [], set()
        for key in [k for k in self.sessions if k[0] == pid]:
            s = self.sessions.pop(key, None)
            if s is None or id(s) in done:
                continue
            done.add(id(s))
            s.pids.discard(pid)
            pipes = self._open_local.get(pid)
            if pipes and s in pipes:
                pipes.remove(s)
            if not s.pids or all(k[0] not in s.pids for k in self.sessions if self.sessions[k] is s):
                out.extend(self._end_session(s, ktime))
        self._open_local.pop(pid, None)
        self._stdio.pop(pid, None)
        return out

    def end_conv(self, conv, ktime: int) -> list:
        """A connection ended: a session that was that connection ends with it
        (one that spans connections, by Mcp-Session-Id, goes on)."""
        s = self._convs.get(conv)
        if s is None:
            return []
        for k in [k for k in self.sessions if k[1] == "conv" and k[2] == conv]:
            del self.sessions[k]
        for k in [k for k in s.seen_at if k[0] == conv]:  # the connection's byte streams are done
            del s.seen_at[k]
        self._convs.pop(conv, None)
        if any(x is s for x in self.sessions.values()):
            return []
        return self._end_session(s, ktime)

    def end_all(self, ktime: int) -> list:
        out, done = [], set()
        for s in list(self.sessions.values()):
            if id(s) not in done:
                done.add(id(s))
                out.extend(self._end_session(s, ktime))
        return out

    def _end_session(self, s: _Session, ktime: int) -> list:
        for k in [k for k, x in self.sessions.items() if x is s]:
            del self.sessions[k]
        for d in (self._chan, self._std_sess):
            for k in [k for k, x in d.items() if x is s]:
                del d[k]
        for k in [k for k, x in self._convs.items() if x is s]:
            del self._convs[k]
        for pipes in self._open_local.values():
            if s in pipes:
                pipes.remove(s)
        return [self._record(s, "end", ktime)]

    # --- messages ---------------------------------------------------------
    def feed(self, f: Frame) -> list:
        out: list = []
        s = self._session(f, out)
        if f.kind == "pipe":
            k = (f.dev, f.inode)
            if f.offset < s.emitted.get(k, -1):
                # the same bytes as seen from the pipe's other end: recorded once
                self.stats["duplicates"] += 1
                items = s.seen_at.get(k, {}).get(f.offset)
                if items:
                    out.append(Seen(s.id, f.pid, f.tid, f.ktime_ns, s.roles.get(f.pid), f.direction, items))
                return out
            s.emitted[k] = f.offset + len(f.data) + 1
        elif f.dedup is not None:
            k = f.dedup
            at = s.seen_at.get(k)
            if at is not None and f.offset in at and f.pid not in at[f.offset][1]:
                # the same bytes as the connection's other end saw them: recorded once
                self.stats["duplicates"] += 1
                items, pids = at[f.offset]
                if f.pid not in s.roles:  # this end read what the other wrote (or the reverse)
                    other = next((s.roles[p] for p in pids if p in s.roles), None)
                    if other is not None:
                        s.roles[f.pid] = "client" if other == "server" else "server"
                        if f.kind in _LOCAL:
                            self._set_flows(s, f.pid)
                pids.add(f.pid)
                if f.exchange is not None:  # this end's exchange learns the ids too
                    f.exchange.ids.extend(i for k, _, i in items if k == "request")
                if items:
                    out.append(Seen(s.id, f.pid, f.tid, f.ktime_ns, s.roles.get(f.pid), f.direction, items))
                return out
        n = len(out)
        self._decode(s, f, out)
        items = [(m.kind, m.direction, m.id) for m in out[n:] if type(m) is McpMessage and m.kind != "invalid"]
        if f.dedup is not None:
            at = s.seen_at.setdefault(f.dedup, {})
            at[f.offset] = (items, {f.pid})
            if len(at) > _SEEN_KEEP:
                del at[next(iter(at))]
        if items:
            out.append(Seen(s.id, f.pid, f.tid, f.ktime_ns, s.roles.get(f.pid), f.direction, items))
            if f.kind == "pipe":
                at = s.seen_at.setdefault((f.dev, f.inode), {})
                at[f.offset] = items
                if len(at) > _SEEN_KEEP:
                    del at[next(iter(at))]
        return out

    def _decode(self, s: _Session, f: Frame, out: list) -> None:
        status = f.http.status if f.http is not None else None
        if status is not None and status >= 400 and b'"jsonrpc"' not in f.data:
            self._http_failed(s, f, status, out)
            return
        notes = list(f.notes)
        if not f.complete:
            notes.append("incomplete: the stream ended inside this message")
        try:
            doc = self._dec.decode(f.data)
        except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as e:
            doc, reason = None, f"not JSON: {e}"
            try:
                f.data.decode("utf-8")
            except UnicodeDecodeError:
                self.stats["invalid_utf8"] += 1
                reason = "invalid UTF-8"
                try:  # keep what can be kept
                    doc = msgspec.json.decode(f.data.decode("utf-8", "replace"))
                    notes.append("invalid UTF-8 replaced with U+FFFD")
                except (msgspec.DecodeError, ValueError):
                    doc = None
            if doc is None:
                if not f.complete:
                    reason = "incomplete: the stream ended inside this message"
                self.stats["nonjson"] += 1
                preview = self.redactor.text(f.data[:200].decode("utf-8", "replace"))
                out.append(NonJson(self.wall(f.ktime_ns), f.ktime_ns, s.id, self._direction(s, f), f.pid, f.fd,
                                   len(f.data), reason, preview))
                return
        if isinstance(doc, list):
            if not doc:
                out.append(self._invalid(s, f, "empty batch", notes))
            for i, m in enumerate(doc):
                self._message(s, f, m, i, notes, out)
        else:
            self._message(s, f, doc, None, notes, out)

    def _direction(self, s: _Session, f: Frame) -> str:
        if f.flow is not None:
            return f.flow
        local = f.kind in _LOCAL
        flow = s.flow.get(self._writer(f)) if local else None
        if flow is not None:
            return flow
        role = s.roles.get(f.pid)
        # a process reads what its peer sent
        if role == "server":
            return C2S if f.direction == "read" else S2C
        if role == "client":
            return S2C if f.direction == "read" else C2S
        ends = self._stdio.get(f.pid) if local else None
        if ends is not None:  # nothing said yet who is who: a process launched on a channel serves it
            if (f.dev, f.inode) == ends[0] and f.direction == "read":
                return C2S
            if (f.dev, f.inode) == ends[1] and f.direction == "write":
                return S2C
        return "unknown"

    def _http_failed(self, s: _Session, f: Frame, status: int, out: list) -> None:
        """An HTTP request failed with no JSON-RPC body: each JSON-RPC request
        it carried is answered by this error, so its call ends here."""
        x = f.exchange
        ids = x.ids if x is not None else []
        preview = self.redactor.text(f.data[:200].decode("utf-8", "replace"))
        for mid in ids:
            req = s.pending.pop((C2S, id_key(mid)), None)
            method = req[0] if req else None
            latency = round((f.ktime_ns - req[1]) / 1e6, 3) if req else None
            out.append(self._msg(s, f, S2C, "error", mid, method, paired=req is not None, latency_ms=latency,
                                 call_id=req[3] if req else None,
                                 error={"http_status": status, "body": preview},
                                 notes=[f"no JSON-RPC response: the HTTP request failed with {status}"]))
        if not ids:
            out.append(NonJson(self.wall(f.ktime_ns), f.ktime_ns, s.id, S2C, f.pid, f.fd, len(f.data),
                               f"HTTP {status}", preview))

    def _learn_role(self, s: _Session, f: Frame, method: str, is_request: bool) -> None:
        if f.flow is not None or (f.pid in s.roles and f.pid not in s.assumed):
            return
        if method in SERVER_METHODS:
            role = "client" if f.direction == "read" else "server"
        elif method in CLIENT_METHODS or is_request:
            # whoever receives a client request is the server; for a method
            # the spec does not name, the first request decides the same way
            role = "server" if f.direction == "read" else "client"
        else:
            return
        was = s.roles.get(f.pid)
        s.assumed.discard(f.pid)
        s.roles[f.pid] = role
        if f.pid == s.pid:
            s.role = role
        if f.kind in _LOCAL:
            self._set_flows(s, f.pid, force=was is not None and was != role)

    def _invalid(self, s, f, why, notes, batch=None):
        return self._msg(s, f, self._direction(s, f), "invalid", batch=batch, truncated=f.truncated,
                         notes=notes + [why])

    def _msg(self, s: _Session, f: Frame, direction: str, kind: str, mid=None, method=None, **kw) -> McpMessage:
        """A message record: what the frame and the session say, plus kw."""
        return McpMessage(time=self.wall(f.ktime_ns), ktime_ns=f.ktime_ns, session=s.id, direction=direction,
                          kind=kind, id=mid, method=method, size=len(f.data), pid=f.pid, tid=f.tid, comm=f.comm,
                          fd=f.fd, transport=s.transport, http=self._http(f.http),
                          tls=self.tls_of(f.pid) if f.kind == "tls" and self.tls_of is not None else None, **kw)

    def _fingerprint(self, secret: str) -> str:
        """A secret replaced by a keyed hash (principal.py's, under its key): equal
        values stay equal (a session id that spans connections still shows it), and
        the value cannot be read back or guessed from the output."""
        fp = self._fps.get(secret)
        if fp is None:
            if len(self._fps) > 65536:
                self._fps.clear()
            fp = self._fps[secret] = f"[REDACTED:{self.ident.fingerprint(secret)}]"
            self.redactor.count += 1
        return fp

    def _http(self, h: HttpInfo | None) -> HttpInfo | None:
        """The HTTP facts as written: the Mcp-Session-Id is a bearer credential
        for the session (replaced by a keyed fingerprint), and a target's
        query may carry one too (redacted like any text)."""
        if h is None or not self.redactor.enabled or (h.session_id is None and not h.target):
            return h
        return replace(h, session_id=self._fingerprint(h.session_id) if h.session_id else None,
                       target=self.redactor.text(h.target) if h.target else h.target)

    def _message(self, s: _Session, f: Frame, m, batch, notes, out) -> None:
        if not isinstance(m, dict) or m.get("jsonrpc") != "2.0":
            out.append(self._invalid(s, f, "not a JSON-RPC 2.0 object", notes, batch))
            return
        mid = m.get("id")
        if mid is not None and (type(mid) not in (int, float, str)):
            # JSON-RPC ids are strings, numbers or null: anything else is recorded as invalid
            out.append(self._invalid(s, f, f"an id that is not a string, a number or null ({type(mid).__name__})",
                                     notes, batch))
            return
        self.stats["messages"] += 1
        s.messages += 1
        red = self.redactor.value
        method = m.get("method")
        mid = m.get("id")
        has_id = "id" in m
        version = None
        if isinstance(method, str):
            self._learn_role(s, f, method, has_id)
            auth_id, auth_new = self._credentials(s, f) if f.exchange is not None else (None, False)
            n0 = len(out)
            params = m.get("params")
            meta = params.get("_meta") if isinstance(params, dict) else None
            if isinstance(meta, dict) and META + "protocolVersion" in meta:
                version = meta.get(META + "protocolVersion")
                self._identify(s, f, "stateless", version, client_info=meta.get(META + "clientInfo"),
                               client_caps=meta.get(META + "clientCapabilities"), out=out)
            if method == "initialize" and isinstance(params, dict):
                self._identify(s, f, "handshake", params.get("protocolVersion"),
                               client_info=params.get("clientInfo"), client_caps=params.get("capabilities"),
                               out=out, force=True)
            if s.principal is None and s.auth is None and s.roles and has_id:
                # the client end is known now: said once, for its calls to carry
                s.principal = self._observe(s)
                auth_new = s.principal is not None
            if auth_new and not any(type(r) is SessionRecord for r in out[n0:]):
                out.append(self._record(s, "identified", f.ktime_ns))
            direction = self._direction(s, f)
            kind = "request" if has_id else "notification"
            continues = None
            if has_id and isinstance(params, dict) and ("requestState" in params or "inputResponses" in params):
                continues = self._continues(s, method, params)
            if has_id:
                cid = call_id(s.id, mid, f.ktime_ns)
                s.pending[(direction, id_key(mid))] = (method, f.ktime_ns, continues, cid)
                if f.exchange is not None:
                    f.exchange.ids.append(mid)
            msg = self._msg(s, f, direction, kind, mid, method, call_id=cid if has_id else None, batch=batch,
                            params=red(params),
                            protocol_version=version, continues=continues, truncated=f.truncated, notes=notes)
            if auth_id is not None and msg.http is not None:
                msg.http = replace(msg.http, principal=auth_id)
            out.append(msg)
            return
        if has_id and ("result" in m or "error" in m):
            direction = self._direction(s, f)
            other = C2S if direction == S2C else S2C if direction == C2S else "unknown"
            req = s.pending.pop((other, id_key(mid)), None)
            if req is None and mid is None and f.exchange is not None:
                # an error with id null in the HTTP response to a POST (a server that
                # could not read the request's id): it answers what that POST carried
                for eid in f.exchange.ids:
                    req = s.pending.pop((other, id_key(eid)), None)
                    if req is not None:
                        notes = notes + [f"id null on the wire: answers request {eid!r}, carried by the same "
                                         "HTTP exchange"]
                        break
            if req is None and direction == "unknown":
                for k in [k for k in s.pending if k[1] == id_key(mid)]:
                    req = s.pending.pop(k)
                    break
            req_method, latency = None, None
            if req is not None:
                req_method, t0 = req[0], req[1]
                latency = round((f.ktime_ns - t0) / 1e6, 3)
            else:
                self.stats["unpaired_responses"] += 1
            result = m.get("result")
            result_type = input_requests = None
            if isinstance(result, dict):
                result_type = result.get("resultType")
                if result_type == "input_required":
                    asks = result.get("inputRequests")
                    input_requests = {k: v.get("method") for k, v in asks.items() if isinstance(v, dict)} \
                        if isinstance(asks, dict) else {}
                    first = req[2] if req is not None and req[2] else {"id": mid, "round": 0}
                    s.rounds.append((result.get("requestState"), frozenset(input_requests), first["id"],
                                     req_method, first["round"] + 1))
                    del s.rounds[:-64]
            if req_method in ("initialize", "server/discover") and isinstance(result, dict):
                rmeta = result.get("_meta") if isinstance(result.get("_meta"), dict) else {}
                self._identify(s, f, "handshake" if req_method == "initialize" else "stateless",
                               result.get("protocolVersion") or s.version,
                               server_info=result.get("serverInfo") or rmeta.get(META + "serverInfo"),
                               server_caps=result.get("capabilities"), out=out, force=req_method == "initialize")
            elif isinstance(result, dict) and isinstance(result.get("_meta"), dict) \
                    and s.server_info is None and META + "serverInfo" in result["_meta"]:
                s.server_info = result["_meta"][META + "serverInfo"]
            kind = "error" if "error" in m else "response"
            out.append(self._msg(s, f, direction, kind, mid, req_method, paired=req is not None, latency_ms=latency,
                                 call_id=req[3] if req is not None else None,
                                 batch=batch, result=red(result), error=red(m.get("error")), result_type=result_type,
                                 input_requests=input_requests, truncated=f.truncated,
                                 notes=notes if req is not None else notes + ["no request with this id was seen"]))
            return
        out.append(self._invalid(s, f, "neither request, notification nor response", notes, batch))
        self.stats["messages"] -= 1

    @staticmethod
    def _continues(s: _Session, method: str, params: dict):
        """The input_required chain this retry answers: by requestState, else
        by the keys it answers. None when nothing matches (a state we never saw)."""
        state = params.get("requestState")
        answers = params.get("inputResponses")
        keys = frozenset(answers) if isinstance(answers, dict) else frozenset()
        for i in range(len(s.rounds) - 1, -1, -1):
            st, asked, first, m, rnd = s.rounds[i]
            if m == method and ((state is not None and st == state) or (state is None and asked and asked == keys)):
                del s.rounds[i]
                return {"id": first, "round": rnd}
        return None

    def _identify(self, s, f, era, version, out, client_info=None, server_info=None, client_caps=None,
                  server_caps=None, force=False) -> None:
        """Fill in what this message says about the session; a record each time something new is learnt.
        force: an initialize handshake settles the era and version even after a
        stateless probe (a client that tried server/discover first and fell back)."""
        changed = False
        for attr, val in (("era", era), ("version", version), ("client_info", client_info),
                          ("server_info", server_info), ("client_caps", client_caps), ("server_caps", server_caps)):
            if val is not None and (getattr(s, attr) is None or (force and attr in ("era", "version")
                                                                 and getattr(s, attr) != val)):
                setattr(s, attr, val)
                changed = True
        if changed:
            out.append(self._record(s, "identified", f.ktime_ns))


def _redacted(ident: tuple, redactor: Redactor) -> tuple:
    exe, cmdline = ident
    return exe, redactor.argv(cmdline)


_LOCAL = frozenset({"pipe", "unix", "tty"})  # channels on this host (not network conversations)


def _bound(d: dict, limit: int = 65536) -> None:
    """Keep a table of facts bounded: the oldest entries go first."""
    while len(d) > limit:
        del d[next(iter(d))]
