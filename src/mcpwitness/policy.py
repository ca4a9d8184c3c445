"""Policies: what an MCP server's process tree may connect to, open and run.

    policies:
      - name: files
        match:                       # all given must hold; the first policy that matches wins
          exe: "*/node"              # glob(s) on the executable
          cmdline: "*server-filesystem*"   # glob(s) on the command line, arguments joined by spaces
          cgroup: /system.slice/mcp.service  # cgroup v2 path, or a parent of it
          container: 3f2a            # container id (or its prefix), as found in the cgroup path
        mode: enforce                # or monitor: report, refuse nothing
        default: allow               # allow (deny lists) or deny (allow lists); per section too
        network:
          allow: ["127.0.0.1:8000-8100", "[::1]:443", "10.0.0.0/8"]
          deny: ["*:22", "unix:/run/docker.sock"]
        files:
          deny:
            - ~/.ssh/**              # every home directory
            - {path: /etc/**, access: [write, create]}
        exec:
          deny: [curl, wget, /bin/sh]   # a bare name is the executable's basename anywhere

This module only parses, checks and compiles (pure functions, no kernel):
enforce.py writes the compiled entries into the kernel's maps.

Semantics (the kernel implements exactly these, see bpf/enforce.bpf.h):
- Files and execs are matched against the path the kernel resolved (the
  opened file's own path: symlinks followed, no `..`). A rule naming a
  symlink also gets its target, so `/bin/sh` covers /usr/bin/dash.
- The most specific rule wins: an exact path over a subtree, a deeper
  subtree over a shallower one, a narrower network prefix over a wider
  one; between equally specific rules, deny wins.
- For execs, a bare-name deny wins over any path rule; a bare-name allow
  counts as an allow.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import os
import pwd
import re
from dataclasses import dataclass, field

from .proc import container_id, under_cgroup
from .util import where as mark_where, yaml_with_marks

ACC_READ, ACC_WRITE, ACC_CREATE, ACC_EXEC, ACC_CONNECT = 0x1, 0x2, 0x4, 0x8, 0x10
ACC_ORDER = (ACC_READ, ACC_WRITE, ACC_CREATE, ACC_EXEC, ACC_CONNECT)  # the kernel's rule[] order
ACCESS_BITS = {"read": ACC_READ, "write": ACC_WRITE, "create": ACC_CREATE}
ACCESS_NAMES = {ACC_READ: "read", ACC_WRITE: "write", ACC_CREATE: "create", ACC_EXEC: "exec", ACC_CONNECT: "connect"}
MODES = ("monitor", "enforce")
MAX_POLICIES = 256          # MW_MAX_POLICIES, slot 0 meaning "none"
NET_RULES = 16              # MW_NET_RULES
PKEY_PATH = 248             # MW_PKEY_PATH
NAME_LEN = 60               # MW_NAME_LEN
RULE_DENY = 0x80000000
_GLOB = re.compile(r"[*?\[]")


class PolicyError(ValueError):
    """A policy file that cannot be used, with the file, line and column."""


@dataclass
class Rule:
    """One rule as the user wrote it, for reports: events carry its id."""
    id: int
    policy: str
    section: str      # network, files, exec
    verdict: str      # allow, deny
    text: str
    where: str        # file:line:col

    def describe(self) -> str:
        return f"{self.policy}: {self.section} {self.verdict} {self.text} ({self.where})"


@dataclass
class NetRule:
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    lo: int
    hi: int
    deny: bool
    rule: int


@dataclass
class PathRule:
    key: bytes        # exact: path + NUL; subtree: "dir/"
    access: int
    deny: bool
    rule: int


@dataclass
class NameRule:
    name: str
    deny: bool
    rule: int


@dataclass
class Policy:
    name: str
    mode: str
    match: dict                      # exe, cmdline, cgroup, container: lists
    net_default: int = 0             # rule id of a default deny, 0: allow
    file_default: int = 0
    exec_default: int = 0
    net: list[NetRule] = field(default_factory=list)
    paths: list[PathRule] = field(default_factory=list)
    names: list[NameRule] = field(default_factory=list)
    where: str = ""

    def matches(self, ident: "Identity") -> bool:
        m = self.match
        if m.get("exe") and not any(fnmatch.fnmatchcase(ident.exe or "", g) for g in m["exe"]):
            return False
        if m.get("cmdline") and not any(fnmatch.fnmatchcase(ident.cmdline, g) for g in m["cmdline"]):
            return False
        if m.get("cgroup") and not any(under_cgroup(ident.cgroup, c) for c in m["cgroup"]):
            return False
        if m.get("container") and not any(ident.container and ident.container.startswith(c)
                                          for c in m["container"]):
            return False
        return True


@dataclass
class Identity:
    """What a policy is matched against: the server about to run or running."""
    exe: str | None
    cmdline: str
    cgroup: str | None
    container: str | None = None

    @classmethod
    def of(cls, exe: str | None, argv: list[str], cgroup: str | None) -> "Identity":
        return cls(exe, " ".join(argv), cgroup, container_id(cgroup))


@dataclass
class PolicySet:
    policies: list[Policy]
    rules: dict[int, Rule]
    source: str = ""
    digest: str = ""

    def match(self, ident: Identity) -> Policy | None:
        return next((p for p in self.policies if p.matches(ident)), None)


# --- YAML with positions ----------------------------------------------------

def _yaml_load(text: str, path: str):
    return yaml_with_marks(text, path, PolicyError)


class _Ctx:
    def __init__(self, path: str, first_rule: int):
        self.path = path
        self.next_rule = first_rule
        self.rules: dict[int, Rule] = {}

    def at(self, container, key) -> str:
        return mark_where(self.path, container, key)

    def fail(self, container, key, msg: str):
        raise PolicyError(f"{self.at(container, key)}: {msg}")

    def rule(self, policy: str, section: str, verdict: str, text: str, where: str) -> int:
        rid = self.next_rule
        self.next_rule += 1
        self.rules[rid] = Rule(rid, policy, section, verdict, text, where)
        return rid


def load(path: str, first_rule: int = 1) -> PolicySet:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise PolicyError(f"{path}: {e.strerror}") from None
    return parse(text, path, first_rule)


def parse(text: str, path: str = "<policy>", first_rule: int = 1) -> PolicySet:
    import hashlib
    doc = _yaml_load(text, path)
    ctx = _Ctx(path, first_rule)
    if not isinstance(doc, dict) or set(doc) != {"policies"}:
        raise PolicyError(f"{path}: the top level must be a mapping with one key, policies")
    items = doc["policies"]
    if not isinstance(items, list):
        ctx.fail(doc, "policies", "policies must be a list")
    if len(items) >= MAX_POLICIES:
        ctx.fail(doc, "policies", f"at most {MAX_POLICIES - 1} policies")
    out, names = [], set()
    for i, item in enumerate(items):
        pol = _policy(ctx, items, i, item)
        if pol.name in names:
            ctx.fail(items, i, f"a second policy named {pol.name!r}")
        names.add(pol.name)
        out.append(pol)
    return PolicySet(out, ctx.rules, path, hashlib.sha256(text.encode()).hexdigest())


_POLICY_KEYS = {"name", "match", "mode", "default", "network", "files", "exec"}
_MATCH_KEYS = {"exe", "cmdline", "cgroup", "container"}


def _strings(ctx, d, key, what) -> list[str]:
    v = d[key]
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        ctx.fail(d, key, f"{what} must be a string or a list of strings")
    return list(v)


def _verdict(ctx, d, key, inherited: str) -> str:
    v = d.get(key, inherited)
    if v not in ("allow", "deny"):
        ctx.fail(d, key, f"default must be allow or deny, not {v!r}")
    return v


def _policy(ctx: _Ctx, items, i, d) -> Policy:
    if not isinstance(d, dict):
        ctx.fail(items, i, "each policy must be a mapping")
    bad = set(d) - _POLICY_KEYS
    if bad:
        ctx.fail(d, sorted(bad)[0], f"unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(_POLICY_KEYS))})")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        ctx.fail(items, i, "a policy needs a name")
    mode = d.get("mode", "enforce")
    if mode not in MODES:
        ctx.fail(d, "mode", f"mode must be monitor or enforce, not {mode!r}")
    match: dict = {}
    m = d.get("match") or {}
    if not isinstance(m, dict):
        ctx.fail(d, "match", "match must be a mapping")
    for k in m:
        if k not in _MATCH_KEYS:
            ctx.fail(m, k, f"unknown match key {k!r} (known: {', '.join(sorted(_MATCH_KEYS))})")
        match[k] = _strings(ctx, m, k, f"match.{k}")
    for c in match.get("cgroup", []):
        if not c.startswith("/"):
            ctx.fail(m, "cgroup", f"a cgroup is an absolute cgroup v2 path: {c!r}")
    default = _verdict(ctx, d, "default", "allow")
    pol = Policy(name, mode, match, where=ctx.at(items, i))
    for sec in ("network", "files", "exec"):
        s = d.get(sec) or {}
        if not isinstance(s, dict):
            ctx.fail(d, sec, f"{sec} must be a mapping with allow, deny, default")
        for k in s:
            if k not in ("allow", "deny", "default"):
                ctx.fail(s, k, f"unknown key {k!r} in {sec} (known: allow, deny, default)")
        sdef = _verdict(ctx, s, "default", default)
        if sdef == "deny":
            rid = ctx.rule(name, sec, "deny", "default deny", ctx.at(s, "default") if "default" in s
                           else ctx.at(d, "default") if "default" in d else pol.where)
            setattr(pol, {"network": "net_default", "files": "file_default", "exec": "exec_default"}[sec], rid)
        for verdict in ("deny", "allow"):
            lst = s.get(verdict) or []
            if not isinstance(lst, list):
                ctx.fail(s, verdict, f"{sec}.{verdict} must be a list")
            for j, entry in enumerate(lst):
                {"network": _net_entry, "files": _file_entry, "exec": _exec_entry}[sec](
                    ctx, pol, lst, j, entry, verdict == "deny")
    if pol.net:
        _check_net_fanout(ctx, pol)
    return pol


# --- network ----------------------------------------------------------------

_PORTS = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_destination(text: str):
    """'ADDR[/LEN][:PORTS]', '[V6[/LEN]]:PORTS', 'V6[/LEN]', '*[:PORTS]', 'unix:PATH'
    -> (networks, lo, hi) or ('unix', path). Raises ValueError."""
    t = text.strip()
    if t.startswith("unix:"):
        p = t[5:]
        if not p.startswith("/") and not p.startswith("@"):
            raise ValueError("a unix destination is unix:/path (or unix:@abstract)")
        return "unix", p
    ports = None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError("missing ] after an IPv6 address")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected :PORTS after ]")
            ports = rest[1:]
    elif t.count(":") == 1 or (t.startswith("*") and ":" in t):
        host, ports = t.rsplit(":", 1)
    else:
        host = t
    lo, hi = 0, 65535
    if ports not in (None, "*"):
        m = _PORTS.match(ports)
        if not m:
            raise ValueError(f"bad port or range {ports!r} (e.g. 443, 8000-8100, *)")
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"bad port range {ports!r}")
    if host in ("*", "any"):
        nets = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    else:
        try:
            nets = [ipaddress.ip_network(host, strict=False)]
        except ValueError:
            raise ValueError(f"not an address or CIDR: {host!r} (names are not resolved)") from None
    return nets, lo, hi


def _net_entry(ctx, pol, lst, j, entry, deny):
    if not isinstance(entry, (str, int)):
        ctx.fail(lst, j, "a network rule is a string: ADDR[/LEN][:PORTS], [V6]:PORTS, *:PORTS or unix:PATH")
    try:
        parsed = parse_destination(str(entry))
    except ValueError as e:
        ctx.fail(lst, j, f"{entry!r}: {e}")
    rid = ctx.rule(pol.name, "network", "deny" if deny else "allow", str(entry), ctx.at(lst, j))
    if parsed[0] == "unix":
        # socket paths live in the path trie, under their own access bit
        try:
            keys = unix_keys(parsed[1])
        except ValueError as e:
            ctx.fail(lst, j, f"{entry!r}: {e}")
        for k in keys:
            pol.paths.append(PathRule(k, ACC_CONNECT, deny, rid))
        return
    nets, lo, hi = parsed
    for n in nets:
        pol.net.append(NetRule(n, lo, hi, deny, rid))


def _net_order(r: NetRule):
    # most specific first: longer prefix, then deny, then narrower ports
    return (-r.net.prefixlen, not r.deny, r.hi - r.lo)


def net_entries(pol: Policy) -> list[tuple[int, ipaddress._BaseNetwork, list[NetRule]]]:
    """(family 4/6, prefix, the rules that apply to addresses under it, in
    the order the kernel tries them) for every distinct rule prefix."""
    rules = pol.net
    out = []
    for net in dict.fromkeys(r.net for r in rules):
        applies = [r for r in rules if r.net.version == net.version and net.subnet_of(r.net)]
        out.append((net.version, net, sorted(applies, key=_net_order)))
    return out


def _check_net_fanout(ctx, pol):
    for _, net, rules in net_entries(pol):
        if len(rules) > NET_RULES:
            raise PolicyError(f"{pol.where}: policy {pol.name!r}: {len(rules)} network rules apply to {net}, "
                              f"at most {NET_RULES} can (merge port ranges or split the prefix)")


def net_decide(pol: Policy, addr: str, port: int) -> int:
    """The rule id that denies addr:port (0: allowed): the kernel's logic in
    Python, for unit tests and for Unix paths (which the kernel does not check)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    best = None
    for _, net, rules in net_entries(pol):
        if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, rules)
    if best:
        for r in best[1]:
            if r.lo <= port <= r.hi:
                return r.rule if r.deny else 0
    return pol.net_default


