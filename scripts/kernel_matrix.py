#!/usr/bin/env python3
"""The kernel matrix: the tests marked `matrix` (pytest -m matrix) on the host's kernel and inside
Debian's stock kernels booted under QEMU with virtme-ng (this machine's filesystem shared read-only
over 9p, a writable result directory), each guest judged strictly against the expectations pinned
for its kernel (tests/kernels/NAME.yaml), then one table: kernel x feature -> pass, FAIL, skip (why).

    scripts/test-kernels                      # every kernel of scripts/kernels.py (+ host)
    scripts/test-kernels --kernels debian13-6.12 --tests tests/test_kernel_support.py
    scripts/kernel_matrix.py --judge .cache/kernel-matrix/debian12-6.1    # judge one finished guest
    scripts/kernel_matrix.py --table          # the last run's table again (the README's is this)

Results land in .cache/kernel-matrix/<kernel>/ (results.jsonl, pytest.log, doctor.json, console.log,
rc, started) and the table in .cache/kernel-matrix/table.md. KVM is used where a KVM guest really
boots (probed once per host boot); otherwise TCG, where everything runs 10-20x slower: the tests'
waits scale by MW_TEST_SLOW. Under TCG each guest has one vCPU (MW_MATRIX_TCG=single: two vCPUs on
one emulator thread): with no second vCPU, the emulator cannot race the guest kernel's live patching
of its own text (the `Oops: int3` panics seen with two vCPUs under multi-threaded TCG), and two
guests run side by side on two cores. Exit status 0 only if every guest's judge finds nothing.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import kernels as debian_kernels  # noqa: E402

OUT = os.path.join(ROOT, ".cache", "kernel-matrix")
EXPECT = os.path.join(ROOT, "tests", "kernels")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
KVM_PROBE_SECONDS = 60
SLOW = {"kvm": 3, "tcg": 20}
GUEST_CPUS = 2
# under TCG: "1cpu" (one vCPU: no other vCPU to race the kernel's live patching of its own text)
# or "single" (two vCPUs on one emulator thread)
TCG_MODE = os.environ.get("MW_MATRIX_TCG", "1cpu")
# kernels below the minimum (6.1) run only the test that they are refused with what they lack
ONLY = {"debian11-5.10": ["tests/test_kernel_support.py"]}
# per-test ceiling in a guest (pytest-timeout), beyond the tests' own scaled waits: a hung test
# fails with its stack instead of taking the whole guest's time
GUEST_TEST_TIMEOUT = 900


def guest_cpus(kvm: bool) -> int:
    return GUEST_CPUS if kvm or TCG_MODE == "single" else 1


def slots(kvm: bool) -> int:
    """How many guests run side by side: one host core per emulator thread (TCG), per vCPU (KVM)."""
    return max(1, (os.cpu_count() or 1) // (guest_cpus(kvm) if kvm else 1))


# a guest whose tests have not started by then is stuck at boot (seen: an early panic halts the
# guest, which then waits out the whole run's timeout); killed, and retried once (died_at_boot)
BOOT_DEADLINE = {"kvm": 180, "tcg": 600}
_PANIC = re.compile(r"Kernel panic - not syncing|PANIC: early exception|^\[[ 0-9.]+\] kernel BUG at", re.M)


def vng(image: str, rwdir: str, command: str, kvm: bool, log: str, timeout: float,
        started: str | None = None) -> int | None:
    """Boot image, run command in it; returns vng's status, None on timeout (the guest is killed).
    With started (a file the command writes once its tests begin): a guest that panics, or has not
    written it within BOOT_DEADLINE, is killed at once rather than at the timeout."""
    cpus = guest_cpus(kvm)
    argv = [os.path.join(VENV_BIN, "vng"), "-r", image, "--force-9p", "--rwdir", rwdir,
            "--memory", "4G", "--cpus", str(cpus), "--verbose", "--exec", command]
    if not kvm:
        argv[3:3] = ["--disable-kvm"]
        if TCG_MODE == "single":
            # one emulator thread for all the guest's vCPUs (it then holds QEMU's big lock while
            # the guest runs, so 9p is served only between its time slices: slow)
            argv[4:4] = ["--qemu-opts=-accel tcg,thread=single"]
    env = dict(os.environ, PATH=VENV_BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                             cwd=ROOT, start_new_session=True)
        end, boot_end = time.monotonic() + timeout, time.monotonic() + BOOT_DEADLINE["kvm" if kvm else "tcg"]
        while True:
            try:
                return p.wait(timeout=min(5.0, max(0.1, end - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            stuck = False
            if started is not None and not os.path.exists(started):
                stuck = now > boot_end or bool(_PANIC.search(_read(log) or ""))
            if now >= end or stuck:
                os.killpg(p.pid, signal.SIGKILL)  # the session we started: vng and its QEMU
                p.wait()
                return None


def kvm_works(image: str) -> bool:
    """Does a KVM guest boot and run a command here? (Seen here: /dev/kvm exists, the guest hangs.)"""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    cache = os.path.join(OUT, "kvm-probe.json")
    try:
        with open(cache) as f:
            c = json.load(f)
        if c["boot_id"] == boot:
            return c["ok"]
    except (OSError, ValueError, KeyError):
        pass
    rw = os.path.join(OUT, "kvm-probe")
    shutil.rmtree(rw, ignore_errors=True)
    os.makedirs(rw)
    vng(image, rw, f"echo ok > {rw}/ok", True, os.path.join(rw, "console.log"), KVM_PROBE_SECONDS)
    ok = os.path.exists(os.path.join(rw, "ok"))
    with open(cache, "w") as f:
        json.dump({"boot_id": boot, "ok": ok}, f)
    return ok


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


# vng hands the guest its command on the kernel command line, which x86 caps at 2048 bytes: 6.1
# panics at boot past it (fortify, in start_kernel), before any test. Long values go in files.
COMMAND_MAX = 1500


def guest_command(out: str, slow: int, tests: list[str], env: dict[str, str]) -> str:
    script = os.path.join(ROOT, "scripts", "guest-tests")
    env = dict(env)
    plan = env.pop("MW_MATRIX_ELSEWHERE", None)
    if plan is not None:  # what this guest leaves to another: a file in its output directory
        path = os.path.join(out, "elsewhere.json")
        with open(path, "w") as f:
            f.write(plan)
        env["MW_MATRIX_ELSEWHERE_FILE"] = path
    extra = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    # a session of its own, no terminal: the guest's console is a tty, and `run` leaves a SIGINT
    # to the terminal when it is the foreground of one (the tests send theirs by pid)
    cmd = (f"MW_TEST_SLOW={slow} MW_TEST_TIMEOUT={GUEST_TEST_TIMEOUT} {extra} "
           f"setsid -w {script} {out} {' '.join(tests)} < /dev/null")
    if len(cmd) > COMMAND_MAX:
        raise SystemExit(f"kernel-matrix: the guest's command is {len(cmd)} bytes, over {COMMAND_MAX}: the kernel "
                         "command line it travels on would be cut or panic the guest; pass fewer --tests")
    return cmd


def attempt(name: str, image: str | None, kvm: bool, tests: list[str], timeout: float,
            env: dict[str, str], full: bool) -> dict:
    """One boot of one kernel (or the host, natively): its output directory, filled."""
    out = os.path.join(OUT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    accel = "native" if image is None else "kvm" if kvm else "tcg"
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"name": name, "accel": accel, "selection": tests, "full": full, "guest_env": env}, f)
    cmd = guest_command(out, 1 if image is None else SLOW[accel], tests, env)
    t0 = time.monotonic()
    if image is None:
        try:
            status = subprocess.run(["bash", "-c", cmd], cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            status = None
    else:
        status = vng(image, out, cmd, kvm, os.path.join(out, "console.log"), timeout,
                     started=os.path.join(out, "started"))
    with open(os.path.join(out, "vng.json"), "w") as f:
        json.dump({"status": status, "timed_out": status is None, "seconds": round(time.monotonic() - t0)}, f)
    return load(out)


def load(out: str) -> dict:
    """What a finished guest's directory says."""
    run = json.loads(_read(os.path.join(out, "run.json")) or "{}")
    vm = json.loads(_read(os.path.join(out, "vng.json")) or "{}")
    res = {"name": run.get("name") or os.path.basename(out.rstrip("/")), "dir": out,
           "accel": run.get("accel", "?"), "selection": run.get("selection", []),
           "full": run.get("full", not run.get("selection")),
           "guest_env": run.get("guest_env", {}),
           "seconds": vm.get("seconds"), "timed_out": vm.get("timed_out", False), "status": vm.get("status"),
           "kernel": (_read(os.path.join(out, "kernel")) or "").strip() or None,
           "rc": (_read(os.path.join(out, "rc")) or "").strip() or None,
           "started": os.path.exists(os.path.join(out, "started")),
           "retry": json.loads(_read(os.path.join(out, "retry.json")) or "null")}
    res["tests"] = [json.loads(line) for line in (_read(os.path.join(out, "results.jsonl")) or "").splitlines()
                    if line.strip()]
    try:
        res["doctor"] = json.loads(_read(os.path.join(out, "doctor.json")) or "")
    except ValueError:
        res["doctor"] = None
    return res


