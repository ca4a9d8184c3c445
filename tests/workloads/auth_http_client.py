"""An MCP client (the official SDK) on Streamable HTTP that sends credentials
on every request: python auth_http_client.py URL HEADER VALUE NAME LOG
(HEADER: e.g. Authorization, VALUE: "Bearer <token>"; NAME: its clientInfo
name). LOG gets what it sent and received."""
import json
import os
import sys

import anyio
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mcp_client import Recording, client  # noqa: E402

url, header, value, name, log = sys.argv[1:6]


async def main():
    http = create_mcp_http_client(headers={header: value})
    t = Recording(lambda: streamable_http_client(url, http_client=http))
    async with http:
        async with client(t, client_info=Implementation(name=name, version="1")) as c:
            await c.list_tools()
            r = await c.call_tool("echo", {"text": "with credentials"})
            assert not r.is_error
    with open(log, "w") as f:
        json.dump(t.log, f)

anyio.run(main)
