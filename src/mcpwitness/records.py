"""Every record mcpwitness writes, as msgspec structs: one schema for the
JSONL output, the store, the rule fields and replay.

Kernel events (fork, exec, exit, open, connect, policy) come from
decode/events.py; MCP messages, sessions and non-JSON from decode/mcp.py;
transport notices from decode/http.py; call records from decode/audit.py;
discovered, start, stats, policy_load from the agent; rules and alert from
detect/. A few event types (io, socket, stdio, thread) are consumed inside
the pipeline and never written; they live here with the rest so that every
stage reads one definition. `Record` is the tagged union replay decodes.
"""
from __future__ import annotations

import msgspec


class EventAttribution(msgspec.Struct, gc=False, omit_defaults=True):
    """Which MCP call a kernel event belongs to, as the auditor settled it
    (decode/audit.py, from decode/attribute.py's verdict)."""
    quality: str                          # exact, thread, wakeup, argument, ambiguous, none, unknown
    call: str | None                      # the call id, when one call is named
    reason: str | None
    candidates: list[str] | None = None   # ambiguous (or argument): the calls it may belong to
    server_pid: int | None = None
    branch: int | None = None             # a descendant: the pid whose fork from the server started its branch
    after_record: bool = False            # settled after its call's record was written


class Event(msgspec.Struct, tag_field="type", gc=False):
    """Fields every event has. Built positionally (fast): keep BASE_FIELDS in step."""
    time: str            # wall clock, ISO 8601 UTC, from ktime_ns
    ktime_ns: int        # CLOCK_MONOTONIC, the kernel's stamp
    pid: int
    tid: int
    ppid: int
    uid: int
    comm: str
    start_ns: int        # with pid: the process identity (start_boottime)
    cgroup_id: int
    root: int            # the tracked root this process descends from
    ancestry: list[int]  # fork lineage: parent, grandparent, ..., root
    truncated: bool
    notes: list[str]


class ForkEvent(Event, tag="fork"):
    child_pid: int
    child_start_ns: int
    attribution: EventAttribution | None = None   # the auditor's copy of the event carries it


class ThreadEvent(Event, tag="thread"):
    """tid (of process pid) started thread new_tid. Used by attribution, not written."""
    new_tid: int


class WakeEvent(Event, tag="wake"):
    """tid (of process pid) woke thread wakee from a futex or write-family syscall
    (--wakeup-evidence). Used by attribution, not written."""
    wakee: int
    syscall: int


class ExecEvent(Event, tag="exec"):
    filename: str
    exe: str | None
    argv: list[str]
    argv_bytes: int
    result: int
    error: str | None
    syscall: str | None
    category: str | None = None  # flags.py: shell, downloader, interpreter
    sensitive: str | None = None
    attribution: EventAttribution | None = None


class ExitEvent(Event, tag="exit"):
    status: int
    exit_code: int | None
    signal: int | None
    signal_name: str | None
    core_dumped: bool
    attribution: EventAttribution | None = None


class OpenEvent(Event, tag="open"):
    syscall: str
    path: str
    resolved: str | None
    flags: list[str]
    flags_raw: int
    access: str
    mode: str | None
    dirfd: int | None
    result: int | None
    error: str | None
    risk: str | None = None       # flags.py: read, write, create, truncate
    sensitive: str | None = None  # flags.py: the sensitive-path list it is on
    attribution: EventAttribution | None = None


class ConnectEvent(Event, tag="connect"):
    fd: int
    family: str
    address: str | None
    port: int | None
    unix_path: str | None
    sock_type: str | None
    protocol: str | None
    result: int
    error: str | None
    scope: str | None = None      # flags.py: loopback, private, link-local, public, unix
    attribution: EventAttribution | None = None
    policy_slot: int = 0          # the process's policy (unix paths are checked in userspace)
    # connect, or the first datagram a socket sent to this address: sendto, sendmsg, sendmmsg;
    # io_uring: a connect io_uring completed (no fd number)
    syscall: str = "connect"


