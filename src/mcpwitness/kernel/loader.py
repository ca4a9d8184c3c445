"""Load, configure and attach the kernel programs; own their maps.

    with Kernel.load() as k:
        k.track(pid)                # pid and its future children
        reader = k.batch_reader()   # ring buffer records
        k.counters()                # per-CPU drop counters, summed

Nothing here parses events (events.py) or decides what to track (agent.py).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import re
import struct
from dataclasses import dataclass, field

from ..proc import ProcStat, read_stat
from . import libbpf
from .abi import ANCESTORS, COUNTERS, PROC
from .system import TRACEFS, cgroup2_root, ensure_mount, object_path, raise_memlock

P_TICKS = 0x1
CONFIG = struct.Struct("<IIII")  # struct mw_config
STREAM_KEY = struct.Struct("<QII")  # struct mw_stream_key
STREAM_OTHER = struct.pack("<II", 2, 0)  # struct mw_stream {MW_S_OTHER}
LSM_FILES, LSM_EXEC, LSM_NET = 0x1, 0x2, 0x4


def tracepoint_exists(category: str, name: str) -> bool:
    for base in (TRACEFS, "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(base, "events", category, name)):
            return True
    return False


@dataclass
class LoadOptions:
    ring_size: int = 64 << 20     # bytes, power of two
    max_procs: int = 65536        # tracked processes at once
    argv_max: int = 16384         # argv bytes captured per exec (<= 16384)
    io_max: int = 16 << 20        # payload bytes captured per read/write syscall
    watch: bool = False           # the kernel tracks untracked processes that read a JSON-RPC request
    enforce: bool = False         # attach the policy programs (cgroup sock_addr, LSM where present)
    lsm: bool | None = None       # use BPF LSM for enforcement: None = if this kernel has it
    seccomp: bool = True          # without BPF LSM: the commands `run` starts refused a denied open or exec
                                  # through a seccomp user-notification filter (kernel/unotify.py), not killed
    ports: tuple = ()             # TCP ports whose traffic is captured for any process (watch --port)
    tls: bool = True              # uprobes on the OpenSSL libraries: TLS plaintext
    uprobe_multi: bool | None = None  # TLS probes as uprobe_multi links: None = if this kernel has them
    hooks: str | None = None      # syscall hook set: "fexit", "dispatch", "syscalls", None = the first that loads
    wakeups: bool = False         # tp_btf/sched_waking: hand-offs between a tracked process's threads
    verifier_stats: bool = False  # keep what the verifier says of each program (Kernel.verification; doctor)


MECH_NET_CGROUP = "cgroup sock_addr connect4/6 + sendmsg4/6 (refused before any packet)"
MECH_NET_LSM = "lsm/socket_connect (refused before any packet)"
MECH_UNIX_CGROUP = "cgroup/connect_unix (refused before connecting)"
MECH_UNIX_USER = "userspace, after the connect (reported, not refused)"
MECH_FILE_LSM = "lsm/file_open (refused before the open)"
MECH_FILE_KILL = "SIGKILL at sys_exit of open* (fallback: the open happened, the fd is never used)"
MECH_EXEC_LSM = "lsm/bprm_check_security (refused before the exec)"
MECH_CREATE_LSM = "lsm/path_mknod (a refused O_CREAT makes no file)"
MECH_EXEC_KILL = "SIGKILL at sched_process_exec (fallback: the new program never runs)"


def choose_mechanisms(have) -> dict:
    """Per kind of action, the mechanism that will enforce here (None: monitor only).
    have(mechanism) -> bool answers from a probe (probes.run_probe)."""
    kill = have("helper bpf_send_signal")
    cgroup2 = cgroup2_root() is not None
    out = {}
    if have("cgroup/connect4") and have("cgroup/connect6") and cgroup2:
        out["network"] = MECH_NET_CGROUP
    elif have("lsm/socket_connect"):
        out["network"] = MECH_NET_LSM
    else:
        out["network"] = None
    out["unix"] = MECH_UNIX_CGROUP if have("cgroup/connect_unix") and cgroup2 else MECH_UNIX_USER
    out["files"] = MECH_FILE_LSM if have("lsm/file_open") else MECH_FILE_KILL if kill else None
    out["exec"] = MECH_EXEC_LSM if have("lsm/bprm_check_security") else MECH_EXEC_KILL if kill else None
    # file_open runs after an O_CREAT has made the file: the creation itself is refused
    # at path_mknod (CONFIG_SECURITY_PATH); without it a refused create leaves an empty file
    out["create"] = MECH_CREATE_LSM if out["files"] == MECH_FILE_LSM and have("lsm/path_mknod") else None
    return out


# the syscall hook sets (mcpwitness.bpf.c), in the order they are preferred:
# - "fexit": one fexit program on each hooked syscall's __x64_sys_* function: only
#   the hooked syscalls pay (a BPF trampoline), no syscall takes the tracing slow
#   path. Where fentry/fexit programs load (Debian's 6.1 and 6.12; not 6.18 here).
# - "dispatch": one BTF-typed program on the raw sys_exit tracepoint that switches
#   on the syscall number (x86-64). It runs for every syscall of every task but
#   builds no perf record for the hooked ones: bench/untracked_overhead.py
#   measured it cheaper than the next (docs/performance.md).
# - "syscalls": one perf-based syscall tracepoint per syscall (any architecture).
HOOKS_FEXIT, HOOKS_DISPATCH, HOOKS_SYSCALLS = "fexit", "dispatch", "syscalls"
HOOK_SETS = (HOOKS_FEXIT, HOOKS_DISPATCH, HOOKS_SYSCALLS)
DISPATCHER = "mw_sys_exit"
FEXIT_PREFIX = "mw_fx_"
# the hooked syscalls, by what they report
OPEN_SYSCALLS = ("open", "openat", "openat2", "creat", "open_by_handle_at")
EXEC_SYSCALLS = ("execve", "execveat")
PAYLOAD_SYSCALLS = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg")
SYSCALLS = OPEN_SYSCALLS + EXEC_SYSCALLS + ("connect", "sendmmsg") + PAYLOAD_SYSCALLS
URING = "mw_uring_complete"  # io_uring opens and connects, at completion (raw_tp/io_uring_complete)


@functools.cache
def fentry_works() -> bool:
    """Whether this kernel loads and attaches fentry/fexit programs (probed once per process)."""
    from .probes import run_probe
    try:
        return run_probe("probe_fentry", "attach").ok
    except OSError:
        return False


def hook_mechanism(hooks: str, names) -> str:
    """How the syscalls in names are hooked, in words (start record, doctor)."""
    if hooks == HOOKS_FEXIT:
        return "fexit __x64_sys_{" + ",".join(names) + "}"
    if hooks == HOOKS_DISPATCH:
        return f"tp_btf sys_exit (one program, by syscall number): {', '.join(names)}"
    return "tracepoint syscalls sys_exit_{" + ",".join(names) + "}"


LSM_MAIN = {"mw_lsm_file_open", "mw_lsm_bprm_check", "mw_lsm_socket_connect"}  # all or none
LSM_PROGRAMS = LSM_MAIN | {"mw_lsm_path_mknod"}
# programs with a fallback: where the kernel refuses one, the rest loads without it
OPTIONAL_PROGRAMS = {"mw_connect_unix", URING} | LSM_PROGRAMS  # and the syscall hook sets (_optional)


def _optional(prog: str, options: LoadOptions) -> bool:
    if prog in LSM_PROGRAMS:
        return options.lsm is not True  # --lsm asked for LSM: refuse to run without it
    if prog == DISPATCHER or prog.startswith(FEXIT_PREFIX):
        return options.hooks is None  # asked for by name: refuse to run without it
    return prog in OPTIONAL_PROGRAMS


def refused_program(log: list[str]) -> tuple[str | None, str]:
    """(program, the kernel's reason) from libbpf's log of a failed load: the
    verifier's last words, or the missing kernel symbol."""
    prog, why = None, ""
    for i, line in enumerate(log):
        m = re.search(r"prog '([^']+)': (?:BPF program load failed|failed to load)", line)
        if m and prog is None:
            prog = m.group(1)
            # the verdict: the last verifier line before the log's end marker
            tail = [ln.strip() for ln in log[i:] if ln.strip() and "END PROG LOAD LOG" not in ln
                    and not ln.strip().startswith(("processed ", "libbpf:", "prog '"))]
            why = tail[-1] if tail else line[m.end(1) + 3:]
        m = re.search(r"extern \((?:func ksym|var ksym|kconfig)\) '([^']+)': not found", line)
        if m:
            return None, f"the kernel has no {m.group(1)}"
    return prog, why


# what each program needs, to name it when a kernel refuses the object
NEEDS = {"tp_btf": "tp_btf programs (5.5+)", "ring buffer output": "BPF ring buffers (5.8+)",
         "helper bpf_task_pt_regs": "the bpf_task_pt_regs helper (5.15+)",
         "helper bpf_loop": "the bpf_loop helper (5.17+)"}


def eperm_reason() -> str:
    """Why the kernel may say EPERM to a process whose capabilities were checked: what can
    be seen from here (a seccomp filter), then the other usual causes."""
    seccomp = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    seccomp = line.split()[1]
    except OSError:
        pass
    if seccomp == "2":
        return ("this process runs under a seccomp filter (Seccomp: 2 in /proc/self/status): a container "
                "runtime's default profile refuses bpf() and perf_event_open() without CAP_SYS_ADMIN, whatever "
                "the capabilities. Run the container with seccomp unconfined (podman/docker --security-opt "
                "seccomp=unconfined; Kubernetes securityContext.seccompProfile.type: Unconfined)")
    return ("the kernel said EPERM: the capabilities it needs (`mcpwitness doctor`), an LSM (SELinux, AppArmor, "
            "lockdown=confidentiality) or a seccomp filter in a parent refuse it")


def explain_failure(e: "libbpf.BPFError", prog: str | None, why: str) -> "libbpf.BPFError":
    """A load failure in words: which program, what the kernel said, and what
    this kernel lacks that mcpwitness needs (probed now), not just an errno."""
    what = f"the kernel refused program {prog}: {why}" if prog else why or str(e).splitlines()[0]
    msg = f"loading BPF programs: {what}"
    if e.errno == errno.EPERM:
        # a permission problem, not a missing feature: every probe would fail the same way
        return libbpf.BPFError(e.errno, msg + "\n  " + eperm_reason(), e.log)
    missing = []
    try:
        from .probes import PROBES, run_probe
        labels = {label: (p, how) for p, label, how in PROBES}
        for label, need in NEEDS.items():
            if not run_probe(*labels[label]).ok:
                missing.append(need)
    except OSError:
        pass
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        missing.insert(0, "BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)")
    if missing:
        msg += (f"\n  this kernel ({platform.release()}) lacks {', '.join(missing)}: mcpwitness needs Linux 6.1 "
                "or newer with BTF (`mcpwitness doctor` lists every mechanism)")
    return libbpf.BPFError(e.errno or 22, msg, e.log)


@dataclass
class Kernel:
    obj: int
    links: list = field(default_factory=list)
    maps: dict = field(default_factory=dict)
    programs: dict = field(default_factory=dict)  # name -> section
    progptr: dict = field(default_factory=dict)   # name -> struct bpf_program *
    skipped: dict = field(default_factory=dict)   # name -> reason not attached
    options: LoadOptions = field(default_factory=LoadOptions)
    mounts: dict = field(default_factory=dict)
    mechanisms: dict = field(default_factory=dict)  # kind of action -> enforcing mechanism (enforce only)
    lsm_bits: int = 0
    fallback_reason: str | None = None
    uprobe_multi: bool = False  # TLS probes as uprobe_multi links (6.6+), else single uprobes
    raw_links: list = field(default_factory=list)  # link fds made outside libbpf (uprobe_multi)
    refused: dict = field(default_factory=dict)  # program -> why this kernel refused it (fallback used)
    hooks: str = HOOKS_SYSCALLS  # the syscall hook set attached (HOOKS_*)
    verification: dict = field(default_factory=dict)  # program -> insns, limit, usec (verifier_stats only)
    _cgroup_fd: int = -1
    # pinned (kernel/pin.py): the programs outlive this agent
    link_of: dict = field(default_factory=dict)     # program -> its libbpf link, as attached at load
    pin_dir: str | None = None                      # pinned under this bpffs directory
    pinned_maps: set = field(default_factory=set)
    prog_pins: set = field(default_factory=set)     # programs pinned for attaching later (TLS uprobes)
    map_fds: dict = field(default_factory=dict)     # adopted from the pins (nothing loaded): map name -> fd
    prog_fds: dict = field(default_factory=dict)    # adopted: program name -> fd

    # --- life cycle -------------------------------------------------------
    @classmethod
    def load(cls, options: LoadOptions | None = None, path: str | None = None) -> "Kernel":
        options = options or LoadOptions()
        if options.ring_size & (options.ring_size - 1) or options.ring_size < 4096:
            raise ValueError("ring size must be a power of two of at least 4096 bytes")
        if not 0 <= options.argv_max <= 16384:
            raise ValueError("argv_max must be between 0 and 16384")
        if not 0 <= options.io_max < 1 << 31:
            raise ValueError("io_max must be between 0 and 2 GiB")
        mounts = {"tracefs": ensure_mount(TRACEFS, "tracefs")}
        raise_memlock()
        path = path or object_path()
        refused: dict[str, str] = {}  # program -> why the kernel refused it (its fallback is used)
        while True:
            try:
                return cls._load_object(path, options, mounts, refused)
            except libbpf.BPFError as e:
                prog, why = refused_program(e.log)
                if prog and prog not in refused and _optional(prog, options):
                    # a kernel whose trivial probe passed may still refuse the real program
                    # (a verifier older or stricter than ours): run with its fallback, say why
                    refused[prog] = f"did not load on this kernel ({why}): the fallback is used"
                    continue
                raise explain_failure(e, prog, why) from None

    @staticmethod
    def _apply_refusals(k: "Kernel", refused: dict) -> None:
        """Mechanisms without the programs this kernel refused."""
        if not refused:
            return
        k.fallback_reason = "; ".join(f"{n} {why}" for n, why in refused.items())
        if "mw_connect_unix" in refused:
            k.mechanisms["unix"] = MECH_UNIX_USER
        if "mw_lsm_path_mknod" in refused:
            k.mechanisms["create"] = None

    @classmethod
    def _load_object(cls, path: str, options: LoadOptions, mounts: dict, refused: dict) -> "Kernel":
        from dataclasses import replace
        with libbpf.capture_log() as log:
            obj = libbpf.check_ptr(libbpf.bpf_object__open_file(path.encode(), None), f"open {path}", log)
        k = cls(obj=obj, options=replace(options), mounts=mounts)
        k.refused = refused
        try:
            if refused.keys() & LSM_MAIN:
                k.options.lsm = False  # all or none: the fallbacks for files, exec and network
            if options.enforce:
                k._choose_enforcement()
                cls._apply_refusals(k, refused)
            if options.tls and options.uprobe_multi is not False:
                from .probes import run_probe
                try:
                    k.uprobe_multi = run_probe("probe_uprobe_multi", "uprobe_multi").ok
                except OSError:
                    k.uprobe_multi = False
            k._configure()
            cap = libbpf.capture_log(stats=options.verifier_stats)
            with cap as log:
                if options.verifier_stats:
                    for p in k.progptr.values():
                        if libbpf.bpf_program__autoload(p):
                            libbpf.bpf_program__set_log_level(p, libbpf.BPF_LOG_STATS)
                libbpf.check_int(libbpf.bpf_object__load(obj), "loading BPF programs", log)
            if cap.stats is not None:
                k.verification = libbpf.verifier_stats(cap.stats)
            k._set_iolimit(options.io_max)
            k._set_ports(options.ports)
            k._attach()
        except BaseException:
            k.close()
            raise
        return k

    def _configure(self) -> None:
        m = libbpf.bpf_object__next_map(self.obj, None)
        while m:
            self.maps[libbpf.bpf_map__name(m).decode()] = m
            m = libbpf.bpf_object__next_map(self.obj, m)
        libbpf.check_int(libbpf.bpf_map__set_max_entries(self.maps["events"], self.options.ring_size), "ring size")
        libbpf.check_int(libbpf.bpf_map__set_max_entries(self.maps["procs"], self.options.max_procs), "procs size")
        ro = next(m for n, m in self.maps.items() if n.endswith(".rodata"))
        size = ctypes.c_size_t()
        ptr = libbpf.bpf_map__initial_value(ro, ctypes.byref(size))
        if size.value != CONFIG.size:
            raise RuntimeError(f".rodata is {size.value} bytes, expected struct mw_config ({CONFIG.size})")
        ctypes.memmove(ptr, CONFIG.pack(self.options.argv_max, int(self.options.watch), self.lsm_bits,
                                          len(self.options.ports)), CONFIG.size)
        self._choose_hooks()
        p = libbpf.bpf_object__next_program(self.obj, None)
        while p:
            name = libbpf.bpf_program__name(p).decode()
            sec = libbpf.bpf_program__section_name(p).decode()
            self.programs[name] = sec
            self.progptr[name] = p
            libbpf.set_newer_section_type(p)
            why = (self.fallback_reason if name in LSM_PROGRAMS and self.refused.keys() & LSM_MAIN else None) \
                or self.refused.get(name) or self._not_wanted(sec)
            if why:
                libbpf.bpf_program__set_autoload(p, False)
                self.skipped[name] = why
            elif sec.startswith("tracepoint/"):
                _, cat, tp = sec.split("/")
                if not tracepoint_exists(cat, tp):
                    # e.g. open/creat do not exist on arm64
                    libbpf.bpf_program__set_autoload(p, False)
                    self.skipped[name] = f"no tracepoint {cat}:{tp} on this kernel"
            p = libbpf.bpf_object__next_program(self.obj, p)

    def _choose_hooks(self) -> None:
        names = set()
        p = libbpf.bpf_object__next_program(self.obj, None)
        while p:
            names.add(libbpf.bpf_program__name(p).decode())
            p = libbpf.bpf_object__next_program(self.obj, p)
        wanted = self.options.hooks
        if wanted not in (None, *HOOK_SETS):
            raise ValueError(f"unknown hook set {wanted!r} ({', '.join(HOOK_SETS)})")
        fexit = {n for n in names if n.startswith(FEXIT_PREFIX)}
        if wanted == HOOKS_DISPATCH and DISPATCHER not in names or wanted == HOOKS_FEXIT and not fexit:
            raise ValueError(f"the {wanted} hook set is not built for {platform.machine()}")
        if wanted == HOOKS_FEXIT and not fentry_works():
            raise OSError(95, "the fexit hook set needs fentry/fexit programs, which this kernel does not load "
                              "(`mcpwitness doctor`)")
        if wanted:
            self.hooks = wanted
        elif fexit and not fexit & self.refused.keys() and fentry_works():
            self.hooks = HOOKS_FEXIT
        elif DISPATCHER in names and DISPATCHER not in self.refused:
            self.hooks = HOOKS_DISPATCH
        else:
            self.hooks = HOOKS_SYSCALLS

    def _choose_enforcement(self) -> None:
        from .probes import PROBES, run_probe
        labels = {label: (prog, how) for prog, label, how in PROBES}
        cache: dict[str, bool] = {}

        def have(label: str) -> bool:
            if label not in cache:
                if label.startswith("lsm/") and self.options.lsm is False:
                    cache[label] = False
                else:
                    try:
                        cache[label] = run_probe(*labels[label]).ok
                    except OSError:
                        cache[label] = False
            return cache[label]

        self.mechanisms = choose_mechanisms(have)
        m = self.mechanisms
        self.lsm_bits = ((LSM_FILES if m["files"] == MECH_FILE_LSM else 0) |
                         (LSM_EXEC if m["exec"] == MECH_EXEC_LSM else 0) |
                         (LSM_NET if m["network"] == MECH_NET_LSM else 0))

    def _not_wanted(self, sec: str) -> str | None:
        """Why a program is not loaded (policy programs without a policy, the
        TLS programs of the attach method not used), or None."""
        if sec.startswith(("uprobe", "uretprobe")):
            if not self.options.tls:
                return "--no-tls"
            if sec.endswith(".multi") != self.uprobe_multi:
                return "uprobe_multi links are used" if self.uprobe_multi else "no uprobe_multi here (6.6+)"
            return None
        if sec == "tp_btf/sched_waking" and not self.options.wakeups:
            return "--wakeup-evidence not asked for"
        if sec.startswith("cgroup/"):
            if not self.options.enforce:
                return "no policy: network enforcement not needed"
            if sec == "cgroup/connect_unix":
                if self.mechanisms.get("unix") != MECH_UNIX_CGROUP:
                    return "no cgroup/connect_unix on this kernel (6.7+): unix paths are checked in userspace"
            elif self.mechanisms.get("network") != MECH_NET_CGROUP:
                return "cgroup sock_addr hooks unavailable here"
        if sec.startswith("lsm/"):
            bit = {"lsm/file_open": LSM_FILES, "lsm/path_mknod": LSM_FILES, "lsm/bprm_check_security": LSM_EXEC,
                   "lsm/socket_connect": LSM_NET}.get(sec, 0)
            if not self.options.enforce:
                return "no policy: LSM enforcement not needed"
            if sec == "lsm/path_mknod" and self.lsm_bits & bit and self.mechanisms.get("create") != MECH_CREATE_LSM:
                return "no lsm/path_mknod here (CONFIG_SECURITY_PATH): a refused O_CREAT leaves an empty file"
            if not self.lsm_bits & bit:
                return "BPF LSM unavailable here (the fallback is used)" if sec != "lsm/socket_connect" \
                    else "cgroup sock_addr hooks are used instead"
        mine = HOOKS_FEXIT if sec.startswith("fexit/") else HOOKS_DISPATCH if sec == "tp_btf/sys_exit" \
            else HOOKS_SYSCALLS if sec.startswith("tracepoint/syscalls/") else None
        if mine is not None and mine != self.hooks:
            return f"the {self.hooks} syscall hook set is used" + (" (asked for)" if self.options.hooks else "")
        return None

    def _set_iolimit(self, n: int) -> None:
        key, val = ctypes.c_uint32(0), ctypes.c_uint64(n)
        libbpf.check_int(libbpf.bpf_map_update_elem(self.map_fd("iolimit"), ctypes.byref(key), ctypes.byref(val),
                                                     libbpf.BPF_ANY), "set the payload limit")

    def _set_ports(self, ports) -> None:
        if len(ports) > 64:
            raise ValueError(f"at most 64 watched ports ({len(ports)} given)")
        for port in ports:
            key, val = ctypes.c_uint16(port), ctypes.c_uint8(1)
            libbpf.check_int(libbpf.bpf_map_update_elem(self.map_fd("ports"), ctypes.byref(key), ctypes.byref(val),
                                                        libbpf.BPF_ANY), f"watch port {port}")

    def attach_uprobe(self, prog: str, path: str, offset: int, retprobe: bool, pid: int = -1):
        """One uprobe (or uretprobe) on a file: for every process (pid -1;
        the program filters), or for one process only (its breakpoints are
        then kept out of every other process). Returns the link; OSError
        when the kernel refuses."""
        if prog not in self.progptr:
            raise OSError(95, "an agent that adopted pinned programs attaches TLS probes with uprobe_multi links "
                              "(Linux 6.6+) only: TLS of processes found after the restart is not decoded here")
        with libbpf.capture_log() as log:
            link = libbpf.check_ptr(libbpf.bpf_program__attach_uprobe(self.progptr[prog], retprobe, pid,
                                                                       path.encode(), offset),
                                    f"attach {prog} at {path}+{offset:#x}", log)
        self.links.append(link)
        return ("libbpf", link)

    def attach_uprobe_multi(self, prog: str, path: str, offsets: list[int], cookies: list[int],
                            retprobe: bool, pid: int = 0):
        """One uprobe_multi link: prog on every offset of path, for every
        process (pid 0) or one. Returns the link."""
        fd = libbpf.uprobe_multi_link(self.prog_fd(prog), path, offsets, cookies, retprobe, pid=pid)
        self.raw_links.append(fd)
        return ("fd", fd)

    def take_links(self, links: list) -> list:
        """Hand links made by attach_uprobe(_multi) over to the caller, who
        will detach them (detach_links); close() no longer does."""
        for kind, ref in links:
            (self.links if kind == "libbpf" else self.raw_links).remove(ref)
        return links

    @staticmethod
    def detach_links(links: list) -> None:
        for kind, ref in links:
            if kind == "libbpf":
                libbpf.bpf_link__destroy(ref)
            else:
                os.close(ref)

    def stop_stream(self, inode: int, dev: int) -> None:
        """Send no more bytes of this stream (both directions): userspace found
        it is not MCP (not HTTP, HTTP/2, ...). Best effort: the entry may be gone."""
        for d in (0, 1):
            key = STREAM_KEY.pack(inode, dev, d)
            libbpf.bpf_map_update_elem(self.map_fd("streams"), key, STREAM_OTHER, libbpf.BPF_ANY)

    def _attach(self) -> None:
        p = libbpf.bpf_object__next_program(self.obj, None)
        while p:
            name = libbpf.bpf_program__name(p).decode()
            if name not in self.skipped and not self.programs[name].startswith(("uprobe", "uretprobe")):
                with libbpf.capture_log() as log:
                    if self.programs[name].startswith("cgroup/"):
                        link = libbpf.bpf_program__attach_cgroup(p, self._cgroup())
                    else:
                        link = libbpf.bpf_program__attach(p)
                    try:
                        link = libbpf.check_ptr(link, f"attach {name}", log)
                    except OSError as e:
                        if name != URING:
                            raise
                        # a kernel without io_uring (or its tracepoint): nothing to see there
                        self.refused[name] = f"did not attach on this kernel ({e.strerror}): io_uring is not seen"
                        link = None
                if link:
                    self.links.append(link)
                    self.link_of[name] = link
            p = libbpf.bpf_object__next_program(self.obj, p)

    def _cgroup(self) -> int:
        """The cgroup2 root: every process on the host is in it or below, so
        its sock_addr programs see every tracked process wherever it runs
        (they leave untracked ones after one map lookup)."""
        if self._cgroup_fd < 0:
            root = cgroup2_root()
            if not root:
                raise OSError(2, "no cgroup2 hierarchy mounted: network enforcement needs one")
            self._cgroup_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        return self._cgroup_fd

    def close(self) -> None:
        if self.pin_dir is not None:
            # pinned: the links stay attached without us (their pins hold them); only ours go
            pinned = set(self.link_of.values())
            for link in self.links:
                if link in pinned:
                    libbpf.bpf_link__disconnect(link)
        for fd in list(self.map_fds.values()) + list(self.prog_fds.values()):
            os.close(fd)
        self.map_fds, self.prog_fds = {}, {}
        # each detach waits for an RCU grace period; done in parallel the
        # waits overlap (ctypes releases the GIL around the call)
        if self.links:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=len(self.links)) as pool:
                list(pool.map(libbpf.bpf_link__destroy, self.links))
        self.links = []
        for fd in self.raw_links:
            os.close(fd)
        self.raw_links = []
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self.obj:
            libbpf.bpf_object__close(self.obj)
            self.obj = 0

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- maps -------------------------------------------------------------
    def map_fd(self, name: str) -> int:
        fd = self.map_fds.get(name)
        return fd if fd is not None else libbpf.bpf_map__fd(self.maps[name])

    def prog_fd(self, name: str) -> int:
        fd = self.prog_fds.get(name)
        return fd if fd is not None else libbpf.bpf_program__fd(self.progptr[name])

    def batch_reader(self, **kw):
        from .ringbuf import BatchReader
        return BatchReader(self.map_fd("events"), self.options.ring_size, **kw)

    def libbpf_reader(self):
        from .ringbuf import LibbpfReader
        return LibbpfReader(self.map_fd("events"))

    def track(self, pid: int, stat: ProcStat | None = None, root: int | None = None,
              ancestors: list[int] | None = None, policy: int = 0) -> None:
        """Put pid in the tracked map. Its identity is its start time as /proc
        shows it (clock ticks); the kernel refines it to nanoseconds on first
        sight and refuses the entry for any other process that reuses the pid."""
        stat = stat or read_stat(pid)
        anc = (ancestors or [])[:ANCESTORS]
        value = PROC.pack(stat.start_ticks * 10_000_000, root if root is not None else pid, len(ancestors or []),
                          *(anc + [0] * (ANCESTORS - len(anc))), P_TICKS, policy)
        key = ctypes.c_uint32(pid)
        buf = ctypes.create_string_buffer(value, len(value))
        with libbpf.capture_log() as log:
            libbpf.check_int(libbpf.bpf_map_update_elem(self.map_fd("procs"), ctypes.byref(key), buf, libbpf.BPF_ANY),
                             f"track pid {pid}", log)

    def untrack(self, pid: int) -> None:
        key = ctypes.c_uint32(pid)
        libbpf.bpf_map_delete_elem(self.map_fd("procs"), ctypes.byref(key))

    def _proc_entries(self):
        """(pid, unpacked struct mw_proc) for every entry of the tracked map."""
        fd = self.map_fd("procs")
        key, nxt = ctypes.c_uint32(), ctypes.c_uint32()
        val = ctypes.create_string_buffer(PROC.size)
        prev = None
        while libbpf.bpf_map_get_next_key(fd, prev, ctypes.byref(nxt)) == 0:
            key.value = nxt.value
            prev = ctypes.byref(key)
            if libbpf.bpf_map_lookup_elem(fd, ctypes.byref(key), val) == 0:
                yield key.value, PROC.unpack(val.raw)

    def tracked_one(self, pid: int) -> tuple | None:
        """(start_ns, root, depth, ancestors, flags, policy) of one tracked process, None if untracked."""
        key = ctypes.c_uint32(pid)
        val = ctypes.create_string_buffer(PROC.size)
        if libbpf.bpf_map_lookup_elem(self.map_fd("procs"), ctypes.byref(key), val) != 0:
            return None
        v = PROC.unpack(val.raw)
        return v[0], v[1], v[2], list(v[3:3 + ANCESTORS]), v[3 + ANCESTORS], v[4 + ANCESTORS]

    def tracked(self) -> dict[int, tuple]:
        """pid -> (start_ns, root, depth, ancestors, flags, policy) for every tracked process."""
        return {pid: (v[0], v[1], v[2], list(v[3:3 + ANCESTORS]), v[3 + ANCESTORS], v[4 + ANCESTORS])
                for pid, v in self._proc_entries()}

    def set_policy(self, root: int, slot: int) -> list[int]:
        """Give every tracked process of root's tree the policy slot (children
        forked later inherit it in the kernel). Returns the pids changed."""
        fd = self.map_fd("procs")
        pids = []
        for pid, v in list(self._proc_entries()):
            if v[1] == root and v[-1] != slot:
                new = ctypes.create_string_buffer(PROC.pack(*v[:-1], slot), PROC.size)
                key = ctypes.c_uint32(pid)
                if libbpf.bpf_map_update_elem(fd, ctypes.byref(key), new, 2) == 0:  # BPF_EXIST
                    pids.append(pid)
        return pids

    def counters(self) -> dict[str, int]:
        """The kernel's per-CPU counters, summed over CPUs."""
        fd = self.map_fd("counters")
        ncpu = libbpf.possible_cpus()
        buf = (ctypes.c_uint64 * ncpu)()
        out = {}
        for i, name in enumerate(COUNTERS):
            key = ctypes.c_uint32(i)
            if libbpf.bpf_map_lookup_elem(fd, ctypes.byref(key), buf) == 0:
                out[name] = sum(buf)
        return out