def unix_keys(path: str) -> list[bytes]:
    """Kernel keys of a unix: rule: 'path\\0', a directory prefix 'dir/', or '@name\\0'."""
    if path.startswith("@"):
        return [path.encode() + b"\0"]
    if _GLOB.search(path):
        raise ValueError("a socket path is exact, or a directory prefix ending in /")
    if path.endswith("/**"):
        path = path[:-2]
    keys = path_keys(path if path.endswith("/") else path)
    return [k for k in keys if not path.endswith("/") or k.endswith(b"/")]


def unix_decide(pol: Policy, path: str) -> int:
    """The rule id that denies a connect to a Unix socket path (0: allowed):
    the kernel's cgroup/connect_unix logic, used in userspace where that
    hook is missing."""
    return path_decide(pol, path, ACC_CONNECT)[0]


# --- files and execs --------------------------------------------------------

def _homes() -> list[str]:
    homes = {"/root"}
    try:
        for pw in pwd.getpwall():
            if pw.pw_dir.startswith("/") and pw.pw_dir != "/" and os.path.isdir(pw.pw_dir):
                homes.add(pw.pw_dir.rstrip("/"))
    except OSError:
        pass
    return sorted(homes)


_PROC_PID = re.compile(r"/proc/[0-9]+(?:/|$)")
_PROC_SELF = re.compile(r"/proc/(?:self|thread-self)(?:/|$)")


