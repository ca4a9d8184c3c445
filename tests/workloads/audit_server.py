"""An MCP server (official SDK, mcp 2.x MCPServer) whose tools do real work,
for the attribution tests: every kernel event a tool causes is known in advance.

MW_AUDIT_SIDE: a file read_file also opens (a config it consults).
"""
import asyncio
import os
import socket
import subprocess
import sys
import time

from mcp.server import MCPServer

app = MCPServer("witness-audit-server")
SIDE = os.environ.get("MW_AUDIT_SIDE", "/dev/null")


@app.tool()
def read_file(path: str) -> str:
    """Read the file asked for; also consult a side file."""
    with open(SIDE, "rb"):
        pass
    with open(path) as f:
        return f.read()


@app.tool()
def spawn(marker: str, delay: float = 0.5) -> str:
    """Run a subprocess that double-forks a grandchild; the grandchild opens
    `marker` after `delay` seconds (after this call's response was sent)."""
    code = ("import os, sys, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(float(sys.argv[2]))\n"
            "        open(sys.argv[1], 'w').write('late')\n"
            "    os._exit(0)\n"
            "os.wait()\n")
    subprocess.run([sys.executable, "-c", code, marker, str(delay)], check=True)
    return "spawned"


@app.tool()
def connect(port: int, host: str = "127.0.0.1") -> str:
    """Connect to a loopback port."""
    with socket.create_connection((host, port), timeout=5):
        pass
    return f"connected to {host}:{port}"


@app.tool()
def http_get(port: int, times: int = 3) -> str:
    """GET a loopback REST endpoint a few times on one keep-alive connection (not MCP)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    bodies = []
    for i in range(times):
        conn.request("GET", f"/api/items/{i}")
        bodies.append(conn.getresponse().read().decode())
    conn.close()
    return bodies[-1]


@app.tool()
def touch_sync(path: str, delay: float = 0.0) -> str:
    """Open a file unique to this call (a sync tool: the SDK runs it in a worker thread)."""
    time.sleep(delay)
    with open(path, "w") as f:
        f.write("x")
    time.sleep(delay)
    return path


@app.tool()
async def touch_async(path: str, delay: float = 0.0) -> str:
    """Open a file unique to this call (an async tool: on the event loop)."""
    await asyncio.sleep(delay)
    with open(path, "w") as f:
        f.write("x")
    await asyncio.sleep(delay)
    return path


@app.tool()
async def touch_indexed(n: int, delay: float = 0.0) -> str:
    """Open $MW_AUDIT_DIR/call-N.txt: a file unique to the call that its arguments do not name."""
    await asyncio.sleep(delay)
    path = os.path.join(os.environ["MW_AUDIT_DIR"], f"call-{n}.txt")
    with open(path, "w") as f:
        f.write("x")
    await asyncio.sleep(delay)
    return path


@app.tool()
def read_note(name: str, delay: float = 0.0) -> str:
    """Read a note by its name relative to the notes folder, the server's working directory
    (a sync tool: the SDK runs it in a worker thread)."""
    time.sleep(delay)
    with open(os.path.join(os.getcwd(), name), "a+") as f:
        f.seek(0)
        text = f.read()
    time.sleep(delay)
    return text


@app.tool()
def run(argv: list[str]) -> str:
    """Run a program and return its output."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


if __name__ == "__main__":
    app.run()
