"""Who the client is (decode/principal.py), end to end on the real kernel,
with real SDK clients and servers:

- over Streamable HTTP with real JWTs (RS256, verified against a JWKS file,
  one signed by another key, one expired), an opaque bearer token and an API
  key: the claims or a keyed fingerprint, and no token in any output;
- over a named Unix socket: the peer's pid, uid and gid from the kernel
  (SO_PEERCRED, read by the BPF program), for a client running with another gid;
- over stdio: the client process (pipes: the Python SDK; socketpairs: the
  TypeScript SDK, Node) with its executable's hash and its ancestors;
- the identity rules: a client that declares a known client's name from
  another program, a name seen from a new program, a server that served a
  bad token; each with a near miss (the MCP Inspector, which is what it says).
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import anyio
import pytest
from conftest import NPM, free_port, wait_for
from mcp.types import Implementation
from mcp_client import RecordingStdio, check_against_client, client

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
W = os.path.join(HERE, "workloads")
NPM_DIR = os.path.dirname(os.path.dirname(NPM))
TS_CLIENT = os.path.join(W, "ts_client.js")
INSPECTOR = os.path.join(NPM, "mcp-inspector")
SDK_SERVER = os.path.join(W, "sdk_server.py")
TIMEOUT = 300


def records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def of(recs, t):
    return [r for r in recs if r["type"] == t]


def alerts(recs, rule):
    return [r for r in recs if r["type"] == "alert" and r["rule"] == rule]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stop(p, sig=signal.SIGINT):
    if p.poll() is None:
        p.send_signal(sig)
    return p.wait(timeout=TIMEOUT)


# --- HTTP: JWTs, an opaque token, an API key -------------------------------------

def _rsa():
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key, kid):
    from jwt.algorithms import RSAAlgorithm
    d = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    d.update(kid=kid, alg="RS256", use="sig")
    return d


def _jwt(key, kid, **claims):
    import jwt
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def http_run(tmp_path_factory):
    """One `watch --port` with a JWKS, and five SDK clients, each with its credential."""
    tmp = tmp_path_factory.mktemp("identity-http")
    state = tmp / "state"
    good, other = _rsa(), _rsa()
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(good, "k1")]}))
    now = int(time.time())
    claims = dict(iss="https://issuer.test/", aud="mcp", client_id="agent-7", scope="tools:read tools:call",
                  iat=now, exp=now + 3600)
    creds = {
        "jwt": ("Authorization", "Bearer " + _jwt(good, "k1", sub="alice", **claims)),
        "forged": ("Authorization", "Bearer " + _jwt(other, "k1", sub="mallory", **claims)),
        "expired": ("Authorization", "Bearer " + _jwt(good, "k1", sub="bob", **dict(claims, exp=now - 60))),
        "opaque": ("Authorization", "Bearer " + base64.urlsafe_b64encode(os.urandom(30)).decode()),
        "apikey": ("X-API-Key", "sk-test-" + os.urandom(16).hex()),
    }
    port = free_port()
    out, db, err = tmp / "ev.jsonl", tmp / "mw.db", tmp / "watch.stderr"
    env = dict(os.environ, MCPWITNESS_STATE_DIR=str(state))
    with open(err, "w") as errf:
        w = subprocess.Popen([MW, "watch", "--jsonl", str(out), "--db", str(db), "--port", str(port),
                              "--jwks", str(jwks)], stdin=subprocess.DEVNULL, stderr=errf, stdout=errf, env=env)
    srv = None
    logs = {}
    try:
        assert wait_for(lambda: out.exists() and '"type":"start"' in out.read_text(), TIMEOUT), "watch did not start"
        srv = subprocess.Popen([sys.executable, os.path.join(W, "sdk_http_server.py"), "http", "127.0.0.1",
                                str(port)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "listening"
        for name, (header, value) in creds.items():
            log = tmp / f"{name}.log.json"
            subprocess.run([sys.executable, os.path.join(W, "auth_http_client.py"), f"http://127.0.0.1:{port}/mcp",
                            header, value, f"mw-{name}", str(log)], check=True, timeout=TIMEOUT)
            logs[name] = [tuple(x) for x in json.loads(log.read_text())]
        # every call answered and written before the agent stops
        assert wait_for(lambda: sum('"type":"call"' in x and '"tools/call"' in x
                                    for x in out.read_text().splitlines()) >= len(creds), TIMEOUT)
    finally:
        if srv is not None:
            stop(srv, signal.SIGTERM)
        assert stop(w) == 0
    recs = records(out)
    calls = {}
    for c in of(recs, "call"):
        if c["method"] == "tools/call":
            name = ((c.get("principal") or {}).get("declared") or {}).get("name", "?")
            calls[name.removeprefix("mw-")] = c
    return {"tmp": tmp, "recs": recs, "calls": calls, "creds": creds, "db": db, "out": out, "err": err,
            "state": state, "logs": logs, "port": port}


def test_jwt_claims_verified_against_the_jwks(http_run):
    c = http_run["calls"]["jwt"]
    p = c["principal"]
    assert p["kind"] == "jwt" and p["verified"] is True and p["source"] == "authorization header"
    assert p["id"] == "jwt:https://issuer.test/|alice"
    assert p["claims"]["sub"] == "alice" and p["claims"]["aud"] == "mcp" and p["claims"]["client_id"] == "agent-7"
    assert p["claims"]["scope"] == "tools:read tools:call" and p["kid"] == "k1" and p["alg"] == "RS256"
    assert p["expired"] is False and p["address"].startswith("127.0.0.1:")
    assert p["declared"] == {"name": "mw-jwt", "version": "1"}
    # the session says it too, and every request of it names it
    sess = [s for s in of(http_run["recs"], "session") if s["session"] == c["session"] and s.get("principal")]
    assert sess and sess[-1]["principal"]["id"] == p["id"]
    reqs = [m for m in of(http_run["recs"], "mcp") if m["session"] == c["session"] and m["kind"] == "request"]
    assert reqs and all(m["http"]["principal"] == p["id"] for m in reqs)
    check_against_client(http_run["logs"]["jwt"], [m for m in of(http_run["recs"], "mcp")
                                                   if m["session"] == c["session"]])


def test_forged_jwt_is_not_the_identity_it_claims(http_run):
    p = http_run["calls"]["forged"]["principal"]
    assert p["kind"] == "jwt" and p["verified"] is False and p["verification"] == "failed: bad signature"
    assert p["claims"]["sub"] == "mallory" and p["id"].startswith("jwt-unverified:https://issuer.test/|mallory|fp:")


def test_bad_token_rule_triggers_on_forged_and_expired(http_run):
    got = {a["call_id"]: a for a in alerts(http_run["recs"], "Server served a call with a bad or expired token")}
    for name in ("forged", "expired"):
        c = http_run["calls"][name]
        assert c["call_id"] in got, (name, list(got))
        assert got[c["call_id"]]["principal"] == c["principal"]["id"]
    assert http_run["calls"]["expired"]["principal"]["expired"] is True
    assert http_run["calls"]["expired"]["principal"]["verified"] is True


def test_bad_token_rule_near_miss_valid_jwt(http_run):
    ids = {a["call_id"] for a in alerts(http_run["recs"], "Server served a call with a bad or expired token")}
    for name in ("jwt", "opaque", "apikey"):
        assert http_run["calls"][name]["call_id"] not in ids


def test_opaque_token_and_api_key_are_fingerprints(http_run):
    b, k = http_run["calls"]["opaque"]["principal"], http_run["calls"]["apikey"]["principal"]
    assert b["kind"] == "bearer" and b["id"] == f"bearer:{b['fingerprint']}" and b["fingerprint"].startswith("fp:")
    assert k["kind"] == "api_key" and k["source"] == "x-api-key header" and k["id"] == f"api-key:{k['fingerprint']}"
    assert b["fingerprint"] != k["fingerprint"]
    # the key of the fingerprints is kept in the state directory, private: the same token gives
    # the same fingerprint after a restart
    key = http_run["state"] / "identity.key"
    assert key.exists() and (key.stat().st_mode & 0o077) == 0
    from mcpwitness.decode.principal import Identifier, load_key
    again = Identifier(*load_key(str(http_run["state"])))
    assert again.credentials({"authorization": http_run["creds"]["opaque"][1]})["fingerprint"] == b["fingerprint"]


def test_no_token_in_any_output(http_run):
    """Not the tokens, not a JWT's signature or payload segment, not the API
    key: in the JSON Lines, the store (and its WAL), the agent's messages, the
    state directory, nor what the query commands print."""
    secrets = []
    for header, value in http_run["creds"].values():
        tok = value.split(" ", 1)[-1]
        secrets.append(tok)
        if tok.count(".") == 2:
            secrets += tok.split(".")[1:]
    db = str(http_run["db"])
    printed = ""
    for argv in (["calls", "--json", "--limit", "100"], ["alerts", "--json", "--limit", "100"],
                 ["sessions", "--json", "--limit", "100"], ["calls"], ["alerts"], ["sessions"]):
        p = subprocess.run([MW, *argv, "--db", db], capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0, p.stderr
        printed += p.stdout + p.stderr
    for c in http_run["calls"].values():
        p = subprocess.run([MW, "show", c["call_id"], "--db", db], capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0 and c["principal"]["id"] in p.stdout
        printed += p.stdout
    files = [f for f in http_run["tmp"].rglob("*") if f.is_file() and f.suffix != ".json" and f.name != "jwks.json"]
    assert any(f.name == "mw.db" for f in files) and any(f.name == "ev.jsonl" for f in files)
    blobs = [(str(f), f.read_bytes()) for f in files] + [("printed", printed.encode())]
    for name, data in blobs:
        for s in secrets:
            assert s.encode() not in data, f"a token is in {name}"


def test_query_commands_filter_by_principal(http_run):
    db = str(http_run["db"])
    jwt_call, opaque = http_run["calls"]["jwt"], http_run["calls"]["opaque"]

    def lines(*argv):
        p = subprocess.run([MW, *argv, "--db", db, "--json"], capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0, p.stderr
        return [json.loads(x) for x in p.stdout.splitlines()]
    got = lines("calls", "--principal", "alice")
    assert got and {r["principal"]["id"] for r in got} == {jwt_call["principal"]["id"]}
    assert jwt_call["call_id"] in {r["call_id"] for r in got}
    got = lines("calls", "--principal", "bearer:*")
    assert got and {r["principal"]["id"] for r in got} == {opaque["principal"]["id"]}
    got = lines("sessions", "--principal", "alice")
    assert [s["session"] for s in got] == [jwt_call["session"]]
    got = lines("alerts", "--principal", "mallory")
    assert got and {a["rule"] for a in got} >= {"Server served a call with a bad or expired token"} and all("mallory" in a["principal"] for a in got)
    assert lines("calls", "--principal", "nobody-at-all") == []


# --- a named Unix socket: the peer from the kernel -------------------------------

@pytest.fixture(scope="module")
def unix_run(tmp_path_factory):
    """The SDK server on a named Unix socket under `mcpwitness run`; the SDK
    client, outside it, runs with gid 4242 and calls itself claude-code."""
    tmp = tmp_path_factory.mktemp("identity-unix")
    sock, out, log, db = tmp / "mcp.sock", tmp / "ev.jsonl", tmp / "client.json", tmp / "mw.db"
    srv = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--db", str(db), "--", sys.executable,
                            os.path.join(W, "unix_mcp.py"), "serve", str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        cl = subprocess.Popen(["setpriv", "--regid", "4242", "--clear-groups", sys.executable,
                               os.path.join(W, "unix_mcp.py"), "client", str(sock), str(log), "claude-code"])
        assert cl.wait(timeout=TIMEOUT) == 0
        assert srv.wait(timeout=TIMEOUT) == 0
    finally:
        if srv.poll() is None:
            stop(srv, signal.SIGTERM)
    return {"recs": records(out), "client_pid": cl.pid, "log": [tuple(x) for x in json.loads(log.read_text())],
            "db": db}


@pytest.mark.matrix("client identity: a Unix socket's peer (SO_PEERCRED)")
def test_unix_socket_peer_from_the_kernel(unix_run):
    recs = unix_run["recs"]
    mcp = of(recs, "mcp")
    check_against_client(unix_run["log"], mcp)
    assert {m["transport"] for m in mcp} == {"unix"}
    calls = [c for c in of(recs, "call") if c["method"] == "tools/call"]
    assert len(calls) == 2
    for c in calls:
        p = c["principal"]
        assert p["kind"] == "unix_peer" and "SO_PEERCRED" in p["source"]
        # setpriv execs the client in place: the connecting process is the one the test started
        assert p["peer_cred"] == {"pid": unix_run["client_pid"], "uid": 0, "gid": 4242}
        assert p["pid"] == unix_run["client_pid"] and p["gid"] == 4242 and p["uid"] == 0
        assert p["exe"] == os.path.realpath(sys.executable) and p["exe_sha256"] == sha256(p["exe"])
        assert p["app"].endswith("unix_mcp.py") and p["chain"][0]["pid"] == os.getpid()
        assert p["id"] == f"unix:root@{p['app']}" and p["declared"]["name"] == "claude-code"


def test_client_name_mismatch_triggers(unix_run):
    """A Python program that says it is claude-code."""
    got = alerts(unix_run["recs"], "Client name does not match its program")
    assert len(got) == 1
    a = got[0]
    assert a["fields"]["identity.declared"] == "claude-code" and a["fields"]["identity.exe"] == os.path.realpath(
        sys.executable)
    assert a["principal"].startswith("unix:root@") and "claude-code" in a["output"]
    p = subprocess.run([MW, "alerts", "--db", str(unix_run["db"]), "--principal", "unix:*", "--json"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert "Client name does not match its program" in {json.loads(x)["rule"] for x in p.stdout.splitlines()}


# --- stdio: the process at the other end, pipes and socketpairs ----------------------

def _python_client(out, name, text):
    """The Python SDK client, in this process, launches the SDK server on pipes and calls
    echo; the session stays open (the pipes with it) until the agent has written the call,
    so that what it reads of the client in /proc, it reads while the client runs."""
    t = RecordingStdio(sys.executable, [SDK_SERVER])

    async def main():
        async with client(t, client_info=Implementation(name=name, version="1")) as c:
            await c.call_tool("echo", {"text": text})
            assert await anyio.to_thread.run_sync(lambda: wait_for(
                lambda: f'"{text}"' in out.read_text() and '"type":"call"' in out.read_text(), TIMEOUT))
    anyio.run(main)


def test_stdio_python_client_over_pipes(tmp_path):
    """watch finds the server the Python SDK client (this test's own process)
    launched on pipes: the client is the process holding the pipe's write end."""
    out = tmp_path / "ev.jsonl"
    w = subprocess.Popen([MW, "watch", "-q", "--no-store", "--jsonl", str(out)], stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: out.exists() and '"type":"start"' in out.read_text(), TIMEOUT)
        _python_client(out, "mw-pipe-client", "who am i")
    finally:
        assert stop(w) == 0
    recs = records(out)
    call = next(c for c in of(recs, "call") if c["method"] == "tools/call"
                and (c["client"]["info"] or {}).get("name") == "mw-pipe-client")
    p = call["principal"]
    assert p["kind"] == "process" and p["source"] == "holds the other end of the server's stdin"
    assert p["pid"] == os.getpid() and p["exe"] == os.path.realpath(sys.executable)
    assert p["exe_sha256"] == sha256(p["exe"]) and p["uid"] == os.geteuid()
    assert p["chain"][0]["pid"] == os.getppid()
    assert p["id"].startswith("stdio:") and p["declared"]["name"] == "mw-pipe-client"
    assert not [a for a in alerts(recs, "Client name does not match its program") if a["session"] == call["session"]]


QUICK_SERVER = r"""
import json, os, sys
req = json.loads(sys.stdin.readline())
sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "quick", "version": "1"}}}) + "\n")
sys.stdout.flush()
os._exit(0)   # gone before the agent decodes what it said (it gathers records for a few ms first)
"""


def test_stdio_client_of_a_server_that_died_at_once(tmp_path):
    """A server that answers and dies within a millisecond (as one killed by a policy, issue 33):
    its /proc is gone when the decoder asks who its client is, so the client is traced from the
    server's parent as the kernel saw it at exec, and the session still names this process."""
    out = tmp_path / "ev.jsonl"
    p = subprocess.Popen([MW, "run", "-q", "--jsonl", str(out), "--no-store", "--", sys.executable, "-c", QUICK_SERVER],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "quick-client", "version": "1"}}}
    ).encode() + b"\n")
    p.stdin.flush()
    assert b'"serverInfo"' in p.stdout.readline()
    # the client holds its end while the agent looks (as a client does for its session)
    assert wait_for(lambda: out.exists() and '"event":"identified"' in out.read_text(), TIMEOUT)
    p.stdin.close()
    assert p.wait(timeout=TIMEOUT) == 0
    sessions = [r for r in records(out) if r["type"] == "session" and r["transport"] == "stdio"]
    principals = [r["principal"] for r in sessions if r.get("principal")]
    assert principals, [(r["event"], r.get("principal")) for r in sessions]
    pr = principals[0]
    assert pr["pid"] == os.getpid() and pr["exe"] == os.path.realpath(sys.executable), pr
    assert pr["source"].startswith("holds the other end of the server's stdin"), pr
    assert pr["declared"]["name"] == "quick-client"