class IoEvent(Event, tag="io"):
    """Bytes a tracked process read or wrote on a pipe, Unix socket or TCP
    socket whose stream looks like JSON or HTTP, or plaintext it passed
    through SSL_read/SSL_write. Consumed by streams.py; not written by default."""
    fd: int
    direction: str       # "read" or "write", as the process did it
    kind: str            # "pipe", "unix", "tcp" or "tls"
    syscall: str
    inode: int           # the stream: pipe or socket inode; tls: the SSL object
    dev: int             # tls: the inode of the socket under it (0: not known yet)
    bytes: int           # what the syscall really moved
    data: bytes          # what was captured (shorter when truncated)
    untracked: bool = False  # captured by the port filter; the process is not tracked


class SockEvent(Event, tag="socket"):
    """The endpoints of a TCP socket whose bytes are captured, the peer of a
    Unix socket, or the socket a TLS stream was tied to. Consumed by
    http.py and streams.py."""
    fd: int
    inode: int
    family: str
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    cookie: int | None
    netns_cookie: int
    netns_ino: int
    binding: str         # capture, or how a TLS stream was tied to this socket
    ssl: int             # the SSL object (TLS bindings)
    untracked: bool = False
    peer_inode: int = 0  # family "unix": the connected peer socket's inode
    unix_named: int = 0  # family "unix": 1: this end is bound to a name, 2: its peer is (neither: a socketpair)
    # family "unix": the peer's credentials as the kernel keeps them for SO_PEERCRED (the process
    # that connected, or made the socketpair; pid 0: not known)
    peer_pid: int = 0
    peer_uid: int = 0
    peer_gid: int = 0


class StdioFd(msgspec.Struct, array_like=True, gc=False):
    """What one of a process's stdio fds is: its kind (pipe, unix, tcp, tty,
    other; None: closed), the file's device and inode, and for a Unix socket
    the inode of its connected peer (0: none or not known)."""
    kind: str | None
    dev: int
    inode: int
    peer: int = 0


class StdioEvent(Event, tag="stdio"):
    """What a tracked process's fd 0 and fd 1 are, when it exec'd (why
    "exec"), when watch mode found it ("found"), or read from /proc when it
    was attached or seeded ("proc"). Consumed by mcp.py: a server's stdin and
    stdout are one conversation however the client wired them."""
    stdin: StdioFd
    stdout: StdioFd
    why: str


class PolicyEvent(Event, tag="policy"):
    """A policy refused an action (or in monitor mode would have): what, by
    which rule, with which mechanism, and what the process saw."""
    check: str           # connect, sendmsg, open, exec
    action: str          # denied, killed, monitor
    outcome: str         # the action in words
    mechanism: str
    errno: str | None    # what the syscall returned to the process (None: it got no error)
    policy_slot: int
    rule_id: int
    access: list[str]    # files and execs: the access refused
    path: str | None
    family: str | None
    address: str | None
    port: int | None
    flags_raw: int | None
    policy: str | None = None    # named by the decoder from the running policy set
    rule: str | None = None
    attribution: EventAttribution | None = None


# the kernel events that are written (and attributed); IoEvent and ThreadEvent are consumed inside
KERNEL_TAGS = frozenset({"fork", "exec", "exit", "open", "connect", "policy"})

AnyEvent = (ForkEvent | ExecEvent | ExitEvent | OpenEvent | ConnectEvent | IoEvent | ThreadEvent | WakeEvent
            | PolicyEvent
            | SockEvent | StdioEvent)

class TlsInfo(msgspec.Struct, gc=False):
    """Where a TLS message's plaintext was read (written on MCP records as `tls`)."""
    library: str                       # openssl (a libssl), openssl(node) (an executable's own OpenSSL)
    file: str                          # the file the probes are on


