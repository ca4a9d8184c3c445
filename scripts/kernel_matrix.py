#!/usr/bin/env python3
"""The kernel matrix: the tests marked `matrix` (pytest -m matrix) on the host's kernel and inside
Debian's stock kernels booted under QEMU with virtme-ng (this machine's filesystem shared read-only
over 9p, a writable result directory), then one table: kernel x feature -> pass, FAIL, skip (why).

    scripts/test-kernels                      # host + every kernel of scripts/kernels.py
    scripts/test-kernels --kernels debian13-6.12 --tests tests/test_kernel_support.py

Results land in .cache/kernel-matrix/<kernel>/ (results.jsonl, pytest.log, doctor.json, console.log)
and the table in .cache/kernel-matrix/table.md. KVM is used where a KVM guest really boots (probed
once per host boot); otherwise TCG, where everything runs 10-20x slower: the tests' waits scale by
MW_TEST_SLOW. Exit status 0 only if every kernel ran to the end and no test failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import kernels as debian_kernels  # noqa: E402

OUT = os.path.join(ROOT, ".cache", "kernel-matrix")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
KVM_PROBE_SECONDS = 60
SLOW = {"kvm": 3, "tcg": 20}
# kernels below the minimum (6.1) run only the test that they are refused with what they lack
ONLY = {"debian11-5.10": ["tests/test_kernel_support.py"]}


def vng(image: str, rwdir: str, command: str, kvm: bool, log: str, timeout: float) -> int | None:
    """Boot image, run command in it; returns vng's status, None on timeout (the guest is killed)."""
    argv = [os.path.join(VENV_BIN, "vng"), "-r", image, "--force-9p", "--rwdir", rwdir,
            "--memory", "4G", "--cpus", str(min(os.cpu_count() or 1, 2)), "--verbose", "--exec", command]
    if not kvm:
        argv.insert(3, "--disable-kvm")
    env = dict(os.environ, PATH=VENV_BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                             cwd=ROOT, start_new_session=True)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
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