# what a guest's console shows when its kernel, not a test, went wrong: any of these fails the guest
KERNEL_TROUBLE = [
    ("panic", re.compile(r"Kernel panic")),
    ("BUG", re.compile(r"\bBUG:")),
    ("oops", re.compile(r"\bOops\b")),
    ("general protection fault", re.compile(r"general protection fault")),
    ("kernel warning", re.compile(r"\bWARNING: CPU: \d+ PID: \d+")),
    ("sanitizer report", re.compile(r"\b(UBSAN|KASAN|KFENCE|KCSAN): ")),
    ("out of memory", re.compile(r"Out of memory|oom-kill")),
    ("RCU stall", re.compile(r"rcu_\w+ (self-)?detected stall|rcu: INFO: \w+ detected stall")),
    ("hung task", re.compile(r"INFO: task \S+ blocked for more than")),
    ("BPF verifier bug", re.compile(r"verifier bug|backtracking bug|verifier internal error")),
    ("BPF JIT trouble", re.compile(r"bpf_jit\w*: |BPF JIT .*(fail|error)", re.I)),
]


def console_trouble(text: str) -> list[str]:
    """The kernel's own reports in a console log, each as 'kind: the line'."""
    found = []
    for line in text.splitlines():
        for kind, rx in KERNEL_TROUBLE:
            if rx.search(line):
                found.append(f"{kind}: {line.strip()[:200]}")
                break
    return found


