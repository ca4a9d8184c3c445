"""The decode stages, in order, as one object: kernel records in, the
records to write out.

    records (ring tuples) -> events.Decoder -> typed events
        io on pipes, Unix sockets, ptys -> streams.Reassembler -> frames
        io on TCP and TLS, socket facts -> http.HttpReassembler -> frames, notices
        frames, stdio facts             -> mcp.McpDecoder -> messages, sessions, non-JSON
        everything written              -> audit.Auditor -> + call records, attribution

The pipeline owns the stages and their counters. What it does not own
comes in as callbacks, so that it can run (and be tested) without a kernel:

- `admit(ev, out)`: a watch-mode agent keeps an event of a process it was
  not told about only if this returns True (it may append a `discovered`
  record to out);
- `hooks`: called with every kernel event that is written (fork, exec, exit,
  open, connect, policy), and the list of records it goes out with: the
  process table, TLS triggers, the policy runtime;
- `on_event`: every event as decoded, the raw payloads too (tests, debugging).

Not thread-safe: one caller (the agent's decode thread).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from ..records import Discovered, ExecEvent, ExitEvent, ForkEvent, IoEvent, NonJson, SockEvent, StdioEvent
from .audit import Auditor
from .events import Decoder
from .flags import Flagger
from .http import HttpReassembler, SessionEnd
from .mcp import McpDecoder
from .redact import Redactor
from .streams import Frame, Reassembler


class Pipeline:
    def __init__(self, *, redactor: Redactor | None = None, flagger=None, linger_ns: int = 10_000_000_000,
                 call_timeout_ns: int = 300_000_000_000, identity=None, ancestry=None, policy_names=None,
                 stop_stream: Callable | None = None, admit: Callable | None = None, watched: set | None = None,
                 hooks: Iterable[Callable] = (), on_event: Callable | None = None, max_message: int = 16 << 20,
                 identifier=None):
        # max_message: the longest line or HTTP body kept whole; longer ones are cut there, and the
        # rest of them dropped (the agent's memory is a few times this, whatever a peer writes)
        self.decoder = Decoder(ancestry=ancestry, policy_names=policy_names, flagger=flagger or Flagger())
        wall = self.decoder.wall_time
        self.streams = Reassembler(max_frame=max_message)
        redactor = redactor or Redactor()
        self.http = HttpReassembler(wall=wall, stop_stream=stop_stream, redact=redactor.text, max_body=max_message)
        kw = {"identity": identity} if identity is not None else {}
        self.mcp = McpDecoder(redactor, wall=wall, identifier=identifier, **kw)
        self.audit = Auditor(wall=wall, linger_ns=linger_ns,
                             timeout_ns=call_timeout_ns)
        self.admit = admit
        self.watched = watched      # watch mode: the roots kept so far (shared with whoever admits)
        self.hooks = list(hooks)
        self.on_event = on_event
        self.on_look = None         # pid -> None: a process to look at for a TLS library (set by the agent)
        self.counts: Counter = Counter()   # events by type, and what the watch filter dropped
        self.stage_errors: Counter = Counter()  # a stage that raised on its input, by stage
        self.errors: list[str] = []             # the last of them, said

    @property
    def redactor(self) -> Redactor:
        return self.mcp.redactor

    def feed(self, records) -> list:
        """Ring records (tuples) -> records to write."""
        return self.events(self.decoder.feed(records))

    def events(self, events) -> list:
        """Typed events -> records to write."""
        batch: list = []
        counts, admit, watched = self.counts, self.admit, self.watched
        for ev in events:
            t = type(ev)
            if watched is not None and ev.root not in watched and not ((t is IoEvent or t is SockEvent)
                                                                       and ev.untracked):
                n = len(batch)
                try:
                    kept = admit is not None and admit(ev, batch)
                except Exception as e:  # admission failed half way: kept if it got as far as being a root
                    self._error("discovery", e)
                    kept = ev.root in watched
                for r in batch[n:]:
                    if type(r) is Discovered:
                        r.cmdline = self.redactor.argv(r.cmdline)
                if not kept:
                    counts["dropped_by_filter"] += 1
                    continue
            counts[t.__struct_config__.tag] += 1
            try:
                self._event(ev, t, batch)
            except Exception as e:  # a stage's bug on this input: this event's work is lost, not the batch's
                self._failed(ev, t, e, batch)
        return self.audit.feed(batch)

    def _event(self, ev, t, batch: list) -> None:
        if t is IoEvent:
            # raw payload bytes hold secrets: never written as they are,
            # only as decoded, redacted MCP records
            if self.on_event is not None:
                self.on_event(ev)
            if ev.kind == "tcp" or ev.kind == "tls":
                self._from_http(self.http.feed(ev), batch)
            else:
                for frame in self.streams.feed(ev):
                    self._mcp(frame, batch)
            return
        if t is SockEvent:
            if ev.binding == "look":   # a process to look at for a TLS library (kernel/tls.py)
                if self.on_look is not None:
                    self.on_look(ev.pid)
            elif ev.binding == "freed":
                self._from_http(self.http.freed(ev.pid, ev.ssl), batch)
            elif ev.binding == "closed":
                frames, convs = self.http.closed(ev.inode)
                self._from_http(frames, batch)
                for conv in convs:
                    batch.extend(self.mcp.end_conv(conv, ev.ktime_ns))
            elif ev.family == "unix":
                self.streams.sock(ev)
            else:
                self.http.sock(ev)
            return
        if t is StdioEvent:
            self.mcp.stdio(ev.pid, ev.stdin, ev.stdout, ev.ppid)
            return
        if t is ExecEvent and ev.argv:
            ev.argv = self.redactor.argv(ev.argv)   # written as they are: secrets on command lines out
        batch.append(ev)  # ThreadEvents too: audit.py uses them and does not pass them on
        for hook in self.hooks:
            hook(ev, batch)
        if t is ForkEvent:
            self.mcp.forked(ev.pid, ev.child_pid)
        elif t is ExitEvent:
            # a process that died mid-message: what it left is kept
            for frame in self.streams.flush(ev.pid):
                self._mcp(frame, batch)
            self._from_http(self.http.flush(ev.pid), batch)
            batch.extend(self.mcp.end_process(ev.pid, ev.ktime_ns))
        if self.on_event is not None:
            self.on_event(ev)

    def _mcp(self, frame: Frame, batch: list) -> None:
        """One frame to the MCP decoder: a frame it fails on is written as
        non-JSON with the reason, and the frames after it still decode."""
        try:
            batch.extend(self.mcp.feed(frame))
        except Exception as e:
            self._error("mcp", e)
            batch.append(NonJson(self.decoder.wall_time(frame.ktime_ns), frame.ktime_ns, "", frame.direction,
                                 frame.pid, frame.fd, len(frame.data), f"not decoded: mcpwitness error "
                                 f"{type(e).__name__}: {e}", self.redactor.text(
                                     frame.data[:200].decode("utf-8", "replace"))))

    def _failed(self, ev, t, e: Exception, batch: list) -> None:
        """A stage raised on ev: counted under the stage, said in the stats
        record, and the stage's state for that stream starts over."""
        if t is IoEvent and (ev.kind == "tcp" or ev.kind == "tls"):
            self._error("http", e)
            self.http.reset(ev, f"mcpwitness error {type(e).__name__}")
        elif t is IoEvent:
            self._error("streams", e)
            self.streams.reset(ev)
        else:
            self._error(t.__struct_config__.tag, e)

    def _error(self, stage: str, e: Exception) -> None:
        self.stage_errors[stage] += 1
        if len(self.errors) >= 20:
            del self.errors[0]
        self.errors.append(f"{stage}: {type(e).__name__}: {e}")

    def _from_http(self, items, batch: list) -> None:
        """http.py's output: frames to the MCP decoder, session ends to it,
        transport notices as they are."""
        for x in items:
            t = type(x)
            if t is Frame:
                self._mcp(x, batch)
            elif t is SessionEnd:
                batch.extend(self.mcp.end_conv(x.conv, x.ktime_ns))
            else:
                batch.append(x)

    def tick(self, now: int) -> list:
        """Call timers (linger, timeouts); now is CLOCK_MONOTONIC ns."""
        return self.audit.tick(now)

    def finish(self, now: int, end_sessions: bool = True) -> list:
        """The end: what is still waiting anywhere (continuation records,
        half messages, open calls) is written, marked as such. With
        end_sessions=False (pinned programs: the next agent resumes them) the
        open sessions get no end record."""
        out = self.events(self.decoder.flush())
        tail: list = []
        for frame in self.streams.flush():
            self._mcp(frame, tail)
        self._from_http(self.http.flush(), tail)
        if end_sessions:
            tail.extend(self.mcp.end_all(now))
        out.extend(self.audit.feed(tail))
        out.extend(self.audit.flush(now))
        return out

    def stats(self) -> dict:
        """Each stage's counters, under the names the stats record uses."""
        return {"events": dict(self.counts), "decoder": dict(self.decoder.stats),
                "streams": dict(self.streams.stats), "http": dict(self.http.stats), "mcp": dict(self.mcp.stats),
                "attribution": {**self.audit.attr.stats, "wakeups": dict(self.audit.attr.wakes)}, "calls": dict(self.audit.stats),
                "redactions": self.mcp.redactor.count, "stage_errors": dict(self.stage_errors)}
