"""Rule tests as data (`mcpwitness detect --test DIR`): each case is a recorded JSON
Lines file (`NAME.jsonl`, written by `run` or `watch`) and what the rules must make of
it (`NAME.expect.yaml`):

    alerts:                      # each must be raised
      - rule: Tool ran a shell
        count: 1                 # optional: exactly this many alert lines (default: at least one)
        output_contains: "sh -c" # optional: in one of them
    absent:                      # rules that must not be raised
      - Tool ran a downloader
    rules: [extra.yaml]          # optional: rule files for this case, next to it, after the others

The records are replayed through the rules of the command line (the packaged defaults
unless --no-default-rules, plus --rules files) and the case's own rule files, with a
fresh engine per case, exactly as `detect --replay` does. The default rules ship with
their cases in this package's `cases/` directory.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from ..util import ConfigError, where, yaml_with_marks

CASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")


@dataclass
class Result:
    name: str
    ok: bool
    problems: list = field(default_factory=list)
    alerts: int = 0
    records: int = 0


def load_case(path: str) -> dict:
    """NAME.expect.yaml, checked (ConfigError with file:line:col)."""
    with open(path) as f:
        text = f.read()
    doc = yaml_with_marks(text, path)
    if not isinstance(doc, dict) or not set(doc) <= {"alerts", "absent", "rules"}:
        raise ConfigError(f"{path}: a mapping with alerts, absent and rules")
    out = {"alerts": [], "absent": [], "rules": []}
    for i, a in enumerate(doc.get("alerts") or []):
        if not isinstance(a, dict) or not isinstance(a.get("rule"), str) or \
                not set(a) <= {"rule", "count", "output_contains"}:
            raise ConfigError(f"{where(path, doc['alerts'], i)}: each alert is "
                              "{rule: NAME, count: N, output_contains: TEXT}")
        if "count" in a and (not isinstance(a["count"], int) or isinstance(a["count"], bool) or a["count"] < 0):
            raise ConfigError(f"{where(path, doc['alerts'], i)}: count must be a whole number >= 0")
        out["alerts"].append(a)
    for key in ("absent", "rules"):
        v = doc.get(key) or []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{path}: {key} must be a list of strings")
        out[key] = v
    out["rules"] = [os.path.join(os.path.dirname(path), r) for r in out["rules"]]
    return out


def find_cases(directory: str) -> list[tuple[str, str, str]]:
    """(name, records file, expectations file) for each case in a directory, by name."""
    out = []
    for fn in sorted(os.listdir(directory)):
        if fn.endswith(".jsonl"):
            name = fn[:-len(".jsonl")]
            exp = os.path.join(directory, name + ".expect.yaml")
            out.append((name, os.path.join(directory, fn), exp))
    return out


def run_case(name: str, records: str, expect: dict, make_engine) -> Result:
    """Replay records through make_engine(extra rule files) and hold the alerts to expect."""
    from .engine import replay
    engine = make_engine(expect["rules"])
    bad: Counter = Counter()
    with open(records, "rb") as f:
        alerts = list(replay(f, engine, bad))
    res = Result(name, True, alerts=len(alerts), records=engine.stats["records"])
    by_rule: dict[str, list] = {}
    for a in alerts:
        by_rule.setdefault(a.rule, []).append(a)
    known = {r.name for r in engine.rules.rules}
    for e in expect["alerts"]:
        rule = e["rule"]
        got = by_rule.get(rule, [])
        if rule not in known:
            res.problems.append(f"{rule!r}: no such rule")
        elif "count" in e and len(got) != e["count"]:
            res.problems.append(f"{rule!r}: {len(got)} alerts, expected {e['count']}")
        elif "count" not in e and not got:
            res.problems.append(f"{rule!r}: not raised")
        elif "output_contains" in e and not any(e["output_contains"] in a.output for a in got):
            res.problems.append(f"{rule!r}: no alert's output contains {e['output_contains']!r}")
    for rule in expect["absent"]:
        if rule not in known:
            res.problems.append(f"{rule!r}: no such rule")
        elif by_rule.get(rule):
            res.problems.append(f"{rule!r}: raised {len(by_rule[rule])} times, expected none: "
                                f"{by_rule[rule][0].output[:160]}")
    if bad:
        res.problems.append(f"{sum(bad.values())} lines are not records ({dict(bad)})")
    res.ok = not res.problems
    return res
