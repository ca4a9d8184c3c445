"""The `mcpwitness` command: a thin layer over agent.py and doctor.py.

mcpwitness never writes to the wrapped command's stdout; on stderr (which it
shares with the command) it writes at most the events path at start and one
summary line at exit, both prefixed `mcpwitness:`.
"""
from __future__ import annotations

import argparse
import json

import msgspec
import os
import select
import signal
import sys
import threading
import time

from . import __version__


def _size(text: str) -> int:
    from .util import ConfigError, size
    try:
        return size(text, "size")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M)") from None


def _seconds(text: str) -> float:
    from .util import ConfigError, duration
    try:
        return duration(float(text) if text.replace(".", "", 1).isdigit() else text, "duration")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (seconds, or e.g. 90s, 10m, 1d)") from None


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
    run.add_argument("--no-seccomp", action="store_true",
                     help="where the kernel has no BPF LSM, a denied open or exec kills the process (the kernel's "
                          "fallback) instead of failing with EPERM through a seccomp filter (docs/policy.md)")
    run.add_argument("--reader", choices=["batch", "libbpf"], default="batch",
                     help="ring buffer consumer: batch mmap reader (default) or libbpf's (the reference)")
    run.add_argument("-q", "--quiet", action="store_true", help="print nothing on stderr unless events were lost")
    _audit_options(run)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    w = sub.add_parser("watch", help="find and record the MCP servers on this host that nobody wrapped",
                       description="The kernel starts tracking any process that reads a JSON-RPC request on a pipe "
                                   "or Unix socket (an MCP server), from that message on; the filters narrow it. "
                                   "With --port, TCP traffic on those ports is captured too (Streamable HTTP, SSE): "
                                   "the process that serves the port is tracked once it speaks HTTP, the clients' "
                                   "bytes are captured without tracking them.")
    w.add_argument("--jsonl", metavar="PATH", help="write records here (default: a new file in the state directory)")
    w.add_argument("--pid", type=int, action="append", default=[],
                   help="only servers that are PID or descend from it (a client's pid); repeatable")
    w.add_argument("--comm", action="append", default=[],
                   help="only servers whose command name (or executable's basename) is COMM; repeatable")
    w.add_argument("--cgroup", help="only servers in this cgroup v2 path or below it (e.g. /system.slice)")
    w.add_argument("--container", action="append", default=[], metavar="NAME|ID",
                   help="only servers in this container: its name, or its id (at least 12 hex digits); "
                        "podman, docker, containerd and CRI-O containers; repeatable")
    w.add_argument("--port", type=_port, action="append", default=[],
                   help="capture TCP on this port (local or remote end), for any process, filtered in the "
                        "kernel; repeatable, at most 64")
    w.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    w.add_argument("--pin", metavar="NAME", nargs="?", const="default",
                   help="pin the programs and maps in bpffs (/sys/fs/bpf/mcpwitness/NAME) so that they outlive this "
                        "agent: a killed or restarted agent misses nothing, a policy keeps refusing; the next "
                        "`watch --pin NAME` adopts them; `mcpwitness unload NAME` removes them (docs/deploy.md)")
    w.add_argument("--ring-size", type=_size, default=64 << 20, metavar="SIZE")
    w.add_argument("--io-max", type=_size, default=16 << 20, metavar="SIZE")
    w.add_argument("--no-redact", action="store_true")
    w.add_argument("-q", "--quiet", action="store_true")
    _audit_options(w)

    c = sub.add_parser("calls", help="list recent tool calls from the store",
                       description="Newest first. Filters combine (AND).")
    c.add_argument("--db", metavar="PATH", help="the store (default: mcpwitness.db in the state directory), or a "
                                                "central one: postgresql://... (docs/fleet.md)")
    c.add_argument("--host", help="a central store: the calls of this host (hostname or machine id)")
    c.add_argument("--server", help="server name (serverInfo), executable, command line (substring) or pid")
    c.add_argument("--tool", help="tool, prompt or resource uri, or method (tools/list...)")
    c.add_argument("--status", choices=["ok", "tool_error", "error", "input_required", "cancelled", "incomplete"])
    c.add_argument("--since", help="e.g. 10m, 2h, 1d, or 2026-11-22T10:00:00 (UTC)")
    c.add_argument("--until", help="same forms as --since")
    c.add_argument("--has-violations", action="store_true", help="only calls with a violation (sensitive path...)")
    c.add_argument("--principal", help="who the client is: a substring of the principal's id (jwt:ISSUER|SUBJECT, "
                                       "bearer:fp:..., stdio:USER@PROGRAM...), or a glob of all of it")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--json", action="store_true", help="one call record per line")

    sh = sub.add_parser("show", help="one call as a timeline: what was asked, answered, and what the kernel saw")
    sh.add_argument("call_id", help="the call id (a unique prefix is enough)")
    sh.add_argument("--db", metavar="PATH")
    sh.add_argument("--host", help="a central store: the call of this host, where ids meet")
    sh.add_argument("--json", action="store_true", help="the whole record as JSON")

    ss = sub.add_parser("sessions", help="who talked to whom: recent MCP sessions with both ends, from the store")
    ss.add_argument("--db", metavar="PATH")
    ss.add_argument("--host", help="a central store: the sessions of this host")
    ss.add_argument("--since", help="e.g. 10m, 2h, 1d, or 2026-11-22T10:00:00 (UTC)")
    ss.add_argument("--limit", type=int, default=20)
    ss.add_argument("--principal", help="sessions of this client principal (substring of its id, or a glob)")
    ss.add_argument("--json", action="store_true", help="one session record per line")

    d = sub.add_parser("detect", help="run the detection rules over a recorded JSON Lines file, or check rules",
                       description="Alerts go to stdout as JSON lines (or Falco's JSON with --falco); a summary "
                                   "to stderr. No kernel needed.")
    d.add_argument("--replay", metavar="FILE", help="a JSON Lines file written by run/watch ('-' for stdin)")
    d.add_argument("--check", action="store_true", help="only load and check the rules, and list them")
    d.add_argument("--test", metavar="DIR", nargs="?", const="",
                   help="run the rule test cases in DIR (NAME.jsonl + NAME.expect.yaml); without DIR, the cases "
                        "the default rules ship with; exit 1 if any fails")
    d.add_argument("--falco", action="store_true", help="write alerts in Falco's JSON output shape")
    d.add_argument("--config", metavar="FILE", help="YAML configuration (its flags: section is used)")
    _rule_options(d)

    al = sub.add_parser("alerts", help="list recent alerts from the store")
    al.add_argument("--db", metavar="PATH")
    al.add_argument("--host", help="a central store: the alerts of this host")
    al.add_argument("--since", help="e.g. 10m, 2h, 1d, or 2026-11-22T10:00:00 (UTC)")
    al.add_argument("--rule", help="rule name (substring)")
    al.add_argument("--priority", help="emergency, alert, critical, error, warning, notice, informational, debug")
    al.add_argument("--call", help="alerts of this call (id prefix)")
    al.add_argument("--principal", help="alerts about this client principal (substring of its id, or a glob)")
    al.add_argument("--limit", type=int, default=50)
    al.add_argument("--json", action="store_true", help="one alert record per line")

    co = sub.add_parser("collect", help="the central side of a fleet: JetStream -> PostgreSQL (docs/fleet.md)",
                        description="A durable JetStream consumer writing what the agents publish (watch --publish) "
                                    "into PostgreSQL: idempotent by record id, acknowledged after the commit; several "
                                    "collectors with the same --durable share the work.")
    co.add_argument("--from", dest="source", required=True, metavar="NATS_URL", help="nats://HOST:PORT[,...]")
    co.add_argument("--to", dest="dest", required=True, metavar="DSN", help="postgresql://USER@HOST:PORT/DB")
    co.add_argument("--durable", default="mcpwitness-collect", help="the consumer's name, shared by the collectors "
                                                                    "that share the work")
    co.add_argument("--batch", type=int, default=500, help="messages per transaction (default 500)")
    co.add_argument("--ack-wait", type=float, default=10.0, metavar="S",
                    help="seconds before a message a collector took and did not acknowledge goes to another")
    co.add_argument("--replicas", type=int, default=1, metavar="N",
                    help="replicas of the stream if this collector creates it (3 on a three-node cluster; "
                         "agents take --publish-replicas)")
    co.add_argument("--creds", metavar="FILE", help="NATS credentials file")
    co.add_argument("--tls-ca", metavar="FILE", help="CA bundle for a NATS server with TLS")
    co.add_argument("-q", "--quiet", action="store_true")

    u = sub.add_parser("ui", help="the web timeline: calls, one call's kernel view, sessions, alerts (docs/ui.md)",
                       description="Serves a local web app from the store, read-only; it works beside a running "
                                   "watch that writes the same store.")
    u.add_argument("--db", metavar="PATH", help="the store (default: mcpwitness.db in the state directory)")
    u.add_argument("--addr", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); any other than loopback needs --token")
    u.add_argument("--port", type=int, default=8765)
    u.add_argument("--token", default=os.environ.get("MCPWITNESS_UI_TOKEN"),
                   help="a secret every request must carry (default: $MCPWITNESS_UI_TOKEN); open "
                        "http://ADDR:PORT/?token=TOKEN once, a cookie keeps it")
    u.add_argument("-q", "--quiet", action="store_true")

    v = sub.add_parser("verify", help="check that recorded files and stores were not edited, cut or reordered",
                       description="Each JSON Lines line and each store row is chained to the one before it by a "
                                   "hash; this finds where a record was edited, removed, reordered, inserted or "
                                   "cut. Exit status: 0 intact, 1 tampering found, 2 unreadable.")
    v.add_argument("paths", nargs="+", metavar="FILE|DB",
                   help="JSON Lines files (a file's rotated predecessors are checked with it) or stores")
    v.add_argument("--no-rotated", action="store_true", help="only the files given, not their rotated predecessors")
    v.add_argument("--json", action="store_true", help="one JSON object: findings and a summary per file")

    un = sub.add_parser("unload", help="remove programs pinned by `watch --pin` (they detach)")
    un.add_argument("name", nargs="?", default="default", help="the pin name (default: default)")
    un.add_argument("-q", "--quiet", action="store_true")

    doc = sub.add_parser("doctor", help="probe what this kernel allows and which mechanism each feature uses")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


