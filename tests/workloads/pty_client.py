"""A client that runs an MCP server on a pseudo-terminal (the pty's slave as the
server's stdin and stdout, in raw mode, as a terminal-based host would) and
speaks JSON-RPC on the master, logging what it sent and received to argv[1]
(the ground truth). argv[2]: a file for the server's read_file tool;
argv[3:]: the server's command."""
import json
import os
import sys
import tty

master, slave = os.openpty()
tty.setraw(slave)
pid = os.fork()
if pid == 0:
    os.close(master)
    os.setsid()
    os.dup2(slave, 0)
    os.dup2(slave, 1)
    os.close(slave)
    os.execvp(sys.argv[3], sys.argv[3:])
os.close(slave)
log = []
buf = b""


def send(m):
    os.write(master, json.dumps(m, separators=(",", ":")).encode() + b"\n")
    log.append(["sent", m])


def recv():
    global buf
    while b"\n" not in buf:
        chunk = os.read(master, 65536)
        if not chunk:
            raise SystemExit("the server closed the pty")
        buf += chunk
    line, buf = buf.split(b"\n", 1)
    m = json.loads(line)
    log.append(["received", m])
    return m


send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
      "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pty", "version": "1"}}})
recv()
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "read_file",
                                                                     "arguments": {"path": sys.argv[2]}}})
recv()
with open(sys.argv[1], "w") as f:
    json.dump(log, f)
os.kill(pid, 15)
os.waitpid(pid, 0)
