"""The running agent: kernel programs -> ring reader -> decoder -> sink,
on one consumer thread, plus the two ways a tree gets tracked:

- spawn_tracked(): fork CMD, hold it before exec, put it in the kernel map,
  then let it exec: CMD runs no instruction untracked.
- attach(): put a running process and its existing descendants in the map
  (parents first, rescanned until stable), from /proc.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import threading
import time
from collections import Counter, deque
from typing import Callable

from . import __version__
from .audit import Auditor
from .events import (RECORD_SIZE, ConnectEvent, Decoder, ExecEvent, ExitEvent, ForkEvent, IoEvent, OpenEvent,
                     PolicyEvent, SockEvent, StdioEvent)
from .http import HttpReassembler, SessionEnd
from .flags import Flagger
from .loader import MECH_UNIX_CGROUP, Kernel, LoadOptions
from .proc import ProcStat, ProcTable, all_stats, descendants, identity, read_cgroup, read_stat, stdio as proc_stdio
from .mcp import McpDecoder
from .redact import Redactor
from .ringbuf import records
from .streams import Frame, Reassembler


class CommandNotFound(Exception):
    pass


class Agent:
    def __init__(self, sink, options: LoadOptions | None = None,
                 on_event: Callable | None = None, reader: str = "batch", backlog_max: int = 512 << 20,
                 redactor: Redactor | None = None, coalesce: float = 0.005,
                 accept: Callable[[int], bool] | None = None, flagger: Flagger | None = None,
                 linger: float = 10.0, call_timeout: float = 300.0, policy_path: str | None = None):
        pset = None
        if policy_path is not None:
            from .policy import load as load_policy
            pset = load_policy(policy_path)  # PolicyError: refused before anything is loaded
            options = options or LoadOptions()
            options.enforce = True
        self.kernel = Kernel.load(options)
        self.policy_path = policy_path
        self.enforcer = None
        self._policy_stamp = None
        self._reload_requested = False
        self.root_policy: dict[int, tuple[int, object]] = {}   # root -> (slot, Identity)
        self.policy_errors = 0
        if pset is not None:
            from .enforce import Enforcer
            self.enforcer = Enforcer(self.kernel)
            try:
                self.enforcer.apply(pset)
            except BaseException:
                self.kernel.close()
                raise
            self._policy_stamp = _stamp(policy_path)
        self._unix_in_userspace = self.enforcer is not None and self.kernel.mechanisms.get("unix") != MECH_UNIX_CGROUP
        # "libbpf": libbpf's own per-record callback consumer, the reference
        self.reader = self.kernel.libbpf_reader() if reader == "libbpf" else self.kernel.batch_reader()
        self.table = ProcTable()
        self.decoder = Decoder(ancestry=self.table.extend)
        self.streams = Reassembler()
        self.tls = None
        if options is None or options.tls:
            from .tls import TlsProbes
            # host-wide only where the processes are not known in advance (--port)
            self.tls = TlsProbes(self.kernel, per_process=not (options and options.ports))
            if not self.tls.per_process:
                self.tls.add_system()
        self._tls_look = 0
        self._tls_scans: dict[int, int] = {}  # pid -> times its maps were looked at for a libssl
        self.http = HttpReassembler(wall=self.decoder.wall_time, stop_stream=self.kernel.stop_stream)
        self._idents: dict[int, tuple] = {}  # pid -> (exe, argv): what its exec or /proc said, for after it exits
        self.mcp = McpDecoder(redactor or Redactor(), wall=self.decoder.wall_time, identity=self._identity)
        self.audit = Auditor(flagger, wall=self.decoder.wall_time, redact=self.mcp.redactor.text,
                             linger_ns=int(linger * 1e9), timeout_ns=int(call_timeout * 1e9))
        self.sink = sink
        self.on_event = on_event
        self.counts: Counter = Counter()
        self.exits: dict[int, ExitEvent] = {}
        self.roots: set[int] = set()
        self.rejected: set[int] = set()
        self.accept = accept          # watch mode: keep a process the kernel discovered?
        self.watch = bool(options and options.watch)
        self.errors: list[str] = []
        self.backlog_max = backlog_max
        self.coalesce = coalesce                   # seconds to gather records after a wake-up
        self.coalesce_bytes = 1 << 20
        self._backlog: deque = deque()
        self._backlog_bytes = 0
        self.backlog_peak = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()     # drain thread: stop
        self._drained = threading.Event()  # process thread: nothing more will come
        self._threads: list[threading.Thread] = []
        self.started = time.time()
        self.metrics = None            # metrics.MetricsServer, set by the CLI

    # --- consumer ---------------------------------------------------------
    # Two threads: one drains the kernel ring into a userspace backlog as fast
    # as memcpy allows (so a burst never fills the ring while events are being
    # decoded), one decodes the backlog and writes the sink. When the backlog
    # reaches backlog_max the drain thread waits: the kernel ring then fills
    # and the kernel counts what it cannot store. Losses have one source.
    def start(self) -> None:
        for target, name in ((self._drain_loop, "mcpwitness-drain"), (self._process_loop, "mcpwitness-decode")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self):
        r = self.reader
        return r.read_blob() if hasattr(r, "read_blob") else r.read()

    def _push(self, batch) -> None:
        size = len(batch) if isinstance(batch, bytes) else len(batch) * RECORD_SIZE
        with self._cond:
            self._backlog.append(batch)
            self._backlog_bytes += size
            self.backlog_peak = max(self.backlog_peak, self._backlog_bytes)
            self._cond.notify_all()
            while self._backlog_bytes > self.backlog_max and not self._stop.is_set():
                self._cond.wait(0.1)

    def _drain_loop(self) -> None:
        pending = getattr(self.reader, "pending_bytes", None)
        while not self._stop.is_set():
            try:
                if self.reader.wait(0.1):
                    # the kernel wakes us at the first record after we caught
                    # up: let a few milliseconds of records gather, so a
                    # conversation is read, decoded and written in batches
                    # rather than a thread hand-off and a write per message
                    if self.coalesce and pending is not None and pending() < self.coalesce_bytes:
                        self._stop.wait(self.coalesce)
                    while not self._stop.is_set():
                        batch = self._read()
                        if not len(batch):
                            break
                        self._push(batch)
            except Exception as e:  # keep draining; reported in the stats record
                self.errors.append(f"drain: {type(e).__name__}: {e}")
                time.sleep(0.01)

    def _process_loop(self) -> None:
        last_tick = last_policy_look = 0
        while True:
            batch = None
            with self._cond:
                if not self._backlog and not self._drained.is_set():
                    self._cond.wait(0.1)
                if self._backlog:
                    batch = self._backlog.popleft()
                    self._backlog_bytes -= len(batch) if isinstance(batch, bytes) else len(batch) * RECORD_SIZE
                    self._cond.notify_all()
                elif self._drained.is_set():
                    return
            try:
                if batch is not None:
                    self._process(self.decoder.feed(records(batch) if isinstance(batch, bytes) else batch))
                now = time.monotonic_ns()
                if now - last_tick > 100_000_000:  # call timers: linger, timeouts
                    last_tick = now
                    self.sink.write(self.audit.tick(now))
                    if self.tls is not None and now - self._tls_look > 2e9:
                        self._tls_look = now
                        self._look_for_tls()
                    if self.enforcer is not None and (self._reload_requested or now - last_policy_look > 1e9):
                        last_policy_look = now
                        self._maybe_reload()
            except Exception as e:
                self.errors.append(f"decode: {type(e).__name__}: {e}")

    def _process(self, events) -> None:
        batch = []
        for ev in events:
            t = type(ev)
            if self.watch and ev.root not in self.roots and not ((t is IoEvent or t is SockEvent) and ev.untracked):
                if ev.root in self.rejected or not self._discovered(ev, batch):
                    self.counts["dropped_by_filter"] += 1
                    continue
            self.counts[t.__struct_config__.tag] += 1
            if t is IoEvent:
                # raw payload bytes hold secrets: never written as they are,
                # only as decoded, redacted MCP records
                if self.on_event is not None:
                    self.on_event(ev)
                if ev.kind == "tcp" or ev.kind == "tls":
                    self._from_http(self.http.feed(ev), batch)
                else:
                    for frame in self.streams.feed(ev):
                        batch.extend(self.mcp.feed(frame))
                continue
            if t is SockEvent:
                if ev.binding == "closed":
                    frames, convs = self.http.closed(ev.inode)
                    self._from_http(frames, batch)
                    for conv in convs:
                        batch.extend(self.mcp.end_conv(conv, ev.ktime_ns))
                elif ev.family == "unix":
                    self.streams.sock(ev)
                else:
                    self.http.sock(ev)
                continue
            if t is StdioEvent:
                self.mcp.stdio(ev.pid, ev.stdin, ev.stdout)
                continue
            batch.append(ev)  # ThreadEvents too: audit.py uses them and does not pass them on
            if self.enforcer is not None:
                self._policy_event(ev, batch)
            if t is OpenEvent:
                if self.tls is not None and ev.result is not None and "libssl" in ev.path:
                    self.tls.opened(ev.pid, ev.resolved or ev.path)
            elif t is ExecEvent:
                if ev.result == 0:
                    self._idents[ev.pid] = (ev.exe or ev.filename, ev.argv)
                    if len(self._idents) > 65536:
                        del self._idents[next(iter(self._idents))]
                if self.tls is not None and ev.result == 0 and ev.exe:
                    self.tls.execed(ev.pid, ev.exe)
            elif t is ForkEvent:
                self.table.add(ev.child_pid, ev.pid)
                self.mcp.forked(ev.pid, ev.child_pid)
                if self.tls is not None:
                    self.tls.forked(ev.pid, ev.child_pid)
            elif t is ExitEvent:
                self.exits[ev.pid] = ev
                if self.tls is not None:
                    self.tls.exited(ev.pid)
                # a process that died mid-message: what it left is kept
                for frame in self.streams.flush(ev.pid):
                    batch.extend(self.mcp.feed(frame))
                self._from_http(self.http.flush(ev.pid), batch)
                batch.extend(self.mcp.end_process(ev.pid, ev.ktime_ns))
            if self.on_event is not None:
                self.on_event(ev)
        self.sink.write(self.audit.feed(batch))

    def _from_http(self, items, batch: list) -> None:
        """http.py's output: frames to the MCP decoder, session ends to it,
        transport notices as they are."""
        for x in items:
            t = type(x)
            if t is Frame:
                batch.extend(self.mcp.feed(x))
            elif t is SessionEnd:
                batch.extend(self.mcp.end_conv(x.conv, x.ktime_ns))
            else:
                batch.append(x)

    def _discovered(self, ev, batch: list) -> bool:
        """The kernel started tracking ev.root on its own (watch mode): keep it
        if the filters accept it, and follow the children it already has."""
        root = ev.root
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
        exe, cmdline = self._remember(root)  # first: a short-lived server may be gone soon
        if self.tls is not None:
            self.tls.add_process(root)
        policy = None
        if self.enforcer is not None:
            # before its children are seeded, so that they are tracked with it
            slot = self._policy_for_pid(root)
            self.kernel.set_policy(root, slot)
            policy = self.enforcer.policy_name(slot)
        seeded = self._seed_descendants(root, [])
        if self.tls is not None:
            for p in seeded:
                self.tls.add_process(p)
        if self.enforcer is not None:  # children forked since the kernel found it
            self.kernel.set_policy(root, self.root_policy[root][0])
        batch.append({"type": "discovered", "time": self.decoder.wall_time(ev.ktime_ns), "ktime_ns": ev.ktime_ns,
                      "pid": root, "comm": ev.comm, "exe": exe, "cmdline": cmdline, "ppid": ev.ppid,
                      "cgroup_id": ev.cgroup_id, "children_seeded": seeded, "policy": policy,
                      "reason": "spoke HTTP or JSON on a watched port" if type(ev) is SockEvent
                      or (type(ev) is IoEvent and ev.kind in ("tcp", "tls")) else
                      "read a JSON-RPC request on a pipe or Unix socket"})
        return True

    def _seed_descendants(self, root: int, root_ancestors: list[int]) -> list[int]:
        """Track the live descendants of a tracked root, parents first,
        rescanning until stable. Returns the pids seeded."""
        stats = all_stats()
        lineage: dict[int, list[int]] = {root: root_ancestors}
        used: dict[int, ProcStat] = {}
        for _ in range(10):
            new = 0
            for child, parent in descendants(root, stats):
                if child in lineage or parent not in lineage:
                    continue
                anc = [parent] + lineage[parent]
                self.kernel.track(child, stats[child], root=root, ancestors=anc,
                                  policy=self.root_policy.get(root, (0,))[0])
                self.table.add(child, parent)
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
        self._remember(pid)
        fds = proc_stdio(pid)
        if fds is not None:
            self.mcp.stdio(pid, *fds)

    def _remember(self, pid: int) -> tuple:
        """(exe, argv) of a process found running, kept for when /proc no longer says."""
        ident = identity(pid)
        if ident[0] is not None or ident[1]:
            self._idents[pid] = ident
        return ident

    def _identity(self, pid: int) -> tuple:
        """(exe, argv) of pid: from /proc while it runs, else from its exec or from when it was found."""
        ident = identity(pid)
        if ident[0] is None and not ident[1]:
            return self._idents.get(pid, ident)
        return ident

    def stop(self, settle: float = 0.05, unload: bool = True) -> dict:
        """Stop, drain what the kernel already wrote, decode all of it, write
        the stats record and unload (unless unload=False: the caller unloads,
        see cli._unload_in_background). Returns the stats record."""
        if settle:
            time.sleep(settle)
        self._stop.set()
        if self._threads:
            self._threads[0].join()
        while True:  # what came after the drain thread's last look
            batch = self._read()
            if not len(batch):
                break
            self._push(batch)
        self._drained.set()
        with self._cond:
            self._cond.notify_all()
        if len(self._threads) > 1:
            self._threads[1].join()
        else:  # never started: decode here
            while self._backlog:
                b = self._backlog.popleft()
                self._process(self.decoder.feed(records(b) if isinstance(b, bytes) else b))
        self._process(self.decoder.flush())
        tail = []
        for frame in self.streams.flush():
            tail.extend(self.mcp.feed(frame))
        self._from_http(self.http.flush(), tail)
        now = time.monotonic_ns()
        tail.extend(self.mcp.end_all(now))
        self.sink.write(self.audit.feed(tail))
        self.sink.write(self.audit.flush(time.monotonic_ns()))
        stats = self.stats()
        self.sink.write_record(stats)
        self.reader.close()
        if self.tls is not None:
            self.tls.give_back()  # detached with the rest, here or in the unloading child
        if unload:
            self.kernel.close()
        return stats

    def stats(self) -> dict:
        kc = self.kernel.counters()
        detect = self._detect()
        still = sorted(self.kernel.tracked())
        return {
            "type": "stats",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": __version__,
            "events": dict(self.counts),
            "kernel": kc,
            "lost": {
                "events": kc.get("ringbuf_full_events", 0),
                "event_chunks": kc.get("ringbuf_full_chunks", 0),
                "untracked_children": kc.get("proc_map_full", 0),
            },
            "decoder": dict(self.decoder.stats),
            "streams": dict(self.streams.stats),
            "http": dict(self.http.stats),
            "tls_errors": self.tls.errors[-10:] if self.tls is not None else None,
            "tls_libraries": [lib["path"] for lib in self.tls.report()] if self.tls is not None else None,
            "tls_processes": self.tls.attached_total if self.tls is not None else None,
            "mcp": dict(self.mcp.stats),
            "attribution": dict(self.audit.attr.stats),
            "calls": dict(self.audit.stats),
            "redactions": self.mcp.redactor.count,
            "policy": {"reloads": self.enforcer.reloads - 1, "refused_reloads": self.policy_errors,
                       "generation": self.enforcer.gen} if self.enforcer is not None else None,
            "ring_discarded": self.reader.discarded,
            "backlog_peak_bytes": self.backlog_peak,
            "still_running": still,
            "discovered": sorted(self.roots) if self.watch else None,
            "rejected_by_filter": len(self.rejected),
            "errors": self.errors[-20:],
            "detect": detect.stats() if detect is not None else None,
            "store": self._store_stats(),
        }

    def _store_stats(self) -> dict | None:
        from .sinks import find_store
        st = find_store(self.sink)
        return dict(st.stats) if st is not None else None

    # --- tracking ---------------------------------------------------------
    def start_record(self, **extra) -> None:
        u = os.uname()
        self.sink.write_record({
            "type": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": __version__, "agent_pid": os.getpid(), "kernel": u.release, "arch": u.machine,
            "mechanisms": {"process": "tp_btf sched_process_fork/exec/exit",
                           "open": "tracepoint syscalls sys_exit_open*",
                           "connect": "tracepoint syscalls sys_exit_connect",
                           "exec_failures": "tracepoint syscalls sys_exit_execve*",
                           "payload": "tracepoint syscalls sys_exit_{read,write,readv,writev,recvfrom,sendto,"
                                      "recvmsg,sendmsg} on pipes, Unix sockets, pty slaves and TCP sockets",
                           "stdio": "fds 0 and 1 at tp_btf sched_process_exec and at watch discovery",
                           "watch": self.watch, "ports": list(self.kernel.options.ports) or None},
            "programs_skipped": self.kernel.skipped, "mounts": self.kernel.mounts,
            "tls": {"mechanism": ("uprobe_multi links" if self.kernel.uprobe_multi else "uprobes")
                    + " on SSL_read/SSL_write(_ex), SSL_do_handshake, "
                    + ("per tracked process that maps a libssl" if self.tls.per_process else "host-wide"),
                    "libraries": self.tls.report()} if self.tls is not None else None,
            "policy": self.policy_record() if self.enforcer is not None else None,
            "detect": self._detect().engine.describe() if self._detect() is not None else None, **extra})

    def attach(self, pid: int) -> list[int]:
        """Track a running process and its descendants. Returns the pids tracked."""
        stats = all_stats()
        if pid not in stats:
            raise ProcessLookupError(pid)
        self.kernel.track(pid, stats[pid], root=pid, ancestors=[], policy=self._policy_for_pid(pid))
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
        lineage = [pid] + self._seed_descendants(pid, [])
        if self.tls is not None:  # already running: its libraries are mapped by now
            for p in lineage:
                self.tls.add_process(p)
        return sorted(lineage)

    def spawn_tracked(self, argv: list[str], env: dict | None = None) -> int:
        """Start argv tracked before its first instruction, under the policy
        its identity matches. Returns its pid."""
        ident = None
        tls_exe = None
        if self.tls is not None:  # an executable with OpenSSL inside (node): probed before it runs
            tls_exe = resolve_command(argv[0])
            if tls_exe and not self.tls.per_process:
                self.tls.add(os.path.realpath(tls_exe))
        if self.enforcer is not None:  # the child runs in our cgroup until it moves itself
            from .policy import Identity
            exe = resolve_command(argv[0])
            ident = Identity.of(os.path.realpath(exe) if exe else None, argv, read_cgroup("self"))
        slot = self._match(ident)
        pid = spawn_tracked(self.kernel, argv, env, policy=slot)
        self.roots.add(pid)
        if tls_exe and self.tls.per_process:
            self.tls.add(os.path.realpath(tls_exe), pid)
        if ident is not None:
            self.root_policy[pid] = (slot, ident)
        return pid

    # --- policy -------------------------------------------------------------
    def _match(self, ident) -> int:
        return self.enforcer.match(ident)[0] if ident is not None else 0

    def _policy_for_pid(self, pid: int) -> int:
        """Match a running root against the policies; remember it for reloads."""
        if self.enforcer is None:
            return 0
        from .policy import Identity
        exe, cmdline = identity(pid)
        ident = Identity.of(exe, cmdline or [], read_cgroup(pid))
        slot = self._match(ident)
        self.root_policy[pid] = (slot, ident)
        return slot

    def _policy_event(self, ev, batch: list) -> None:
        """With a policy: name the policy and rule of a policy event (in place),
        and judge Unix paths where the kernel could not (a new event)."""
        if isinstance(ev, PolicyEvent):
            self._name_policy(ev)
        elif isinstance(ev, ConnectEvent) and ev.unix_path and ev.policy_slot and self._unix_in_userspace:
            pe = self._unix_check(ev)
            if pe is not None:
                batch.append(pe)

    def _name_policy(self, ev: PolicyEvent) -> None:
        ev.policy = self.enforcer.policy_name(ev.policy_slot)
        r = self.enforcer.rule(ev.rule_id)
        ev.rule = r.describe() if r else None

    def _unix_check(self, ev: ConnectEvent):
        from .enforce import unix_violation
        pe = unix_violation(self.enforcer, ev)
        if pe is not None:
            self.counts["policy_reported_unix"] += 1
            self._name_policy(pe)
        return pe

    def policy_gaps(self) -> list[str]:
        from .enforce import enforcement_gaps
        return enforcement_gaps(self.enforcer.pset, self.enforcer.mechanisms)

    def _look_for_tls(self) -> None:
        """A tracked process may map a libssl of its own (a virtualenv's, a
        bundled one): attach there too. The system's libssl is attached from
        the start; a process is looked at on its first three ticks (2 s apart),
        which catches a late `import ssl`, then left alone."""
        pids = set(self.roots) | {k[0] for k, c in self.http.conns.items() if c.last and not c.last.untracked}
        looked = 0
        for pid in pids:
            n = self._tls_scans.get(pid, 0)
            if n >= 3 or looked >= 64:
                continue
            self._tls_scans[pid] = n + 1
            looked += 1
            self.tls.add_process(pid)
        if len(self._tls_scans) > 65536:
            self._tls_scans = {p: n for p, n in self._tls_scans.items() if p in pids}

    def request_reload(self) -> None:
        """SIGHUP: reload the policy file at the next tick, and the rules."""
        self._reload_requested = True
        detect = self._detect()
        if detect is not None:
            detect.engine.request_reload()

    def _detect(self):
        from .detect import DetectSink
        return self.sink if isinstance(self.sink, DetectSink) else None

    def metrics_text(self) -> str:
        """The Prometheus exposition, for metrics.MetricsServer (its thread)."""
        from .metrics import exposition, families
        for attempt in range(5):  # a counter resized by the decode thread mid-copy: take it again
            try:
                st = self.stats()
                detect = self._detect()
                return exposition(families(st, detect.stats() if detect is not None else None))
            except RuntimeError:
                if attempt == 4:
                    raise
        return ""

    def _maybe_reload(self) -> None:
        forced, self._reload_requested = self._reload_requested, False
        stamp = _stamp(self.policy_path)
        if not forced and stamp == self._policy_stamp:
            return
        self._policy_stamp = stamp
        self.reload_policy()

    def reload_policy(self) -> dict:
        """Load the policy file again and switch to it with no gap; a file
        that does not validate is refused and the running set stays."""
        from .policy import PolicyError, load as load_policy
        rec = {"type": "policy_load", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "path": self.policy_path, "reload": True}
        try:
            pset = load_policy(self.policy_path, first_rule=self.enforcer.next_rule_id())
            self.enforcer.apply(pset)
        except (PolicyError, OSError) as e:
            self.policy_errors += 1
            rec.update(result="refused", error=str(e), running=self.enforcer.pset.digest[:12])
            self.errors.append(f"policy: {e}")
            self.sink.write_record(rec)
            return rec
        moved = {}
        live = {v[1] for v in self.kernel.tracked().values()}
        for root in [r for r in self.root_policy if r not in live]:
            del self.root_policy[root]  # its whole tree has exited: nothing to retag
        for root, (slot, ident) in list(self.root_policy.items()):
            new, _ = self.enforcer.match(ident)
            if new != slot:
                self.root_policy[root] = (new, ident)
                moved[root] = self.kernel.set_policy(root, new)
        rec.update(self.policy_record(), result="applied", retagged={str(k): v for k, v in moved.items()})
        self.sink.write_record(rec)
        return rec

    def policy_record(self) -> dict:
        e = self.enforcer
        return {"path": self.policy_path, "digest": e.pset.digest[:12], "generation": e.gen,
                "mechanisms": e.mechanisms, "fallback_reason": self.kernel.fallback_reason,
                "not_enforceable": self.policy_gaps(),
                "policies": [{"name": p.name, "slot": e.slots[p.name], "mode": p.mode, "match": p.match,
                              "where": p.where} for p in e.pset.policies],
                "servers": {str(r): e.policy_name(s) for r, (s, _) in self.root_policy.items()}}


def _stamp(path: str | None):
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except (OSError, TypeError):
        return None


def resolve_command(argv0: str) -> str | None:
    """The file argv0 names: a path as given, else looked up in PATH."""
    return argv0 if "/" in argv0 else shutil.which(argv0)


def spawn_tracked(kernel: Kernel, argv: list[str], env: dict | None = None, policy: int = 0) -> int:
    """Start argv tracked before its first instruction. Returns its pid."""
    exe = resolve_command(argv[0])
    if not exe or not os.path.isfile(exe):
        raise CommandNotFound(f"{argv[0]}: command not found")
    if not os.access(exe, os.X_OK):
        raise CommandNotFound(f"{argv[0]}: permission denied")
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: wait to be tracked, then become CMD
        try:
            os.close(go_w)
            os.close(err_r)
            for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_DFL)
            _pdeathsig(signal.SIGTERM)
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
