"""A hand-written MCP server (2025-11-25 handshake era) that starts one thread
per tools/call; that thread does the work and writes the response. The
reader thread answers everything else itself.

Tool `touch`: {"path": P, "delay": S} sleeps S, opens P for writing, sleeps S.
"""
import json
import os
import sys
import threading
import time

OUT = sys.stdout.fileno()
lock = threading.Lock()
# the ground truth for bench/attribution.py (as audit_server.py): the file each call opened, by its tag
TRUTH = os.open(os.environ["MW_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) \
    if os.environ.get("MW_AUDIT_LOG") else None


def send(obj):
    data = json.dumps(obj).encode() + b"\n"
    with lock:
        os.write(OUT, data)


def touch(mid, args):
    time.sleep(float(args.get("delay", 0)))
    with open(args["path"], "w") as f:
        f.write("x")
    if TRUTH is not None and "tag" in args:
        os.write(TRUTH, (json.dumps({"tag": args["tag"], "path": args["path"]}) + "\n").encode())
    time.sleep(float(args.get("delay", 0)))
    send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": args["path"]}],
                                                  "isError": False}})


TOOLS = [{"name": "touch", "description": "open a file", "inputSchema": {
    "type": "object", "properties": {"path": {"type": "string"}, "delay": {"type": "number"},
                                     "tag": {"type": "integer"}},
    "required": ["path"]}}]

for line in sys.stdin.buffer:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue  # notifications
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "protocolVersion": msg["params"].get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}}, "serverInfo": {"name": "threaded-test-server", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        threading.Thread(target=touch, args=(mid, msg["params"].get("arguments", {}))).start()
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": f"method not found: {method}"}})
