"""Kernel events -> the MCP request that caused them.

Decided from kernel facts alone, after the fact, so no tool can outrun it
(shared/DESIGN.md, "Attribution without a race"). Every input carries a
kernel timestamp from one clock, and the ring delivers causes before their
effects (a server's read of a request is in the ring before anything the
request made it do; its response write after):

- a request is in flight in a server process from the server's read of it to
  its write of the response;
- an event of the server process belongs to the requests in flight at its
  timestamp;
- an event of a descendant belongs to what was in flight when its branch of
  the tree was forked from the server (the kernel records the fork, with the
  forking thread, before the child runs), however long the descendant lives;
- one candidate: exact. Several: thread evidence may settle it (below);
  otherwise the event is ambiguous and names them all, with the reason.

Thread evidence, used only where it cannot mislead on the servers seen in
practice (event loops, anyio/libuv thread pools, thread-per-request):
- "same thread": thread T read request R and wrote R's response, and T had
  no other request open (read by T, unanswered) and moved no other MCP
  message in between: a thread serving R alone (a synchronous loop, a thread
  per connection). T's events in that window are R's.
- "dispatched thread": T was created by a thread whose last read held R, T
  moved no MCP message before writing R's response: a thread started for R.
  T's events from its creation to that response are R's.
An event loop or a pool thread never satisfies either, so their overlapping
requests stay ambiguous rather than guessed.

Argument evidence, last and labelled as such: when timing and threads leave
several candidates and the arguments of exactly one of them name what the
event touched (the opened path, the connect's address, the program run; for a
fork, its branch's first exec: decode/evidence.py), that one is taken,
quality "argument", the others listed. It is a strong hint, not a proof: a
call could touch what another call asked about.

Items wait until every candidate is answered (or gone), then settle.
"""
from __future__ import annotations

from collections import deque

# how long (ns of kernel time) an answered request stays a candidate for
# events that were stamped before its response but reached the ring after it
RECENT_NS = 50_000_000


class Request:
    __slots__ = ("call", "server", "read_ts", "read_tid", "resp_ts", "solo", "done", "binding", "branches",
                 "waiting", "named")

    def __init__(self, call, server: int, ts: int, tid: int):
        self.call = call            # opaque: the audit stage's call
        self.server = server
        self.read_ts, self.read_tid = ts, tid
        self.resp_ts = None
        self.solo = True            # rule "same thread" still possible
        self.done = False           # answered, or gone without an answer
        self.binding = None         # (tid, start_ts, end_ts, rule)
        self.branches: list[Item] = []  # process branches forked while it was a candidate
        self.waiting = 0            # unsettled items that name it
        self.named = None           # the hint's parse of its arguments (evidence.Named), made once


class Verdict:
    __slots__ = ("quality", "requests", "reason", "server", "branch", "others")

    def __init__(self, quality: str, requests: list, reason: str, server: int | None, branch: int | None = None,
                 others: list | None = None):
        self.quality = quality      # exact, thread, argument, ambiguous, none, unknown
        self.requests = requests    # [Request]: one for exact/thread/argument, several for ambiguous
        self.reason = reason
        self.server = server
        self.branch = branch        # descendants: the pid whose fork from the server started the branch
        self.others = others or []  # argument: the other requests that were in flight


class Item:
    """One kernel event of a server process (or the fork that starts a branch),
    waiting for its candidates to be answered."""
    __slots__ = ("ev", "pid", "tid", "ts", "cands", "quality", "why", "verdict", "followers", "live", "child")

    def __init__(self, ev, pid: int, tid: int, ts: int, cands: list):
        self.ev, self.pid, self.tid, self.ts, self.cands = ev, pid, tid, ts, cands
        self.quality = None         # "thread" or "wakeup" once that evidence settled it
        self.why = ""               # ... and why
        self.verdict: Verdict | None = None
        self.followers: list = []   # events of the branch waiting for this verdict
        self.live: set[int] = set() # branch processes still alive
        self.child = None           # fork items: the child that starts the branch


class _Thread:
    __slots__ = ("created", "dispatch", "io", "open", "last_read_ts", "last_read", "handoff", "windows")

    def __init__(self, created=None, dispatch=()):
        self.created = created
        self.dispatch = list(dispatch)  # requests its creator had just read
        self.io = 0                     # MCP messages it moved
        self.open: list[Request] = []   # requests it read, not answered yet
        self.last_read_ts = -1
        self.last_read: list[Request] = []
        self.handoff: Request | None = None  # it read this request alone and has not handed it off yet
        self.windows: list = []         # [request, from ts, to ts or None, the thread that woke it]


