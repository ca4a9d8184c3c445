"""The tamper-evident record (output/chain.py): a real recording, its JSON
Lines files (rotated) and its store, then each kind of tampering done to a
copy, and `mcpwitness verify` must find each one where it was done; an
untouched recording, a crash cut acknowledged by the agent that resumed,
and retention must not be reported."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import anyio
import pytest
from mcp_client import RecordingStdio, client

from mcpwitness.output.chain import verify_db, verify_files
from mcpwitness.output.jsonl import JsonlSink, rotated_files
from mcpwitness.output.store import Store

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A real session: the SDK client, the audit server under `mcpwitness
    run`, the output rotated every 16K, and the store."""
    d = tmp_path_factory.mktemp("rec")
    out, db = d / "ev.jsonl", d / "store.db"
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--db", str(db), "--rotate-size", "16K",
                            "--rotate-keep", "1000", "--", sys.executable, SERVER])

    async def main():
        async with client(t) as c:
            for i in range(8):
                await c.call_tool("read_file", {"path": "/etc/hostname"})
            await c.call_tool("run", {"argv": ["sh", "-c", "uname -r"]})

    anyio.run(main)
    files = rotated_files(str(out)) + [str(out)]
    assert len(files) >= 3
    return d, files, str(db)


def verify(*paths):
    p = subprocess.run([MW, "verify", "--json", *paths], capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def problems(report):
    return [(f["file"], f["line"], f["kind"]) for f in report["findings"] if f["kind"] not in ("note", "open")]


def copy(recording, tmp_path):
    d, files, db = recording
    new = [str(tmp_path / os.path.basename(f)) for f in files]
    for a, b in zip(files, new):
        shutil.copy(a, b)
    shutil.copy(db, tmp_path / "store.db")
    return new, str(tmp_path / "store.db")


def lines(path):
    with open(path, "rb") as f:
        return f.readlines()


def put(path, ls):
    with open(path, "wb") as f:
        f.writelines(ls)


def test_an_untouched_recording_is_intact(recording):
    d, files, db = recording
    rc, rep = verify(files[-1], db)          # the live name: its rotated files come with it
    assert rc == 0 and rep["intact"] and problems(rep) == [], rep["findings"]
    assert [s["file"] for s in rep["files"][:-1]] == files
    every = [json.loads(x) for f in files for x in lines(f)]
    assert all("seq" in r and len(r["chain"]) == 32 for r in every)
    assert rep["files"][-1]["rows"] > 50 and rep["files"][-1]["ledger"] == rep["files"][-1]["rows"]


@pytest.mark.parametrize("how", ["edit", "remove", "reorder", "insert"])
def test_a_changed_line_is_found_where_it_is(recording, tmp_path, how):
    files, _ = copy(recording, tmp_path)
    f = files[1]
    ls = lines(f)
    n = len(ls) // 2                       # line n + 1 (1-based) is the one touched
    if how == "edit":
        ls[n] = ls[n].replace(b'"pid":', b'"pid":1', 1) if b'"pid":' in ls[n] else ls[n].replace(b'"', b"'", 1)
    elif how == "remove":
        del ls[n]
    elif how == "reorder":
        ls[n], ls[n + 1] = ls[n + 1], ls[n]
    else:
        ls.insert(n, b'{"type":"open","pid":1,"path":"/etc/shadow"}\n')
    put(f, ls)
    rc, rep = verify(files[-1])
    kind = {"edit": "edited", "remove": "removed", "reorder": "reordered", "insert": "unchained"}[how]
    assert rc == 1 and not rep["intact"]
    assert problems(rep) == [(os.path.basename(f), n + 1, kind)], rep["findings"]


def test_a_rotated_file_cut_short_or_missing_is_found(recording, tmp_path):
    files, _ = copy(recording, tmp_path)
    put(files[0], lines(files[0])[:-3])      # its last three lines (the rotation checkpoint among them) gone
    rc, rep = verify(*files, "--no-rotated")
    assert rc == 1 and (os.path.basename(files[1]), 1, "missing file") in problems(rep), rep["findings"]
    (tmp_path / "x").mkdir()
    files, _ = copy(recording, tmp_path / "x")
    os.unlink(files[1])                      # a whole file taken away
    rc, rep = verify(files[-1])
    assert rc == 1 and any(k == "missing file" for _, _, k in problems(rep)), rep["findings"]


def test_the_end_cut_or_removed_is_found(recording, tmp_path):
    files, _ = copy(recording, tmp_path)
    data = open(files[-1], "rb").read()
    put(files[-1], [data[:-40]])             # the stats record cut in the middle
    rc, rep = verify(files[-1], "--no-rotated")
    assert rc == 1 and problems(rep) == [(os.path.basename(files[-1]), len(lines(files[-1])), "cut")]
    put(files[-1], lines(files[-1])[:-1])    # ... or removed whole: no agent writes this file
    rc, rep = verify(files[-1], "--no-rotated")
    assert rc == 1 and problems(rep) == [(os.path.basename(files[-1]), len(lines(files[-1])), "truncated")]


def test_the_beginning_removed_is_found(recording, tmp_path):
    files, _ = copy(recording, tmp_path)
    put(files[0], lines(files[0])[5:])
    rc, rep = verify(files[0], "--no-rotated")
    assert rc == 1 and problems(rep)[0] == (os.path.basename(files[0]), 1, "truncated"), rep["findings"]


@pytest.mark.parametrize("how", ["edit", "delete", "insert", "ledger"])
def test_a_changed_store_row_is_found(recording, tmp_path, how):
    _, db = copy(recording, tmp_path)
    c = sqlite3.connect(db)
    if how == "edit":
        cid = c.execute("SELECT call_id FROM calls WHERE tool = 'read_file' LIMIT 1").fetchone()[0]
        c.execute("UPDATE calls SET record = CAST(REPLACE(CAST(record AS TEXT), '/etc/hostname', '/etc/hostnam')"
                  " AS BLOB) WHERE call_id = ?", (cid,))
        want = ("edited", f"calls row {cid} differs")
    elif how == "delete":
        rid = c.execute("SELECT id FROM events WHERE type = 'exec' LIMIT 1").fetchone()[0]
        c.execute("DELETE FROM events WHERE id = ?", (rid,))
        want = ("removed", f"events row {rid} was written and is gone")
    elif how == "insert":
        c.execute("INSERT INTO alerts (wall, rule, priority, record) VALUES (1, 'x', 'notice', '{}')")
        want = ("inserted", "alerts row")
    else:
        c.execute("UPDATE ledger SET digest = zeroblob(16) WHERE seq = (SELECT MAX(seq) / 2 FROM ledger)")
        want = ("edited", "ledger entry")
    c.commit()
    c.close()
    rc, rep = verify(db)
    found = [(f["kind"], f["detail"]) for f in rep["findings"]]
    assert rc == 1 and any(k == want[0] and want[1] in d for k, d in found), found


def test_a_crash_cut_acknowledged_on_resume_is_not_tampering(tmp_path):
    path = str(tmp_path / "e.jsonl")
    s = JsonlSink(path)
    s.write([{"type": "x", "i": i} for i in range(10)])
    s._f.write(b'{"type":"x","i":10,"cut-by')     # the batch being written when the agent was SIGKILLed
    s._f.flush()
    os.close(s._f.fileno())                        # no close(): nothing more reaches the file
    s2 = JsonlSink(path)                           # the restarted agent appends to the same file
    s2.write([{"type": "x", "i": 11}])
    s2.write_record({"type": "stats"})
    s2.close()
    findings, _ = verify_files([path])
    assert [f.kind for f in findings] == ["note"] and "cut by a crash" in findings[0].detail
    recs = [json.loads(x) for x in lines(path) if b"cut-by" not in x]
    resume = next(r for r in recs if r["type"] == "chain" and r["event"] == "resume")
    assert resume["cut_bytes"] == len(b'{"type":"x","i":10,"cut-by') and resume["prev_seq"] == 11


def test_retention_is_not_tampering(tmp_path):
    path = str(tmp_path / "s.db")
    deleted = 0
    for t in ("2020-01-01T00:00:00Z", "2020-01-01T00:00:01Z", "2099-01-01T00:00:00Z", "2099-01-01T00:00:01Z"):
        st = Store(path, max_age=3600)             # retention runs after the first batch
        st.write([{"type": "alert", "time": t, "rule": "r", "priority": "notice"}] * 3)
        st.close()
        deleted += st.stats["deleted_by_retention"]
    assert deleted == 6
    findings, summary = verify_db(path)
    assert findings == [] and summary["rows"] == 6 and summary["ledger"] == 6, [str(f) for f in findings]
