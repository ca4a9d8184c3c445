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
thread pool), and Streamable HTTP with 10 clients at once; then four where the
evidence could point at the wrong call: one call names a file another opens
(cross-named), calls name the same relative name in different folders, a call
names the directory above others' files, and a background thread opens a file
after its call was answered (deferred-open).

The ground truth is the server's own log (MW_AUDIT_LOG: each file a tool opened,
with the tag of the call it served), never the record or the arguments; for the
Node server, which cannot log, its contract (read_text_file opens its path).

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

# A scenario: its server, and the calls, as phases run one after the other (the calls of a phase
# at once, or one by one for a sequential scenario). Each call of our servers carries a `tag`, and
# the server logs every file it opened with the tag of the call it served (MW_AUDIT_LOG): that log,
# not the record and not the arguments, is the ground truth. The Node server cannot log: its truth
# is its contract (read_text_file opens the path it is given).
#   name: (server, client mode, concurrent?, build(work, n, delay) -> [[(tool, args)]])


def _per_call(tool, args_of):
    return lambda work, n, delay: [[(tool, args_of(work, i, delay)) for i in range(n)]]


def _cross_named(work, n, delay):
    """Half the calls name a file and open nothing; the other half open exactly those files
    without naming them (the arguments point at the wrong call)."""
    half = max(1, n // 2)
    return [[("describe", {"path": os.path.join(work, f"call-{i}.txt"), "delay": delay}) for i in range(half)]
            + [("touch_indexed", {"n": i, "delay": delay}) for i in range(half)]]


def _same_relative_name(work, n, delay):
    """Calls that name the same relative file in different folders under the server's cwd."""
    for k in range(n):
        os.makedirs(os.path.join(work, f"f{k}"), exist_ok=True)
    return [[("read_note", {"name": "note.txt", "folder": f"f{i}", "delay": delay}) for i in range(n)]]


def _directory_above(work, n, delay):
    """One call lists a directory while others open files in it that they do not name."""
    half = max(1, n // 2)
    return [[("list_dir", {"path": work, "delay": delay})]
            + [("touch_indexed", {"n": i, "delay": delay}) for i in range(half)]
            + [("touch_sync", {"path": os.path.join(work, f"named-{i}.txt"), "delay": delay})
               for i in range(n - half - 1)]]


def _deferred(work, n, delay):
    """A call answered at once whose file a background thread opens later, while the next call (which
    names nothing) is the only one in flight."""
    phases = []
    for i in range(n):
        phases.append([("remember", {"path": os.path.join(work, f"later-{i}.txt"), "delay": delay})])
        phases.append([("wait", {"seconds": 3 * delay})])
    return phases


SCENARIOS = {
    "sdk-sequential": ("audit_server.py", "auto", False,
                       _per_call("touch_sync", lambda w, i, d: {"path": f"{w}/seq-{i}.txt", "delay": d})),
    "sdk-async-overlapping": ("audit_server.py", "auto", True,
                              _per_call("touch_async", lambda w, i, d: {"path": f"{w}/async-{i}.txt", "delay": d})),
    "sdk-threadpool-overlapping": ("audit_server.py", "auto", True,
                                   _per_call("touch_sync", lambda w, i, d: {"path": f"{w}/pool-{i}.txt", "delay": d})),
    # the arguments do not name the file: only timing and threads can decide
    "sdk-async-overlapping-unnamed": ("audit_server.py", "auto", True,
                                      _per_call("touch_indexed", lambda w, i, d: {"n": i, "delay": d})),
    # the arguments name the file relative to the notes folder (the server's working directory);
    # n1.txt and n11.txt: boundaries count
    "sdk-threadpool-relative-names": ("audit_server.py", "auto", True,
                                      _per_call("read_note", lambda w, i, d: {"name": f"n{i}.txt", "delay": d})),
    "thread-per-request-overlapping": ("threaded_server.py", "legacy", True,
                                       _per_call("touch", lambda w, i, d: {"path": f"{w}/thr-{i}.txt", "delay": d})),
    # Node: the reference filesystem server, whose fs calls run on libuv's thread pool
    "node-filesystem-overlapping": ("mcp-server-filesystem", "auto", True,
                                    _per_call("read_text_file", lambda w, i, d: {"path": f"{w}/node-{i}.txt"})),
    # Streamable HTTP: one SDK server, 10 clients at once, each in its own session
    "http-10-clients": ("sdk_http_server.py", "auto", True,
                        _per_call("touch_sync", lambda w, i, d: {"path": f"{w}/http-{i}.txt", "delay": d})),
    # where the evidence could point at the wrong call (the ground truth is the server's own log)
    "cross-named": ("audit_server.py", "auto", True, _cross_named),
    "same-relative-name": ("audit_server.py", "auto", True, _same_relative_name),
    "directory-above": ("audit_server.py", "auto", True, _directory_above),
    "deferred-open": ("audit_server.py", "auto", False, _deferred),
}
KINDS = ("exact", "thread", "wakeup", "argument")


def run_scenario(name: str, calls: int = 20, delay: float = 0.05, workdir: str | None = None,
                 mw_args: tuple = ()) -> dict:
    script, mode, concurrent, build = SCENARIOS[name]
    work = workdir or tempfile.mkdtemp(prefix="mw-attr-")
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, f"{name}.jsonl")
    truth_log = os.path.join(work, f"{name}.truth.jsonl")
    if os.path.exists(truth_log):
        os.unlink(truth_log)
    phases = build(work, calls, delay)
    logs = script.endswith(".py")
    k = 0
    for phase in phases:
        for tool, args in phase:
            if logs:
                args["tag"] = k
            k += 1
    if script == "mcp-server-filesystem":
        for phase in phases:
            for _, args in phase:
                with open(args["path"], "w") as f:
                    f.write("x\n")
    env = {**os.environ, "MW_AUDIT_DIR": work, "MW_AUDIT_LOG": truth_log}
    mw = [MW, "run", "-q", "--jsonl", out, "--no-store", *mw_args, "--"]
    if script == "sdk_http_server.py":
        _run_http(mw, env, work, phases)
    else:
        if logs:
            cmd = [sys.executable, os.path.join(WORK, script)]
        else:
            cmd = [os.path.join(ROOT, ".cache", "npm-servers", "node_modules", ".bin", script), work]
        params = StdioServerParameters(command=mw[0], args=mw[1:] + cmd, env=env, cwd=work)

        async def main():
            async with Client(params, mode=mode) as c:
                async def one(tool, args):
                    r = await c.call_tool(tool, args)
                    assert not r.is_error, r
                for phase in phases:
                    if concurrent:
                        async with anyio.create_task_group() as tg:
                            for tool, args in phase:
                                tg.start_soon(one, tool, args)
                    else:
                        for tool, args in phase:
                            await one(tool, args)

        anyio.run(main)
    if logs:
        with open(truth_log) as f:
            truth = [(json.loads(line)["tag"], json.loads(line)["path"]) for line in f]
    else:   # the contract: each call opened the path it names
        truth = [(i, args["path"]) for i, (_, args) in enumerate(a for p in phases for a in p)]
    return score(out, phases, truth)


def _run_http(mw, env, work, phases, clients=10):
    """The SDK server on Streamable HTTP under `mcpwitness run`, on a loopback port; `clients`
    SDK clients at once, each in its own session, sharing the calls of each phase."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(mw + [sys.executable, os.path.join(WORK, "sdk_http_server.py"), "http", "127.0.0.1",
                               str(port)], env={**env, "MW_HTTP_APP": "audit_server"}, cwd=work,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "listening", "the HTTP server did not start"

        async def one(c, tool, args):
            r = await c.call_tool(tool, args)
            assert not r.is_error, r

        async def session(k, phase):
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                async with anyio.create_task_group() as tg:
                    for tool, args in phase[k::clients]:
                        tg.start_soon(one, c, tool, args)

        async def main():
            for phase in phases:
                async with anyio.create_task_group() as tg:
                    for k in range(clients):
                        tg.start_soon(session, k, phase)

        anyio.run(main)
    finally:
        p.send_signal(signal.SIGTERM)   # mcpwitness run passes it on; the server stops cleanly
        p.wait(60)


def score(jsonl: str, phases: list, truth: list[tuple[int, str]]) -> dict:
    """Each file the ground truth says a call opened: where the records put it."""
    with open(jsonl) as f:
        recs = [json.loads(line) for line in f]
    asked = [(tool, args) for phase in phases for tool, args in phase]
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    by_tag = {}
    for i, (tool, args) in enumerate(asked):
        by_tag[i] = next((r for r in calls if r["tool"] == tool and r["arguments"] == args), None)
    res = {"calls": len(asked), "actions": len(truth), "records": sum(r is not None for r in by_tag.values()),
           "right": 0, **{k: 0 for k in KINDS}, "ambiguous": 0, "wrong": 0, "missing": 0,
           "ambiguous_candidates_max": 0, "wrong_cases": []}
    for tag, path in truth:
        mine = by_tag.get(tag)
        hits = [(r, e) for r in calls for e in r["timeline"] if e["type"] == "open" and e.get("path") == path]
        sure = [(r, e) for r, e in hits if e["attribution"] in KINDS]
        if any(r is not mine for r, _ in sure):
            res["wrong"] += 1
            bad = next((r, e) for r, e in sure if r is not mine)
            res["wrong_cases"].append(f"{path}: truth {asked[tag][0]} #{tag}, record {bad[0]['tool']} "
                                      f"({bad[1]['attribution']})")
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
            res["wrong_cases"].append(f"{path}: truth #{tag} is not among the candidates")
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
        n = r["actions"] or 1
        print(f"{name:32} {n:5d} {r['exact'] / n:6.0%} {r['thread'] / n:7.0%} {r['wakeup'] / n:7.0%} "
              f"{r['argument'] / n:9.0%} "
              f"{r['ambiguous'] / n:10.0%} {r['wrong']:6d} {r['missing']:8d}"
              + (f"   (up to {r['ambiguous_candidates_max']} candidates)" if r["ambiguous"] else "")
              + (f"   wake-ups: {r['wakeups']}" if a.wakeup_evidence else "")
              + "".join(f"\n    WRONG: {w}" for w in r["wrong_cases"]), flush=True)


if __name__ == "__main__":
    main()
