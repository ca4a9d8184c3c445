"""The fleet, for real: two agents (two host ids) record real MCP sessions
(the SDK client and server under `mcpwitness run --publish`) into a
three-node NATS JetStream cluster of nats-server processes; two collectors
(one durable consumer) write PostgreSQL, started with pg_ctl from a scratch
data directory. Each test breaks something in the middle of a stream of
calls, and then checks that every call record each agent wrote locally is in
PostgreSQL exactly once:

- the JetStream stream's leader is killed (SIGKILL);
- the whole broker is stopped for a while, then started again (the agents'
  spools grow, then drain in order);
- a collector dies after its insert commits and before it acknowledges (the
  messages go to another collector, which inserts nothing twice);
- PostgreSQL is restarted.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import anyio
import pytest
from fleet_env import NatsCluster, Postgres, wait_until
from mcp_client import RecordingStdio, client

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "sdk_server.py")
TIMEOUT = 180


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    nats = NatsCluster(str(base / "nats"))
    pg = Postgres()
    e = {"base": base, "nats": nats, "pg": pg, "collectors": []}
    try:
        start_collectors(e, 2)
        yield e
    finally:
        stop_collectors(e)
        nats.close()
        pg.close()


def start_collectors(e, n, extra_env=None):
    for _ in range(n):
        log = open(e["base"] / f"collect-{len(e['collectors'])}.log", "w")
        p = subprocess.Popen([MW, "collect", "--from", e["nats"].url, "--to", e["pg"].dsn, "--ack-wait", "3",
                              "--batch", "50", "--replicas", "3"], stdout=subprocess.PIPE, stderr=log, text=True,
                             env=dict(os.environ, **(extra_env or {})))
        e["collectors"].append(p)
    return e["collectors"][-n:]


def stop_collectors(e) -> list[dict]:
    """Stop every collector; their counts (each prints them as it stops)."""
    out = []
    for p in e["collectors"]:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        text, _ = p.communicate(timeout=TIMEOUT)
        for line in (text or "").splitlines():
            if line.startswith('{"collect"'):
                out.append(json.loads(line)["collect"])
    e["collectors"] = []
    return out


class Agent:
    """One host: `mcpwitness watch --publish --host-id HOST --comm srv-HOST` with a
    state directory of its own, and the SDK client, from a thread, launching the SDK
    server under that process name and calling echo until `target` calls."""

    def __init__(self, e, host: str):
        self.host, self.comm = host, f"srv-{host}"[:15]
        self.dir = e["base"] / host
        self.dir.mkdir()
        self.out = self.dir / "ev.jsonl"
        self.done = 0
        self.target = 10 ** 9
        self.finished = threading.Event()
        self.error = None
        self.watch = subprocess.Popen([MW, "watch", "-q", "--no-store", "--no-detect", "--jsonl", str(self.out),
                                       "--publish", e["nats"].url, "--publish-replicas", "3", "--host-id", host,
                                       "--comm", self.comm], stdin=subprocess.DEVNULL,
                                      env=dict(os.environ, MCPWITNESS_STATE_DIR=str(self.dir / "state")))
        assert wait_until(lambda: self.out.exists() and '"type":"start"' in self.out.read_text(), TIMEOUT)
        self.t = RecordingStdio(sys.executable, [os.path.join(HERE, "workloads", "named_server.py"), self.comm])
        threading.Thread(target=self._drive, daemon=True).start()

    def _drive(self):
        async def main():
            async with client(self.t) as c:
                while self.done < self.target:
                    r = await c.call_tool("echo", {"text": f"{self.host} {self.done}"})
                    assert not r.is_error
                    self.done += 1
                    await anyio.sleep(0.01)
        try:
            anyio.run(main)
        except BaseException as ex:
            self.error = ex
        finally:
            self.finished.set()

    def calls(self) -> list[str]:
        return [json.loads(x)["call_id"] for x in self.out.read_text().splitlines() if '"type":"call"' in x]

    def stop(self) -> dict:
        """Stop the agent (it sends what its spool holds first); its last stats record."""
        self.watch.send_signal(signal.SIGTERM)
        assert self.watch.wait(timeout=TIMEOUT) == 0
        return [json.loads(x) for x in self.out.read_text().splitlines() if '"type":"stats"' in x][-1]


def diagnose(e, a) -> dict:
    """Where records stand when they did not all arrive: the agent's spool, the stream, the consumer."""
    import asyncio
    out = {}
    for seg in (a.dir / "state" / "spool").rglob("*"):
        if seg.is_file():
            out[seg.name] = seg.read_text().strip() if seg.name == "cursor" else seg.stat().st_size

    async def ask():
        import nats
        nc = await nats.connect(servers=e["nats"].url.split(","), connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=3)
            si = await js.stream_info("MCPWITNESS")
            ci = await js.consumer_info("MCPWITNESS", "mcpwitness-collect")
            return {"stream": si.state.messages, "pending": ci.num_pending, "ack_pending": ci.num_ack_pending,
                    "redelivered": ci.num_redelivered, "waiting": ci.num_waiting}
        finally:
            await nc.close()
    try:
        out["jetstream"] = asyncio.run(ask())
    except Exception as ex:
        out["jetstream"] = repr(ex)
    return out


