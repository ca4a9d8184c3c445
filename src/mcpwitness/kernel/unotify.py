"""Refuse the call, not the server: a seccomp user-notification filter in the servers `run` starts.

On a kernel without BPF LSM the kernel-side file and exec enforcement is a fallback that kills the
process after the open (or the exec) happened. For the servers it starts itself, `run` can do better:
before the command's first instruction the child installs a seccomp filter that hands every open,
openat, openat2, creat, execve and execveat of the whole tree (filters are inherited) to this
supervisor, which judges the path against the same policy and answers:

- denied (enforce mode): the syscall fails with EPERM and never runs: no file is created or
  truncated, no program replaced; the server gets an error and serves its next call;
- anything else: SECCOMP_USER_NOTIF_FLAG_CONTINUE, the kernel runs the syscall as it would have.

The kernel-side fallback stays armed behind it. CONTINUE lets the kernel read the path again (a
thread could swap it after we read it, seccomp_unotify(2)); the SIGKILL at sys_exit_open* or
sched_process_exec judges what was really opened. So any doubt here (the path cannot be read, the
process is in another mount namespace or root, a /proc magic link, a race) is answered CONTINUE,
and this layer can only turn a kill into a refusal, never let through what the kernel would stop.

If the agent dies, the kernel answers the tree's pending and later opens and execs ENOSYS (fail
closed); `run`'s servers get SIGTERM when their agent dies anyway.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import socket
import struct
import threading
import time
from collections import Counter

from ..policy import ACC_CREATE, ACC_EXEC, ACC_READ, ACC_WRITE, path_decide, path_entries
from ..records import PolicyEvent

MECHANISM = "seccomp user notification (run: refused with EPERM before the syscall ran)"
OUTCOME = "refused before it happened (the syscall never ran; the process goes on)"

SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
SECCOMP_SET_MODE_FILTER, SECCOMP_GET_NOTIF_SIZES = 1, 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF = 0x7FFF0000, 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
PR_SET_NO_NEW_PRIVS = 38
NOTIF = struct.Struct("=QII iIQ6Q")       # struct seccomp_notif: id, pid, flags, seccomp_data
RESP = struct.Struct("=QqiI")             # struct seccomp_notif_resp: id, val, error, flags
IOCTL_RECV = 0xC0000000 | (NOTIF.size << 16) | (0x21 << 8) | 0
IOCTL_SEND = 0xC0000000 | (RESP.size << 16) | (0x21 << 8) | 1
IOCTL_ID_VALID = 0x40000000 | (8 << 16) | (0x21 << 8) | 2
AT_FDCWD = -100
O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2
O_CREAT, O_TRUNC, O_APPEND, O_PATH = 0o100, 0o1000, 0o2000, 0o10000000
PATH_MAX = 4096
RESOLVE_IN_ROOT = 0x10
ALLOWED_TTL = 2.0   # seconds an allowed absolute path stays allowed for the same process and policy

# per architecture: (AUDIT_ARCH_*, {syscall number: (name, index of the path argument, index of the
# dirfd argument or None, index of the flags argument or None)}); x32 numbers carry bit 30
_X86_64 = {2: ("open", 0, None, 1), 257: ("openat", 1, 0, 2), 437: ("openat2", 1, 0, None),
           85: ("creat", 0, None, None), 59: ("execve", 0, None, None), 322: ("execveat", 1, 0, None)}
_X32_BIT = 0x40000000
ARCHES = {
    "x86_64": (0xC000003E, {**_X86_64, **{n | _X32_BIT: v for n, v in _X86_64.items() if v[0] not in
                                          ("execve", "execveat")},
                            520 | _X32_BIT: _X86_64[59], 545 | _X32_BIT: _X86_64[322]}),
    "aarch64": (0xC00000B7, {56: ("openat", 1, 0, 2), 437: ("openat2", 1, 0, None),
                             221: ("execve", 0, None, None), 281: ("execveat", 1, 0, None)}),
}


def wanted(pol) -> bool:
    """A policy in enforce mode with rules on files or execs: the ones this layer refuses. (A server
    started under another policy keeps the kernel's fallback only, even if a reload adds such rules.)"""
    return (pol is not None and pol.mode == "enforce"
            and (bool(pol.paths) or bool(pol.names) or bool(pol.file_default) or bool(pol.exec_default)))


def arch() -> str | None:
    m = platform.machine()
    return m if m in ARCHES else None


def filter_program(machine: str) -> bytes:
    """The classic BPF program: this architecture's open and exec syscalls to the supervisor,
    everything else (other architectures' calls included) allowed."""
    audit, calls = ARCHES[machine]
    nrs = sorted(calls)
    n = len(nrs)
    ins = [(0x20, 0, 0, 4),                       # ld [4]: arch
           (0x15, 0, n + 1, audit)]               # jeq arch, next, else allow
    ins.append((0x20, 0, 0, 0))                   # ld [0]: nr
    for i, nr in enumerate(nrs):                  # jeq nr -> notify
        ins.append((0x15, n - i, 0, nr))
    ins.append((0x06, 0, 0, SECCOMP_RET_ALLOW))
    ins.append((0x06, 0, 0, SECCOMP_RET_USER_NOTIF))
    return b"".join(struct.pack("=HBBI", *i) for i in ins)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(sock: socket.socket) -> None:
    """In the child, before exec: install the filter and hand its listener to the agent through
    sock (the child's end of a socketpair). On failure, send the reason instead; never raises."""
    try:
        machine = arch()
        if machine is None:
            raise OSError(errno.ENOSYS, f"no seccomp table for {platform.machine()}")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        prog = filter_program(machine)
        buf = ctypes.create_string_buffer(prog, len(prog))
        fprog = _Fprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
        nnp = False

        def load():
            return libc.syscall(ctypes.c_long(SYS_SECCOMP[machine]), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                                ctypes.c_long(SECCOMP_FILTER_FLAG_NEW_LISTENER), ctypes.byref(fprog))
        fd = load()
        if fd < 0 and ctypes.get_errno() == errno.EACCES:
            # without CAP_SYS_ADMIN a filter needs no_new_privs: set-user-id programs in the server
            # then run without their privileges (said in the start record)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            nnp = True
            fd = load()
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        socket.send_fds(sock, [b"nnp" if nnp else b"ok"], [fd])
        os.close(fd)
    except BaseException as e:  # the command still runs, under the kernel's fallback
        try:
            sock.sendall(f"error:{e}".encode()[:200])
        except OSError:
            pass
    finally:
        sock.close()


def receive(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, str]:
    """In the agent: the child's listener fd, and what it said ("ok", "nnp" or the error)."""
    sock.settimeout(timeout)
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 256, 1)
    except (OSError, socket.timeout) as e:
        return None, f"error:{e}"
    finally:
        sock.close()
    return (fds[0] if fds else None), msg.decode(errors="replace") or "error:no answer"


