#!/usr/bin/env python3
"""Benchmark (a): what mcpwitness costs processes it does NOT track.

Runs untracked workloads with mcpwitness's kernel programs not loaded and
loaded in each mode asked for (plain `run`, `watch`, `watch --port`) with each
syscall hook set asked for (the per-syscall tracepoints, the tp_btf/sys_exit
dispatcher), rotating the order round by round. Prints, per workload and
state, the median figure and the median of the per-round ratios against "not
loaded" measured in the same round (paired). Target: +10% on the C loop, the
realistic workloads within noise.

The "floor/HOOKS" states load empty programs on the same syscall hooks
(bench/workloads/floor.bpf.c): what the hook mechanism itself costs every
process, before any of mcpwitness's work.

    .venv/bin/python bench/untracked_overhead.py [--rounds 7] [--quick]
        [--modes floor,run,watch,port] [--hooks syscalls,dispatch] [--port 18999] [--object PATH]
"""
import argparse
import subprocess
import sys
import time

from common import Floor, build, median, pct

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
    ap.add_argument("--modes", default="floor,run,watch,port",
                    help="comma-separated: floor (empty programs on the same hooks), run (tracking only), watch (every read on the host is checked for a "
                         "JSON-RPC request), port (watch, and every read/write pays an fd lookup)")
    ap.add_argument("--port", type=int, default=18999, help="the port watched in the port mode")
    ap.add_argument("--hooks", default=None,
                    help="the syscall hook sets to compare, comma-separated (fexit, dispatch, syscalls; "
                         "default: each this kernel loads)")
    ap.add_argument("--iters", type=int, help="iterations of the C loop (default 400000, quick 50000)")
    ap.add_argument("--workloads", default="c,tar,python", help="comma-separated: c, tar, python")
    ap.add_argument("--object", help="the BPF object to load (default: the package's)")
    a = ap.parse_args()
    rounds = 2 if a.quick else a.rounds
    iters = a.iters or (50_000 if a.quick else 400_000)
    if a.hooks is None:
        from mcpwitness.kernel.loader import fentry_works
        a.hooks = "fexit,dispatch,syscalls" if fentry_works() else "dispatch,syscalls"
    exe = build("syscalls")
    py = sys.executable
    workloads = {
        "open+read+close loop (C), ns/iter": ("c", lambda: micro(exe, iters)),
        "tar of /usr/include, s": ("tar", lambda: timed("tar -cf - /usr/include 2>/dev/null | wc -c")),
        "python start + imports x10, s": ("python", lambda: timed(
            f"{py} -c 'import asyncio, json, http.client, email.parser'", 3 if a.quick else 10)),
    }
    chosen = a.workloads.split(",")
    workloads = {name: fn for name, (key, fn) in workloads.items() if key in chosen}
    loaded = [f"{m}/{h}" for m in a.modes.split(",") if m for h in a.hooks.split(",") if h]
    states = ["off", *loaded]
    res = {name: {st: [] for st in states} for name in workloads}
    for fn in workloads.values():  # warm the page cache: the first tar reads from disk
        fn()
    for r in range(rounds):
        order = states[r % len(states):] + states[:r % len(states)]
        for state in order:
            k = None
            if state != "off":
                mode, hooks = state.split("/")
                k = Floor(hooks) if mode == "floor" else Kernel.load(LoadOptions(watch=mode != "run", ports=(a.port,) if mode == "port" else (),
                                            hooks=hooks, ring_size=1 << 20), path=a.object)
            try:
                for name, fn in workloads.items():
                    res[name][state].append(fn())
            finally:
                if k:
                    k.close()
    print(f"untracked workloads, programs not loaded vs loaded (mode/syscall hooks; port: {a.port}), "
          f"{rounds} rounds (order rotated); overhead: median of the per-round ratios to 'not loaded'")
    print(f"{'workload':38} {'state':15} {'median':>10} {'overhead':>10} {'per-round range':>22}")
    worst = {h: 0.0 for h in loaded}
    for name, v in res.items():
        print(f"{name:38} {'off':15} {median(v['off']):10.4g}")
        for h in loaded:
            ratios = [on / off for on, off in zip(v[h], v["off"])]
            m = median(ratios)
            worst[h] = max(worst[h], m)
            print(f"{'':38} {h:15} {median(v[h]):10.4g} {pct(m):>10} "
                  f"{pct(min(ratios)) + ' .. ' + pct(max(ratios)):>22}")
    print("worst overhead per state: " + ", ".join(f"{h} {pct(w)}" for h, w in worst.items())
          + " (target: +10% on the C loop)")


if __name__ == "__main__":
    main()