def run_scenario(e, name, fault, total=150, at=30):
    """Two hosts; fault() once both made `at` calls; each client stops at `total`
    calls. Then every call record each agent wrote must reach PostgreSQL, once."""
    agents = [Agent(e, f"{name}-a"), Agent(e, f"{name}-b")]
    assert wait_until(lambda: all(a.done >= at or a.finished.is_set() for a in agents), TIMEOUT)
    assert not [a.error for a in agents if a.error], [a.error for a in agents]
    fault(agents)
    for a in agents:
        a.target = max(total, a.done + 20)
    for a in agents:
        assert a.finished.wait(TIMEOUT) and a.error is None, (a.host, a.error)
    pg = e["pg"]
    for a in agents:
        # the session's last call records are written once the server has gone
        assert wait_until(lambda: len(a.calls()) >= a.done, TIMEOUT)
        local = a.calls()
        assert len(local) >= total and len(set(local)) == len(local)

        def arrived():
            return pg.query("SELECT count(*) FROM calls WHERE machine_id = %s", (a.host,))[0][0] >= len(local)
        assert wait_until(arrived, TIMEOUT, 0.2), (a.host, len(local), pg.query(
            "SELECT count(*) FROM calls WHERE machine_id = %s", (a.host,)), diagnose(e, a))
        rows = pg.query("SELECT call_id, count(*) FROM calls WHERE machine_id = %s GROUP BY call_id", (a.host,))
        assert sorted(r[0] for r in rows) == sorted(local) and all(r[1] == 1 for r in rows), a.host
        stats = a.stop()
        # nothing refused by a full spool, nothing lost by the kernel; the host identity on every row
        assert stats["publish"]["spool_dropped"] == 0 and stats["lost"]["events"] == 0
        hosts = pg.query("SELECT DISTINCT host, machine_id, boot_id IS NOT NULL FROM calls WHERE machine_id = %s",
                         (a.host,))
        assert hosts == [(a.host, a.host, True)]
    return agents