def proc_self(path: str, pid: int | None, tid: int | None = None) -> str:
    """The kernel's view of a resolved path for policy: under /proc/<pid> (the judged process's own),
    /proc/self/...; under /proc/<pid>/task/<tid> (its own thread), /proc/thread-self/..."""
    if pid is None or not path.startswith("/proc/"):
        return path
    own = f"/proc/{pid}"
    if path != own and not path.startswith(own + "/"):
        return path
    thread = f"{own}/task/{tid}"
    if tid is not None and (path == thread or path.startswith(thread + "/")):
        return "/proc/thread-self" + path[len(thread):]
    return "/proc/self" + path[len(own):]


def path_keys(pattern: str) -> list[bytes]:
    """The kernel keys for one path pattern: exact 'path\\0', subtree 'dir/'
    (plus 'dir\\0' for the directory itself), for the pattern as written and
    for where its symlinks lead. Raises ValueError."""
    if pattern.startswith("~/"):
        out: list[bytes] = []
        for h in _homes():
            out += path_keys(h + pattern[1:])
        return list(dict.fromkeys(out))
    subtree = pattern.endswith("/**") or pattern.endswith("/")
    base = pattern[:-3] if pattern.endswith("/**") else pattern.rstrip("/") if subtree else pattern
    if subtree and base == "":
        base = "/"
    if not base.startswith("/"):
        raise ValueError("paths are absolute (or start with ~/ for every home directory)")
    if _GLOB.search(base):
        raise ValueError("the kernel matches exact paths and subtrees: use /dir/** or a full path "
                         "(other globs cannot be checked in the kernel)")
    norm = os.path.normpath(base) if base != "/" else "/"
    if _PROC_PID.match(norm):
        raise ValueError("names one process by its number, which the next run will not have: write "
                         "/proc/self/... (the process judged) or /proc/thread-self/...")
    variants = [norm]
    # /proc/self means the process judged (the kernel matches it so: mw_proc_self), never resolved
    # here, where it would name the agent's own pid
    real = norm if _PROC_SELF.match(norm) else os.path.realpath(norm)
    if real != norm:
        variants.append(real)
    keys = []
    for v in variants:
        b = v.encode()
        if subtree:
            d = b if b.endswith(b"/") else b + b"/"
            if len(d) > PKEY_PATH:
                raise ValueError(f"a subtree is at most {PKEY_PATH} bytes long")
            keys.append(d)
            if v != "/":
                keys.append(b + b"\0")
        else:
            if len(b) + 1 > PKEY_PATH:
                raise ValueError(f"an exact path is at most {PKEY_PATH - 1} bytes long")
            keys.append(b + b"\0")
    return keys


