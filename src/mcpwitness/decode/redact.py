"""Secrets out of payloads before anything is written.

Three rules, all applied to every string the records carry:

- **Values under secret-looking names are replaced whole**: a JSON key, or the NAME of a
  `NAME=value` / `NAME: value` / `"NAME": "value"` written inside a string (an environment
  dump, a config file read by a tool, a header). A name is a secret's when one of its parts
  (split at `_`, `-`, `.` and camelCase: `AWS_SECRET_ACCESS_KEY`, `clientSecret`,
  `x-api-key`) is a secret word, in any position and any case (`SECRET`, `TOKEN`,
  `PASSWORD`, `PASSWD`, `PASSPHRASE`, `CREDENTIAL`, `API_KEY`, `ACCESS_KEY`, `PRIVATE_KEY`,
  ...), or when it ends in a weaker one (`AUTH`, `SESSION`, `COOKIE`) and the value looks
  like a secret (long enough, mixed characters, high entropy). Numbers and booleans under a
  name that only *contains* a secret word (`token_count`, `max_tokens`) are kept.
- **Known key formats are replaced in place** wherever they occur: PEM blocks of any kind,
  JWTs, AWS access key ids and secret keys, GitHub, GitLab, npm, Slack (tokens and webhooks),
  Stripe, Anthropic, OpenAI and Google keys, Azure account keys and SAS signatures, bearer and
  basic credentials, passwords in URLs.
- The replacement names what was removed (`[REDACTED:github-token]`), so an auditor still
  sees that a token was passed and where.
"""
from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field

# keys whose values are secrets whatever they hold, compared lowercased with - and _ removed
SECRET_KEYS = {
    "authorization", "proxyauthorization", "password", "passwd", "secret", "clientsecret",
    "token", "accesstoken", "refreshtoken", "idtoken", "apikey", "xapikey", "apitoken", "authtoken",
    "sessiontoken", "privatekey", "cookie", "setcookie", "credentials", "credential", "passphrase",
    "awssecretaccesskey", "secretaccesskey", "mcpsessionid",
}

# a name with one of these parts (or two adjacent parts joined) names a secret: string values
# under it are replaced whole (DB_PASSWORD, AWS_SECRET_ACCESS_KEY, clientSecret, GITHUB_TOKEN)
STRONG = {
    "secret", "secrets", "token", "password", "passwd", "passphrase", "credential", "credentials",
    "apikey", "accesskey", "privatekey", "secretkey", "accountkey", "signingkey", "encryptionkey",
    "masterkey", "clientsecret", "apitoken", "authtoken", "accesstoken", "refreshtoken",
}
# a name ending in one of these names a secret when its value looks like one (SESSION=9f2c...,
# AUTH=..., COOKIE=...; not "author", "session: started")
# (PWD: a password's short name, and the shell's working directory in every environment dump)
WEAK = {"auth", "session", "sessionid", "sid", "cookie", "cookies", "pwd"}
# names whose whole normalized form contains one of these are a secret's too (DBPASSWORD, MYSECRET)
INFIX = ("password", "passwd", "secret", "passphrase", "credential", "apikey", "accesskey", "privatekey")

_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_kind(name: str) -> str | None:
    """"strong", "weak" or None: how far `name` says its value is a secret."""
    norm = name.lower().replace("-", "").replace("_", "").replace(".", "")
    if norm in SECRET_KEYS:
        return "strong"
    for parts in _split(name):
        joined = {a + b for a, b in zip(parts, parts[1:])}
        if STRONG.intersection(parts) or STRONG & joined:
            return "strong"
    if any(w in norm for w in INFIX) or norm.endswith("token"):
        return "strong"
    for parts in _split(name):
        if parts and (parts[-1] in WEAK or (len(parts) > 1 and parts[-2] + parts[-1] in WEAK)):
            return "weak"
    return None


def _split(name: str) -> tuple[list[str], list[str]]:
    """name's parts two ways, lowercased: at _ - . (DB_PaSsWoRd), and at camelCase too (clientSecret)."""
    return ([p.lower() for p in re.split(r"[_.\-]+", name) if p],
            [p.lower() for p in _PARTS.findall(name)])


def looks_secret(v: str) -> bool:
    """A value with a secret's shape: 8+ characters, two or more kinds (letters of both cases,
    digits, symbols), and at least 3 bits of entropy per character."""
    if len(v) < 8 or " " in v:
        return False
    kinds = (any(c.islower() for c in v) + any(c.isupper() for c in v) + any(c.isdigit() for c in v)
             + any(not c.isalnum() for c in v))
    return kinds >= 2 and entropy(v) >= 3.0


