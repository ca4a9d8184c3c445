#!/usr/bin/env python3
"""The agent under pressure: for each load, `mcpwitness run` records it, and this
prints the agent's peak memory (its own ru_maxrss), what the kernel produced, and
what was lost at which stage (ring full, decoder, streams). Every loss must be
counted; none may be silent.

    .venv/bin/python bench/pressure.py                   # the full sizes (minutes)
    .venv/bin/python bench/pressure.py --scale 0.05      # smaller (what the test runs)
    .venv/bin/python bench/pressure.py --only forks,ring

Loads:
  forks     a tracked tree forks 10,000 short processes
  opens     it opens one file 1,000,000 times
  response  a stdio server answers one request with a 1 GiB line
  ring      the opens again, with a 64 KiB ring: filled on purpose
  sessions  1,000 concurrent HTTP sessions to one server (a POST each, kept open)
  call      100,000 opens inside one tool call of an SDK server, then a plain call: what the
            first call's record keeps, and that both are attributed right
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SIZES = {"forks": 10_000, "opens": 1_000_000, "response": 1 << 30, "ring": 1_000_000, "sessions": 1_000,
         "call": 100_000}

RESPONDER = r'''
import json, os, sys
n = int(sys.argv[1])
line = sys.stdin.buffer.readline()
mid = json.loads(line)["id"]
out = sys.stdout.fileno()
head = b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % mid
os.write(out, head)
chunk = b"x" * (1 << 20)
left = n
while left > 0:
    left -= os.write(out, chunk[:min(left, len(chunk))])
os.write(out, b'"}]}}\n')
'''

HTTP_SERVER = r'''
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(2048)
print(srv.getsockname()[1], flush=True)
conns = []
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += c.recv(65536)
    import json
    mid = json.loads(body)["id"]
    out = b'{"jsonrpc":"2.0","id":%d,"result":{}}' % mid
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
    conns.append(c)  # kept open: concurrent sessions
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def record(argv: list[str], mw_args: list[str] = (), stdin=None, stdout=None) -> dict:
    """Run argv under `mcpwitness run`; the agent's peak RSS and its records."""
    out = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False).name
    p = subprocess.Popen([MW, "run", "-q", "--jsonl", out, "--no-store", *mw_args, "--", *argv],
                         stdin=stdin, stdout=stdout)
    return {"proc": p, "out": out}


def finish(r: dict, keep=("call",), path: str | None = None) -> dict:
    """Wait for the agent; its peak memory is the one it reports (VmHWM since its exec: the
    rusage of a child also counts what this process held when it forked it). What was kept is
    counted from the lines it wrote, by type (and the opens of `path`), not from its counters."""
    r["proc"].wait()
    recs, stats, lines, opened = [], None, {}, 0
    with open(r["out"]) as f:
        for line in f:
            x = json.loads(line)
            lines[x["type"]] = lines.get(x["type"], 0) + 1
            if x["type"] == "stats":
                stats = x
            elif x["type"] in keep:
                recs.append(x)
            if path is not None and x["type"] == "open" and x.get("path") == path:
                opened += 1
    os.unlink(r["out"])
    return {"status": r["proc"].returncode, "maxrss_mib": stats["agent_peak_rss_bytes"] / (1 << 20),
            "stats": stats, "records": recs, "lines": lines, "opened": opened}


def losses(stats: dict) -> dict:
    """Every counter that says something was dropped, by stage; zeros left out."""
    k, lost, dec, st = stats["kernel"], stats["lost"], stats["decoder"], stats["streams"]
    found = {
        "kernel: ring full (events)": k["ringbuf_full_events"],
        "kernel: ring full (chunks)": k["ringbuf_full_chunks"],
        "kernel: process map full": k["proc_map_full"],
        "kernel: payload cut at io_max": k["io_truncated"],
        "consumer: events lost": lost["events"],
        "consumer: chunks lost": lost["event_chunks"],
        "decoder: incomplete": dec["incomplete"],
        "decoder: bad records": dec["bad_records"],
        "streams: lines cut at max frame": st["oversized"],
        "streams: writes cut short": st.get("cut", 0),
        "auditor: events left out of call records (written on their own)":
            stats["calls"].get("events_not_in_records", 0),
    }
    return {n: v for n, v in found.items() if v}


