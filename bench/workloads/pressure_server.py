"""An MCP server (official SDK) with one tool that runs a command and waits for it:
the load of bench/pressure.py's `call` scenario happens inside a tool call."""
import subprocess

from mcp.server import MCPServer

app = MCPServer("witness-pressure-server")


@app.tool()
def run(argv: list[str]) -> str:
    """Run argv, wait for it, return its exit status."""
    return f"exit {subprocess.run(argv).returncode}"


if __name__ == "__main__":
    app.run()
