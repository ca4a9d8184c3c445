"""`watch --publish nats://...`: every record the agent writes goes to a NATS
JetStream stream, through a local disk spool (fleet/spool.py), at least once.

- A record is spooled first (in the agent's writer thread: a file append),
  then a sender thread publishes from the spool, in order, and moves the
  spool's cursor only past what JetStream acknowledged (PubAck). While the
  broker cannot be reached the spool grows (bounded; a full spool refuses
  new records and counts them), and drains in order when it is back.
- Each message is an envelope: {"id", "host": {hostname, machine_id, boot_id},
  "type", "record"}. The id (host, this agent run, sequence number) is also
  the JetStream message id (Nats-Msg-Id: the stream drops a duplicate inside
  its window) and the collectors' key (they insert it once).
- Subjects: PREFIX.HOST.TYPE (mcpwitness.<machine id>.call, ...); the stream
  (created if missing) takes PREFIX.>.
- TLS, credentials and the stream's replicas come from the options (the config
  file's watch: section): --publish-creds, --publish-tls-ca, ...
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import threading
import time
import uuid

import msgspec

from .spool import Spool

PREFIX = "mcpwitness"
STREAM = "MCPWITNESS"


def host_identity(override: str | None = None) -> dict:
    """hostname, machine id (/etc/machine-id) and boot id; override names a
    stand-in host (tests, or a machine without a machine id)."""
    def read(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return None
    boot = read("/proc/sys/kernel/random/boot_id")
    if override:
        return {"hostname": override, "machine_id": override, "boot_id": boot}
    return {"hostname": socket.gethostname(), "machine_id": read("/etc/machine-id") or socket.gethostname(),
            "boot_id": boot}


def subject_token(s: str) -> str:
    """A NATS subject token: no dots, spaces or wildcards."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", s)[:64] or "_"


