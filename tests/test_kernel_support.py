"""One BPF object for every kernel from the stated minimum up: on the running
kernel every program is attached or left out for a stated reason, and none is
refused. scripts/test-kernels runs these in Debian 12's 6.1 (where the object
once failed on a 6.2+ kfunc) and Debian 13's 6.12 (whose verifier once refused
cgroup/connect_unix)."""
import subprocess

import pytest
from conftest import HOOK_SETS

from mcpwitness.kernel.loader import SYSCALLS, Kernel, LoadOptions, fentry_works, refused_program
from mcpwitness.kernel.probes import PROBES, run_probe

LABELS = {label: (prog, how) for prog, label, how in PROBES}


def have(label: str) -> bool:
    return run_probe(*LABELS[label]).ok


def below_minimum_skips():
    if kernel_version() < MINIMUM:
        pytest.skip(f"below the minimum ({MINIMUM[0]}.{MINIMUM[1]}): refused, tested below")


def check_programs(k: Kernel) -> None:
    assert k.refused == {}, f"programs this kernel refused: {k.refused}"
    for name, sec in k.programs.items():
        if name in k.skipped:
            assert k.skipped[name].strip(), name
        else:
            assert not sec.startswith(("uprobe", "uretprobe")) or name in k.progptr


@pytest.mark.kernel
@pytest.mark.matrix("object loads (run)")
def test_the_object_loads_without_a_policy():
    below_minimum_skips()
    import platform
    with Kernel.load(LoadOptions(ring_size=1 << 16)) as k:
        check_programs(k)
        # the cheapest syscall hook set this kernel loads: fexit (Debian's 6.1, 6.12), else the
        # sys_exit dispatcher (x86-64), else a tracepoint per syscall
        x86 = platform.machine() == "x86_64"
        assert k.hooks == ("fexit" if x86 and fentry_works() else "dispatch" if x86 else "syscalls")
        assert k.hooks != "fexit" or {n for n, s in k.programs.items()
                                      if s.startswith("fexit/") and n not in k.skipped} == \
            {f"mw_fx_{n}" for n in SYSCALLS}
        assert not [n for n, s in k.programs.items() if s.startswith(("tp_btf/", "tracepoint/"))
                    and n in k.skipped and "no tracepoint" not in k.skipped[n]
                    and "syscall hook set is used" not in k.skipped[n]
                    and "--wakeup-evidence not asked for" not in k.skipped[n]]
        attached = {s for n, s in k.programs.items() if n not in k.skipped}
        assert ("tp_btf/sys_exit" in attached) == (k.hooks == "dispatch")
        assert all(s not in attached for s in k.programs.values() if s.startswith("tracepoint/syscalls/")) \
            == (k.hooks != "syscalls")
        assert all(s not in attached for s in k.programs.values() if s.startswith("fexit/")) \
            == (k.hooks != "fexit")
    with Kernel.load(LoadOptions(ring_size=1 << 16, hooks="syscalls")) as k:  # the fallback loads too
        check_programs(k)
        attached = {s for n, s in k.programs.items() if n not in k.skipped}
        assert "tp_btf/sys_exit" not in attached and "tracepoint/syscalls/sys_exit_read" in attached


@pytest.mark.kernel
@pytest.mark.matrix("object loads (--policy)")
def test_the_object_loads_with_every_enforcement_program_the_kernel_has():
    """Each policy program is attached where its hook exists, and left out,
    with its fallback named, where it does not: no verifier refusal hides
    behind a fallback."""
    below_minimum_skips()
    with Kernel.load(LoadOptions(ring_size=1 << 16, enforce=True)) as k:
        check_programs(k)
        attached = {s for n, s in k.programs.items() if n not in k.skipped}
        assert ("cgroup/connect_unix" in attached) == have("cgroup/connect_unix")
        lsm = have("lsm/file_open")
        for sec in ("lsm/file_open", "lsm/bprm_check_security"):
            assert (sec in attached) == lsm, sec
        assert ("lsm/path_mknod" in attached) == (lsm and have("lsm/path_mknod"))
        if not have("cgroup/connect_unix"):
            assert "6.7" in k.skipped["mw_connect_unix"]


