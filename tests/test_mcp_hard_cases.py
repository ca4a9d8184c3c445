"""Hard cases on the real kernel path, with a server that misbehaves on purpose."""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
RAW = os.path.join(os.path.dirname(__file__), "workloads", "raw_server.py")


def req(i, method):
    return {"jsonrpc": "2.0", "id": i, "method": method}


def test_split_many_garbage_batch_and_crash(tmp_path):
    out = tmp_path / "ev.jsonl"
    p = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--", sys.executable, RAW],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(obj, lines):
        p.stdin.write(json.dumps(obj).encode() + b"\n")
        p.stdin.flush()
        return [p.stdout.readline() for _ in range(lines)]

    got = ask(req(1, "split"), 1) + ask(req(2, "many"), 3) + ask(req(3, "garbage"), 3)
    got += ask([req(4, "a"), req(5, "b")], 1)
    p.stdin.write(json.dumps(req(6, "crash")).encode() + b"\n")
    p.stdin.close()
    tail = p.stdout.read()
    assert p.wait(timeout=30) == 1
    assert got[0].endswith(b"}\n") and b"\xff" in got[4] and tail.endswith(b'{"half')

    recs = [json.loads(line) for line in out.read_text().splitlines()]
    flow = [(r["direction"][0], r["kind"], r["id"], r["method"], r.get("batch"))
            for r in recs if r["type"] == "mcp"]
    assert flow == [
        ("c", "request", 1, "split", None), ("s", "response", 1, "split", None),
        ("c", "request", 2, "many", None), ("s", "notification", None, "notifications/progress", None),
        ("s", "response", 2, "many", None), ("s", "notification", None, "notifications/message", None),
        ("c", "request", 3, "garbage", None), ("s", "notification", None, "notifications/message", None),
        ("s", "response", 3, "garbage", None),
        ("c", "request", 4, "a", 0), ("c", "request", 5, "b", 1),
        ("s", "response", 4, "a", 0), ("s", "response", 5, "b", 1),
        ("c", "request", 6, "crash", None),
    ]
    mcp = [r for r in recs if r["type"] == "mcp"]
    assert mcp[1]["size"] == len(got[0]) - 1 and mcp[1]["paired"]  # reassembled from ~40 writes
    bad_utf8 = mcp[7]
    assert bad_utf8["params"]["data"] == "caf\ufffd" and "invalid UTF-8" in bad_utf8["notes"][0]
    nonjson = [r for r in recs if r["type"] == "nonjson"]
    assert [n["reason"] for n in nonjson] == ["invalid UTF-8", "incomplete: the stream ended inside this message"]
    assert nonjson[1]["size"] == len(tail)
    end = [r for r in recs if r["type"] == "session" and r["event"] == "end"]
    assert len(end) == 1 and end[0]["unanswered"] == 1 and end[0]["messages"] == 14
    stats = recs[-1]
    assert stats["mcp"]["nonjson"] == 2 and stats["mcp"]["invalid_utf8"] == 2 and stats["lost"]["events"] == 0
