"""The demo: an MCP client (the official SDK) calls the tools of a server
(official SDK too, tests/workloads/audit_server.py) started under
`mcpwitness run`. The tools read a file, read /etc/passwd, run a shell
pipeline, connect to a loopback port and leave a grandchild behind that
writes a file after the response. A policy (enforce mode) allows only that
port and denies a private directory: a connect to another loopback address
is refused with EPERM before any packet, and a `cat` of the private file is
stopped. Then `mcpwitness calls` and `show` say what each call really did.

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
    private = os.path.join(state, "private")
    os.makedirs(private, exist_ok=True)
    with open(os.path.join(private, "token"), "w") as f:
        f.write("demo-secret\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # loopback only
    listener.listen(1)
    port = listener.getsockname()[1]
    policy = os.path.join(state, "policy.yaml")
    with open(policy, "w") as f:
        f.write(f"""policies:
  - name: demo-server
    match: {{cmdline: "*audit_server.py*"}}
    mode: enforce
    network:
      default: deny
      allow: ["127.0.0.1:{port}"]
    files:
      deny: ["{private}/**"]
    exec:
      deny: [curl, wget]
""")
    params = StdioServerParameters(command=MW, args=["run", "-q", "--jsonl", jsonl, "--db", db, "--linger", "3",
                                                     "--policy", policy, "--", sys.executable, SERVER],
                                   env={**os.environ, "MW_AUDIT_SIDE": os.path.join(state, "notes.txt")})

    async def drive():
        async with Client(params) as c:
            for tool, args in (("read_file", {"path": notes}),
                               ("read_file", {"path": "/etc/passwd"}),
                               ("run", {"argv": ["sh", "-c", "uname -r | tr a-z A-Z"]}),
                               ("connect", {"port": port}),
                               ("spawn", {"marker": os.path.join(state, "left-behind.txt"), "delay": 0.3}),
                               ("connect", {"port": port, "host": "127.0.0.2"}),
                               ("run", {"argv": ["cat", os.path.join(private, "token")]})):
                r = await c.call_tool(tool, args)
                text = r.content[0].text.strip() if r.content else ""
                print(f"client: {tool}({args}) -> {text[:60]!r}" + (" (tool error)" if r.is_error else ""))
            await anyio.sleep(1.0)

    anyio.run(drive)
    listener.close()
    print(f"\n$ mcpwitness calls --db {db}")
    subprocess.run([MW, "calls", "--db", db], check=True)
    for tool, nth in (("run", -1), ("spawn", 0), ("connect", 0), ("run", 0)):
        out = subprocess.run([MW, "calls", "--db", db, "--tool", tool, "--json"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        cid = json.loads(out[nth])["call_id"]  # newest first
        print(f"\n$ mcpwitness show --db {db} {cid}")
        subprocess.run([MW, "show", "--db", db, cid], check=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mcpwitness-demo")
