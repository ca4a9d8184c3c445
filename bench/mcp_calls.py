#!/usr/bin/env python3
"""Benchmark: MCP tool calls through the official SDK, with and without mcpwitness.

The official client drives `echo` tool calls as fast as it can against a
server built with the official SDK over stdio (or Streamable HTTP on a
loopback port: --transport http), launched directly (baseline) or under
`mcpwitness run`, alternating, same run. Printed: calls per second
both ways and their ratio (target: at most 3% slower), MCP messages lost
(client's own count vs mcpwitness's records; target 0), and the agent's CPU
time and peak memory.

    .venv/bin/python bench/mcp_calls.py [--calls 2000] [--rounds 3] [--quick] [--transport stdio|http]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import anyio
from mcp import Client, StdioServerParameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "tests", "workloads", "sdk_server.py")
HTTP_SERVER = os.path.join(ROOT, "tests", "workloads", "sdk_http_server.py")
MW = os.path.join(os.path.dirname(sys.executable), "mcpwitness")
MW_ARGS: list[str] = []  # --mw-args
TICK = os.sysconf("SC_CLK_TCK")


def agent_usage():
    """CPU seconds and peak RSS (MiB) of our mcpwitness child, read while it runs."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                st = f.read()
            rest = st[st.rindex(")") + 2:].split()
            if int(rest[1]) != me or "mcpwitness" not in st[:st.rindex(")")]:
                continue
            with open(f"/proc/{name}/status") as f:
                hwm = next(int(x.split()[1]) for x in f if x.startswith("VmHWM"))
            return (int(rest[11]) + int(rest[12])) / TICK, hwm / 1024
        except (OSError, ValueError, StopIteration):
            continue
    return None, None


def one_run(n, witness, out, transport="stdio"):
    if transport == "http":
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        cmd = [sys.executable, HTTP_SERVER, "http", "127.0.0.1", str(port)]
    else:
        cmd = [sys.executable, SERVER]
    if witness:
        cmd = [MW, "run", "-q", "--jsonl", out, "--db", out + ".db", *MW_ARGS, "--"] + cmd
    usage = [None, None]
    server = None
    if transport == "http":
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert server.stdout.readline().strip() == "listening"
        target = f"http://127.0.0.1:{port}/mcp"
    else:
        target = StdioServerParameters(command=cmd[0], args=cmd[1:])

    async def main():
        async with Client(target) as c:
            await c.list_tools()
            t = time.perf_counter()
            for i in range(n):
                await c.call_tool("echo", {"text": f"call {i}"})
            el = time.perf_counter() - t
            if witness:
                usage[:] = agent_usage()
            return el

    try:
        return anyio.run(main), usage
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mw-args", default="", help="extra options for `mcpwitness run`, e.g. '--no-store'")
    ap.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                    help="stdio, or Streamable HTTP on a loopback port (the server tracked, the client not)")
    a = ap.parse_args()
    MW_ARGS.extend(a.mw_args.split())
    n, rounds = (200, 1) if a.quick else (a.calls, a.rounds)
    base, wit, lost, cpu, rss = [], [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds):
            for witness in ((False, True) if r % 2 == 0 else (True, False)):
                out = os.path.join(d, f"r{r}.jsonl")
                # a witnessed run leaves a child unloading the programs (~0.5 s of
                # kernel work): start every run on a quiet machine
                time.sleep(1.5)
                el, (c, m) = one_run(n, witness, out, a.transport)
                if not witness:
                    base.append(n / el)
                    continue
                wit.append(n / el)
                cpu.append(c)
                rss.append(m)
                with open(out) as f:
                    recs = [json.loads(x) for x in f]
                # every call is a request and a response; plus discover and tools/list both ways
                lost.append(2 * n + 4 - sum(1 for x in recs if x["type"] == "mcp"))
    b, w = statistics.median(base), statistics.median(wit)
    # each round's two runs sit side by side in time: their ratio cancels the
    # machine's drift; the median of the per-round ratios is the figure
    ratios = sorted(x / y for x, y in zip(wit, base))
    r = statistics.median(ratios)
    how = "stdio" if a.transport == "stdio" else "Streamable HTTP (127.0.0.1)"
    print(f"{n} echo tool calls over {how}, official SDK client and server, {rounds} rounds (alternating order)")
    print(f"  without mcpwitness: {b:8.0f} calls/s (median)")
    print(f"  with mcpwitness:    {w:8.0f} calls/s (median)")
    print(f"  ratio, median of per-round pairs: {r:.3f} ({(r - 1) * 100:+.1f}%, target >= -3%); "
          f"per-round range {(ratios[0] - 1) * 100:+.1f}% .. {(ratios[-1] - 1) * 100:+.1f}%")
    print(f"  MCP messages lost:  {max(lost)} (of {2 * n + 4} per run)")
    print(f"  agent CPU time:     {statistics.median(cpu):.2f} s per run   peak RSS {max(rss):.0f} MiB"
          " (RSS counts the 64 MiB ring buffer twice: the kernel maps it twice in a row)")


if __name__ == "__main__":
    main()
