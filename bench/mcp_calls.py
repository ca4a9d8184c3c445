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
- the witness's cost per call: its own process's CPU from the first call until
  it has written the records of the last one (its backlog counts, its start and
  stop do not), plus its BPF programs' run time over the same span
  (kernel.bpf_stats_enabled, read with bpftool: time charged to the client's
  and the server's syscalls), and its peak memory;
- with --snoop, mcp-snoop in both its modes, each labelled: its default (one
  line per message) and --verbose (every message's JSON, pretty-printed).

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
BASE, WITNESS, SNOOP, SNOOP_V = "without", "mcpwitness", "mcp-snoop", "mcp-snoop --verbose"
LABEL = {WITNESS: "mcpwitness", SNOOP: "mcp-snoop (its default: one line per message)",
         SNOOP_V: "mcp-snoop --verbose (every message's JSON)"}
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def bpf_run_ns(pid: int) -> int | None:
    """The run time (ns, kernel.bpf_stats_enabled) of the BPF programs process pid holds, summed."""
    try:
        p = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30)
        progs = json.loads(p.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    ids = set()
    try:   # the programs the process holds: prog_id in its fds' fdinfo (bpftool may not list pids)
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    ids.update(int(ln.split()[1]) for ln in f if ln.startswith("prog_id:"))
            except OSError:
                continue
    except OSError:
        return None
    mine = [x for x in progs if x.get("id") in ids]
    return sum(x.get("run_time_ns", 0) for x in mine) if mine else None


def drained(out: str, want: int, timeout: float = 60.0) -> bool:
    """Wait until the agent has written `want` MCP records: its backlog after the last call."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(out, "rb") as f:
                if f.read().count(b'"type":"mcp"') >= want:
                    return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


def child_pid(parent: int, name: str) -> int | None:
    """The pid of parent's child whose command holds name."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if int(st[st.rindex(")") + 2:].split()[1]) == parent and name.encode() in cmd:
                return int(pid)
        except (OSError, ValueError, IndexError):
            continue
    return None


def one_run(a, mode: str, out: str):
    """One run: (calls/s, the witness's CPU seconds from the first call until its records of the
    last one are written, BPF programs' run seconds over the same span, peak RSS MiB)."""
    if a.transport == "http":
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        cmd = [sys.executable, HTTP_SERVER, "http", "127.0.0.1", str(port)]
    else:
        cmd = [sys.executable, SERVER]
    if mode == WITNESS:
        cmd = [MW, "run", "-q", "--jsonl", out, "--db", out + ".db", *a.mw_args.split(), "--"] + cmd
    elif mode in (SNOOP, SNOOP_V):
        # its summary lines go to stderr and the file; with --verbose, every message in full too
        cmd = ["sh", "-c", 'exec "$0" "$@" 2>/dev/null', shutil.which("mcp-snoop", path=BIN) or "mcp-snoop",
               "--no-color", *(["--verbose"] if mode == SNOOP_V else []), "--output", out + ".snoop", "--"] + cmd
    server = None
    if a.transport == "http":
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert server.stdout.readline().strip() == "listening"
        target = f"http://127.0.0.1:{port}/mcp"
    else:
        target = StdioServerParameters(command=cmd[0], args=cmd[1:])
    tool, args = ("big", lambda i: {"n": a.size}) if a.size else ("echo", lambda i: {"text": f"call {i}"})
    who = {WITNESS: "mcpwitness", SNOOP: "mcp-snoop", SNOOP_V: "mcp-snoop"}.get(mode)

    async def main():
        async with Client(target) as c:
            await c.list_tools()
            if mode == WITNESS:   # its start-up records first, so that its backlog is only the calls'
                drained(out, 2)
            # the witness: the HTTP server's process is it; over stdio, the client's child
            pid = (server.pid if server is not None else child_pid(os.getpid(), who)) if who else None
            before = proc_cpu(pid) if pid else None
            bpf0 = bpf_run_ns(pid) if mode == WITNESS and pid else None
            t = time.perf_counter()
            for i in range(a.calls):
                await c.call_tool(tool, args(i))
            el = time.perf_counter() - t
            if mode == WITNESS:   # the agent's drain counts: every record of the calls written
                drained(out, 2 * a.calls + 4)
            after = proc_cpu(pid) if pid else None
            bpf1 = bpf_run_ns(pid) if bpf0 is not None else None
            rss = proc_rss(pid) if pid else None
            return (el, (after - before if after is not None and before is not None else None),
                    (bpf1 - bpf0) / 1e9 if bpf1 is not None else None, rss)

    try:
        el, cpu, bpf, rss = anyio.run(main)
        return a.calls / el, cpu, bpf, rss
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


def proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / TICK
    except (OSError, ValueError, IndexError):
        return None


def proc_rss(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        return None


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
    modes = [BASE, WITNESS] + ([SNOOP, SNOOP_V] if a.snoop else [])
    rates = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    bpf: list[float] = []
    rss, lost = [], []
    try:
        with open(STATS) as f:
            stats_before = f.read().strip()
        with open(STATS, "w") as f:   # the BPF programs' run time, charged to whoever made the syscall
            f.write("1")
    except OSError:
        stats_before = None
    try:
        with tempfile.TemporaryDirectory() as d:
            for r in range(a.rounds):
                for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                    out = os.path.join(d, f"r{r}.jsonl")
                    # a witnessed run leaves a child unloading the programs (~0.5 s of
                    # kernel work): start every run on a quiet machine
                    time.sleep(1.5)
                    rate, c, b, m = one_run(a, mode, out)
                    rates[mode].append(rate)
                    if c is not None:
                        cpu[mode].append(c / a.calls)
                    if mode != WITNESS:
                        continue
                    if b is not None:
                        bpf.append(b / a.calls)
                    rss.append(m)
                    with open(out) as f:
                        recs = [json.loads(x) for x in f]
                    # every call is a request and a response; plus discover and tools/list both ways
                    lost.append(2 * a.calls + 4 - sum(1 for x in recs if x["type"] == "mcp"))
    finally:
        if stats_before is not None:
            with open(STATS, "w") as f:
                f.write(stats_before)
    how = "stdio" if a.transport == "stdio" else "Streamable HTTP (127.0.0.1)"
    what = f"`big` tool calls ({a.size}-byte results)" if a.size else "echo tool calls"
    print(f"{a.calls} {what} over {how}, official SDK client and server, {a.rounds} rounds (order rotated)")
    print(f"  {'without a witness':44} {statistics.median(rates[BASE]):8.0f} calls/s (median)")
    for mode in modes[1:]:
        print(f"  {'with ' + LABEL[mode]:44} {statistics.median(rates[mode]):8.0f} calls/s (median)")
    for mode in modes[1:]:
        ratios = sorted(paired(rates, mode))
        r = statistics.median(ratios)
        print(f"  ratio, {LABEL[mode]}, median of per-round pairs: {r:.3f} ({(r - 1) * 100:+.1f}%"
              f"{', target >= -3%' if mode == WITNESS else ''}); "
              f"per-round range {(ratios[0] - 1) * 100:+.1f}% .. {(ratios[-1] - 1) * 100:+.1f}%")
    for mode in modes[2:]:
        ahead = sum(w > s for w, s in zip(rates[WITNESS], rates[mode]))
        print(f"  mcpwitness ahead of {LABEL[mode]} in {ahead} of {a.rounds} rounds")
    print(f"  MCP messages lost:  {max(lost)} (of {2 * a.calls + 4} per run)")
    if cpu[WITNESS]:
        agent = statistics.median(cpu[WITNESS]) * 1e6
        kern = statistics.median(bpf) * 1e6 if bpf else None
        print(f"  mcpwitness cost per call: agent CPU {agent:6.0f} us (first call to its last record written)"
              + (f" + BPF programs {kern:5.1f} us (kernel.bpf_stats_enabled, charged to the client's and "
                 f"server's syscalls) = {agent + kern:6.0f} us" if kern is not None else
                 " (BPF run time not measured: needs bpftool and kernel.bpf_stats_enabled)"))
        print(f"  peak RSS {max(rss):.0f} MiB (the 64 MiB ring buffer is counted twice: the kernel maps it twice)")
    for mode in (SNOOP, SNOOP_V):
        if cpu.get(mode):
            print(f"  {LABEL[mode]} CPU per call: {statistics.median(cpu[mode]) * 1e6:6.0f} us")


if __name__ == "__main__":
    main()
