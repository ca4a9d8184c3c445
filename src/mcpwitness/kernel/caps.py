"""Which Linux capabilities each feature needs, measured (docs/deploy.md),
and the check that says which one is missing before anything is loaded.

mcpwitness does not need root. What it needs, feature by feature:

    recording (run, watch)      CAP_BPF, CAP_PERFMON
    other users' processes      CAP_SYS_PTRACE   (watch; run --pid of another user)
    --policy                    CAP_NET_ADMIN    (cgroup connect/sendmsg programs)
    TLS in private directories  CAP_DAC_READ_SEARCH (optional)

CAP_SYS_ADMIN stands in for CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, as the
kernel lets it. The commands mcpwitness starts (`run -- CMD`) get none of
these: the ambient and inheritable sets are cleared before the exec.
"""
from __future__ import annotations

import ctypes
import functools
import os

CAP_BITS = {"CAP_DAC_READ_SEARCH": 2, "CAP_KILL": 5, "CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19,
            "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_MAC_ADMIN": 33, "CAP_PERFMON": 38, "CAP_BPF": 39}

# the kernel accepts CAP_SYS_ADMIN in place of these (bpf_capable, perfmon_capable, bpf_token_capable)
_SYS_ADMIN_COVERS = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}

# feature -> (capabilities, why), in the order the table is documented
FEATURES = {
    "record": (("CAP_BPF", "CAP_PERFMON"),
               "load the programs and maps (CAP_BPF); attach tracepoints, tp_btf, fexit and uprobes and read "
               "kernel and user memory from them (CAP_PERFMON)"),
    "others": (("CAP_SYS_PTRACE",),
               "read other users' processes in /proc: executable, namespaces, stdio fds, mapped libraries "
               "(the server's identity, its policy match, its TLS library)"),
    "policy": (("CAP_NET_ADMIN",),
               "attach the cgroup connect4/6, sendmsg4/6 and connect_unix programs that refuse connects "
               "and UDP sends before any packet leaves (needed even for a policy without network rules: "
               "a reload may add them)"),
    "private_tls": (("CAP_DAC_READ_SEARCH",),
                    "optional: TLS of servers whose executable or libssl is in a directory the agent's user "
                    "cannot search (a Node.js under /root/.nvm)"),
}


MODULE_BTF_WHY = ("libbpf before 1.2 looks for bpf_cast_to_kern_ctx, a kfunc this kernel lacks (it came in 6.2), "
                   "in the modules' BTF too, and listing those takes CAP_SYS_ADMIN (which then stands in for "
                   "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)")


@functools.lru_cache(maxsize=1)
def module_btf_needs_sys_admin() -> bool:
    """True where loading the object takes CAP_SYS_ADMIN after all: an older
    libbpf (Debian 12's 1.1) on a kernel without the one kfunc the object
    may use (Debian 12's 6.1). Measured in the kernel matrix."""
    from . import libbpf
    try:
        if (libbpf.libbpf_major_version(), libbpf.libbpf_minor_version()) >= (1, 2):
            return False
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            return b"bpf_cast_to_kern_ctx\0" not in f.read()
    except (OSError, AttributeError):
        return False


def effective() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has(cap: str, eff: int | None = None) -> bool:
    eff = effective() if eff is None else eff
    if eff >> CAP_BITS[cap] & 1:
        return True
    return cap in _SYS_ADMIN_COVERS and bool(eff >> CAP_BITS["CAP_SYS_ADMIN"] & 1)


def held(eff: int | None = None) -> dict[str, bool]:
    eff = effective() if eff is None else eff
    return {name: has(name, eff) for name in CAP_BITS}


def needed(mode: str, policy: bool, other_users: bool) -> list[str]:
    """The features a command needs: mode 'run' or 'watch'."""
    feats = ["record"] + (["module_btf"] if module_btf_needs_sys_admin() else [])
    if mode == "watch" or other_users:
        feats.append("others")
    if policy:
        feats.append("policy")
    return feats


def missing(features: list[str], eff: int | None = None) -> list[tuple[str, str]]:
    """(capability, why) for each capability these features need and this
    process does not hold."""
    eff = effective() if eff is None else eff
    out = []
    for f in features:
        caps, why = (("CAP_SYS_ADMIN",), MODULE_BTF_WHY) if f == "module_btf" else FEATURES[f]
        out += [(c, why) for c in caps if not has(c, eff)]
    return out


def refusal(command: str, lacking: list[tuple[str, str]]) -> str:
    names = ", ".join(dict.fromkeys(c for c, _ in lacking))
    whys = "; ".join(f"{c}: {w}" for c, w in dict(lacking).items())
    return (f"{command} needs {names}, which this process does not hold ({whys}). Run it as root, or grant "
            f"them (systemd AmbientCapabilities=, setpriv --ambient-caps, a container's securityContext); "
            f"`mcpwitness doctor` lists what each feature needs")


PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def drop_inherited() -> None:
    """In a child about to exec a command: clear the ambient capabilities (and
    so the inheritable path to them), so the command runs with none of the
    agent's. A no-op where the process holds none."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if os.getuid() != 0 and os.geteuid() != 0:
        # without ambient caps a non-root exec keeps no permitted caps; the
        # inheritable set alone only matters for files with file capabilities
        _clear_inheritable(libc)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _clear_inheritable(libc) -> None:
    hdr = _Header(0x20080522, 0)          # _LINUX_CAPABILITY_VERSION_3
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(hdr), data) != 0:
        return
    for d in data:
        d.inheritable = 0
    libc.capset(ctypes.byref(hdr), data)
