"""Who the client of an MCP session is: its principal, from what the
transport and the kernel say, never a secret.

- HTTP: the request's credentials. `Authorization: Bearer` with a JWT gives
  its claims (iss, sub, aud, client_id, azp, scope, exp), marked verified
  only when the signature checks against a JWKS file the operator gave;
  an opaque bearer token, an API key header or Basic auth gives a keyed
  fingerprint (and Basic's user name). The token itself is never kept.
- Unix sockets: the peer's pid, uid and gid as the kernel keeps them for
  SO_PEERCRED (decode/events.py's SockEvent), then what /proc says of it.
- stdio: the process holding the other end of the server's stdin (the
  kernel's socketpair credentials, or the ancestor holding the pipe's write
  end), its executable (path and SHA-256 of the running file), its
  container, and the chain of its ancestors up to init.

A principal is a dict, written on session records, call records and alerts;
its `id` is the stable key detection and the query commands use: the same
credential, or the same user running the same program, gives the same id
across sessions and agent restarts (the fingerprint key is kept in the state
directory). The client's own clientInfo is `declared` beside it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import pwd
import time

from ..proc import namespaces, read_cmdline, read_exe, read_stat

# headers that carry an API key by convention (lower case); Authorization is always read
API_KEY_HEADERS = ("x-api-key", "api-key", "x-auth-token")
CLAIMS = ("iss", "sub", "aud", "client_id", "azp", "scope", "scp", "exp", "iat", "nbf", "jti")
# a program that runs another one's code: the script names the application
INTERPRETERS = ("node", "nodejs", "bun", "deno", "python", "python2", "python3", "pypy", "pypy3", "ruby", "perl",
                "php", "java", "uv", "uvx", "npx", "dotnet")
_HASH_LIMIT = 1 << 30   # executables larger than this are named, not hashed
_CHAIN_MAX = 12


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def load_key(state_dir: str | None) -> tuple[bytes, str]:
    """The key of credential fingerprints: kept in state_dir (0600, made on
    first use) so that a token's fingerprint is the same after a restart;
    a random key for this run where there is no such directory."""
    if state_dir:
        path = os.path.join(state_dir, "identity.key")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                key = f.read(64)
            if len(key) >= 16:
                return key, "state"
        except FileNotFoundError:
            pass
        except OSError:
            return os.urandom(32), "run"
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            key = os.urandom(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            return key, "state"
        except FileExistsError:   # another agent made it between the two opens
            return load_key(state_dir)
        except OSError:
            pass
    return os.urandom(32), "run"


class Jwks:
    """The keys JWTs are verified against, from a JWKS file (reread when it changes)."""

    def __init__(self, path: str):
        self.path = path
        self.mtime = None
        self.keys: list = []
        self.error: str | None = None
        self.load()

    def load(self) -> None:
        try:
            st = os.stat(self.path)
            if st.st_mtime_ns == self.mtime:
                return
            with open(self.path) as f:
                doc = json.load(f)
            import jwt   # PyJWT: the JWS checks (pip install 'mcpwitness[jwt]')
            keys = []
            for k in doc.get("keys", []) if isinstance(doc, dict) else []:
                try:
                    keys.append(jwt.PyJWK.from_dict(k))
                except Exception as e:   # an unusable key in the set: said, the others are used
                    self.error = f"{self.path}: a key skipped: {e}"
            self.keys, self.mtime = keys, st.st_mtime_ns
            if not keys:
                self.error = f"{self.path}: no usable key"
        except ImportError:
            self.error = "PyJWT is not installed: JWTs cannot be verified (pip install 'mcpwitness[jwt]')"
        except (OSError, ValueError) as e:
            self.error = f"{self.path}: {e}"

    def verify(self, token: str, header: dict) -> tuple[bool, str | None]:
        """(signature verified, why not) against the set's keys; claims are
        not judged here (expiry is a fact of its own)."""
        self.load()
        if not self.keys:
            return False, self.error or "no keys"
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            return False, f"algorithm {alg!r} refused"
        import jwt
        kid = header.get("kid")
        cands = [k for k in self.keys if kid is None or k.key_id == kid]
        if not cands:
            return False, f"no key with kid {kid!r} in the JWKS"
        why = None
        for k in cands:
            if k.algorithm_name and k.algorithm_name != alg:
                why = why or f"key {k.key_id!r} is for {k.algorithm_name}, the token says {alg}"
                continue
            try:
                jwt.decode(token, key=k.key, algorithms=[alg],
                           options={"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                                    "verify_iat": False, "verify_aud": False, "verify_iss": False})
                return True, None
            except jwt.InvalidSignatureError:
                why = "bad signature"
            except jwt.PyJWTError as e:
                why = why or str(e)
        return False, why


class Identifier:
    """Makes principals. One per pipeline; not thread-safe."""

    def __init__(self, key: bytes | None = None, key_scope: str = "run", jwks: str | None = None,
                 api_key_headers=API_KEY_HEADERS, procfs: bool = True):
        self.key = key or os.urandom(32)
        self.key_scope = key_scope
        self.jwks = Jwks(jwks) if jwks else None
        self.api_key_headers = tuple(h.lower() for h in api_key_headers)
        self.procfs = procfs
        self.redact = lambda s: s                # the pipeline's redactor (an app names its script)
        self._creds: dict[str, dict] = {}        # header value -> its principal (memory only)
        self._hashes: dict[tuple, str | None] = {}
        self._users: dict[int, str | None] = {}

    # --- credentials -------------------------------------------------------
    def fingerprint(self, secret: str) -> str:
        """fp:HEX, a keyed hash: equal secrets give equal fingerprints under this key,
        and none can be read back or guessed without the key."""
        d = hashlib.blake2b(secret.encode("utf-8", "surrogateescape"), key=self.key[:64], digest_size=8).hexdigest()
        return f"fp:{d}"

    def credentials(self, headers: dict | None) -> dict | None:
        """The principal a request's headers name (lower-case names), or None."""
        if not headers:
            return None
        for name in ("authorization",) + self.api_key_headers:
            v = headers.get(name)
            if v:
                break
        else:
            return None
        ck = name + "\0" + v
        p = self._creds.get(ck)
        if p is None:
            if len(self._creds) > 4096:
                self._creds.clear()
            p = self._creds[ck] = self._credential(name, v.strip())
        return p

    def _credential(self, name: str, value: str) -> dict:
        if name != "authorization":
            fp = self.fingerprint(value)
            return {"id": f"api-key:{fp}", "kind": "api_key", "source": f"{name} header", "fingerprint": fp}
        scheme, _, cred = value.partition(" ")
        scheme, cred = scheme.lower(), cred.strip()
        if scheme == "bearer" and cred:
            jwt_p = self._jwt(cred)
            if jwt_p is not None:
                return jwt_p
            fp = self.fingerprint(cred)
            return {"id": f"bearer:{fp}", "kind": "bearer", "source": "authorization header", "fingerprint": fp}
        if scheme == "basic" and cred:
            fp = self.fingerprint(cred)
            try:
                user = _b64url(cred.replace("+", "-").replace("/", "_")).decode("utf-8").partition(":")[0]
            except (binascii.Error, ValueError, UnicodeDecodeError):
                user = None
            p = {"id": f"basic:{user}" if user else f"basic:{fp}", "kind": "basic", "source": "authorization header",
                 "fingerprint": fp}
            if user:
                p["user"] = user[:256]
            return p
        fp = self.fingerprint(value)
        return {"id": f"{scheme[:32] or 'authorization'}:{fp}", "kind": "other", "scheme": scheme[:32],
                "source": "authorization header", "fingerprint": fp}

    def _jwt(self, token: str) -> dict | None:
        """A JWS in compact form: its claims (never the token), or None when it is not one."""
        parts = token.split(".")
        if len(parts) != 3 or not all(parts[:2]):
            return None
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict) or "alg" not in header:
            return None
        kept = {}
        for k in CLAIMS:
            v = claims.get(k)
            if v is None:
                continue
            if isinstance(v, str):
                v = v[:512]
            elif isinstance(v, list):
                v = [str(x)[:256] for x in v[:32]]
            elif not isinstance(v, (int, float, bool)):
                continue
            kept["scope" if k == "scp" and "scope" not in claims else k] = v
        fp = self.fingerprint(token)
        who = next((str(kept[k]) for k in ("sub", "client_id", "azp") if kept.get(k)), None) or fp
        p = {"kind": "jwt", "source": "authorization header", "claims": kept, "alg": str(header.get("alg"))[:16],
             "fingerprint": fp}
        if header.get("kid") is not None:
            p["kid"] = str(header["kid"])[:128]
        exp = kept.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            p["expired"] = exp < time.time()
        if self.jwks is None:
            p["verified"] = False
            p["verification"] = "unverified: no JWKS configured"
            p["id"] = f"jwt:{kept.get('iss', '')}|{who}"
        else:
            ok, why = self.jwks.verify(token, header)
            p["verified"] = ok
            p["verification"] = "signature verified against the JWKS" if ok else f"failed: {why}"
            # claims that failed verification are not the identity they name
            p["id"] = f"jwt:{kept.get('iss', '')}|{who}" if ok else f"jwt-unverified:{kept.get('iss', '')}|{who}|{fp}"
        return p

    # --- processes -----------------------------------------------------------
    def process(self, pid: int, uid: int | None = None, gid: int | None = None) -> dict:
        """What /proc says of pid: uid, gid, user, executable and its hash,
        the application (an interpreter's script), comm, container."""
        d: dict = {"pid": pid}
        if uid is not None:
            d["uid"], d["gid"] = uid, gid
        if not self.procfs:
            return d
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:") and uid is None:
                        d["uid"] = int(line.split()[2])     # effective
                    elif line.startswith("Gid:") and gid is None:
                        d["gid"] = int(line.split()[2])
        except (OSError, ValueError, IndexError):
            pass
        if "uid" in d:
            d["user"] = self._user(d["uid"])
        exe = read_exe(pid)
        try:
            d["comm"] = read_stat(pid).comm
        except (ProcessLookupError, ValueError, IndexError, OSError):
            pass
        if exe:
            d["exe"] = exe
            h = self.exe_hash(pid)
            if h:
                d["exe_sha256"] = h
            d["app"] = self.redact(app(exe, read_cmdline(pid)))
        ns = namespaces(pid)
        if ns.get("container"):
            d["container"] = {"id": ns["container"], "runtime": ns.get("container_runtime"),
                              "name": ns.get("container_name"), "image": ns.get("container_image")}
        return d

    def _user(self, uid: int) -> str | None:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        return self._users[uid]

    def exe_hash(self, pid: int) -> str | None:
        """SHA-256 of the file pid runs (through /proc/PID/exe: the running
        file even if its path was replaced), cached by its device, inode, size
        and mtime."""
        try:
            st = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return None
        k = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if k in self._hashes:
            return self._hashes[k]
        h = None
        if st.st_size <= _HASH_LIMIT:
            try:
                with open(f"/proc/{pid}/exe", "rb") as f:
                    h = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                h = None
        if len(self._hashes) > 4096:
            self._hashes.clear()
        self._hashes[k] = h
        return h

    def chain(self, pid: int) -> list[dict]:
        """pid's ancestors, nearest first, up to (not including) init: pid, exe, hash, comm."""
        out: list[dict] = []
        if not self.procfs:
            return out
        seen = {pid}
        try:
            cur = read_stat(pid).ppid
        except (ProcessLookupError, ValueError, IndexError, OSError):
            return out
        while cur > 1 and cur not in seen and len(out) < _CHAIN_MAX:
            seen.add(cur)
            e: dict = {"pid": cur}
            try:
                st = read_stat(cur)
            except (ProcessLookupError, ValueError, IndexError, OSError):
                break
            e["comm"] = st.comm
            exe = read_exe(cur)
            if exe:
                e["exe"] = exe
                h = self.exe_hash(cur)
                if h:
                    e["exe_sha256"] = h
            out.append(e)
            cur = st.ppid
        return out

    def stdio_client(self, server_pid: int, stdio: dict | None, ppid: int = 0) -> tuple[int | None, str]:
        """The process at the other end of a server's stdin: the nearest
        ancestor holding the write end of its pipe (or the peer socket of its
        socketpair), else its parent. (pid, how it was found). ppid: the
        server's parent as the kernel saw it, for a server already gone (a
        quick death, or a kill by the policy, before this was asked)."""
        if not self.procfs:
            return None, "no /proc"
        inp = (stdio or {}).get("stdin") or {}
        kind, inode, peer = inp.get("kind"), inp.get("inode"), inp.get("peer")
        want = None
        if kind == "pipe" and inode:
            want = (f"pipe:[{inode}]", os.O_WRONLY)
        elif kind == "unix" and peer:
            want = (f"socket:[{peer}]", None)
        gone = ""
        try:
            cur = read_stat(server_pid).ppid
        except (ProcessLookupError, ValueError, IndexError, OSError):
            if not ppid:
                return None, "the server is gone"
            cur, gone = ppid, " (the server had exited: from its parent as the kernel saw it)"
        parent, seen = cur, {server_pid}
        while want is not None and cur > 1 and cur not in seen and len(seen) <= _CHAIN_MAX:
            seen.add(cur)
            if _holds(cur, *want):
                return cur, "holds the other end of the server's stdin" + gone
            try:
                cur = read_stat(cur).ppid
            except (ProcessLookupError, ValueError, IndexError, OSError):
                break
        return (parent if parent > 1 else None), "the server's parent" + gone


