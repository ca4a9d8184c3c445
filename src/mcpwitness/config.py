"""The configuration file (YAML), checked before use.

    flags:                 # see flags.py
      sensitive_paths: {label: [glob, ...]}
      executables: {shell: [name, ...], downloader: [...], interpreter: [...]}
      replace_defaults: false
    audit:
      linger: 10           # seconds a call record waits for the processes it started
      call_timeout: 300    # seconds without a response before a call is written incomplete
    store:
      path: /var/lib/mcpwitness/mcpwitness.db
      retention: 7d        # age
      max_size: 1G
    watch:                 # every option of `mcpwitness watch`, named as on the
      port: [8000, 8443]   # command line without the leading dashes ('-' or '_')
      policy: /etc/mcpwitness/policy.yaml
      rotate_size: 256M
    run:                   # the same for `mcpwitness run`

An option given on the command line wins over the file; a repeatable one
(--port, --rules, ...) adds to the file's list. A file that does not parse,
holds an unknown key or a value the option would refuse is refused with
file:line:column and the reason; nothing runs on a half-understood
configuration.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .decode.flags import FlagConfig
from .util import ConfigError, duration, size, where, yaml_with_marks

COMMAND_SECTIONS = ("run", "watch")
_NOT_IN_FILE = {"help", "config", "command", "version"}


@dataclass
class Config:
    path: str | None = None
    flags: FlagConfig = field(default_factory=FlagConfig)
    linger: float = 10.0
    call_timeout: float = 300.0
    db: str | None = None
    retention: float = 7 * 86400
    max_size: int = 1 << 30
    options: dict = field(default_factory=dict)   # dest -> value: the command's section, checked


def load(path: str | None, command: str | None = None, parsers: dict | None = None) -> Config:
    """The file at path (None: the defaults). With parsers ({"run": its
    argparse parser, "watch": ...}), each command section is checked against
    its parser's options, and `command`'s is returned in `options`."""
    if path is None:
        return Config()
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    return from_dict(yaml_with_marks(text, path), path, command, parsers)


def from_dict(doc, path: str = "<config>", command: str | None = None, parsers: dict | None = None) -> Config:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where(path, doc)}: the top level must be a mapping")
    known = ("flags", "audit", "store") + COMMAND_SECTIONS
    for k in doc:
        if k not in known:
            raise ConfigError(f"{where(path, doc, k)}: unknown section {k!r} (known: {', '.join(known)})")
    c = Config(path=path)
    try:
        c.flags = FlagConfig.from_dict(doc.get("flags"))
    except ValueError as e:
        raise ConfigError(f"{where(path, doc, 'flags')}: {e}") from None
    for sec, keys in (("audit", {"linger", "call_timeout"}), ("store", {"path", "retention", "max_size"})):
        d = doc.get(sec) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{where(path, doc, sec)}: {sec}: must be a mapping")
        for k in d:
            if k not in keys:
                raise ConfigError(f"{where(path, d, k)}: {sec}: unknown key {k!r} (known: {', '.join(sorted(keys))})")
    a, s = doc.get("audit") or {}, doc.get("store") or {}
    if "linger" in a:
        c.linger = duration(a["linger"], f"{where(path, a, 'linger')}: audit.linger")
    if "call_timeout" in a:
        c.call_timeout = duration(a["call_timeout"], f"{where(path, a, 'call_timeout')}: audit.call_timeout")
    if "path" in s:
        if not isinstance(s["path"], str) or not s["path"]:
            raise ConfigError(f"{where(path, s, 'path')}: store.path: must be a file path")
        c.db = s["path"]
    if "retention" in s:
        c.retention = duration(s["retention"], f"{where(path, s, 'retention')}: store.retention")
    if "max_size" in s:
        c.max_size = size(s["max_size"], f"{where(path, s, 'max_size')}: store.max_size")
    for sec in COMMAND_SECTIONS:
        d = doc.get(sec)
        if d is None:
            continue
        if not isinstance(d, dict):
            raise ConfigError(f"{where(path, doc, sec)}: {sec}: must be a mapping of option: value")
        if parsers and sec in parsers:
            opts = command_options(d, parsers[sec], path, sec)
            if sec == command:
                c.options = opts
    return c


def option_actions(parser: argparse.ArgumentParser) -> dict:
    """key -> argparse action, for the options a command's file section may set."""
    out = {}
    for act in parser._actions:
        if act.dest in _NOT_IN_FILE or not act.option_strings:
            continue
        longs = [o for o in act.option_strings if o.startswith("--")]
        if longs:
            out[longs[0][2:].replace("-", "_")] = act
    return out


def command_options(d: dict, parser, path: str, sec: str) -> dict:
    """{dest: value} from a run:/watch: section, each value checked as the
    command line would check it."""
    acts = option_actions(parser)
    out = {}
    for key, v in d.items():
        k = str(key).replace("-", "_")
        act = acts.get(k)
        at = where(path, d, key)
        if act is None:
            raise ConfigError(f"{at}: {sec}: unknown option {key!r} (known: {', '.join(sorted(acts))})")
        out[act.dest] = _value(act, v, f"{at}: {sec}.{k}",
                               lambda i, k=k: f"{where(path, v, i)}: {sec}.{k}[{i}]")
    return out


def _value(act, v, at: str, item_at):
    if isinstance(act, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(v, bool):
            raise ConfigError(f"{at}: must be true or false")
        return act.const if v else act.default
    if isinstance(act, argparse._AppendAction):
        items = v if isinstance(v, list) else [v]
        return [_scalar(act, x, item_at(i) if isinstance(v, list) else at) for i, x in enumerate(items)]
    return _scalar(act, v, at)


def _scalar(act, v, at: str):
    if v is None or isinstance(v, (dict, list)):
        raise ConfigError(f"{at}: must be a single value")
    if isinstance(v, bool):
        raise ConfigError(f"{at}: must be a value, not true/false")
    t = act.type
    if t is float:
        out = duration(v, at)                  # seconds, or 90s, 10m, 1d
    elif t is int:
        if not isinstance(v, int):
            raise ConfigError(f"{at}: must be a whole number")
        out = v
    elif t is None:
        out = str(v)
    else:
        try:
            out = t(str(v))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise ConfigError(f"{at}: {e}") from None
    if act.choices is not None and out not in act.choices:
        raise ConfigError(f"{at}: {v!r} is not one of {', '.join(map(str, act.choices))}")
    return out
