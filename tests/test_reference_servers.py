"""The reference MCP servers (PyPI and npm), launched under `mcpwitness run` and
driven by the official SDK client: every message once, in order, paired."""
import json
import os
import shutil
import subprocess
import sys

import anyio
import pytest
from conftest import NPM
from mcp_client import RecordingStdio, check_against_client, client

pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
BIN = os.path.dirname(sys.executable)


def make_repo(tmp):
    repo = tmp / "repo"
    repo.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    (repo / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(repo), "add", "a.txt"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "one"], check=True, env=env)
    (repo / "b.txt").write_text("b\n")
    return repo


def servers(tmp):
    repo = make_repo(tmp)
    (tmp / "files").mkdir()
    (tmp / "files" / "hello.txt").write_text("hello from a file\n")
    return {
        "mcp-server-time": ([os.path.join(BIN, "mcp-server-time")],
                            [("get_current_time", {"timezone": "UTC"}),
                             ("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                               "target_timezone": "Asia/Tokyo"})], "21:00"),
        "mcp-server-git": ([os.path.join(BIN, "mcp-server-git"), "--repository", str(repo)],
                           [("git_status", {"repo_path": str(repo)}), ("git_log", {"repo_path": str(repo)})],
                           "b.txt"),
        "server-filesystem": ([os.path.join(NPM, "mcp-server-filesystem"), str(tmp / "files")],
                              [("list_directory", {"path": str(tmp / "files")}),
                               ("read_text_file", {"path": str(tmp / "files" / "hello.txt")})], "hello from a file"),
        "server-everything": ([os.path.join(NPM, "mcp-server-everything")],
                              [("echo", {"message": "hi there"}), ("get-sum", {"a": 2, "b": 3})], "hi there"),
    }


@pytest.mark.parametrize("name", ["mcp-server-time", "mcp-server-git", "server-filesystem", "server-everything"])
def test_reference_server(name, tmp_path):
    cmd, calls, expect = servers(tmp_path)[name]
    if not os.path.exists(cmd[0]):
        pytest.fail(f"{cmd[0]} is not installed: run scripts/setup")
    out = tmp_path / "ev.jsonl"
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--", *cmd])
    texts = []

    async def main():
        async with client(t) as c:
            await c.list_tools()
            for tool, args in calls:
                r = await c.call_tool(tool, args)
                texts.append(" ".join(getattr(x, "text", "") for x in r.content))

    anyio.run(main)
    assert any(expect in x for x in texts)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    mcp = [r for r in recs if r["type"] == "mcp"]
    check_against_client(t.log, mcp)
    calls_seen = [r for r in mcp if r["method"] == "tools/call" and r["kind"] == "request"]
    assert [r["params"]["name"] for r in calls_seen] == [c[0] for c in calls]
    ident = [r for r in recs if r["type"] == "session" and r["event"] == "identified"][-1]
    assert ident["role"] == "server" and ident["server_info"] and ident["client_info"]["name"] == "mcp"
    handshake = any(r["method"] == "initialize" for r in mcp)
    assert ident["era"] == ("handshake" if handshake else "stateless")
    stats = recs[-1]
    assert stats["type"] == "stats" and stats["lost"]["events"] == 0
    # the default detection rules ran over all of it without an evaluation error
    det = stats["detect"]
    assert det["records"] > len(mcp) and det["rule_errors"] == 0 and det["detector_errors"] == 0, det["errors"]
    # mcp-server-git's read-only tools (git_status, git_log) read through git: a notice; git's own
    # index refresh is excepted from "Read-only tool wrote a file"
    assert {a["rule"] for a in recs if a["type"] == "alert"} <= {"New client-server pair", "Tool ran an interpreter",
                                                                "Tool ran a shell", "Read-only tool ran a program"}