def _audit_options(p) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="YAML configuration: flags, audit, store, and any option of this command in its "
                        "run:/watch: section (docs/deploy.md); the command line wins over the file")
    p.add_argument("--policy", metavar="FILE",
                   help="YAML policies: what each MCP server may connect to, open and run (docs/policy.md); "
                        "reloaded when the file changes (and on SIGHUP under watch)")
    p.add_argument("--no-lsm", action="store_true",
                   help="enforce with the tracepoint fallbacks even where BPF LSM is available")
    p.add_argument("--no-tls", action="store_true",
                   help="no uprobes on libssl: TLS connections are not decoded (plain TCP still is)")
    p.add_argument("--syscall-hooks", choices=("fexit", "dispatch", "syscalls"), default=None,
                   help="how syscalls are hooked (default: the first this kernel loads): fexit on each syscall's "
                        "function, one tp_btf/sys_exit program for all (x86-64), or a tracepoint per syscall; "
                        "bench/untracked_overhead.py compares them")
    p.add_argument("--wakeup-evidence", action="store_true",
                   help="record hand-offs between a server's threads (tp_btf/sched_waking) and attribute a pool "
                        "thread's events to the request its waker had just read (docs/audit.md: off by default, "
                        "measured unsafe on event-loop servers)")
    p.add_argument("--publish", metavar="NATS_URL",
                   help="also send every record to NATS JetStream (nats://HOST:PORT, comma-separated for a "
                        "cluster), through a disk spool in the state directory: at least once, in order, nothing "
                        "lost while the broker is away (docs/fleet.md)")
    p.add_argument("--publish-spool-max", type=_size, default=1 << 30, metavar="SIZE",
                   help="the spool's bound (default 1G); past it new records are refused and counted")
    p.add_argument("--publish-creds", metavar="FILE", help="NATS credentials file (JWT and NKey seed)")
    p.add_argument("--publish-tls-ca", metavar="FILE", help="CA bundle for a NATS server with TLS")
    p.add_argument("--publish-tls-cert", metavar="FILE", help="client certificate for NATS (mutual TLS)")
    p.add_argument("--publish-tls-key", metavar="FILE", help="its key")
    p.add_argument("--publish-replicas", type=int, default=1, metavar="N",
                   help="replicas of the stream when the agent creates it (3 on a three-node cluster)")
    p.add_argument("--host-id", metavar="NAME",
                   help="the host identity on published records (default: hostname, /etc/machine-id, boot id)")
    p.add_argument("--jwks", metavar="FILE",
                   help="verify the JWTs clients send (Authorization: Bearer) against the keys of this JWKS file; "
                        "without it their claims are recorded as unverified (docs/identity.md)")
    p.add_argument("--api-key-header", action="append", default=[], metavar="NAME",
                   help="a request header that carries an API key, recorded as a keyed fingerprint "
                        "(repeatable; x-api-key, api-key and x-auth-token always are)")
    p.add_argument("--rotate-size", type=_size, default=0, metavar="SIZE",
                   help="start a new JSON Lines file when this one reaches SIZE (e.g. 256M); the old one is "
                        "renamed NAME.<UTC time>.jsonl")
    p.add_argument("--rotate-age", type=_seconds, default=0, metavar="DURATION",
                   help="... or when it is this old (e.g. 1d)")
    p.add_argument("--rotate-keep", type=int, default=10, metavar="N",
                   help="rotated files kept, the newest (default 10)")
    p.add_argument("--no-chain", action="store_true",
                   help="JSON Lines without the hash chain (seq and chain on each line; `mcpwitness verify`)")
    p.add_argument("--db", metavar="PATH", help="the store (default: mcpwitness.db in the state directory)")
    p.add_argument("--no-store", action="store_true", help="JSON Lines only, no SQLite store")
    p.add_argument("--linger", type=float, metavar="SECONDS",
                   help="how long a call record waits for the processes the call started (default 10)")
    p.add_argument("--call-timeout", type=float, metavar="SECONDS",
                   help="a request unanswered this long is written as incomplete (default 300)")
    _rule_options(p)
    p.add_argument("--no-detect", action="store_true", help="no rules, no alerts")
    p.add_argument("--alerts-http", metavar="URL",
                   help="POST each alert, in Falco's JSON shape, to URL (e.g. Falcosidekick's http://HOST:2801/)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics (alerts and pipeline counters) on this port, at /metrics")
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="address for --metrics-port (default 127.0.0.1)")


