"""Drive a server with the official SDK client and keep the client's own
record of every message it sent and received: the ground truth."""
import json
from contextlib import asynccontextmanager

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client


def as_dict(session_message):
    return json.loads(session_message.message.model_dump_json(by_alias=True, exclude_none=True))


class _Read:
    def __init__(self, inner, log):
        self.inner, self.log = inner, log

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

    async def aclose(self):
        await self.inner.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        return await self.inner.__aexit__(*a)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _Write:
    def __init__(self, inner, log):
        self.inner, self.log = inner, log

    async def send(self, m):
        self.log.append(("sent", as_dict(m)))
        await self.inner.send(m)

    async def aclose(self):
        await self.inner.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        return await self.inner.__aexit__(*a)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class RecordingStdio:
    """A Transport for mcp.Client that records what crosses it."""

    def __init__(self, command, args, env=None):
        self.params = StdioServerParameters(command=command, args=args, env=env)
        self.log: list[tuple[str, dict]] = []

    @asynccontextmanager
    async def _open(self):
        async with stdio_client(self.params) as (r, w):
            yield _Read(r, self.log), _Write(w, self.log)

    async def __aenter__(self):
        self._cm = self._open()
        return await self._cm.__aenter__()

    async def __aexit__(self, *a):
        return await self._cm.__aexit__(*a)


def client(transport, **kw):
    return Client(transport, **kw)
