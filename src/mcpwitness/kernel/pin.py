"""Pinned programs: the kernel side outlives its agent (watch --pin).

The first agent loads the programs and pins, under /sys/fs/bpf/mcpwitness/NAME,
every map (maps/), every link (links/) and the programs it attaches later
(progs/: the TLS uprobes). Its state beside them (a JSON file in the state
directory, since bpffs holds only BPF objects) says which object, with which
options and mechanisms. While no agent runs, the links stay attached: the
tracked-process map keeps following trees, a policy keeps refusing, the ring
buffer keeps what happens (until it is full; the kernel counts the rest).

An agent started with the same name adopts them when the object and the
options are the same: no program is loaded, detached or replaced, so nothing
is missed and no policy check is skipped; it opens the pinned maps, reads the
ring from where the last agent stopped, and reloads its policy into the same
maps (the generation switch, kernel/enforce.py). When they differ (another
version, other options), the pinned programs are removed and loaded again,
and the start record says why: that is the one case with a gap.

`mcpwitness unload` removes the pins, which detaches everything.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict

from . import libbpf
from .loader import Kernel, LoadOptions
from .system import BPFFS, ensure_mount, object_path

PIN_ROOT = os.path.join(BPFFS, "mcpwitness")
STATE_VERSION = 1
# the load options that must be the same to adopt (the rest does not change the programs)
_SAME = ("ring_size", "max_procs", "argv_max", "io_max", "watch", "enforce", "lsm", "ports", "tls", "uprobe_multi",
         "hooks", "wakeups")



def pin_dir(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"not a pin name: {name!r} (letters, digits, - and _)")
    return os.path.join(PIN_ROOT, name)


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _opts(options: LoadOptions) -> dict:
    d = asdict(options)
    d["ports"] = list(d["ports"])
    return {k: d[k] for k in _SAME}


def read_state(state_file: str) -> dict | None:
    try:
        with open(state_file) as f:
            st = json.load(f)
        return st if isinstance(st, dict) and st.get("v") == STATE_VERSION else None
    except (OSError, ValueError):
        return None


def write_state(state_file: str, st: dict) -> None:
    os.makedirs(os.path.dirname(state_file), mode=0o700, exist_ok=True)
    tmp = f"{state_file}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(st, f)
    os.replace(tmp, state_file)


def open_pinned(options: LoadOptions, name: str, state_file: str) -> tuple[Kernel, dict]:
    """The kernel programs for watch --pin NAME: adopted from the pins when
    they match, else loaded and pinned. Returns (kernel, what happened)."""
    d = pin_dir(name)
    mounted = ensure_mount(BPFFS, "bpf")
    if not mounted.startswith(("mounted", "was mounted")):
        raise OSError(errno.ENOENT, f"bpffs at {BPFFS}: {mounted}: --pin needs it")
    path = object_path()
    digest = _digest(path)
    st = read_state(state_file)
    owner = _live_agent(st.get("agent_pid") if st else None)
    if owner is not None and os.path.isdir(d):
        raise OSError(errno.EBUSY, f"the pinned programs {name!r} are read by a running agent (pid {owner}): "
                                   "two agents on one ring would each see half of it")
    replaced = None
    if st is not None and os.path.isdir(d):
        why = None
        if st.get("object") != digest:
            why = "the pinned programs are from another build of mcpwitness"
        elif st.get("options") != _opts(options):
            diff = sorted(k for k, v in _opts(options).items() if st["options"].get(k) != v)
            why = f"the pinned programs were loaded with other options ({', '.join(diff)})"
        if why is None:
            try:
                k = _adopt(d, st, options)
                return k, {"name": name, "dir": d, "adopted": True, "pinned_at": st.get("pinned_at"),
                           "previous_agent_pid": st.get("agent_pid"), "replaced": None}
            except OSError as e:
                why = f"the pinned programs could not be adopted ({e.strerror or e})"
        replaced = why + ": removed and loaded again (the one case with a gap)"
        unload(name, state_file)
    elif os.path.isdir(d):
        replaced = "pins without a state file: removed and loaded again"
        unload(name, state_file)
    k = Kernel.load(options)
    try:
        _pin(k, d)
        st = {"v": STATE_VERSION, "object": digest, "options": _opts(options), "pinned_at": time.time(),
              "agent_pid": os.getpid(), "hooks": k.hooks, "programs": k.programs, "skipped": k.skipped,
              "refused": k.refused, "mechanisms": k.mechanisms, "lsm_bits": k.lsm_bits,
              "fallback_reason": k.fallback_reason, "uprobe_multi": k.uprobe_multi, "mounts": k.mounts,
              "maps": sorted(k.pinned_maps), "progs": sorted(k.prog_pins)}
        write_state(state_file, st)
    except BaseException:
        k.close()
        _remove(d)
        raise
    return k, {"name": name, "dir": d, "adopted": False, "pinned_at": st["pinned_at"], "previous_agent_pid": None,
               "replaced": replaced}


def _live_agent(pid) -> int | None:
    """pid, if it is a running mcpwitness other than this process."""
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return None
    return pid if b"mcpwitness" in cmd else None


def _pin(k: Kernel, d: str) -> None:
    for sub in ("maps", "links", "progs"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    with libbpf.capture_log() as log:
        for name, m in k.maps.items():
            if "." in name:              # .rodata and .bss: the programs hold them
                continue
            libbpf.check_int(libbpf.bpf_map__pin(m, os.path.join(d, "maps", name).encode()), f"pin map {name}", log)
            k.pinned_maps.add(name)
        for name, link in k.link_of.items():
            libbpf.check_int(libbpf.bpf_link__pin(link, os.path.join(d, "links", name).encode()),
                             f"pin link {name}", log)
        for name, sec in k.programs.items():
            if name not in k.skipped and sec.startswith(("uprobe", "uretprobe")):
                libbpf.check_int(libbpf.bpf_program__pin(k.progptr[name], os.path.join(d, "progs", name).encode()),
                                 f"pin program {name}", log)
                k.prog_pins.add(name)
    k.pin_dir = d


def _adopt(d: str, st: dict, options: LoadOptions) -> Kernel:
    k = Kernel(obj=0, options=options, mounts=st.get("mounts") or {})
    k.programs, k.skipped, k.refused = st["programs"], st["skipped"], st.get("refused") or {}
    k.mechanisms, k.lsm_bits = st.get("mechanisms") or {}, st.get("lsm_bits", 0)
    k.fallback_reason, k.uprobe_multi, k.hooks = st.get("fallback_reason"), st.get("uprobe_multi", False), st["hooks"]
    links = os.listdir(os.path.join(d, "links"))
    if not links:
        raise OSError(errno.ENOENT, "no pinned links")
    try:
        for name in st["maps"]:
            k.map_fds[name] = _get(os.path.join(d, "maps", name))
        for name in st.get("progs", []):
            k.prog_fds[name] = _get(os.path.join(d, "progs", name))
    except OSError:
        k.close()
        raise
    k.pin_dir = d
    return k


def _get(path: str) -> int:
    fd = libbpf.bpf_obj_get(path.encode())
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{path}: {os.strerror(e)}")
    return fd


def _remove(d: str) -> int:
    """Unpin everything under d (the links first: that detaches them). Returns how many."""
    n = 0
    for sub in ("links", "progs", "maps"):
        p = os.path.join(d, sub)
        for name in sorted(os.listdir(p)) if os.path.isdir(p) else ():
            try:
                os.unlink(os.path.join(p, name))
                n += 1
            except OSError:
                pass
        try:
            os.rmdir(p)
        except OSError:
            pass
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(d, ignore_errors=True)
    return n


def unload(name: str, state_file: str | None) -> int:
    """Remove the pinned programs NAME and their state. Returns the pins removed."""
    n = _remove(pin_dir(name))
    if state_file:
        try:
            os.unlink(state_file)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(PIN_ROOT)
    except OSError:
        pass
    return n
