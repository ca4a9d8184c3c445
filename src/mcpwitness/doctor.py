"""`mcpwitness doctor`: what this kernel lets mcpwitness do, found by trying.

Every mechanism is probed by loading (and where it means anything,
attaching) a trivial program from bpf/probe.bpf.c, one at a time, so the
answer is what the running kernel does, not what its config claims. Then
each feature is mapped to the best mechanism present, with the fallback named.
"""
from __future__ import annotations

import os
import platform

from . import __version__
from .kernel import caps, libbpf
from .kernel.loader import (EXEC_SYSCALLS, HOOK_SETS, HOOKS_DISPATCH, HOOKS_FEXIT, HOOKS_SYSCALLS, MECH_CREATE_LSM,
                            MECH_EXEC_KILL, MECH_EXEC_LSM, MECH_FILE_KILL, MECH_FILE_LSM, MECH_NET_CGROUP, MECH_NET_LSM,
                            MECH_UNIX_CGROUP, MECH_UNIX_USER, OPEN_SYSCALLS, PAYLOAD_SYSCALLS, Kernel, LoadOptions, choose_mechanisms,
                            hook_mechanism)
from .kernel.probes import PROBES, Probe, run_probe
from .kernel.system import BPFFS, TRACEFS, cgroup2_root, ensure_mount, raise_memlock

MAP_TYPES = [("hash", 1), ("percpu_array", 6), ("lru_hash", 9), ("lpm_trie", 11), ("ringbuf", 27)]

FEATURE_LABELS = {"record": "recording: run -- CMD, the kernel programs, TLS probes",
                  "others": "other users' processes: watch, run --pid of another user's process",
                  "policy": "--policy (refusing connects in the kernel)",
                  "private_tls": "TLS of servers in directories this user cannot search (optional)",
                  "module_btf": "recording with this libbpf on this kernel (see why)"}


def privileges(eff: int | None = None) -> list[dict]:
    """What the current capability set allows, feature by feature."""
    out = []
    feats = dict(caps.FEATURES)
    if caps.module_btf_needs_sys_admin():
        feats["module_btf"] = (("CAP_SYS_ADMIN",), caps.MODULE_BTF_WHY)
    for key, (needs, why) in feats.items():
        lacking = [c for c, _ in caps.missing([key], eff)]
        out.append({"feature": key, "label": FEATURE_LABELS[key], "needs": list(needs), "allowed": not lacking,
                    "missing": lacking, "why": why})
    return out


