"""The fleet's two figures, on real services started here (a three-node NATS
JetStream cluster of nats-server processes, PostgreSQL from initdb/pg_ctl,
one `mcpwitness collect`):

1. Throughput: records per second from one agent's publisher through JetStream
   (stream R3) to committed PostgreSQL rows. The records are real: a session of
   the SDK server under `mcpwitness run` with 200 tool calls, recorded once, then
   written to the publisher (the sink the agent uses) from memory as fast as it
   takes them; the clock stops when the last row is committed. One host id per
   round (call ids are unique per host). Median of the rounds.
2. The agent's extra CPU per record with publishing on versus off: the same
   live session (the SDK client calling the SDK server under `mcpwitness run`,
   N calls) with and without --publish, in paired rounds (on/off alternating),
   the agent process's CPU time (utime + stime, read from /proc just before the
   session ends) divided by the records it wrote. Medians of the rounds.

    .venv/bin/python bench/fleet.py [--rounds 5] [--calls 300]
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import anyio  # noqa: E402
import msgspec  # noqa: E402
from fleet_env import NatsCluster, Postgres, wait_until  # noqa: E402
from mcp_client import RecordingStdio, client  # noqa: E402

MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(ROOT, "tests", "workloads", "sdk_server.py")
TICK = os.sysconf("SC_CLK_TCK")


def agent_pid(marker: str) -> int | None:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if len(cmd) > 1 and cmd[1].endswith(b"mcpwitness") and marker.encode() in cmd:
                return int(p)
    return None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def session(tmp: str, calls: int, publish: str | None, state: str) -> tuple[float, int]:
    """(agent CPU seconds, records written) for one live session."""
    out = os.path.join(tmp, f"s-{time.monotonic_ns()}.jsonl")
    argv = ["run", "-q", "--no-store", "--no-detect", "--jsonl", out]
    if publish:
        argv += ["--publish", publish, "--publish-replicas", "3", "--host-id", f"cpu-{time.monotonic_ns()}"]
    t = RecordingStdio(MW, argv + ["--", sys.executable, SERVER], env={"MCPWITNESS_STATE_DIR": state})
    cpu = [0.0]

    async def main():
        async with client(t) as c:
            for i in range(calls):
                await c.call_tool("echo", {"text": f"call {i}"})
            pid = agent_pid(out)
            await anyio.sleep(0.5)          # the last records decoded and written
            cpu[0] = cpu_seconds(pid)
    anyio.run(main)
    with open(out) as f:
        n = sum(1 for _ in f)
    return cpu[0], n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=300)
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="mw-bench-fleet-")
    nats, pg = NatsCluster(os.path.join(base, "nats")), Postgres()
    import subprocess
    col = subprocess.Popen([MW, "collect", "--from", nats.url, "--to", pg.dsn, "--replicas", "3", "-q"])
    try:
        # 1. throughput
        session(base, 200, None, os.path.join(base, "state-rec"))
        rec_path = max((os.path.join(base, f) for f in os.listdir(base) if f.endswith(".jsonl")),
                       key=os.path.getmtime)
        dec = msgspec.json.Decoder()
        with open(rec_path, "rb") as f:
            lines = [ln.rstrip(b"\n") for ln in f if ln.strip()]
        records = [dec.decode(ln) for ln in lines]
        from mcpwitness.fleet.publish import Publisher, host_identity

        def rows():
            return sum(pg.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("calls", "events", "sessions", "alerts",
                                                                               "other"))
        rates = []
        for r in range(a.rounds):
            before = rows()
            pub = Publisher(nats.url, os.path.join(base, f"spool-{r}"), host_identity(f"tput-{r}"), replicas=3)
            t0 = time.monotonic()
            pub.write_encoded(records, lines)
            assert wait_until(lambda: rows() >= before + len(records), 300, 0.02), "not all rows arrived"
            dt = time.monotonic() - t0
            pub.close()
            rates.append(len(records) / dt)
            print(f"  round {r + 1}: {len(records)} records in {dt:.2f} s: {len(records) / dt:,.0f} records/s",
                  flush=True)
        print(f"records: {len(records)} real records per round ({sum(1 for x in records if x.get('type') == 'call')} "
              f"call records)")
        print(f"agent -> JetStream (R3, 3 nodes) -> PostgreSQL: {statistics.median(rates):,.0f} records/s "
              f"(median of {a.rounds}; min {min(rates):,.0f}, max {max(rates):,.0f})")

        # 2. the agent's CPU per record, publishing on and off, paired rounds
        on, off = [], []
        for r in range(a.rounds):
            for publish in ((nats.url, None) if r % 2 == 0 else (None, nats.url)):
                cpu, n = session(base, a.calls, publish, os.path.join(base, f"state-{r}-{bool(publish)}"))
                (on if publish else off).append(cpu / n * 1e6)
                print(f"  round {r + 1} publish {'on ' if publish else 'off'}: {cpu:.2f} s CPU for {n} records "
                      f"({cpu / n * 1e6:.1f} us/record)", flush=True)
        mon, moff = statistics.median(on), statistics.median(off)
        print(f"agent CPU per record: publishing off {moff:.1f} us, on {mon:.1f} us: +{mon - moff:.1f} us per record "
              f"({(mon / moff - 1) * 100:+.0f}%), medians of {a.rounds} paired rounds, {a.calls} calls each")
        print(json.dumps({"records_per_s": round(statistics.median(rates)), "cpu_us_per_record_off": round(moff, 1),
                          "cpu_us_per_record_on": round(mon, 1)}))
    finally:
        col.terminate()
        col.wait()
        nats.close()
        pg.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
