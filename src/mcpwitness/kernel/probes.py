"""Feature probes: whether the running kernel loads (and where it means
anything, attaches) each kind of program mcpwitness uses, found by trying a
trivial program from bpf/probe.bpf.c, one at a time. The loader asks them
when it chooses mechanisms; `mcpwitness doctor` reports them."""
from __future__ import annotations

import ctypes
import fnmatch
import os
from dataclasses import dataclass

from . import libbpf
from .system import cgroup2_root, object_path
from .tls import elf_symbols


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str


# probe program -> (mechanism shown to the user, how to test it)
PROBES = [
    ("probe_tracepoint", "tracepoint", "attach"),
    ("probe_raw_tp", "raw_tracepoint", "attach"),
    ("probe_tp_btf", "tp_btf", "attach"),
    ("probe_fentry", "fentry", "attach"),
    ("probe_kprobe", "kprobe", "attach"),
    ("probe_uprobe", "uprobe", "uprobe"),
    ("probe_uprobe_multi", "uprobe.multi", "uprobe_multi"),
    ("probe_lsm_file_open", "lsm/file_open", "attach"),
    ("probe_lsm_bprm_check", "lsm/bprm_check_security", "attach"),
    ("probe_lsm_path_mknod", "lsm/path_mknod", "attach"),
    ("probe_lsm_socket_connect", "lsm/socket_connect", "attach"),
    ("probe_connect4", "cgroup/connect4", "cgroup"),
    ("probe_connect6", "cgroup/connect6", "cgroup"),
    ("probe_connect_unix", "cgroup/connect_unix", "cgroup"),
    ("probe_sendmsg4", "cgroup/sendmsg4", "cgroup"),
    ("probe_sendmsg6", "cgroup/sendmsg6", "cgroup"),
    ("probe_send_signal", "helper bpf_send_signal", "load"),
    ("probe_ringbuf", "ring buffer output", "load"),
    ("probe_loop", "helper bpf_loop", "load"),
    ("probe_task_pt_regs", "helper bpf_task_pt_regs", "load"),
]

def _libc_path() -> str | None:
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "/libc.so" in p or "/libc-" in p:
                return p
    return None


def _err(what: str, log: list[str]) -> str:
    e = ctypes.get_errno()
    msg = f"{what}: {os.strerror(e) if e else 'failed'}"
    useful = [ln for ln in log if "failed" in ln and "failed to load object" not in ln][:1]
    return msg + (f" ({useful[0].strip()[:160]})" if useful else "")


# a test-only switch: probes named by these globs (comma-separated) report the mechanism missing, as a
# kernel without it would; the kernel matrix uses it to show that a quiet fallback fails its judge
TEST_DISABLE = "MCPWITNESS_TEST_DISABLE_PROBES"


def run_probe(prog_name: str, how: str) -> Probe:
    off = [g for g in os.environ.get(TEST_DISABLE, "").split(",") if g]
    if any(fnmatch.fnmatchcase(prog_name, g) for g in off):
        return Probe(prog_name, False, f"turned off by {TEST_DISABLE} (a test-only switch)")
    path = object_path("probe")
    with libbpf.capture_log() as log:
        obj = libbpf.bpf_object__open_file(path.encode(), None)
        if not obj:
            return Probe(prog_name, False, _err("open probe object", log))
        link = None
        cg_dir = None
        try:
            target = None
            p = libbpf.bpf_object__next_program(obj, None)
            while p:
                is_target = libbpf.bpf_program__name(p).decode() == prog_name
                libbpf.bpf_program__set_autoload(p, is_target)
                libbpf.set_newer_section_type(p)
                if is_target:
                    target = p
                p = libbpf.bpf_object__next_program(obj, p)
            if libbpf.bpf_object__load(obj) != 0:
                return Probe(prog_name, False, _err("load", log))
            if how == "load":
                return Probe(prog_name, True, "loads")
            if how == "attach":
                link = libbpf.bpf_program__attach(target)
            elif how == "uprobe":
                libc = _libc_path()
                if not libc:
                    return Probe(prog_name, False, "no libc mapped to attach to")
                opts = libbpf.UprobeOpts(sz=ctypes.sizeof(libbpf.UprobeOpts), func_name=b"getpid")
                link = libbpf.bpf_program__attach_uprobe_opts(target, os.getpid(), libc.encode(), 0,
                                                              ctypes.byref(opts))
            elif how == "uprobe_multi":
                libc = _libc_path()
                off = elf_symbols(libc, {"getpid"}).get("getpid") if libc else None
                if off is None:
                    return Probe(prog_name, False, "no libc getpid to attach to")
                try:
                    os.close(libbpf.uprobe_multi_link(libbpf.bpf_program__fd(target), libc, [off], [0], False,
                                                      pid=os.getpid()))
                except OSError as e:
                    return Probe(prog_name, False, f"attach: {e.strerror}")
                return Probe(prog_name, True, "loads and attaches")
            elif how == "cgroup":
                root = cgroup2_root()
                if not root:
                    return Probe(prog_name, False, "no cgroup2 hierarchy mounted")
                # a cgroup of its own, so that no other process meets the probe; where this
                # user cannot make one (CAP_NET_ADMIN without root, a read-only cgroupfs), the
                # root itself, where the real programs go: the probe program allows everything
                cg_dir = os.path.join(root, f"mcpwitness-probe-{os.getpid()}")
                try:
                    os.makedirs(cg_dir, exist_ok=True)
                except OSError:            # EACCES, or EROFS under ProtectControlGroups=
                    cg_dir = None
                fd = os.open(cg_dir or root, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    link = libbpf.bpf_program__attach_cgroup(target, fd)
                finally:
                    os.close(fd)
            if not link:
                return Probe(prog_name, False, _err("attach", log))
            return Probe(prog_name, True, "loads and attaches")
        finally:
            if link:
                libbpf.bpf_link__destroy(link)
            libbpf.bpf_object__close(obj)
            if cg_dir:
                try:
                    os.rmdir(cg_dir)
                except OSError:
                    pass


