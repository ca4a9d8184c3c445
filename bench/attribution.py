#!/usr/bin/env python3
"""Benchmark: how well kernel events are attributed to the call that caused them.

N tool calls overlap on one server (launched under `mcpwitness run`, driven by
the official SDK client); each call opens a file unique to it. For every such
open, the call records say where it went, by the kind of evidence: exact (the
only request in flight), thread (thread evidence), argument (timing left
several candidates and only one call's arguments name the file: a labelled
heuristic, src/mcpwitness/decode/evidence.py), ambiguous (shared between
overlapping calls, its own among the candidates), wrong (in another call's
record with a certain kind), missing (in no record). Targets: 0 wrong; 100%
right for a server that handles one request per thread; the ambiguous share
reported. Scenarios: the SDK server (sync tools on its thread pool, async
tools on its event loop; file names absolute, relative or absent from the
arguments), a thread-per-request server, the Node filesystem server (libuv's
thread pool), and Streamable HTTP with 10 clients at once.

    .venv/bin/python bench/attribution.py [--calls 20] [--delay 0.05] [--scenario NAME ...]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile

import anyio
from mcp import Client, StdioServerParameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "tests", "workloads")
MW = os.path.join(os.path.dirname(sys.executable), "mcpwitness")

SCENARIOS = {
    # name: (server, tool, client mode, concurrent?)
    "sdk-sequential": ("audit_server.py", "touch_sync", "auto", False),
    "sdk-async-overlapping": ("audit_server.py", "touch_async", "auto", True),
    "sdk-threadpool-overlapping": ("audit_server.py", "touch_sync", "auto", True),
    # the arguments do not name the file: only timing and threads can decide
    "sdk-async-overlapping-unnamed": ("audit_server.py", "touch_indexed", "auto", True),
    # the arguments name the file relative to the notes folder (the server's working directory)
    "sdk-threadpool-relative-names": ("audit_server.py", "read_note", "auto", True),
    "thread-per-request-overlapping": ("threaded_server.py", "touch", "legacy", True),
    # Node: the reference filesystem server, whose fs calls run on libuv's thread pool
    "node-filesystem-overlapping": ("mcp-server-filesystem", "read_text_file", "auto", True),
    # Streamable HTTP: one SDK server, 10 clients at once, each in its own session
    "http-10-clients": ("sdk_http_server.py", "touch_sync", "auto", True),
}
KINDS = ("exact", "thread", "wakeup", "argument")


def _args(tool: str, i: int, path: str, delay: float) -> dict:
    if tool == "touch_indexed":
        return {"n": i, "delay": delay}
    if tool == "read_note":
        return {"name": os.path.basename(path), "delay": delay}
    if tool == "read_text_file":
        return {"path": path}
    return {"path": path, "delay": delay}


def run_scenario(name: str, calls: int = 20, delay: float = 0.05, workdir: str | None = None,
                 mw_args: tuple = ()) -> dict:
    script, tool, mode, concurrent = SCENARIOS[name]
    work = workdir or tempfile.mkdtemp(prefix="mw-attr-")
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, f"{name}.jsonl")
    if tool == "touch_indexed":
        paths = [os.path.join(work, f"call-{i}.txt") for i in range(calls)]
    elif tool == "read_note":
        paths = [os.path.join(work, f"n{i}.txt") for i in range(calls)]   # n1.txt and n11.txt: boundaries count
    else:
        paths = [os.path.join(work, f"{name}-call-{i}.txt") for i in range(calls)]
    if tool == "read_text_file":
        for p in paths:
            with open(p, "w") as f:
                f.write("x\n")
    env = {**os.environ, "MW_AUDIT_DIR": work}
    mw = [MW, "run", "-q", "--jsonl", out, "--no-store", *mw_args, "--"]
    if script == "sdk_http_server.py":
        _run_http(mw, env, work, paths, tool, delay)
        return score(out, paths, tool)
    if script.endswith(".py"):
        cmd = [sys.executable, os.path.join(WORK, script)]
    else:
        cmd = [os.path.join(ROOT, ".cache", "npm-servers", "node_modules", ".bin", script), work]
    params = StdioServerParameters(command=mw[0], args=mw[1:] + cmd, env=env, cwd=work)

    async def main():
        async with Client(params, mode=mode) as c:
            async def one(i):
                r = await c.call_tool(tool, _args(tool, i, paths[i], delay))
                assert not r.is_error, r
            if concurrent:
                async with anyio.create_task_group() as tg:
                    for i in range(len(paths)):
                        tg.start_soon(one, i)
            else:
                for i in range(len(paths)):
                    await one(i)

    anyio.run(main)
    return score(out, paths, tool)


def _run_http(mw, env, work, paths, tool, delay, clients=10):
    """The SDK server on Streamable HTTP under `mcpwitness run`, on a loopback port; `clients`
    SDK clients at once, each in its own session, sharing the calls."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(mw + [sys.executable, os.path.join(WORK, "sdk_http_server.py"), "http", "127.0.0.1",
                               str(port)], env={**env, "MW_HTTP_APP": "audit_server"}, cwd=work,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "listening", "the HTTP server did not start"

        async def one(c, i):
            r = await c.call_tool(tool, _args(tool, i, paths[i], delay))
            assert not r.is_error, r

        async def session(k):
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                async with anyio.create_task_group() as tg:
                    for i in range(k, len(paths), clients):
                        tg.start_soon(one, c, i)

        async def main():
            async with anyio.create_task_group() as tg:
                for k in range(clients):
                    tg.start_soon(session, k)

        anyio.run(main)
    finally:
        p.send_signal(signal.SIGTERM)   # mcpwitness run passes it on; the server stops cleanly
        p.wait(60)


