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

A file that does not parse or holds an unknown key is refused with the file,
the place and the reason; nothing runs on a half-understood configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .decode.flags import FlagConfig
from .util import ConfigError, duration, size


@dataclass
class Config:
    flags: FlagConfig = field(default_factory=FlagConfig)
    linger: float = 10.0
    call_timeout: float = 300.0
    db: str | None = None
    retention: float = 7 * 86400
    max_size: int = 1 << 30


def load(path: str | None) -> Config:
    if path is None:
        return Config()
    import yaml
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    return from_dict(doc, path)


def from_dict(doc, path: str = "<config>") -> Config:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    unknown = set(doc) - {"flags", "audit", "store"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)} (known: flags, audit, store)")
    c = Config()
    try:
        c.flags = FlagConfig.from_dict(doc.get("flags"))
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    for sec, keys in (("audit", {"linger", "call_timeout"}), ("store", {"path", "retention", "max_size"})):
        d = doc.get(sec) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: {sec}: must be a mapping")
        bad = set(d) - keys
        if bad:
            raise ConfigError(f"{path}: {sec}: unknown keys {sorted(bad)} (known: {sorted(keys)})")
    a, s = doc.get("audit") or {}, doc.get("store") or {}
    if "linger" in a:
        c.linger = duration(a["linger"], f"{path}: audit.linger")
    if "call_timeout" in a:
        c.call_timeout = duration(a["call_timeout"], f"{path}: audit.call_timeout")
    if "path" in s:
        if not isinstance(s["path"], str) or not s["path"]:
            raise ConfigError(f"{path}: store.path: must be a file path")
        c.db = s["path"]
    if "retention" in s:
        c.retention = duration(s["retention"], f"{path}: store.retention")
    if "max_size" in s:
        c.max_size = size(s["max_size"], f"{path}: store.max_size")
    return c
