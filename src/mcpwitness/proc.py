"""What /proc says about processes: identity, parents, descendants, and
userspace's table of the tracked tree (fed by fork/exec/exit events)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import stat as stat_mod
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    start_ticks: int  # clock ticks since boot: the /proc view of start_boottime


def read_stat(pid: int) -> ProcStat:
    """Raises ProcessLookupError when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(pid) from None
    lp, rp = raw.index(b"("), raw.rindex(b")")
    rest = raw[rp + 2:].split()
    return ProcStat(pid=pid, comm=raw[lp + 1:rp].decode("utf-8", "replace"), state=rest[0].decode(),
                    ppid=int(rest[1]), start_ticks=int(rest[19]))


def all_stats() -> dict[int, ProcStat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                out[int(name)] = read_stat(int(name))
            except (ProcessLookupError, ValueError, IndexError, PermissionError):
                continue
    return out


def descendants(pid: int, stats: dict[int, ProcStat] | None = None) -> list[tuple[int, int]]:
    """(pid, parent) for every live descendant of pid, parents before children."""
    stats = stats if stats is not None else all_stats()
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        for c in sorted(children.get(p, [])):
            out.append((c, p))
            todo.append(c)
    return out


def peak_rss(pid: int | str = "self") -> int | None:
    """A process's peak resident memory in bytes since its exec (VmHWM; getrusage's
    ru_maxrss would also count what its parent had when it was forked)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def read_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode("utf-8", "backslashreplace") for a in raw.split(b"\0")[:-1]]


def read_exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def read_cgroup(pid: int | str) -> str | None:
    """The cgroup v2 path of pid ("self" for this process), None where /proc no longer says."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line.rstrip("\n")[3:]
    except OSError:
        pass
    return None


def under_cgroup(path: str | None, base: str) -> bool:
    """path is the cgroup base or below it ("/" holds everything)."""
    if path is None:
        return False
    base = base.rstrip("/") or "/"
    return base == "/" or path == base or path.startswith(base + "/")


CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def container_id(cgroup: str | None) -> str | None:
    """The container id a cgroup path names (docker, containerd, cri-o, podman), or None."""
    m = CONTAINER_ID.search(cgroup or "")
    return m.group(1) if m else None


# the runtime a container's cgroup names it by: podman (libpod-ID), docker (docker-ID.scope or
# /docker/ID), containerd's CRI (cri-containerd-ID.scope, or an ID under a kubepods pod), CRI-O
# (crio-ID.scope); the conmon monitors beside them (libpod-conmon-, crio-conmon-) are not containers
_RUNTIME = [(re.compile(r"(?:^|/)libpod-([0-9a-f]{64})(?:\.scope)?(?:/|$)"), "podman"),
            (re.compile(r"(?:^|/)docker-([0-9a-f]{64})\.scope(?:/|$)|(?:^|/)docker/([0-9a-f]{64})(?:/|$)"), "docker"),
            (re.compile(r"(?:^|/)cri-containerd-([0-9a-f]{64})\.scope(?:/|$)"), "containerd"),
            (re.compile(r"(?:^|/)crio-([0-9a-f]{64})\.scope(?:/|$)"), "cri-o")]
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)")
_INFO_CACHE: dict[str, dict] = {}


def container_info(cgroup: str | None) -> dict | None:
    """Who a process in this cgroup runs as, container-wise: runtime, id,
    name, image and, under Kubernetes, the pod (uid, namespace, name).
    The id and the pod uid come from the cgroup path; the name and image
    from the runtime's own state (podman's, docker's on disk, kubelet's pod
    log directories). None outside a container; unknown parts are None."""
    cid = container_id(cgroup)
    if cid is None:
        return None
    hit = _INFO_CACHE.get(cid)
    if hit is not None:
        return hit
    runtime = next((rt for rx, rt in _RUNTIME if rx.search(cgroup)), None)
    pod = _POD.search(cgroup)
    if pod and runtime is None:
        runtime = runtime or "cri"          # an id under a kubepods pod with no prefix: some CRI runtime
    info = {"runtime": runtime, "id": cid, "name": None, "image": None, "pod": None}
    if pod:
        info["pod"] = _pod(pod.group(1).replace("_", "-"))
    try:
        if runtime == "podman":
            _podman(cid, info)
        elif runtime == "docker":
            _docker(cid, info)
    except (OSError, ValueError, subprocess.SubprocessError):
        pass                                 # the runtime's state unreadable: id and runtime only
    if len(_INFO_CACHE) > 4096:
        _INFO_CACHE.clear()
    if info["name"] is not None or runtime not in ("podman", "docker"):
        _INFO_CACHE[cid] = info              # a name not found yet may be found next time
    return info


def _podman(cid: str, info: dict) -> None:
    p = subprocess.run(["podman", "container", "inspect", cid, "--format", "json"], capture_output=True,
                       timeout=10, text=True)
    if p.returncode != 0:
        return
    d = json.loads(p.stdout)
    d = d[0] if isinstance(d, list) and d else d
    info["name"] = d.get("Name")
    info["image"] = d.get("ImageName") or (f"rootfs:{d['Rootfs']}" if d.get("Rootfs") else None)
    pod = d.get("Pod")
    if pod and info["pod"] is None:
        info["pod"] = {"uid": pod, "namespace": None, "name": d.get("PodName") or None}