def expectations(name: str, path: str | None = None) -> dict | None:
    import yaml
    path = path or os.path.join(EXPECT, f"{name}.yaml")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except FileNotFoundError:
        return None
    doc["_path"] = os.path.relpath(path, ROOT) if path.startswith(ROOT) else path
    return doc


def _tests_by_id(tests: list[dict]) -> dict[str, dict]:
    """One outcome per test id: a failure in any phase wins over a pass, a skip over nothing.
    A test left to another guest (outcome "elsewhere", see leave_to) is kept as such."""
    out: dict[str, dict] = {}
    rank = {"failed": 3, "skipped": 2, "passed": 1}
    for t in tests:
        cur = out.get(t["test"])
        if cur is None or rank.get(t["outcome"], 0) > rank.get(cur["outcome"], 0):
            out[t["test"]] = t
    return out


def _match(name: str, glob: str) -> bool:
    """Shell-style `*` and `?` only: test ids carry brackets (`[fexit]`), which stay literal."""
    rx = re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(rx, name) is not None


def _selected(test_glob: str, selection: list[str]) -> bool:
    """Would this pytest selection (paths or node ids; empty: everything) include test_glob's tests?
    A glob over every file (no `::`) is only decided in a full run."""
    if not selection:
        return True
    if "::" not in test_glob:
        return False
    file = test_glob.split("::")[0]
    for s in selection:
        s = s.rstrip("/")
        if "::" in s:
            if _match(s, test_glob):
                return True
        elif s == "tests" or file == s or file.startswith(s + "/"):
            return True
    return False