def open_access(flags: int) -> int:
    """The kernel fallback's access bits for open flags (bpf/enforce.bpf.h open_access)."""
    if flags & O_PATH:
        return 0
    mode = flags & O_ACCMODE
    acc = ACC_WRITE if mode == O_WRONLY else ACC_READ | ACC_WRITE if mode == O_RDWR else ACC_READ
    if flags & (O_TRUNC | O_APPEND):
        acc |= ACC_WRITE
    if flags & O_CREAT:
        acc |= ACC_CREATE
    return acc


class Unsure(Exception):
    """This layer cannot judge the call as the kernel would: CONTINUE, the kernel judges."""


def _read_str(mem: int, addr: int) -> str:
    out = b""
    while len(out) < PATH_MAX:
        try:
            chunk = os.pread(mem, 256 - (addr + len(out)) % 256, addr + len(out))
        except OSError as e:
            raise Unsure(f"cannot read the path: {e}") from None
        if not chunk:
            raise Unsure("cannot read the path")
        i = chunk.find(b"\0")
        if i >= 0:
            return (out + chunk[:i]).decode("utf-8", "surrogateescape")
        out += chunk
    raise Unsure("path longer than PATH_MAX")


_MAGIC = ("fd", "fdinfo", "map_files", "cwd", "root", "exe", "ns")


def resolve(tid: int, tgid: int, path: str, dirfd: int | None) -> str:
    """The path the kernel would open, as it resolves it, seen from the agent (same root and mount
    namespace, checked by the caller): relative paths against the dirfd or the thread's cwd,
    /proc/self and /proc/thread-self as the calling process's, symlinks and .. followed."""
    if not path:
        raise Unsure("empty path")
    if not path.startswith("/"):
        try:
            base = os.readlink(f"/proc/{tid}/cwd" if dirfd in (None, AT_FDCWD) else f"/proc/{tid}/fd/{dirfd}")
        except OSError as e:
            raise Unsure(f"cannot read the directory: {e}") from None
        if not base.startswith("/") or base.endswith(" (deleted)"):
            raise Unsure("the directory is not a path")
        path = os.path.join(base, path)
    for own, real in (("/proc/thread-self", f"/proc/{tgid}/task/{tid}"), ("/proc/self", f"/proc/{tgid}")):
        if path == own or path.startswith(own + "/"):
            path = real + path[len(own):]
    # the directory must exist for the kernel to get as far as the file (a missing one is its own
    # ENOENT, which realpath's lexical `..` would hide); the last component is followed if a link
    parent, name = os.path.split(path)
    try:
        base = os.path.realpath(parent or "/", strict=True)
    except OSError:
        raise Unsure("a directory on the path does not exist") from None
    out = os.path.join(base, name) if name not in ("", ".", "..") else os.path.realpath(path)
    if os.path.islink(out):
        out = os.path.realpath(out)
    parts = out.split("/")
    if len(parts) > 3 and parts[1] == "proc" and (parts[3] in _MAGIC or (parts[3] == "task" and len(parts) > 5
                                                                            and parts[5] in _MAGIC)):
        raise Unsure("a /proc magic link")
    return out


