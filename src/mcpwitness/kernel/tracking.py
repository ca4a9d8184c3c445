"""Which processes the kernel tracks, put there from userspace: the two
ways a tree starts being tracked, and what a watch-mode agent does with a
process the kernel found on its own.

- spawn_tracked(): fork CMD, hold it before exec, put it in the kernel map,
  then let it exec: CMD runs no instruction untracked.
- Tracker.attach(): put a running process and its existing descendants in
  the map (parents first, rescanned until stable), from /proc.
- Tracker.discovered(): watch mode: keep a process the kernel found (if the
  filters accept it), follow the children it already has.

What the rest of the agent wants to know about a process as it is tracked
(its policy, its TLS libraries, its stdio, its place in the process table)
comes in as callbacks.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import time
from typing import Callable

from ..proc import ProcStat, all_stats, descendants, identity, read_stat, stdio as proc_stdio
from ..records import Discovered, IoEvent, SockEvent
from .loader import Kernel
from .caps import drop_inherited


class CommandNotFound(Exception):
    pass


class Tracker:
    """The tracked roots of one agent and how they got there.

    policy_for(pid) -> slot          the policy a running root gets (0: none)
    policy_of(root) -> slot          the policy its tree has now
    on_process(pid)                  a process is tracked that already ran (TLS: its mapped libraries)
    on_child(child, parent)          a descendant found in /proc (the process table)
    on_stdio(pid, stdin, stdout)     what its stdio is, from /proc
    """

    def __init__(self, kernel, accept: Callable[[int], bool] | None = None, watch: bool = False,
                 policy_for: Callable[[int], int] | None = None, policy_of: Callable[[int], int] | None = None,
                 policy_name: Callable[[int], str | None] | None = None, on_process: Callable | None = None,
                 on_child: Callable | None = None, on_stdio: Callable | None = None, wall=None):
        self.kernel = kernel
        self.accept = accept
        self.watch = watch
        self.policy_for = policy_for or (lambda pid: 0)
        self.policy_of = policy_of or (lambda root: 0)
        self.policy_name = policy_name
        self.on_process = on_process or (lambda pid: None)
        self.on_child = on_child or (lambda child, parent: None)
        self.on_stdio = on_stdio or (lambda pid, stdin, stdout: None)
        self.wall = wall or (lambda ns: "")
        self.roots: set[int] = set()
        self.rejected: set[int] = set()
        self.errors: list[str] = []
        self._idents: dict[int, tuple] = {}  # pid -> (exe, argv): what its exec or /proc said, for after it exits

    # --- identities -----------------------------------------------------------
    def execed(self, pid: int, exe: str, argv: list[str]) -> None:
        self._idents[pid] = (exe, argv)
        if len(self._idents) > 65536:
            del self._idents[next(iter(self._idents))]

    def remember(self, pid: int) -> tuple:
        """(exe, argv) of a process found running, kept for when /proc no longer says."""
        ident = identity(pid)
        if ident[0] is not None or ident[1]:
            self._idents[pid] = ident
        return ident

    def identity(self, pid: int) -> tuple:
        """(exe, argv) of pid: from /proc while it runs, else from its exec or from when it was found."""
        ident = identity(pid)
        if ident[0] is None and not ident[1]:
            return self._idents.get(pid, ident)
        return ident

    # --- watch mode -----------------------------------------------------------
    def admit(self, ev, out: list, reason: str | None = None) -> bool:
        """The kernel started tracking ev.root on its own (watch mode): keep it
        if the filters accept it (a `discovered` record), and follow the
        children it already has. Pipeline callback."""
        root = ev.root
        if root in self.rejected:
            return False
        try:
            ok = self.accept is None or self.accept(root)
        except Exception as e:
            self.errors.append(f"filter: {type(e).__name__}: {e}")
            ok = False
        if not ok:
            self.rejected.add(root)
            self.kernel.untrack(root)
            return False
        self.roots.add(root)
        exe, cmdline = self.remember(root)  # first: a short-lived server may be gone soon
        self.on_process(root)
        # the policy before its children are seeded, so that they are tracked with it
        slot = self.policy_for(root)
        if slot:
            self.kernel.set_policy(root, slot)
        seeded = self.seed(root, [])
        for p in seeded:
            self.on_process(p)
        if slot:  # children forked since the kernel found it
            self.kernel.set_policy(root, self.policy_of(root))
        out.append(Discovered(self.wall(ev.ktime_ns), ev.ktime_ns, root, ev.comm, exe, cmdline, ev.ppid, ev.cgroup_id,
                              seeded, self.policy_name(slot) if self.policy_name is not None else None,
                              reason or ("spoke HTTP or JSON on a watched port" if type(ev) is SockEvent
                                         or (type(ev) is IoEvent and ev.kind in ("tcp", "tls")) else
                                         "read a JSON-RPC request on a pipe or Unix socket")))
        return True

    # --- running processes -------------------------------------------------------
    def attach(self, pid: int) -> list[int]:
        """Track a running process and its descendants. Returns the pids tracked."""
        stats = all_stats()
        if pid not in stats:
            raise ProcessLookupError(pid)
        self.kernel.track(pid, stats[pid], root=pid, ancestors=[], policy=self.policy_for(pid))
        self.roots.add(pid)
        # parents are in the map before their children are looked for, so a
        # child forked meanwhile is caught by the kernel
        try:
            if read_stat(pid).start_ticks != stats[pid].start_ticks:
                raise ProcessLookupError(pid)
        except ProcessLookupError:
            self.kernel.untrack(pid)
            raise
        self._proc_stdio(pid)
        lineage = [pid] + self.seed(pid, [])
        for p in lineage:  # already running: its libraries are mapped by now
            self.on_process(p)
        return sorted(lineage)

    def seed(self, root: int, root_ancestors: list[int]) -> list[int]:
        """Track the live descendants of a tracked root, parents first,
        rescanning until stable. Returns the pids seeded."""
        stats = all_stats()
        lineage: dict[int, list[int]] = {root: root_ancestors}
        used: dict[int, ProcStat] = {}
        slot = self.policy_of(root)
        for _ in range(10):
            new = 0
            for child, parent in descendants(root, stats):
                if child in lineage or parent not in lineage:
                    continue
                anc = [parent] + lineage[parent]
                self.kernel.track(child, stats[child], root=root, ancestors=anc, policy=slot)
                self.on_child(child, parent)
                lineage[child], used[child] = anc, stats[child]
                new += 1
            if not new:
                break
            stats = all_stats()
        # a pid that died (and was perhaps reused) between the scan and the
        # map update is removed; the kernel would refuse a reused one anyway
        for p, st in used.items():
            try:
                alive = read_stat(p).start_ticks == st.start_ticks
            except ProcessLookupError:
                alive = False
            if not alive:
                self.kernel.untrack(p)
                del lineage[p]
            else:
                self._proc_stdio(p)
        return sorted(p for p in lineage if p != root)

    def _proc_stdio(self, pid: int) -> None:
        """A process that was running before it was tracked: what its stdio is, from /proc."""
        self.remember(pid)
        fds = proc_stdio(pid)
        if fds is not None:
            self.on_stdio(pid, *fds)

    def spawn(self, argv: list[str], env: dict | None = None, policy: int = 0, supervisor=None) -> int:
        pid = spawn_tracked(self.kernel, argv, env, policy=policy, supervisor=supervisor)
        self.roots.add(pid)
        return pid


def resolve_command(argv0: str) -> str | None:
    """The file argv0 names: a path as given, else looked up in PATH."""
    return argv0 if "/" in argv0 else shutil.which(argv0)


def spawn_tracked(kernel: Kernel, argv: list[str], env: dict | None = None, policy: int = 0,
                  supervisor=None) -> int:
    """Start argv tracked before its first instruction. Returns its pid. With a supervisor
    (kernel/unotify.py), the command's opens and execs are judged by it before they run."""
    exe = resolve_command(argv[0])
    if not exe or not os.path.isfile(exe):
        raise CommandNotFound(f"{argv[0]}: command not found")
    if not os.access(exe, os.X_OK):
        raise CommandNotFound(f"{argv[0]}: permission denied")
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if supervisor is not None else None
    pid = os.fork()
    if pid == 0:  # child: wait to be tracked, then become CMD
        try:
            os.close(go_w)
            os.close(err_r)
            for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_DFL)
            _pdeathsig(signal.SIGTERM)
            drop_inherited()           # the command gets none of the agent's capabilities
            if pair is not None:       # from here on its opens and execs wait for the supervisor
                pair[0].close()
                from .unotify import install
                install(pair[1])
            os.read(go_r, 1)
            os.close(go_r)
            if env is None:
                os.execv(exe, argv)
            os.execve(exe, argv, env)
        except BaseException as e:
            try:
                os.write(err_w, f"{getattr(e, 'errno', 0) or 0}:{e}".encode()[:200])
            finally:
                os._exit(127)
    os.close(go_r)
    os.close(err_w)
    if pair is not None:
        from .unotify import receive
        pair[1].close()
        fd, said = receive(pair[0])
        if fd is not None:
            supervisor.add(fd, pid, said)
        else:
            supervisor.failed(pid, said)
    try:
        kernel.track(pid, _wait_stat(pid), root=pid, ancestors=[], policy=policy)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.write(go_w, b"x")
    os.close(go_w)
    msg = os.read(err_r, 256)  # empty once exec succeeded (CLOEXEC)
    os.close(err_r)
    if msg:
        os.waitpid(pid, 0)
        raise CommandNotFound(f"{argv[0]}: {msg.decode(errors='replace').split(':', 1)[-1]}")
    return pid


def _wait_stat(pid: int) -> ProcStat:
    for _ in range(100):
        try:
            return read_stat(pid)
        except ProcessLookupError:
            time.sleep(0.001)
    return read_stat(pid)


def _pdeathsig(sig: int) -> None:
    """CMD gets sig if the agent dies without forwarding (SIGKILL to the agent)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
