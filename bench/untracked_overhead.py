#!/usr/bin/env python3
"""Benchmark (a): what mcpwitness costs processes it does NOT track.

Runs untracked workloads with mcpwitness's kernel programs loaded and not
loaded, alternating the two states round by round, and prints the median of
each and their ratio (same run, same machine). Target: under 2%.

    .venv/bin/python bench/untracked_overhead.py [--rounds 7] [--quick]
"""
import argparse
import subprocess
import sys
import time

from common import build, median, pct

from mcpwitness.kernel.loader import Kernel, LoadOptions


def micro(exe, iters):
    out = subprocess.run([exe, str(iters)], capture_output=True, text=True, check=True).stdout
    return float(out)  # ns per open+read+close, timed by the workload itself


def timed(cmd, reps=1):
    t = time.perf_counter()
    for _ in range(reps):
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="a short run to check that it works")
    ap.add_argument("--watch", action="store_true",
                    help="load in watch mode (every read on the host is checked for a JSON-RPC request)")
    ap.add_argument("--port", type=int, action="append", default=[],
                    help="also watch this TCP port (every read/write on the host pays an fd lookup)")
    a = ap.parse_args()
    rounds = 2 if a.quick else a.rounds
    iters = 50_000 if a.quick else 400_000
    exe = build("syscalls")
    py = sys.executable
    workloads = {
        "open+read+close loop (C), ns/iter": lambda: micro(exe, iters),
        "tar of /usr/include, s": lambda: timed("tar -cf - /usr/include 2>/dev/null | wc -c"),
        "python start + imports x10, s": lambda: timed(f"{py} -c 'import asyncio, json, http.client, email.parser'",
                                                       3 if a.quick else 10),
    }
    res = {name: {"off": [], "on": []} for name in workloads}
    for r in range(rounds):
        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        for state in order:
            k = Kernel.load(LoadOptions(watch=a.watch or bool(a.port), ports=tuple(a.port))) \
                if state == "on" else None
            try:
                for name, fn in workloads.items():
                    res[name][state].append(fn())
            finally:
                if k:
                    k.close()
    mode = f" watching port(s) {a.port}" if a.port else " in watch mode" if a.watch else ""
    print(f"untracked workloads, programs loaded{mode} vs not, "
          f"median of {rounds} rounds (alternating)")
    print(f"{'workload':38} {'not loaded':>12} {'loaded':>12} {'overhead':>10}")
    worst = 0.0
    for name, v in res.items():
        off, on = median(v["off"]), median(v["on"])
        worst = max(worst, on / off)
        print(f"{name:38} {off:12.4g} {on:12.4g} {pct(on / off):>10}")
    print(f"worst ratio: {worst:.4f} (target < 1.02)")


if __name__ == "__main__":
    main()
