"""The running agent: kernel programs -> ring reader -> pipeline -> sink,
on two threads, and its lifecycle (start, ticks, stop, the start and stats
records).

What it is made of, each in its own module: the kernel programs
(kernel/loader.py), the decode stages (decode/pipeline.py), the tracked
roots (kernel/tracking.py), the policy at run time (kernel/enforce.py) and
the TLS probes (kernel/tls.py). The CLI assembles the sink chain (JSON
Lines, store, detection) and hands the agent what it reports on.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Callable

import msgspec

from . import __version__
from .decode.flags import Flagger
from .decode.pipeline import Pipeline
from .decode.redact import Redactor
from .kernel.abi import RECORD_SIZE
from .kernel.loader import (EXEC_SYSCALLS, MECH_EXEC_KILL, MECH_FILE_KILL, OPEN_SYSCALLS, PAYLOAD_SYSCALLS, Kernel,
                            LoadOptions, hook_mechanism)
from .kernel.ringbuf import records
from .kernel.tracking import Tracker, resolve_command
from .proc import ProcTable, peak_rss, read_cgroup, read_stat
from .records import SessionRecord, Start, Stats
from .util import now_iso


class Flush:
    """A backlog entry: the seccomp supervisor's refusals from before `before` (ns) go out here."""
    __slots__ = ("before",)

    def __init__(self, before: int):
        self.before = before

    def __len__(self) -> int:  # no ring bytes in the backlog's account
        return 0


