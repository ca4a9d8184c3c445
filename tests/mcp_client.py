"""Drive a server with the official SDK client and keep the client's own
record of every message it sent and received: the ground truth."""
import json
import os
from contextlib import asynccontextmanager

import mcp.client.stdio as _sdk_stdio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

# The SDK gives a server 2 s to exit after its stdin closes, then SIGTERMs its
# process group and SIGKILLs it 2 s later. When the server is `mcpwitness run`,
# that group holds the witness too, and under an emulated guest (1 vCPU, TCG)
# its last drain and stats record can take longer than 4 s: the kill then cuts
# the record short, a failure of the harness's patience, not of the witness.
# The truth-keeping client waits for the exit instead (a hung witness still
# ends, after this long).
_sdk_stdio.PROCESS_TERMINATION_TIMEOUT = float(os.environ.get("MW_CLIENT_EXIT_GRACE", "120"))


def as_dict(session_message):
    return json.loads(session_message.message.model_dump_json(by_alias=True, exclude_none=True))


class _Wrapped:
    """An SDK stream with our logging in front; the rest passes through."""

    def __init__(self, inner, log):
        self.inner, self.log = inner, log

    async def aclose(self):
        await self.inner.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        return await self.inner.__aexit__(*a)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _Read(_Wrapped):
    async def receive(self):
        m = await self.inner.receive()
        if not isinstance(m, Exception):
            self.log.append(("received", as_dict(m)))
        return m

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.receive()
        except Exception as e:  # end of stream
            if type(e).__name__ in ("EndOfStream", "ClosedResourceError"):
                raise StopAsyncIteration from None
            raise


class _Write(_Wrapped):
    async def send(self, m):
        self.log.append(("sent", as_dict(m)))
        await self.inner.send(m)


class Recording:
    """A Transport for mcp.Client that records what crosses it: the SDK
    transport opened by `opener()`, with our log in front."""

    def __init__(self, opener):
        self.opener = opener
        self.log: list[tuple[str, dict]] = []

    @asynccontextmanager
    async def _open(self):
        async with self.opener() as streams:
            r, w = streams[0], streams[1]
            yield _Read(r, self.log), _Write(w, self.log)

    async def __aenter__(self):
        self._cm = self._open()
        return await self._cm.__aenter__()

    async def __aexit__(self, *a):
        return await self._cm.__aexit__(*a)


class RecordingStdio(Recording):
    def __init__(self, command, args, env=None):
        if env is None and os.environ.get("MCPWITNESS_STATE_DIR"):
            # the SDK passes the server only HOME, PATH, SHELL and TERM (plus env): without
            # this, an mcpwitness started as the server would use the machine's state directory
            env = {"MCPWITNESS_STATE_DIR": os.environ["MCPWITNESS_STATE_DIR"]}
        self.params = StdioServerParameters(command=command, args=args, env=env)
        super().__init__(lambda: stdio_client(self.params))


class RecordingHttp(Recording):
    """Streamable HTTP (url ending in /mcp) or the HTTP+SSE transport (url ending in /sse)."""

    def __init__(self, url):
        if url.endswith("/sse"):
            from mcp.client.sse import sse_client
            super().__init__(lambda: sse_client(url))
        else:
            from mcp.client.streamable_http import streamable_http_client
            super().__init__(lambda: streamable_http_client(url))


def client(transport, **kw):
    return Client(transport, **kw)


def _summary(mcp):
    """What a failed comparison prints: each record's end, way, kind and the library it was read from."""
    return [(r["pid"], r["direction"], r["kind"], r.get("method"), r.get("id"), r["session"],
             (r.get("tls") or {}).get("library"), r.get("fd")) for r in mcp]


def check_against_client(log, mcp):
    """Every message the client sent or received appears exactly once, in
    order within each direction, with its id, method, kind and pairing;
    nothing extra. (Across directions the client and the server can see the
    interleaving differently: the server's syscalls are what the kernel saw.)"""
    assert len(mcp) == len(log), (len(mcp), len(log), _summary(mcp), [(w, m.get("method"), m.get("id")) for w, m in log])
    assert len({r["session"] for r in mcp}) == 1
    methods = {}
    for way, direction in (("sent", "client->server"), ("received", "server->client")):
        mine = [m for w, m in log if w == way]
        seen = [r for r in mcp if r["direction"] == direction]
        assert len(mine) == len(seen), (way, len(mine), len(seen))
        for m, r in zip(mine, seen):
            assert r["id"] == m.get("id")
            if "method" in m:
                assert r["kind"] == ("request" if "id" in m else "notification") and r["method"] == m["method"]
                if "id" in m:
                    methods[(direction, json.dumps(m["id"]))] = m["method"]
            if way == "sent":  # the client's own serialization is what crossed the pipe
                assert r["size"] == len(json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode())
    for r in mcp:
        if r["kind"] in ("response", "error"):
            other = "server->client" if r["direction"] == "client->server" else "client->server"
            assert r["paired"] and r["method"] == methods[(other, json.dumps(r["id"]))]
            assert r["latency_ms"] > 0