def _file_entry(ctx, pol, lst, j, entry, deny):
    access = ACC_READ | ACC_WRITE | ACC_CREATE
    if isinstance(entry, dict):
        bad = set(entry) - {"path", "access"}
        if bad or "path" not in entry:
            ctx.fail(lst, j, "a file rule is a path, or {path: ..., access: [read, write, create]}")
        pattern = entry["path"]
        if "access" in entry:
            acc = entry["access"]
            acc = [acc] if isinstance(acc, str) else acc
            if not isinstance(acc, list) or not acc or any(a not in ACCESS_BITS for a in acc):
                ctx.fail(entry, "access", "access is a list of read, write, create")
            access = 0
            for a in acc:
                access |= ACCESS_BITS[a]
    else:
        pattern = entry
    if not isinstance(pattern, str) or not pattern:
        ctx.fail(lst, j, "a file rule needs a path")
    try:
        keys = path_keys(pattern)
    except ValueError as e:
        ctx.fail(lst, j, f"{pattern!r}: {e}")
    text = pattern if access == 7 else f"{pattern} ({', '.join(n for b, n in ACCESS_NAMES.items() if access & b)})"
    rid = ctx.rule(pol.name, "files", "deny" if deny else "allow", text, ctx.at(lst, j))
    for k in keys:
        pol.paths.append(PathRule(k, access, deny, rid))


