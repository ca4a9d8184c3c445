"""Captured TCP and TLS bytes -> HTTP/1.1 messages -> MCP frames.

One connection as one process saw it (a TCP socket, or a TLS stream: the
plaintext at SSL_read/SSL_write) has two byte streams, read and write. The
side that writes requests is the client. Requests and responses are parsed in
order (keep-alive and pipelining: responses answer requests first in, first
out), bodies by Content-Length, chunked encoding or the end of the
connection, gzip/deflate undone. JSON bodies become frames; an SSE body
(text/event-stream) becomes one frame per event, as each event completes, so
a stream that lasts for hours is read as it goes.

Frames carry what the MCP decoder needs to put them in sessions:
- `flow`: requests go client->server, responses server->client;
- `conv`: the conversation. The connection, named by its endpoints so that
  both ends of one loopback connection name it alike; or, when the request
  carries one, the `Mcp-Session-Id` of the older revisions (`aliases` tie the
  two, since the id only comes back in the first response); or, for the
  2024-11-05 HTTP+SSE transport, the SSE connection whose `endpoint` event
  named the URL the POST went to;
- `dedup`: (connection, flow): the same bytes seen from both ends are one message.

What is not HTTP/1.x (another protocol on the port, HTTP/2, a WebSocket
upgrade) is reported once, counted, and the kernel told to stop sending it.
"""
from __future__ import annotations

import ipaddress
import zlib
from collections import deque
from urllib.parse import urlsplit

import msgspec

from ..records import HttpInfo, IoEvent, SockEvent, TransportNotice
from .streams import C2S, S2C, Frame

MAX_HEAD = 64 << 10
_JSONRPC = b'"jsonrpc"'  # every JSON-RPC 2.0 message names its version: a body without it is not MCP
NON_MCP_GIVEUP = 3       # bodies without JSON-RPC (and none with) before a connection is let go


class Exchange:
    """One request and its response: shared by their frames. The MCP decoder
    notes the JSON-RPC ids the request carried, so that an HTTP error with no
    JSON-RPC body still answers them."""
    __slots__ = ("method", "target", "headers", "ids", "answered")

    def __init__(self, method, target, headers):
        self.method, self.target, self.headers = method, target, headers
        self.ids: list = []
        self.answered = False


class SessionEnd:
    """A session by Mcp-Session-Id was ended by the client (a DELETE, answered 2xx)."""
    __slots__ = ("conv", "ktime_ns")

    def __init__(self, conv, ktime_ns):
        self.conv, self.ktime_ns = conv, ktime_ns


class _Dir:
    """One direction of one connection: the parser's state."""
    __slots__ = ("buf", "base", "state", "mode", "left", "exch", "head", "body", "body_off", "first",
                 "sse", "sse_lines", "sse_off", "sse_first", "truncated", "notes", "encoding", "ctype", "info",
                 "size", "sse_skip")

    def __init__(self):
        self.buf = bytearray()
        self.base = 0           # stream offset of buf[0]
        self.state = "head"     # head, body, ndjson, lost, dead
        self.mode = None        # length, chunked, close
        self.left = 0
        self.exch: Exchange | None = None
        self.head = None
        self.body: list[bytes] = []
        self.body_off = 0
        self.first = 0
        self.sse = False
        self.sse_lines = bytearray()
        self.sse_off = 0
        self.sse_first = 0
        self.truncated = False
        self.notes: list[str] = []
        self.encoding = None
        self.ctype = None
        self.info: HttpInfo | None = None
        self.size = 0
        self.sse_skip = False                  # inside an SSE event that was cut at max_body


class _Conn:
    __slots__ = ("pid", "kind", "ident", "fd", "dirs", "reqs", "sock", "dead", "last", "under", "conv", "mcp",
                 "other", "local")

    def __init__(self, pid, kind, ident, fd):
        self.pid, self.kind, self.ident, self.fd = pid, kind, ident, fd
        self.dirs = {"read": _Dir(), "write": _Dir()}
        self.under = 0                         # tls: the socket inode it was indexed under
        self.conv: tuple | None = None         # the connection as both ends name it, once known
        self.mcp = False                       # it carried JSON-RPC
        self.local: tuple | None = None        # the key used while the endpoints were unknown
        self.other = 0                         # bodies that were not JSON-RPC
        self.reqs: deque[Exchange] = deque()   # requests waiting for their response
        self.sock: SockEvent | None = None
        self.dead = False
        self.last: IoEvent | None = None


