"""`mcpwitness collect --from nats://... --to postgresql://...`: a durable
JetStream consumer that writes what the agents publish into PostgreSQL.

- One durable pull consumer (default name `mcpwitness-collect`): several
  collectors with the same name share the work, each message going to one of
  them; what a dead collector had not acknowledged is delivered again after
  the ack wait.
- A batch is inserted in one transaction and acknowledged only after the
  commit. A redelivered record finds its id already there and inserts
  nothing (fleet/pg.py): exactly one row per record.
- PostgreSQL away (restarting): nothing is acknowledged; the collector
  reconnects and the same messages come again. The broker away: the client
  reconnects; nothing is lost on either side.
- Bad input (not JSON, not an envelope) is counted, said, and acknowledged
  (it would come back for ever), after being kept in the `other` table
  when it can be.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from . import pg
from .publish import PREFIX, STREAM


class Collector:
    def __init__(self, nats_url: str, dsn: str, durable: str = "mcpwitness-collect", batch: int = 500,
                 ack_wait: float = 10.0, creds: str | None = None, tls_ca: str | None = None, quiet: bool = False,
                 replicas: int = 1):
        self.servers = [u.strip() for u in nats_url.split(",") if u.strip()]
        self.dsn, self.durable, self.batch, self.ack_wait = dsn, durable, batch, ack_wait
        self.creds, self.tls_ca, self.quiet, self.replicas = creds, tls_ca, quiet, replicas
        self.stats = {"messages": 0, "inserted": 0, "duplicates": 0, "bad": 0, "batches": 0, "db_errors": 0,
                      "resubscribed": 0}
        self._resubscribe = False
        self.stop = asyncio.Event()
        # a fault to inject, for the tests only: exit (as a crash would) after this many committed batches,
        # before acknowledging the last of them
        self._crash_after = int(os.environ.get("MCPWITNESS_COLLECT_CRASH_AFTER_COMMIT", "0") or 0)

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"mcpwitness collect: {msg}", file=sys.stderr, flush=True)

    def _db(self):
        import psycopg
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        applied = pg.migrate(conn)
        if applied:
            self.say(f"schema migrations applied: {applied}")
        return conn

    async def _nats(self):
        import nats
        kw = {"servers": self.servers, "allow_reconnect": True, "max_reconnect_attempts": -1,
              "reconnect_time_wait": 0.5, "connect_timeout": 2, "name": "mcpwitness collect"}
        if self.creds:
            kw["user_credentials"] = self.creds
        if self.tls_ca:
            import ssl
            kw["tls"] = ssl.create_default_context(cafile=self.tls_ca)
        self._resubscribe = False

        async def reconnected():
            # a pull subscription does not always come back by itself after a reconnect to another
            # server (a consumer that stops getting messages): made again
            self._resubscribe = True
        nc = await nats.connect(reconnected_cb=reconnected, **kw)
        js = nc.jetstream(timeout=5)
        self._js = js
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
        from nats.js.errors import NotFoundError
        try:
            await js.stream_info(STREAM)
        except NotFoundError:
            await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"], num_replicas=self.replicas,
                                             duplicate_window=120.0))
        self._config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                      deliver_policy=DeliverPolicy.ALL, max_ack_pending=20000)
        return nc, await self._subscribe()

    async def _subscribe(self):
        return await self._js.pull_subscribe(f"{PREFIX}.>", durable=self.durable, stream=STREAM,
                                             config=self._config)

    async def _stalled(self) -> bool:
        """Fetches time out: is the consumer holding messages for us all the same?"""
        try:
            ci = await self._js.consumer_info(STREAM, self.durable)
        except Exception:
            return False
        return ci.num_pending > 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        nc = sub = conn = None
        backoff = 0.2
        idle = 0
        while not self.stop.is_set():
            try:
                if nc is None or nc.is_closed:
                    nc, sub = await self._nats()
                    self.say(f"consuming {STREAM} as {self.durable} from {', '.join(self.servers)}")
                if conn is None or conn.closed:
                    conn = await asyncio.to_thread(self._db)
                if self._resubscribe or (idle >= 3 and await self._stalled()):
                    self._resubscribe, idle = False, 0
                    try:
                        await sub.unsubscribe()
                    except Exception:
                        pass
                    sub = await self._subscribe()
                    self.stats["resubscribed"] += 1
                try:
                    msgs = await sub.fetch(self.batch, timeout=1.0)
                except asyncio.TimeoutError:
                    idle += 1
                    continue
                idle = 0
                await self._batch(conn, msgs)
                backoff = 0.2
            except Exception as e:
                name = type(e).__name__
                if "psycopg" in type(e).__module__:
                    self.stats["db_errors"] += 1
                    self.say(f"PostgreSQL: {name}: {e}; nothing of this batch acknowledged, retrying")
                    try:
                        if conn is not None:
                            conn.close()
                    except Exception:
                        pass
                    conn = None
                else:
                    self.say(f"NATS: {name}: {e}; retrying")
                    if nc is not None and not nc.is_connected and not nc.is_reconnecting:
                        try:
                            await nc.close()
                        except Exception:
                            pass
                        nc = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                pass
        if conn is not None:
            conn.close()
        self.say(f"stopped: {self.stats}")
        return 0

    async def _batch(self, conn, msgs) -> None:
        envs, bad = [], []
        for m in msgs:
            try:
                e = json.loads(m.data)
                if not isinstance(e, dict) or "id" not in e or not isinstance(e.get("record"), dict):
                    raise ValueError("not an mcpwitness envelope")
                envs.append(e)
            except ValueError as err:
                bad.append((m, err))

        def commit():
            with conn.transaction():
                return pg.insert(conn, envs)
        try:
            n = await asyncio.to_thread(commit) if envs else 0
        except Exception:
            for m in msgs:   # again soon, not after the whole ack wait
                try:
                    await m.nak(delay=1.0)
                except Exception:
                    pass
            raise
        self.stats["batches"] += 1
        self.stats["messages"] += len(msgs)
        self.stats["inserted"] += n
        self.stats["duplicates"] += len(envs) - n
        if bad:
            self.stats["bad"] += len(bad)
            self.say(f"{len(bad)} messages that are not records acknowledged and dropped, e.g. "
                     f"{bad[0][1]} on {bad[0][0].subject}")
        if self._crash_after and self.stats["batches"] >= self._crash_after:
            os._exit(70)    # committed, not acknowledged: the messages come again to another collector
        for m in msgs:
            await m.ack()


def main(nats_url: str, dsn: str, durable: str, batch: int, ack_wait: float, creds, tls_ca, quiet,
         replicas: int = 1) -> int:
    c = Collector(nats_url, dsn, durable, batch, ack_wait, creds, tls_ca, quiet, replicas)
    t0 = time.monotonic()
    rc = asyncio.run(c.run())
    if not quiet:
        print(json.dumps({"collect": c.stats, "seconds": round(time.monotonic() - t0, 1)}), flush=True)
    return rc