def _ts_client(tmp, name, argv, calls, ready):
    """The TypeScript SDK client: connects, waits until ready() (what the agent
    reads of it in /proc, it reads while the client runs), then calls."""
    cfg, log, go = tmp / f"{name}.json", tmp / f"{name}-log.json", tmp / f"{name}.go"
    cfg.write_text(json.dumps({"npm": NPM_DIR, "log": str(log), "command": argv[0], "args": argv[1:], "name": name,
                               "env": {"MCPWITNESS_STATE_DIR": os.environ.get("MCPWITNESS_STATE_DIR", "")},
                               "calls": calls, "go": str(go)}))
    p = subprocess.Popen(["node", TS_CLIENT, str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(ready, TIMEOUT), "the agent did not see the client's session"
    finally:
        go.write_text("go")
        _, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0, err


def test_stdio_node_client_over_socketpairs_and_a_name_from_a_new_program(tmp_path):
    """One watch, two sessions with the same client name: the Python SDK
    client first, then the TypeScript SDK client (Node, socketpairs: the
    kernel's credentials of the socketpair name it). The second is a new
    program for that name."""
    out, db = tmp_path / "ev.jsonl", tmp_path / "mw.db"
    w = subprocess.Popen([MW, "watch", "-q", "--db", str(db), "--jsonl", str(out)], stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: out.exists() and '"type":"start"' in out.read_text(), TIMEOUT)
        _python_client(out, "mw-shared-name", "from python")
        _ts_client(tmp_path, "mw-shared-name", [sys.executable, SDK_SERVER], [["tool", "echo", {"text": "from node"}]],
                   lambda: out.read_text().count('"name":"mw-shared-name"') >= 2 and '"/usr/bin/node"' in out.read_text())
        assert wait_for(lambda: sum('"type":"call"' in x and '"tools/call"' in x
                                    for x in out.read_text().splitlines()) >= 2, TIMEOUT)
    finally:
        assert stop(w) == 0
    recs = records(out)
    calls = [c for c in of(recs, "call") if c["method"] == "tools/call"
             and (c["client"]["info"] or {}).get("name") == "mw-shared-name"]
    assert len(calls) == 2
    py, node = sorted(calls, key=lambda c: c["ktime_ns"])
    assert py["principal"]["pid"] == os.getpid()
    p = node["principal"]
    assert p["kind"] == "process" and "SO_PEERCRED" in p["source"] and os.path.basename(p["exe"]) == "node"
    assert p["peer_cred"]["pid"] == p["pid"] and p["exe_sha256"] == sha256(p["exe"])
    assert p["app"].endswith("ts_client.js") and p["chain"][0]["pid"] == os.getpid()
    # two clients with the same clientInfo name are two principals, and two rate keys
    assert py["principal"]["id"] != p["id"]
    got = alerts(recs, "Client name seen from a different program")
    assert [a["session"] for a in got] == [node["session"]]
    assert got[0]["fields"]["identity.programs_before"] == [os.path.basename(py["principal"]["exe"])]
    # near miss: the first session of the name is not new
    assert not [a for a in alerts(recs, "Client name seen from a different program") if a["session"] == py["session"]]
    assert not alerts(recs, "Client name does not match its program")


def test_inspector_is_what_it_says_near_miss(tmp_path):
    """The MCP Inspector CLI declares "inspector" and runs on node: no mismatch."""
    if not os.path.exists(INSPECTOR):
        pytest.fail(f"{INSPECTOR} is not installed: run scripts/setup")
    out = tmp_path / "ev.jsonl"
    cfg = tmp_path / "inspector.json"
    cfg.write_text(json.dumps({"mcpServers": {"s": {"command": MW, "args": [
        "run", "-q", "--no-store", "--jsonl", str(out), sys.executable, SDK_SERVER]}}}))
    p = subprocess.run([INSPECTOR, "--cli", "--config", str(cfg), "--server", "s", "--method", "tools/call",
                        "--tool-name", "echo", "--tool-arg", "text=inspected"], capture_output=True, text=True,
                       timeout=TIMEOUT, env=dict(os.environ, MCP_AUTO_OPEN_ENABLED="false"))
    assert p.returncode == 0, p.stdout + p.stderr
    recs = records(out)
    sess = [s for s in of(recs, "session") if (s.get("principal") or {}).get("declared")]
    assert sess and sess[-1]["principal"]["declared"]["name"] == "inspector"
    assert os.path.basename(sess[-1]["principal"]["exe"]) == "node"
    assert not alerts(recs, "Client name does not match its program") and not alerts(recs, "Client name seen from a different program")


# --- one stage: credentials and command lines (no kernel) ------------------------------

def test_credentials_unit(tmp_path):
    from mcpwitness.decode.principal import Identifier, app, load_key
    key, scope = load_key(str(tmp_path / "st"))
    assert scope == "state" and load_key(str(tmp_path / "st"))[0] == key
    ident = Identifier(key, scope)
    basic = ident.credentials({"authorization": "Basic " + base64.b64encode(b"carol:pa55word").decode()})
    assert basic["id"] == "basic:carol" and basic["user"] == "carol" and "pa55word" not in json.dumps(basic)
    # not a JWT (three parts that are not JSON): an opaque token
    assert ident.credentials({"authorization": "Bearer a.b.c"})["kind"] == "bearer"
    assert ident.credentials({"authorization": "Bearer"})["kind"] == "other"
    assert ident.credentials({"x-custom": "v"}) is None and ident.credentials({}) is None
    # alg none is refused whatever the JWKS holds
    import jwt as pyjwt
    k = _rsa()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(k, "k1")]}))
    v = Identifier(key, scope, jwks=str(jwks))
    none = pyjwt.encode({"sub": "root", "iss": "x"}, None, algorithm="none")
    p = v.credentials({"authorization": "Bearer " + none})
    assert p["kind"] == "jwt" and p["verified"] is False and "refused" in p["verification"]
    assert p["id"].startswith("jwt-unverified:")
    missing = Identifier(key, scope, jwks=str(tmp_path / "nope.json"))
    p = missing.credentials({"authorization": "Bearer " + _jwt(k, "k1", sub="a", iss="x")})
    assert p["verified"] is False and "nope.json" in p["verification"]
    assert app("/usr/bin/node", ["node", "--enable-source-maps", "/opt/cli.js", "x"]) == "/usr/bin/node /opt/cli.js"
    assert app("/usr/bin/python3.11", ["python3", "-m", "mypkg", "x"]) == "/usr/bin/python3.11 -m mypkg"
    assert app("/usr/bin/git", ["git", "status"]) == "/usr/bin/git"


def test_command_lines_are_redacted_unit():
    from mcpwitness.decode.redact import Redactor
    r = Redactor()
    out = r.argv(["srv", "--token", "abc123secret", "--api-key=sk-0123456789abcdefghijklmnop", "--port", "80",
                  "Bearer eyJhbGciOi.eyJzdWIiOiJ4.c2lnbmF0dXJl"])
    assert out[:3] == ["srv", "--token", "[REDACTED]"] and "sk-0123456789" not in out[3]
    assert out[4:6] == ["--port", "80"] and "eyJ" not in out[6]
    assert Redactor(enabled=False).argv(["--token", "x"]) == ["--token", "x"]