def test_the_stream_leader_is_killed(env):
    killed = []

    def fault(agents):
        leader = env["nats"].stream_leader("MCPWITNESS")
        assert leader is not None
        env["nats"].stop(leader, signal.SIGKILL)
        killed.append(leader)
    agents = run_scenario(env, "leader", fault)
    env["nats"].start(killed[0])
    assert wait_until(env["nats"].ready, TIMEOUT)
    # the query commands on the central store, for one host, give what that agent wrote
    a = agents[0]
    p = subprocess.run([MW, "calls", "--db", env["pg"].dsn, "--host", a.host, "--json", "--limit", "1000"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.splitlines()]
    local = {json.loads(x)["call_id"]: json.loads(x) for x in a.out.read_text().splitlines() if '"type":"call"' in x}
    assert sorted(r["call_id"] for r in got) == sorted(local)
    one = got[0]
    mine = {k: v for k, v in local[one["call_id"]].items() if k not in ("seq", "chain")}  # the file's hash chain
    assert one == mine                           # the same record as the agent wrote it
    p = subprocess.run([MW, "show", one["call_id"], "--db", env["pg"].dsn, "--host", a.host],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0 and one["call_id"] in p.stdout and "echo" in p.stdout
    # the web timeline's API on the central store
    import urllib.request
    from conftest import free_port
    port = free_port()
    ui = subprocess.Popen([MW, "ui", "--db", env["pg"].dsn, "--port", str(port), "-q"])
    try:
        def listed():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/calls?host={a.host}&limit=1000", timeout=5) as r:
                return sorted(c["call_id"] for c in json.load(r)["calls"])
        assert wait_until(lambda: listed() == sorted(local), TIMEOUT)
    finally:
        ui.terminate()
        ui.wait(timeout=TIMEOUT)
    p = subprocess.run([MW, "sessions", "--db", env["pg"].dsn, "--host", agents[1].host, "--json"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0 and p.stdout.strip()
    assert {json.loads(x)["session"] for x in p.stdout.splitlines()} <= {
        json.loads(x)["session"] for x in agents[1].out.read_text().splitlines() if '"type":"session"' in x}


def test_the_broker_is_away_and_the_spool_drains(env):
    nats = env["nats"]

    def fault(agents):
        for i in range(3):
            nats.stop(i)
        before = [a.done for a in agents]
        # the agents go on recording while nothing can be published: their spools grow
        assert wait_until(lambda: all(a.done >= b + 40 for a, b in zip(agents, before)), TIMEOUT)
        for a in agents:
            segs = list((a.dir / "state" / "spool").rglob("*.seg"))
            assert segs and sum(s.stat().st_size for s in segs) > 0
        for i in range(3):
            nats.start(i)
        assert wait_until(nats.ready, TIMEOUT)
    run_scenario(env, "away", fault)


def test_a_collector_dies_between_commit_and_ack(env):
    stop_collectors(env)
    crash = start_collectors(env, 1, {"MCPWITNESS_COLLECT_CRASH_AFTER_COMMIT": "1"})[0]

    def fault(agents):
        # it commits one batch and exits before acknowledging it
        assert crash.wait(TIMEOUT) == 70
        env["collectors"].remove(crash)
        start_collectors(env, 2)
    run_scenario(env, "crash", fault)
    counts = stop_collectors(env)
    # the batch it had committed came again, to the others, and was not inserted twice
    assert sum(c["duplicates"] for c in counts) >= 1, counts
    start_collectors(env, 2)


def test_postgresql_restarts_mid_stream(env):
    pg = env["pg"]

    def fault(agents):
        pg.stop()
        before = [a.done for a in agents]
        assert wait_until(lambda: all(a.done >= b + 30 for a, b in zip(agents, before)), TIMEOUT)
        pg.start()
    run_scenario(env, "pgrestart", fault)


def test_a_spool_left_behind_is_sent_by_the_next_agent(env, tmp_path):
    """An agent that had a spool of its own (a second agent of the host held the shared
    one), could not reach the broker and is gone: the next agent with the same state
    directory sends that spool, then removes it."""
    from mcpwitness.fleet.publish import Publisher, host_identity, spool_dir
    base = spool_dir(str(tmp_path / "state"), env["nats"].url)
    gone = Publisher("nats://127.0.0.1:1", base + ".99999", host_identity("left-behind"), drain_timeout=0)
    gone.write([{"type": "call", "call_id": f"lb{i}", "time": "2026-12-04T00:00:00Z", "session": "s",
                 "method": "tools/call", "tool": "t", "status": "ok", "attribution": {"quality": "exact"},
                 "violations": [], "server": {"info": {"name": "srv"}, "exe": "/x", "cmdline": ["x"], "pid": 1}}
                for i in range(30)])
    gone.close()
    assert os.path.exists(base + ".99999")
    nxt = Publisher(env["nats"].url, base, host_identity("next-agent"), replicas=3)
    try:
        assert nxt.metrics()["spool_adopted"] == 1
        pg = env["pg"]
        assert wait_until(lambda: pg.query("SELECT count(*) FROM calls WHERE machine_id = 'left-behind'")[0][0] == 30,
                          TIMEOUT)
        assert wait_until(lambda: not os.path.exists(base + ".99999"), TIMEOUT)
    finally:
        nxt.close()


# --- one stage: the spool (no services) ---------------------------------------------------

def test_spool_unit(tmp_path, monkeypatch):
    """In order across segments; ack moves the cursor and removes whole segments; a full
    spool refuses and counts; a torn last entry is cut off at the next start; one agent
    per spool."""
    from mcpwitness.fleet import spool as spool_mod
    monkeypatch.setattr(spool_mod, "SEGMENT", 1000)
    d = str(tmp_path / "sp")
    s = spool_mod.Spool(d, max_bytes=10_000)
    with pytest.raises(BlockingIOError):
        spool_mod.Spool(d)
    assert s.append([("mcpwitness.h.call", b"%03d" % i + b"x" * 97) for i in range(20)]) == 0
    got, pos = s.read(7)
    assert [b[:3] for _, b in got] == [b"%03d" % i for i in range(7)] and s.oldest_age() is not None
    s.ack(pos, 7)
    got, pos = s.read(100)
    assert [b[:3] for _, b in got] == [b"%03d" % i for i in range(7, 20)] and got[0][0] == "mcpwitness.h.call"
    assert len(s.segments) > 1
    s.ack(pos, 13)
    assert s.bytes == 0 and s.oldest_age() is None and len(s.segments) == 1
    refused = s.append([("a.b", b"y" * 1000) for _ in range(20)])
    assert refused > 0 and s.stats["dropped"] == refused and s.bytes <= 10_000
    kept = 20 - refused
    s.close()
    with open(os.path.join(d, max(f for f in os.listdir(d) if f.endswith(".seg"))), "ab") as f:
        f.write(b"\x05\x00\x00")        # the agent died in the middle of an entry
    s2 = spool_mod.Spool(d, max_bytes=10_000)
    got, _ = s2.read(100)
    assert s2.stats["torn"] == 1 and len(got) == kept and all(b == b"y" * 1000 for _, b in got)
    s2.close()
