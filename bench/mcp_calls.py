#!/usr/bin/env python3
"""Benchmark: MCP tool calls through the official SDK, without a witness, under mcpwitness, and under mcp-snoop.

The official client drives tool calls as fast as it can against a server built
with the official SDK over stdio (or Streamable HTTP on a loopback port:
--transport http). Each round runs the server directly (the baseline), under
`mcpwitness run`, and with --snoop under mcp-snoop (PyPI: the userspace stdio
interceptor people put in front of a server instead), in an order rotated
round by round. Printed:

- calls per second each way, and the median of the per-round ratios to the
  baseline run of the same round (target: mcpwitness at most 3% slower, and
  ahead of mcp-snoop in every round);
- MCP messages lost (the client's count vs mcpwitness's records; target 0);
- the witness's CPU per call, measured on its own process over the calls
  only (its start and stop left out), and its peak memory.

    .venv/bin/python bench/mcp_calls.py [--calls 2000] [--rounds 5] [--quick]
        [--transport stdio|http] [--snoop] [--size N] [--mw-args '--no-store']
"""
import argparse
import json
import os
import shutil
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
BIN = os.path.dirname(sys.executable)
MW = os.path.join(BIN, "mcpwitness")
TICK = os.sysconf("SC_CLK_TCK")
BASE, WITNESS, SNOOP = "without", "mcpwitness", "mcp-snoop"


def child_usage(parent: int, name: str):
    """(pid, CPU seconds, peak RSS MiB) of parent's child whose command holds name."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            rest = st[st.rindex(")") + 2:].split()
            if int(rest[1]) != parent or name.encode() not in cmd:
                continue
            with open(f"/proc/{pid}/status") as f:
                hwm = next(int(x.split()[1]) for x in f if x.startswith("VmHWM"))
            return int(pid), (int(rest[11]) + int(rest[12])) / TICK, hwm / 1024
        except (OSError, ValueError, StopIteration):
            continue
    return None, None, None


def one_run(a, mode: str, out: str):
    """One run: (calls/s, the witness's CPU seconds over the calls, its peak RSS MiB)."""
    if a.transport == "http":
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        cmd = [sys.executable, HTTP_SERVER, "http", "127.0.0.1", str(port)]
    else:
        cmd = [sys.executable, SERVER]
    if mode == WITNESS:
        cmd = [MW, "run", "-q", "--jsonl", out, "--db", out + ".db", *a.mw_args.split(), "--"] + cmd
    elif mode == SNOOP:
        # its summary lines go to stderr and, with --verbose, every message in full to the file
        cmd = ["sh", "-c", 'exec "$0" "$@" 2>/dev/null', shutil.which("mcp-snoop", path=BIN) or "mcp-snoop",
               "--no-color", "--verbose", "--output", out + ".snoop", "--"] + cmd
    server = None
    if a.transport == "http":
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert server.stdout.readline().strip() == "listening"
        target = f"http://127.0.0.1:{port}/mcp"
    else:
        target = StdioServerParameters(command=cmd[0], args=cmd[1:])
    tool, args = ("big", lambda i: {"n": a.size}) if a.size else ("echo", lambda i: {"text": f"call {i}"})
    who = {WITNESS: "mcpwitness", SNOOP: "mcp-snoop"}.get(mode)
    me = os.getpid()

    async def main():
        async with Client(target) as c:
            await c.list_tools()
            _, before, _ = child_usage(me, who) if who else (None, None, None)
            t = time.perf_counter()
            for i in range(a.calls):
                await c.call_tool(tool, args(i))
            el = time.perf_counter() - t
            _, after, rss = child_usage(me, who) if who else (None, None, None)
            return el, (after - before if after is not None and before is not None else None), rss

    try:
        el, cpu, rss = anyio.run(main)
        return a.calls / el, cpu, rss
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


def paired(rates: dict, mode: str) -> list[float]:
    return [x / y for x, y in zip(rates[mode], rates[BASE])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one short round, to check that it works")
    ap.add_argument("--mw-args", default="", help="extra options for `mcpwitness run`, e.g. '--no-store'")
    ap.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                    help="stdio, or Streamable HTTP on a loopback port (the server tracked, the client not)")
    ap.add_argument("--snoop", action="store_true", help="also run the server under mcp-snoop (stdio only)")
    ap.add_argument("--size", type=int, default=0,
                    help="call the `big` tool for a result of this many bytes instead of `echo`")
    a = ap.parse_args()
    if a.snoop and a.transport != "stdio":
        ap.error("mcp-snoop is a stdio interceptor: --snoop needs --transport stdio")
    if a.quick:
        a.calls, a.rounds = 200, 1
    modes = [BASE, WITNESS] + ([SNOOP] if a.snoop else [])
    rates = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    rss, lost = [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                out = os.path.join(d, f"r{r}.jsonl")
                # a witnessed run leaves a child unloading the programs (~0.5 s of
                # kernel work): start every run on a quiet machine
                time.sleep(1.5)
                rate, c, m = one_run(a, mode, out)
                rates[mode].append(rate)
                if c is not None:
                    cpu[mode].append(c / a.calls)
                if mode != WITNESS:
                    continue
                rss.append(m)
                with open(out) as f:
                    recs = [json.loads(x) for x in f]
                # every call is a request and a response; plus discover and tools/list both ways
                lost.append(2 * a.calls + 4 - sum(1 for x in recs if x["type"] == "mcp"))
    how = "stdio" if a.transport == "stdio" else "Streamable HTTP (127.0.0.1)"
    what = f"`big` tool calls ({a.size}-byte results)" if a.size else "echo tool calls"
    print(f"{a.calls} {what} over {how}, official SDK client and server, {a.rounds} rounds (order rotated)")
    print(f"  without mcpwitness: {statistics.median(rates[BASE]):8.0f} calls/s (median)")
    print(f"  with mcpwitness:    {statistics.median(rates[WITNESS]):8.0f} calls/s (median)")
    if a.snoop:
        print(f"  with mcp-snoop:     {statistics.median(rates[SNOOP]):8.0f} calls/s (median)")
    for mode in modes[1:]:
        ratios = sorted(paired(rates, mode))
        r = statistics.median(ratios)
        label = "ratio" if mode == WITNESS else "mcp-snoop ratio"
        print(f"  {label}, median of per-round pairs: {r:.3f} ({(r - 1) * 100:+.1f}%"
              f"{', target >= -3%' if mode == WITNESS else ''}); "
              f"per-round range {(ratios[0] - 1) * 100:+.1f}% .. {(ratios[-1] - 1) * 100:+.1f}%")
    if a.snoop:
        ahead = sum(w > s for w, s in zip(rates[WITNESS], rates[SNOOP]))
        print(f"  mcpwitness ahead of mcp-snoop in {ahead} of {a.rounds} rounds")
    print(f"  MCP messages lost:  {max(lost)} (of {2 * a.calls + 4} per run)")
    if cpu[WITNESS]:
        print(f"  agent CPU per call: {statistics.median(cpu[WITNESS]) * 1e6:6.0f} us (over the calls only)   "
              f"peak RSS {max(rss):.0f} MiB (the 64 MiB ring buffer is counted twice: the kernel maps it twice)")
    if cpu.get(SNOOP):
        print(f"  mcp-snoop CPU per call: {statistics.median(cpu[SNOOP]) * 1e6:6.0f} us")


if __name__ == "__main__":
    main()
