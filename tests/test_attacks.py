"""An attack suite of our own (issue 33): each class of attack a hostile or hijacked MCP server
makes, one tool of tests/workloads/attack_server.py each, under `mcpwitness run`, driven by the SDK
client, and judged from outside (what the tool got back, a canary file, a loopback listener
standing in for the attacker).

Twice on the same kernel:
- with the default rules and no policy: each attack is DETECTED (an alert of warning or above
  on that call, named below), and the benign call raises none;
- under an enforce policy of the kind a user writes for this server: each attack the kernel can
  see is REFUSED (a `policy` event `denied` with EPERM in that call, the side effect never
  happened) and the server serves every later call: refused, never killed (BPF LSM where the
  kernel has it; `run`'s seccomp layer where it does not). What no kernel event shows (an
  environment dumped from memory, an answer that talks to the model, SQL on an in-process
  database) is a GAP for the policy, said per case, and detected only.
"""
import json
import os
import shutil
import sqlite3
import sys

import anyio
import pytest
from conftest import Listener
from mcp_client import RecordingStdio, client

pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
SERVER = os.path.join(ROOT, "tests", "workloads", "attack_server.py")
TOKEN = "tok_Zq81LmN0pR5sT9f2cA81bXy7"
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE7"

# (case, tool, arguments (filled from the setup), alerts expected without a policy (any one of
# them, warning or above, on that call), what the policy does: "refused" or "gap: why")
CASES = [
    ("benign read", "read_notes", {"path": "{notes}"}, [], "allowed"),
    ("file read", "read_secret", {"path": "{secret}"},
     ["Tool opened a sensitive path", "Secret in a tool answer"], "refused"),
    ("exfiltration", "exfiltrate", {"path": "{secret}", "port": "{port}"},
     ["Tool opened a sensitive path"], "refused"),
    ("environment through /proc", "own_environment", {},
     ["Tool opened a sensitive path"], "refused"),
    ("environment from memory", "dump_env", {},
     ["Secret in a tool answer"], "gap: no kernel event (the answer is redacted and alerted on)"),
    ("persistence", "plant_hook", {"path": "{hook}"},
     ["Tool wrote a persistence location"], "refused"),
    ("remote code", "fetch_and_run", {"port": "{port}"},
     ["Tool ran a shell", "Tool ran a downloader"], "refused"),
    ("cross-language trojan", "trojan", {"path": "{secret}"},
     ["Tool opened a sensitive path"], "refused"),
    ("sandbox escape by traversal", "read_secret", {"path": "{traversal}"},
     ["Path traversal in tool arguments", "Tool opened a sensitive path"], "refused"),
    ("prompt injection", "weather", {"city": "Lyon"},
     ["Instructions to the model in a tool answer"], "gap: no kernel event (alerted on the answer)"),
    ("destructive SQL", "query", {"sql": "DROP TABLE IF EXISTS users;", "db": "{db}"},
     ["Destructive SQL in tool arguments"], "gap: an in-process database (alerted on the arguments)"),
    ("benign read after the attacks", "read_notes", {"path": "{notes}"}, [], "allowed"),
]

POLICY = """
policies:
  - name: attack
    match: {{cmdline: "*attack_server.py*"}}
    mode: enforce
    network: {{default: deny}}
    files:
      deny: ["{secrets}/**", "/proc/self/environ", "{hooks}/**"]
    exec:
      deny: [sh, dash, bash, curl, wget]
"""

PRIORITY = {"debug": 0, "info": 1, "informational": 1, "notice": 2, "warning": 3, "error": 4, "critical": 5,
            "alert": 6, "emergency": 7}


def _setup(tmp):
    secrets = tmp / "app" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / ".env").write_text(f"APP=demo\nAPI_TOKEN={TOKEN}\n")
    (tmp / "app" / "notes.txt").write_text("the notes\n")
    (tmp / "app" / "public").mkdir()
    hooks = tmp / "repo" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    db = tmp / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    return {"secrets": str(secrets), "secret": str(secrets / ".env"), "notes": str(tmp / "app" / "notes.txt"),
            "hooks": str(hooks), "hook": str(hooks / "post-commit"), "db": str(db),
            "traversal": str(tmp / "app" / "public" / ".." / "secrets" / ".env")}


