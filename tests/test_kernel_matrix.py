"""The kernel matrix's judge (scripts/kernel_matrix.py --judge DIR): fed crafted guest directories,
one for each way a guest can look green while the thing it stands for is broken, it must fail
each of them, naming the reason, and pass only the honest one. The expectation files of
tests/kernels/ are checked against what the test suite really collects."""
import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import kernel_matrix as km  # noqa: E402

CHOSEN_61 = {"hooks": "fexit", "files": "lsm/file_open", "create": "lsm/path_mknod",
             "exec": "lsm/bprm_check_security", "network": "cgroup sock_addr", "unix": "after the connect",
             "tls": "uprobe"}
EXPECT = {"release": "6.1.0-*-amd64", "min_tests": 5, "object_loads": True, "mechanisms": CHOSEN_61,
          "must_pass": ["tests/test_enforce.py::test_lsm_*", "*[fexit]"],
          "may_skip": [{"test": "tests/test_enforce.py::test_unix_*", "reason": "*connect_unix*"}],
          "_path": "tests/kernels/crafted.yaml"}
TESTS = [("tests/test_enforce.py::test_lsm_refuses_before_the_action", "passed", ""),
         ("tests/test_enforce.py::test_unix_socket_paths_refused_before_connecting", "skipped",
          "Skipped: no cgroup/connect_unix (6.7+) here"),
         ("tests/test_kernel_events.py::test_open_variants[dispatch]", "passed", ""),
         ("tests/test_kernel_events.py::test_open_variants[fexit]", "passed", ""),
         ("tests/test_tree.py::test_whole_tree_is_followed_and_nothing_else", "passed", "")]
BOOT = "[    0.000000] Linux version 6.1.0-57-amd64\n[    2.100000] virtme-init: starting script\n"


def guest(d, name="debian12-6.1", rc="0", tests=TESTS, chosen=CHOSEN_61, console=BOOT, started=True,
          kernel="6.1.0-57-amd64", selection=(), ok=True):
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps({"name": name, "accel": "tcg", "selection": list(selection),
                                            "full": not selection}))
    (d / "vng.json").write_text(json.dumps({"status": 0, "timed_out": False, "seconds": 900}))
    (d / "kernel").write_text(kernel + "\n")
    if rc is not None:
        (d / "rc").write_text(rc + "\n")
    if started:
        (d / "started").write_text("20.5\n")
    (d / "doctor.json").write_text(json.dumps({"ok": ok, "chosen": chosen} if ok else {"ok": False}))
    (d / "results.jsonl").write_text("".join(
        json.dumps({"test": t, "feature": None, "when": "call" if o != "skipped" else "setup", "outcome": o,
                    "reason": why, "seconds": 1.0}) + "\n" for t, o, why in tests))
    (d / "console.log").write_text(console)
    return d


def verdict(d, expect=EXPECT):
    return km.judge(km.load(str(d)), expect)


def test_an_honest_guest_passes(tmp_path):
    assert verdict(guest(tmp_path / "g")) == []


@pytest.mark.parametrize("rc,meaning", [("139", "killed by a signal"), ("2", "interrupted"),
                                        ("3", "pytest internal error"), ("5", "no tests collected"),
                                        ("1", "tests failed")])
def test_a_pytest_that_did_not_exit_0_fails(tmp_path, rc, meaning):
    why = verdict(guest(tmp_path / "g", rc=rc))
    assert any(f"pytest exited with {rc} ({meaning})" in w for w in why), why


def test_no_exit_status_fails_and_says_whether_the_tests_had_started(tmp_path):
    why = verdict(guest(tmp_path / "a", rc=None))
    assert any("ended during the tests" in w for w in why), why
    why = verdict(guest(tmp_path / "b", rc=None, started=False, tests=[]))
    assert any("before the tests started (at boot)" in w for w in why), why


def test_fewer_tests_than_the_kernel_expects_fail(tmp_path):
    why = verdict(guest(tmp_path / "g", tests=TESTS[:4]))
    assert any("4 tests ran, tests/kernels/crafted.yaml expects at least 5" in w for w in why), why
    # a run of chosen tests (--tests) is not held to the count, only to what it selected
    sel = ["tests/test_enforce.py", "tests/test_kernel_events.py::test_open_variants"]
    assert verdict(guest(tmp_path / "h", tests=TESTS[:4], selection=sel)) == []
    # ... but what it selected must still pass
    tests = [(t, "skipped", "Skipped: no BPF LSM") if "lsm" in t else (t, o, w) for t, o, w in TESTS[:4]]
    assert any("must pass here" in w for w in verdict(guest(tmp_path / "i", tests=tests, selection=sel)))


