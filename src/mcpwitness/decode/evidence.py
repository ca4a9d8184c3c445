"""Argument evidence: which in-flight requests name, in their arguments, what a
kernel event touched.

The attribution stage asks only after timing and threads left several
candidates, and takes the answer only when exactly one candidate is named
(quality "argument", the others listed). It is a strong hint, not a proof: a
call could touch what another call asked about. So it is taken only when every
other candidate names something of the same kind (another file, another
address, another program): a call that names no file at all may be the one that
opened it (bench/attribution.py's cross-named scenarios). What names what:

- **an open** (or a policy event about one): an absolute path in the arguments
  that is the opened path or a directory above it (`file://` URIs too); or a
  relative name (`n7.txt`, `notes/a.md`) that the opened path ends with, at a
  component boundary, when the opened path lies under the server's working
  directory or one of the client's declared roots;
- **a connect**: an address in the arguments, as a URL (`http://127.0.0.1:8080/`),
  `host:port`, `[v6]:port` or a bare IP; an IP must be the connect's (any
  loopback address for `localhost`) and so must the port where one is given. A
  host name cannot be resolved here, so it names a connect by its explicit port
  alone. A Unix socket path must be the connect's path;
- **an exec** (for a fork, the first exec of its branch): a command string
  whose first word is the program run (`grep -r x .`), an argv list whose first
  element is, a string the program was given whole (`sh -c STRING`, or
  `cat /the/path`).
"""
from __future__ import annotations

import ipaddress
import os
import shlex
from urllib.parse import urlsplit

# strings longer than this are not names of anything an event touched
_MAX = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST_KEYS = ("host", "hostname", "address", "addr", "server", "ip")
_PORT_KEYS = ("port",)
# keys whose strings (or lists of strings) are commands: their first word names a program
_COMMAND_KEYS = ("command", "cmd", "commandline", "script", "shell", "program", "executable", "exec", "argv")


class Named:
    """What one request's arguments name, parsed once."""
    __slots__ = ("abs_paths", "rel_names", "endpoints", "programs", "whole")

    def __init__(self, params):
        self.abs_paths: list[str] = []
        self.rel_names: list[str] = []
        self.endpoints: list[tuple] = []   # (ip or None, hostname or None, port or None)
        self.programs: set[str] = set()    # basenames of programs a command or argv names
        self.whole: set[str] = set()       # argument strings, for an argv that holds one whole
        if isinstance(params, dict):
            if isinstance(params.get("name"), str) and "arguments" in params:
                params = {"arguments": params["arguments"]}   # tools/call, prompts/get: the tool's name names nothing
            self._walk({k: v for k, v in params.items() if k != "_meta"}, 0, "")

    def _walk(self, v, depth: int, key: str) -> None:
        if depth > 4:
            return
        if isinstance(v, dict):
            host = port = None
            for k, x in list(v.items())[:64]:
                k = str(k).lower().replace("_", "").replace("-", "")
                if isinstance(x, str) and k.endswith(_HOST_KEYS):
                    host = x
                elif isinstance(x, (int, str)) and not isinstance(x, bool) and k.endswith(_PORT_KEYS):
                    port = _port(x)
                self._walk(x, depth + 1, k)
            if host and port is not None:
                ip, name = _host(host)
                if ip or name:
                    self.endpoints.append((ip, name, port))
        elif isinstance(v, list):
            if key in _COMMAND_KEYS and v and all(isinstance(x, str) for x in v[:64]) and 0 < len(v[0]) < _MAX:
                self.programs.add(os.path.basename(v[0]))    # an argv
            for x in v[:64]:
                self._walk(x, depth + 1, key)
        elif isinstance(v, str) and 0 < len(v) < _MAX:
            self._string(v, key in _COMMAND_KEYS)

    def _string(self, s: str, command: bool) -> None:
        self.whole.add(s)
        if s.startswith("file://"):
            s = s[7:]
        if "\n" not in s and "\0" not in s:
            if s.startswith("/"):
                self.abs_paths.append(os.path.normpath(s))
            elif "://" not in s and not s.startswith("~"):
                n = os.path.normpath(s)
                if n not in (".", "..") and not n.startswith("../"):
                    self.rel_names.append(n)
        ep = _endpoint(s)
        if ep is not None:
            self.endpoints.append(ep)
        if command:
            try:
                words = shlex.split(s, comments=False) if len(s) < 1024 else s.split()
            except ValueError:
                words = s.split()
            if words and not words[0].startswith("-"):
                self.programs.add(os.path.basename(words[0]))

    def names_any(self, kind: str) -> bool:
        """Do these arguments name anything of the kind an event touched (a file, an endpoint, a
        program)? A call that names nothing of that kind may have touched it unnamed."""
        if kind == "open":
            return bool(self.abs_paths or self.rel_names)
        if kind == "connect":
            return bool(self.endpoints or self.abs_paths)
        return bool(self.programs or self.abs_paths or any(" " in w for w in self.whole))

    # --- matching ---------------------------------------------------------
    def open(self, path: str, anchors: list[str]) -> str | None:
        for p in self.abs_paths:
            if path == p or path.startswith(p.rstrip("/") + "/"):
                return f"names {p}"
        if anchors:
            for n in self.rel_names:
                if path.endswith("/" + n):
                    base = path[:-len(n) - 1] or "/"
                    for a in anchors:
                        if base == a or base.startswith(a.rstrip("/") + "/") or a == "/":
                            return f"names {n}, which the opened path ends with, under {a}"
        return None

    def connect(self, address: str | None, port: int | None, unix_path: str | None) -> str | None:
        if unix_path:
            return f"names {unix_path}" if unix_path in self.abs_paths else None
        ip = _ip(address) if address else None
        if ip is None:
            return None
        for e_ip, name, e_port in self.endpoints:
            if e_port is not None and e_port != port:
                continue
            if e_ip is not None and (e_ip == ip or e_ip == "localhost" and ipaddress.ip_address(ip).is_loopback):
                return f"names {e_ip if e_ip != 'localhost' else 'localhost'}" + (f":{e_port}" if e_port else "")
            if e_ip is None and name and e_port is not None:
                return f"names {name}:{e_port} (a host name: matched by its port)"
        return None

    def exec(self, filename: str, argv: list[str]) -> str | None:
        prog = os.path.basename(filename or (argv[0] if argv else ""))
        arg0 = os.path.basename(argv[0]) if argv else ""
        for a in argv[1:]:
            # a path, a command line, or a long enough string: not a short word two calls might share
            if a in self.whole and not a.startswith("-") and ("/" in a or " " in a or len(a) >= 8):
                return f"names {a[:80]!r}, which {prog} was given"
        for p in (prog, arg0):
            if p and p in self.programs:
                return f"names the program {p}"
        return None


