"""The `mcpwitness` command: a thin layer over agent.py and doctor.py.

mcpwitness never writes to the wrapped command's stdout; on stderr (which it
shares with the command) it writes at most the events path at start and one
summary line at exit, both prefixed `mcpwitness:`.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading

from . import __version__


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = units.get(t[-1:], 1)
    try:
        return int(t[:-1] if t[-1:] in units else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M)") from None


def _say(msg: str) -> None:
    print(f"mcpwitness: {msg}", file=sys.stderr, flush=True)


def _foreground_of_tty() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _exit_status(st: int) -> int:
    code = os.waitstatus_to_exitcode(st)
    return 128 - code if code < 0 else code


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mcpwitness", description="Audit what MCP tool calls really do, from the kernel.")
    ap.add_argument("--version", action="version", version=f"mcpwitness {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run a command (or attach to a pid) and record what its process tree does",
                         description="mcpwitness run [options] -- CMD [ARGS...]   |   mcpwitness run [options] --pid PID")
    run.add_argument("--jsonl", metavar="PATH", help="write events here (default: a new file in the state directory)")
    run.add_argument("--pid", type=int, help="attach to a running process and its descendants instead of starting one")
    run.add_argument("--ring-size", type=_size, default=64 << 20, metavar="SIZE",
                     help="kernel ring buffer size, a power of two (default 64M)")
    run.add_argument("--argv-max", type=int, default=16384, metavar="BYTES",
                     help="argv bytes captured per exec, at most 16384 (default 16384)")
    run.add_argument("--io-max", type=_size, default=16 << 20, metavar="SIZE",
                     help="payload bytes captured per read/write syscall (default 16M); longer ones are cut, marked")
    run.add_argument("--no-redact", action="store_true",
                     help="write MCP payloads without removing secrets (the default redacts them)")
    run.add_argument("--reader", choices=["batch", "libbpf"], default="batch",
                     help="ring buffer consumer: batch mmap reader (default) or libbpf's (the reference)")
    run.add_argument("-q", "--quiet", action="store_true", help="print nothing on stderr unless events were lost")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    w = sub.add_parser("watch", help="find and record the MCP servers on this host that nobody wrapped",
                       description="The kernel starts tracking any process that reads a JSON-RPC request on a pipe "
                                   "or Unix socket (an MCP server), from that message on; the filters narrow it.")
    w.add_argument("--jsonl", metavar="PATH", help="write records here (default: a new file in the state directory)")
    w.add_argument("--pid", type=int, action="append", default=[],
                   help="only servers that are PID or descend from it (a client's pid); repeatable")
    w.add_argument("--comm", action="append", default=[],
                   help="only servers whose command name (or executable's basename) is COMM; repeatable")
    w.add_argument("--cgroup", help="only servers in this cgroup v2 path or below it (e.g. /system.slice)")
    w.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    w.add_argument("--ring-size", type=_size, default=64 << 20, metavar="SIZE")
    w.add_argument("--io-max", type=_size, default=16 << 20, metavar="SIZE")
    w.add_argument("--no-redact", action="store_true")
    w.add_argument("-q", "--quiet", action="store_true")

    doc = sub.add_parser("doctor", help="probe what this kernel allows and which mechanism each feature uses")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.cmd == "doctor":
        return cmd_doctor(a)
    if a.cmd in ("run", "watch"):
        code = cmd_run(a, ap) if a.cmd == "run" else cmd_watch(a)
        if argv is None:
            # Standing in for a server: the client waits for this exit. All
            # output is flushed and closed by now; interpreter finalization
            # would add about a second for nothing.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    return 2


def cmd_doctor(a) -> int:
    from .doctor import diagnose, render
    try:
        report = diagnose()
    except OSError as e:
        _say(f"doctor failed: {e}")
        return 1
    print(json.dumps(report, indent=2) if a.json else render(report))
    return 0 if report["ok"] else 1


def cmd_run(a, ap) -> int:
    command = list(a.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if bool(command) == (a.pid is not None):
        ap.error("run takes either -- CMD [ARGS...] or --pid PID")
    if a.ring_size & (a.ring_size - 1) or a.ring_size < 4096:
        ap.error("--ring-size must be a power of two of at least 4K")
    if not 0 <= a.argv_max <= 16384:
        ap.error("--argv-max must be between 0 and 16384")

    from .agent import CommandNotFound
    from .loader import LoadOptions

    agent = _start("run", a, LoadOptions(ring_size=a.ring_size, argv_max=a.argv_max, io_max=a.io_max),
                   reader=a.reader)
    if agent is None:
        return 1
    sink = agent.sink
    if a.pid is not None:
        return _attach(agent, a.pid, a.quiet)

    try:
        pid = agent.spawn_tracked(command)
    except CommandNotFound as e:
        _say(str(e))
        agent.stop(settle=0)
        sink.close()
        return 127
    agent.start_record(mode="run", command=command, root_pid=pid)
    agent.start()

    forward_int = not _foreground_of_tty()

    def forward(sig, _frame):
        if sig in (signal.SIGINT, signal.SIGQUIT) and not forward_int:
            return  # the terminal already sent it to the whole foreground group
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH, signal.SIGCONT):
        signal.signal(s, forward)
    _, st = os.waitpid(pid, 0)
    _finish(agent, a.quiet)
    return _exit_status(st)


def _start(kind: str, a, options, **agent_kw):
    """The sink and the agent for run/watch, or None after saying why not."""
    from .agent import Agent
    from .redact import Redactor
    from .sinks import JsonlSink, default_jsonl_path

    try:
        path = a.jsonl or default_jsonl_path(kind)
        sink = JsonlSink(path)
    except OSError as e:
        _say(f"cannot write events: {e}")
        return None
    try:
        agent = Agent(sink, options, redactor=Redactor(enabled=not a.no_redact), **agent_kw)
    except (OSError, RuntimeError) as e:
        _say(f"cannot load the kernel programs: {e}")
        if os.geteuid() != 0:
            _say("mcpwitness needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_RESOURCE); `mcpwitness doctor` says more")
        sink.close()
        return None
    if not a.quiet and not a.jsonl:
        _say(f"events -> {path}")
    return agent


def _finish(agent, quiet: bool) -> dict:
    """Drain, write the stats record, say the summary; unload in the background."""
    stats = agent.stop(unload=False)
    agent.sink.close()
    _summary(stats, agent.sink.path, quiet)
    _unload_in_background(agent.kernel)
    return stats


def _unload_in_background(kernel) -> None:
    """Detaching the programs takes ~0.5 s (the kernel unregisters syscall
    tracepoints one at a time). The MCP client waiting for this wrapper to
    exit should not wait for that: a detached child unloads them, and this
    process exits at once (its own fd closes only drop references)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        child = os.fork()
    except OSError:
        kernel.close()
        return
    if child == 0:
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)  # never hold the client's pipes open
            kernel.close()
        finally:
            os._exit(0)