def _holds(pid: int, target: str, access: int | None) -> bool:
    """pid has an fd on target (a "pipe:[N]" or "socket:[N]" link), opened for access when given."""
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{base}/{fd}") != target:
                continue
        except OSError:
            continue
        if access is None:
            return True
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("flags:"):
                        if int(line.split()[1], 8) & os.O_ACCMODE == access:
                            return True
                        break
        except (OSError, ValueError, IndexError):
            continue
    return False


def app(exe: str | None, cmdline: list[str] | None) -> str | None:
    """The application a process runs: its executable, and for an
    interpreter the script or module it was given."""
    if not exe:
        return None
    base = os.path.basename(exe)
    name = base.rstrip("0123456789.") or base
    if name not in INTERPRETERS and base not in INTERPRETERS:
        return exe
    args = (cmdline or [])[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "-c", "-e", "--eval", "-p", "--print", "-jar") and i + 1 < len(args):
            return f"{exe} {a} {args[i + 1][:200] if a in ('-m', '-jar') else '<inline code>'}"
        if a.startswith("-"):
            i += 1
            continue
        return f"{exe} {a[:400]}"
    return exe


def local_id(kind: str, d: dict) -> str:
    """The id of a local principal: the user and the application (an
    interpreter's script), and the container where there is one."""
    who = d.get("user") or (f"uid {d['uid']}" if d.get("uid") is not None else "uid ?")
    what = d.get("app") or d.get("exe") or d.get("comm") or f"pid {d.get('pid')}"
    c = (d.get("container") or {})
    where = f" in {c.get('name') or (c.get('id') or '')[:12]}" if c else ""
    return f"{kind}:{who}@{what}{where}"

