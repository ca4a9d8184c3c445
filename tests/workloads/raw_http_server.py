"""Hand-written servers for the hard cases of HTTP capture:
    raw_http_server.py MODE PORT
  sse-chunks  answer a POST with an SSE stream (chunked) of three events,
              written a few bytes at a time
  pipelined   read two POSTs sent back to back, answer both in one write
  error       answer a POST with 500 and a plain-text body
  echo        not HTTP: echo every line back
  h2          an HTTP/2 server's first move: its SETTINGS frame
  secrets     answer a POST with secrets in its headers (Set-Cookie, Mcp-Session-Id) and body
  bad-status  answer three POSTs (keep-alive) with `HTTP/1.1 2²0 OK`, the third one
              after a line that is not HTTP at all
Prints "listening" once the port accepts connections; serves one connection."""
import json
import socket
import sys
import time

mode, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(4)
print("listening", flush=True)
c, _ = srv.accept()


def read_request(buf: bytes) -> tuple[bytes, bytes]:
    """One request (head and body) from buf plus what the socket brings; the rest."""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < n:
        rest += c.recv(65536)
    return rest[:n], rest[n:]


def response(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


if mode == "sse-chunks":
    body, _ = read_request(b"")
    rid = json.loads(body)["id"]
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    events = [{"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": i}}
              for i in (1, 2)] + [{"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "done"}]}}]
    stream = b": keep-alive comment\n\n"
    for i, e in enumerate(events):
        d = json.dumps(e)
        cut = d.index(", ") + 1  # data lines are joined by newlines: cut where JSON allows one
        stream += b"event: message\nid: %d\n" % i + b"".join(b"data: " + part.encode() + b"\n"
                                                       for part in (d[:cut], d[cut + 1:])) + b"\n"
    # multi-line data (the JSON split over two data: lines), chunked, 7 bytes per write
    for i in range(0, len(stream), 7):
        piece = stream[i:i + 7]
        c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.001)
    c.sendall(b"0\r\n\r\n")
elif mode == "pipelined":
    b1, rest = read_request(b"")
    b2, _ = read_request(rest)
    out = b"".join(response({"jsonrpc": "2.0", "id": json.loads(b)["id"], "result": {}}) for b in (b1, b2))
    c.sendall(out)
elif mode == "error":
    read_request(b"")
    c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
              b"server broke")
elif mode == "echo":
    for _ in range(3):
        data = c.recv(65536)
        if not data:
            break
        c.sendall(data)
elif mode == "secrets":
    body, _ = read_request(b"")
    out = json.dumps({"jsonrpc": "2.0", "id": json.loads(body)["id"],
                      "result": {"content": [{"type": "text", "text": "config: api_key=SECRETRESULT4242"}]}}).encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: sid=SECRETSETCOOKIE77\r\n"
              b"Mcp-Session-Id: SECRETSESSIONID55\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
elif mode == "bad-status":
    rest = b""
    for i in range(3):
        body, rest = read_request(rest)
        r = response({"jsonrpc": "2.0", "id": json.loads(body)["id"], "result": {"content": []}})
        r = r.replace(b"200 OK", "2\u00b20 OK".encode(), 1)
        if i == 2:
            r = b"NOT HTTP\r\nX: y\r\n\r\n" + r
        c.sendall(r)
elif mode == "h2":
    c.recv(65536)
    c.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
    c.recv(65536)
time.sleep(0.2)
c.close()