def _holds(entry: dict, chosen: dict) -> bool:
    """An expectation entry's `when`: the mechanisms doctor must have chosen for it to apply."""
    return all(chosen.get(k) == v for k, v in (entry.get("when") or {}).items())


def judge(r: dict, expect: dict | None) -> list[str]:
    """Why this finished guest must not be called a pass (empty: it passes). Every reason is one line."""
    bad: list[str] = []
    if expect is None:
        return [f"no expectations for {r['name']} (tests/kernels/{r['name']}.yaml): a kernel nobody pinned "
                "proves nothing"]
    where = expect["_path"]
    if r["timed_out"]:
        bad.append(f"the guest ran out of time after {r['seconds']} s")
    if r["rc"] is None:
        bad.append("no pytest exit status: the guest ended " +
                   ("during the tests" if r["started"] else "before the tests started (at boot)"))
    elif r["rc"] != "0":
        meaning = {"1": "tests failed", "2": "interrupted", "3": "pytest internal error", "4": "usage error",
                   "5": "no tests collected"}.get(r["rc"], "killed by a signal" if r["rc"].isdigit()
                                                  and int(r["rc"]) > 128 else "?")
        bad.append(f"pytest exited with {r['rc']} ({meaning})")
    release = expect.get("release")
    if release and r["kernel"] and not _match(r["kernel"], release):
        bad.append(f"kernel {r['kernel']} is not the pinned {release} ({where})")
    tests = {k: t for k, t in _tests_by_id(r["tests"]).items() if t["outcome"] != ELSEWHERE}
    if r["full"] and len(tests) < expect.get("min_tests", 1):
        bad.append(f"{len(tests)} tests ran, {where} expects at least {expect.get('min_tests')}")
    for t in tests.values():
        if t["outcome"] == "failed":
            bad.append(f"FAILED {t['test']} ({t['when']}): {t['reason'][:300]}")
    chosen = (r["doctor"] or {}).get("chosen") or {}
    if r["doctor"] is None and r["started"]:
        bad.append("no doctor.json: what the kernel chose is unknown")
    if "object_loads" in expect and r["doctor"] is not None and bool(r["doctor"].get("ok")) != expect["object_loads"]:
        bad.append(f"the object {'does not load' if expect['object_loads'] else 'loads'} here; {where} says "
                   f"object_loads: {expect['object_loads']}")
    for key, want in (expect.get("mechanisms") or {}).items():
        if r["doctor"] is not None and chosen.get(key) != want:
            bad.append(f"mechanism {key} is {chosen.get(key)!r}, pinned {want!r} ({where}): a quiet fallback")
    skips = expect.get("may_skip") or []
    musts = [w if isinstance(w, dict) else {"test": w} for w in expect.get("must_pass") or []]
    musts = [w["test"] for w in musts if _holds(w, chosen)]
    for t in tests.values():
        if t["outcome"] != "skipped" or any(_match(t["test"], w) for w in musts):
            continue  # a must-pass that skipped is said below
        ok = [s for s in skips if _match(t["test"], s["test"])
              and _match(t["reason"], s.get("reason", "*"))
              and _holds(s, chosen)]
        if not ok:
            bad.append(f"SKIPPED {t['test']} ({t['reason'][:160]}): {where} does not allow this skip here")
    for want in musts:
        if not _selected(want, r["selection"]):
            continue
        hits = [t for tid, t in tests.items() if _match(tid, want)]
        left = [t for t in r["tests"] if t["outcome"] == ELSEWHERE and _match(t["test"], want)]
        if not hits and not left:
            bad.append(f"did not run: {want} ({where} says it must pass here)")
        for t in hits:
            if t["outcome"] == "skipped":
                bad.append(f"{t['test']} must pass here ({where}) but was skipped: {t['reason'][:160]}")
    console = _read(os.path.join(r["dir"], "console.log"))
    if console is not None:
        for line in console_trouble(console):
            bad.append(f"console: {line}")
    retry = r["retry"]
    if retry:
        first = load(retry["first_attempt"]) if os.path.isdir(retry["first_attempt"]) else None
        if first is None:
            bad.append(f"retried ({retry['reason']}) and its first attempt's logs are gone")
        else:
            failed = [t["test"] for t in first["tests"] if t["outcome"] == "failed"]
            if failed:
                bad.append(f"retried, and the first attempt had {len(failed)} failed: {', '.join(failed[:5])}")
            if first["started"]:
                bad.append("retried after the tests had started: a crash during the tests is a failure")
    # the same reason twice (a must-pass that also failed) is said once
    return list(dict.fromkeys(bad))