def run_kernel(name: str, image: str | None, kvm: bool, tests: list[str], timeout: float) -> dict:
    out = os.path.join(OUT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    accel = "native" if image is None else "kvm" if kvm else "tcg"
    slow = 1 if image is None else SLOW[accel]
    script = os.path.join(ROOT, "scripts", "guest-tests")
    # a session of its own, no terminal: the guest's console is a tty, and `run` leaves a SIGINT
    # to the terminal when it is the foreground of one (the tests send theirs by pid)
    cmd = f"MW_TEST_SLOW={slow} setsid -w {script} {out} {' '.join(tests)} < /dev/null"
    t0 = time.monotonic()
    if image is None:
        status = subprocess.run(["bash", "-c", cmd], cwd=ROOT, timeout=timeout).returncode
    else:
        status = vng(image, out, cmd, kvm, os.path.join(out, "console.log"), timeout)
    took = time.monotonic() - t0
    res = {"name": name, "accel": accel, "seconds": round(took), "timed_out": status is None, "status": status}
    for key in ("kernel", "rc"):
        try:
            res[key] = open(os.path.join(out, key)).read().strip()
        except OSError:
            res[key] = None
    res["tests"] = []
    try:
        with open(os.path.join(out, "results.jsonl")) as f:
            res["tests"] = [json.loads(line) for line in f if line.strip()]
    except OSError:
        pass
    try:
        with open(os.path.join(out, "doctor.json")) as f:
            res["doctor"] = json.load(f)
    except (OSError, ValueError):
        res["doctor"] = None
    return res


# what a guest's console shows when its kernel, not a test, failed
KERNEL_TROUBLE = ("Kernel panic", "BUG:", "Oops", "general protection fault", "Out of memory", "rcu_sched self-detected")


def emulator_trouble(name: str) -> bool:
    """The guest's kernel hit a breakpoint (int3) left by code patching in flight (jump labels,
    text_poke) under TCG: QEMU's software emulation of cross-modifying code, not the kernel or
    our programs (seen once: 6.12, perf_event_open switching a static key while the host was
    loaded). Worth a second boot; anything else a kernel reports stays a failure."""
    try:
        with open(os.path.join(OUT, name, "console.log"), errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    return "Oops: int3" in text and ("jump_label" in text or "text_poke" in text)


def died(r: dict) -> str | None:
    """Why a guest ended without a result (no rc): its console's last words, or None if it has a result."""
    if r["rc"] is not None or r["timed_out"] or r["accel"] == "native":
        return None
    try:
        with open(os.path.join(OUT, r["name"], "console.log"), errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    trouble = [ln for ln in lines if any(k in ln for k in KERNEL_TROUBLE)]
    tail = "\n    ".join(lines[-12:])
    return (f"vng exited with {r['status']}, no result; kernel messages: {trouble[:5] or 'none'}; "
            f"console tail:\n    {tail}")


def cell(tests: list[dict]) -> str:
    if not tests:
        return "not run"
    if any(t["outcome"] == "failed" for t in tests):
        return "**FAIL**"
    if all(t["outcome"] == "skipped" for t in tests):
        why = tests[0]["reason"].replace("Skipped: ", "").split(":")[0]
        if why.count("(") > why.count(")"):  # "no BPF LSM on this kernel (load" -> its head
            why = why[:why.rindex("(")].rstrip()
        return "skip: " + why[:60]
    return "pass"


MECH_ROWS = ["file opens", "payload", "file enforcement", "exec enforcement", "network enforcement", "TLS probes"]


def mechanisms(doc: dict | None) -> dict[str, str]:
    if not doc:
        return {}
    if not doc.get("ok"):  # the object does not load here: nothing is used
        return dict.fromkeys(MECH_ROWS, "none (refused)")
    feats = {f["feature"]: f for f in doc.get("features", [])}

    def used(prefix):
        f = next((v for k, v in feats.items() if k.startswith(prefix)), None)
        return f["mechanism"].split(" (")[0] if f and f["status"] != "unavailable" else "none"
    return {"file enforcement": used("file enforcement"), "exec enforcement": used("exec enforcement"),
            "network enforcement": used("network enforcement"), "TLS probes": used("TLS"),
            "file opens": used("file opens"), "payload": used("MCP payload")}


def render(results: list[dict]) -> str:
    features: list[str] = []
    for r in results:
        for t in r["tests"]:
            f = t["feature"] or t["test"]
            if f not in features:
                features.append(f)
    head = ["feature"] + [f"{r['name']} ({r.get('kernel') or '?'}, {r['accel']})" for r in results]
    rows = [head, ["---"] * len(head)]
    for f in features:
        rows.append([f] + [cell([t for t in r["tests"] if (t["feature"] or t["test"]) == f]) for r in results])
    mech = [mechanisms(r["doctor"]) for r in results]
    for key in MECH_ROWS:
        rows.append([f"uses: {key}"] + [m.get(key, "?") for m in mech])
    rows.append(["time"] + [f"{r['seconds']} s" + (" (timed out)" if r["timed_out"] else "") for r in results])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", help="comma-separated names (host, " + ", ".join(debian_kernels.FAMILIES) + ")")
    ap.add_argument("--tests", nargs="*", default=[], help="pytest paths or node ids (default: all marked matrix)")
    ap.add_argument("--timeout", type=float, default=30, help="minutes per kernel (default 30)")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    want = a.kernels.split(",") if a.kernels else None
    todo: list[tuple[str, str | None]] = []
    if not want or "host" in want:
        todo.append(("host", None))
    found = debian_kernels.kernels()
    for name, image in found:
        if not want or name in want:
            todo.append((name, image))
    # the kernels asked for, or by default the required ones, must be there (5.10 may leave the archive)
    missing = (set(want) if want else debian_kernels.REQUIRED) - {n for n, _ in found} - {"host"}
    if missing:
        print(f"kernel-matrix: kernels not available: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    guests = [img for _, img in todo if img]
    kvm = kvm_works(guests[0]) if guests else False
    if guests:
        print(f"kernel-matrix: guests under {'KVM' if kvm else 'TCG (software emulation: no working KVM here)'}",
              flush=True)
    results = []
    for name, image in todo:
        print(f"kernel-matrix: {name} ...", flush=True)
        r = run_kernel(name, image, kvm, a.tests or ONLY.get(name, []), a.timeout * 60)
        why = died(r)
        if why:
            # seen once in CI (6.12 under TCG): the guest ended mid-run, no test had failed. A guest whose
            # kernel reported trouble is a failure; one that just went away is booted once more.
            print(f"kernel-matrix: {name}: the guest ended without a result: {why}", flush=True)
            if not any(k in why for k in KERNEL_TROUBLE) or (r["accel"] == "tcg" and emulator_trouble(name)):
                first = os.path.join(OUT, name + ".died")
                shutil.rmtree(first, ignore_errors=True)
                shutil.copytree(os.path.join(OUT, name), first)
                print(f"kernel-matrix: {name}: once more (the first attempt's logs: {first})", flush=True)
                r = run_kernel(name, image, kvm, a.tests or ONLY.get(name, []), a.timeout * 60)
                r["retried"] = why
        n = {o: sum(t["outcome"] == o for t in r["tests"]) for o in ("passed", "failed", "skipped")}
        print(f"kernel-matrix: {name} ({r.get('kernel')}, {r['accel']}): {n['passed']} passed, {n['failed']} failed, "
              f"{n['skipped']} skipped in {r['seconds']} s" + (" TIMED OUT" if r["timed_out"] else ""), flush=True)
        for t in r["tests"]:
            if t["outcome"] == "failed":
                print(f"  FAILED {t['test']}: {t['reason']}", flush=True)
        results.append(r)
    table = render(results)
    with open(os.path.join(OUT, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table)
    bad = [r["name"] for r in results if r["timed_out"] or r["rc"] is None or
           any(t["outcome"] == "failed" for t in r["tests"]) or not r["tests"]]
    if bad:
        print(f"kernel-matrix: failed on {', '.join(bad)} (logs in {OUT}/<kernel>/)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