def _norm(addr: str) -> str:
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        return str(a.ipv4_mapped)
    return str(a)


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def conn_key(sock: SockEvent) -> tuple:
    """The connection as both of its ends name it: the endpoint pair, ordered;
    on loopback also the network namespace (127.0.0.1:8000 in two namespaces
    are two different places)."""
    a = (_norm(sock.local_addr), sock.local_port)
    b = (_norm(sock.remote_addr), sock.remote_port)
    ns = sock.netns_cookie if _loopback(a[0]) or _loopback(b[0]) else 0
    return ("tcp", ns) + (a + b if a <= b else b + a)


def endpoint(addr: str, port: int) -> str:
    """address:port, IPv6 addresses in brackets."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _path(uri: str) -> str:
    u = urlsplit(uri)
    return u.path + ("?" + u.query if u.query else "")


_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ")


def _starts_http(data: bytes) -> bool:
    return data.startswith(b"HTTP/1.") or data.startswith(_METHODS)


def _next_start(buf) -> int:
    """Where the next HTTP message may start in buf (a line that begins with
    a status line or a request method), or -1."""
    best = -1
    for m in (b"HTTP/1.",) + _METHODS:
        i = buf.find(m)
        while i > 0 and buf[i - 1:i] != b"\n":
            i = buf.find(m, i + 1)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


class HttpReassembler:
    """IoEvents of kind tcp/tls and SockEvents in; Frames and TransportNotices out."""

    def __init__(self, wall=None, stop_stream=None, max_body: int = 64 << 20, max_conns: int = 65536,
                 redact=None):
        self.wall = wall or (lambda ns: "")
        self.redact = redact or (lambda s: s)  # text written from the stream (previews): secrets out
        self.max_conns = max_conns
        self.stop_stream = stop_stream         # (inode, dev) -> None: tell the kernel to stop a stream
        self.max_body = max_body
        self.conns: dict[tuple, _Conn] = {}
        self.socks: dict[int, SockEvent] = {}  # socket inode -> endpoints
        self.by_sock: dict[int, set] = {}      # socket inode -> the conns over it (both ends' processes)
        self.endpoints: dict[str, tuple] = {}  # HTTP+SSE: POST URL -> the SSE connection's conv
        self.reported: dict[tuple, bool] = {}  # connections already reported as not decodable
        self.stats = {"http_requests": 0, "http_responses": 0, "sse_events": 0, "sse_comments": 0,
                      "http2_connections": 0, "not_http": 0, "upgraded": 0, "bad_encoding": 0, "http_errors": 0,
                      "non_mcp_bodies": 0, "non_mcp_connections": 0, "resyncs": 0, "closed": 0,
                      "conns_evicted": 0, "bad_status": 0, "bad_messages": 0}

    # --- inputs -------------------------------------------------------------
    def sock(self, ev: SockEvent) -> None:
        self.socks[ev.inode] = ev
        if len(self.socks) > 65536:
            del self.socks[next(iter(self.socks))]

    def feed(self, ev: IoEvent) -> list:
        key = (ev.pid, ev.kind, ev.inode)
        c = self.conns.get(key)
        if c is None:
            if len(self.conns) >= self.max_conns:  # no close seen (kernel without tp_btf): oldest first
                self.stats["conns_evicted"] += 1
                self._drop(next(iter(self.conns)))
            c = self.conns[key] = _Conn(ev.pid, ev.kind, ev.inode, ev.fd)
            if ev.kind == "tcp":
                self.by_sock.setdefault(ev.inode, set()).add(key)
        if ev.kind == "tls" and ev.dev and c.under != ev.dev:  # the SSL object's socket became known
            c.under = ev.dev
            self.by_sock.setdefault(ev.dev, set()).add(key)
        c.last = ev
        if c.sock is None:
            c.sock = self.socks.get(ev.inode if ev.kind == "tcp" else ev.dev)
        if c.dead:
            return []
        d = c.dirs[ev.direction]
        out: list = []
        missing = ev.bytes - len(ev.data)
        if d.state == "lost":
            if not _starts_http(ev.data):
                d.base += ev.bytes
                return out
            self.stats["resyncs"] += 1
            d.state, d.buf = "head", bytearray()
            d.notes = ["bytes before this message were not captured: parsing picked up here"]
        d.buf += ev.data
        self._run(c, d, ev, out)
        if missing > 0:
            self._gap(c, d, ev, missing, out)
        return out

    def reset(self, ev: IoEvent, why: str) -> None:
        """The parser failed on ev's bytes (a bug this input found): that
        direction of the connection starts over at the next message start,
        the other direction and every other connection go on."""
        c = self.conns.get((ev.pid, ev.kind, ev.inode))
        if c is None:
            return
        d = c.dirs[ev.direction] = _Dir()
        d.state = "lost"
        d.notes = [f"bytes before this message were not decoded ({why})"]

    def _gap(self, c: _Conn, d: _Dir, ev: IoEvent, missing: int, out: list) -> None:
        """A syscall moved more than was captured (io_max): skip what is missing."""
        if d.state == "body" and d.mode == "length" and not d.buf and d.left >= missing:
            d.left -= missing
            d.truncated = True
            d.notes = d.notes + [f"{missing} bytes of this body were not captured"]
            d.base += missing
            if d.left == 0:
                self._end_body(c, d, ev, out, complete=True)
        elif d.state != "dead":
            d.state, d.buf = "lost", bytearray()
            d.base += missing

    def closed(self, inode: int) -> tuple[list, list]:
        """The TCP connection with this socket inode ended (the kernel saw it
        leave ESTABLISHED): finish its parsers (and those of TLS streams over
        it). Returns (frames, conversation keys that ended)."""
        out, convs = [], []
        self.stats["closed"] += 1
        for k in list(self.by_sock.get(inode, ())):
            c = self.conns.get(k)
            if c is not None:
                convs.append(self._conv(c))
                out += self._finish(self._drop(k))
        self.by_sock.pop(inode, None)
        self.socks.pop(inode, None)
        return out, list(dict.fromkeys(convs))

    def freed(self, pid: int, ssl: int) -> list:
        """The process freed this SSL object: its TLS stream is over (the
        kernel forgot it too, and the address may serve the next connection).
        A body read to the end is complete; anything else pending is kept,
        marked incomplete."""
        key = (pid, "tls", ssl)
        return self._finish(self._drop(key)) if key in self.conns else []

    def _drop(self, key) -> _Conn:
        c = self.conns.pop(key)
        for ino in (c.ident if c.kind == "tcp" else None, c.under):
            keys = self.by_sock.get(ino)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_sock[ino]
        return c

    def flush(self, pid: int | None = None) -> list:
        """The connection (or process) ended: a body read to the end of the
        connection is complete; anything else pending is kept, marked incomplete."""
        out: list = []
        for key in [k for k in self.conns if pid is None or k[0] == pid]:
            out += self._finish(self._drop(key))
        return out

    def _finish(self, c: _Conn) -> list:
        out: list = []
        for d in c.dirs.values():
            if d.state == "body" and c.last is not None:
                if d.mode == "close":
                    self._end_body(c, d, c.last, out, complete=True)
                else:
                    d.notes = d.notes + ["the connection ended inside this body"]
                    self._end_body(c, d, c.last, out, complete=False)
        return out

    # --- parsing --------------------------------------------------------------
    def _run(self, c: _Conn, d: _Dir, ev: IoEvent, out: list) -> None:
        while not c.dead:
            if d.state == "head":
                if not d.buf or not self._head(c, d, ev, out):
                    return
            elif d.state == "body":
                if not self._body(c, d, ev, out):
                    return
            elif d.state == "ndjson":
                self._ndjson(c, d, ev, out)
                return
            else:
                d.buf.clear()
                return

    def _head(self, c: _Conn, d: _Dir, ev: IoEvent, out: list) -> bool:
        buf = d.buf
        while buf[:2] == b"\r\n":  # stray CRLF between messages
            del buf[:2]
            d.base += 2
        if not buf:
            return False
        if buf[:1] in (b"{", b"[") and d.base == 0:
            d.state = "ndjson"  # JSON-RPC straight over TCP, one message per line
            return True
        if buf.startswith(b"PRI * HTTP/2"):
            self._kill(c, ev, "HTTP/2 (not supported yet: this connection is not decoded)", out,
                       "http2_connections")
            return False
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            if len(buf) > MAX_HEAD or (len(buf) >= 8 and not _starts_http(bytes(buf[:8]))):
                self._kill(c, ev, "not HTTP/1.x", out)
            return False
        head = bytes(buf[:i]).decode("latin-1")
        del buf[:i + 4]
        start = d.base
        d.base += i + 4
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
        if parts[0].startswith("HTTP/1.") and len(parts) >= 2:
            code = parts[1]
            if len(code) == 3 and code.isascii() and code.isdigit():
                return self._response(c, d, ev, int(code), headers, start, out)
            # a status that is not three ASCII digits ("2²0"): the body is still read and
            # decoded, by its headers, with the status unknown (0) and said
            self.stats["bad_status"] += 1
            d.notes = d.notes + [f"malformed HTTP status {code[:16]!r}: read as unknown"]
            return self._response(c, d, ev, 0, headers, start, out)
        if len(parts) == 3 and parts[2].startswith("HTTP/1."):
            return self._request(c, d, ev, parts[0], parts[1], headers, start)
        if c.mcp:
            # a connection that already carried MCP: this message is skipped (said, counted), not the
            # connection; parsing picks up at the next message start, here or in a later syscall
            self.stats["bad_messages"] += 1
            d.notes = [f"a malformed HTTP message was skipped before this one ({lines[0][:40]!r})"]
            j = _next_start(buf)
            if j < 0:
                d.state = "lost"
                d.base += len(buf)
                buf.clear()
                return False
            del buf[:j]
            d.base += j
            return True
        self._kill(c, ev, "not HTTP/1.x", out)
        return False

    def _request(self, c, d, ev, method, target, headers, start) -> bool:
        self.stats["http_requests"] += 1
        x = Exchange(method, target, headers)
        c.reqs.append(x)
        d.exch = x
        d.info = HttpInfo(method, target, None, headers.get("mcp-session-id"),
                          headers.get("mcp-protocol-version"), headers.get("mcp-method"), headers.get("mcp-name"),
                          headers.get("content-type"))
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            self._start_body(d, ev, "chunked", 0, headers, start)
        elif headers.get("content-length", "0").strip() not in ("", "0"):
            try:
                n = int(headers["content-length"])
            except ValueError:
                n = 0
            self._start_body(d, ev, "length", n, headers, start)
        else:
            d.state = "head"
        return True

    def _response(self, c, d, ev, status, headers, start, out) -> bool:
        if 100 <= status < 200 and status != 101:
            return True  # 100 Continue and friends: the real response follows
        self.stats["http_responses"] += 1
        x = c.reqs.popleft() if c.reqs else Exchange(None, None, {})
        if status == 101:
            self._kill(c, ev, f"upgraded to {headers.get('upgrade', '?')} (not decoded)", out, "upgraded")
            return False
        d.exch = x
        sid = headers.get("mcp-session-id") or x.headers.get("mcp-session-id")
        d.info = HttpInfo(x.method, x.target, status, sid, x.headers.get("mcp-protocol-version"),
                          x.headers.get("mcp-method"), x.headers.get("mcp-name"), headers.get("content-type"))
        if x.method == "DELETE" and sid and 200 <= status < 300:
            out.append(SessionEnd(("mcp-session", sid), ev.ktime_ns))  # the client ended the session
        if status >= 400:
            self.stats["http_errors"] += 1
        te = headers.get("transfer-encoding", "").lower()
        if x.method == "HEAD" or status in (204, 304):
            d.state = "head"
            self._http_error(c, d, ev, b"", out)
        elif "chunked" in te:
            self._start_body(d, ev, "chunked", 0, headers, start)
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                n = 0
            if n:
                self._start_body(d, ev, "length", n, headers, start)
            else:
                d.state = "head"
                self._http_error(c, d, ev, b"", out)
        else:
            self._start_body(d, ev, "close", 0, headers, start)
        return True

    def _start_body(self, d: _Dir, ev, mode, n, headers, start) -> None:
        d.state, d.mode, d.left = "body", mode, n
        d.body = []
        d.size = 0
        d.body_off = d.sse_off = d.base
        d.first = d.sse_first = ev.ktime_ns
        d.head = start
        d.encoding = headers.get("content-encoding", "").lower() or None
        d.ctype = headers.get("content-type", "").lower()
        d.sse = d.ctype.startswith("text/event-stream")
        d.sse_lines = bytearray()
        d.truncated = False

    def _body(self, c: _Conn, d: _Dir, ev: IoEvent, out: list) -> bool:
        """Consume what the buffer holds of the body. True: the body ended."""
        buf = d.buf
        pieces: list[bytes] = []
        done = False
        if d.mode == "length":
            n = min(d.left, len(buf))
            pieces.append(bytes(buf[:n]))
            del buf[:n]
            d.base += n
            d.left -= n
            done = d.left == 0
        elif d.mode == "close":
            pieces.append(bytes(buf))
            d.base += len(buf)
            buf.clear()
        else:
            while True:
                if d.left > 0:
                    n = min(d.left, len(buf))
                    if not n:
                        break
                    pieces.append(bytes(buf[:n]))
                    del buf[:n]
                    d.base += n
                    d.left -= n
                    if d.left:
                        break
                    d.left = -2
                if d.left == -2:  # the CRLF after a chunk's data
                    if len(buf) < 2:
                        break
                    del buf[:2]
                    d.base += 2
                    d.left = 0
                if d.left == -3:  # trailers after the last chunk
                    if buf[:2] == b"\r\n":
                        del buf[:2]
                        d.base += 2
                        done = True
                        break
                    j = buf.find(b"\r\n\r\n")
                    if j < 0:
                        break
                    del buf[:j + 4]
                    d.base += j + 4
                    done = True
                    break
                i = buf.find(b"\r\n")
                if i < 0:
                    if len(buf) > 1024:
                        self._kill(c, ev, "bad chunked encoding", out, "bad_encoding")
                        return False
                    break
                try:
                    size = int(bytes(buf[:i]).split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    self._kill(c, ev, "bad chunked encoding", out, "bad_encoding")
                    return False
                del buf[:i + 2]
                d.base += i + 2
                d.left = size if size else -3
        data = b"".join(pieces) if len(pieces) != 1 else pieces[0]
        if d.sse:
            self._sse(c, d, ev, data, out)
        elif data:
            d.body.append(data)
            d.size += len(data)
            if d.size > self.max_body:
                d.notes = d.notes + [f"body longer than {self.max_body} bytes: cut here"]
                d.truncated = True
                done = True
        if done:
            self._end_body(c, d, ev, out, complete=True)
            return True
        return False

    def _end_body(self, c: _Conn, d: _Dir, ev: IoEvent, out: list, complete: bool) -> None:
        d.state = "head"
        if d.sse:
            if d.sse_lines.strip():
                self._sse(c, d, ev, b"\n\n", out)
            return
        body = b"".join(d.body)
        d.body = []
        notes = d.notes
        if d.encoding in ("gzip", "x-gzip", "deflate"):
            try:
                body = zlib.decompress(body, 47 if "gzip" in d.encoding else 15)
            except zlib.error:
                try:
                    body = zlib.decompress(body, -15)
                except zlib.error as e:
                    notes = notes + [f"{d.encoding} body could not be decoded: {e}"]
        elif d.encoding not in (None, "identity"):
            notes = notes + [f"content-encoding {d.encoding} not decoded"]
        if not self._http_error(c, d, ev, body, out) and body.strip():
            if _JSONRPC in body:
                c.mcp = True
                out.append(self._frame(c, d, ev, body, d.body_off, d.first, complete and not d.truncated, notes))
            else:
                self._not_mcp(c, ev)
        d.notes = []
        d.truncated = False

    def _not_mcp(self, c: _Conn, ev: IoEvent) -> None:
        """A body that is no JSON-RPC (a REST API a tool calls, a web page):
        counted, not decoded. A connection that carried several and no
        JSON-RPC at all is not MCP: the kernel stops sending it, quietly."""
        self.stats["non_mcp_bodies"] += 1
        c.other += 1
        if not c.mcp and c.other >= NON_MCP_GIVEUP:
            self.stats["non_mcp_connections"] += 1
            c.dead = True
            for x in c.dirs.values():
                x.state, x.buf = "dead", bytearray()
            self._stop(ev)

    def _http_error(self, c: _Conn, d: _Dir, ev: IoEvent, body: bytes, out: list) -> bool:
        """A failed HTTP request whose body is no JSON-RPC: one frame saying so
        (the MCP decoder answers the request's ids with it). True if sent."""
        if d.info is None or d.info.status is None or d.info.status < 400 or _JSONRPC in body:
            return False
        out.append(self._frame(c, d, ev, body, d.body_off, d.first, True, d.notes))
        return True

    def _sse(self, c: _Conn, d: _Dir, ev: IoEvent, data: bytes, out: list) -> None:
        """SSE: lines in, one frame per event (data lines joined by newlines).
        An event longer than max_body is cut there (a truncated frame) and
        the rest of it skipped up to its blank line."""
        if not d.sse_lines:
            d.sse_first = ev.ktime_ns
        scan = max(0, len(d.sse_lines) - 3)  # a blank line can straddle the old end
        d.sse_lines += data
        while True:
            buf = d.sse_lines
            # an event ends at a blank line (LF, CRLF or CR line ends)
            i, n = buf.find(b"\n\n", scan), 2
            j = buf.find(b"\r\n\r\n", scan)
            if j >= 0 and (i < 0 or j < i):
                i, n = j, 4
            if i < 0:
                if len(buf) > self.max_body and not d.sse_skip:
                    self._sse_event(c, d, ev, bytes(buf), d.sse_off, out, truncated=True)
                    d.sse_off += len(buf)
                    buf.clear()
                    d.sse_skip = True
                elif d.sse_skip:
                    d.sse_off += max(0, len(buf) - 3)
                    del buf[:max(0, len(buf) - 3)]
                return
            scan = 0
            off = d.sse_off
            block = bytes(buf[:i])
            del buf[:i + n]
            d.sse_off += i + n
            if d.sse_skip:  # the end of an event that was cut
                d.sse_skip = False
                continue
            self._sse_event(c, d, ev, block, off, out)
            d.sse_first = ev.ktime_ns

    def _sse_event(self, c: _Conn, d: _Dir, ev: IoEvent, block: bytes, off: int, out: list,
                   truncated: bool = False) -> None:
        datas, event, eid = [], None, None
        comment = True
        for line in block.replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b":"):
                continue
            comment = False
            k, _, v = line.partition(b":")
            v = v[1:] if v.startswith(b" ") else v
            if k == b"data":
                datas.append(v)
            elif k == b"event":
                event = v.decode("utf-8", "replace")
            elif k == b"id":
                eid = v.decode("utf-8", "replace")
        if comment:
            self.stats["sse_comments"] += 1
            return
        self.stats["sse_events"] += 1
        payload = b"\n".join(datas)
        if event == "endpoint":  # HTTP+SSE (2024-11-05): where the client must POST
            self.endpoints[_path(payload.decode("utf-8", "replace").strip())] = self._conv(c)
            if len(self.endpoints) > 65536:
                del self.endpoints[next(iter(self.endpoints))]
            return
        if not payload.strip():
            return
        if _JSONRPC not in payload:
            self.stats["non_mcp_bodies"] += 1
            return
        info = msgspec.structs.replace(d.info, sse_event=event, sse_id=eid) if d.info else HttpInfo(
            sse_event=event, sse_id=eid)
        notes = d.notes + [f"SSE event longer than {self.max_body} bytes: cut here"] if truncated else d.notes
        out.append(self._frame(c, d, ev, payload, off, d.sse_first, not truncated, notes, info))

    def _ndjson(self, c: _Conn, d: _Dir, ev: IoEvent, out: list) -> None:
        buf = d.buf
        while True:
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > self.max_body:  # a line without end: cut, the rest of it is lost
                    d.notes = [f"line longer than {self.max_body} bytes: cut here"]
                    self._kill(c, ev, f"a JSON line longer than {self.max_body} bytes", out, "bad_encoding")
                break
            line = bytes(buf[:i])
            off = d.base
            del buf[:i + 1]
            d.base += i + 1
            if line.strip():
                if _JSONRPC in line:
                    c.mcp = True
                    out.append(self._frame(c, d, ev, line, off, ev.ktime_ns, True, d.notes, HttpInfo()))
                else:
                    self._not_mcp(c, ev)
                    if c.dead:
                        return

    # --- outputs --------------------------------------------------------------
    def _conv(self, c: _Conn) -> tuple:
        if c.conv is not None:
            return c.conv
        if c.sock is None:
            c.sock = self.socks.get(c.ident if c.kind == "tcp" else (c.last.dev if c.last else 0))
        if c.sock is not None:
            c.conv = conn_key(c.sock)  # settled: the endpoints do not change
            return c.conv
        c.local = (c.kind, c.pid, c.ident)  # endpoints unknown (yet): this process's view only
        return c.local

    def _frame(self, c: _Conn, d: _Dir, ev: IoEvent, data: bytes, offset: int, first: int, complete: bool,
               notes: list[str], info: HttpInfo | None = None) -> Frame:
        info = info or d.info or HttpInfo()
        is_request = info.status is None and d.info is not None and d.info.method is not None and not d.sse
        if d.state == "ndjson" or d.info is None:
            flow = None
        else:
            flow = C2S if is_request else S2C
        conv = own = self._conv(c)
        aliases: tuple = ()
        if info.session_id:  # revisions up to 2025-11-25: the session spans connections
            conv, aliases = ("mcp-session", info.session_id), (own,)
        elif is_request and info.target is not None:
            linked = self.endpoints.get(_path(info.target))
            if linked is not None:  # HTTP+SSE: the POST belongs to the SSE stream's session
                conv = linked
        if c.local is not None and own != c.local:
            # earlier frames went out under this process's own view (a TLS stream
            # not yet tied to its socket): the same conversation
            aliases += (c.local,)
        f = Frame(ev.pid, ev.tid, ev.comm, c.fd, c.kind, ev.direction, c.ident, ev.dev, first, ev.ktime_ns,
                  data, offset, complete, not complete or d.truncated, list(notes))
        f.flow, f.conv, f.aliases, f.dedup = flow, conv, aliases, (own, flow)
        f.http, f.exchange, f.peer = info, d.exch, c.sock
        return f

    def _stop(self, ev: IoEvent) -> None:
        if self.stop_stream is not None:
            try:
                self.stop_stream(ev.inode, ev.pid if ev.kind == "tls" else ev.dev)
            except Exception:
                pass

    def _kill(self, c: _Conn, ev: IoEvent, reason: str, out: list, counter: str = "not_http") -> None:
        """Not MCP over HTTP/1.1: say so once per connection (counted), stop
        parsing it, and stop the kernel sending it."""
        c.dead = True
        d = c.dirs[ev.direction]
        preview = self.redact(bytes(d.buf[:64]).decode("latin-1"))
        for x in c.dirs.values():
            x.state, x.buf = "dead", bytearray()
        sock = c.sock
        self._stop(ev)
        key = self._conv(c)
        if key in self.reported:  # its other end said so already
            return
        self.reported[key] = True
        if len(self.reported) > 4096:
            del self.reported[next(iter(self.reported))]
        self.stats[counter] += 1
        out.append(TransportNotice(self.wall(ev.ktime_ns), ev.ktime_ns, ev.pid, ev.comm, ev.fd, ev.kind, reason,
                                   endpoint(sock.local_addr, sock.local_port) if sock else None,
                                   endpoint(sock.remote_addr, sock.remote_port) if sock else None, preview))
