#!/usr/bin/env python3
"""Benchmark: how well kernel events are attributed to the call that caused them.

N tool calls overlap on one server (launched under `mcpwitness run`, driven by
the official SDK client); each call opens a file unique to it. For every such
open, the call records say where it went: right (in its own call's record,
exact or by thread evidence), ambiguous (shared between overlapping calls,
its own among the candidates), wrong (attributed with certainty to another
call), missing (in no record). "by argument": timing left several
candidates and the path named in only one call's arguments decided (a
labelled heuristic, see src/mcpwitness/decode/attribute.py). Targets: 0 wrong;
100% right for a server that handles one request per thread; the ambiguous
share reported.

    .venv/bin/python bench/attribution.py [--calls 20] [--delay 0.05]
"""
import argparse
import json
import os
import sys
import tempfile

import anyio
from mcp import Client, StdioServerParameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "tests", "workloads")
MW = os.path.join(os.path.dirname(sys.executable), "mcpwitness")

SCENARIOS = {
    # name: (server script, tool, client mode, concurrent?)
    "sdk-sequential": ("audit_server.py", "touch_sync", "auto", False),
    "sdk-async-overlapping": ("audit_server.py", "touch_async", "auto", True),
    "sdk-threadpool-overlapping": ("audit_server.py", "touch_sync", "auto", True),
    # the arguments do not name the file: only timing and threads can decide
    "sdk-async-overlapping-unnamed": ("audit_server.py", "touch_indexed", "auto", True),
    "thread-per-request-overlapping": ("threaded_server.py", "touch", "legacy", True),
}


def run_scenario(name: str, calls: int = 20, delay: float = 0.05, workdir: str | None = None) -> dict:
    script, tool, mode, concurrent = SCENARIOS[name]
    work = workdir or tempfile.mkdtemp(prefix="mw-attr-")
    out = os.path.join(work, f"{name}.jsonl")
    params = StdioServerParameters(command=MW, args=["run", "-q", "--jsonl", out, "--", sys.executable,
                                                     os.path.join(WORK, script)],
                                   env={**os.environ, "MW_AUDIT_DIR": work})
    indexed = tool == "touch_indexed"
    paths = [os.path.join(work, f"call-{i}.txt" if indexed else f"{name}-call-{i}.txt") for i in range(calls)]

    async def main():
        async with Client(params, mode=mode) as c:
            async def one(p):
                args = {"n": paths.index(p)} if indexed else {"path": p}
                r = await c.call_tool(tool, {**args, "delay": delay})
                assert not r.is_error, r
            if concurrent:
                async with anyio.create_task_group() as tg:
                    for p in paths:
                        tg.start_soon(one, p)
            else:
                for p in paths:
                    await one(p)

    anyio.run(main)
    return score(out, paths, tool)


def score(jsonl: str, paths: list[str], tool: str) -> dict:
    with open(jsonl) as f:
        recs = [json.loads(line) for line in f]
    calls = [r for r in recs if r["type"] == "call" and r["tool"] == tool]
    own = {(r["arguments"]["path"] if "path" in r["arguments"] else paths[r["arguments"]["n"]]): r for r in calls}
    res = {"calls": len(paths), "records": len(calls), "right": 0, "argument": 0, "ambiguous": 0, "wrong": 0,
           "missing": 0, "ambiguous_candidates_max": 0}
    for p in paths:
        mine = own.get(p)
        hits = [(r, e) for r in calls for e in r["timeline"] if e["type"] == "open" and e.get("path") == p]
        sure = [(r, e) for r, e in hits if e["attribution"] in ("exact", "thread", "argument")]
        if any(r is not mine for r, _ in sure):
            res["wrong"] += 1
        elif sure:
            res["argument" if all(e["attribution"] == "argument" for _, e in sure) else "right"] += 1
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
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds each tool sleeps before and after its open")
    a = ap.parse_args()
    print(f"{'scenario':34} {'calls':>5} {'right':>7} {'by argument':>12} {'ambiguous':>10} {'wrong':>6} {'missing':>8}")
    for name in SCENARIOS:
        r = run_scenario(name, a.calls, a.delay)
        n = r["calls"]
        print(f"{name:34} {n:5d} {r['right'] / n:7.0%} {r['argument'] / n:12.0%} {r['ambiguous'] / n:10.0%} "
              f"{r['wrong']:6d} {r['missing']:8d}"
              + (f"   (up to {r['ambiguous_candidates_max']} candidates)" if r["ambiguous"] else ""))


if __name__ == "__main__":
    main()
