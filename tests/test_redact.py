"""Redaction (decode/redact.py), no kernel: the shapes secrets leak in (an environment dump, a
config file a tool read, JSON inside a string, headers, key formats), planted in every field an
MCP message carries, must never come out byte for byte in any record the decoder writes. And what
only looks like a name of a secret (author, max_tokens, a git hash) is left alone."""
import base64
import json
import random
import string

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpwitness.decode.redact import Redactor, name_kind
from test_streams_mcp import run

B64 = string.ascii_letters + string.digits + "/+"
TOKEN = string.ascii_letters + string.digits


def _secret(draw, alphabet=B64 + "_-.", n=(12, 48)):
    """A value with a secret's shape: random (a seeded generator: hypothesis would shrink a drawn
    text to 000..., which under a weak name such as SESSION is rightly not taken for a secret)."""
    rnd = random.Random(draw(st.integers()))
    return "k9" + "".join(rnd.choice(alphabet) for _ in range(draw(st.integers(*n)))) + "Q7"


# secret words, as users spell them in names: any position, any case
WORDS = ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIAL",
         "CREDENTIALS", "PASSPHRASE", "CLIENT_SECRET", "SECRET_KEY"]
WEAK_WORDS = ["AUTH", "SESSION", "COOKIE", "SESSION_ID"]


@st.composite
def names(draw, weak=True):
    word = draw(st.sampled_from(WORDS + WEAK_WORDS if weak else WORDS))
    before = draw(st.sampled_from(["", "DB_", "AWS_", "MY_APP_", "X-", "stripe.", "GH_"]))
    after = "" if word in WEAK_WORDS else draw(st.sampled_from(["", "_PROD", "_VALUE", "-2", "_FOR_CI"]))
    case = draw(st.sampled_from([str.upper, str.lower, str.title, lambda s: s]))
    return case(before + word + after)


@st.composite
def planted(draw):
    """(a text carrying one secret, the secret as it would appear byte for byte)."""
    kind = draw(st.sampled_from(["env", "env-spaces", "yaml", "json", "json-escaped", "header", "query", "flag",
                                 "aws-id", "aws-secret", "gcp", "azure", "sas", "slack", "slack-hook", "stripe",
                                 "jwt", "pem", "github", "gitlab", "npm", "anthropic", "openai"]))
    v = _secret(draw)
    t = _secret(draw, TOKEN, (30, 40))
    if kind.startswith(("env", "yaml", "json", "header", "query", "flag")):
        n = draw(names())
    if kind == "env":
        return f"HOME=/root\nPATH=/usr/bin\n{n}={v}\nLANG=C.UTF-8\n", v
    if kind == "env-spaces":
        words = f"{v} horse battery staple"
        return f"SHELL=/bin/sh\n{n}={words}\n", words
    if kind == "yaml":
        return f"database:\n  host: db.internal\n  {n}: {v}\n", v
    if kind == "json":
        return json.dumps({"service": "api", n: v, "port": 5432}), v
    if kind == "json-escaped":
        return json.dumps(json.dumps({n: v})), v
    if kind == "header":
        return f"GET / HTTP/1.1\r\nHost: h\r\n{n}: {v}\r\n", v
    if kind == "query":
        return f"https://api.example/v1?user=bob&{n}={v}&page=2", v
    if kind == "flag":
        return f"server --{n.lower()}={v} --verbose", v
    if kind == "aws-id":
        s = "AKIA" + draw(st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16))
        return f"aws_access_key_id = {s}", s
    if kind == "aws-secret":
        # with no name beside it, only its randomness tells a secret key from a word: a real one's
        s = base64.b64encode(random.Random(draw(st.integers())).randbytes(30)).decode()
        return draw(st.sampled_from([f"the AWS key is {s} (rotate it)", f"AKIAIOSFODNN7EXAMPLE,{s}\n"])), s
    if kind == "gcp":
        body = draw(st.text(B64, min_size=64, max_size=64))
        sa = {"type": "service_account", "project_id": "p", "private_key_id": "0a1b2c3d" * 5,
              "private_key": f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n",
              "client_email": "x@p.iam.gserviceaccount.com"}
        return json.dumps(sa, indent=2), body
    if kind == "azure":
        return (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={v}==;"
                "EndpointSuffix=core.windows.net"), v
    if kind == "sas":
        return f"https://a.blob.core.windows.net/c/f?sv=2022-11-02&se=2026&sig={t}%3D", t
    if kind == "slack":
        return f"token xoxb-{t}", "xoxb-" + t
    if kind == "slack-hook":
        return f"post to https://hooks.slack.com/services/T0{t[:8]}/B0{t[8:16]}/{t}", t
    if kind == "stripe":
        return f"STRIPE key sk_live_{t}", "sk_live_" + t
    if kind == "jwt":
        j = f"eyJ{t[:10]}.eyJ{t[10:25]}.{t}"
        return f"cookie value {j}", j
    if kind == "pem":
        label = draw(st.sampled_from(["RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY",
                                      "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK", "CERTIFICATE"]))
        body = draw(st.text(B64, min_size=64, max_size=64))
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n", body
    prefix = {"github": "ghp_", "gitlab": "glpat-", "npm": "npm_", "anthropic": "sk-ant-api03-", "openai": "sk-proj-"}
    s = prefix[kind] + (t + "x" * 36)[:36]
    return f"use {s} here", s