def entropy(v: str) -> float:
    n = len(v)
    counts: dict[str, int] = {}
    for c in v:
        counts[c] = counts.get(c, 0) + 1
    return -sum(k / n * math.log2(k / n) for k in counts.values())


PATTERNS = [
    ("private-key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
                    r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)"),
    ("pem-block", r"-----BEGIN [A-Z0-9 ]{3,40}-----[\s\S]*?(?:-----END [A-Z0-9 ]{3,40}-----|$)"),
    ("bearer", r"(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    ("basic-auth", r"(?i:\bbasic\s+)[A-Za-z0-9+/=]{8,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ("aws-access-key-id", r"\b(?:AKIA|ASIA|AIDA|AROA|ANPA|AGPA)[0-9A-Z]{16}\b"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),
    ("gitlab-token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
    ("npm-token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("slack-webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"),
    ("slack-token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai-key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("stripe-key", r"\b(?:[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{16,})"),
    ("azure-sas", r"(?i:\bsig=)[A-Za-z0-9%+/=]{16,}"),
    ("url-password", r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
]

# NAME=value, NAME: value, "NAME": "value", \"NAME\": \"value\" (JSON inside a string), NAME => value:
# the name and its separator; the value (VALUE) is read after it only when name_kind() says so
NAME_SEP = re.compile(r"(?<![A-Za-z0-9_.])(?P<n>[A-Za-z_][A-Za-z0-9_.-]{1,80})\\?[\"']?[ \t]*(?:=>|[=:])[ \t]*")
VALUE = re.compile(r"(?P<o>\\?[\"'])(?P<vq>(?:(?!(?P=o)).){1,4096}?)(?P=o)|(?P<v>[^\s'\"&;,<>(){}\[\]\\]{1,4096})")
# an AWS secret access key without a name before it: 40 characters of base64 standing alone, random
# enough, in a string that speaks of AWS or holds an access key id (a credentials CSV, "aws secret
# is ..."); elsewhere a 40-character token is too common to take for one, and the scan too dear
AWS_SECRET = re.compile(r"[A-Za-z0-9/+=]{40,}")
AWS_CONTEXT = ("aws", "akia", "asia")

# Literals (lowercased) one of which every built-in pattern needs: a string containing none of
# them cannot match, and skips the regexes (most strings). A new pattern needs a hint here.
HINTS = ("-----begin ", "bearer", "basic", "eyj", "akia", "asia", "aida", "aroa", "anpa", "agpa", "ghp_", "gho_",
         "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "npm_", "hooks.slack", "xox", "sk-", "aiza", "k_live_",
         "k_test_", "whsec_", "sig=", "://")
# ...and one of which every secret-looking name needs (name_kind's words, lowercased)
NAME_HINTS = ("secret", "token", "passw", "passphrase", "credential", "key", "auth", "session", "sid",
              "cookie", "pwd")
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")


def _any_in(words, low: str) -> bool:
    for w in words:
        if w in low:
            return True
    return False


@dataclass
class Redactor:
    enabled: bool = True
    extra_keys: set[str] = field(default_factory=set)
    extra_patterns: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0

    def __post_init__(self):
        self.keys = {self._norm(k) for k in self.extra_keys}
        self._secret_key: dict[str, str | None] = {}  # key as written -> name_kind (keys repeat in every message)
        self.regex = re.compile("|".join(f"(?P<p{i}>{p})" for i, (_, p) in
                                         enumerate(PATTERNS + list(self.extra_patterns))))
        self.names = [n for n, _ in PATTERNS + list(self.extra_patterns)]

    @staticmethod
    def _norm(k: str) -> str:
        return k.lower().replace("-", "").replace("_", "")

    def kind(self, name: str) -> str | None:
        hit = self._secret_key.get(name, "")
        if hit == "":
            if len(self._secret_key) > 4096:
                self._secret_key.clear()
            hit = self._secret_key[name] = "strong" if self._norm(name) in self.keys else name_kind(name)
        return hit

    def _sub(self, m: re.Match) -> str:
        self.count += 1
        return f"[REDACTED:{self.names[int(m.lastgroup[1:])]}]"

    def _assignments(self, s: str, low: str) -> str:
        """Every NAME<sep>value whose name is a secret's, its value replaced. Only names around an
        occurrence of a NAME_HINTS word are looked at (found with str.find: a regex tried at every
        position of a long answer costs ten times more), each in turn, so a name inside another's
        value is judged too (note: password=x)."""
        starts = set()
        for h in NAME_HINTS:
            i = low.find(h)
            while i >= 0:
                j = i
                while j > 0 and s[j - 1] in _NAME_CHARS:
                    j -= 1
                while j < i and not (s[j].isalpha() or s[j] == "_"):
                    j += 1
                starts.add(j)
                i = low.find(h, i + len(h))
        out, pos, done = [], 0, 0
        for start in sorted(starts):
            if start < pos:
                continue
            m = NAME_SEP.match(s, start)
            if m is None:
                continue
            pos = m.end()
            kind = self.kind(m.group("n"))
            if kind is None:
                continue
            v = VALUE.match(s, pos)
            if v is None:
                continue
            grp = "vq" if v.group("vq") is not None else "v"
            start, end = v.span(grp)
            # a name that starts a line (an environment dump, a .env or YAML file): an unquoted value
            # runs to the line's end (env prints DB_PASSWORD=correct horse battery as it is)
            if grp == "v" and s[s.rfind("\n", 0, m.start()) + 1:m.start()].strip() in ("", "export"):
                nl = s.find("\n", start)
                end = len(s) if nl < 0 else nl
            val = s[start:end]
            if "[REDACTED" in val or not self._secret_value(m.group("n"), kind, val):
                continue
            self.count += 1
            out += [s[done:start], "[REDACTED]"]
            done = pos = end
        return "".join(out) + s[done:] if out else s

    def _tail(self, name: str) -> bool:
        """Does name end in a secret word (DB_PASSWORD, AWS_SECRET_ACCESS_KEY, clientSecret)?"""
        norm = self._norm(name)
        return norm in SECRET_KEYS or norm in self.keys or _ends_secret(name)

    def _secret_value(self, name: str, kind: str, v: str) -> bool:
        """Is the string v under a secret's name (of this kind) a secret?"""
        if kind == "weak":   # (an env value runs to the line's end: its first word decides)
            return looks_secret(v.split(" ", 1)[0])
        if self._tail(name):
            return bool(v)
        # a name that only contains a secret word (token_type, secret_name, token_url): a number,
        # a short plain word or a URL without credentials is kept
        return not (v.isdigit() or (v.isalpha() and len(v) < 12)
                    or (v.startswith(("http://", "https://")) and "@" not in v))

    def _aws(self, m: re.Match) -> str:
        v = m.group(0)
        if len(v) != 40 or "=" in v or not (any(c.isupper() for c in v) and any(c.islower() for c in v) and any(c.isdigit() for c in v)) \
                or entropy(v) < 4.0:
            return v
        self.count += 1
        return "[REDACTED:aws-secret-key]"

    def text(self, s: str) -> str:
        if not self.enabled or len(s) < 8:
            return s
        low = s.lower()
        if self.extra_patterns or _any_in(HINTS, low):
            s = self.regex.sub(self._sub, s)
            low = s.lower()
        if ("=" in s or ":" in s) and _any_in(NAME_HINTS, low):
            s = self._assignments(s, low)
        if len(s) >= 40 and _any_in(AWS_CONTEXT, low):
            s = AWS_SECRET.sub(self._aws, s)
        return s

    def argv(self, args: list | None) -> list | None:
        """A command line with the secrets in its arguments replaced (a token
        passed as --token X is in every ps listing; it stays out of ours)."""
        if not self.enabled or not args:
            return args
        out = [self.text(a) for a in args]
        for i in range(1, len(out)):   # the value after a secret-named option: --token X, --api-key X
            prev = out[i - 1]
            if prev.startswith("-") and "=" not in prev and self.kind(prev.lstrip("-")) \
                    and not out[i].startswith("[REDACTED") and not out[i].startswith("-"):
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
            for k, x in v.items():
                kind = self.kind(k) if isinstance(k, str) else None
                if kind and x not in (None, "", {}, []) and not isinstance(x, bool) and self._whole(k, kind, x):
                    self.count += 1
                    out[k] = "[REDACTED]"
                else:
                    out[k] = self.value(x)
            return out
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v

    def _whole(self, k: str, kind: str, x) -> bool:
        """Is the value x under key k (a secret's name of this kind) replaced whole?"""
        if isinstance(x, str):
            return self._secret_value(k, kind, x)
        if self._norm(k) in SECRET_KEYS or self._norm(k) in self.keys:
            return True              # password, token, authorization...: whatever it holds
        # a number, or a list or object: only under a name that ends in a secret word
        # (DB_PASSWORD: 1234, secrets: [...]; not token_count: 12, token_usage: {...})
        return kind == "strong" and _ends_secret(k)


def _ends_secret(name: str) -> bool:
    return any(parts and (parts[-1] in STRONG or (len(parts) > 1 and parts[-2] + parts[-1] in STRONG))
               for parts in _split(name))