def features(mech: dict[str, bool], hooks: str = HOOKS_SYSCALLS) -> list[dict]:
    """Each feature, the mechanism it will use here (hooks: the syscall hook
    set the main object attached), and what falls back where."""
    def row(feature, status, chosen, alternatives, note=""):
        return {"feature": feature, "status": status, "mechanism": chosen,
                "alternatives": alternatives, "note": note}

    tp, tpbtf = mech.get("tracepoint"), mech.get("tp_btf")
    how = {HOOKS_FEXIT: "fexit on __x64_sys_*", HOOKS_DISPATCH: "tp_btf/sys_exit",
           HOOKS_SYSCALLS: "a tracepoint per syscall"}
    alt = "; ".join(f"{h} ({how[h]})" for h in HOOK_SETS if h != hooks) + " (--syscall-hooks)"
    out = [
        row("process tree (fork/exec/exit)", "active" if tpbtf else "unavailable",
            "tp_btf sched_process_fork/exec/exit" if tpbtf else "none", "raw_tracepoint (not built)",
            "" if tpbtf else "needs BTF-typed tracepoints (kernel >= 5.5 with BTF)"),
        row("file opens", "active" if tp else "unavailable",
            hook_mechanism(hooks, OPEN_SYSCALLS) if tp else "none", alt,
            "path read at syscall exit; absolute path from the kernel's dentries"),
        row("connects", "active" if tp else "unavailable",
            hook_mechanism(hooks, ["connect"]) if tp else "none", alt, ""),
        row("failed execs", "active" if tp else "unavailable",
            hook_mechanism(hooks, EXEC_SYSCALLS) if tp else "none", alt, ""),
        row("event transport", "active" if mech.get("ring buffer output") else "unavailable",
            "BPF ring buffer, batch mmap reader", "", "per-CPU drop counters"),
        row("MCP payload capture (pipes, Unix sockets, ptys, TCP)", "active" if tp else "unavailable",
            hook_mechanism(hooks, PAYLOAD_SYSCALLS) if tp else "none", alt,
            "streams classified in the kernel: JSON (pipes, Unix, pty slaves), HTTP/1.x or JSON (TCP)"),
        row("stdio wiring (which fds are a server's stdin and stdout)", "active" if tpbtf else "unavailable",
            "tp_btf sched_process_exec and watch discovery: fds 0 and 1, Unix peers" if tpbtf else "none", "",
            "pipes, socketpairs (Node hosts) and ptys are one session each"),
        row("server discovery (watch)", "active" if tp else "unavailable",
            "the same read hooks: a first JSON read with \"method\" near its start tracks the reader",
            "", "every read on the host pays a 1-byte check"),
        row("TCP port filter (watch --port)", "active" if tp else "unavailable",
            "the same hooks: socket ports looked up in a kernel map", "",
            "every read/write on the host pays an fd lookup while a port is watched"),
        row("connection endpoints", "active" if tpbtf else "unavailable",
            "from the socket at capture; cookies set at tp_btf/inet_sock_set_state", "", "5-tuple, netns, cookie"),
        row("TLS plaintext (OpenSSL: a libssl, or an executable that exports it, as Node; BoringSSL in Bun builds;"
            " Go crypto/tls)",
            "active" if mech.get("uprobe") else "unavailable",
            ("uprobe_multi links" if mech.get("uprobe.multi") else "uprobes")
            + " on SSL_read/SSL_write(_ex), SSL_do_handshake, SSL_free; in stripped Bun builds (Claude Code) on"
              " SSL_read/SSL_write/SSL_do_handshake found by their error reports; on Go's (*tls.Conn).Read/Write,"
              " entry and each return instruction (Go 1.17+, stripped or not)" if mech.get("uprobe")
            else "none (uprobes unavailable)",
            "single uprobes (slower to detach)" if mech.get("uprobe.multi") else "uprobe_multi (6.6+, unavailable)",
            "not read: rustls (Deno), Java"),
    ]
    chosen = choose_mechanisms(lambda label: bool(mech.get(label)))
    notes = {
        "network": "IP destinations; unix socket paths: " + (
            "cgroup/connect_unix (refused before connecting)" if chosen["unix"].startswith("cgroup/")
            else "no cgroup/connect_unix (6.7+) here: checked after the connect and reported, not refused"),
        "files": ("weaker than LSM: the process dies before it can use the fd, but the open happened "
                  "(O_CREAT/O_TRUNC are not undone); the path is the one the kernel resolved")
        if chosen["files"] == MECH_FILE_KILL else
        ("a new file (O_CREAT): lsm/path_mknod refuses it before it is made" if chosen["create"] else
         "no lsm/path_mknod here (CONFIG_SECURITY_PATH): a refused O_CREAT open has made an empty file")
        if chosen["files"] else "",
        "exec": "" if chosen["exec"] != MECH_EXEC_KILL else
        "weaker than LSM: the new program is killed before its first instruction, but the exec happened",
    }
    lsm = {"network": "lsm/socket_connect", "files": "lsm/file_open", "exec": "lsm/bprm_check_security"}
    for kind, label in (("network", "network enforcement"), ("files", "file enforcement"),
                        ("exec", "exec enforcement")):
        alt = [f"{lsm[kind]} ({'available' if mech.get(lsm[kind]) else 'unavailable here'})"]
        if kind == "network":
            alt = [a for a in alt if not chosen["network"] or lsm["network"] not in chosen["network"]]
        out.append(row(label, "active (with --policy)" if chosen[kind] else "unavailable",
                       chosen[kind] or "none: policies can only be monitored", ", ".join(alt), notes[kind]))
    return out


def chosen(mech: dict[str, bool], hooks: str) -> dict[str, str | None]:
    """What this kernel will use, one short name per kind (the kernel matrix pins these per kernel,
    tests/kernels/*.yaml): a kernel that quietly falls back shows here."""
    m = choose_mechanisms(lambda label: bool(mech.get(label)))
    short = {MECH_FILE_LSM: "lsm/file_open", MECH_FILE_KILL: "sigkill", MECH_EXEC_LSM: "lsm/bprm_check_security",
             MECH_EXEC_KILL: "sigkill", MECH_CREATE_LSM: "lsm/path_mknod", MECH_NET_CGROUP: "cgroup sock_addr",
             MECH_NET_LSM: "lsm/socket_connect", MECH_UNIX_CGROUP: "cgroup/connect_unix",
             MECH_UNIX_USER: "after the connect", None: None}
    tls = ("uprobe_multi" if mech.get("uprobe.multi") else "uprobe") if mech.get("uprobe") else None
    return {"hooks": hooks, "files": short[m["files"]], "create": short[m["create"]], "exec": short[m["exec"]],
            "network": short[m["network"]], "unix": short[m["unix"]], "tls": tls}


