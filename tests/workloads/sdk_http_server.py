"""The official-SDK test server (sdk_server.py, or audit_server.py with MW_HTTP_APP=audit_server)
over the network:
    sdk_http_server.py http|https|sse HOST PORT [CERT KEY]
http/https: Streamable HTTP (uvicorn), sse: the 2024-11-05 HTTP+SSE transport.
Prints "listening" on stdout once the port accepts connections."""
import os
import sys
import threading
import time

import uvicorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("MW_HTTP_APP") == "audit_server":   # the attribution benchmark's tools
    from audit_server import app  # noqa: E402
else:
    from sdk_server import app  # noqa: E402

kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "sse":
    asgi = app.sse_app(host=host)
else:
    asgi = app.streamable_http_app(host=host)
tls = dict(ssl_certfile=sys.argv[4], ssl_keyfile=sys.argv[5]) if kind == "https" else {}
server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=port, log_level="warning", **tls))


def announce():
    while not server.started:
        time.sleep(0.02)
    print("listening", flush=True)


threading.Thread(target=announce, daemon=True).start()
server.run()
