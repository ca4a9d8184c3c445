"""A hand-written stdio MCP 'server' that writes each answer in a way meant to
get past payload capture: the request's method names the way (evasion suite)."""
import ctypes
import json
import os
import sys
import tempfile

out = sys.stdout.fileno()
libc = ctypes.CDLL(None, use_errno=True)


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def answer(mid, method) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": mid, "result": {"way": method, "pad": "p" * 64}}).encode() + b"\n"


def through_pipe(data: bytes):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


for line in sys.stdin.buffer:
    msg = json.loads(line)
    mid, method = msg["id"], msg["method"]
    data = answer(mid, method)
    if method == "bytewise":  # one byte per write
        for i in range(len(data)):
            os.write(out, data[i:i + 1])
    elif method == "writev_tiny":  # one iovec per byte, one writev
        os.writev(out, [data[i:i + 1] for i in range(len(data))])
    elif method == "splice":  # from a pipe the server filled: the bytes never pass a write to stdout
        r = through_pipe(data)
        os.splice(r, out, len(data))
        os.close(r)
    elif method == "sendfile":  # from a file
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            os.sendfile(out, f.fileno(), 0, len(data))
    elif method == "vmsplice":  # user memory into the stdout pipe
        buf = ctypes.create_string_buffer(data, len(data))
        v = IoVec(ctypes.cast(buf, ctypes.c_void_p), len(data))
        if libc.vmsplice(out, ctypes.byref(v), 1, 0) != len(data):
            os.write(out, data)  # stdout is not a pipe: write it plainly
    else:
        os.write(out, data)
