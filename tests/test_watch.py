"""`mcpwitness watch`: servers launched by a client mcpwitness did not start
are found by the kernel and recorded from their first message."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import SLOW, wait_for
from mcp_client import check_against_client
from test_reference_servers import servers

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.join(HERE, "workloads", "sdk_server.py")


def watched(tmp_path, cmd, calls, *filters):
    go, log, out = tmp_path / "go", tmp_path / "client.json", tmp_path / "watch.jsonl"
    cfg = json.dumps({"command": cmd[0], "args": cmd[1:], "calls": calls})
    cli = subprocess.Popen([sys.executable, os.path.join(HERE, "workloads", "watched_client.py"), str(go), str(log),
                            cfg])
    args = [a.replace("CLIENT", str(cli.pid)) for a in filters]
    w = subprocess.Popen([MW, "watch", "-q", "--jsonl", str(out), *args])
    assert wait_for(lambda: out.exists() and '"start"' in out.read_text(), 20)
    go.write_text("go")
    assert cli.wait(timeout=60 * SLOW) == 0
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=30 * SLOW) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    return json.loads(log.read_text()), recs


CASES = ["sdk", "mcp-server-time", "mcp-server-git", "server-filesystem", "server-everything"]


@pytest.mark.matrix("watch discovery", ids=['sdk'])
@pytest.mark.parametrize("name", CASES)
def test_watch_finds_servers_started_by_any_client(name, tmp_path):
    if name == "sdk":
        cmd, calls = [sys.executable, SDK], [["echo", {"text": "watched"}]]
    else:
        cmd, calls, _ = servers(tmp_path)[name]
    log, recs = watched(tmp_path, cmd, calls, "--pid", "CLIENT")
    found = [r for r in recs if r["type"] == "discovered"]
    assert len(found) == 1  # the server, not the client
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_against_client([tuple(x) for x in log], mcp)
    assert mcp[0]["method"] in ("server/discover", "initialize")  # from the very first message
    assert {r["pid"] for r in mcp} <= {found[0]["pid"]} | set(found[0]["children_seeded"])
    ident = [r for r in recs if r["type"] == "session" and r["event"] == "identified"][-1]
    assert ident["role"] == "server" and ident["server_info"]
    stats = recs[-1]
    assert stats["discovered"] == [found[0]["pid"]] and stats["lost"]["events"] == 0


def test_watch_filters_leave_others_out(tmp_path):
    log, recs = watched(tmp_path, [sys.executable, SDK], [["echo", {"text": "not me"}]],
                        "--comm", "no-such-server-name")
    assert log  # the conversation happened
    assert not [r for r in recs if r["type"] in ("mcp", "session", "discovered")]
    stats = recs[-1]
    assert stats["rejected_by_filter"] >= 1 and stats["kernel"]["watch_found"] >= 1


def test_watch_enforces_the_policy_of_servers_it_finds(tmp_path):
    """A server started by a client mcpwitness did not start gets its policy
    when the kernel finds it: its tool's connect to a refused port fails."""
    from conftest import Listener
    ok, bad = Listener(), Listener()
    try:
        pfile = tmp_path / "policy.yaml"
        pfile.write_text(f'policies:\n  - name: audit\n    match: {{cmdline: "*audit_server.py*"}}\n'
                         f'    network: {{default: deny, allow: ["127.0.0.1:{ok.port}"]}}\n')
        server = os.path.join(HERE, "workloads", "audit_server.py")
        log, recs = watched(tmp_path, [sys.executable, server],
                            [["connect", {"port": ok.port}], ["connect", {"port": bad.port}]],
                            "--pid", "CLIENT", "--policy", str(pfile))
        found = [r for r in recs if r["type"] == "discovered"]
        assert len(found) == 1 and found[0]["policy"] == "audit"
        assert len(ok.accepted) == 1 and bad.accepted == []
        calls = [r for r in recs if r["type"] == "call" and r["tool"] == "connect"]
        assert [c["status"] for c in calls] == ["ok", "tool_error"]
        pe = [e for e in calls[1]["timeline"] if e["type"] == "policy"]
        assert len(pe) == 1 and pe[0]["errno"] == "EPERM" and pe[0]["port"] == bad.port
    finally:
        ok.close()
        bad.close()
