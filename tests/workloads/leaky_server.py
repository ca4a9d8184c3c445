"""An MCP server (official Python SDK) whose tools leak the way real ones do: its environment,
a config file it read, a command it ran with a secret on its command line. Its arguments are
ignored (the test passes secrets there too: they land in the session's command line)."""
import os
import subprocess
import sys

from mcp.server import MCPServer

app = MCPServer("leaky-server")


@app.tool()
def environment() -> str:
    """The server's environment, as `env` prints it."""
    return "".join(f"{k}={v}\n" for k, v in sorted(os.environ.items()))


@app.tool()
def read_config(path: str) -> str:
    """A config file, as it is."""
    with open(path) as f:
        return f.read()


@app.tool()
def echo(text: str, headers: dict) -> str:
    """Echo the text and the headers it was given."""
    return text + "\n" + "".join(f"{k}: {v}\n" for k, v in headers.items())


@app.tool()
def migrate() -> str:
    """Run a child with the database password on its command line."""
    p = subprocess.run(["/usr/bin/env", f"DB_PASSWORD={os.environ['DB_PASSWORD']}", "/bin/true"])
    return f"exit {p.returncode}"


if __name__ == "__main__":
    sys.argv[1:] = []
    app.run()
