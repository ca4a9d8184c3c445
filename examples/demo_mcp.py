"""The demo: an MCP client (the official SDK) calls the tools of a server
(official SDK too, tests/workloads/audit_server.py) started under
`mcpwitness run`. The tools read a file, read /etc/passwd, run a shell
pipeline, connect to a loopback port and leave a grandchild behind that
writes a file after the response. A policy (enforce mode) allows only that
port and denies a private directory: a connect to another loopback address
is refused with EPERM before any packet, and a `cat` of the private file is
stopped. Then `mcpwitness calls` and `show` say what each call really did,
and `mcpwitness alerts` what the default detection rules made of it.

Then the same kind of server over Streamable HTTP with TLS (a self-signed
certificate made here, on a loopback port), started by nobody we know:
`mcpwitness watch --port` finds it in the kernel, reads the plaintext at
OpenSSL's SSL_read/SSL_write, and shows the call with the file it opened
and the session with both of its ends.

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
HTTP_SERVER = os.path.join(ROOT, "tests", "workloads", "sdk_http_server.py")


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
    # the default detection rules ran on all of it: each alert names its call
    print(f"\n$ mcpwitness alerts --db {db}")
    subprocess.run([MW, "alerts", "--db", db], check=True)
    https_part(state, notes)
    print("\nSee the same calls in a browser (the web timeline, loopback only; docs/ui.md):")
    print(f"  {MW} ui --db {db}")
    print("  then open http://127.0.0.1:8765/")


def https_part(state: str, notes: str) -> None:
    import time
    db, jsonl = os.path.join(state, "https.db"), os.path.join(state, "https.jsonl")
    for p in (db, db + "-wal", db + "-shm", jsonl):
        if os.path.exists(p):
            os.unlink(p)
    cert, key = os.path.join(state, "cert.pem"), os.path.join(state, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # loopback only
        port = s.getsockname()[1]
    print(f"\n--- Streamable HTTP over TLS on 127.0.0.1:{port}, a server nobody wrapped ---")
    print(f"$ mcpwitness watch --port {port}")
    watch = subprocess.Popen([MW, "watch", "-q", "--port", str(port), "--jsonl", jsonl, "--db", db, "--linger", "1"])
    for _ in range(200):
        if os.path.exists(jsonl) and '"start"' in open(jsonl).read():
            break
        time.sleep(0.05)
    server = subprocess.Popen([sys.executable, HTTP_SERVER, "https", "127.0.0.1", str(port), cert, key],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        server.stdout.readline()  # "listening"
        os.environ["SSL_CERT_FILE"] = cert  # the client trusts the demo certificate

        async def drive():
            async with Client(f"https://127.0.0.1:{port}/mcp") as c:
                r = await c.call_tool("read_file", {"path": notes})
                print(f"client: read_file over HTTPS -> {r.content[0].text.strip()!r}")

        anyio.run(drive)
        time.sleep(1.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        watch.terminate()
        watch.wait(timeout=60)
    with open(jsonl) as f:
        recs = [json.loads(x) for x in f]
    sess = [r for r in recs if r["type"] == "session"][-1]
    print("session:", sess["transport"], "server", sess["connection"]["server"], "client",
          sess["connection"]["client"])
    for e in sess["ends"]:
        print(f"  {e['role']:6} pid {e['pid']}  {' '.join(e['cmdline'] or [])[:90]}")
    out = subprocess.run([MW, "calls", "--db", db, "--tool", "read_file", "--json"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    cid = json.loads(out[0])["call_id"]
    print(f"\n$ mcpwitness show --db {db} {cid}")
    subprocess.run([MW, "show", "--db", db, cid], check=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mcpwitness-demo")