class HttpInfo(msgspec.Struct, gc=False, omit_defaults=True):
    """The HTTP side of a frame (written on MCP records as `http`)."""
    method: str | None = None          # the request's method
    target: str | None = None          # its path and query
    status: int | None = None          # the response's status (response frames)
    session_id: str | None = None      # Mcp-Session-Id (revisions up to 2025-11-25)
    protocol_version: str | None = None  # MCP-Protocol-Version header
    mcp_method: str | None = None      # Mcp-Method header (2026-07-28)
    mcp_name: str | None = None        # Mcp-Name header (2026-07-28)
    content_type: str | None = None
    sse_event: str | None = None       # SSE: the event's type and id
    sse_id: str | None = None
    principal: str | None = None       # requests with credentials: the id of the principal they name


class McpMessage(msgspec.Struct, tag="mcp", tag_field="type", gc=False, kw_only=True):
    time: str
    ktime_ns: int
    session: str
    direction: str                 # client->server or server->client
    kind: str                      # request, notification, response, error, invalid
    id: int | float | str | None
    method: str | None             # for responses: the paired request's method
    paired: bool | None = None     # responses: matched to their request (null for requests, notifications)
    latency_ms: float | None = None  # responses: from the request's syscall to this one's
    size: int                      # bytes of the line (of the whole batch for batch members)
    pid: int
    tid: int
    comm: str
    fd: int
    transport: str                 # stdio or unix
    batch: int | None = None       # index inside a JSON-RPC batch
    call_id: str | None = None     # requests: the call they open; responses: the call they answer
    params: object = None
    result: object = None
    error: object = None
    protocol_version: str | None = None
    result_type: str | None = None        # 2026-07-28: "complete" or "input_required"
    input_requests: object = None         # input_required: {key: method} the server asks the client
    continues: object = None              # a retry carrying answers: {"id": first request's id, "round": n}
    truncated: bool = False
    notes: list[str] = []
    http: HttpInfo | None = None          # HTTP transports: method, target, status, MCP headers
    tls: TlsInfo | None = None            # HTTPS: the TLS library it was read from (at the end that saw it)


class SessionRecord(msgspec.Struct, tag="session", tag_field="type", gc=False):
    time: str
    ktime_ns: int
    event: str                     # start, identified, end, resumed (taken up after an agent restart)
    session: str
    transport: str
    pid: int                       # the tracked process at this end
    role: str | None               # its role: server or client
    exe: str | None
    cmdline: list[str] | None
    era: str | None                # handshake (<= 2025-11-25) or stateless (>= 2026-07-28)
    protocol_version: str | None
    client_info: object = None
    server_info: object = None
    client_capabilities: object = None
    server_capabilities: object = None
    messages: int = 0
    unanswered: int = 0
    peers: object = None           # both ends tracked: [{pid, role, exe}] of every process seen
    ends: object = None            # every process seen in it: pid, role, exe, cmdline, cgroup, container,
                                   # PID namespace (and the pid inside it), network namespace
    connection: object = None      # network transports: client and server address, netns, socket cookie
    stdio: object = None           # a server's stdio: what its stdin and stdout are (kind: pipe, unix, tty;
                                   # inode; a Unix socket's peer: the client's end)
    principal: object = None       # who the client is, observed (decode/principal.py): id, kind, source,
                                   # credentials' claims or fingerprint, or the process (uid, exe, hash,
                                   # chain, container); its clientInfo beside it as `declared`


class NonJson(msgspec.Struct, tag="nonjson", tag_field="type", gc=False):
    time: str
    ktime_ns: int
    session: str
    direction: str
    pid: int
    fd: int
    size: int
    reason: str
    preview: str


class TransportNotice(msgspec.Struct, tag="transport", tag_field="type", gc=False):
    """A captured connection that is not MCP over HTTP/1.1: what it is, and that capture stopped."""
    time: str
    ktime_ns: int
    pid: int
    comm: str
    fd: int
    kind: str
    reason: str
    local: str | None
    remote: str | None
    preview: str