def test_a_must_pass_test_that_skipped_fails(tmp_path):
    tests = [(t, "skipped", "Skipped: no BPF LSM on this kernel (load: Operation not permitted)")
             if "lsm" in t else (t, o, w) for t, o, w in TESTS]
    why = verdict(guest(tmp_path / "g", tests=tests))
    assert any("test_lsm_refuses_before_the_action must pass here" in w and "no BPF LSM" in w for w in why), why


def test_a_parameter_that_did_not_run_fails(tmp_path):
    """fentry probe broken: the [fexit] parameters are never collected; the count alone might not show it."""
    tests = [x for x in TESTS if "[fexit]" not in x[0]] + [("tests/test_x.py::test_y", "passed", "")]
    why = verdict(guest(tmp_path / "g", tests=tests))
    assert why == ["did not run: *[fexit] (tests/kernels/crafted.yaml says it must pass here)"], why


def test_a_skip_the_kernel_does_not_allow_fails(tmp_path):
    tests = TESTS + [("tests/test_tree.py::test_other", "skipped", "Skipped: something was missing")]
    why = verdict(guest(tmp_path / "g", tests=tests))
    assert any(w.startswith("SKIPPED tests/test_tree.py::test_other") for w in why), why


def test_a_failed_test_fails_in_any_phase(tmp_path):
    tests = TESTS + [("tests/test_tree.py::test_other", "failed", "E assert 1 == 2")]
    why = verdict(guest(tmp_path / "g", tests=tests))
    assert any(w.startswith("FAILED tests/test_tree.py::test_other") for w in why), why


