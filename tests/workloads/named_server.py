"""The SDK test server (sdk_server.py) under a process name of its own, set
before it reads its first message: python named_server.py NAME. A host-wide
`mcpwitness watch --comm NAME` then finds this server and no other."""
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ctypes.CDLL(None).prctl(15, sys.argv[1].encode()[:15], 0, 0, 0)   # PR_SET_NAME
from sdk_server import app  # noqa: E402

app.run()