class _Server:
    __slots__ = ("pid", "inflight", "recent", "threads", "pending")

    def __init__(self, pid: int):
        self.pid = pid
        self.inflight: list[Request] = []
        self.recent: deque[Request] = deque()
        self.threads: dict[int, _Thread] = {}
        self.pending: list[Item] = []


class Attributor:
    """Feed it, in ring order, the servers' reads and writes of MCP messages
    and the kernel events of the tracked trees; it returns (event, Verdict)
    pairs as they settle."""

    def __init__(self, hold_ns: int = 600_000_000_000, hint=None):
        self.servers: dict[int, _Server] = {}
        # pid -> the branch (fork item) a process below a server belongs to;
        # None for a process seen forked outside any server's tree
        self.nodes: dict[int, Item | None] = {}
        self.hold_ns = hold_ns      # an item never waits longer than this
        # hint(ev, [Request]) -> [(Request, what it names)]: the candidates whose arguments name
        # what ev touched
        self.hint = hint
        self.stats = {"exact": 0, "thread": 0, "wakeup": 0, "argument": 0, "ambiguous": 0, "none": 0, "unknown": 0}
        # wake-up evidence: hand-offs seen (a thread woke another right after reading one request
        # alone), and those refused because the woken thread still acted for an unanswered request
        self.wakes = {"handoffs": 0, "refused_busy": 0, "after_two_requests": 0}

    # --- MCP side ---------------------------------------------------------
    def request_read(self, pid: int, tid: int, ts: int, call) -> Request:
        s = self.servers.get(pid)
        if s is None:
            s = self.servers[pid] = _Server(pid)
        r = Request(call, pid, ts, tid)
        th = s.threads.get(tid)
        if th is None:
            th = s.threads[tid] = _Thread()
        th.io += 1
        for o in th.open:       # this thread now has two requests open
            o.solo = False
        if th.open:
            r.solo = False
        if th.last_read_ts == ts:
            th.last_read.append(r)
            th.handoff = None   # this read held two requests: a wake-up after it could be for either
        else:
            th.last_read_ts, th.last_read = ts, [r]
            th.handoff = r
        th.open.append(r)
        s.inflight.append(r)
        return r

    def response_written(self, r: Request, tid: int, ts: int) -> list:
        """The server wrote r's response (its last byte) on thread tid at ts."""
        if r.done:
            return []
        s = self.servers.get(r.server)
        r.resp_ts, r.done = ts, True
        if s is None:
            return []
        th = s.threads.get(tid)
        if th is None:
            th = s.threads[tid] = _Thread()
        if r.read_tid == tid and r.solo and th.open == [r]:
            r.binding = (tid, r.read_ts, ts, f"thread {tid} read this request and wrote its response, "
                                             "with no other request open on it")
        elif th.io == 0 and th.created is not None and r in th.dispatch:
            r.binding = (tid, th.created, ts, f"thread {tid} was started right after this request was read "
                                              "and wrote its response")
        th.io += 1
        for o in th.open:
            if o is not r:
                o.solo = False
        if r in th.open:
            th.open.remove(r)
        rt = s.threads.get(r.read_tid)
        if rt is not None and r in rt.open:
            rt.open.remove(r)
        if r in s.inflight:
            s.inflight.remove(r)
        s.recent.append(r)
        while s.recent and s.recent[0].resp_ts is not None and s.recent[0].resp_ts < ts - RECENT_NS:
            s.recent.popleft()
        for it in s.pending:
            if r in it.cands:
                if it.ts > ts:      # stamped after the response: not r's
                    it.cands.remove(r)
                    r.waiting -= 1
                elif r.binding and len(it.cands) > 1 and it.tid == tid and r.binding[1] <= it.ts <= ts:
                    self._bind(it, r, "thread", r.binding[3])
        return self._settle(s)

    def request_gone(self, r: Request) -> list:
        """r will never be answered (the session or the server ended, timeout)."""
        if r.done:
            return []
        r.done = True
        s = self.servers.get(r.server)
        if s is None:
            return []
        if r in s.inflight:
            s.inflight.remove(r)
        for th in s.threads.values():
            if r in th.open:
                th.open.remove(r)
        return self._settle(s)

    # --- kernel side ------------------------------------------------------
    def thread_created(self, ev) -> None:
        s = self.servers.get(ev.pid)
        if s is None:
            return
        creator = s.threads.get(ev.tid)
        dispatch = [r for r in creator.last_read if not r.done] if creator else []
        s.threads[ev.new_tid] = _Thread(ev.ktime_ns, dispatch)

    def woke(self, ev) -> None:
        """Thread ev.tid woke thread ev.wakee of the same process (--wakeup-evidence).

        A hand-off: the waker's last read held exactly one request R, nothing else was
        read since, and this is its first wake-up after that read. The woken thread then
        acts for R until it wakes the waker back (or R is answered). A woken thread that
        still acts for another unanswered request is not taken: that wake-up was not a
        hand-off (a lock or the interpreter's lock passed on)."""
        s = self.servers.get(ev.pid)
        if s is None:
            return
        waker, wakee = ev.tid, ev.wakee
        t = s.threads.get(waker)
        # the woken thread wakes back the thread that handed it work: its turn for R ends
        if t is not None:
            for w in t.windows:
                if w[2] is None and w[3] == wakee:
                    w[2] = ev.ktime_ns
        if t is None or t.handoff is None:
            if t is not None and len(t.last_read) > 1 and any(not r.done for r in t.last_read):
                self.wakes["after_two_requests"] += 1
            return
        r, t.handoff = t.handoff, None
        if r.done:
            return
        th = s.threads.get(wakee)
        if th is None:
            th = s.threads[wakee] = _Thread()
        if any(w[2] is None and not w[0].done and w[0] is not r for w in th.windows):
            self.wakes["refused_busy"] += 1
            return
        th.windows = [w for w in th.windows if w[2] is None and not w[0].done][-4:] + [[r, ev.ktime_ns, None, waker]]
        self.wakes["handoffs"] += 1

    def _window(self, s: _Server, it: Item):
        th = s.threads.get(it.tid)
        for w in th.windows if th is not None else ():
            if w[0] in it.cands and w[1] <= it.ts and (w[2] is None or it.ts <= w[2]):
                return w
        return None

    def event(self, ev) -> list:
        """A kernel event (fork, exec, exit, open, connect) of a tracked process.
        Returns the (event, Verdict) pairs settled now, this one or others."""
        pid = ev.pid
        tag = type(ev).__struct_config__.tag
        out: list = []
        s = self.servers.get(pid)
        if s is not None:
            cands = [r for r in s.inflight if r.read_ts <= ev.ktime_ns]
            cands += [r for r in s.recent if r.read_ts <= ev.ktime_ns <= r.resp_ts and r not in cands]
            it = Item(ev, pid, ev.tid, ev.ktime_ns, cands)
            for r in cands if len(cands) > 1 else ():
                if r.binding and r.binding[0] == ev.tid and r.binding[1] <= ev.ktime_ns <= r.binding[2]:
                    self._bind(it, r, "thread", r.binding[3])
                    break
            else:
                w = self._window(s, it) if len(cands) > 1 else None
                if w is not None:
                    self._bind(it, w[0], "wakeup", f"thread {it.tid} was woken by thread {w[3]} right after that "
                                                   "thread read this request alone, and had not woken it back")
            for r in it.cands:
                r.waiting += 1
            if tag == "fork":
                it.child = ev.child_pid
                it.live.add(ev.child_pid)
                self.nodes[ev.child_pid] = it
                for r in it.cands:
                    r.branches.append(it)
            if all(r.done for r in it.cands):
                out += self._decide(s, it)
            else:
                s.pending.append(it)
        else:
            branch = self._branch_of(ev)
            if branch is None:
                out.append((ev, self._verdict_for_outsider(ev)))
            else:
                if tag == "fork":
                    branch.live.add(ev.child_pid)
                if branch.verdict is not None:
                    out.append((ev, self._follow(branch, ev)))
                else:
                    branch.followers.append(ev)
            if tag == "fork" and ev.child_pid not in self.nodes:
                self.nodes[ev.child_pid] = branch
        if tag == "exit":
            out += self._exit(ev)
        return out

    def _branch_of(self, ev) -> Item | None:
        if ev.pid in self.nodes:
            return self.nodes[ev.pid]
        # fork not seen (tracked from /proc, or a lost record): the kernel's
        # inline lineage still says which branch this process is in
        for a in ev.ancestry:
            if self.nodes.get(a) is not None:
                return self.nodes[a]
            if a in self.servers:
                return None
        return None

    def _verdict_for_outsider(self, ev) -> Verdict:
        for a in ev.ancestry:
            if a in self.servers:
                self.stats["unknown"] += 1
                return Verdict("unknown", [], f"descends from MCP server {a}, but the fork that started its branch "
                                             "was not seen (already running when tracking began, or lost)", a)
        self.stats["none"] += 1
        return Verdict("none", [], "no MCP request in flight in this process tree", None)

    def _follow(self, branch: Item, ev) -> Verdict:
        v = branch.verdict
        self.stats[v.quality] += 1
        return Verdict(v.quality, v.requests, f"descendant of {branch.child}, forked by server {branch.pid}: "
                       + v.reason, v.server, branch.child, v.others)

    def _exit(self, ev) -> list:
        pid = ev.pid
        out: list = []
        branch = self.nodes.pop(pid, None)
        if branch is not None:
            branch.live.discard(pid)
        s = self.servers.pop(pid, None)
        if s is not None:
            for r in list(s.inflight):
                r.done = True
            s.inflight.clear()
            out += self._settle(s, force=True)
        return out

    # --- settling ---------------------------------------------------------
    @staticmethod
    def _bind(it: Item, r: Request, quality: str, why: str) -> None:
        for o in it.cands:
            if o is not r:
                o.waiting -= 1
        it.cands = [r]
        it.quality, it.why = quality, why

    def _settle(self, s: _Server, force: bool = False, now: int | None = None) -> list:
        out: list = []
        keep: list[Item] = []
        for it in s.pending:
            if force or all(r.done for r in it.cands) or (now is not None and now - it.ts > self.hold_ns):
                out += self._decide(s, it)
            else:
                keep.append(it)
        s.pending = keep
        return out

    def _decide(self, s: _Server, it: Item) -> list:
        for r in it.cands:
            r.waiting -= 1
        n = len(it.cands)
        if it.quality is not None:
            q, why = it.quality, it.why
        elif n == 1:
            q, why = "exact", "the only request in flight in the server"
        elif n == 0:
            q, why = "none", "no request in flight in the server (start-up or idle)"
        else:
            q = "ambiguous"
            why = (f"{n} requests in flight in the server and thread {it.tid} is not tied to one of them "
                   "(an event loop or a thread pool serves them together)")
            ev = it.ev
            if it.child is not None:    # a fork: its branch's first exec says what it was for
                ev = next((f for f in it.followers if f.pid == it.child and type(f).__struct_config__.tag == "exec"
                           and f.result in (None, 0)), None)
            named = self.hint(ev, it.cands) if self.hint is not None and ev is not None else []
            if len(named) == 1:
                (r, what), = named
                self.stats["argument"] += 1
                it.verdict = Verdict("argument", [r], f"{why}; of them only this one's arguments name what "
                                     + ("its branch ran" if ev is not it.ev else "it touched") + f": {what}",
                                     s.pid, others=[o for o in it.cands if o is not r])
                return self._publish(it)
        self.stats[q] += 1
        it.verdict = Verdict(q, list(it.cands), why, s.pid)
        return self._publish(it)

    def _publish(self, it: Item) -> list:
        out = [(it.ev, it.verdict)]
        for ev in it.followers:
            out.append((ev, self._follow(it, ev)))
        it.followers = []
        return out

    def tick(self, now: int) -> list:
        """Settle what waited longer than hold_ns (kernel time now)."""
        out: list = []
        for s in self.servers.values():
            if s.pending and now - s.pending[0].ts > self.hold_ns:
                out += self._settle(s, now=now)
        return out

    def flush(self) -> list:
        """Settle everything (the agent stops)."""
        out: list = []
        for s in self.servers.values():
            for r in s.inflight:
                r.done = True
            s.inflight.clear()
            out += self._settle(s, force=True)
        return out

    def live_branches(self, r: Request) -> list[int]:
        """Processes still alive in branches forked while r was (one of) the request(s) in flight."""
        pids: list[int] = []
        for b in r.branches:
            if b.verdict is None or r in b.verdict.requests:
                pids.extend(b.live)
        return pids