@pytest.mark.parametrize("line,kind", [
    ("[  812.1] Kernel panic - not syncing: Fatal exception in interrupt", "panic"),
    ("[  2.4] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI", "oops"),
    ("[ 33.0] BUG: kernel NULL pointer dereference, address: 0000000000000008", "BUG"),
    ("[ 40.2] WARNING: CPU: 1 PID: 733 at kernel/bpf/verifier.c:21313 do_check+0x1/0x2", "kernel warning"),
    ("[ 41.0] verifier bug: scc exit: no visit info for call chain", "BPF verifier bug"),
    ("[ 42.0] bpf_jit: unexpected jump padding: 2 bytes", "BPF JIT trouble"),
    ("[ 50.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "RCU stall"),
    ("[ 60.0] Out of memory: Killed process 812 (python)", "out of memory"),
    ("[ 70.0] INFO: task python:901 blocked for more than 120 seconds.", "hung task"),
    ("[ 80.0] UBSAN: array-index-out-of-bounds in kernel/bpf/core.c:1", "sanitizer report"),
])
def test_trouble_on_the_console_fails(tmp_path, line, kind):
    why = verdict(guest(tmp_path / "g", console=BOOT + line + "\n"))
    assert why == [f"console: {kind}: {line}"], why


def test_the_console_of_a_clean_boot_is_quiet():
    """What a clean 6.12 boot prints must not look like trouble (names that merely contain a word)."""
    clean = ("[    0.1] BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved\n"
             "[    0.3] Spectre V2 : Mitigation: Retpolines\n[    1.2] rcu: Hierarchical RCU implementation.\n"
             "[    1.9] Freeing unused kernel image (initmem) memory: 2736K\n"
             "[    2.0] systemd-oomd is not here; virtme-init: mounting /tmp\n")
    assert km.console_trouble(clean) == []


def test_a_quiet_fallback_fails(tmp_path):
    """LSM probe broken (or turned off): the kernel chooses the SIGKILL fallbacks and the LSM tests skip."""
    chosen = dict(CHOSEN_61, files="sigkill", exec="sigkill", create=None)
    tests = [(t, "skipped", "Skipped: no BPF LSM on this kernel (turned off)") if "lsm" in t else (t, o, w)
             for t, o, w in TESTS]
    why = verdict(guest(tmp_path / "g", chosen=chosen, tests=tests))
    assert any(w.startswith("mechanism files is 'sigkill', pinned 'lsm/file_open'") for w in why), why
    assert any(w.startswith("mechanism exec is 'sigkill'") for w in why), why
    assert any("must pass here" in w for w in why), why


def test_another_kernel_than_the_pinned_one_fails(tmp_path):
    why = verdict(guest(tmp_path / "g", kernel="6.12.118+deb13-amd64"))
    assert any("is not the pinned 6.1.0-*-amd64" in w for w in why), why


def _retried(tmp_path, first_tests, first_started):
    first = guest(tmp_path / "g.attempt1", tests=first_tests, rc=None, started=first_started,
                  console=BOOT + "[  2.4] Oops: int3: 0000 [#1]\n")
    g = guest(tmp_path / "g")
    (g / "retry.json").write_text(json.dumps({"reason": "vng exited with 1 before the tests started",
                                              "first_attempt": str(first)}))
    return g


def test_a_retried_guest_is_judged_by_its_first_attempt_too(tmp_path):
    # a boot that never reached the tests, then a clean second boot: a pass, said out loud in the table
    r = km.load(str(_retried(tmp_path / "a", [], False)))
    assert km.judge(r, EXPECT) == []
    r["verdict"] = []
    assert "RETRIED" in km.render([r]) and "booted twice" in km.render([r])
    # a first attempt with a failed test
    why = verdict(_retried(tmp_path / "b", [("tests/test_tree.py::test_t", "failed", "E boom")], True))
    assert any("the first attempt had 1 failed: tests/test_tree.py::test_t" in w for w in why), why
    # a first attempt that died during its tests: never retried away
    why = verdict(_retried(tmp_path / "c", [("tests/test_tree.py::test_t", "passed", "")], True))
    assert any("retried after the tests had started" in w for w in why), why


def test_a_kernel_nobody_pinned_fails(tmp_path):
    r = km.load(str(guest(tmp_path / "g", name="debian14-7.0")))
    assert km.judge(r, km.expectations("debian14-7.0")) == [
        "no expectations for debian14-7.0 (tests/kernels/debian14-7.0.yaml): a kernel nobody pinned proves nothing"]


def test_judge_on_the_command_line_names_the_reason_and_exits_1(tmp_path):
    g = guest(tmp_path / "debian12-6.1", rc="139")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "kernel_matrix.py"), "--judge", str(g)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "pytest exited with 139 (killed by a signal)" in p.stdout and "judge: debian12-6.1: FAIL" in p.stdout


def test_the_pinned_expectations_fail_a_guest_with_lsm_turned_off(tmp_path):
    """tests/kernels/debian12-6.1.yaml and debian13-6.12.yaml themselves: with BPF LSM gone (what
    MCPWITNESS_TEST_DISABLE_PROBES=probe_lsm_* does in a guest) each of them fails."""
    for name, kernel in (("debian12-6.1", "6.1.0-57-amd64"), ("debian13-6.12", "6.12.118+deb13-amd64")):
        expect = km.expectations(name)
        chosen = dict(expect["mechanisms"], files="sigkill", exec="sigkill", create=None)
        tests = [(t, "skipped", "Skipped: no BPF LSM on this kernel (turned off by MCPWITNESS_TEST_DISABLE_PROBES)")
                 if "lsm" in t else (t, o, w) for t, o, w in TESTS]
        why = km.judge(km.load(str(guest(tmp_path / name, name=name, kernel=kernel, chosen=chosen, tests=tests))),
                       expect)
        assert any("mechanism files is 'sigkill'" in w for w in why), (name, why)