class Agent:
    def __init__(self, sink, options: LoadOptions | None = None,
                 on_event: Callable | None = None, reader: str = "batch", backlog_max: int = 512 << 20,
                 redactor: Redactor | None = None, coalesce: float = 0.05,
                 accept: Callable[[int], bool] | None = None, flagger: Flagger | None = None,
                 linger: float = 10.0, call_timeout: float = 300.0, policy_path: str | None = None,
                 detect=None, store=None, pin: tuple | None = None, identifier=None, publisher=None):
        pset = None
        if policy_path is not None:
            from .policy import load as load_policy
            pset = load_policy(policy_path)  # PolicyError: refused before anything is loaded
            options = options or LoadOptions()
            options.enforce = True
        self.pinned = None                 # watch --pin (kernel/pin.py): (name, state file) -> what happened
        self.adopted_at = 0                # adopted: the kernel time this agent took over (ns)
        self.during_restart = 0            # events from before then, read from the pinned ring
        adopted = {}
        if pin is not None:
            from .kernel.pin import open_pinned, read_state
            self.kernel, self.pinned = open_pinned(options or LoadOptions(), *pin)
            self._pin_state = pin[1]
            if self.pinned["adopted"]:
                self.adopted_at = time.monotonic_ns()
                adopted = read_state(pin[1]) or {}
        else:
            self.kernel = Kernel.load(options)
        self.policy = None                 # kernel.enforce.PolicyRuntime with --policy
        if pset is not None:
            from .kernel.enforce import PolicyRuntime
            try:
                self.policy = PolicyRuntime(self.kernel, policy_path, pset, adopted=adopted.get("policy"))
            except BaseException:
                self.kernel.close()
                raise
        self.enforcer = self.policy.enforcer if self.policy is not None else None
        self.supervisor = None             # kernel.unotify.Supervisor: run's commands refused, not killed
        k = self.kernel
        fallback = k.mechanisms.get("files") == MECH_FILE_KILL or k.mechanisms.get("exec") == MECH_EXEC_KILL
        if self.policy is not None and fallback and k.options.seccomp and not (options and options.watch):
            from .kernel.unotify import Supervisor, arch
            if arch() is not None:
                self.supervisor = Supervisor(k, self.enforcer, lambda t: self.pipeline.decoder.wall_time(t))
        # "libbpf": libbpf's own per-record callback consumer, the reference
        self.reader = self.kernel.libbpf_reader() if reader == "libbpf" else self.kernel.batch_reader()
        self.tls = None
        if options is None or options.tls:
            from .kernel.tls import TlsProbes
            # host-wide only where the processes are not known in advance (--port)
            self.tls = TlsProbes(self.kernel, per_process=not (options and options.ports))
            if not self.tls.per_process:
                self.tls.add_system()
                self.tls.add_running()  # the executables that carry their own TLS (Node), and private libssl copies
        self.watch = bool(options and options.watch)
        self.table = ProcTable()
        self.exits: dict = {}          # pid -> its exit event (run: the command's status)
        pol = self.policy
        self.tracker = Tracker(self.kernel, accept, self.watch,
                               policy_for=pol.for_pid if pol else None, policy_of=pol.slot_of if pol else None,
                               policy_name=pol.enforcer.policy_name if pol else None,
                               on_process=self.tls.add_process if self.tls else None,
                               on_child=self.table.add, on_stdio=lambda pid, i, o: self.pipeline.mcp.stdio(pid, i, o))
        hooks = [self._hook] + ([self.tls.hook] if self.tls else []) + ([pol.hook] if pol else [])
        self.pipeline = Pipeline(redactor=redactor, flagger=flagger, linger_ns=int(linger * 1e9),
                                 call_timeout_ns=int(call_timeout * 1e9), identity=self.tracker.identity,
                                 ancestry=self.table.extend, policy_names=pol.names if pol else None,
                                 stop_stream=self.kernel.stop_stream, admit=self.tracker.admit,
                                 watched=self.tracker.roots if self.watch else None, hooks=hooks,
                                 on_event=on_event, max_message=max(self.kernel.options.io_max, 16 << 20),
                                 identifier=identifier)
        self.tracker.wall = self.pipeline.decoder.wall_time
        if self.tls is not None:
            self.pipeline.mcp.tls_of = self.tls.library_of
            if not self.tls.per_process:  # --port: the kernel says whom to look at
                self.pipeline.on_look = self.tls.add_process
        self.sink = sink
        self.detect = detect           # detect.engine.DetectSink, when detection runs (its stats, reloads)
        self.store = store             # output.store.Store, when there is one (its stats)
        self.publisher = publisher     # fleet.publish.Publisher with --publish (its spool's figures)
        self.errors: list[str] = []
        self.backlog_max = backlog_max
        # seconds to gather records after a wake-up, so that a conversation is decoded and
        # written in batches rather than a thread hand-off and a write per message. Adaptive:
        # coalesce_min while records come now and then (an alert follows its cause within a
        # few ms), coalesce while they stream (bench/mcp_calls.py: agent CPU per call 263 us
        # at 5 ms, 170 us at 50 ms)
        self.coalesce = coalesce
        self.coalesce_min = min(0.005, coalesce)
        self.coalesce_bytes = 1 << 20
        self._backlog: deque = deque()
        self._backlog_bytes = 0
        self.backlog_peak = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()     # drain thread: stop
        self._drained = threading.Event()  # process thread: nothing more will come
        self._threads: list[threading.Thread] = []
        self.started = time.time()
        self.metrics = None            # output.metrics.MetricsServer, set by the CLI
        self.beats = [time.monotonic(), time.monotonic()]   # drain, decode: last time each looked for work
        self._resume = adopted.get("sessions") or []
        self._pin_saved = None
        self._pin_look = 0
        if self.pinned is not None:
            self._save_pin_state()

    # --- pinned programs (watch --pin) --------------------------------------
    def _save_pin_state(self) -> None:
        """What a restarted agent takes over, beside the pins: the policy's
        generation and slots, the sessions open now."""
        from .kernel.pin import read_state, write_state
        snap = {"policy": self.policy.enforcer.snapshot() if self.policy is not None else None,
                "sessions": self.pipeline.mcp.snapshot()}
        if snap == self._pin_saved:
            return
        st = read_state(self._pin_state)
        if st is None:
            return
        st.update(snap, agent_pid=os.getpid())
        try:
            write_state(self._pin_state, st)
            self._pin_saved = snap
        except OSError as e:
            self.errors.append(f"pin state: {e}")

    def _adopt(self) -> None:
        """Take over from the last agent: its sessions, under their ids, and
        the servers the pinned programs track, as discovered ones."""
        from types import SimpleNamespace
        now = time.monotonic_ns()
        out = self.pipeline.mcp.resume(self._resume, now)
        roots = sorted({v[1] for v in self.kernel.tracked().values()})
        for root in roots:
            try:
                st = read_stat(root)
                comm, ppid = st.comm, st.ppid
            except (ProcessLookupError, OSError):
                comm, ppid = None, None
            ev = SimpleNamespace(root=root, ktime_ns=now, comm=comm, ppid=ppid, cgroup_id=0)
            self.tracker.admit(ev, out, reason="tracked by the pinned programs before this agent started")
        self.sink.write(out)

    def alive(self, within: float = 10.0) -> bool:
        """Both threads run and each looked for work within `within` seconds
        (the supervisor's watchdog asks; a wedged sink or reader says no)."""
        now = time.monotonic()
        return len(self._threads) == 2 and all(t.is_alive() for t in self._threads) and \
            all(now - b < within for b in self.beats)

    # --- consumer ---------------------------------------------------------
    # Two threads: one drains the kernel ring into a userspace backlog as fast
    # as memcpy allows (so a burst never fills the ring while events are being
    # decoded), one decodes the backlog and writes the sink. When the backlog
    # reaches backlog_max the drain thread waits: the kernel ring then fills
    # and the kernel counts what it cannot store. Losses have one source.
    def start(self) -> None:
        if self.adopted_at:
            self._adopt()
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
        drained = 0.0
        while not self._stop.is_set():
            self.beats[0] = time.monotonic()
            try:
                sup = self.supervisor
                if self.reader.wait(0.1):
                    # the kernel wakes us at the first record after we caught
                    # up: let records gather (see coalesce), longer while they
                    # stream (the next came within coalesce_min of the last drain)
                    if self.coalesce and pending is not None and pending() < self.coalesce_bytes:
                        streaming = time.monotonic() - drained < self.coalesce_min
                        self._stop.wait(self.coalesce if streaming else self.coalesce_min)
                    before = time.monotonic_ns()
                    while not self._stop.is_set():
                        batch = self._read()
                        if not len(batch):
                            break
                        self._push(batch)
                    drained = time.monotonic()
                    if sup is not None:
                        self._refusals(before)
                elif sup is not None and sup.waiting():
                    before = time.monotonic_ns()
                    while len(batch := self._read()):
                        self._push(batch)
                    self._refusals(before)
            except Exception as e:  # keep draining; reported in the stats record
                self.errors.append(f"drain: {type(e).__name__}: {e}")
                time.sleep(0.01)

    def _supervising(self) -> bool:
        """The seccomp layer was asked for (some server started under it, or it failed to be)."""
        return self.supervisor is not None and bool(self.supervisor.counts)

    def _refusals(self, before: int) -> None:
        """The supervisor's refusals are merged into the ring's events by kernel time (decode thread);
        the ones from before `before` that no later ring record has let out yet, after every ring
        record drained until then."""
        if self.supervisor.waiting():
            self._push(Flush(before))

    def _feed(self, batch) -> list:
        if type(batch) is Flush:
            return self.pipeline.events(self.supervisor.take(batch.before))
        recs = records(batch) if isinstance(batch, bytes) else batch
        if self.supervisor is None or not self.supervisor.waiting():  # nothing to merge: the plain path
            return self.pipeline.feed(recs)
        return self.pipeline.events(self.supervisor.merged(self.pipeline.decoder.feed(recs)))

    def _process_loop(self) -> None:
        last_tick = 0
        while True:
            self.beats[1] = time.monotonic()
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
                    out = self._feed(batch)
                    if self.pinned is not None and any(type(r) is SessionRecord for r in out):
                        # before the records are out: whoever reads them may kill this agent next
                        self._save_pin_state()
                    self.sink.write(out)
                now = time.monotonic_ns()
                if now - last_tick > 100_000_000:  # call timers: linger, timeouts
                    last_tick = now
                    self._tick(now)
            except Exception as e:
                self.errors.append(f"decode: {type(e).__name__}: {e}")

    def _tick(self, now: int) -> None:
        """Every 100 ms on the decode thread: call timers, new TLS libraries, the policy file."""
        self.sink.write(self.pipeline.tick(now))
        if self.tls is not None:
            self.tls.look(now, self.tracker.roots | {k[0] for k, c in self.pipeline.http.conns.items()
                                                     if c.last and not c.last.untracked})
        if self.policy is not None:
            rec = self.policy.maybe_reload(now)
            if rec is not None:
                self.sink.write_record(rec)
                if self.pinned is not None:
                    self._save_pin_state()
        if self.pinned is not None and now - self._pin_look > 1_000_000_000:
            self._pin_look = now
            self._save_pin_state()

    def _hook(self, ev, out: list) -> None:
        """Pipeline hook: what the agent keeps from kernel events (lineage,
        identities, exit statuses)."""
        if ev.ktime_ns < self.adopted_at:
            self.during_restart += 1
        tag = type(ev).__struct_config__.tag
        if tag == "fork":
            self.table.add(ev.child_pid, ev.pid)
        elif tag == "exec":
            if ev.result == 0:
                self.tracker.execed(ev.pid, ev.exe or ev.filename, ev.argv)
        elif tag == "exit":
            self.exits[ev.pid] = ev
            if len(self.exits) > 65536:
                del self.exits[next(iter(self.exits))]

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
        if self.supervisor is not None:
            self.supervisor.close()
            self._refusals(time.monotonic_ns())
        self._drained.set()
        with self._cond:
            self._cond.notify_all()
        if len(self._threads) > 1:
            self._threads[1].join()
        else:  # never started: decode here
            while self._backlog:
                b = self._backlog.popleft()
                self.sink.write(self._feed(b))
        if self.pinned is not None:  # the sessions go on under the next agent: what it needs, then no end
            self._save_pin_state()
        self.sink.write(self.pipeline.finish(time.monotonic_ns(), end_sessions=self.pinned is None))
        if self.detect is not None:   # the alerts' open aggregation windows, with their counts
            self.detect.flush()
        stats = self.stats()
        self.sink.write_record(stats)
        self.reader.close()
        if self.tls is not None:
            self.tls.give_back()  # detached with the rest, here or in the unloading child
        if unload:
            self.kernel.close()
        return msgspec.to_builtins(stats)

    def stats(self) -> Stats:
        kc = self.kernel.counters()
        p = self.pipeline.stats()
        events = p.pop("events")
        if self.policy is not None:
            events.update(self.policy.counts)
        tls = self.tls
        return Stats(
            time=now_iso(), version=__version__, events=events, kernel=kc,
            lost={"events": kc.get("ringbuf_full_events", 0), "event_chunks": kc.get("ringbuf_full_chunks", 0),
                  "untracked_children": kc.get("proc_map_full", 0)},
            tls_errors=tls.errors[-10:] if tls is not None else None,
            tls_libraries=[lib["path"] for lib in tls.report()] if tls is not None else None,
            tls_processes=tls.attached_total if tls is not None else None,
            tls_unread=dict(list(tls.unread.items())[-10:]) if tls is not None and tls.unread else None,
            policy=({**self.policy.stats(), **({"seccomp": self.supervisor.stats()} if self._supervising() else {})}
                    if self.policy is not None else None),
            ring_discarded=self.reader.discarded, backlog_peak_bytes=self.backlog_peak,
            agent_peak_rss_bytes=peak_rss(),
            still_running=sorted(self.kernel.tracked()),
            discovered=sorted(self.tracker.roots) if self.watch else None,
            rejected_by_filter=len(self.tracker.rejected),
            errors=(self.errors + self.pipeline.errors + self.pipeline.audit.errors + self.tracker.errors
                    + (self.policy.errors if self.policy else [])
                    + (self.supervisor.errors if self.supervisor else []))[-20:],
            detect=self.detect.stats() if self.detect is not None else None,
            store=dict(self.store.stats) if self.store is not None else None,
            pinned={**self.pinned, "during_restart": self.during_restart} if self.pinned is not None else None,
            publish=self.publisher.metrics() if self.publisher is not None else None, **p)

    def start_record(self, mode: str, **extra) -> None:
        if extra.get("command"):
            extra["command"] = self.pipeline.redactor.argv(extra["command"])
        u = os.uname()
        k, tls = self.kernel, self.tls
        self.sink.write_record(Start(
            time=now_iso(), version=__version__, agent_pid=os.getpid(), kernel=u.release, arch=u.machine, mode=mode,
            mechanisms={"process": "tp_btf sched_process_fork/exec/exit",
                        "syscall_hooks": k.hooks,
                        "open": hook_mechanism(k.hooks, OPEN_SYSCALLS),
                        "connect": hook_mechanism(k.hooks, ["connect"]),
                        "exec_failures": hook_mechanism(k.hooks, EXEC_SYSCALLS),
                        "payload": hook_mechanism(k.hooks, PAYLOAD_SYSCALLS)
                        + " on pipes, Unix sockets, pty slaves and TCP sockets",
                        "stdio": "fds 0 and 1 at tp_btf sched_process_exec and at watch discovery",
                        "watch": self.watch, "ports": list(k.options.ports) or None},
            programs_skipped=k.skipped, mounts=k.mounts,
            tls={"mechanism": ("uprobe_multi links" if k.uprobe_multi else "uprobes")
                 + " on SSL_read/SSL_write(_ex), SSL_do_handshake, SSL_free, and on Go's crypto/tls"
                 " (*Conn).Read/Write (their entries and each return instruction), "
                 + ("per tracked process that maps a libssl" if tls.per_process else "host-wide"),
                 "libraries": tls.report()} if tls is not None else None,
            policy=({**self.policy.record(), **({"refusal": self.supervisor.describe()} if self._supervising() else {})}
                    if self.policy is not None else None),
            detect=self.detect.engine.describe() if self.detect is not None else None,
            pinned=self.pinned, **extra))

    # --- tracking -----------------------------------------------------------
    def attach(self, pid: int) -> list[int]:
        """Track a running process and its descendants. Returns the pids tracked."""
        return self.tracker.attach(pid)

    def spawn_tracked(self, argv: list[str], env: dict | None = None) -> int:
        """Start argv tracked before its first instruction, under the policy
        its identity matches. Returns its pid."""
        ident = None
        tls_exe = None
        if self.tls is not None:  # an executable with OpenSSL inside (node): probed before it runs
            tls_exe = resolve_command(argv[0])
            if tls_exe and not self.tls.per_process:
                self.tls.add(os.path.realpath(tls_exe))
        if self.policy is not None:  # the child runs in our cgroup until it moves itself
            from .policy import Identity
            exe = resolve_command(argv[0])
            ident = Identity.of(os.path.realpath(exe) if exe else None, argv, read_cgroup("self"))
        slot = self.policy.slot_for(ident) if self.policy is not None else 0
        sup = self.supervisor
        if sup is not None:
            from .kernel.unotify import wanted
            sup = sup if wanted(self.enforcer.policy(slot)) else None
        pid = self.tracker.spawn(argv, env, policy=slot, supervisor=sup)
        if tls_exe and self.tls.per_process:
            self.tls.add(os.path.realpath(tls_exe), pid)
        if ident is not None:
            self.policy.remember(pid, slot, ident)
        return pid

    # --- policy and rules -------------------------------------------------------
    def policy_gaps(self) -> list[str]:
        return self.policy.gaps()

    def request_reload(self) -> None:
        """SIGHUP: reload the policy file at the next tick, and the rules."""
        if self.policy is not None:
            self.policy.request_reload()
        if self.detect is not None:
            self.detect.engine.request_reload()

    def reload_policy(self) -> dict:
        rec = self.policy.reload()
        self.sink.write_record(rec)
        return msgspec.to_builtins(rec)
