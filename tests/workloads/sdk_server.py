"""An MCP server written with the official Python SDK (mcp 2.x, MCPServer)."""
import os

from mcp.server import MCPServer

app = MCPServer("witness-test-server")


@app.tool()
def echo(text: str) -> str:
    """Echo text back."""
    return text


@app.tool()
def big(n: int) -> str:
    """A result of n bytes."""
    return "x" * n


@app.tool()
def read_file(path: str) -> str:
    """Read a file."""
    with open(path) as f:
        return f.read()


@app.tool()
def crash() -> str:
    """Write half a message on the protocol stream, then die."""
    os.write(int(os.environ.get("MW_TEST_OUT_FD", "1")), b'{"jsonrpc":"2.0","id":99,"resu')
    os._exit(3)


if __name__ == "__main__":
    app.run()