def _collected_matrix_tests() -> list[str]:
    p = subprocess.run([sys.executable, "-m", "pytest", "-m", "matrix", "--collect-only", "-q", "-p",
                        "no:cacheprovider", os.path.join(ROOT, "tests")], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    return [ln for ln in p.stdout.splitlines() if "::" in ln]


def test_each_kernel_of_the_matrix_is_pinned_and_its_count_is_what_the_suite_collects():
    """A new matrix test must raise min_tests in the same commit; a kernel without a file cannot run."""
    import kernels
    for name in list(kernels.FAMILIES) + ["host"]:
        e = km.expectations(name)
        assert e is not None, name
        assert set(e) <= {"release", "min_tests", "object_loads", "mechanisms", "must_pass", "may_skip", "leave_to",
                          "_path"}, e
        for s in e.get("may_skip") or []:
            assert set(s) <= {"test", "reason", "when"} and s["test"], s
    ids = _collected_matrix_tests()
    base = [t for t in ids if not t.endswith("[fexit]")]
    fexit = [t for t in ids if t.endswith("[dispatch]")]   # every hook-set test has a fexit twin where fentry loads
    assert km.expectations("host")["min_tests"] == len(base), (len(base), len(ids))
    plan = km.leave_plan(["debian12-6.1", "debian13-6.12"])
    for name in ("debian12-6.1", "debian13-6.12"):
        left = [t for t in ids if any(km._match(t, g) for g in plan.get(name, {}))]
        assert km.expectations(name)["min_tests"] == len(base) + len(fexit) - len(left), (name, len(left))
    with open(os.path.join(ROOT, "tests", "kernels", "debian11-5.10.yaml")) as f:
        assert yaml.safe_load(f)["min_tests"] == len([t for t in base if t.startswith("tests/test_kernel_support.py")])


def test_what_a_guest_leaves_to_another_is_run_there_and_nothing_is_left_both_ways():
    """leave_to (tests/kernels/*.yaml): each glob names collected matrix tests, the other guest is a
    kernel of the matrix, and no test is left by each guest to the other (it would run nowhere)."""
    import kernels
    ids = _collected_matrix_tests()
    plan = km.leave_plan(list(kernels.FAMILIES))
    assert plan, "no guest leaves anything: the split of the shared tests is gone"
    left = {}
    for name, globs in plan.items():
        for glob, other in globs.items():
            hits = [t for t in ids if km._match(t, glob)]
            assert hits, f"{name}: leave_to {other}: {glob} matches no matrix test"
            assert other in kernels.FAMILIES and km.expectations(other).get("object_loads"), (name, other)
            for t in hits:
                left.setdefault(t, set()).add(name)
    both = {t: g for t, g in left.items() if len(g) > 1}
    assert not both, f"left by every guest, run by none: {both}"


def test_a_test_left_to_another_guest_counts_as_left_and_the_other_must_have_run_it(tmp_path):
    pin = "tests/test_pin.py::test_a_killed_agent_loses_nothing_and_the_next_one_takes_over"
    mine = guest(tmp_path / "a", tests=TESTS + [(pin, km.ELSEWHERE, "debian13-6.12")])
    expect = dict(EXPECT, min_tests=len(TESTS), must_pass=EXPECT["must_pass"] + ["tests/test_pin.py::*"])
    assert verdict(mine, expect) == []
    assert verdict(mine, dict(expect, min_tests=len(TESTS) + 1))[0].startswith(f"{len(TESTS)} tests ran")
    r = km.load(str(mine))
    assert km.cell([t for t in r["tests"] if t["test"] == pin]) == "in debian13-6.12"
    for other_tests in ([(pin, "passed", "")], [(pin, km.ELSEWHERE, "debian12-6.1")], []):
        a = dict(km.load(str(mine)), verdict=[])
        b = dict(km.load(str(guest(tmp_path / "b", name="debian13-6.12", tests=TESTS + other_tests))), verdict=[])
        km.covered([a, b])
        assert a["verdict"] == ([] if other_tests and other_tests[0][1] == "passed" else
                                [f"left {pin} to debian13-6.12, which did not run it"]), other_tests
    a = dict(km.load(str(mine)), verdict=[])
    km.covered([a])   # the other guest not in this run at all: said too
    assert a["verdict"], "a test left to a guest that never booted ran nowhere"


def test_a_guest_deselects_what_it_leaves_and_writes_it_down(tmp_path):
    """conftest.py: MW_MATRIX_ELSEWHERE deselects the matrix tests it names and writes each to the
    guest's results as "elsewhere"; the others stay."""
    out = tmp_path / "results.jsonl"
    tree = "tests/test_tree.py::test_whole_tree_is_followed_and_nothing_else"
    env = {**os.environ, "MW_MATRIX_RESULTS": str(out), "MW_MATRIX_ELSEWHERE": json.dumps({tree: "debian13-6.12"})}
    p = subprocess.run([sys.executable, "-m", "pytest", "-m", "matrix", "--collect-only", "-q", "-p",
                        "no:cacheprovider", "tests/test_tree.py", "tests/test_kernel_events.py"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    got = [ln for ln in p.stdout.splitlines() if "::" in ln]
    assert tree not in got and any("test_kernel_events.py" in t for t in got), got
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rows == [{"test": tree, "feature": rows[0]["feature"], "when": "collect", "outcome": km.ELSEWHERE,
                     "reason": "debian13-6.12", "seconds": 0}] and rows[0]["feature"], rows


def test_each_guests_command_fits_the_kernel_command_line(tmp_path):
    """vng passes the guest's command on the kernel command line (x86: 2048 bytes; 6.1 panicked at
    boot with the full plan inline, before any test, and the run waited out its timeout). The plan
    of what a guest leaves goes in a file; the command of every guest of a full run stays short."""
    plan = km.leave_plan(["debian12-6.1", "debian13-6.12", "debian11-5.10"])
    assert plan, "a full run shares tests out"
    for name, left in plan.items():
        out = tmp_path / name
        out.mkdir()
        env = {"MW_MATRIX_ELSEWHERE": json.dumps(left)}
        cmd = km.guest_command(str(out), km.SLOW["tcg"], km.ONLY.get(name, []), env)
        assert len(cmd) <= km.COMMAND_MAX and "MW_MATRIX_ELSEWHERE=" not in cmd, (name, len(cmd))
        assert json.loads((out / "elsewhere.json").read_text()) == left
        assert f"MW_MATRIX_ELSEWHERE_FILE={out / 'elsewhere.json'}" in cmd
    with pytest.raises(SystemExit, match="over"):
        km.guest_command(str(tmp_path), 20, ["tests/test_x.py::t" + "x" * 80] * 30, {})


def test_a_guest_reads_what_it_leaves_from_the_plan_file(tmp_path):
    out, plan = tmp_path / "results.jsonl", tmp_path / "elsewhere.json"
    tree = "tests/test_tree.py::test_whole_tree_is_followed_and_nothing_else"
    plan.write_text(json.dumps({tree: "debian13-6.12"}))
    env = {**os.environ, "MW_MATRIX_RESULTS": str(out), "MW_MATRIX_ELSEWHERE_FILE": str(plan)}
    env.pop("MW_MATRIX_ELSEWHERE", None)
    p = subprocess.run([sys.executable, "-m", "pytest", "-m", "matrix", "--collect-only", "-q", "-p",
                        "no:cacheprovider", "tests/test_tree.py"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, env=env)
    assert p.returncode in (0, 5), p.stdout + p.stderr
    assert tree not in p.stdout and json.loads(out.read_text().splitlines()[0])["outcome"] == km.ELSEWHERE


def test_the_test_command_refuses_to_run_without_root(tmp_path):
    """As another user every kernel test would skip and pytest would exit 0: scripts/test says so
    and stops before it installs or runs anything."""
    p = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash",
                        os.path.join(ROOT, "scripts", "test")], capture_output=True, text=True, timeout=60,
                       cwd=str(tmp_path))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "run it as root" in p.stderr and "prove nothing" in p.stderr and p.stdout == ""


@pytest.mark.parametrize("console", ["PANIC: early exception 0x06 IP 10:ffffffff85a1e1db error 0\n", "booting...\n"])
def test_a_guest_stuck_at_boot_is_killed_at_once_not_at_the_timeout(tmp_path, monkeypatch, console):
    """A stand-in for vng that prints a console and never starts the tests: killed when the console
    shows a panic, or when the boot deadline passes, rather than at the run's timeout."""
    import time
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vng").write_text(f"#!/bin/sh\nprintf '%s' {json.dumps(console)}\nexec sleep 600\n")
    (fake / "vng").chmod(0o755)
    monkeypatch.setattr(km, "VENV_BIN", str(fake))
    monkeypatch.setattr(km, "BOOT_DEADLINE", {"kvm": 8, "tcg": 8})
    t0 = time.monotonic()
    st = km.vng("image", str(tmp_path), "true", False, str(tmp_path / "console.log"), 300,
                started=str(tmp_path / "started"))
    took = time.monotonic() - t0
    assert st is None and took < 60, took
    if console.startswith("PANIC"):
        assert took < 8, "a panic is seen before the deadline"
