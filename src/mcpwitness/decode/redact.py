"""Secrets out of payloads before anything is written.

Two rules, both configurable: values under secret-looking keys are replaced
whole, and secret-looking substrings in any string are replaced in place.
The replacement names what was removed (`[REDACTED:github-token]`), so an
auditor still sees that a token was passed and where.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# keys whose values are secrets, compared lowercased with - and _ removed
SECRET_KEYS = {
    "authorization", "proxyauthorization", "password", "passwd", "pwd", "secret", "clientsecret",
    "token", "accesstoken", "refreshtoken", "idtoken", "apikey", "xapikey", "apitoken", "authtoken",
    "sessiontoken", "privatekey", "cookie", "setcookie", "credentials", "credential", "passphrase",
    "awssecretaccesskey", "secretaccesskey", "mcpsessionid",
}

PATTERNS = [
    ("private-key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    ("bearer", r"(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    ("basic-auth", r"(?i:\bbasic\s+)[A-Za-z0-9+/=]{8,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ("aws-access-key-id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai-key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("stripe-key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("url-password", r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    ("assignment", r"(?i:\b(?:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*)[^\s&;,'\"]{4,}"),
]


# Literals (lowercased) one of which every built-in pattern needs: a string
# containing none of them cannot match, and skips the regex (most strings).
HINTS = ("private key", "bearer", "basic", "eyj", "akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
         "github_pat_", "xox", "sk-", "aiza", "k_live_", "k_test_", "://", "password", "passwd", "secret",
         "token", "api_key", "api-key", "apikey")


@dataclass
class Redactor:
    enabled: bool = True
    extra_keys: set[str] = field(default_factory=set)
    extra_patterns: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0

    def __post_init__(self):
        self.keys = SECRET_KEYS | {self._norm(k) for k in self.extra_keys}
        self._secret_key: dict[str, bool] = {}  # key as written -> a secret's name (keys repeat in every message)
        self.regex = re.compile("|".join(f"(?P<p{i}>{p})" for i, (_, p) in
                                         enumerate(PATTERNS + list(self.extra_patterns))))
        self.names = [n for n, _ in PATTERNS + list(self.extra_patterns)]

    @staticmethod
    def _norm(k: str) -> str:
        return k.lower().replace("-", "").replace("_", "")

    def _sub(self, m: re.Match) -> str:
        self.count += 1
        return f"[REDACTED:{self.names[int(m.lastgroup[1:])]}]"

    def text(self, s: str) -> str:
        if not self.enabled or len(s) < 8:
            return s
        if not self.extra_patterns:
            low = s.lower()
            for h in HINTS:
                if h in low:
                    break
            else:
                return s
        return self.regex.sub(self._sub, s)

    def argv(self, args: list | None) -> list | None:
        """A command line with the secrets in its arguments replaced (a token
        passed as --token X is in every ps listing; it stays out of ours)."""
        if not self.enabled or not args:
            return args
        out = [self.text(a) for a in args]
        for i in range(1, len(out)):   # the value after a secret-named option: --token X, --api-key X
            prev = out[i - 1]
            if prev.startswith("-") and "=" not in prev and self._norm(prev.lstrip("-")) in self.keys \
                    and not out[i].startswith("[REDACTED"):
                self.count += 1
                out[i] = "[REDACTED]"
        return out

    def value(self, v):
        """A redacted copy of a decoded JSON value (the input is not changed)."""
        if not self.enabled:
            return v
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            out = {}
            secret = self._secret_key
            for k, x in v.items():
                hit = secret.get(k)
                if hit is None and isinstance(k, str):
                    if len(secret) > 4096:
                        secret.clear()
                    hit = secret[k] = self._norm(k) in self.keys
                if hit and x not in (None, "", {}, []):
                    self.count += 1
                    out[k] = "[REDACTED]"
                else:
                    out[k] = self.value(x)
            return out
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v