class Publisher:
    """A sink (write/write_record/close): records to the spool; a thread sends
    the spool to JetStream."""

    def __init__(self, url: str, spool_dir: str, host: dict, spool_max: int = 1 << 30, creds: str | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 replicas: int = 1, drain_timeout: float = 30.0):
        import importlib.util
        if importlib.util.find_spec("nats") is None:   # refused before the agent starts
            raise ImportError("nats-py is not installed")
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self.host = host
        try:
            self.spool = Spool(spool_dir, spool_max)
        except BlockingIOError:   # another agent of this host sends that spool: this one gets its own
            self.spool = Spool(f"{spool_dir}.{os.getpid()}", spool_max)
        # the spools of agents that had one of their own and are gone (a `run` its client killed):
        # sent first, then removed
        self.adopted = self._adopt(spool_dir)
        self.creds, self.tls = creds, (tls_ca, tls_cert, tls_key)
        self.replicas = replicas
        self.drain_timeout = drain_timeout
        self.run_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self.enc = msgspec.json.Encoder()
        self._host_js = self.enc.encode(host)
        self._host_tok = subject_token(host["machine_id"])
        self.stats = {"published": 0, "publish_errors": 0, "connected": False, "reconnects": 0,
                      "last_error": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcpwitness-publish", daemon=True)
        self._thread.start()

    # --- the sink side (the agent's threads) -----------------------------------------
    def _entry(self, r, js: bytes | None) -> tuple[str, bytes]:
        if js is None:
            js = self.enc.encode(r)
        t = r.get("type") if isinstance(r, dict) else type(r).__struct_config__.tag
        self.seq += 1
        rid = f"{self._host_tok}-{self.run_id}-{self.seq}"
        body = b'{"id":"' + rid.encode() + b'","host":' + self._host_js + b',"type":"' + str(t).encode() \
            + b'","record":' + js + b"}"
        return f"{PREFIX}.{self._host_tok}.{subject_token(str(t))}", body

    def write(self, records) -> None:
        self.spool.append([self._entry(r, None) for r in records])

    def write_encoded(self, records: list, encoded: list[bytes]) -> None:
        self.spool.append([self._entry(r, js) for r, js in zip(records, encoded)])

    def write_record(self, record) -> None:
        self.write([record])

    def close(self) -> None:
        """Stop: the spool is sent for up to drain_timeout (the broker may be
        electing a leader, or reconnecting); what is left stays spooled for the
        next start."""
        deadline = time.monotonic() + self.drain_timeout
        while (self.spool.read(1)[0] or self.adopted) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self.spool.new_data.set()
        self._thread.join(timeout=self.drain_timeout + 5)
        for s in self.adopted:
            s.close()
        self.spool.close()

    def _adopt(self, base: str) -> list:
        parent, name = os.path.split(base)
        out = []
        try:
            names = sorted(os.listdir(parent))
        except OSError:
            return out
        for n in names:
            path = os.path.join(parent, n)
            if not (n.startswith(name + ".") and n[len(name) + 1:].isdigit()) or path == self.spool.path:
                continue
            try:
                s = Spool(path, 1 << 62)
            except (BlockingIOError, OSError):   # its agent still runs (it sends it), or unreadable
                continue
            if s.read(1)[0]:
                out.append(s)
            else:
                self._drop(s)
        return out

    @staticmethod
    def _drop(s: Spool) -> None:
        s.close()
        shutil.rmtree(s.path, ignore_errors=True)

    def metrics(self) -> dict:
        return {"spool_bytes": self.spool.bytes + sum(s.bytes for s in self.adopted),
                "spool_adopted": len(self.adopted),
                "spool_oldest_age_seconds": (self.adopted[0] if self.adopted else self.spool).oldest_age(),
                "spool_dropped": self.spool.stats["dropped"], "spooled": self.spool.stats["spooled"],
                **{k: v for k, v in self.stats.items() if k != "last_error"}}

    # --- the sender thread -------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _connect(self):
        import nats
        kw = {"servers": self.servers, "allow_reconnect": True, "max_reconnect_attempts": -1,
              "reconnect_time_wait": 0.5, "connect_timeout": 2, "name": f"mcpwitness {self.host['hostname']}"}
        if self.creds:
            kw["user_credentials"] = self.creds
        ca, cert, key = self.tls
        if ca or cert:
            import ssl
            ctx = ssl.create_default_context(cafile=ca)
            if cert:
                ctx.load_cert_chain(cert, key)
            kw["tls"] = ctx
        nc = await nats.connect(**kw)
        js = nc.jetstream(timeout=5)
        from nats.js.errors import NotFoundError
        try:
            await js.stream_info(STREAM)
        except NotFoundError:
            from nats.js.api import StreamConfig
            await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"], num_replicas=self.replicas,
                                             duplicate_window=120.0))
        return nc, js

    async def _main(self) -> None:
        nc = js = None
        backoff = 0.2
        while not self._stop.is_set():
            if nc is None or nc.is_closed:
                try:
                    nc, js = await self._connect()
                    self.stats["connected"] = True
                    backoff = 0.2
                except Exception as e:  # the broker is away: the spool keeps everything
                    self.stats["connected"], self.stats["last_error"] = False, f"{type(e).__name__}: {e}"
                    nc = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            spool = self.adopted[0] if self.adopted else self.spool
            entries, pos = spool.read(256)
            if not entries and spool is not self.spool:   # an adopted spool, all sent
                self._drop(self.adopted.pop(0))
                continue
            if not entries:
                self.spool.new_data.clear()
                await asyncio.get_running_loop().run_in_executor(None, self.spool.new_data.wait, 0.2)
                continue
            results = await asyncio.gather(*(js.publish(subj, body, timeout=5, headers={
                "Nats-Msg-Id": body[7:body.index(b'"', 7)].decode()}) for subj, body in entries),
                return_exceptions=True)
            bad = [r for r in results if isinstance(r, BaseException)]
            if bad:   # the same entries again (their ids make a repeat harmless)
                self.stats["publish_errors"] += len(bad)
                self.stats["last_error"] = f"{type(bad[0]).__name__}: {bad[0]}"
                self.stats["connected"] = nc.is_connected
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            spool.ack(pos, len(entries))
            self.stats["published"] += len(entries)
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:
                pass


def spool_dir(state_dir: str, url: str) -> str:
    return os.path.join(state_dir, "spool", subject_token(url)[:48])
