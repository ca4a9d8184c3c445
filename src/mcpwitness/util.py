"""Small helpers every layer uses, defined once: configuration values
(durations, sizes) and their error, wall-clock time as written in records,
a file's identity on disk, path containment, JSON-RPC id keys, the tool a
request names, and the walk over the strings in a JSON value."""
from __future__ import annotations

import hashlib
import os
import time


class ConfigError(ValueError):
    """A configuration, rule or detector setting that cannot be used: the message says where and why."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def duration(v, where: str) -> float:
    """Seconds from a number or a string such as 90s, 10m, 7d."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return float(v)
    if isinstance(v, str) and v[-1:].lower() in _UNITS:
        try:
            return float(v[:-1]) * _UNITS[v[-1].lower()]
        except ValueError:
            pass
    raise ConfigError(f"{where}: not a duration: {v!r} (seconds, or e.g. 90s, 10m, 7d)")


def size(v, where: str) -> int:
    """Bytes from a number or a string such as 512M, 2G."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str):
        t = v.strip().lower().rstrip("b").rstrip("i")
        try:
            return int(float(t[:-1]) * _SIZES[t[-1]]) if t[-1:] in _SIZES else int(t)
        except (ValueError, KeyError):
            pass
    raise ConfigError(f"{where}: not a size: {v!r} (bytes, or e.g. 512M, 2G)")


def now_iso(t: float | None = None, ns: bool = False) -> str:
    """Wall-clock time as records write it: ISO 8601 UTC, to the second or
    (ns=True) with nanoseconds."""
    t = time.time() if t is None else t
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return f"{base}.{int(t % 1 * 1e9):09d}Z" if ns else base + "Z"


def file_stamp(path: str | None):
    """What identifies a file's content on disk cheaply (inode, mtime, size),
    to notice that it changed; None when it cannot be read."""
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except (OSError, TypeError):
        return None


def under(path: str, roots) -> bool:
    """path is one of roots or inside one (component-wise)."""
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def id_key(mid) -> tuple:
    """A JSON-RPC id as a dictionary key: 1 and "1" are different ids."""
    return (type(mid).__name__, mid)


def call_id(session: str, mid, ktime: int) -> str:
    """The id of a call: its session, its request id and when the request was seen."""
    return hashlib.blake2b(f"{session}|{mid!r}|{ktime}".encode(), digest_size=6).hexdigest()


# the request methods whose params name what they act on: the tool (or prompt) or the resource
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri", "resources/subscribe": "uri",
          "resources/unsubscribe": "uri"}


def tool_of(method, params) -> str | None:
    """The tool or prompt name of tools/call and prompts/get, the URI of a
    resources/read, subscribe or unsubscribe; None for other requests."""
    key = _NAMED.get(method)
    if key is None or not isinstance(params, dict):
        return None
    v = params.get(key)
    return v if isinstance(v, str) else None


def strings(v, limit: int = 512, max_depth: int | None = None, list_cap: int | None = None, path: str = "",
            out: list | None = None, depth: int = 0) -> list[tuple[str, str]]:
    """(where, string) for the strings inside a JSON value, depth first, at
    most `limit`; `where` is a dotted path (`a.b[2]`). max_depth and
    list_cap bound the walk further."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(v, str):
        out.append((path or "value", v))
    elif max_depth is None or depth < max_depth:
        if isinstance(v, dict):
            for k, x in v.items():
                strings(x, limit, max_depth, list_cap, f"{path}.{k}" if path else str(k), out, depth + 1)
        elif isinstance(v, list):
            for i, x in enumerate(v if list_cap is None else v[:list_cap]):
                strings(x, limit, max_depth, list_cap, f"{path}[{i}]", out, depth + 1)
    return out


def yaml_with_marks(text: str, path: str, error=None):
    """Parse YAML keeping where each mapping value and list item came from
    (for `where`); a file that does not parse raises `error` (ConfigError by
    default) with file:line:column."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    class Map(dict):
        marks: dict

    class Seq(list):
        marks: list

    def mapping(loader, node):
        loader.flatten_mapping(node)
        d = Map()
        d.marks = {}
        d.mark = node.start_mark
        for k, v in node.value:
            key = loader.construct_object(k, deep=True)
            d[key] = loader.construct_object(v, deep=True)
            d.marks[key] = v.start_mark
        return d

    def sequence(loader, node):
        s = Seq(loader.construct_object(v, deep=True) for v in node.value)
        s.marks = [v.start_mark for v in node.value]
        s.mark = node.start_mark
        return s

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, sequence)
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise (error or ConfigError)(f"{at}: not valid YAML: {getattr(e, 'problem', None) or e}") from None


def where(path: str, container, key=None) -> str:
    """file:line:column of container[key] in a yaml_with_marks document (of
    the container itself when the key has no mark)."""
    marks = getattr(container, "marks", None)
    mark = None
    if isinstance(marks, dict):
        mark = marks.get(key)
    elif isinstance(marks, list) and isinstance(key, int) and key < len(marks):
        mark = marks[key]
    mark = mark or getattr(container, "mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