@pytest.mark.kernel
@pytest.mark.matrix("doctor")
def test_doctor_names_each_program_and_the_object_loads():
    below_minimum_skips()
    import json
    import os
    import sys
    mw = os.path.join(os.path.dirname(sys.executable), "mcpwitness")
    p = subprocess.run([mw, "doctor", "--json"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    mo = report["main_object"]
    assert mo["ok"], mo
    assert mo["programs"]["mw_fork"] == "attached"
    assert all(v == "attached" or v.startswith(("not attached: ", "loaded: ")) for v in mo["programs"].values())


# a quarter of the verifier's instruction limit: a program past it is one compiler or kernel
# change from being refused (the sys_exit dispatcher once took 887,511 of the 1,000,000, and
# 3.2 s of every agent's start)
VERIFIER_BUDGET = 0.25


@pytest.mark.kernel
@pytest.mark.matrix("object loads (run)")
@pytest.mark.parametrize("hooks", HOOK_SETS)
def test_every_program_verifies_far_below_the_verifier_limit(hooks):
    """Each syscall hook set this kernel has (HOOK_SETS), with every enforcement program:
    what the verifier processed for each program is under a quarter of its
    limit (doctor warns past half)."""
    below_minimum_skips()
    with Kernel.load(LoadOptions(ring_size=1 << 16, enforce=True, hooks=hooks, verifier_stats=True)) as k:
        check_programs(k)
        stats = k.verification
        loaded = {n for n in k.programs if n not in k.skipped and n in k.progptr}
        assert loaded and loaded <= set(stats), f"no verifier statistics for {sorted(loaded - set(stats))}"
        over = {n: v["insns"] for n, v in stats.items() if v["insns"] > VERIFIER_BUDGET * v["limit"]}
        assert not over, f"near the verifier's limit: {over}"
        print(f"{hooks}: {sum(v['insns'] for v in stats.values())} instructions processed, "
              f"{sum(v['usec'] or 0 for v in stats.values()) / 1000:.0f} ms; the most: "
              f"{max(stats.items(), key=lambda kv: kv[1]['insns'])}")


def test_a_verifier_refusal_is_named_with_its_program_and_reason():
    log = ["libbpf: prog 'mw_connect_unix': BPF program load failed: Permission denied",
           "libbpf: prog 'mw_connect_unix': -- BEGIN PROG LOAD LOG --",
           "0: R1=ctx() R10=fp0", "203: (85) call bpf_probe_read_kernel#113",
           "R2 min value is negative, either use unsigned or 'var &= const'",
           "processed 849 insns (limit 1000000) max_states_per_insn 2 total_states 61",
           "-- END PROG LOAD LOG --",
           "libbpf: prog 'mw_connect_unix': failed to load: -13"]
    assert refused_program(log) == ("mw_connect_unix",
                                    "R2 min value is negative, either use unsigned or 'var &= const'")
    log = ["libbpf: extern (func ksym) 'bpf_cast_to_kern_ctx': not found in kernel or module BTFs",
           "libbpf: failed to load object 'x.bpf.o'"]
    assert refused_program(log) == (None, "the kernel has no bpf_cast_to_kern_ctx")


MINIMUM = (6, 1)


def kernel_version() -> tuple[int, int]:
    import os
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@pytest.mark.kernel
@pytest.mark.matrix("below the minimum: refused, naming what is missing")
def test_a_kernel_below_the_minimum_is_refused_with_what_it_lacks(tmp_path):
    """Below 6.1 (Debian 11's 5.10 in the matrix) `run` stops before anything
    runs and names what the kernel lacks, not an errno."""
    import os
    import sys
    if kernel_version() >= MINIMUM:
        pytest.skip(f"this kernel meets the minimum ({MINIMUM[0]}.{MINIMUM[1]})")
    mw = os.path.join(os.path.dirname(sys.executable), "mcpwitness")
    marker = tmp_path / "ran"
    p = subprocess.run([mw, "run", "--no-store", "--jsonl", str(tmp_path / "e.jsonl"), "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and not marker.exists()
    assert "lacks" in p.stderr and "bpf_loop" in p.stderr and "6.1 or newer" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
