"""Where the TLS plaintext is: the OpenSSL libraries processes map, and the
file offsets of the functions the uprobes go on.

The uprobes are attached to the library file, not to a process: every
process that maps that file runs them, and the kernel programs keep only
tracked processes (and, with --port, sockets on a watched port). So one
attach per library file serves the whole host: the system's libssl at
start-up, and any other copy (a virtualenv's, a bundled one, or an executable
that exports OpenSSL's functions itself, as Node.js does, or that links
BoringSSL without symbols, as Bun does) when a tracked process is seen to map
or run it: at `run`'s spawn, at discovery, and on a tracked process's first
three 2-second ticks.
"""
from __future__ import annotations

import errno
import os
import re
import struct
import subprocess

from . import boringssl, gotls

_SONAME = re.compile(r"libssl\.so(\.\d+)*")  # a libssl under its own soname, not a bundled copy

# the functions and the kernel programs that go on them
ENTRY = {"SSL_read": "mw_ssl_read", "SSL_write": "mw_ssl_write", "SSL_read_ex": "mw_ssl_read_ex",
         "SSL_write_ex": "mw_ssl_write_ex", "SSL_do_handshake": "mw_ssl_handshake", "SSL_free": "mw_ssl_free"}
# mw_ssl_ret on each (the handshake's return ends the window in which its socket I/O binds)
RETURN = {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_do_handshake"}
RETURN_PROG = {"SSL_do_handshake": "mw_ssl_handshake_ret"}  # (the uprobe_multi one tells it by the cookie)
# uprobe_multi: one entry program, told which function by the cookie (MW_IOSYS_SSL_*, tls.bpf.h)
COOKIE = {"SSL_read": 8, "SSL_write": 9, "SSL_read_ex": 10, "SSL_write_ex": 11, "SSL_do_handshake": 100,
          "SSL_free": 101}
MARKER = "SSL_write"
# Go's crypto/tls (kernel/gotls.py): the programs at the entries (their return
# instructions get NAME_ret), and the uprobe_multi cookies (an entry's; its returns' is one more)
GO_PROGRAMS = {"crypto/tls.(*Conn).Read": "mw_go_read", "crypto/tls.(*Conn).Write": "mw_go_write"}
GO_COOKIE_READ, GO_COOKIE_WRITE = 200, 202  # a file that defines this is an OpenSSL (or compatible) libssl


def elf_symbols(path: str, wanted) -> dict[str, int]:
    """File offsets of the defined functions in `wanted` (elf_functions)."""
    return {name: off for name, (off, _) in elf_functions(path, wanted)[0].items()}


def elf_functions(path: str, wanted) -> tuple[dict[str, tuple[int, int]], list]:
    """File offsets and sizes of the defined functions in `wanted` (from
    .dynsym, else .symtab), for uprobes, and the file's loaded segments
    [(vaddr, offset, size)]. ({}, []) for a file that is not a 64-bit
    little-endian ELF.
    Reads only the headers and the symbol tables, so that a large executable
    (checked at every exec of a tracked process) costs little. The file is the
    untrusted party here (any tracked process may exec a crafted one): every
    offset and size it gives is checked against the file's real size before a
    read, and one that does not fit raises ValueError ("malformed ELF")."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size

        def read(off: int, n: int, what: str) -> bytes:
            if off < 0 or n < 0 or off + n > size:
                raise ValueError(f"malformed ELF: {what} at {off:#x}+{n:#x} is outside the file ({size} bytes)")
            f.seek(off)
            return f.read(n)

        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            return {}, []
        (phoff, shoff) = struct.unpack_from("<QQ", ident, 0x20)
        (phentsize, phnum, shentsize, shnum) = struct.unpack_from("<HHHH", ident, 0x36)
        if (phnum and phentsize < 56) or (shnum and shentsize < 64):
            raise ValueError(f"malformed ELF: header entries of {phentsize} and {shentsize} bytes")
        ph = read(phoff, phentsize * phnum, "the program headers")
        loads = []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", ph, i * phentsize)
            if p_type == 1:  # PT_LOAD
                loads.append((p_vaddr, p_offset, p_filesz))
        sh = read(shoff, shentsize * shnum, "the section headers")
        sections = [struct.unpack_from("<IIQQQQIIQQ", sh, i * shentsize) for i in range(shnum)]
        out: dict[str, tuple[int, int]] = {}
        for sh_type in (11, 2):  # SHT_DYNSYM, then SHT_SYMTAB
            for sec in sections:
                if sec[1] != sh_type:
                    continue
                if sec[6] >= len(sections):
                    raise ValueError(f"malformed ELF: a symbol table links to section {sec[6]} of {len(sections)}")
                strtab = sections[sec[6]]
                strs = read(strtab[4], strtab[5], "a string table")
                syms = read(sec[4], sec[5], "a symbol table")
                # where the wanted names sit in the string table (a large executable has ~100k
                # symbols: only those whose name starts at one of these offsets are decoded)
                at: dict[int, str] = {}
                for w in wanted:
                    for tail in (b"\0", b"@"):
                        i = strs.find(w.encode() + tail)
                        while i >= 0:  # (a name may be another's tail: any offset can be one)
                            at[i] = w
                            i = strs.find(w.encode() + tail, i + 1)
                if not at:
                    continue
                for st_name, st_info, _, st_shndx, st_value, st_size in struct.iter_unpack(
                        "<IBBHQQ", syms[:len(syms) - len(syms) % 24]):
                    if st_name not in at or st_shndx == 0 or st_info & 0xF != 2:  # undefined, or not STT_FUNC
                        continue
                    name = at[st_name]
                    if name not in out:
                        for vaddr, off, size_ in loads:
                            if vaddr <= st_value < vaddr + size_:
                                out[name] = (st_value - vaddr + off, st_size)
                                break
            if out:
                break
    return out, loads


# TLS stacks linked into executables without the symbols a probe needs: recognised by what
# their code leaves in the file (source paths of error reports and panics), said, not probed
UNREAD = (
    (re.compile(rb"/boringssl/(?:ssl|crypto)/"), "BoringSSL statically linked without its symbols (Bun, Claude Code)"),
    (re.compile(rb"/rustls-(\d+\.\d+\.\d+)/src/"), "rustls {} statically linked (Deno and other Rust programs)"),
    (re.compile(rb"/aws-lc/(?:ssl|crypto)/"), "AWS-LC statically linked without its symbols"),
    (re.compile(re.escape(gotls.BUILDINFO)), "Go crypto/tls in a stripped binary whose function table was not "
                                             "found either"),
)


def unread_stack(path: str) -> str | None:
    """What TLS an executable without probe-able functions carries, in a
    sentence, or None: the first marker of UNREAD found in it (rustls is
    named before the AWS-LC it uses; a Go binary's build info only when Go's
    TLS functions were not found, i.e. it is stripped)."""
    import mmap
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for rx, what in UNREAD:
                hit = rx.search(m)
                if hit:
                    return (what.format(hit.group(1).decode()) if rx.groups else what) + \
                        ": its TLS plaintext is not read (docs/network.md#tls)"
    except (OSError, ValueError):
        pass
    return None


def system_libraries() -> list[str]:
    """The libssl files the dynamic linker would give a process here."""
    paths = []
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if "libssl.so" in line and "=>" in line:
            paths.append(line.split("=>", 1)[1].strip())
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib",
              "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"):
        try:
            paths += [os.path.join(d, n) for n in os.listdir(d) if n.startswith("libssl.so")]
        except OSError:
            pass
    return paths


def mapped_libraries(pid: int) -> list[str]:
    """The libssl files pid maps (by path as /proc shows it, through its root)."""
    out = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                i = line.find("/")
                if i > 0 and "libssl" in line[i:]:
                    out.append(line[i:].rstrip("\n"))
    except OSError:
        pass
    return [f"/proc/{pid}/root{p}" if not os.path.exists(p) else p for p in dict.fromkeys(out)]


class TlsProbes:
    """Attach the TLS probes to library files (by device and inode).

    Two scopes. Host-wide (`watch --port`, whose processes are not known in
    advance): once per file at start-up, for every process that maps it; each
    SSL call of every such process then traps into the probes, tracked or not.
    Per process (everywhere else): for each tracked process that maps a libssl
    (seen opening it, found in its maps at discovery or attach, inherited at
    fork), with the kernel's pid filter, so that no other process pays; its
    probes are detached when it exits."""

    def __init__(self, kernel, per_process: bool = False):
        self.kernel = kernel
        self.per_process = per_process
        self.files: dict[tuple, dict] = {}   # (dev, ino) -> {path, functions}: host-wide attachments
        self.syms: dict[tuple, dict] = {}    # (dev, ino) -> {function: offset} (or {} for not a libssl)
        self.procs: dict[int, dict] = {}     # pid -> {(dev, ino): (path, links)}: per-process attachments
        self.attached_total = 0              # per-process attachments made so far
        self.errors: list[str] = []
        self.scans: dict[int, int] = {}      # pid -> times its maps were looked at for a libssl
        self.libs: dict[int, object] = {}    # pid -> records.TlsInfo, once known (library_of)
        self.last_look = 0
        self.unread: dict[str, str] = {}     # path -> the TLS recognised there and why it is not read

    def _symbols(self, path: str):
        """(dev, ino), and what the file carries: {"library": "openssl", "syms":
        {function: offset}}, {"library": "boringssl", "syms": ..., "evidence"}
        (BoringSSL without its symbols, its functions found by their code:
        kernel/boringssl.py) or {"library": "go", "version", "points":
        {function: (entry, [returns])}}, or None (none of those, or one that
        must not be probed: said once in self.unread, as is a TLS stack
        recognised but not readable: unread_stack)."""
        try:
            st = os.stat(path)
        except OSError:
            return None, None
        key = (st.st_dev, st.st_ino)
        if key not in self.syms:
            found = None
            try:
                funcs, loads = elf_functions(path, set(ENTRY) | set(gotls.FUNCTIONS))
                if not funcs and loads and gotls.go_version(path, loads):
                    # a stripped Go binary: the runtime's own function table still names them
                    funcs = gotls.pclntab_functions(path, gotls.FUNCTIONS, loads)
                if MARKER in funcs:
                    found = {"library": "openssl", "syms": {f: o for f, (o, _) in funcs.items() if f in ENTRY}}
                elif all(f in funcs for f in gotls.FUNCTIONS):
                    points = gotls.probe_points(path, funcs, loads)
                    if "error" in points:
                        self.unread[path] = f"Go crypto/tls ({points['version'] or 'version unknown'}) not probed: " \
                                             + points["error"]
                    else:
                        found = {"library": "go", "version": points["version"],
                                 "points": {f: points[f] for f in gotls.FUNCTIONS}}
                elif not funcs and "libssl" not in os.path.basename(path):
                    why = unread_stack(path)
                    if why and why.startswith("BoringSSL"):
                        found = self._boringssl(path)
                    elif why:
                        self.unread[path] = why
            except Exception as e:  # unreadable or malformed (any ELF field can lie): counted, not ours
                self.errors.append(f"{path}: {type(e).__name__}: {e}")
            if len(self.unread) > 1024:
                self.unread.pop(next(iter(self.unread)))
            self.syms[key] = found
        return key, self.syms[key]

    def _boringssl(self, path: str) -> dict | None:
        """BoringSSL linked without its symbols: its SSL_read and SSL_write
        found by their code (kernel/boringssl.py), or why not, in self.unread."""
        why = None
        try:
            got = boringssl.locate(path)
        except ImportError:
            why = "the x86-64 decoder (Python package capstone) is not installed"
        except ValueError as e:
            why = str(e)
        if why:
            self.unread[path] = ("BoringSSL statically linked without its symbols (Bun, Claude Code), its functions "
                                 f"not found ({why}): its TLS plaintext is not read (docs/network.md#tls)")
            return None
        return {"library": "boringssl", "evidence": got["evidence"],
                "syms": {f: got[f] for f in ("SSL_read", "SSL_write", "SSL_do_handshake")}}

    def _attach(self, path: str, found: dict, pid: int | None) -> tuple[list, list]:
        """The probes on one file: (functions attached, links)."""
        done, links = [], []
        where = f"{path}{f' (pid {pid})' if pid else ''}"
        if found["library"] == "go":
            try:
                if self.kernel.uprobe_multi:  # one link for the binary: entries and return instructions
                    offsets, cookies = [], []
                    for fn, cookie in zip(gotls.FUNCTIONS, (GO_COOKIE_READ, GO_COOKIE_WRITE)):
                        entry, rets = found["points"][fn]
                        offsets += [entry, *rets]
                        cookies += [cookie] + [cookie + 1] * len(rets)
                    links.append(self.kernel.attach_uprobe_multi("mw_go_multi", path, offsets, cookies,
                                                                 retprobe=False, pid=pid or 0))
                else:
                    for fn, (entry, rets) in found["points"].items():
                        prog = GO_PROGRAMS[fn]
                        links.append(self.kernel.attach_uprobe(prog, path, entry, retprobe=False, pid=pid or -1))
                        for r in rets:
                            links.append(self.kernel.attach_uprobe(prog + "_ret", path, r, retprobe=False,
                                                                   pid=pid or -1))
                done = list(gotls.FUNCTIONS)
            except OSError as e:
                if not (pid and e.errno == errno.ESRCH):  # the process is gone already: nothing to say
                    self.errors.append(f"{where}: {e}")
            return done, links
        syms = found["syms"]
        if self.kernel.uprobe_multi:  # two links for the whole file
            fns = sorted(syms)
            try:
                links.append(self.kernel.attach_uprobe_multi("mw_ssl_entry_multi", path, [syms[f] for f in fns],
                                                             [COOKIE[f] for f in fns], retprobe=False, pid=pid or 0))
                rets = [f for f in fns if f in RETURN]
                links.append(self.kernel.attach_uprobe_multi("mw_ssl_ret_multi", path, [syms[f] for f in rets],
                                                             [COOKIE[f] for f in rets], retprobe=True, pid=pid or 0))
                done = fns
            except OSError as e:
                if not (pid and e.errno == errno.ESRCH):
                    self.errors.append(f"{where}: {e}")
        else:
            for fn, off in syms.items():
                try:
                    links.append(self.kernel.attach_uprobe(ENTRY[fn], path, off, retprobe=False,
                                                           pid=pid if pid else -1))
                    if fn in RETURN:
                        links.append(self.kernel.attach_uprobe(RETURN_PROG.get(fn, "mw_ssl_ret"), path, off,
                                                               retprobe=True, pid=pid if pid else -1))
                    done.append(fn)
                except OSError as e:
                    if pid and e.errno == errno.ESRCH:
                        break
                    self.errors.append(f"{path} {fn}{f' (pid {pid})' if pid else ''}: {e}")
        return done, links

    def add(self, path: str, pid: int | None = None) -> bool:
        """Attach to one library file (a libssl, an executable that exports
        OpenSSL, a Go executable), host-wide (pid None) or for pid only.
        False if it is none of those, or is attached there already."""
        key, found = self._symbols(path)
        if key is None:
            return False
        if pid is None:
            if key in self.files:
                return False
            self.files[key] = {"path": path, "functions": []}
        elif key in self.procs.get(pid, {}):
            return False
        if found is None:
            return False
        done, links = self._attach(path, found, pid)
        info = {"path": path, "functions": sorted(done), "library": found["library"]}
        if found["library"] == "go":
            info["version"] = found["version"]
        if found["library"] == "boringssl":
            info["found"] = found["evidence"]
        if pid is None:
            self.files[key] = info
        else:
            self.procs.setdefault(pid, {})[key] = (path, self.kernel.take_links(links))
            self.files.setdefault(key, info)
            self.attached_total += bool(done)
        return bool(done)

    def add_system(self) -> None:
        for p in system_libraries():
            self.add(os.path.realpath(p))

    def add_process(self, pid: int) -> None:
        """The libssl files pid maps, and its executable when that exports
        OpenSSL itself (Node.js does). Host-wide (--port), every process
        that runs the same file is probed with it."""
        scope = pid if self.per_process else None
        for p in mapped_libraries(pid):
            self.add(p, scope)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return
        # a process in another mount namespace names a file this one may not see: its /proc link
        self.add(exe if os.path.exists(exe) else f"/proc/{pid}/exe", scope)
        self.libs.pop(pid, None)
        self.library_of(pid)  # said now, while its /proc is there (its records may be read after it exits)

    def library_of(self, pid: int):
        """The TLS library pid's plaintext is read from (records.TlsInfo), or
        None: its executable when that is probed (Node's own OpenSSL:
        openssl(node), Go's crypto/tls: go), else the first probed libssl it
        maps (or was seen opening). Kept once known; None is not kept (the
        process may not have mapped its library yet)."""
        if self.libs.get(pid) is not None:
            return self.libs[pid]
        from ..records import TlsInfo
        found = None
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            st = os.stat(f"/proc/{pid}/exe")
            entry = self.files.get((st.st_dev, st.st_ino), {})
            if entry.get("functions"):
                lib = entry.get("library")
                found = TlsInfo("go" if lib == "go" else f"{lib or 'openssl'}({os.path.basename(exe)})", exe)
        except OSError:
            pass
        if found is None:
            probed = []
            for path in mapped_libraries(pid):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if self.files.get((st.st_dev, st.st_ino), {}).get("functions"):
                    probed.append(path)
            # a process can map several copies (Python wheels bundle theirs as libssl-<hash>.so.3,
            # psycopg's for one): the one under its own soname is the one the runtime's ssl
            # module links. (Said per process, not per call: which copy a call went through
            # is not in the event.)
            path = next((x for x in probed if _SONAME.fullmatch(os.path.basename(x))), probed[0] if probed else None)
            if path is not None:
                found = TlsInfo("openssl", path)
        if found is not None:
            if len(self.libs) > 4096:
                self.libs.clear()
            self.libs[pid] = found
        return found

    def add_running(self) -> None:
        """Host-wide (--port): the processes already running, since no event
        will say what they run. Each file is read once (by device and inode)."""
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid():
                self.add_process(int(name))

    def opened(self, pid: int, path: str) -> None:
        """A tracked process opened this file: probe it there if it is a
        libssl (the open comes before the mapping and the first SSL call)."""
        if self.per_process and "libssl" in os.path.basename(path):
            self.add(path, pid)
            key = self._symbols(path)[0]
            if self.libs.get(pid) is None and self.files.get(key, {}).get("functions"):
                from ..records import TlsInfo
                self.libs[pid] = TlsInfo("openssl", path)

    def execed(self, pid: int, exe: str) -> None:
        """A tracked process now runs exe: probe it there if exe exports
        OpenSSL itself (Node.js does); a libssl it loads is seen opening."""
        if self.per_process:
            self.add(exe, pid)
            self.libs.pop(pid, None)  # another program now
            self.library_of(pid)

    def forked(self, parent: int, child: int) -> None:
        """A child shares its parent's mappings: its probes too."""
        if self.per_process:
            for path, _ in list(self.procs.get(parent, {}).values()):
                self.add(path, child)

    def exited(self, pid: int) -> None:
        """pid is gone: its probes are detached by a helper thread (each
        detach waits for the kernel)."""
        self.libs.pop(pid, None)
        mine = self.procs.pop(pid, None)
        if not mine:
            return
        import threading
        links = [l for _, ls in mine.values() for l in ls]
        threading.Thread(target=self.kernel.detach_links, args=(links,), daemon=True).start()

    def hook(self, ev, out: list) -> None:
        """Pipeline hook: the kernel events that say where a libssl is."""
        tag = type(ev).__struct_config__.tag
        if tag == "open":
            if ev.result is not None and "libssl" in ev.path:
                self.opened(ev.pid, ev.resolved or ev.path)
        elif tag == "exec":
            if ev.result == 0 and ev.exe:
                self.execed(ev.pid, ev.exe)
        elif tag == "fork":
            self.forked(ev.pid, ev.child_pid)
        elif tag == "exit":
            self.exited(ev.pid)

    def look(self, now: int, pids) -> None:
        """Every 2 s: a tracked process may map a libssl of its own (a
        virtualenv's, a bundled one): attach there too. The system's libssl
        is attached from the start; a process is looked at on its first three
        looks, which catches a late `import ssl`, then left alone."""
        if now - self.last_look <= 2e9:
            return
        self.last_look = now
        pids = set(pids)
        looked = 0
        for pid in pids:
            n = self.scans.get(pid, 0)
            if n >= 3 or looked >= 64:
                continue
            self.scans[pid] = n + 1
            looked += 1
            self.add_process(pid)
        if len(self.scans) > 65536:
            self.scans = {p: n for p, n in self.scans.items() if p in pids}

    def give_back(self) -> None:
        """The agent stops: the per-process attachments still standing go back
        to the kernel object, which detaches them with everything else."""
        for m in self.procs.values():
            for _, links in m.values():
                for kind, ref in links:
                    (self.kernel.links if kind == "libbpf" else self.kernel.raw_links).append(ref)
        self.procs = {}

    def plan(self) -> str | None:
        """What will happen to TLS plaintext, in a sentence for the user (None: nothing to say:
        the host-wide probes are attached)."""
        if not self.per_process:
            if self.report():
                return None
            why = self.errors[0] if self.errors else "no OpenSSL libssl found on this host"
            return f"TLS plaintext will not be captured ({why}); plain TCP and stdio are (see `mcpwitness doctor`)"
        libs = sorted({os.path.basename(os.path.realpath(p)) for p in system_libraries()})
        if libs:
            return (f"TLS plaintext: probed in each tracked process that loads libssl ({', '.join(libs)} here) "
                    "or runs an executable that exports OpenSSL (Node.js)")
        return ("no OpenSSL libssl found on this host: TLS plaintext is captured only from tracked executables "
                "that export OpenSSL themselves (Node.js); plain TCP and stdio are")

    def report(self) -> list[dict]:
        how = ("uprobe_multi links" if self.kernel.uprobe_multi else "uprobes") + (
            ", per tracked process" if self.per_process else ", host-wide")
        return [dict(v, attached_by=how) for v in self.files.values() if v["functions"]]