ELSEWHERE = "elsewhere"


def leave_plan(names: list[str]) -> dict[str, dict[str, str]]:
    """Which matrix tests each guest of this run leaves to another: {guest: {test glob: the other guest}}.
    A guest's `leave_to` (tests/kernels/NAME.yaml) names tests whose kernel side is the same programs on
    the same hooks in the other guest; they run there only, and only when that guest is in this run
    too (a guest run alone runs everything). The guest's conftest deselects them (MW_MATRIX_ELSEWHERE)
    and writes each as outcome "elsewhere"; covered() checks that the other guest ran it."""
    plan: dict[str, dict[str, str]] = {}
    for name in names:
        for other, globs in ((expectations(name) or {}).get("leave_to") or {}).items():
            if other in names and other != name:
                plan.setdefault(name, {}).update({g: other for g in globs})
    return plan


def covered(results: list[dict]) -> None:
    """Each test a guest left to another must have run there (not left back, not missing): else a
    reason in the leaving guest's verdict. Run after every guest has finished."""
    by_name = {r["name"]: r for r in results}
    for r in results:
        for t in r["tests"]:
            if t["outcome"] != ELSEWHERE:
                continue
            other = by_name.get(t["reason"])
            ran = other and _tests_by_id(other["tests"]).get(t["test"])
            if not ran or ran["outcome"] == ELSEWHERE:
                r["verdict"].append(f"left {t['test']} to {t['reason']}, which did not run it")


def cell(tests: list[dict]) -> str:
    if not tests:
        return "not run"
    ran = [t for t in tests if t["outcome"] != ELSEWHERE]
    if not ran:
        return "in " + " and ".join(sorted({t["reason"] for t in tests}))
    tests = ran
    if any(t["outcome"] == "failed" for t in tests):
        return "**FAIL**"
    if all(t["outcome"] == "skipped" for t in tests):
        why = tests[0]["reason"].replace("Skipped: ", "").split(":")[0]
        if why.count("(") > why.count(")"):  # "no BPF LSM on this kernel (load" -> its head
            why = why[:why.rindex("(")].rstrip()
        return "skip: " + why[:60]
    return "pass"


MECH_ROWS = ["hooks", "files", "create", "exec", "network", "unix", "tls"]


def _used(r: dict, key: str) -> str:
    if not r["doctor"]:
        return "?"
    if not r["doctor"].get("ok"):
        return "none (refused)"
    return (r["doctor"].get("chosen") or {}).get(key) or "none"