def _interpreter(path: str) -> str | None:
    """A script's #! interpreter, as the kernel would run it (None: not a script)."""
    try:
        st = os.stat(path)
        if not (st.st_mode & 0o170000 == 0o100000):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            head = os.read(fd, 256)
        finally:
            os.close(fd)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    interp = line.split(None, 1)[0] if line else b""
    return os.fsdecode(interp) if interp.startswith(b"/") else None


class Supervisor:
    """The agent's side: one thread answers the listeners of every server `run` started."""

    def __init__(self, kernel, enforcer, wall_time):
        self.kernel = kernel
        self.enforcer = enforcer
        self.wall_time = wall_time
        self.cgroup_id = cgroup_id
        self.counts: Counter = Counter()
        self.errors: list[str] = []         # what went wrong here (the stats record's errors)
        self.unsure: Counter = Counter()    # why a call was left to the kernel, by reason
        self.notes: list[str] = []          # said on stderr by the caller (no_new_privs, no filter)
        self._listeners: dict[int, int] = {}  # fd -> root pid
        self._lock = threading.Lock()
        self._pending: list[PolicyEvent] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._mntns = self._ns("self")
        self._compiled: dict[int, tuple] = {}
        self._allowed: dict[tuple, tuple] = {}  # (tgid, start, absolute path, access) -> (policy, when)
        self._stop = False
        self._thread: threading.Thread | None = None

    @staticmethod
    def _ns(pid) -> str | None:
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            return None

    # --- listeners ------------------------------------------------------------
    def add(self, fd: int, root: int, said: str = "ok") -> None:
        """The listener of the tree rooted at root (said: "nnp" where no_new_privs had to be set)."""
        with self._lock:
            self._listeners[fd] = root
        self.counts["listeners"] += 1
        if said == "nnp":
            self.counts["no_new_privs"] += 1
            self._note(f"pid {root}: no_new_privs set to install the filter (the agent lacks CAP_SYS_ADMIN): "
                       "set-user-id programs in it run without their privileges")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mcpwitness-unotify", daemon=True)
            self._thread.start()
        os.write(self._wake_w, b"x")

    def failed(self, root: int, said: str) -> None:
        """The child could not install the filter: that server has the kernel's fallback only."""
        self.counts["install_failed"] += 1
        self._note(f"pid {root}: no seccomp filter ({said.removeprefix('error:')}): a denied open or exec "
                   "kills the process (the kernel's fallback)")

    def _note(self, text: str) -> None:
        if len(self.notes) < 20:
            self.notes.append(text)

    def close(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for fd in self._listeners:
                os.close(fd)
            self._listeners.clear()
        if self._wake_r >= 0 and (self._thread is None or not self._thread.is_alive()):
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = -1

    def waiting(self) -> bool:
        return bool(self._pending)

    def merged(self, events):
        """The kernel's events with the refusals put where their kernel time falls."""
        pending = self._pending
        for ev in events:
            if pending and pending[0].ktime_ns < ev.ktime_ns:
                yield from self.take(ev.ktime_ns)
                pending = self._pending
            yield ev

    def take(self, before: int) -> list[PolicyEvent]:
        """The refusals made before kernel time `before` (ns), in order, for the pipeline."""
        with self._lock:
            out = [e for e in self._pending if e.ktime_ns < before]
            if out:
                self._pending = self._pending[len(out):]
        return out

    def stats(self) -> dict:
        return {**self.counts, "left_to_kernel_why": dict(self.unsure.most_common(8)), "notes": self.notes[:5]}

    @staticmethod
    def describe() -> dict:
        """What the start record says about this layer."""
        return {"mechanism": MECHANISM, "syscalls": sorted({v[0] for v in ARCHES[arch()][1].values()}),
                "applies_to": "the commands run starts (and their descendants), policies in enforce mode",
                "behind_it": "the kernel's SIGKILL fallback, for anything this layer leaves to it"}

    # --- the loop -------------------------------------------------------------
    def _loop(self) -> None:
        buf = bytearray(NOTIF.size)
        have: set = set()
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        while not self._stop:
            with self._lock:
                fds = set(self._listeners)
            if fds != have:
                for fd in have - fds:
                    try:
                        p.unregister(fd)
                    except (KeyError, ValueError):
                        pass
                for fd in fds - have:
                    p.register(fd, select.POLLIN)
                have = fds
            try:
                ready = p.poll(1000)
            except InterruptedError:
                continue
            for fd, ev in ready:
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 64)
                    except BlockingIOError:
                        pass
                    continue
                if ev & select.POLLIN:
                    self._one(fd, buf)
                elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    with self._lock:  # every process of that tree is gone
                        if self._listeners.pop(fd, None) is not None:
                            os.close(fd)

    def _one(self, fd: int, buf: bytearray) -> None:
        import fcntl
        buf[:] = bytes(len(buf))
        try:
            fcntl.ioctl(fd, IOCTL_RECV, buf, True)
        except OSError as e:  # ENOENT: the caller died (or was interrupted) before we looked
            if e.errno not in (errno.ENOENT, errno.EINTR):
                self.counts["recv_errors"] += 1
            return
        nid, tid, _, nr, _, _, *args = NOTIF.unpack(buf)
        self.counts["checks"] += 1
        try:
            err, ev = self._judge(fd, nid, tid, nr, args)
        except Unsure as e:
            self.counts["left_to_kernel"] += 1
            if len(self.unsure) < 32 or str(e) in self.unsure:
                self.unsure[str(e)] += 1
            err, ev = 0, None
        except Exception as e:  # a bug here must not stall the server: the kernel judges
            self.counts["errors"] += 1
            if len(self.errors) < 20:
                self.errors.append(f"seccomp supervisor: {type(e).__name__}: {e}")
            err, ev = 0, None
        if ev is not None:  # queued before the answer: whatever the caller does next comes after it
            self.counts["refused"] += 1
            with self._lock:
                self._pending.append(ev)
        resp = RESP.pack(nid, 0, -err if err else 0, 0 if err else SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        try:
            fcntl.ioctl(fd, IOCTL_SEND, bytearray(resp), True)
        except OSError as e:  # ENOENT: the caller died waiting (the syscall never ran either way)
            if e.errno != errno.ENOENT:
                self.counts["send_errors"] += 1

    def _valid(self, fd: int, nid: int) -> None:
        import fcntl
        try:
            fcntl.ioctl(fd, IOCTL_ID_VALID, struct.pack("=Q", nid))
        except OSError:
            raise Unsure("the caller is gone") from None

    def _judge(self, fd: int, nid: int, tid: int, nr: int, args: list[int]) -> tuple[int, PolicyEvent | None]:
        machine = arch()
        call = ARCHES[machine][1].get(nr) if machine else None
        if call is None:
            raise Unsure(f"syscall {nr} is not one this layer judges")
        name, path_arg, dirfd_arg, flags_arg = call
        # the tracking map is keyed by process: a thread's id is not in it, its process's is
        entry = self.kernel.tracked_one(tid)
        tgid = tid
        if entry is None:
            tgid = self._tgid(tid)
            entry = self.kernel.tracked_one(tgid) if tgid != tid else None
        if entry is None:
            return 0, None                      # not tracked (yet): the kernel judges
        start_ns, root, depth, ancestors, _, slot = entry
        pol = self.enforcer.policy(slot) if slot else None
        if pol is None or pol.mode != "enforce":
            return 0, None                      # monitor mode: the kernel reports
        if self._ns(tid) != self._mntns or os.readlink(f"/proc/{tid}/root") != "/":
            raise Unsure("another mount namespace or root")
        try:
            mem = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            if not self.counts["memory_refused"]:
                self._note("cannot read the server's memory (the agent needs CAP_SYS_PTRACE for a server "
                           "with more capabilities than itself): its denied opens and execs are killed by "
                           "the kernel's fallback instead of refused")
            self.counts["memory_refused"] += 1
            raise Unsure("cannot read the caller's memory") from None
        except OSError:
            raise Unsure("the caller is gone") from None
        try:
            raw = _read_str(mem, args[path_arg])
            flags = 0
            if name == "openat2":
                try:  # struct open_how: flags, mode, resolve
                    flags, _, how = struct.unpack("=QQQ", os.pread(mem, 24, args[2]))
                except (OSError, struct.error):
                    raise Unsure("cannot read open_how") from None
                if how & RESOLVE_IN_ROOT:   # the dirfd is the root: resolved otherwise than here
                    raise Unsure("openat2 with RESOLVE_IN_ROOT")
            elif flags_arg is not None:
                flags = args[flags_arg]
            elif name == "creat":
                flags = O_CREAT | O_WRONLY | O_TRUNC
        finally:
            os.close(mem)
        self._valid(fd, nid)                    # the memory read was the caller's, not a reused pid's
        dirfd = ctypes.c_int32(args[dirfd_arg] & 0xFFFFFFFF).value if dirfd_arg is not None else None
        exec_ = name.startswith("exec")
        if exec_ and name == "execveat" and args[4] & 0x1000 and not raw:  # AT_EMPTY_PATH: the fd itself
            raise Unsure("execveat of a descriptor")
        access = ACC_EXEC if exec_ else open_access(flags)
        if not access:
            return 0, None
        # an absolute path this process was just allowed, under the same policy: allowed again (a
        # symlink changed since then is the kernel's to judge: its fallback stays behind)
        key = (tgid, start_ns, raw, access) if raw.startswith("/") and not exec_ else None
        now = time.monotonic()
        if key is not None:
            hit = self._allowed.get(key)
            if hit is not None and hit[0] is pol and now - hit[1] < ALLOWED_TTL:
                self.counts["allowed_cached"] += 1
                return 0, None
        path = resolve(tid, tgid, raw, dirfd)
        # what the kernel fails by itself (no such file, an exec of no regular file) it fails with its
        # own errno, as with BPF LSM, which is never asked then: a search along PATH or an import
        # path goes on as it would
        if exec_ and not os.path.isfile(path) or not exec_ and not access & ACC_CREATE and not os.path.exists(path):
            return 0, None
        judged = [path] + ([i] if exec_ and (i := _interpreter(path)) else [])
        for p in judged:
            rule, denied = path_decide(pol, p, access, pid=tgid, tid=tid, entries=self._entries(pol))
            if denied:
                return errno.EPERM, self._event(tid, self._status(tid), start_ns, root, ancestors[:depth], slot,
                                               rule, denied, "exec" if exec_ else "open", p, flags)
        if key is not None:
            if len(self._allowed) >= 4096:
                self._allowed.clear()
            self._allowed[key] = (pol, now)
        return 0, None

    @staticmethod
    def _tgid(tid: int) -> int:
        """A thread's process id, from the head of its status (Tgid is its fourth line)."""
        try:
            fd = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
            try:
                head = os.read(fd, 512)
            finally:
                os.close(fd)
            i = head.index(b"\nTgid:")
            return int(head[i + 6:head.index(b"\n", i + 6)])
        except (OSError, ValueError):
            raise Unsure("the caller is gone") from None

    def _entries(self, pol) -> list:
        """The policy's compiled path entries, once per policy object (a reload makes new ones)."""
        got = self._compiled.get(id(pol))
        if got is None or got[0] is not pol:
            if len(self._compiled) > 64:
                self._compiled.clear()
            got = self._compiled[id(pol)] = (pol, path_entries(pol))
        return got[1]

    @staticmethod
    def _status(tid: int) -> dict[str, str]:
        try:
            with open(f"/proc/{tid}/status") as f:
                return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            raise Unsure("the caller is gone") from None

    def _event(self, tid, st, start_ns, root, lineage, slot, rule, denied, check, path, flags):
        ktime = time.monotonic_ns()
        tgid = int(st["Tgid"])
        access = [n for b, n in ((ACC_READ, "read"), (ACC_WRITE, "write"), (ACC_CREATE, "create"),
                                 (ACC_EXEC, "exec")) if denied & b]
        return PolicyEvent(self.wall_time(ktime), ktime, tgid, tid, int(st.get("PPid", 0)),
                           int(st.get("Uid", "0").split()[0]), st.get("Name", "")[:15], start_ns,
                           self.cgroup_id(tgid), root, lineage, False, [], check, "denied", OUTCOME, MECHANISM,
                           "EPERM", slot, rule, access, path, None, None, None, flags if check == "open" else None,
                           *self.enforcer.names(slot, rule))


def cgroup_id(pid: int) -> int:
    """The cgroup2 id of pid (the inode of its cgroup directory), as bpf_get_current_cgroup_id says."""
    from ..proc import read_cgroup
    from .system import cgroup2_root
    cg, base = read_cgroup(pid), cgroup2_root()
    if cg is None or base is None:
        return 0
    try:
        return os.stat(base.rstrip("/") + cg).st_ino
    except OSError:
        return 0
