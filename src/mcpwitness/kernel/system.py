"""Where the kernel's interfaces are on this host: the object files shipped
with the package, tracefs and bpffs (mounted when missing), the cgroup2
hierarchy, and the memlock limit older kernels charge BPF maps to."""
from __future__ import annotations

import ctypes
import os
import platform
import resource
from importlib import resources

TRACEFS = "/sys/kernel/tracing"
BPFFS = "/sys/fs/bpf"


def object_path(name: str = "mcpwitness") -> str:
    ref = resources.files("mcpwitness") / "bpf" / f"{name}.{platform.machine()}.bpf.o"
    path = str(ref)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no BPF object for {platform.machine()} at {path}: this architecture is not built yet")
    return path


def _mounted(target: str, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target and line.split()[2] == fstype for line in f)


def ensure_mount(target: str, fstype: str) -> str:
    """Mount fstype at target if missing. Returns 'mounted', 'was mounted' or an error."""
    if _mounted(target, fstype):
        return "was mounted"
    if fstype == "tracefs" and _mounted("/sys/kernel/debug", "debugfs") and \
            os.path.isdir("/sys/kernel/debug/tracing/events"):
        return "was mounted (debugfs)"
    os.makedirs(target, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        return f"mount failed: {os.strerror(ctypes.get_errno())}"
    return "mounted"


def raise_memlock() -> None:
    # kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def cgroup2_root() -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return parts[1]
    return None


# enforcement mechanisms, best first, as doctor and block events name them
