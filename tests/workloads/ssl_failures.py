"""OpenSSL's failure returns, through the system's real libssl (ctypes), for
the TLS probes to see and leave out:
    ssl_failures.py server CERT KEY PORT      (untracked: Python's ssl module)
    ssl_failures.py client PORT SERVER_PID OUT plain|ex

The client calls SSL_read/SSL_write (plain: an int, -1 on failure, which
libssl returns as `mov $0xffffffff,%eax`) or SSL_read_ex/SSL_write_ex (ex:
1 or 0, the count through a pointer), and provokes, on one connection:
  - WANT_READ: reads on a non-blocking socket before the server said anything;
  - WANT_WRITE: a large request written on a non-blocking socket the server
    does not read yet, then written again, whole, once the server reads;
  - EOF: a read after the server's close_notify (SSL_ERROR_ZERO_RETURN);
and, on a second connection the server drops without close_notify, a read
that fails with SSL_ERROR_SYSCALL or SSL_ERROR_SSL. Before every failing
call the read buffer holds a stale, well-formed HTTP answer, so a probe that
took a failure for a read would record it. The only calls that move bytes:
one request written, one answer read. OUT gets what each call returned.

Before its first TLS call the client waits until the witness's uprobe is in
SSL_read (the first byte of the function turns into int3 in this process),
so the test does not race the attach."""
import ctypes
import json
import os
import signal
import socket
import ssl
import sys
import time

REQUEST_BODY = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": "upload", "arguments": {"blob": "q" * (2 << 20)}}}).encode()
ANSWER_BODY = json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "stored"}]}}).encode()
STALE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 56\r\n\r\n"
         b'{"jsonrpc":"2.0","id":99,"result":{"stale":"bytes!!!!"}}')


def http(head: bytes, body: bytes) -> bytes:
    return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def serve(cert, key, port):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # small, so that the client's write waits
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    print("listening", flush=True)
    raw, _ = srv.accept()
    c = ctx.wrap_socket(raw, server_side=True)
    signal.sigwait({signal.SIGUSR1})  # the client has seen WANT_READ and WANT_WRITE
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += c.recv(1 << 20)
    assert body == REQUEST_BODY, len(body)
    c.sendall(http(b"HTTP/1.1 200 OK\r\n", ANSWER_BODY))
    c.unwrap()  # close_notify: the client's next read is a clean EOF
    c.close()
    raw, _ = srv.accept()  # the second connection: handshake, then dropped without close_notify
    c = ctx.wrap_socket(raw, server_side=True)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # closed with RST
    c.close()  # (an SSLSocket's close sends no close_notify)
    srv.close()


class Client:
    def __init__(self, ex: bool):
        self.lib = lib = ctypes.CDLL("libssl.so.3")
        for name, res, args in (("TLS_client_method", ctypes.c_void_p, []),
                                ("SSL_CTX_new", ctypes.c_void_p, [ctypes.c_void_p]),
                                ("SSL_new", ctypes.c_void_p, [ctypes.c_void_p]),
                                ("SSL_set_fd", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
                                ("SSL_connect", ctypes.c_int, [ctypes.c_void_p]),
                                ("SSL_shutdown", ctypes.c_int, [ctypes.c_void_p]),
                                ("SSL_get_error", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
                                ("SSL_read", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]),
                                ("SSL_write", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]),
                                ("SSL_read_ex", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                                               ctypes.POINTER(ctypes.c_size_t)]),
                                ("SSL_write_ex", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                                                ctypes.POINTER(ctypes.c_size_t)])):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        self.ex = ex
        self.ctx = lib.SSL_CTX_new(lib.TLS_client_method())  # verify none: the client's default
        self.log = []
        self.buf = ctypes.create_string_buffer(1 << 16)

    def wait_probed(self, timeout):
        """The uprobe in this process: the function's first byte is int3."""
        fn = self.lib.SSL_read_ex if self.ex else self.lib.SSL_read
        addr = ctypes.cast(fn, ctypes.c_void_p).value
        end = time.monotonic() + timeout
        while ctypes.string_at(addr, 1) != b"\xcc":
            if time.monotonic() > end:
                raise SystemExit("the TLS uprobes were never attached in this process")
            time.sleep(0.01)

    def connect(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        self.sock.connect(("127.0.0.1", port))
        self.ssl = self.lib.SSL_new(self.ctx)
        self.lib.SSL_set_fd(self.ssl, self.sock.fileno())
        rc = self.lib.SSL_connect(self.ssl)
        assert rc == 1, ("handshake", rc, self.lib.SSL_get_error(self.ssl, rc))

    def call(self, what, buf, n):
        """One SSL_read or SSL_write: (bytes moved, SSL_get_error)."""
        if self.ex:
            done = ctypes.c_size_t(0)
            f = self.lib.SSL_read_ex if what == "read" else self.lib.SSL_write_ex
            rc = f(self.ssl, buf, n, ctypes.byref(done))
            moved = done.value if rc == 1 else 0
        else:
            f = self.lib.SSL_read if what == "read" else self.lib.SSL_write
            rc = moved = f(self.ssl, buf, n)
        err = 0 if rc > 0 else self.lib.SSL_get_error(self.ssl, rc)
        self.log.append({"call": what, "rc": rc, "moved": moved if rc > 0 else 0, "error": err})
        return (moved if rc > 0 else 0), err

    def stale_read(self):
        ctypes.memmove(self.buf, STALE, len(STALE))
        return self.call("read", self.buf, len(self.buf))


def client(port, server_pid, out, ex):
    c = Client(ex)
    c.wait_probed(float(os.environ.get("MW_PROBE_WAIT", "60")))
    c.connect(port)
    c.sock.setblocking(False)
    for _ in range(3):
        assert c.stale_read() == (0, 2)  # SSL_ERROR_WANT_READ
    request = http(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n", REQUEST_BODY)
    req = ctypes.create_string_buffer(request, len(request))
    moved, err = c.call("write", req, len(request))
    assert (moved, err) == (0, 3), (moved, err)  # SSL_ERROR_WANT_WRITE: the server reads nothing yet
    os.kill(server_pid, signal.SIGUSR1)
    c.sock.setblocking(True)
    while True:  # the same buffer again (OpenSSL's rule), until it is all written
        moved, err = c.call("write", req, len(request))
        if moved:
            break
        assert err == 3, err
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(ANSWER_BODY):
        n, err = c.call("read", c.buf, len(c.buf))
        assert n, ("the answer was cut", err, answer)
        answer += c.buf.raw[:n]
    assert c.stale_read() == (0, 6)  # SSL_ERROR_ZERO_RETURN: close_notify
    c.lib.SSL_shutdown(c.ssl)  # ours back: the server's unwrap waits for it
    c.connect(port)
    moved, err = c.stale_read()  # dropped without close_notify
    assert moved == 0 and err in (1, 5), err  # SSL_ERROR_SSL or SSL_ERROR_SYSCALL
    with open(out, "w") as f:
        json.dump({"calls": c.log, "request_body": len(REQUEST_BODY), "answer": answer.decode()}, f)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "ex")