# --- a call record's parts -------------------------------------------------------
# UNSET fields are left out of the JSON (a fact that does not apply); None is written as null.

class CallEnd(msgspec.Struct, gc=False, omit_defaults=True):
    """One end of a call: the process, what it declared, where it runs."""
    pid: int | None
    exe: str | None
    info: object                                        # clientInfo / serverInfo as declared
    cmdline: list[str] | None | msgspec.UnsetType = msgspec.UNSET   # the server's
    tracked: bool | msgspec.UnsetType = msgspec.UNSET               # the server's: the kernel view exists
    container: str | None | msgspec.UnsetType = msgspec.UNSET        # the container id
    container_runtime: str | None | msgspec.UnsetType = msgspec.UNSET  # podman, docker, containerd, cri-o, cri
    container_name: str | None | msgspec.UnsetType = msgspec.UNSET
    container_image: str | None | msgspec.UnsetType = msgspec.UNSET
    pod: dict | None | msgspec.UnsetType = msgspec.UNSET               # Kubernetes: uid, namespace, name
    pid_ns: int | None | msgspec.UnsetType = msgspec.UNSET
    ns_pid: int | None | msgspec.UnsetType = msgspec.UNSET
    net_ns: int | None | msgspec.UnsetType = msgspec.UNSET
    address: str | None | msgspec.UnsetType = msgspec.UNSET         # network transports


class ResultSummary(msgspec.Struct, gc=False, omit_defaults=True):
    """What a response carried, without its content."""
    bytes: int
    is_error: object = msgspec.UNSET
    items: int | msgspec.UnsetType = msgspec.UNSET
    content_types: dict | msgspec.UnsetType = msgspec.UNSET
    structured: bool | msgspec.UnsetType = msgspec.UNSET
    result_type: str | msgspec.UnsetType = msgspec.UNSET


class CallAttribution(msgspec.Struct, gc=False, omit_defaults=True):
    """How the call's kernel events were attributed: the overall quality and a count per kind."""
    quality: str
    exact: int | msgspec.UnsetType = msgspec.UNSET
    thread: int | msgspec.UnsetType = msgspec.UNSET
    wakeup: int | msgspec.UnsetType = msgspec.UNSET
    argument: int | msgspec.UnsetType = msgspec.UNSET
    ambiguous: int | msgspec.UnsetType = msgspec.UNSET
    unknown: int | msgspec.UnsetType = msgspec.UNSET
    thread_evidence: str | msgspec.UnsetType = msgspec.UNSET
    events: int | msgspec.UnsetType = msgspec.UNSET   # kernel events in the timeline


