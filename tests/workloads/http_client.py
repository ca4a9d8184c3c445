"""An MCP client (the official SDK) on Streamable HTTP, for `mcpwitness run`
to track: python http_client.py URL LOG. LOG gets what it sent and received."""
import json
import os
import sys

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mcp_client import RecordingHttp, client  # noqa: E402


async def main():
    t = RecordingHttp(sys.argv[1])
    async with client(t) as c:
        await c.list_tools()
        await c.call_tool("echo", {"text": "from a tracked client"})
    with open(sys.argv[2], "w") as f:
        json.dump(t.log, f)

anyio.run(main)
