"""Running detection: rules reloaded with no gap (file change, SIGHUP), a bad
file refused while the running set stays, and the metrics endpoint scraped
by a real Prometheus server."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import anyio
import pytest
from conftest import free_port, wait_for
from mcp import StdioServerParameters
from mcp.types import Implementation
from mcp_client import RecordingStdio, client

pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(ROOT, "tests", "workloads", "detect_server.py")

RULE = """
- rule: {name}
  desc: test
  condition: type = mcp and kind = request and call.tool = {tool}
  output: "{name}: %call.tool %call.id"
  priority: NOTICE
  tags: [test]
  aggregate: 0          # every match its own alert: the test counts them
"""


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_reload_on_change_no_gap_and_bad_file_refused(tmp_path):
    rules, out = tmp_path / "rules.yaml", tmp_path / "ev.jsonl"
    rules.write_text(RULE.format(name="echo seen", tool="echo"))
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--no-default-rules", "--rules",
                            str(rules), "--", sys.executable, SERVER])

    async def calls_for(c, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await c.call_tool("echo", {"text": "x"})
            await c.call_tool("ping", {})
            await anyio.sleep(0.05)

    async def main():
        async with client(t) as c:
            await calls_for(c, 1.0)
            rules.write_text(RULE.format(name="echo seen", tool="echo") + RULE.format(name="ping seen", tool="ping"))
            await calls_for(c, 2.5)         # the change is noticed within a second
            bad = rules.read_text() + "- rule: broken\n  condition: type = mcp and (\n  output: x\n  priority: notice\n"
            rules.write_text(bad)
            await calls_for(c, 2.5)
            await anyio.sleep(0.3)

    anyio.run(main)
    recs = load(out)
    loads = [r for r in recs if r["type"] == "rules"]
    assert [r["result"] for r in loads] == ["applied", "refused"], loads
    assert loads[0]["rules"] == 2
    assert f"{rules}:" in loads[1]["error"] and "rule 'broken': condition:" in loads[1]["error"]
    # no gap: every echo request raised its alert, before, during and after both reloads
    echo_calls = {r["call_id"] for r in recs if r["type"] == "call" and r["tool"] == "echo"}
    echo_alerts = [r["call_id"] for r in recs if r["type"] == "alert" and r["rule"] == "echo seen"]
    assert len(echo_calls) > 20 and sorted(echo_alerts) == sorted(echo_calls)
    # the new rule from its load on, and still after the refused file
    ping_alerts = [r for r in recs if r["type"] == "alert" and r["rule"] == "ping seen"]
    assert len(ping_alerts) > 10
    last_ping = max((r for r in recs if r["type"] == "call" and r["tool"] == "ping"), key=lambda r: r["ktime_ns"])
    assert last_ping["call_id"] in {a["call_id"] for a in ping_alerts}, "the running set stayed after the refusal"
    stats = [r for r in recs if r["type"] == "stats"][0]["detect"]
    assert stats["reloads"] == {"applied": 2, "refused": 1}


def test_sighup_reloads_rules_under_watch(tmp_path):
    """The file is changed without a change to its size or times: only SIGHUP can make watch notice."""
    rules, out = tmp_path / "rules.yaml", tmp_path / "ev.jsonl"
    rules.write_text(RULE.format(name="tool AAAA", tool="echo"))
    st = os.stat(rules)
    w = subprocess.Popen([MW, "watch", "-q", "--jsonl", str(out), "--no-store", "--no-default-rules", "--rules",
                          str(rules), "--comm", "python", "--comm", "python3"], stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: out.exists() and any('"type":"start"' in x for x in out.read_text().splitlines()),
                        20), "watch did not start"
        params = StdioServerParameters(command=sys.executable, args=[SERVER])

        async def main():
            async with client(params, client_info=Implementation(name="mw-hup", version="1")) as c:
                await c.call_tool("echo", {"text": "x"})
                await c.call_tool("ping", {})
                # same length, times put back; watch is stopped meanwhile, so that its once-a-second
                # look at the file cannot fall between the write and the utime
                w.send_signal(signal.SIGSTOP)
                try:
                    rules.write_text(RULE.format(name="tool BBBB", tool="ping"))
                    os.utime(rules, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    w.send_signal(signal.SIGCONT)
                await anyio.sleep(2.0)
                await c.call_tool("ping", {})  # not yet: the change went unnoticed
                # judged before the signal: its call record is written (the agent may lag the client)
                assert await anyio.to_thread.run_sync(lambda: wait_for(
                    lambda: len([x for x in out.read_text().splitlines()
                                 if '"type":"call"' in x and '"tool":"ping"' in x]) == 2, 30))
                w.send_signal(signal.SIGHUP)
                # the reload is done when its `rules` record is written (not after a fixed time)
                assert await anyio.to_thread.run_sync(
                    lambda: wait_for(lambda: '"type":"rules"' in out.read_text(), 30))
                await c.call_tool("ping", {})
                await c.call_tool("echo", {"text": "x"})
                await anyio.sleep(0.5)

        anyio.run(main)
    finally:
        w.send_signal(signal.SIGINT)
        assert w.wait(30) == 0
    recs = load(out)
    pings = sorted((r for r in recs if r["type"] == "call" and r["tool"] == "ping"), key=lambda r: r["ktime_ns"])
    echos = sorted((r for r in recs if r["type"] == "call" and r["tool"] == "echo"), key=lambda r: r["ktime_ns"])
    assert len(pings) == 3 and len(echos) == 2
    al = {(a["rule"], a["call_id"]) for a in recs if a["type"] == "alert"}
    assert al == {("tool AAAA", echos[0]["call_id"]), ("tool BBBB", pings[2]["call_id"])}
    assert [r["result"] for r in recs if r["type"] == "rules"] == ["applied"]


def _prom_query(base, q):
    with urllib.request.urlopen(f"{base}/api/v1/query?query={urllib.parse.quote(q)}", timeout=5) as r:
        data = json.loads(r.read())
    return data["data"]["result"]


def test_prometheus_scrapes_alert_counter(tmp_path):
    prom = shutil.which("prometheus")
    assert prom, "the Debian package prometheus is not installed: run scripts/setup"
    mport, pport, out = free_port(), free_port(), tmp_path / "ev.jsonl"
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mcpwitness\n"
                   f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
    p = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                          f"--web.listen-address=127.0.0.1:{pport}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{pport}"
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", "--metrics-port", str(mport), "--",
                            sys.executable, SERVER])
    seen = {}

    async def main():
        async with client(t) as c:
            await c.call_tool("read_file", {"path": "/etc/passwd"})
            await c.call_tool("run", {"argv": ["sh", "-c", "true; cat /dev/null"]})
            await anyio.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                seen["text"] = r.read().decode()
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=5) as r:
                seen["health"] = (r.status, r.read().decode())
            expected = seen["text"].count("mcpwitness_alerts_total{")
            # Prometheus has scraped our endpoint: the alert counters, read back from its query API
            for _ in range(150):
                try:
                    res = _prom_query(base, "sum(mcpwitness_alerts_total)")
                    events = _prom_query(base, 'mcpwitness_events_total{type="open"}')
                except OSError:
                    res = events = []
                if res and events and float(res[0]["value"][1]) >= 5 and expected:
                    seen["sum"] = float(res[0]["value"][1])
                    seen["by_rule"] = {x["metric"]["rule"]: float(x["value"][1])
                                       for x in _prom_query(base, "mcpwitness_alerts_total")}
                    seen["events"] = float(events[0]["value"][1])
                    break
                await anyio.sleep(0.2)

    try:
        anyio.run(main)
    finally:
        p.terminate()
        p.wait(20)
    recs = load(out)
    alerts = [r for r in recs if r["type"] == "alert"]
    assert "sum" in seen, "Prometheus never had the alert counter"
    assert seen["sum"] == len(alerts)
    by_rule = {}
    for a in alerts:
        by_rule[a["rule"]] = by_rule.get(a["rule"], 0) + 1
    assert seen["by_rule"] == by_rule
    assert {"Tool opened a sensitive path", "Tool ran a shell", "Sensitive path in tool arguments"} <= set(by_rule)
    assert seen["events"] > 0
    assert seen["health"] == (200, "ok\n"), "a running agent's liveness endpoint says it is alive"
    for family in ("mcpwitness_lost_total", "mcpwitness_parse_failures_total", "mcpwitness_sessions_total",
                   "mcpwitness_rules_loaded", "mcpwitness_kernel_counter_total"):
        assert f"# TYPE {family} " in seen["text"], family


def test_healthz_says_stalled():
    """/healthz is what a Kubernetes liveness probe asks: 503 once the agent says it is not alive."""
    from mcpwitness.output.metrics import MetricsServer
    state = {"alive": True}
    m = MetricsServer(lambda: "", 0, health=lambda: state["alive"])
    try:
        url = f"http://127.0.0.1:{m.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
        state["alive"] = False
        try:
            urllib.request.urlopen(url, timeout=5)
            raise AssertionError("a stalled agent answered 200")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and b"stalled" in e.read()
    finally:
        m.close()
