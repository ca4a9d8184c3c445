"""An MCP client driven one call at a time: launches SERVER (argv after the
script) over stdio with the official SDK, prints "ready", then for each line
on stdin (JSON: [tool, arguments]) makes the call and prints the result as a
JSON line ({"error": bool, "text": str}); stdin's end ends the session.
usage: stepped_client.py CMD [ARGS...]"""
import json
import os
import sys

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mcp_client import RecordingStdio, client  # noqa: E402


async def main():
    t = RecordingStdio(sys.argv[1], sys.argv[2:])
    async with client(t) as c:
        await c.list_tools()
        print("ready", flush=True)
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            name, args = json.loads(line)
            r = await c.call_tool(name, args)
            text = r.content[0].text if r.content else ""
            print(json.dumps({"error": bool(r.is_error), "text": text}), flush=True)

anyio.run(main)