class TimelineEntry(msgspec.Struct, gc=False, omit_defaults=True):
    """One kernel event in a call's timeline, with what matters for its type."""
    t_ms: float                    # from the server's read of the request
    time: str
    type: str                      # open, exec, connect, policy, fork, exit
    pid: int
    tid: int
    comm: str
    attribution: str               # exact, thread, wakeup, argument, ambiguous, ...
    candidates: list[str] | msgspec.UnsetType = msgspec.UNSET
    truncated: bool | msgspec.UnsetType = msgspec.UNSET
    path: str | None | msgspec.UnsetType = msgspec.UNSET          # open, policy (files)
    flags: list[str] | msgspec.UnsetType = msgspec.UNSET          # open
    risk: str | None | msgspec.UnsetType = msgspec.UNSET          # open
    fd: int | None | msgspec.UnsetType = msgspec.UNSET            # open
    sensitive: str | msgspec.UnsetType = msgspec.UNSET            # open, exec
    outside_roots: bool | msgspec.UnsetType = msgspec.UNSET       # open
    file: str | msgspec.UnsetType = msgspec.UNSET                 # exec
    argv: list[str] | msgspec.UnsetType = msgspec.UNSET           # exec
    category: str | msgspec.UnsetType = msgspec.UNSET             # exec
    error: str | msgspec.UnsetType = msgspec.UNSET                # open, exec, connect
    family: str | None | msgspec.UnsetType = msgspec.UNSET        # connect, policy (network)
    address: str | None | msgspec.UnsetType = msgspec.UNSET
    port: int | None | msgspec.UnsetType = msgspec.UNSET
    unix_path: str | msgspec.UnsetType = msgspec.UNSET            # connect
    scope: str | msgspec.UnsetType = msgspec.UNSET                # connect
    via: str | msgspec.UnsetType = msgspec.UNSET                  # open, connect: not the usual syscall
    check: str | msgspec.UnsetType = msgspec.UNSET                # policy
    action: str | msgspec.UnsetType = msgspec.UNSET
    outcome: str | msgspec.UnsetType = msgspec.UNSET
    mechanism: str | msgspec.UnsetType = msgspec.UNSET
    errno: str | None | msgspec.UnsetType = msgspec.UNSET
    policy: str | None | msgspec.UnsetType = msgspec.UNSET
    rule: str | None | msgspec.UnsetType = msgspec.UNSET
    rule_id: int | msgspec.UnsetType = msgspec.UNSET
    access: list[str] | msgspec.UnsetType = msgspec.UNSET
    child_pid: int | msgspec.UnsetType = msgspec.UNSET            # fork
    signal: str | msgspec.UnsetType = msgspec.UNSET               # exit
    exit_code: int | None | msgspec.UnsetType = msgspec.UNSET

    def get(self, name: str):
        """A field's value; None where it does not apply to this type."""
        v = getattr(self, name, None)
        return None if v is msgspec.UNSET else v


class CallRecord(msgspec.Struct, tag="call", tag_field="type", gc=False):
    time: str
    ktime_ns: int
    call_id: str
    session: str
    direction: str                 # client->server (a tool call...) or server->client (sampling...)
    request_id: object
    method: str | None
    tool: str | None               # tools/call and prompts/get: the name; resources/read: the uri
    arguments: object              # redacted
    status: str                    # ok, tool_error, error, input_required, cancelled, incomplete
    complete: bool
    incomplete_reason: str | None
    latency_ms: float | None
    client: CallEnd | None
    server: CallEnd | None
    result: ResultSummary | None
    error: object
    attribution: CallAttribution
    processes: list
    lineage: list
    timeline: list[TimelineEntry]
    violations: list
    summary: str
    still_running: list
    end_ktime_ns: int | None = None
    notes: list = []
    transport: str | None = None   # stdio, unix, http, https, tcp: the session's
    principal: dict | None = None  # who the client is (the session's principal; HTTP: the request's credentials)




# --- what the agent says about itself ------------------------------------------

class Discovered(msgspec.Struct, tag="discovered", tag_field="type", gc=False):
    """Watch mode: the kernel found a process speaking MCP and the filters kept it."""
    time: str
    ktime_ns: int
    pid: int
    comm: str
    exe: str | None
    cmdline: list[str] | None
    ppid: int
    cgroup_id: int
    children_seeded: list[int]
    policy: str | None
    reason: str


class Start(msgspec.Struct, tag="start", tag_field="type", gc=False, omit_defaults=True):
    """The first record of a run: what was loaded, with which mechanisms, watching what."""
    time: str
    version: str
    agent_pid: int
    kernel: str
    arch: str
    mode: str
    mechanisms: dict
    programs_skipped: dict
    mounts: dict
    tls: dict | None
    policy: dict | None
    detect: dict | None
    command: list[str] | None = None    # run, attach: the server's command line
    root_pid: int | None = None         # run, attach: the server's pid
    attached: list[int] | None = None   # attach: the pids tracked
    filters: dict | None = None         # watch: what a discovered process must match
    pinned: dict | None = None          # watch --pin: adopted from the pins or loaded and pinned, and why


