"""A client that runs the SDK test server on one end of a Unix socketpair (as
its stdin and stdout) and speaks JSON-RPC on the other, logging what it sent
and received to argv[1] (the ground truth). Under `mcpwitness run` both ends
are tracked."""
import json
import os
import socket
import sys

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdk_server.py")
ours, theirs = socket.socketpair()
pid = os.fork()
if pid == 0:
    ours.close()
    os.dup2(theirs.fileno(), 0)
    os.dup2(theirs.fileno(), 1)
    os.execv(sys.executable, [sys.executable, SERVER])
theirs.close()
reader = ours.makefile("rb", buffering=0)
log = []


def send(m):
    ours.sendall(json.dumps(m, separators=(",", ":")).encode() + b"\n")
    log.append(["sent", m])


def recv():
    m = json.loads(reader.readline())
    log.append(["received", m])
    return m


send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
      "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pair", "version": "1"}}})
recv()
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
recv()
send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "read_file", "arguments": {"path": sys.argv[2]}}})
recv()
ours.shutdown(socket.SHUT_WR)
os.waitpid(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump(log, f)