def forks(n: int) -> dict:
    r = finish(record([build("pressure"), "forks", str(n)]))
    r["produced"], r["kept"] = n, r["lines"].get("fork", 0)
    r["kept_exits"] = r["lines"].get("exit", 0)
    return r


def opens(n: int, ring: str | None = None) -> dict:
    with tempfile.NamedTemporaryFile() as f:
        args = ["--ring-size", ring] if ring else []
        r = finish(record([build("pressure"), "opens", str(n), f.name], args), path=f.name)
    r["produced"], r["kept"] = n, r["opened"]
    return r


def response(n: int) -> dict:
    code = os.path.join(tempfile.gettempdir(), "mw-pressure-responder.py")
    with open(code, "w") as f:
        f.write(RESPONDER)
    r = record([sys.executable, code, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p = r["proc"]
    p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": "big", "arguments": {}}}).encode() + b"\n")
    p.stdin.close()
    got = 0
    while d := p.stdout.read(1 << 20):
        got += len(d)
    res = finish(r)
    calls = [x for x in res["records"] if x["type"] == "call"]
    res["produced"], res["kept"] = got, len(calls)
    res["call"] = calls[0] if calls else None
    return res


def sessions(n: int) -> dict:
    code = os.path.join(tempfile.gettempdir(), "mw-pressure-http.py")
    with open(code, "w") as f:
        f.write(HTTP_SERVER)
    r = record([sys.executable, code], stdout=subprocess.PIPE)
    port = int(r["proc"].stdout.readline())
    socks, answered = [], 0
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                           "params": {"name": "t", "arguments": {}}}).encode()
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        if b"200 OK" in s.recv(65536):
            answered += 1
    time.sleep(0.5)
    r["proc"].terminate()  # run passes SIGTERM to the server and stops
    for s in socks:
        s.close()
    res = finish(r)
    calls = [x for x in res["records"] if x["type"] == "call" and x["complete"]]
    res["produced"], res["kept"] = answered, len(calls)
    return res


def call(n: int) -> dict:
    """n opens inside one tool call (an SDK server and client), then a call that opens one
    file: the records of both."""
    import anyio
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from mcp_client import RecordingStdio, client
    out = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False).name
    with tempfile.NamedTemporaryFile() as f, tempfile.NamedTemporaryFile() as g:
        t = RecordingStdio(MW, ["run", "-q", "--jsonl", out, "--no-store", "--", sys.executable,
                                os.path.join(ROOT, "bench", "workloads", "pressure_server.py")])

        async def go():
            async with client(t) as c:
                await c.call_tool("run", {"argv": [build("pressure"), "opens", str(n), f.name]})
                await c.call_tool("run", {"argv": [build("pressure"), "opens", "1", g.name]})

        anyio.run(go)
        res = finish({"proc": _Done(), "out": out}, keep=("call",))
        calls = [x for x in res["records"] if x["type"] == "call" and x["method"] == "tools/call"]
        res["calls"] = calls
        res["files"] = (f.name, g.name)
    big = [e for e in calls[0]["timeline"] if e["type"] == "open" and e.get("path") == f.name] if calls else []
    res["produced"], res["kept"] = n, len(big)
    return res


class _Done:
    """finish() for an agent the SDK client already waited for."""
    returncode = 0

    def wait(self):
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (default 1)")
    ap.add_argument("--only", help="comma-separated loads: " + ", ".join(SIZES))
    a = ap.parse_args()
    todo = a.only.split(",") if a.only else list(SIZES)
    print("| load | size | agent peak RSS | kept | losses (counted, by stage) |\n|---|---|---|---|---|")
    for name in todo:
        n = max(1, int(SIZES[name] * a.scale))
        t0 = time.monotonic()
        r = {"forks": lambda: forks(n), "opens": lambda: opens(n), "response": lambda: response(n),
             "ring": lambda: opens(n, "64K"), "sessions": lambda: sessions(n), "call": lambda: call(n)}[name]()
        took = time.monotonic() - t0
        print(f"| {name} | {n:,} | {r['maxrss_mib']:.0f} MiB | {r['kept']:,} of {r['produced']:,} "
              f"| {losses(r['stats']) or 'none'} ({took:.0f} s) |", flush=True)


if __name__ == "__main__":
    main()
