"""Kernel events -> facts later stages (rules, policy) use: how risky an open
is, whether a path is sensitive, what kind of program an exec started.

Pure functions over one event plus a `Flagger` that holds the configurable
lists (defaults below; `flags:` in the config file replaces or extends them).
"""
from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from dataclasses import dataclass, field

# open(2) access, from the least to the most damaging
RISK_ORDER = ["read", "write", "create", "truncate"]

# Globs over absolute, normalised paths. "~/" means any home directory
# (/root/ and /home/*/). A directory pattern ending in "/**" covers all below.
DEFAULT_SENSITIVE: dict[str, list[str]] = {
    "system accounts": ["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/passwd",
                        "/etc/group", "/etc/sudoers", "/etc/sudoers.d/**", "/etc/security/opasswd"],
    "ssh keys and config": ["~/.ssh/**", "/etc/ssh/ssh_host_*_key", "/etc/ssh/sshd_config"],
    "cloud credentials": ["~/.aws/credentials", "~/.aws/config", "~/.config/gcloud/**", "~/.azure/**",
                          "~/.kube/config", "/var/run/secrets/kubernetes.io/**", "/run/secrets/**",
                          "~/.oci/config", "~/.config/doctl/**"],
    "tokens and passwords": ["~/.netrc", "~/.git-credentials", "~/.npmrc", "~/.pypirc", "~/.docker/config.json",
                             "~/.config/gh/hosts.yml", "~/.pgpass", "~/.my.cnf", "~/.vault-token"],
    "private keys": ["~/.gnupg/**", "/etc/ssl/private/**", "*.pem", "*.key", "*/id_rsa", "*/id_ed25519",
                     "*/id_ecdsa", "*/id_dsa"],
    "environment files": ["*/.env", "*/.env.*"],
    "process secrets": ["/proc/*/environ", "/proc/*/mem", "/proc/kcore"],
    "shell history": ["~/.bash_history", "~/.zsh_history", "~/.python_history", "~/.psql_history"],
    # where a program is planted to run again later: cron, shell start-up files, authorized keys,
    # systemd units, autostart entries, git hooks, the dynamic linker's preload
    "persistence locations": ["/etc/crontab", "/etc/cron.d/**", "/etc/cron.hourly/**", "/etc/cron.daily/**",
                              "/etc/cron.weekly/**", "/etc/cron.monthly/**", "/var/spool/cron/**",
                              "~/.bashrc", "~/.bash_profile", "~/.bash_login", "~/.profile", "~/.zshrc",
                              "~/.zprofile", "~/.zshenv", "~/.config/fish/config.fish", "/etc/profile",
                              "/etc/profile.d/**", "/etc/bash.bashrc", "/etc/zsh/**", "/etc/rc.local",
                              "~/.config/systemd/user/**", "/etc/systemd/system/**", "/etc/systemd/user/**",
                              "~/.config/autostart/**", "/etc/xdg/autostart/**", "*/.git/hooks/*",
                              "/etc/ld.so.preload", "~/.ssh/authorized_keys", "~/.ssh/authorized_keys2",
                              "~/.ssh/rc"],
}

DEFAULT_EXECUTABLES: dict[str, list[str]] = {
    "shell": ["sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "ash", "busybox"],
    "downloader": ["curl", "wget", "nc", "ncat", "netcat", "socat", "scp", "sftp", "rsync", "ftp", "tftp",
                   "aria2c", "ssh", "telnet", "lftp", "httpie", "http"],
    "interpreter": ["python", "python2", "python3", "python3.*", "pypy*", "node", "nodejs", "deno", "bun",
                    "perl", "ruby", "php", "php*", "lua", "luajit", "tclsh", "Rscript", "java", "osascript",
                    "pwsh", "powershell"],
}


@dataclass
class FlagConfig:
    sensitive: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SENSITIVE.items()})
    executables: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_EXECUTABLES.items()})

    @classmethod
    def from_dict(cls, d: dict | None) -> "FlagConfig":
        """`flags:` section of the config file:
            sensitive_paths: {label: [glob, ...]}     added to the defaults
            executables: {shell|downloader|interpreter|...: [name, ...]}  added
            replace_defaults: true                   start from empty lists instead
        """
        d = d or {}
        if not isinstance(d, dict):
            raise ValueError("flags: must be a mapping")
        unknown = set(d) - {"sensitive_paths", "executables", "replace_defaults"}
        if unknown:
            raise ValueError(f"flags: unknown keys {sorted(unknown)}")
        c = cls(sensitive={}, executables={}) if d.get("replace_defaults") else cls()
        for key, target in (("sensitive_paths", c.sensitive), ("executables", c.executables)):
            extra = d.get(key) or {}
            if not isinstance(extra, dict):
                raise ValueError(f"flags.{key}: must map a label to a list of patterns")
            for label, pats in extra.items():
                if isinstance(pats, str):
                    pats = [pats]
                if not isinstance(pats, list) or not all(isinstance(p, str) and p for p in pats):
                    raise ValueError(f"flags.{key}.{label}: must be a list of non-empty strings")
                target.setdefault(str(label), []).extend(pats)
        return c


