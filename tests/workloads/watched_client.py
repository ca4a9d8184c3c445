"""An MCP client that mcpwitness did not start: waits for GO, launches its
server itself (no wrapper), makes the calls, writes its own record to LOG.
usage: watched_client.py GO LOG CONFIG_JSON   (config: command, args, calls)"""
import json
import os
import sys
import time

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mcp_client import RecordingStdio, client  # noqa: E402

go, log, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
while not os.path.exists(go):
    time.sleep(0.02)
t = RecordingStdio(cfg["command"], cfg["args"])


async def main():
    async with client(t) as c:
        await c.list_tools()
        for name, args in cfg["calls"]:
            await c.call_tool(name, args)

anyio.run(main)
with open(log, "w") as f:
    json.dump(t.log, f)