def _lines(text, field):
    """The JSON-RPC lines of a session with `text` in `field`."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}}
    init_ok = {"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-06-18", "capabilities": {},
                                                     "serverInfo": {"name": "s", "version": "1"}}}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "arguments": {}}}
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}}
    if field == "argument":
        call["params"]["arguments"] = {"config": text}
    elif field == "nested-argument":
        call["params"]["arguments"] = {"files": [{"path": "/etc/app.env", "content": text}]}
    elif field == "result":
        answer["result"]["content"][0]["text"] = text
    elif field == "structured-result":
        answer["result"]["structuredContent"] = {"output": {"stdout": text}}
    elif field == "error":
        answer = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": text, "data": {"detail": text}}}
    elif field == "resource":
        answer["result"] = {"contents": [{"uri": "file:///app/.env", "text": text}]}
    elif field == "client-info":
        init["params"]["clientInfo"]["title"] = text
    return [json.dumps(m).encode() for m in (init, init_ok, call, answer)]


FIELDS = ["argument", "nested-argument", "result", "structured-result", "error", "resource", "client-info"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted(), st.sampled_from(FIELDS))
def test_a_planted_secret_never_reaches_a_record(leak, field):
    text, secret = leak
    recs, d = run(_lines(text, field))
    out = json.dumps([msgspec.to_builtins(r) for r in recs])
    assert secret not in out, (field, text)
    assert d.redactor.count >= 1


@settings(max_examples=200, deadline=None)
@given(names(weak=False), st.text(B64 + "_-.", min_size=10, max_size=40))
def test_a_secret_named_key_is_replaced_whole_whatever_it_holds(name, v):
    """Under a strong name (DB_PASSWORD, not SESSION) a value goes, random or not."""
    v = "k9" + v
    r = Redactor()
    assert r.value({name: v}) == {name: "[REDACTED]"}, name
    assert v not in json.dumps(r.value({"env": {name: v}, "text": f"{name}={v}"})), name


def test_names_of_secrets_in_any_position_and_case():
    for n in ["AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "db_password_prod", "clientSecret", "x-api-key", "GITHUB_TOKEN",
              "githubtoken", "DBPASSWORD", "Stripe.Secret.Key", "oauth_client_secret", "MY_CREDENTIALS",
              "private_key_id", "AccountKey", "SharedAccessKey", "DB_PaSsWoRd"]:
        assert name_kind(n) == "strong", n
    for n in ["SESSION", "auth", "X-Session-Id", "SID", "cookies"]:
        assert name_kind(n) == "weak", n
    for n in ["author", "authority", "sessions_total", "tokenizer", "max_tokens", "keyboard", "monkey", "path",
              "PWD_FILE", "description"]:
        assert name_kind(n) is None, n


def test_what_only_looks_like_a_secret_is_kept():
    r = Redactor()
    kept = [
        "author: Jane Doe", "session: started", "Error: token expired", "PWD=/srv/app\nHOME=/root",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b", "sha256:" + "ab" * 32,
        "id 123e4567-e89b-12d3-a456-426614174000", "12:30 meeting at room 4", "see https://example.com/docs",
        "data:image/png;base64," + "iVBORw0KGgo" * 40, "token_type: Bearer", "token_count=1234",
        "token_endpoint: https://auth.example.com/oauth/token",
    ]
    for t in kept:
        assert r.text(t) == t, t
    v = {"max_tokens": 100, "token_count": 3, "token_usage": {"input": 3, "output": 4}, "tokenizer": "cl100k",
         "authMethod": "oauth", "session": "started", "keys": ["a", "b"], "secret_name": "prod"}
    assert r.value(v) == v
    assert r.count == 0


def test_an_environment_dump_keeps_its_names_and_loses_its_values():
    r = Redactor()
    env = ("HOME=/root\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
           "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nDB_PASSWORD=correct horse battery\n"
           "export SESSION_SECRET=s3ss10n!\nnote: password=hunter22 and token_count=12\n")
    assert r.text(env) == ("HOME=/root\nAWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]\n"
                           "AWS_SECRET_ACCESS_KEY=[REDACTED]\nDB_PASSWORD=[REDACTED]\n"
                           "export SESSION_SECRET=[REDACTED]\nnote: password=[REDACTED] and token_count=12\n")
    assert r.count == 5


@pytest.mark.kernel
def test_secrets_a_real_server_leaks_are_in_no_file_the_agent_writes(tmp_path):
    """A real SDK server under `mcpwitness run`, started with cloud keys in its environment and
    tokens on its command line, dumps its environment, reads a config file, echoes headers and
    runs a child with a password in its argv. None of the secrets is in any byte of any file the
    agent wrote (its JSON Lines, the store and its journal, the whole state directory); the
    names and the rest of each answer are."""
    import os
    import secrets
    import shutil
    import sys

    import anyio
    from mcp_client import RecordingStdio, client

    mw = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
    server = os.path.join(os.path.dirname(__file__), "workloads", "leaky_server.py")
    state, out = tmp_path / "state", tmp_path / "ev.jsonl"
    state.mkdir()
    tok = lambda n: secrets.token_urlsafe(n).replace("-", "x").replace("_", "y")  # noqa: E731
    leaked = {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": base64.b64encode(secrets.token_bytes(30)).decode(),
        "DB_PASSWORD": tok(12), "GITHUB_TOKEN": "ghp_" + tok(30)[:36], "SESSION_SECRET": tok(16),
        "STRIPE_API_KEY": "sk_live_" + tok(24),
    }
    argv_key, argv_token, header_key, jwt = tok(20), tok(20), tok(20), f"eyJ{tok(12)}.eyJ{tok(20)}.{tok(24)}"
    pem_body, azure_key, yaml_pw = base64.b64encode(secrets.token_bytes(48)).decode(), tok(32), tok(14)
    cfg = tmp_path / "app.yaml"
    cfg.write_text(f"db:\n  host: db.internal\n  password: {yaml_pw}\nstorage: DefaultEndpointsProtocol=https;"
                   f"AccountName=a;AccountKey={azure_key};EndpointSuffix=core.windows.net\ntls_key: |\n"
                   f"  -----BEGIN EC PRIVATE KEY-----\n  {pem_body}\n  -----END EC PRIVATE KEY-----\n")
    t = RecordingStdio(mw, ["run", "-q", "--jsonl", str(out), "--", sys.executable, server, "--api-key", argv_key,
                            f"--token={argv_token}"], env={"MCPWITNESS_STATE_DIR": str(state), **leaked})
    answers = []

    async def main():
        async with client(t) as c:
            for name, args in [("environment", {}), ("read_config", {"path": str(cfg)}),
                               ("echo", {"text": f"use {leaked['GITHUB_TOKEN']}",
                                         "headers": {"Authorization": f"Bearer {jwt}", "X-Api-Key": header_key}}),
                               ("migrate", {})]:
                answers.append((await c.call_tool(name, args)).content[0].text)

    anyio.run(main)
    assert leaked["AWS_SECRET_ACCESS_KEY"] in answers[0] and yaml_pw in answers[1], "the server did not leak"
    assert answers[3] == "exit 0"
    every = [leaked[k] for k in leaked] + [argv_key, argv_token, header_key, jwt, pem_body, azure_key, yaml_pw]
    files = [out] + [p for p in state.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), files
    for p in files:
        data = p.read_bytes()
        found = [s for s in every if s.encode() in data]
        assert not found, f"{p}: {found}"
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    env = next(r for r in recs if r["type"] == "mcp" and r["kind"] == "response"
               and "HOME=" in json.dumps(r.get("result")))
    text = env["result"]["content"][0]["text"]
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED]" in text and "DB_PASSWORD=[REDACTED]" in text, text
    sess = next(r for r in recs if r["type"] == "session")
    assert "--api-key" in sess["cmdline"] and "[REDACTED]" in sess["cmdline"], sess["cmdline"]
    calls = [r for r in recs if r["type"] == "call" and r["tool"] == "migrate"]
    assert calls and "DB_PASSWORD=[REDACTED]" in json.dumps(calls[0]["timeline"]), calls
    assert recs[-1]["redactions"] >= len(every)