def open_risk(flags_raw: int) -> str:
    """read, write, create or truncate: the most damaging thing this open can do."""
    if flags_raw & 0o1000 and flags_raw & 3:  # O_TRUNC with write access
        return "truncate"
    if flags_raw & 0o100 or (flags_raw & 0o20200000) == 0o20200000:  # O_CREAT, O_TMPFILE
        return "create"
    if flags_raw & 3 in (1, 2) or flags_raw & 0o2000:
        return "write"
    return "read"


def _glob_to_regex(pat: str) -> str:
    """fnmatch, with "**" crossing directories, "*" not, "~/" any home."""
    home = None
    if pat.startswith("~/"):
        home, pat = True, pat[2:]
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("/**", i) and i + 3 == len(pat):
            out.append("(?:/.*)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i)
            if j < 0:
                out.append(re.escape(c))
            else:
                out.append(fnmatch.translate(pat[i:j + 1])[4:-3])
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    if home:
        return r"(?:/root|/home/[^/]+)/" + body
    if not pat.startswith("/"):
        return r"(?:.*/)?" + body  # relative pattern: any directory
    return body


class Flagger:
    def __init__(self, config: FlagConfig | None = None):
        self.config = config or FlagConfig()
        parts = []
        self._labels: list[str] = []
        for label, pats in self.config.sensitive.items():
            for p in pats:
                parts.append(f"(?P<g{len(self._labels)}>{_glob_to_regex(p)})")
                self._labels.append(label)
        self._sensitive = re.compile("^(?:" + "|".join(parts) + ")$") if parts else None
        self._exe: list[tuple[str, re.Pattern]] = [
            (cat, re.compile("^(?:" + "|".join(fnmatch.translate(n)[4:-3] for n in names) + ")$"))
            for cat, names in self.config.executables.items() if names]
        self._cache: dict[str, str | None] = {}

    def sensitive(self, path: str | None) -> str | None:
        """The label of the sensitive-path list this absolute path is on, or None."""
        if not path or self._sensitive is None:
            return None
        hit = self._cache.get(path, 0)
        if hit != 0:
            return hit
        m = self._sensitive.match(os.path.normpath(path))
        label = self._labels[int(m.lastgroup[1:])] if m else None
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[path] = label
        return label

    def exe_category(self, path_or_name: str | None) -> str | None:
        """shell, downloader, interpreter (or a configured category) of a program, or None."""
        if not path_or_name:
            return None
        name = os.path.basename(path_or_name)
        for cat, rx in self._exe:
            if rx.match(name):
                return cat
        return None

    def flag(self, ev) -> None:
        """Set the flag fields of one kernel event in place."""
        tag = type(ev).__struct_config__.tag
        if tag == "open":
            ev.risk = open_risk(ev.flags_raw)
            ev.sensitive = self.sensitive(ev.resolved or (ev.path if ev.path.startswith("/") else None))
        elif tag == "exec":
            ev.category = self.exe_category(ev.exe or ev.filename) or \
                (self.exe_category(ev.argv[0]) if ev.argv else None)
            ev.sensitive = self.sensitive(ev.exe or ev.filename)
        elif tag == "connect":
            ev.scope = address_scope(ev.family, ev.address)


def address_scope(family: str, address: str | None) -> str | None:
    """loopback, private, link-local, multicast, unspecified, public; unix for AF_UNIX."""
    if family == "AF_UNIX":
        return "unix"
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    return "public"
