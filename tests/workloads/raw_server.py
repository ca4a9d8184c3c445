"""A hand-written stdio 'server' that misbehaves on purpose, one way per request."""
import json
import os
import sys

out = sys.stdout.fileno()


def send(obj):
    os.write(out, json.dumps(obj).encode() + b"\n")


for line in sys.stdin.buffer:
    msg = json.loads(line)
    if isinstance(msg, list):  # a batch: answered by a batch
        os.write(out, json.dumps([{"jsonrpc": "2.0", "id": m["id"], "result": {"m": m["method"]}}
                                  for m in msg]).encode() + b"\n")
        continue
    mid, method = msg["id"], msg["method"]
    if method == "split":  # one message over many writes
        data = json.dumps({"jsonrpc": "2.0", "id": mid, "result": {"text": "s" * 200}}).encode() + b"\n"
        for i in range(0, len(data), 7):
            os.write(out, data[i:i + 7])
    elif method == "many":  # several messages in one write
        os.write(out, b"".join(json.dumps(m).encode() + b"\n" for m in (
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
            {"jsonrpc": "2.0", "id": mid, "result": {}},
            {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "done"}})))
    elif method == "garbage":
        os.write(out, b"\x00\xff\xfe binary garbage \x01\n")
        os.write(out, b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"caf\xe9"}}\n')
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    elif method == "crash":
        os.write(out, b'{"jsonrpc":"2.0","id":' + str(mid).encode() + b',"result":{"half')
        os._exit(1)
