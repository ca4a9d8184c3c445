"""An MCP server (official SDK, mcp 2.x MCPServer) whose tools do real work,
for the attribution tests: every kernel event a tool causes is known in advance.

MW_AUDIT_SIDE: a file read_file also opens (a config it consults).
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

from mcp.server import MCPServer

app = MCPServer("witness-audit-server")
SIDE = os.environ.get("MW_AUDIT_SIDE", "/dev/null")
# the ground truth for bench/attribution.py: one JSON line per file a tool opened, with the `tag`
# of the call it served, written by the tool itself (an fd opened at start: no open of its own)
_TRUTH = os.open(os.environ["MW_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) \
    if os.environ.get("MW_AUDIT_LOG") else None


def truth(tag: int, path: str) -> None:
    if _TRUTH is not None and tag >= 0:
        os.write(_TRUTH, (json.dumps({"tag": tag, "path": path, "tid": threading.get_native_id()}) + "\n").encode())


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
def touch_sync(path: str, delay: float = 0.0, tag: int = -1) -> str:
    """Open a file unique to this call (a sync tool: the SDK runs it in a worker thread)."""
    time.sleep(delay)
    with open(path, "w") as f:
        f.write("x")
    truth(tag, path)
    time.sleep(delay)
    return path


@app.tool()
async def touch_async(path: str, delay: float = 0.0, tag: int = -1) -> str:
    """Open a file unique to this call (an async tool: on the event loop)."""
    await asyncio.sleep(delay)
    with open(path, "w") as f:
        f.write("x")
    truth(tag, path)
    await asyncio.sleep(delay)
    return path


@app.tool()
async def touch_indexed(n: int, delay: float = 0.0, tag: int = -1) -> str:
    """Open $MW_AUDIT_DIR/call-N.txt: a file unique to the call that its arguments do not name."""
    await asyncio.sleep(delay)
    path = os.path.join(os.environ["MW_AUDIT_DIR"], f"call-{n}.txt")
    with open(path, "w") as f:
        f.write("x")
    truth(tag, path)
    await asyncio.sleep(delay)
    return path


@app.tool()
def read_note(name: str, delay: float = 0.0, tag: int = -1, folder: str = "") -> str:
    """Read a note by its name relative to the notes folder, the server's working directory, or
    to `folder` under it (a sync tool: the SDK runs it in a worker thread)."""
    time.sleep(delay)
    path = os.path.join(os.getcwd(), folder, name)
    with open(path, "a+") as f:
        f.seek(0)
        text = f.read()
    truth(tag, path)
    time.sleep(delay)
    return text


@app.tool()
async def describe(path: str, delay: float = 0.0, tag: int = -1) -> str:
    """Name a file and open nothing (what a tool that only talks about a file does)."""
    await asyncio.sleep(2 * delay)
    return f"about {path}"


@app.tool()
async def list_dir(path: str, delay: float = 0.0, tag: int = -1) -> list[str]:
    """List a directory (its open is the directory's)."""
    await asyncio.sleep(delay)
    names = os.listdir(path)
    truth(tag, os.path.normpath(path))
    await asyncio.sleep(delay)
    return names


@app.tool()
def remember(path: str, delay: float = 0.0, tag: int = -1) -> str:
    """Answer at once; a background thread of the server opens `path` `delay` seconds later (a
    deferred job: the open serves this call, after its answer)."""
    def later():
        time.sleep(delay)
        with open(path, "w") as f:
            f.write("x")
        truth(tag, path)
    threading.Thread(target=later, daemon=True).start()
    return "queued"


@app.tool()
async def wait(seconds: float, tag: int = -1) -> str:
    """Sleep on the event loop and touch nothing."""
    await asyncio.sleep(seconds)
    return "waited"


@app.tool()
def run(argv: list[str]) -> str:
    """Run a program and return its output."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


if __name__ == "__main__":
    app.run()