MEMFD = "memfd:"


def _exec_entry(ctx, pol, lst, j, entry, deny):
    if not isinstance(entry, str) or not entry:
        ctx.fail(lst, j, "an exec rule is a bare name (curl), a path or a /dir/**")
    rid = ctx.rule(pol.name, "exec", "deny" if deny else "allow", entry, ctx.at(lst, j))
    if entry.startswith(MEMFD):
        # a program run from a memfd (fexecve) is named memfd:NAME, with the name its maker chose:
        # memfd:** is every one of them, memfd:NAME one name
        name = entry[len(MEMFD):]
        if name == "**":
            key = MEMFD.encode()
        elif name and "/" not in name and not _GLOB.search(name) and len(entry.encode()) < PKEY_PATH:
            key = entry.encode() + b"\0"
        else:
            ctx.fail(lst, j, f"{entry!r}: a memfd rule is memfd:** (every memfd) or memfd:NAME")
        pol.paths.append(PathRule(key, ACC_EXEC, deny, rid))
        return
    if "/" not in entry:
        if _GLOB.search(entry) or len(entry.encode()) >= NAME_LEN:
            ctx.fail(lst, j, f"{entry!r}: a bare name is a plain file name under {NAME_LEN} bytes")
        names = [entry]
        # the kernel sees the resolved executable: sh -> dash, python3 -> python3.11
        for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            real = os.path.realpath(os.path.join(d, entry))
            if os.path.basename(real) != entry and os.path.exists(real):
                names.append(os.path.basename(real))
        for n in dict.fromkeys(names):
            if len(n.encode()) < NAME_LEN:
                pol.names.append(NameRule(n, deny, rid))
        return
    try:
        keys = path_keys(entry)
    except ValueError as e:
        ctx.fail(lst, j, f"{entry!r}: {e}")
    for k in keys:
        pol.paths.append(PathRule(k, ACC_EXEC, deny, rid))


