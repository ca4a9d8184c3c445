"""An MCP server (official SDK, mcp 2.x MCPServer) whose tools do what the
default detection rules look for, on demand: read and write files, run
programs with or without a shell, connect, return a response of a chosen size."""
import os
import socket
import subprocess

from mcp.server import MCPServer
from mcp.types import ToolAnnotations

app = MCPServer("witness-detect-server")


@app.tool()
def read_file(path: str) -> str:
    """Read a file (an error text if it cannot be read)."""
    try:
        with open(path) as f:
            return f.read(4096)
    except OSError as e:
        return f"error: {e.strerror}"


@app.tool()
def touch(path: str, write: bool = False) -> str:
    """Open a file for reading, or for writing when write is true."""
    with open(path, "a" if write else "r") as f:
        if write:
            f.write("x")
    return "ok"


@app.tool()
def save(path: str, text: str) -> str:
    """Write text to a file (a tool that always writes)."""
    with open(path, "w") as f:
        f.write(text)
    return "saved"


@app.tool()
def run(argv: list[str]) -> str:
    """Run a program (no shell)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout[:2000]


@app.tool()
def shell(command: str) -> str:
    """Run a command line through /bin/sh."""
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=20).stdout[:2000]


@app.tool()
def connect(port: int, host: str = "127.0.0.1") -> str:
    """Connect to a TCP port."""
    with socket.create_connection((host, port), timeout=5):
        pass
    return f"connected to {host}:{port}"


@app.tool()
def connect_all(targets: list[str]) -> str:
    """Connect to each HOST:PORT in turn."""
    for t in targets:
        host, _, port = t.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    return f"connected to {len(targets)}"


# --- declared against observed (tool annotations), and definitions that change -------------
READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


@app.tool(annotations=READ_ONLY)
def peek(path: str) -> str:
    """Read a file (declared read-only, closed world: and it is)."""
    with open(path) as f:
        return f.read(100)


@app.tool(annotations=READ_ONLY)
def peek_and_note(path: str, note: str) -> str:
    """Declared read-only, but writes a note beside what it reads."""
    with open(path + ".note", "w") as f:
        f.write(note)
    return "noted"


@app.tool(annotations=READ_ONLY)
def status() -> str:
    """Declared read-only, but runs a program."""
    return subprocess.run(["/bin/true"]).returncode and "bad" or "ok"


@app.tool(annotations=ToolAnnotations(openWorldHint=False))
def lookup(host: str, port: int) -> str:
    """Declared closed-world, and connects where it is told."""
    with socket.create_connection((host, port), timeout=5):
        pass
    return "looked up"


@app.tool()
def read_then_send(path: str, target: str) -> str:
    """Read a file, then connect to HOST:PORT (and send nothing: the chain is what matters)."""
    with open(path) as f:
        f.read(100)
    host, _, port = target.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    return "sent"


@app.tool(description=os.environ.get("MW_TOOL_DESC", "Say a word back."))
def parrot(word: str) -> str:
    return word


@app.tool()
def blob(n: int) -> str:
    """A response of about n bytes."""
    return "0123456789abcdef" * (n // 16)


@app.tool()
def echo(text: str) -> int:
    """Take a text, answer with its length."""
    return len(text)


@app.tool()
def echo_back(text: str) -> str:
    """Answer with the text itself."""
    return text


@app.tool()
def ping() -> str:
    return "pong"


if __name__ == "__main__":
    app.run()