def _rule_options(p) -> None:
    p.add_argument("--rules", metavar="FILE", action="append", default=[],
                   help="a detection rules file (YAML, docs/detection.md), after the default rules; repeatable. "
                        "Reloaded when it changes (and on SIGHUP under watch)")
    p.add_argument("--no-default-rules", action="store_true", help="only the rules given with --rules")
    p.add_argument("--min-priority", type=str.lower, metavar="PRIORITY",
                   help="run only rules of this priority or higher (emergency, alert, critical, error, warning, "
                        "notice, informational, debug)")


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.cmd in ("run", "watch") and a.config:
        a = _with_config(ap, a, sys.argv[1:] if argv is None else argv)
        if a is None:
            return 2
    if a.cmd == "doctor":
        return cmd_doctor(a)
    if a.cmd == "verify":
        return cmd_verify(a)
    if a.cmd == "unload":
        return cmd_unload(a)
    if a.cmd == "ui":
        return cmd_ui(a)
    if a.cmd == "collect":
        try:
            from .fleet.collect import main as collect_main
        except ImportError as e:
            _say(f"collect: {e}: pip install 'mcpwitness[fleet]'")
            return 2
        return collect_main(a.source, a.dest, a.durable, a.batch, a.ack_wait, a.creds, a.tls_ca, a.quiet,
                            a.replicas)
    if a.cmd in ("calls", "show", "sessions", "alerts", "detect"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `mcpwitness calls | head`
        return {"calls": cmd_calls, "show": cmd_show, "sessions": cmd_sessions, "alerts": cmd_alerts,
                "detect": cmd_detect}[a.cmd](a)
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


def _command_parsers(ap) -> dict:
    sub = next(x for x in ap._actions if isinstance(x, argparse._SubParsersAction))
    return {name: sub.choices[name] for name in ("run", "watch")}


def _with_config(ap, a, argv: list[str]):
    """The arguments again, over the configuration file's run:/watch: section
    (the command line wins; a repeatable option adds to the file's list), or
    None after saying why the file is refused."""
    from .config import load
    from .util import ConfigError
    parsers = _command_parsers(ap)
    try:
        cfg = load(a.config, a.cmd, parsers)
    except ConfigError as e:
        _say(f"configuration refused: {e}")
        return None
    rest = argv[argv.index(a.cmd) + 1:]
    b = parsers[a.cmd].parse_args(rest, namespace=argparse.Namespace(**cfg.options))
    b.cmd, b.loaded_config = a.cmd, cfg
    return b


def _identifier(a):
    """Who clients are (decode/principal.py): the fingerprint key kept in the state
    directory, the JWKS to verify JWTs with, the API key headers."""
    from .decode.principal import API_KEY_HEADERS, Identifier, load_key
    from .output.jsonl import default_state_dir
    key, scope = load_key(default_state_dir())
    ident = Identifier(key, scope, jwks=a.jwks,
                       api_key_headers=API_KEY_HEADERS + tuple(h.lower() for h in a.api_key_header))
    if ident.jwks is not None and ident.jwks.error and not ident.jwks.keys:
        _say(f"--jwks: {ident.jwks.error}: JWTs are recorded as failing verification")
    return ident


def _pin_state_file(name: str, create: bool = False) -> str:
    from .output.jsonl import default_state_dir, private_dir
    d = default_state_dir()
    return os.path.join(private_dir(d) if create else d, "pinned", f"{name}.json")


def cmd_unload(a) -> int:
    from .kernel.pin import pin_dir, unload
    try:
        d = pin_dir(a.name)
    except ValueError as e:
        _say(str(e))
        return 2
    if not os.path.isdir(d):
        _say(f"nothing pinned at {d}")
        return 1
    n = unload(a.name, _pin_state_file(a.name))
    if not a.quiet:
        _say(f"removed {n} pinned programs, links and maps from {d}: detached")
    return 0


def cmd_verify(a) -> int:
    from .output.chain import PROBLEMS, verify_db, verify_files
    from .output.jsonl import rotated_files
    findings, summaries = [], []
    jsonl: list[str] = []      # one chain across files: each file's start is checked against the one before
    stores: list[str] = []
    for path in a.paths:
        try:
            with open(path, "rb") as f:
                sqlite = f.read(16) == b"SQLite format 3\0"
        except OSError as e:
            _say(f"cannot verify {path}: {e.strerror}")
            return 2
        if sqlite:
            stores.append(path)
        else:
            for p in ([] if a.no_rotated else rotated_files(path)) + [path]:
                if os.path.realpath(p) not in map(os.path.realpath, jsonl):
                    jsonl.append(p)
    try:
        if jsonl:
            findings, summaries = verify_files(jsonl)
        for path in stores:
            f, s = verify_db(path)
            findings += f
            summaries.append(s)
    except (OSError, ValueError) as e:
        _say(f"cannot verify: {e}")
        return 2
    except Exception as e:  # sqlite3.Error: not a store it can read
        _say(f"cannot verify: {type(e).__name__}: {e}")
        return 2
    bad = [x for x in findings if x.kind in PROBLEMS]
    if a.json:
        print(json.dumps({"intact": not bad, "findings": [x.as_dict() for x in findings], "files": summaries}))
    else:
        for s in summaries:
            what = f"{s.get('lines', s.get('rows'))} {'lines' if 'lines' in s else 'rows'}"
            print(f"{s['file']}: {what}, last link {str(s.get('head'))[:16]}"
                  + (f", continues from {s['continues_from']}" if s.get("continues_from") else ""))
        for x in findings:
            print(f"  {x}")
        print("intact" if not bad else f"NOT INTACT: {len(bad)} problem(s)")
    return 1 if bad else 0


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

    from .kernel.tracking import CommandNotFound
    from .kernel.loader import LoadOptions

    agent = _start("run", a, LoadOptions(ring_size=a.ring_size, argv_max=a.argv_max, io_max=a.io_max,
                                         lsm=False if a.no_lsm else None, tls=not a.no_tls,
                                         hooks=a.syscall_hooks, wakeups=a.wakeup_evidence,
                                         seccomp=not a.no_seccomp), reader=a.reader)
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
    if agent.supervisor is not None:  # even with -q: how a denial ends must be said when it is not the usual
        for note in agent.supervisor.notes:
            _say(f"policy: {note}")
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
    from .config import ConfigError, load
    from .decode.flags import Flagger
    from .decode.redact import Redactor
    from .output.jsonl import JsonlSink, TeeSink, default_db_path, default_jsonl_path

    lacking = _lacking_caps(kind, a)
    if lacking:
        _say(lacking)
        return None
    try:
        cfg = getattr(a, "loaded_config", None) or load(a.config)
    except ConfigError as e:
        _say(f"configuration refused: {e}")
        return None
    if a.linger is not None:
        cfg.linger = a.linger
    if a.call_timeout is not None:
        cfg.call_timeout = a.call_timeout
    try:
        path = a.jsonl or default_jsonl_path(kind)
        sink = JsonlSink(path, rotate_size=a.rotate_size, rotate_age=a.rotate_age, keep=a.rotate_keep,
                         chain=not a.no_chain)
    except OSError as e:
        _say(f"cannot write events: {e}")
        return None
    store = None
    if not a.no_store:
        from .output.store import Store
        db = a.db or cfg.db or "the default store"
        try:
            db = a.db or cfg.db or default_db_path()
            store = Store(db, max_age=cfg.retention, max_bytes=cfg.max_size)
            sink = TeeSink(sink, store)
        except Exception as e:  # sqlite3.Error, OSError
            _say(f"cannot open the store {db}: {e}")
            sink.close()
            return None
    publisher = None
    if a.publish:
        try:
            from .fleet.publish import Publisher, host_identity, spool_dir
            from .output.jsonl import default_state_dir, private_dir
            publisher = Publisher(a.publish, spool_dir(private_dir(default_state_dir()), a.publish),
                                  host_identity(a.host_id), spool_max=a.publish_spool_max, creds=a.publish_creds,
                                  tls_ca=a.publish_tls_ca, tls_cert=a.publish_tls_cert, tls_key=a.publish_tls_key,
                                  replicas=a.publish_replicas)
            sink = TeeSink(sink, publisher)
        except (ImportError, OSError) as e:
            _say(f"--publish: {e}" + (": pip install 'mcpwitness[fleet]'" if isinstance(e, ImportError) else ""))
            sink.close()
            return None
    detect_sink = None
    if not a.no_detect:
        detect_sink = _detect_sink(a, sink, cfg, store)
        if detect_sink is None:
            sink.close()
            return None
        sink = detect_sink
    from .policy import PolicyError
    try:
        agent = Agent(sink, options, redactor=Redactor(enabled=not a.no_redact), flagger=Flagger(cfg.flags),
                      linger=cfg.linger, call_timeout=cfg.call_timeout, policy_path=a.policy, detect=detect_sink,
                      store=store, identifier=_identifier(a), publisher=publisher, **agent_kw)
    except PolicyError as e:
        _say(f"policy refused: {e}")
        sink.close()
        return None
    except (OSError, RuntimeError) as e:
        _say(f"cannot load the kernel programs: {e}")
        if os.geteuid() != 0:
            _say("`mcpwitness doctor` says what this kernel and this capability set allow")
        sink.close()
        return None
    if not a.quiet and not a.jsonl:
        _say(f"events -> {path}")
    if a.metrics_port is not None:
        from .output.metrics import MetricsServer
        try:
            from .output.metrics import agent_exposition
            agent.metrics = MetricsServer(lambda: agent_exposition(agent), a.metrics_port, a.metrics_addr,
                                          health=agent.alive)
        except OSError as e:
            _say(f"cannot serve metrics on {a.metrics_addr}:{a.metrics_port}: {e.strerror or e}")
            agent.kernel.close()
            sink.close()
            return None
    if agent.enforcer is not None:
        for gap in agent.policy_gaps():  # even with -q: a policy that is not enforced must be said
            _say(gap)
    plan = agent.tls.plan() if agent.tls is not None and not a.quiet else None
    if plan:
        _say(plan)
    return agent


def _lacking_caps(kind: str, a) -> str | None:
    """Why this command cannot run with this process's capabilities, or None.
    Said before anything is loaded, naming each capability that is missing
    (MCPWITNESS_NO_CAP_CHECK=1 skips it, to see what the kernel itself does)."""
    from .kernel import caps
    if os.environ.get("MCPWITNESS_NO_CAP_CHECK") == "1":
        return None
    other = False
    pid = getattr(a, "pid", None)
    if kind == "run" and pid is not None:
        try:
            other = os.stat(f"/proc/{pid}").st_uid != os.geteuid()
        except OSError:
            other = False          # no such process: said later
    lacking = caps.missing(caps.needed(kind, a.policy is not None, other))
    if not lacking:
        return None
    what = f"{kind} --pid of another user's process" if other else kind
    return caps.refusal(what + (" --policy" if a.policy is not None else ""), lacking)


def _rule_source(a):
    """The rules for run/watch/detect, loaded and checked, or None after saying why not."""
    from .detect.engine import RuleSource
    from .detect.rules import RuleError
    try:
        src = RuleSource(a.rules, defaults=not a.no_default_rules, min_priority=a.min_priority)
        if not src.paths:
            _say("no rules: --no-default-rules needs at least one --rules FILE")
            return None, None
        return src, src.load()
    except RuleError as e:
        _say(f"rules refused: {e}")
        return None, None


def _detect_sink(a, sink, cfg, store):
    from .decode.flags import Flagger
    from .detect.engine import DetectSink, Engine, HttpAlerts
    src, rs = _rule_source(a)
    if src is None:
        return None
    known, tools, baselines = [], [], None
    if store is not None:
        from .detect.detectors import known_pairs, known_tools
        from .output.store import connect, read_baselines, session_records, tools_list_answers
        try:
            db = connect(store.path, readonly=True)
            sessions = session_records(db)
            known = known_pairs(sessions)
            tools = known_tools(sessions, tools_list_answers(db))
            baselines = read_baselines(db)
            db.close()
        except Exception as e:  # an old or damaged store: start without its history
            _say(f"pairs, tool definitions and baselines already seen not read from the store: {e}")
    http = None
    if a.alerts_http:
        try:
            http = HttpAlerts(a.alerts_http)
        except ValueError as e:
            _say(f"--alerts-http: {e}")
            return None
    for w in rs.warnings:
        if not a.quiet:
            _say(w)
    engine = Engine(src, Flagger(cfg.flags), known, ruleset=rs, known_tools=tools)
    if baselines:
        try:
            said = engine.detectors.restore(msgspec.json.decode(baselines))
        except (msgspec.DecodeError, TypeError, ValueError, KeyError) as e:
            said = f"baselines not restored: {type(e).__name__}: {e}"
        if not a.quiet:
            _say(said)
    return DetectSink(sink, engine, http, save=store.save_baselines if store is not None else None)


def _finish(agent, quiet: bool) -> dict:
    """Drain, write the stats record, say the summary; unload in the background."""
    stats = agent.stop(unload=False)
    if agent.metrics is not None:
        agent.metrics.close()
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


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return n


def server_filter(pids: list[int], comms: list[str], cgroup: str | None, containers: list[str] | None = None):
    """accept(pid) for watch mode: all given filters must hold."""
    from .proc import container_info, read_cgroup, read_exe, read_stat, under_cgroup

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
        if cgroup and not under_cgroup(read_cgroup(pid), cgroup):
            return False
        if containers:
            info = container_info(read_cgroup(pid))
            if info is None or not any(c == info["name"] or (len(c) >= 12 and info["id"].startswith(c))
                                       for c in containers):
                return False
        return True

    return accept


def cmd_watch(a) -> int:
    from .kernel.loader import LoadOptions

    if len(set(a.port)) > 64:
        _say(f"at most 64 ports can be watched ({len(set(a.port))} given)")
        return 2

    pin = None
    if a.pin is not None:
        from .kernel.pin import pin_dir
        try:
            pin_dir(a.pin)
            pin = (a.pin, _pin_state_file(a.pin, create=True))
        except (ValueError, OSError) as e:
            _say(f"--pin: {e}")
            return 2
    agent = _start("watch", a, LoadOptions(ring_size=a.ring_size, io_max=a.io_max, watch=True,
                                           lsm=False if a.no_lsm else None, ports=tuple(sorted(set(a.port))),
                                           tls=not a.no_tls, hooks=a.syscall_hooks,
                                           wakeups=a.wakeup_evidence),
                   accept=server_filter(a.pid, a.comm, a.cgroup, a.container), pin=pin)
    if agent is None:
        return 1
    agent.start_record(mode="watch", filters={"pid": a.pid, "comm": a.comm, "cgroup": a.cgroup,
                                                  "port": a.port, "container": a.container})
    agent.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # SIGHUP: reload the policy and the rules (as daemons do)
    signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    from .service import Notifier
    sd = Notifier()   # under systemd (Type=notify): ready now that the programs are attached and read
    sd.ready(f"recording (pid {os.getpid()})")
    end = None if a.duration is None else time.monotonic() + a.duration
    while not stop.is_set():
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            break
        stop.wait(sd.wait_step() if left is None else min(left, sd.wait_step()))
        sd.ping(agent.alive(), f"recording: {len(agent.tracker.roots)} servers tracked")
    sd.stopping()
    _finish(agent, a.quiet)
    if agent.pinned is not None and not a.quiet:
        _say(f"the programs stay pinned at {agent.pinned['dir']} and keep recording into their ring: the next "
             f"`watch --pin {agent.pinned['name']}` takes over, `mcpwitness unload {agent.pinned['name']}` "
             "removes them")
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


def cmd_ui(a) -> int:
    from .output.jsonl import default_db_path
    try:
        from .ui.server import UiError, serve
    except ImportError as e:
        _say(f"ui: {e}: install the web timeline's dependencies: pip install 'mcpwitness[ui]'")
        return 2
    path = a.db or default_db_path(create=False)
    try:
        serve(path, a.addr, a.port, a.token, a.quiet)
    except UiError as e:
        _say(f"ui: {e}")
        return 2
    except ImportError as e:
        _say(f"ui: {e}: install the web timeline's dependencies: pip install 'mcpwitness[ui]'")
        return 2
    except OSError as e:
        _say(f"ui: cannot listen on {a.addr}:{a.port}: {e}")
        return 1
    return 0


def _open_db(a):
    from .output.jsonl import default_db_path
    from .output.store import connect
    path = a.db or default_db_path(create=False)
    if path.startswith(("postgresql://", "postgres://")):
        try:
            from .fleet.pg import connect as pg_connect
            return pg_connect(path)
        except ImportError as e:
            _say(f"{e}: pip install 'mcpwitness[fleet]'")
        except Exception as e:  # psycopg.Error
            _say(f"cannot read the store {path.split('@')[-1]}: {e}")
        return None
    if getattr(a, "host", None):
        _say("--host: a local store holds one host's records; --host filters a central store (--db postgresql://...)")
        return None
    try:
        return connect(path, readonly=True)
    except (FileNotFoundError, OSError) as e:
        _say(f"cannot read the store: {e}")
    except Exception as e:  # sqlite3.Error
        _say(f"cannot read the store {path}: {e}")
    return None


def _query_args(a):
    """(since, until, db) for a store query, or an exit status after saying why not."""
    from .output.store import parse_since
    try:
        since = parse_since(a.since) if a.since else None
        until = parse_since(a.until) if getattr(a, "until", None) else None
    except ValueError as e:
        _say(str(e))
        return 2
    db = _open_db(a)
    return 1 if db is None else (since, until, db)


def cmd_calls(a) -> int:
    from .output.store import list_calls
    q = _query_args(a)
    if isinstance(q, int):
        return q
    since, until, db = q
    rows = list_calls(db, server=a.server, tool=a.tool, status=a.status, since=since, until=until,
                      has_violations=a.has_violations, limit=a.limit, principal=a.principal, host=a.host)
    from .output.render import calls_table
    return _print_records(rows, a.json, calls_table, line=lambda r: r["record"])


def cmd_sessions(a) -> int:
    from .output.store import list_sessions
    q = _query_args(a)
    if isinstance(q, int):
        return q
    since, _, db = q
    from .output.render import sessions_table
    return _print_records(list_sessions(db, since=since, limit=a.limit, principal=a.principal, host=a.host),
                          a.json, sessions_table)


def _print_records(recs: list[dict], as_json: bool, table, line=None) -> int:
    """One JSON object per line (`line` picks it out of a row: the stored
    record as it was written), or the table."""
    if as_json:
        for r in recs:
            r = line(r) if line is not None else r
            print(r.decode() if isinstance(r, bytes) else r if isinstance(r, str) else json.dumps(r))
    else:
        print(table(recs))
    return 0


def cmd_alerts(a) -> int:
    from .output.store import list_alerts
    q = _query_args(a)
    if isinstance(q, int):
        return q
    since, _, db = q
    try:
        recs = list_alerts(db, since=since, rule=a.rule, priority=a.priority and a.priority.lower(), call=a.call,
                           limit=a.limit, principal=a.principal, host=a.host)
    except Exception as e:  # sqlite3.OperationalError: a store from before alerts
        _say(f"no alerts in this store ({e})")
        return 1
    from .output.render import alerts_table
    return _print_records(recs, a.json, alerts_table)


def _detect_test(a, src) -> int:
    from .decode.flags import Flagger
    from .detect.cases import CASES_DIR, find_cases, load_case, run_case
    from .detect.engine import Engine, RuleSource
    from .detect.rules import DEFAULT_RULES
    d = a.test or CASES_DIR
    try:
        cases = find_cases(d)
    except OSError as e:
        _say(f"cannot read {d}: {e.strerror}")
        return 2
    if not cases:
        _say(f"no cases in {d} (NAME.jsonl with NAME.expect.yaml)")
        return 2

    defaults = src.paths[:1] == [DEFAULT_RULES]
    mine = src.paths[1:] if defaults else list(src.paths)

    def make_engine(extra):   # a fresh engine per case: the command line's rules, then the case's
        return Engine(RuleSource(mine + extra, defaults=defaults, min_priority=src.min_priority), Flagger())

    failed = 0
    for name, records, exp in cases:
        try:
            expect = load_case(exp)
            r = run_case(name, records, expect, make_engine)
        except FileNotFoundError:
            print(f"FAIL  {name}: no {os.path.basename(exp)} beside it")
            failed += 1
            continue
        except Exception as e:  # a bad case file (ConfigError), a rule file of the case that does not load
            print(f"FAIL  {name}: {e}")
            failed += 1
            continue
        print(f"{'PASS' if r.ok else 'FAIL'}  {name}: {r.records} records, {r.alerts} alerts"
              + "".join(f"\n      {p}" for p in r.problems))
        failed += not r.ok
    _say(f"{len(cases) - failed} of {len(cases)} cases passed ({d})")
    return 1 if failed else 0


def cmd_detect(a) -> int:
    from collections import Counter

    from .config import ConfigError, load
    from .decode.flags import Flagger
    from .detect.engine import Engine, falco_json, replay
    src, rs = _rule_source(a)
    if src is None:
        return 1
    for w in rs.warnings:
        _say(w)
    if a.test is not None:
        return _detect_test(a, src)
    if a.check or not a.replay:
        if not a.check:
            _say("detect needs --replay FILE or --check")
            return 2
        for r in rs.rules:
            print(f"{'on ' if r.enabled else 'off'}  {r.priority:<13} {r.name}  [{', '.join(sorted(r.types or ['any']))}]"
                  f"  {r.where}")
        _say(f"{len(rs.rules)} rules ({sum(r.enabled for r in rs.rules)} enabled) from {', '.join(rs.files)}: valid")
        return 0
    try:
        cfg = load(a.config)
    except ConfigError as e:
        _say(f"configuration refused: {e}")
        return 1
    engine = Engine(src, Flagger(cfg.flags), ruleset=rs)
    bad: Counter = Counter()
    loose: Counter = Counter()
    try:
        f = sys.stdin.buffer if a.replay == "-" else open(a.replay, "rb")
    except OSError as e:
        _say(f"cannot read {a.replay}: {e.strerror}")
        return 1
    out = sys.stdout
    with f:
        for alert in replay(f, engine, bad, loose):
            out.write((json.dumps(falco_json(alert)) if a.falco else msgspec.json.encode(alert).decode()) + "\n")
    out.flush()
    by_rule = Counter(r for (r, _), n in engine.alert_counts.items() for _ in range(n))
    st = engine.stats
    msg = f"{st['records']} records, {st['alerts'] + st['summaries']} alerts"
    if st["summaries"]:
        msg += f" ({st['summaries']} of them closing an aggregation window with its count)"
    if by_rule:
        msg += "; matches by rule: " + ", ".join(f"{r}: {n}" for r, n in by_rule.most_common())
    if bad:
        msg += f"; skipped {sum(bad.values())} lines that are not records ({dict(bad)})"
    if loose:
        msg += f"; {sum(loose.values())} records not in this version's schema, judged as they are ({dict(loose)})"
    if engine.errors:
        msg += f"; {len(engine.errors)} evaluation errors, first: {engine.errors[0]}"
    _say(msg)
    return 0


def cmd_show(a) -> int:
    from .output.store import get_call
    db = _open_db(a)
    if db is None:
        return 1
    try:
        rec, later = get_call(db, a.call_id, host=a.host)
    except KeyError as e:
        _say(e.args[0])
        return 1
    if a.json:
        print(json.dumps({**rec, "later_events": later} if later else rec, indent=2))
        return 0
    from .output.render import call_timeline
    print(call_timeline(rec, later))
    return 0


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