def diagnose() -> dict:
    raise_memlock()
    mounts = {"tracefs": ensure_mount(TRACEFS, "tracefs"), "bpffs": ensure_mount(BPFFS, "bpf")}
    u = os.uname()
    report: dict = {
        "version": __version__,
        "kernel": u.release, "arch": platform.machine(),
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "libbpf": libbpf.version(),
        "mounts": {"tracefs": f"{TRACEFS}: {mounts['tracefs']}", "bpffs": f"{BPFFS}: {mounts['bpffs']}",
                   "cgroup2": f"cgroup2: {cgroup2_root() or 'not mounted'}"},
        "uid": os.geteuid(),
        "capabilities": {k: v for k, v in caps.held().items()},
        "privileges": privileges(),
    }
    maps = {}
    for name, t in MAP_TYPES:
        r = libbpf.libbpf_probe_bpf_map_type(t, None)
        maps[name] = r == 1
    report["map_types"] = maps
    probes = []
    for prog, label, how in PROBES:
        try:
            pr = run_probe(prog, how)
        except OSError as e:
            pr = Probe(prog, False, str(e))
        probes.append({"mechanism": label, "ok": pr.ok, "detail": pr.detail})
    report["mechanisms"] = probes
    mech = {p["mechanism"]: p["ok"] for p in probes}
    mech["ring buffer output"] = mech.get("ring buffer output", False) and maps["ringbuf"]
    # the real thing: does the main object load and attach here?
    hooks = HOOKS_SYSCALLS
    try:
        with Kernel.load(LoadOptions(ring_size=1 << 16, max_procs=64, enforce=True, verifier_stats=True)) as k:
            hooks = k.hooks
            report["main_object"] = {"ok": True, "detail": "loads and attaches, policy programs included",
                                     "skipped": k.skipped, "verification": verification(k.verification),
                                     "programs": {n: f"not attached: {k.skipped[n]}" if n in k.skipped
                                                  else "loaded: attached in each process that loads libssl"
                                                  if sec.startswith(("uprobe", "uretprobe"))
                                                  else "attached" for n, sec in k.programs.items()}}
    except OSError as e:
        report["main_object"] = {"ok": False, "detail": str(e).splitlines()[0]}
    report["features"] = features(mech, hooks)
    report["ok"] = report["main_object"]["ok"]
    if report["ok"]:
        report["chosen"] = chosen(mech, hooks)
    return report


# a program the verifier checks with more than this share of its instruction limit is one
# compiler or kernel change away from being refused: doctor says so
NEAR_LIMIT = 0.5


def verification(stats: dict) -> dict:
    """What the verifier said of the programs it checked: per program, the
    instructions it processed (of its limit) and its time; the totals; and
    the programs near the limit."""
    near = sorted(n for n, v in stats.items() if v["insns"] > NEAR_LIMIT * v["limit"])
    return {"programs": stats, "insns": sum(v["insns"] for v in stats.values()),
            "ms": round(sum(v["usec"] or 0 for v in stats.values()) / 1000, 1), "near_limit": near}


def render(report: dict) -> str:
    lines = [f"mcpwitness {report['version']}  kernel {report['kernel']} ({report['arch']})  "
             f"libbpf {report['libbpf']}  BTF {'yes' if report['btf'] else 'NO'}", ""]
    lines.append("mounts:")
    for v in report["mounts"].values():
        lines.append(f"  {v}")
    lines.append(f"uid {report['uid']}, capabilities: " + " ".join(
        f"{k}{'' if v else '(missing)'}" for k, v in report["capabilities"].items()))
    lines.append("what this capability set allows:")
    for p in report["privileges"]:
        state = "yes" if p["allowed"] else "NO, missing " + ", ".join(p["missing"])
        lines.append(f"  {p['label']}: {state}   (needs {' '.join(p['needs'])})")
    lines.append("map types: " + " ".join(f"{k}:{'yes' if v else 'NO'}" for k, v in report["map_types"].items()))
    lines.append("")
    w = max(len(p["mechanism"]) for p in report["mechanisms"])
    lines.append("mechanism".ljust(w) + "  ok   detail")
    for p in report["mechanisms"]:
        lines.append(f"{p['mechanism'].ljust(w)}  {'yes' if p['ok'] else 'NO '}  {p['detail']}")
    lines.append("")
    lines.append("feature -> mechanism used here")
    for f in report["features"]:
        lines.append(f"  {f['feature']} [{f['status']}]")
        lines.append(f"      uses: {f['mechanism']}")
        if f["alternatives"]:
            lines.append(f"      alternatives: {f['alternatives']}")
        if f["note"]:
            lines.append(f"      note: {f['note']}")
    lines.append("")
    mo = report["main_object"]
    lines.append(f"main BPF object: {'OK' if mo['ok'] else 'FAILED'}: {mo['detail']}")
    v = mo.get("verification")
    if v and v["programs"]:
        top = max(v["programs"].items(), key=lambda kv: kv[1]["insns"])
        lines.append(f"  verified in {v['ms']} ms, {v['insns']} instructions processed; the most: {top[0]} "
                     f"({top[1]['insns']} of the verifier's {top[1]['limit']})")
        for n in v["near_limit"]:
            lines.append(f"  WARNING: {n} is near the verifier's instruction limit "
                         f"({v['programs'][n]['insns']} of {v['programs'][n]['limit']}): a newer compiler "
                         "or kernel may refuse it")
    for name, what in (mo.get("programs") or {}).items():
        lines.append(f"  {name}: {what}")
    return "\n".join(lines)