def header(r: dict) -> str:
    h = f"{r['name']} ({r.get('kernel') or '?'}, {r['accel']})"
    return h + (" RETRIED" if r.get("retry") else "")


def render(results: list[dict]) -> str:
    features: list[str] = []
    for r in results:
        for t in r["tests"]:
            f = t["feature"] or t["test"]
            if f not in features:
                features.append(f)
    head = ["feature"] + [header(r) for r in results]
    rows = [head, ["---"] * len(head)]
    for f in features:
        rows.append([f] + [cell([t for t in r["tests"] if (t["feature"] or t["test"]) == f]) for r in results])
    for key in MECH_ROWS:
        rows.append([f"uses: {key}"] + [_used(r, key) for r in results])
    rows.append(["time"] + [f"{r['seconds']} s" + (" (timed out)" if r["timed_out"] else "") for r in results])
    rows.append(["judge"] + ["ok" if not r["verdict"] else f"**{len(r['verdict'])} reasons**" for r in results])
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    notes = [f"- {r['name']} was booted twice: {r['retry']['reason']} (first attempt: {r['retry']['first_attempt']})"
             for r in results if r.get("retry")]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def died_at_boot(r: dict) -> str | None:
    """A guest that ended before its tests started (no result, no `started`): why, in one line, or None."""
    if r["accel"] == "native" or r["started"] or r["rc"] is not None:
        return None
    console = _read(os.path.join(r["dir"], "console.log")) or ""
    trouble = console_trouble(console)
    tail = [ln.strip() for ln in console.splitlines() if ln.strip()][-3:]
    return ("timed out at boot" if r["timed_out"] else f"vng exited with {r['status']}") + \
        f" before the tests started; kernel: {trouble[:3] or 'said nothing'}; console tail: {' / '.join(tail)[:300]}"


def run_kernel(name: str, image: str | None, kvm: bool, tests: list[str], timeout: float, env: dict[str, str],
               full: bool, say) -> dict:
    say(f"kernel-matrix: {name} ...")
    first = os.path.join(OUT, name + ".attempt1")
    shutil.rmtree(first, ignore_errors=True)   # an earlier run's
    r = attempt(name, image, kvm, tests, timeout, env, full)
    why = died_at_boot(r)
    if why:
        # a boot that never reached the tests (the emulator, or the kernel at boot): once more, said out
        # loud, its logs kept. A guest that dies once its tests have started is a failure, never retried.
        shutil.copytree(os.path.join(OUT, name), first)
        say(f"kernel-matrix: {name}: RETRY: the first boot {why}; booting once more (its logs: {first})")
        r = attempt(name, image, kvm, tests, timeout, env, full)
        with open(os.path.join(r["dir"], "retry.json"), "w") as f:
            json.dump({"reason": why, "first_attempt": first}, f)
        r = load(r["dir"])
    return r


def summary(r: dict) -> str:
    n = {o: sum(t["outcome"] == o for t in _tests_by_id(r["tests"]).values())
         for o in ("passed", "failed", "skipped", ELSEWHERE)}
    return (f"kernel-matrix: {r['name']} ({r.get('kernel')}, {r['accel']}): {n['passed']} passed, {n['failed']} "
            f"failed, {n['skipped']} skipped" + (f", {n[ELSEWHERE]} left to another guest" if n[ELSEWHERE] else "")
            + f" in {r['seconds']} s" + (" TIMED OUT" if r["timed_out"] else "")
            + (" (RETRIED)" if r.get("retry") else ""))


