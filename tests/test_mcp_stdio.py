"""MCP over stdio, end to end: a real server under `mcpwitness run`, driven by
the official SDK client, whose own record of the conversation is the truth."""
import json
import os
import shutil
import subprocess
import sys

import anyio
import pytest
from mcp_client import RecordingStdio, check_against_client, client

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(os.path.dirname(__file__), "workloads", "sdk_server.py")


def records(path, type_):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r["type"] == type_]


def drive(out, calls, mode="auto"):
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--", sys.executable, SERVER])
    results = []

    async def main():
        async with client(t, mode=mode) as c:
            await c.list_tools()
            for name, args in calls:
                results.append(await c.call_tool(name, args))

    anyio.run(main)
    return t.log, results


@pytest.mark.matrix("MCP over stdio (SDK client and server)")
def test_sdk_server_stateless_era(tmp_path):
    out = tmp_path / "ev.jsonl"
    big = 5 << 20
    log, results = drive(out, [("echo", {"text": "hello"}), ("big", {"n": big}), ("echo", {"text": "again"})])
    assert len(results[1].content[0].text) == big
    mcp = records(out, "mcp")
    check_against_client(log, mcp)
    assert mcp[0]["method"] == "server/discover" and mcp[0]["protocol_version"] == "2026-07-28"
    bigresp = [r for r in mcp if r["kind"] == "response" and r["method"] == "tools/call"][1]
    assert bigresp["size"] > big and not bigresp["truncated"]
    assert bigresp["result"]["content"][0]["text"] == "x" * big
    sess = records(out, "session")
    assert [s["event"] for s in sess][0] == "start" and sess[-1]["event"] == "end"
    ident = [s for s in sess if s["event"] == "identified"][-1]
    assert ident["role"] == "server" and ident["era"] == "stateless"
    assert ident["client_info"]["name"] == "mcp" and ident["server_info"]["name"] == "witness-test-server"
    assert ident["cmdline"] == [sys.executable, SERVER]
    stats = records(out, "stats")[0]
    assert stats["lost"]["events"] == 0 and stats["mcp"]["nonjson"] == 0


def test_sdk_server_handshake_era(tmp_path):
    out = tmp_path / "ev.jsonl"
    log, _ = drive(out, [("echo", {"text": "legacy"})], mode="legacy")
    mcp = records(out, "mcp")
    check_against_client(log, mcp)
    assert [r["method"] for r in mcp[:3]] == ["initialize", "initialize", "notifications/initialized"]
    ident = [s for s in records(out, "session") if s["event"] == "identified"][-1]
    assert ident["era"] == "handshake" and ident["protocol_version"] == mcp[1]["result"]["protocolVersion"]
    assert ident["client_info"]["name"] and ident["server_info"]["name"] == "witness-test-server"
    assert "tools" in ident["server_capabilities"]


def test_secrets_in_arguments_are_redacted(tmp_path):
    out = tmp_path / "ev.jsonl"
    secret = "ghp_" + "A1b2C3d4" * 5
    drive(out, [("echo", {"text": f"use {secret} please"})])
    text = out.read_text()
    assert secret not in text and "[REDACTED:github-token]" in text
    assert records(out, "stats")[0]["redactions"] >= 2


def test_both_ends_tracked_each_message_once(tmp_path):
    """`mcpwitness run` in front of a client that spawns its own server: the
    kernel sees every message twice (the client's write, the server's read),
    the record has it once, in one session naming both ends."""
    go, log, out = tmp_path / "go", tmp_path / "client.json", tmp_path / "ev.jsonl"
    go.write_text("go")
    cfg = json.dumps({"command": sys.executable, "args": [SERVER],
                      "calls": [["echo", {"text": "one"}], ["echo", {"text": "two"}]]})
    client_script = os.path.join(os.path.dirname(__file__), "workloads", "watched_client.py")
    import subprocess
    p = subprocess.run([MW, "run", "-q", "--jsonl", str(out), "--", sys.executable, client_script, str(go), str(log),
                        cfg], timeout=60)
    assert p.returncode == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_against_client([tuple(x) for x in json.loads(log.read_text())], mcp)
    ident = [r for r in recs if r["type"] == "session" and r["event"] == "identified"][-1]
    roles = {x["role"] for x in ident["peers"]}
    assert roles == {"client", "server"} and ident["role"] == "server"
    assert ident["pid"] == next(x["pid"] for x in ident["peers"] if x["role"] == "server")
    assert recs[-1]["mcp"]["duplicates"] == len(mcp)
    assert len([r for r in recs if r["type"] == "session" and r["event"] == "end"]) == 1


def test_both_ends_of_a_unix_socket_are_one_session(tmp_path):
    """A client and the SDK server on the two ends of a socketpair, both tracked:
    one session naming both processes, each message recorded once, and the
    server's file open in the call's record."""
    out, log, target = tmp_path / "ev.jsonl", tmp_path / "client.json", tmp_path / "target.txt"
    target.write_text("over a unix socket")
    subprocess.run([MW, "run", "-q", "--no-store", "--jsonl", str(out), "--", sys.executable,
                    os.path.join(os.path.dirname(__file__), "workloads", "unix_pair_client.py"), str(log), str(target)],
                   check=True, timeout=60)
    mcp = records(out, "mcp")
    check_against_client([tuple(x) for x in json.loads(log.read_text())], mcp)
    sess = records(out, "session")[-1]
    # the socket is the server's stdin and stdout: a socketpair (no name at either end), stdio
    assert sess["transport"] == "stdio" and sess["stdio"]["stdin"] == sess["stdio"]["stdout"]
    assert sess["stdio"]["stdin"]["kind"] == "unix" and sess["stdio"]["stdin"]["peer"]
    assert {r["transport"] for r in mcp} == {"stdio"}
    roles = sorted(e["role"] for e in sess["ends"])
    assert roles == ["client", "server"] and sess["role"] == "server"
    stats = records(out, "stats")[0]
    assert stats["mcp"]["duplicates"] == len(mcp) and stats["mcp"]["sessions"] == 1
    call = [r for r in records(out, "call") if r["method"] == "tools/call"][0]
    assert call["status"] == "ok" and str(target) in [e["path"] for e in call["timeline"] if e["type"] == "open"]