def _port(v) -> int | None:
    try:
        p = int(v)
    except (TypeError, ValueError):
        return None
    return p if 0 < p < 65536 else None


def _ip(s: str) -> str | None:
    try:
        a = ipaddress.ip_address(s.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return str(a)


def _host(h: str) -> tuple:
    """(ip, None), ("localhost", None) or (None, hostname)."""
    h = h.strip().lower()
    if h == "localhost":
        return "localhost", None
    ip = _ip(h)
    if ip is not None:
        return ip, None
    if h and len(h) < 254 and all(c.isalnum() or c in "-." for c in h) and "." in h:
        return None, h
    return None, None


def _endpoint(s: str) -> tuple | None:
    """(ip, hostname, port) from a URL, host:port, [v6]:port or a bare IP."""
    s = s.strip()
    if len(s) > 2048 or " " in s:
        return None
    if "://" in s:
        try:
            u = urlsplit(s)
            host, port = u.hostname, u.port
        except ValueError:
            return None
        if not host:
            return None
        ip, name = _host(host)
        return (ip, name, port if port is not None else _DEFAULT_PORTS.get(u.scheme)) if ip or name else None
    ip = _ip(s)
    if ip is not None:
        return ip, None, None
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = _port(rest[1:]) if rest.startswith(":") else None
    elif s.count(":") == 1:
        host, _, p = s.partition(":")
        port = _port(p)
        if port is None:
            return None
    else:
        return None
    ip, name = _host(host)
    return (ip, name, port) if ip or name else None


def kind_of(ev) -> str:
    """open, connect or exec: what an event (or a policy event about one) touched."""
    tag = type(ev).__struct_config__.tag
    if tag == "policy":
        return {"open": "open", "exec": "exec"}.get(ev.check, "connect")
    return tag


def name_of(ev, named: Named, anchors: list[str]) -> str | None:
    """What in `named` names the event, in words, or None."""
    tag = type(ev).__struct_config__.tag
    if tag == "open":
        path = ev.resolved or ev.path
        return named.open(path, anchors) if path.startswith("/") else None
    if tag == "connect":
        return named.connect(ev.address, ev.port, ev.unix_path)
    if tag == "exec":
        return named.exec(ev.filename, ev.argv) if ev.result in (None, 0) else None
    if tag == "policy":
        if ev.check == "open" and ev.path and ev.path.startswith("/"):
            return named.open(ev.path, anchors)
        if ev.check in ("connect", "sendmsg"):
            return named.connect(ev.address, ev.port, ev.path if ev.family == "unix" else None)
        if ev.check == "exec" and ev.path:
            return named.exec(ev.path, [])
    return None
