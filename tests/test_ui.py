"""The web timeline (`mcpwitness ui`) in a real browser: Playwright driving
Debian's chromium, against a store that a real `mcpwitness run` of the SDK
audit server is filling while the page is open (under a policy that refuses a
connect). The list shows the calls; a shell pipeline's call shows its lineage
and its execs in order; the refused connect shows its rule and mechanism; a
call made while the page is open appears without a reload; recorded text
stays text; off loopback it needs a token.

MW_UI_SCREENSHOTS=DIR keeps the screenshots there (docs/ holds the ones the
README shows)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import anyio
import pytest
from conftest import free_port, wait_for
from mcp_client import RecordingStdio, client

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "workloads", "audit_server.py")
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 120
XSS = "<img src=x onerror=\"window.__xss=1\">"


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):   # not listening yet
        return 0, b""


def shot(page, name, tmp):
    page.screenshot(path=str(tmp / name))
    keep = os.environ.get("MW_UI_SCREENSHOTS")
    if keep:
        shutil.copy(tmp / name, os.path.join(keep, name))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """`mcpwitness run --db` of the audit server, driven by the SDK client from a
    thread: three calls, then (when the test says go) one more, while the UI is open."""
    tmp = tmp_path_factory.mktemp("ui")
    db, out, pfile, note = tmp / "mw.db", tmp / "ev.jsonl", tmp / "policy.yaml", tmp / "note.txt"
    note.write_text("a note for the web timeline\n")
    ok = socket.socket()
    ok.bind(("127.0.0.1", 0))
    ok.listen(8)
    refused = free_port()
    pfile.write_text(f"""
policies:
  - name: audit
    match: {{cmdline: "*audit_server.py*"}}
    network:
      default: deny
      allow: ["127.0.0.1:{ok.getsockname()[1]}"]