def score(jsonl: str, paths: list[str], tool: str) -> dict:
    with open(jsonl) as f:
        recs = [json.loads(line) for line in f]
    calls = [r for r in recs if r["type"] == "call" and r["tool"] == tool]

    def path_of(args):
        if "n" in args:
            return paths[args["n"]]
        if "name" in args:
            return os.path.join(os.path.dirname(paths[0]), args["name"])
        return args["path"]
    own = {path_of(r["arguments"]): r for r in calls}
    res = {"calls": len(paths), "records": len(calls), "right": 0, **{k: 0 for k in KINDS}, "ambiguous": 0,
           "wrong": 0, "missing": 0, "ambiguous_candidates_max": 0}
    for p in paths:
        mine = own.get(p)
        hits = [(r, e) for r in calls for e in r["timeline"] if e["type"] == "open" and e.get("path") == p]
        sure = [(r, e) for r, e in hits if e["attribution"] in KINDS]
        if any(r is not mine for r, _ in sure):
            res["wrong"] += 1
        elif sure:
            kinds = {e["attribution"] for _, e in sure}
            kind = next(k for k in ("argument", "wakeup", "thread", "exact") if k in kinds)   # the weakest counts
            res[kind] += 1
            if kind != "argument":
                res["right"] += 1
        elif hits and mine is not None and any(r is mine for r, _ in hits):
            res["ambiguous"] += 1
            res["ambiguous_candidates_max"] = max(res["ambiguous_candidates_max"],
                                                  max(len(e.get("candidates", [])) for _, e in hits))
        elif hits:
            res["wrong"] += 1
        else:
            res["missing"] += 1
    stats = [r for r in recs if r["type"] == "stats"]
    res["lost_events"] = stats[0]["lost"]["events"] if stats else None
    res["wakeups"] = stats[0]["attribution"].get("wakeups") if stats else None
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds each tool sleeps before and after its open")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)")
    ap.add_argument("--wakeup-evidence", action="store_true",
                    help="run mcpwitness with --wakeup-evidence, and print the hand-offs it saw per scenario")
    a = ap.parse_args()
    mw_args = ("--wakeup-evidence",) if a.wakeup_evidence else ()
    print(f"{'scenario':32} {'calls':>5} {'exact':>6} {'thread':>7} {'wakeup':>7} {'argument':>9} {'ambiguous':>10} "
          f"{'wrong':>6} {'missing':>8}")
    for name in a.scenario or SCENARIOS:
        r = run_scenario(name, a.calls, a.delay, mw_args=mw_args)
        n = r["calls"]
        print(f"{name:32} {n:5d} {r['exact'] / n:6.0%} {r['thread'] / n:7.0%} {r['wakeup'] / n:7.0%} "
              f"{r['argument'] / n:9.0%} "
              f"{r['ambiguous'] / n:10.0%} {r['wrong']:6d} {r['missing']:8d}"
              + (f"   (up to {r['ambiguous_candidates_max']} candidates)" if r["ambiguous"] else "")
              + (f"   wake-ups: {r['wakeups']}" if a.wakeup_evidence else ""), flush=True)


if __name__ == "__main__":
    main()
