"""The agent's own surface: where it writes, and what it writes of the
secrets that pass through it (issue 18, part 4).

- the state directory and its files are private (0700 / 0600), and a state
  directory or output file another user could swap (a symbolic link, a
  directory writable by others) is refused before anything is written;
- secrets a client and a server exchange over HTTP (Authorization, Cookie,
  Set-Cookie, Mcp-Session-Id, a token in the query, secret-looking argument
  and result values) appear in no output: the JSON Lines file and the store
  are searched byte for byte for each planted value."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


def run_true(env, *args):
    return subprocess.run([MW, "run", "-q", *args, "--", "true"], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.kernel
def test_state_directory_and_files_are_private(tmp_path):
    state = tmp_path / "state"
    env = dict(os.environ, MCPWITNESS_STATE_DIR=str(state))
    p = run_true(env)
    assert p.returncode == 0, p.stderr
    events = state / "events"
    for d in (state, events):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = list(events.glob("*.jsonl")) + list(state.glob("mcpwitness.db*"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), \
        [(f.name, oct(f.stat().st_mode)) for f in files]


@pytest.mark.kernel
@pytest.mark.parametrize("attack", ["events-symlink", "state-world-writable", "jsonl-symlink", "db-symlink"])
def test_a_swappable_place_is_refused_before_anything_is_written(tmp_path, attack):
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    state.mkdir(mode=0o700)
    elsewhere.mkdir()
    env = dict(os.environ, MCPWITNESS_STATE_DIR=str(state))
    args = []
    if attack == "events-symlink":
        (state / "events").symlink_to(elsewhere)
    elif attack == "state-world-writable":
        state.chmod(0o777)
    elif attack == "jsonl-symlink":
        (tmp_path / "out.jsonl").symlink_to(elsewhere / "victim")
        args = ["--jsonl", str(tmp_path / "out.jsonl"), "--no-store"]
    else:
        (tmp_path / "s.db").symlink_to(elsewhere / "victim.db")
        args = ["--jsonl", str(tmp_path / "ok.jsonl"), "--db", str(tmp_path / "s.db")]
    p = run_true(env, *args)
    assert p.returncode != 0
    assert "refusing" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert list(elsewhere.iterdir()) == [], "nothing was written through the swapped place"


@pytest.mark.kernel
def test_no_planted_secret_reaches_any_output(tmp_path):
    from test_http_hard_cases import session
    out, db = tmp_path / "watch.jsonl", tmp_path / "store.db"
    secrets = ["SECRETBEARER12345", "SECRETCOOKIE99", "SECRETSESSIONID9", "SECRETQUERY123", "SECRETPASSWORD1",
               "SECRETBEARER2XYZ", "SECRETRESULT4242", "SECRETSETCOOKIE77", "SECRETSESSIONID55"]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "login", "arguments": {"password": "SECRETPASSWORD1",
                                                                 "note": "Bearer SECRETBEARER2XYZ"}}}).encode()
    req = (b"POST /mcp?token=SECRETQUERY123 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Authorization: Bearer SECRETBEARER12345\r\nCookie: sid=SECRETCOOKIE99\r\n"
           b"Mcp-Session-Id: SECRETSESSIONID9\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def talk(s, _):
        s.sendall(req)
        data = b""
        while not data.rstrip().endswith(b"}"):
            data += s.recv(65536)

    recs, _ = session(tmp_path, "secrets", talk, watch_args=("--db", str(db)),
                      until=lambda text: '"type":"call"' in text)
    mcp = [r for r in recs if r["type"] == "mcp"]
    assert [(r["kind"], r["id"]) for r in mcp] == [("request", 1), ("response", 1)], "both were recorded"
    assert mcp[0]["http"]["session_id"].startswith("[REDACTED:fp:")
    assert mcp[0]["http"]["target"] == "/mcp?token=[REDACTED]", "the name kept, the value gone (docs/events.md)"
    blobs = {"jsonl": out.read_bytes()}
    for f in tmp_path.glob("store.db*"):
        blobs[f.name] = f.read_bytes()
    leaks = {(name, s) for name, blob in blobs.items() for s in secrets if s.encode() in blob}
    assert not leaks, leaks