def _docker(cid: str, info: dict) -> None:
    with open(f"/var/lib/docker/containers/{cid}/config.v2.json") as f:
        d = json.load(f)
    info["name"] = (d.get("Name") or "").lstrip("/") or None
    info["image"] = (d.get("Config") or {}).get("Image")


def _pod(uid: str) -> dict:
    """The pod's namespace and name from kubelet's log directory
    (/var/log/pods/NAMESPACE_NAME_UID), where there is one."""
    out = {"uid": uid, "namespace": None, "name": None}
    try:
        for d in os.listdir("/var/log/pods"):
            parts = d.rsplit("_", 1)
            if len(parts) == 2 and parts[1] == uid and "_" in parts[0]:
                out["namespace"], out["name"] = parts[0].split("_", 1)
                break
    except OSError:
        pass
    return out


def namespaces(pid: int) -> dict:
    """Where pid runs: cgroup, container id, PID namespace (its inode and the
    pid inside it), network namespace inode. Missing values are None."""
    out: dict = {"cgroup": read_cgroup(pid), "container": None, "pid_ns": None, "ns_pid": None, "net_ns": None}
    out["container"] = container_id(out["cgroup"])
    if out["container"] is not None:
        info = container_info(out["cgroup"]) or {}
        out["container_runtime"], out["container_name"] = info.get("runtime"), info.get("name")
        out["container_image"], out["pod"] = info.get("image"), info.get("pod")
    for ns in ("pid", "net"):
        try:
            link = os.readlink(f"/proc/{pid}/ns/{ns}")  # "pid:[4026531836]"
            out[f"{ns}_ns"] = int(link[link.index("[") + 1:-1])
        except (OSError, ValueError):
            pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    out["ns_pid"] = int(line.split()[-1])  # the innermost namespace's pid
                    break
    except (OSError, ValueError):
        pass
    return out


def _unix_inodes(pid: int) -> set[int]:
    """Inodes of the Unix sockets in pid's network namespace."""
    out = set()
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) >= 7 and parts[6].isdigit():
                    out.add(int(parts[6]))
    except OSError:
        pass
    return out


def stdio(pid: int):
    """What pid's fd 0 and fd 1 are, from /proc (events.StdioFd each), for a
    process that was already running when it was tracked; None when /proc
    no longer says. The device is given as the kernel encodes it
    (major << 20 | minor), as in the kernel's records. /proc does not name
    a Unix socket's peer: the kernel does, when bytes are captured."""
    from .records import StdioFd
    fds = []
    unix = None
    for n in (0, 1):
        try:
            st = os.stat(f"/proc/{pid}/fd/{n}")
        except FileNotFoundError:
            # closed, or the process is exiting (its fds go while it is read): only an fd table
            # that is still there and lacks it says closed; a wrong "closed" would tie its other
            # end to no stdout for good
            try:
                if not os.listdir(f"/proc/{pid}/fd") or read_stat(pid).state in ("Z", "X"):
                    return None
            except OSError:
                return None
            fds.append(StdioFd(None, 0, 0))
            continue
        except OSError:
            return None
        dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
        mode = st.st_mode
        if stat_mod.S_ISFIFO(mode):
            kind = "pipe"
        elif stat_mod.S_ISSOCK(mode):
            if unix is None:
                unix = _unix_inodes(pid)
            kind = "unix" if st.st_ino in unix else "other"
        elif stat_mod.S_ISCHR(mode) and 136 <= os.major(st.st_rdev) <= 143:
            kind = "tty"
        else:
            kind = "other"
        fds.append(StdioFd(kind, dev, st.st_ino) if kind != "other" else StdioFd(kind, 0, 0))
    return fds[0], fds[1]


def identity(pid: int) -> tuple[str | None, list[str] | None]:
    """(executable, command line) of pid, None where /proc no longer says."""
    return read_exe(pid), read_cmdline(pid)


class ProcTable:
    """Lineage of the tracked tree as userspace learned it: pid -> parent.

    The kernel puts MW_ANCESTORS ancestors in every event; deeper trees are
    completed from here. Entries are kept after exit (events of a process can
    still be in flight), bounded in number.
    """

    def __init__(self, limit: int = 200_000):
        self.parent: dict[int, int] = {}
        self.limit = limit

    def add(self, pid: int, parent: int) -> None:
        if len(self.parent) >= self.limit:
            for k in list(self.parent)[: self.limit // 10]:
                del self.parent[k]
        self.parent[pid] = parent

    def extend(self, pid: int, inline: list[int]) -> list[int]:
        chain = list(inline)
        cur = chain[-1] if chain else pid
        seen = set(chain) | {pid}
        while cur in self.parent and len(chain) < 4096:
            cur = self.parent[cur]
            if cur in seen:
                break
            seen.add(cur)
            chain.append(cur)
        return chain