""")
    go, done, errors = threading.Event(), threading.Event(), []

    def drive():
        t = RecordingStdio(MW, ["run", "-q", "--jsonl", str(out), "--db", str(db), "--policy", str(pfile), "--",
                                sys.executable, SERVER])

        async def main():
            async with client(t) as c:
                await c.call_tool("read_file", {"path": str(note)})
                r = await c.call_tool("run", {"argv": ["sh", "-c", f"cat {note} | tr a-z A-Z | wc -c"]})
                assert not r.is_error
                r = await c.call_tool("connect", {"port": refused})
                assert r.is_error
                await c.call_tool("read_file", {"path": XSS})
                await anyio.to_thread.run_sync(lambda: go.wait(TIMEOUT))
                await c.call_tool("connect", {"port": ok.getsockname()[1]})
                await anyio.sleep(0.5)
        try:
            anyio.run(main)
        except BaseException as e:  # said by the test that waits for it
            errors.append(e)
        finally:
            done.set()

    th = threading.Thread(target=drive, daemon=True)
    th.start()
    assert wait_for(lambda: db.exists() and out.exists() and out.read_text().count('"type":"call"') >= 5
                    or done.is_set(), TIMEOUT), "the calls were not recorded"
    assert not errors, errors
    # the store's writer commits in batches: the rows are there once the UI lists them
    yield {"db": db, "out": out, "go": go, "done": done, "errors": errors, "tmp": tmp, "pfile": pfile}
    go.set()
    done.wait(TIMEOUT)
    ok.close()


@pytest.fixture(scope="module")
def ui(store):
    port = free_port()
    p = subprocess.Popen([MW, "ui", "--db", str(store["db"]), "--port", str(port)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_for(lambda: get(url + "api/calls")[0] == 200 and
                        len(json.loads(get(url + "api/calls")[1])["calls"]) >= 5, TIMEOUT), "ui did not serve"
        yield url
    finally:
        p.terminate()
        p.wait(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    yield pg
    ctx.close()


def calls_api(url):
    return json.loads(get(url + "api/calls")[1])["calls"]


def call_of(url, tool, pred=lambda c: True):
    return next(c for c in calls_api(url) if c["tool"] == tool and pred(c))


def record_of(url, call_id):
    return json.loads(get(url + "api/calls/" + call_id)[1])["record"]


def test_the_list_shows_the_calls(ui, page, store):
    page.goto(ui)
    page.wait_for_selector("[data-test=call-row]")
    tools = page.locator("[data-test=call-tool]").all_text_contents()
    assert {"read_file", "run", "connect"} <= set(tools), tools
    # each row: status, latency, attribution, kernel events by kind
    run_id = call_of(ui, "run")["call_id"]
    row = page.locator(f"[data-call='{run_id}']")
    assert "ok" in row.inner_text() and "exec" in row.inner_text() and "ms" in row.inner_text()
    shot(page, "ui-calls.png", store["tmp"])
    assert not page.errors, page.errors


def test_a_shell_pipeline_shows_its_lineage_and_execs_in_order(ui, page, store):
    run = call_of(ui, "run")
    rec = record_of(ui, run["call_id"])
    page.goto(ui)
    page.click(f"[data-call='{run['call_id']}'] [data-test=call-link]")
    page.wait_for_selector("[data-test=kernel-view]")
    tree = page.locator("[data-test=lineage]")
    text = tree.inner_text()
    for prog in ("sh", "cat", "tr", "wc"):
        assert f" {prog}" in text or f"{prog} " in text, text
    # the pipeline's programs are children of the shell, which is the server's child
    sh = [p for p in rec["processes"] if (p.get("exe") or "").endswith("/sh") or (p.get("exe") or "").endswith("dash")]
    assert sh, rec["processes"]
    nested = page.locator(f"[data-test=proc][data-pid='{sh[0]['pid']}'] + ul [data-test=proc]").all_text_contents()
    assert any("cat" in n for n in nested) and any("wc" in n for n in nested), nested
    # the execs in the order the kernel saw them
    shown = page.locator("[data-test=event-row][data-type=exec] [data-test=exec-argv]").all_text_contents()
    # (a failed exec, as the PATH search makes, has no argv: its file and error)
    expect = [(" ".join(e["argv"]) if e.get("argv") else e["file"]) + (f"  → {e['error']}" if e.get("error") else "")
              for e in rec["timeline"] if e["type"] == "exec"]
    assert shown == expect, (shown, expect)
    ok = [s for s in shown if "→" not in s]
    # the shell first; its three children in whatever order the kernel ran them
    assert ok[0].split()[0] == "sh" and sorted(s.split()[0] for s in ok[1:]) == ["cat", "tr", "wc"], ok
    times = [e["t_ms"] for e in rec["timeline"] if e["type"] == "exec"]
    assert times == sorted(times)
    assert page.locator("[data-test=tl-exec]").count() == len(expect)
    # the application's view beside it
    assert "wc -c" in page.locator("[data-test=app-view]").inner_text()
    shot(page, "ui-call.png", store["tmp"])
    assert not page.errors, page.errors


def test_a_refused_connect_shows_the_rule_and_mechanism(ui, page):
    c = call_of(ui, "connect", lambda c: c["events"].get("policy"))
    rec = record_of(ui, c["call_id"])
    pol = next(e for e in rec["timeline"] if e["type"] == "policy")
    page.goto(ui + "#/call/" + c["call_id"])
    r = page.locator("[data-test=policy-refusal]")
    r.wait_for()
    assert page.locator("[data-test=policy-rule]").inner_text() == pol["rule"] and "policy.yaml:" in pol["rule"]
    assert page.locator("[data-test=policy-mechanism]").inner_text() == pol["mechanism"]
    assert "EPERM" in r.inner_text() and "refused" in r.inner_text()
    assert page.locator("[data-test=tl-policy]").count() == 1


def test_recorded_text_stays_text(ui, page):
    c = call_of(ui, "read_file", lambda c: c["status"] != "ok")
    page.goto(ui + "#/call/" + c["call_id"])
    page.wait_for_selector("[data-test=app-view]")
    # shown as the JSON it was sent as: the text, quotes escaped
    assert json.dumps(XSS)[1:-1] in page.locator("[data-test=app-view]").inner_text()
    assert page.evaluate("window.__xss") is None and page.locator("main img").count() == 0


def test_a_new_call_appears_without_a_reload(ui, page, store):
    page.goto(ui)
    page.wait_for_selector("[data-test=call-row]")
    n = page.locator("[data-test=call-row]").count()
    page.evaluate("window.__still_here = true")
    store["go"].set()
    # (polled from here: the page's Content-Security-Policy forbids the eval wait_for_function uses)
    deadline = time.monotonic() + TIMEOUT
    while page.locator("[data-test=call-row]").count() <= n and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert page.locator("[data-test=call-row]").count() > n
    assert page.evaluate("window.__still_here") is True     # no reload happened
    first = page.locator("[data-test=call-row]").first
    assert first.get_attribute("class") == "new" and "connect" in first.inner_text()
    assert store["done"].wait(TIMEOUT) and not store["errors"], store["errors"]


def test_sessions_and_alerts_pages(ui, page):
    page.goto(ui + "#/sessions")
    page.wait_for_selector("[data-test=pair-row]")
    assert "witness-audit-server" in page.locator("[data-test=pairs]").inner_text()
    assert "new pair" in page.locator("[data-test=pairs]").inner_text()
    page.goto(ui + "#/alerts")
    page.wait_for_selector("[data-test=alert-row]")
    text = page.locator("[data-test=alerts]").inner_text()
    assert "Policy refused an action" in text and "Tool ran a shell" in text
    assert not page.errors, page.errors


def test_off_loopback_needs_a_token_and_the_api_is_guarded(store, tmp_path):
    p = subprocess.run([MW, "ui", "--db", str(store["db"]), "--addr", "0.0.0.0", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 2 and "not a loopback address" in p.stderr and "--token" in p.stderr
    token = "t0ken-" + os.urandom(12).hex()
    port = free_port()
    u = subprocess.Popen([MW, "ui", "--db", str(store["db"]), "--port", str(port), "--token", token, "-q"])
    base = f"http://127.0.0.1:{port}/"
    try:
        assert wait_for(lambda: get(base)[0] in (200, 401), TIMEOUT)
        assert get(base + "api/calls")[0] == 401
        assert get(base + "api/calls", {"Authorization": "Bearer wrong-token-000000"})[0] == 401
        status, body = get(base + "api/calls", {"Authorization": f"Bearer {token}"})
        assert status == 200 and json.loads(body)["calls"]
        # a page load with ?token= sets the cookie the front end's requests then carry
        req = urllib.request.Request(base + f"?token={token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert get(base + "api/calls", {"Cookie": cookie.split(";")[0]})[0] == 200
        # DNS rebinding: another name for this address is refused
        assert get(base + "api/calls", {"Authorization": f"Bearer {token}", "Host": f"evil.example:{port}"})[0] == 421
        req = urllib.request.Request(base + "api/calls", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("POST accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 405
        status, _ = get(base, {"Authorization": f"Bearer {token}"})
        assert status == 200
    finally:
        u.terminate()
        u.wait(timeout=TIMEOUT)