def server_filter(pids: list[int], comms: list[str], cgroup: str | None):
    """accept(pid) for watch mode: all given filters must hold."""
    from .proc import read_exe, read_stat

    def accept(pid: int) -> bool:
        if comms:
            exe = read_exe(pid)
            if read_stat(pid).comm not in comms and (exe is None or os.path.basename(exe) not in comms):
                return False
        if pids:
            p, seen = pid, 0
            while p > 0 and p not in pids and seen < 4096:
                p, seen = read_stat(p).ppid, seen + 1
            if p not in pids:
                return False
        if cgroup:
            with open(f"/proc/{pid}/cgroup") as f:
                paths = [line.rstrip("\n").split(":", 2)[2] for line in f if line.startswith("0::")]
            base = cgroup.rstrip("/") or "/"
            if not paths or not (paths[0] == base or paths[0].startswith(base + "/") or base == "/"):
                return False
        return True

    return accept


def cmd_watch(a) -> int:
    from .loader import LoadOptions

    agent = _start("watch", a, LoadOptions(ring_size=a.ring_size, io_max=a.io_max, watch=True),
                   accept=server_filter(a.pid, a.comm, a.cgroup))
    if agent is None:
        return 1
    agent.start_record(mode="watch", filters={"pid": a.pid, "comm": a.comm, "cgroup": a.cgroup})
    agent.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(a.duration)
    _finish(agent, a.quiet)
    return 0


def _attach(agent, pid: int, quiet: bool) -> int:
    from .proc import read_cmdline

    try:
        pids = agent.attach(pid)
    except ProcessLookupError:
        _say(f"no process {pid}")
        agent.stop(settle=0)
        agent.sink.close()
        return 1
    agent.start_record(mode="attach", root_pid=pid, attached=pids, command=read_cmdline(pid))
    agent.start()
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: stop.set())
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    while not stop.is_set():
        if pidfd is None:
            if not os.path.exists(f"/proc/{pid}"):
                break
            stop.wait(0.2)
        elif select.select([pidfd], [], [], 0.2)[0]:
            break
    if pidfd is not None:
        os.close(pidfd)
    _finish(agent, quiet)
    ev = agent.exits.get(pid)
    if ev is None:
        return 0
    return ev.exit_code if ev.signal is None else 128 + ev.signal


def _summary(stats: dict, path: str, quiet: bool) -> None:
    lost = stats["lost"]
    n_lost = sum(lost.values())
    if quiet and not n_lost and not stats["errors"]:
        return
    total = sum(stats["events"].values())
    msg = f"{total} events, {lost['events']} lost, {lost['event_chunks']} truncated by a full ring"
    if lost["untracked_children"]:
        msg += f", {lost['untracked_children']} children not tracked (process map full)"
    if stats["still_running"]:
        msg += f"; still running when mcpwitness stopped (no longer followed): {', '.join(map(str, stats['still_running'][:10]))}"
    if stats["errors"]:
        msg += f"; {len(stats['errors'])} consumer errors (see the stats record)"
    _say(f"{msg} -> {path}")
