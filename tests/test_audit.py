"""Attribution and call records end to end: a server written with the official
SDK whose tools do real work, under `mcpwitness run`, driven by the SDK client.
Every kernel event a tool caused must be in that call's record and no other."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import anyio
import pytest
from conftest import SLOW, npm_server
from mcp_client import RecordingStdio, client

pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(ROOT, "tests", "workloads", "audit_server.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def event_key(e):
    return (e["type"], e["pid"], e["time"])


@pytest.mark.matrix("attribution: one record per call")
def test_each_event_in_the_record_of_its_call(tmp_path, listener):
    side, target, late = tmp_path / "side.cfg", tmp_path / "target.txt", tmp_path / "late.txt"
    side.write_text("cfg")
    target.write_text("the content")
    out, db = tmp_path / "ev.jsonl", tmp_path / "store.db"
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--db", str(db), "--", sys.executable, SERVER],
                       env={**os.environ, "MW_AUDIT_SIDE": str(side)})

    async def main():
        async with client(t) as c:
            r = await c.call_tool("read_file", {"path": str(target)})
            assert r.content[0].text == "the content"
            await c.call_tool("spawn", {"marker": str(late), "delay": 0.5 * SLOW})
            assert not late.exists()  # the response came before the grandchild's open
            await c.call_tool("connect", {"port": listener.port})
            for _ in range(int(100 * SLOW)):  # the grandchild opens its file after the response
                if late.exists():
                    break
                await anyio.sleep(0.05)
            await anyio.sleep(0.3)

    anyio.run(main)
    recs = load(out)
    calls = {r["tool"] or r["method"]: r for r in recs if r["type"] == "call"}
    assert set(calls) >= {"read_file", "spawn", "connect"}
    assert all(r["complete"] and r["status"] == "ok" for r in calls.values()), \
        {k: (r["complete"], r["status"], r.get("error")) for k, r in calls.items()}

    rf = calls["read_file"]
    opened = [e["path"] for e in rf["timeline"] if e["type"] == "open"]
    assert str(side) in opened and str(target) in opened
    assert all(e["attribution"] == "exact" for e in rf["timeline"])
    assert rf["arguments"] == {"path": str(target)} and rf["server"]["tracked"]
    assert rf["server"]["info"]["name"] == "witness-audit-server" and rf["result"]["content_types"] == {"text": 1}

    sp = calls["spawn"]
    late_opens = [e for e in sp["timeline"] if e["type"] == "open" and e["path"] == str(late)]
    assert len(late_opens) == 1, "the grandchild's open after the response is in the spawn call's record"
    assert late_opens[0]["t_ms"] > sp["latency_ms"]
    grandchild = late_opens[0]["pid"]
    forks = [e for e in sp["timeline"] if e["type"] == "fork"]
    assert len(forks) >= 3  # server -> python -c, -> child, -> grandchild
    assert any(chain.endswith(f"{grandchild} (python)") or f"{grandchild} (" in chain for chain in sp["lineage"])
    assert len(sp["lineage"][0].split(" -> ")) >= 4  # server -> child -> setsid child -> grandchild
    assert any(e["type"] == "exit" and e["pid"] == grandchild for e in sp["timeline"])
    assert sp["still_running"] == []

    cn = calls["connect"]
    conns = [e for e in cn["timeline"] if e["type"] == "connect"]
    assert [(e["address"], e["port"]) for e in conns] == [("127.0.0.1", listener.port)]
    assert conns[0]["scope"] == "loopback" and len(listener.accepted) == 1

    # each kernel event is in one record at most, and the tool events in the right one
    owners = {}
    for name, r in calls.items():
        for e in r["timeline"]:
            assert event_key(e) not in owners, (e, owners.get(event_key(e)), name)
            owners[event_key(e)] = name
    for name, r in calls.items():
        if name not in ("read_file", "spawn", "connect"):
            assert not [e for e in r["timeline"] if e["type"] in ("open", "connect")
                        and (e.get("path") in (str(side), str(target), str(late)) or e.get("port") == listener.port)]
    # the event lines agree with the records
    evs = {(r["type"], r["pid"], r["time"]): r for r in recs if r["type"] in ("open", "connect", "fork", "exec", "exit")}
    for name, r in calls.items():
        for e in r["timeline"]:
            assert evs[event_key(e)]["attribution"]["call"] == r["call_id"]
    # start-up is outside any call
    startup = [r for r in recs if r["type"] == "open" and r["attribution"]["quality"] == "none"]
    assert startup and all(r["attribution"]["call"] is None for r in startup)

    # the store holds the same records
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = {row[0] for row in con.execute("SELECT call_id FROM calls")}
    assert {r["call_id"] for r in calls.values()} <= ids


@pytest.mark.parametrize("scenario,expect", [
    ("sdk-sequential", ("right",)),
    ("thread-per-request-overlapping", ("right",)),
    ("sdk-async-overlapping-unnamed", ("ambiguous",)),
    ("sdk-threadpool-overlapping", ("argument",)),
    # the file named relative to the server's working directory: n1.txt is not n11.txt
    ("sdk-threadpool-relative-names", ("argument",)),
    # libuv's thread pool (Node): calls that happen not to overlap are exact
    ("node-filesystem-overlapping", ("right", "argument")),
    ("http-10-clients", ("right", "argument")),
    # where the arguments point at the wrong call: the ground truth is the server's own log
    ("cross-named", ("ambiguous",)),                 # one names the file, another opens it
    ("same-relative-name", ("ambiguous",)),          # note.txt in f0/, f1/, ...: each names both
    ("directory-above", ("ambiguous", "argument")),  # a listing names the folder of the others' files
    # a background thread opens a file after its call was answered, while the next call (which
    # names nothing) is the only one in flight: timing alone puts it there, `exact`. Known and
    # said (docs/audit.md); strict, so that the day it is fixed this test says so
    pytest.param("deferred-open", ("right", "ambiguous"), marks=pytest.mark.xfail(
        strict=True, reason="a background thread's open after its call's answer is put, exact, on the only call "
                            "in flight (docs/audit.md: what attribution cannot tell)")),
])
def test_overlapping_calls(scenario, expect, tmp_path):
    """N calls on one server, each opening a file: never wrong, judged by what the server itself
    logged it opened for which call (not by the record or the arguments); right for one request
    per thread; overlapping calls on an event loop or a thread pool ambiguous (or settled by what
    the arguments name), not guessed."""
    from attribution import run_scenario
    n = 12
    r = run_scenario(scenario, calls=n, delay=0.1, workdir=str(tmp_path))
    assert r["records"] == r["calls"] and r["wrong"] == 0 and r["missing"] == 0, r
    assert r["actions"] >= n // 2, r    # the server's log is the ground truth: it must have one
    assert sum(r[k] for k in expect) == r["actions"], r
    assert r["lost_events"] == 0


def test_filesystem_server_calls_show_their_opens(tmp_path):
    exe = npm_server("mcp-server-filesystem")
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    out = tmp_path / "ev.jsonl"
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--", exe, str(root)])
    asked = [("read_text_file", {"path": str(root / "a.txt")}), ("list_directory", {"path": str(root / "sub")}),
             ("read_text_file", {"path": str(root / "sub" / "b.txt")})]

    async def main():
        async with client(t) as c:
            for tool, args in asked:
                r = await c.call_tool(tool, args)
                assert not r.is_error, r

    anyio.run(main)
    calls = [r for r in load(out) if r["type"] == "call" and r["method"] == "tools/call"]
    assert [(c["tool"], c["arguments"]) for c in calls] == asked
    for c, (tool, args) in zip(calls, asked):
        opens = [e for e in c["timeline"] if e["type"] == "open"]
        assert opens, (tool, c["summary"])
        assert any(e["path"] == args["path"] for e in opens), (tool, [e["path"] for e in opens])
        assert all(e["attribution"] in ("exact", "thread") for e in c["timeline"])
        others = {x[1]["path"] for x in asked} - {args["path"]}
        assert not [e for e in opens if e["path"] in others], "another call's file in this record"
        assert c["server"]["info"]["name"] and c["server"]["tracked"]


def _mcpwitness_child():
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    st = f.read()
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if int(st[st.rindex(")") + 2:].split()[1]) == me and b"mcpwitness" in cmd:
                return int(name)
    return None


def test_calls_and_show_on_a_recorded_session_and_a_crash(tmp_path):
    """Calls recorded into the store, then the agent is killed (SIGKILL) in the
    middle of the session: the database opens, and calls/show read it."""
    db, target = tmp_path / "store.db", tmp_path / "t.txt"
    target.write_text("x")
    t = RecordingStdio(MW, ["run", "-q", "--no-redact", "--jsonl", str(tmp_path / "ev.jsonl"), "--db", str(db),
                            "--", sys.executable, SERVER], env={**os.environ, "MW_AUDIT_SIDE": "/dev/null"})
    killed = []

    async def main():
        async with client(t) as c:
            await c.call_tool("read_file", {"path": str(target)})
            await c.call_tool("read_file", {"path": "/etc/passwd"})
            await c.call_tool("run", {"argv": ["true"]})
            await anyio.sleep(1.0)  # committed by now (batches every 200 ms)
            pid = _mcpwitness_child()
            assert pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            with anyio.move_on_after(5):
                try:
                    await c.call_tool("read_file", {"path": str(target)})
                except Exception:
                    pass

    try:
        anyio.run(main)
    except BaseException:  # the client sees its server vanish
        pass
    assert killed
    assert os.path.exists(str(db) + "-wal") or os.path.getsize(db) > 0

    def cli(*args):
        p = subprocess.run([MW, *args, "--db", str(db)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    rows = [json.loads(x) for x in cli("calls", "--json").splitlines()]
    tools = [r["tool"] for r in rows if r["method"] == "tools/call"]
    assert tools[:3] == ["run", "read_file", "read_file"]  # newest first
    table = cli("calls")
    assert "read_file" in table and "run" in table and "CALL" in table.splitlines()[0]
    viol = [json.loads(x) for x in cli("calls", "--has-violations", "--json").splitlines()]
    assert [r["arguments"]["path"] for r in viol] == ["/etc/passwd"]
    assert viol[0]["violations"][0]["kind"] == "sensitive_path"
    assert [r["tool"] for r in map(json.loads, cli("calls", "--tool", "run", "--json").splitlines())] == ["run"]
    assert cli("calls", "--status", "error", "--json") == ""
    assert len(cli("calls", "--since", "1h", "--json").splitlines()) == len(rows)
    assert cli("calls", "--since", "2000-01-01", "--until", "2000-01-02", "--json") == ""
    assert len(cli("calls", "--server", "witness-audit", "--json").splitlines()) == len(rows)

    cid = viol[0]["call_id"]
    text = cli("show", cid[:6])
    assert f"call {cid}" in text and "/etc/passwd" in text and "sensitive_path" in text
    assert "timeline" in text
    shown = json.loads(cli("show", cid, "--json"))
    assert shown == viol[0]
    p = subprocess.run([MW, "show", "ffffffffffff", "--db", str(db)], capture_output=True, text=True)
    assert p.returncode == 1 and "no call" in p.stderr


def test_the_doubt_is_shown_in_the_summary_calls_and_show(tmp_path):
    """Overlapping calls whose file names are not in their arguments: the summary says how
    much is exact and why not, `calls` has the EXACT column, `show` groups the ambiguous
    events by the calls they are shared with."""
    from attribution import run_scenario

    from mcpwitness.output.render import call_timeline, calls_table
    n = 4
    r = run_scenario("sdk-async-overlapping-unnamed", calls=n, delay=0.1, workdir=str(tmp_path))
    assert r["ambiguous"] == n and r["wrong"] == 0, r
    recs = [c for c in load(tmp_path / "sdk-async-overlapping-unnamed.jsonl")
            if c["type"] == "call" and c["tool"] == "touch_indexed"]
    c = recs[0]
    amb = [e for e in c["timeline"] if e["attribution"] == "ambiguous"]
    assert amb and c["attribution"]["events"] == len(c["timeline"])
    others = {x for e in amb for x in e["candidates"]} - {c["call_id"]}
    assert f"attribution: 0 of {len(c['timeline'])} events exact; {len(amb)} ambiguous (shared with " \
           f"{len(others)} overlapping calls" in c["summary"], c["summary"]
    shown = call_timeline(c)
    assert f"ambiguous ({len(amb)} events)" in shown
    assert f"shared with {', '.join(x for x in amb[0]['candidates'] if x != c['call_id'])}: {len(amb)} open" in shown
    row = {"time": c["time"], "call_id": c["call_id"], "server_name": "s", "server_exe": None, "tool": c["tool"],
           "method": c["method"], "latency_ms": 1.0, "summary": c["summary"], "status": c["status"],
           "quality": c["attribution"]["quality"], "violations": 0, "record": json.dumps(c)}
    table = calls_table([row]).splitlines()
    assert "EXACT" in table[0] and f" 0/{len(c['timeline'])} " in table[1]


@pytest.mark.matrix("attribution: wake-up evidence (off by default)")
def test_wakeup_evidence_sees_the_hand_offs_and_is_off_by_default(tmp_path):
    """tp_btf/sched_waking loads only with --wakeup-evidence; then the SDK server's hand-offs
    (a thread that read one request wakes a worker) are seen. Off by default: measured, it
    decides wrongly on event-loop servers (docs/audit.md)."""
    from attribution import run_scenario
    on = run_scenario("sdk-sequential", calls=4, delay=0.05, workdir=str(tmp_path / "on"),
                      mw_args=("--wakeup-evidence",))
    assert on["wrong"] == 0 and on["right"] == 4, on
    assert on["wakeups"]["handoffs"] >= 1, on
    off = run_scenario("sdk-sequential", calls=4, delay=0.05, workdir=str(tmp_path / "off"))
    assert off["wakeups"] == {"handoffs": 0, "refused_busy": 0, "after_two_requests": 0}, off
    start = next(r for r in load(tmp_path / "off" / "sdk-sequential.jsonl") if r["type"] == "start")
    assert "--wakeup-evidence" in json.dumps(start), "the start record says why the program is not loaded"
