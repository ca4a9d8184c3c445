"""A stdio MCP server whose answers are written by its children: for each
request it runs /usr/bin/printf with the response, and the child writes it on
the stdout it inherited (as shell-style servers do). Its one tool, read_file,
is read by the server itself."""
import json
import subprocess
import sys

for raw in sys.stdin.buffer:
    msg = json.loads(raw)
    if "id" not in msg:
        continue  # notifications
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                  "serverInfo": {"name": "helper-server", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "read_file", "description": "Read a file",
                             "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}}]}
    elif method == "tools/call":
        with open(params["arguments"]["path"]) as f:
            result = {"content": [{"type": "text", "text": f.read()}]}
    else:
        out = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no such method"}}
        result = None
    if result is not None:
        out = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
    subprocess.run(["/usr/bin/printf", "%s\n", json.dumps(out)], check=True)
