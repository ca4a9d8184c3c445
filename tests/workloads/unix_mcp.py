"""The official SDK's server and client over a named Unix socket (newline-
delimited JSON-RPC, as on stdio), for the Unix socket transport:

    unix_mcp.py serve SOCK           accept one connection, serve sdk_server.py's tools on it, exit
    unix_mcp.py client SOCK LOG NAME call echo and read_file (LOG: what it sent and received;
                                     NAME: its clientInfo name)
The server prints "listening" once the socket accepts connections."""
import json
import os
import socket
import sys

import anyio
import mcp.types as types
from mcp.shared.message import SessionMessage

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def streams(sock):
    """(read, write) memory streams of SessionMessage over a connected socket, and the task that pumps them."""
    rx_send, rx = anyio.create_memory_object_stream(16)
    tx, tx_recv = anyio.create_memory_object_stream(16)

    async def pump(conn):
        async def reader():
            buf = b""
            async with rx_send:
                while True:
                    try:
                        chunk = await conn.receive(65536)
                    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            msg = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                            await rx_send.send(SessionMessage(msg))

        async def writer():
            async with tx_recv:
                async for m in tx_recv:
                    await conn.send((m.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode())
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
    return rx, tx, pump


async def serve(path):
    from sdk_server import app
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, 0o666)
    print("listening", flush=True)
    conn = await listener.accept()
    rx, tx, pump = streams(conn)
    server = app._lowlevel_server
    async with anyio.create_task_group() as tg:
        tg.start_soon(pump, conn)
        await server.run(rx, tx, server.create_initialization_options())
        tg.cancel_scope.cancel()
    await listener.aclose()


async def run_client(path, log_path, name):
    from mcp import ClientSession
    conn = await anyio.connect_unix(path)
    rx, tx, pump = streams(conn)
    log = []

    class Rx:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, k):
            return getattr(self.inner, k)

        async def __aenter__(self):
            return self

        async def __aexit__(self, *a):
            return await self.inner.__aexit__(*a)

        def __aiter__(self):
            return self

        async def __anext__(self):
            m = await self.inner.__anext__()
            if isinstance(m, SessionMessage):
                log.append(["received", m.message.model_dump(by_alias=True, exclude_none=True)])
            return m

        async def receive(self):
            return await self.__anext__()

    class Tx(Rx):
        async def send(self, m):
            log.append(["sent", m.message.model_dump(by_alias=True, exclude_none=True)])
            await self.inner.send(m)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump, conn)
        async with ClientSession(Rx(rx), Tx(tx), client_info=types.Implementation(name=name, version="1")) as c:
            await c.initialize()
            r = await c.call_tool("echo", {"text": "over a named unix socket"})
            assert not r.is_error
            r = await c.call_tool("read_file", {"path": __file__})
            assert not r.is_error
        tg.cancel_scope.cancel()
    await conn.aclose()
    with open(log_path, "w") as f:
        json.dump(log, f)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    if sys.argv[1] == "serve":
        anyio.run(serve, sys.argv[2])
    else:
        anyio.run(run_client, sys.argv[2], sys.argv[3], sys.argv[4])