class Stats(msgspec.Struct, tag="stats", tag_field="type", gc=False):
    """The last record of a run (and the metrics' source): every stage's counters and what was lost."""
    time: str
    version: str
    events: dict
    kernel: dict
    lost: dict
    decoder: dict
    streams: dict
    http: dict
    tls_errors: list | None
    tls_libraries: list | None
    tls_processes: int | None
    mcp: dict
    attribution: dict
    calls: dict
    redactions: int
    stage_errors: dict             # a decode stage that raised on its input, by stage (its work on that input lost)
    policy: dict | None
    ring_discarded: int
    backlog_peak_bytes: int
    agent_peak_rss_bytes: int | None  # the agent's own peak memory so far (VmHWM)
    still_running: list
    discovered: list | None
    rejected_by_filter: int
    errors: list
    detect: dict | None
    store: dict | None
    pinned: dict | None = None     # watch --pin: the pinned programs, adopted or loaded, events during the restart
    publish: dict | None = None    # --publish: the spool (bytes, oldest age, refused when full) and what was sent
    tls_unread: dict | None = None   # TLS: executables recognised but not read ({path: why}: stripped BoringSSL, rustls, a Go before 1.17)


class PolicyLoad(msgspec.Struct, tag="policy_load", tag_field="type", gc=False, omit_defaults=True):
    """A policy file (re)loaded: applied, with the running set, or refused, with why."""
    time: str
    reload: bool
    result: str                    # applied or refused
    path: str | None = None
    error: str | None = None       # refused: where and why
    running: str | None = None     # refused: the digest of the set that stays
    digest: str | None = None
    generation: int | None = None
    mechanisms: dict | None = None
    fallback_reason: str | None = None
    not_enforceable: list | None = None
    policies: list | None = None
    servers: dict | None = None
    retagged: dict | None = None


# --- what detection writes -------------------------------------------------------

class Alert(msgspec.Struct, tag="alert", tag_field="type", gc=False):
    """A rule matched a record: linked to the call and the session it came from."""
    time: str
    ktime_ns: int | None
    rule: str
    priority: str
    output: str
    tags: list[str]
    source: str                    # the type of the record that matched
    call_id: str | None
    session: str | None
    tool: str | None
    candidates: list[str] | None   # an ambiguous kernel event: the calls it may belong to
    pid: int | None
    fields: dict
    delay_ms: float | None = None  # from the kernel timestamp of the cause to the alert's write
    container: dict | None = None  # the server's container (runtime, id, name, image, pod), where it runs in one
    # aggregation (the rule's `aggregate` window): the first match is written at once with count 1;
    # when the window closes with repeats, the same alert again with the exact count, the first and
    # last times and the calls (up to 100), under the same group id
    count: int = 1
    group: str | None = None
    first_time: str | None = None
    last_time: str | None = None
    calls: list[str] | None = None
    principal: str | None = None   # the id of the client's principal (the call's, or the session's)


class RulesLoad(msgspec.Struct, tag="rules", tag_field="type", gc=False, omit_defaults=True):
    """The rule files (re)loaded: applied, or refused with where and why."""
    time: str
    event: str
    files: list[str]
    result: str
    error: str | None = None       # refused
    running: int | None = None     # refused: the rules that stay
    rules: int | None = None       # applied
    enabled: int | None = None
    warnings: list[str] | None = None


# every type written to the output, as decoded by replay (`Record`)
WRITTEN = (ForkEvent, ExecEvent, ExitEvent, OpenEvent, ConnectEvent, PolicyEvent, McpMessage, SessionRecord,
           NonJson, TransportNotice, CallRecord, Discovered, Start, Stats, PolicyLoad, Alert, RulesLoad)

# a JSON Lines record, decoded by its `type` (replay)
Record = (ForkEvent | ExecEvent | ExitEvent | OpenEvent | ConnectEvent | PolicyEvent | McpMessage | SessionRecord
          | NonJson | TransportNotice | CallRecord | Discovered | Start | Stats | PolicyLoad | Alert | RulesLoad)