def report(results: list[dict]) -> int:
    table = render(results)
    with open(os.path.join(OUT, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table)
    bad = [r for r in results if r["verdict"]]
    for r in bad:
        print(f"kernel-matrix: {r['name']} FAILS its judge ({len(r['verdict'])}):", file=sys.stderr)
        for reason in r["verdict"]:
            print(f"  - {reason}", file=sys.stderr)
    if bad:
        print(f"kernel-matrix: failed on {', '.join(r['name'] for r in bad)} (logs in {OUT}/<kernel>/)",
              file=sys.stderr)
        return 1
    return 0


def boots(guests: list[tuple[str, str]], kvm: bool, n: int, say, doctor: bool = False) -> int:
    """Boot each kernel n times in a row (two side by side), each running a trivial command (with
    doctor: `mcpwitness doctor`, whose probes switch static keys: the code patching that raced with
    two vCPUs under multi-threaded TCG), and count the boots whose console shows trouble or whose
    command never ran. Prints one line per kernel."""
    def one(name, image):
        bad, took = [], []
        for i in range(n):
            rw = os.path.join(OUT, "boots", name, str(i))
            shutil.rmtree(rw, ignore_errors=True)
            os.makedirs(rw)
            cmd = (f"uname -r > {rw}/kernel; " + (f"{VENV_BIN}/mcpwitness doctor --json > {rw}/doctor.json 2>&1; "
                                                  if doctor else "") + f"echo ok > {rw}/ok")
            t0 = time.monotonic()
            st = vng(image, rw, cmd, kvm, os.path.join(rw, "console.log"), 600)
            took.append(time.monotonic() - t0)
            trouble = console_trouble(_read(os.path.join(rw, "console.log")) or "")
            if trouble or not os.path.exists(os.path.join(rw, "ok")) or st is None:
                bad.append(f"boot {i}: " + (trouble[0] if trouble else "timed out" if st is None else
                                            f"no result (vng {st})"))
        took.sort()
        say(f"kernel-matrix: boots: {name}: {n - len(bad)} of {n} clean, median {took[len(took) // 2]:.0f} s, "
            f"max {took[-1]:.0f} s" + "".join(f"\n  {b}" for b in bad))
        return len(bad)
    with concurrent.futures.ThreadPoolExecutor(max_workers=slots(kvm)) as pool:
        return 1 if sum(pool.map(lambda g: one(*g), guests)) else 0


MARK_BEGIN, MARK_END = "<!-- matrix-table: begin", "<!-- matrix-table: end -->"


def update_readme(path: str, table: str, results: list[dict]) -> int:
    """The README's table is this output, between its markers, with the run it came from."""
    with open(path) as f:
        text = f.read()
    if MARK_BEGIN not in text or MARK_END not in text:
        print(f"kernel-matrix: {path} has no {MARK_BEGIN} ... {MARK_END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    kernels = ", ".join(f"{r['name']} {r.get('kernel') or '?'}" for r in results)
    block = (f"{MARK_BEGIN} (scripts/kernel_matrix.py --table --readme README.md; {kernels}) -->\n"
             f"{table}\n{MARK_END}")
    with open(path, "w") as f:
        f.write(head + block + tail)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", help="comma-separated names (host, " + ", ".join(debian_kernels.FAMILIES) + ")")
    ap.add_argument("--tests", nargs="*", default=[], help="pytest paths or node ids (default: all marked matrix)")
    ap.add_argument("--timeout", type=float, default=50, help="minutes per kernel (default 50)")
    ap.add_argument("--judge", metavar="DIR", help="judge one finished guest's directory and exit (0: it passes)")
    ap.add_argument("--expect", metavar="FILE", help="with --judge: these expectations (default: tests/kernels/NAME.yaml)")
    ap.add_argument("--host-ran", action="store_true",
                    help="the host's matrix tests already ran in the native suite (scripts/test): judge "
                         f"{OUT}/host instead of running them again")
    ap.add_argument("--guest-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the tests in each guest (e.g. MCPWITNESS_TEST_NO_LSM=1)")
    ap.add_argument("--table", action="store_true", help="print the last run's table and exit")
    ap.add_argument("--boots-doctor", action="store_true", help="with --boots: run doctor in each boot")
    ap.add_argument("--results", metavar="FILE", help="with --table: this run's results.json")
    ap.add_argument("--readme", metavar="FILE",
                    help="with --table: write the table into FILE between its matrix-table markers")
    ap.add_argument("--boots", type=int, metavar="N",
                    help="boot each guest kernel N times in a row running doctor, count the boots with trouble")
    a = ap.parse_args()
    if a.judge:
        r = load(os.path.abspath(a.judge))
        reasons = judge(r, expectations(r["name"], a.expect))
        print(summary(r))
        for reason in reasons:
            print(f"  - {reason}")
        print(f"judge: {r['name']}: " + ("pass" if not reasons else f"FAIL ({len(reasons)} reasons)"))
        return 1 if reasons else 0
    if a.table:
        with open(a.results or os.path.join(OUT, "results.json")) as f:
            results = json.load(f)
        table = render(results)
        if a.readme:
            return update_readme(a.readme, table, results)
        print(table)
        return 0
    env = dict(kv.split("=", 1) for kv in a.guest_env)
    os.makedirs(OUT, exist_ok=True)
    want = a.kernels.split(",") if a.kernels else None
    found = debian_kernels.kernels()
    everything = ["host"] + [n for n, _ in found]
    guests = [(n, img) for n, img in found if not want or n in want]
    # the kernels asked for, or by default the required ones, must be there (5.10 may leave the archive)
    missing = (set(want) if want else debian_kernels.REQUIRED) - {n for n, _ in found} - {"host"}
    if missing:
        print(f"kernel-matrix: kernels not available: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    kvm = kvm_works(guests[0][1]) if guests else False
    if guests:
        how = ("TCG, one vCPU per guest, two side by side" if TCG_MODE == "1cpu" else
               "TCG, single-threaded") + " (no working KVM here)"
        print(f"kernel-matrix: guests under {'KVM' if kvm else how}", flush=True)

    def say(msg):
        print(msg, flush=True)

    if a.boots:
        return boots(guests, kvm, a.boots, say, a.boots_doctor)

    results = []
    if a.host_ran:
        r = load(os.path.join(OUT, "host"))
        r["verdict"] = judge(r, expectations("host"))
        say(summary(r) + " (in the native suite)")
        results.append(r)
    elif not want or "host" in want:
        r = run_kernel("host", None, False, a.tests, a.timeout * 60, env, not a.tests, say)
        r["verdict"] = judge(r, expectations("host"))
        say(summary(r))
        results.append(r)
    # guests side by side: under TCG each takes one host core; the short
    # below-the-minimum run last, in whichever slot frees first
    guests.sort(key=lambda g: g[0] in ONLY)
    order = {n: i for i, (n, _) in enumerate(found)}
    plan = {} if a.tests else leave_plan([n for n, _ in guests])
    with concurrent.futures.ThreadPoolExecutor(max_workers=slots(kvm)) as pool:
        futs = [pool.submit(run_kernel, n, img, kvm, a.tests or ONLY.get(n, []), a.timeout * 60,
                            {**env, "MW_MATRIX_ELSEWHERE": json.dumps(plan[n])} if n in plan else env,
                            not a.tests, say)
                for n, img in guests]
        for fut in concurrent.futures.as_completed(futs):
            r = fut.result()
            r["verdict"] = judge(r, expectations(r["name"]))
            say(summary(r) + ("" if not r["verdict"] else f": judge FAILS ({len(r['verdict'])} reasons)"))
            results.append(r)
    covered(results)
    results.sort(key=lambda r: (r["name"] != "host", order.get(r["name"], 0)))
    rc = report(results)
    ran = {r["name"] for r in results}
    left = [n for n in everything if n not in ran]
    if left:
        print(f"kernel-matrix: NOT RUN: {', '.join(left)} (the full matrix is `scripts/test-kernels` "
              "with no --kernels)", file=sys.stderr)
    if a.tests:
        print(f"kernel-matrix: only {' '.join(a.tests)} ran: the test-count expectations were not checked",
              file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
