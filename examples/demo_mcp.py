"""The demo: an MCP client (the official SDK) calls the tools of a server
(official SDK too, tests/workloads/audit_server.py) started under
`mcpwitness run`. The tools read a file, read /etc/passwd, run a shell
pipeline, connect to a loopback port and leave a grandchild behind that
writes a file after the response. Then `mcpwitness calls` and `show` say
what each call really did.

    .venv/bin/python examples/demo_mcp.py STATE_DIR
"""
import json
import os
import socket
import subprocess
import sys

import anyio
from mcp import Client, StdioServerParameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(ROOT, "tests", "workloads", "audit_server.py")


def main(state: str) -> None:
    os.makedirs(state, exist_ok=True)
    db, jsonl = os.path.join(state, "demo.db"), os.path.join(state, "demo.jsonl")
    for p in (db, db + "-wal", db + "-shm", jsonl):
        if os.path.exists(p):
            os.unlink(p)
    notes = os.path.join(state, "notes.txt")
    with open(notes, "w") as f:
        f.write("meeting at 10\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # loopback only
    listener.listen(1)
    port = listener.getsockname()[1]
    params = StdioServerParameters(command=MW, args=["run", "-q", "--jsonl", jsonl, "--db", db, "--linger", "3",
                                                     "--", sys.executable, SERVER],
                                   env={**os.environ, "MW_AUDIT_SIDE": os.path.join(state, "notes.txt")})

    async def drive():
        async with Client(params) as c:
            for tool, args in (("read_file", {"path": notes}),
                               ("read_file", {"path": "/etc/passwd"}),
                               ("run", {"argv": ["sh", "-c", "uname -r | tr a-z A-Z"]}),
                               ("connect", {"port": port}),
                               ("spawn", {"marker": os.path.join(state, "left-behind.txt"), "delay": 0.3})):
                r = await c.call_tool(tool, args)
                print(f"client: {tool}({args}) -> {r.content[0].text.strip()[:60]!r}")
            await anyio.sleep(1.0)

    anyio.run(drive)
    listener.close()
    print(f"\n$ mcpwitness calls --db {db}")
    subprocess.run([MW, "calls", "--db", db], check=True)
    for tool in ("run", "spawn"):
        out = subprocess.run([MW, "calls", "--db", db, "--tool", tool, "--json"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        cid = json.loads(out[0])["call_id"]
        print(f"\n$ mcpwitness show --db {db} {cid}")
        subprocess.run([MW, "show", "--db", db, cid], check=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mcpwitness-demo")
