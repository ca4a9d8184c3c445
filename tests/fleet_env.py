"""Real services for the fleet tests and benchmark: a three-node NATS JetStream
cluster of nats-server processes on loopback ports, and a PostgreSQL from a
scratch data directory (initdb and pg_ctl, as the postgres user: initdb
refuses root), on a loopback port."""
import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PG_BIN = next((f"/usr/lib/postgresql/{v}/bin" for v in ("17", "16", "15") if os.path.isdir(f"/usr/lib/postgresql/{v}/bin")),
              "/usr/lib/postgresql/15/bin")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=60.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


class NatsCluster:
    def __init__(self, base: str, n: int = 3):
        self.base = base
        self.ports = [free_port() for _ in range(n)]
        self.cports = [free_port() for _ in range(n)]
        self.procs: list = [None] * n
        for i in range(n):
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.cports) if j != i)
            os.makedirs(os.path.join(base, f"n{i + 1}"), exist_ok=True)
            with open(self.conf(i), "w") as f:
                f.write(f"""server_name: n{i + 1}
listen: 127.0.0.1:{self.ports[i]}
jetstream {{ store_dir: "{base}/n{i + 1}" }}
cluster {{ name: mw, listen: 127.0.0.1:{self.cports[i]}, routes: [{routes}] }}
""")
        for i in range(n):
            self.start(i)
        assert wait_until(self.ready, 60), "the JetStream cluster did not form"

    def conf(self, i: int) -> str:
        return os.path.join(self.base, f"n{i + 1}.conf")

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def start(self, i: int) -> None:
        log = open(os.path.join(self.base, f"n{i + 1}.log"), "a")
        self.procs[i] = subprocess.Popen([NATS_SERVER, "-c", self.conf(i)], stdout=log, stderr=log)

    def stop(self, i: int, sig=signal.SIGTERM) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=30)
        self.procs[i] = None

    def ready(self) -> bool:
        """JetStream answers (a meta leader is elected)."""
        async def ask():
            import nats
            nc = await nats.connect(servers=self.url.split(","), connect_timeout=1, allow_reconnect=False)
            try:
                await nc.jetstream(timeout=2).account_info()
            finally:
                await nc.close()
        try:
            asyncio.run(ask())
            return True
        except Exception:
            return False

    def stream_leader(self, stream: str) -> int | None:
        async def ask():
            import nats
            nc = await nats.connect(servers=self.url.split(","), connect_timeout=1, allow_reconnect=False)
            try:
                info = await nc.jetstream(timeout=2).stream_info(stream)
                return info.cluster.leader if info.cluster else None
            finally:
                await nc.close()
        try:
            name = asyncio.run(ask())
        except Exception:
            return None
        return int(name[1:]) - 1 if name else None

    def close(self) -> None:
        for i in range(len(self.procs)):
            self.stop(i, signal.SIGKILL)


class Postgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mw-pg-", dir="/tmp")
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self._as_pg([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        self.start()
        self._as_pg([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mw"])

    def _as_pg(self, argv):
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120,
                       cwd="/")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/mw"

    def start(self) -> None:
        self._as_pg([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "60",
                     "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off", "start"])

    def stop(self) -> None:
        self._as_pg([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])

    def query(self, sql, args=()):
        import psycopg
        with psycopg.connect(self.dsn, autocommit=True) as c:
            return c.execute(sql, args).fetchall()

    def close(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