def _fill(args, where):
    out = {}
    for k, v in args.items():
        v = v.format(**where) if isinstance(v, str) else v
        out[k] = int(v) if k == "port" else v
    return out


def _session(tmp, name, where, policy=None):
    out = tmp / f"{name}.jsonl"
    extra = []
    if policy is not None:
        pfile = tmp / f"{name}.yaml"
        pfile.write_text(policy)
        extra = ["--policy", str(pfile)]
    env = {"AWS_SECRET_ACCESS_KEY": AWS, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    if os.environ.get("MCPWITNESS_STATE_DIR"):
        env["MCPWITNESS_STATE_DIR"] = os.environ["MCPWITNESS_STATE_DIR"]
    t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--no-store", *extra, "--", sys.executable, SERVER],
                       env=env)
    answers = []

    async def main():
        async with client(t) as c:
            for _, tool, args, _, _ in CASES:
                r = await c.call_tool(tool, _fill(args, where))
                answers.append((r.is_error, r.content[0].text if r.content else ""))
            await anyio.sleep(0.3)

    anyio.run(main)
    with open(out) as f:
        recs = [json.loads(line) for line in f]
    calls = [r for r in recs if r["type"] == "call" and r["method"] == "tools/call"]
    assert len(calls) == len(CASES), [c["tool"] for c in calls]
    return recs, calls, answers, out


def _alerts(recs, call):
    return {a["rule"] for a in recs if a["type"] == "alert" and a.get("call_id") == call["call_id"]
            and PRIORITY.get(str(a.get("priority")).lower(), 0) >= PRIORITY["warning"]}


@pytest.mark.matrix("attacks: detected, and refused by a policy")
def test_attack_suite_detected_without_a_policy_and_refused_under_one(tmp_path):
    where = _setup(tmp_path)
    attacker = Listener()
    where["port"] = attacker.port
    try:
        recs, calls, answers, out = _session(tmp_path, "detect", where)
        got = {}
        for (case, _, _, rules, _), call in zip(CASES, calls):
            fired = _alerts(recs, call)
            got[case] = sorted(fired)
            if rules:
                assert fired & set(rules), (case, rules, sorted(fired))
            else:
                assert not fired, (case, sorted(fired))
        blob = out.read_text()
        assert TOKEN not in blob and AWS not in blob, "the secrets the attacks leaked are in no record"
        assert os.path.exists(where["hook"]), "without a policy the hook was planted (the attack worked)"
        os.unlink(where["hook"])
        assert attacker.accepted, "without a policy the exfiltration and the download reached the listener"

        before = len(attacker.accepted)
        recs, calls, answers, out = _session(tmp_path, "enforce", where,
                                             POLICY.format(secrets=where["secrets"], hooks=where["hooks"]))
        start = next(r for r in recs if r["type"] == "start")
        server = calls[0]["server"]["pid"]
        for (case, tool, _, _, outcome), call, (is_error, text) in zip(CASES, calls, answers):
            pe = [e for e in call["timeline"] if e["type"] == "policy"]
            if outcome == "refused":
                assert pe and all(e["action"] == "denied" and e["errno"] == "EPERM" for e in pe), (case, pe)
                assert "refused" in text or is_error, (case, text)
                assert TOKEN not in text, (case, text)
            else:
                assert not pe, (case, pe)
                assert not is_error, (case, text)
            assert call["status"] in ("ok", "tool_error"), (case, call["status"])
        assert answers[-1] == (False, "the notes\n"), "the server served the call after the attacks"
        assert not os.path.exists(where["hook"]), "the refused create left no file"
        assert len(attacker.accepted) == before, "nothing reached the attacker under the policy"
        assert not any(r["type"] == "exit" and r["pid"] == server and r.get("signal") for r in recs), \
            "the server was never killed"
        assert not [e for r in calls for e in r["timeline"] if e["type"] == "policy" and e["action"] == "killed"]
        mech = {e["mechanism"].split(" ")[0] for r in calls for e in r["timeline"] if e["type"] == "policy"}
        files = start["policy"]["mechanisms"]["files"]
        assert mech <= ({"lsm/file_open", "lsm/path_mknod", "lsm/bprm_check_security", "cgroup/connect4"}
                        if files.startswith("lsm/") else {"seccomp", "cgroup/connect4"}), mech
    finally:
        attacker.close()