def path_entries(pol: Policy) -> list[tuple[bytes, int, int, list[int]]]:
    """(key, allow bits, deny bits, rule id per bit) for every distinct key,
    each access bit decided by the most specific rule naming it (its own
    key before enclosing ones; deny before allow at one key)."""
    keys = list(dict.fromkeys(r.key for r in pol.paths))
    out = []
    for key in keys:
        enclosing = sorted((r for r in pol.paths if key.startswith(r.key)),
                           key=lambda r: (-len(r.key), not r.deny))
        allow = deny = 0
        ids = [0] * len(ACC_ORDER)
        for i, bit in enumerate(ACC_ORDER):
            r = next((r for r in enclosing if r.access & bit), None)
            if r is None:
                continue
            if r.deny:
                deny |= bit
            else:
                allow |= bit
            ids[i] = r.rule
        out.append((key, allow, deny, ids))
    return out


def path_decide(pol: Policy, path: str, access: int, pid: int | None = None,
                tid: int | None = None, entries: list | None = None) -> tuple[int, int]:
    """(rule id, denied bits) for access to a resolved path by process pid
    (thread tid): the kernel's logic in Python (unit tests, the seccomp
    supervisor of kernel/unotify.py; entries: path_entries(pol), computed once)."""
    if not access & ACC_CONNECT:
        path = proc_self(path, pid, tid)
    b = path.encode()
    b = b[:PKEY_PATH] if len(b) >= PKEY_PATH else b + b"\0"
    entries = [e for e in (path_entries(pol) if entries is None else entries) if b.startswith(e[0])]
    best = max(entries, key=lambda e: len(e[0]), default=None)
    name_rule = 0
    if access & ACC_EXEC:
        base = os.path.basename(path)
        nr = [r for r in pol.names if r.name == base]
        if any(r.deny for r in nr):
            return next(r.rule for r in nr if r.deny), ACC_EXEC
        name_rule = nr[0].rule if nr else 0
    rule = denied = 0
    for i, bit in enumerate(ACC_ORDER):
        if not access & bit:
            continue
        if best and best[2] & bit:
            denied |= bit
            rule = rule or best[3][i]
            continue
        if (best and best[1] & bit) or (bit == ACC_EXEC and name_rule):
            continue
        d = pol.exec_default if bit == ACC_EXEC else pol.net_default if bit == ACC_CONNECT else pol.file_default
        if d:
            denied |= bit
            rule = rule or d
    return rule, denied
