"""Where the TLS plaintext is: the OpenSSL libraries processes map, and the
file offsets of the functions the uprobes go on.

The uprobes are attached to the library file, not to a process: every
process that maps that file runs them, and the kernel programs keep only
tracked processes (and, with --port, sockets on a watched port). So one
attach per library file serves the whole host: the system's libssl at
start-up, and any other copy (a virtualenv's, a bundled one, or an executable
that exports OpenSSL's functions itself, as Node.js does) when a tracked
process is seen to map or run it: at `run`'s spawn, at discovery, and on a
tracked process's first three 2-second ticks.
"""
from __future__ import annotations

import os
import struct
import subprocess

# the functions and the kernel programs that go on them
ENTRY = {"SSL_read": "mw_ssl_read", "SSL_write": "mw_ssl_write", "SSL_read_ex": "mw_ssl_read_ex",
         "SSL_write_ex": "mw_ssl_write_ex", "SSL_do_handshake": "mw_ssl_handshake"}
RETURN = {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"}  # mw_ssl_ret on each
# uprobe_multi: one entry program, told which function by the cookie (MW_IOSYS_SSL_*, tls.bpf.h)
COOKIE = {"SSL_read": 8, "SSL_write": 9, "SSL_read_ex": 10, "SSL_write_ex": 11, "SSL_do_handshake": 100}
MARKER = "SSL_write"  # a file that defines this is an OpenSSL (or compatible) libssl


def elf_symbols(path: str, wanted) -> dict[str, int]:
    """File offsets of the defined functions in `wanted` (from .dynsym, else
    .symtab), for uprobes. {} for a file that is not a 64-bit little-endian ELF."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    (phentsize, phnum, shentsize, shnum) = struct.unpack_from("<HHHH", data, 0x36)
    loads = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, int] = {}
    for sh_type in (11, 2):  # SHT_DYNSYM, then SHT_SYMTAB
        for sec in sections:
            if sec[1] != sh_type:
                continue
            strtab = sections[sec[6]]
            str_off = strtab[4]
            for j in range(sec[5] // 24):
                st_name, st_info, _, st_shndx, st_value, _ = struct.unpack_from("<IBBHQQ", data, sec[4] + j * 24)
                if st_shndx == 0 or st_info & 0xF != 2:  # undefined, or not STT_FUNC
                    continue
                end = data.index(b"\0", str_off + st_name)
                name = data[str_off + st_name:end].decode("latin-1").split("@", 1)[0]
                if name in wanted and name not in out:
                    for vaddr, off, size in loads:
                        if vaddr <= st_value < vaddr + size:
                            out[name] = st_value - vaddr + off
                            break
        if out:
            break
    return out


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
    """Attach the TLS uprobes once per library file (by device and inode)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.files: dict[tuple, dict] = {}   # (dev, ino) -> {path, functions}
        self.errors: list[str] = []

    def add(self, path: str) -> bool:
        """Attach to one library file; False if it is not one, or known already."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.files:
            return False
        self.files[key] = {"path": path, "functions": []}
        try:
            syms = elf_symbols(path, set(ENTRY))
        except Exception as e:  # unreadable or malformed (any ELF field can lie): counted, not ours
            self.errors.append(f"{path}: {type(e).__name__}: {e}")
            return False
        if MARKER not in syms:
            return False
        done = []
        if self.kernel.uprobe_multi:  # two links for the whole file
            fns = sorted(syms)
            try:
                self.kernel.attach_uprobe_multi("mw_ssl_entry_multi", path, [syms[f] for f in fns],
                                                [COOKIE[f] for f in fns], retprobe=False)
                rets = [f for f in fns if f in RETURN]
                self.kernel.attach_uprobe_multi("mw_ssl_ret_multi", path, [syms[f] for f in rets],
                                                [COOKIE[f] for f in rets], retprobe=True)
                done = fns
            except OSError as e:
                self.errors.append(f"{path}: {e}")
        else:
            for fn, off in syms.items():
                try:
                    self.kernel.attach_uprobe(ENTRY[fn], path, off, retprobe=False)
                    if fn in RETURN:
                        self.kernel.attach_uprobe("mw_ssl_ret", path, off, retprobe=True)
                    done.append(fn)
                except OSError as e:
                    self.errors.append(f"{path} {fn}: {e}")
        self.files[key]["functions"] = sorted(done)
        return bool(done)

    def add_system(self) -> None:
        for p in system_libraries():
            self.add(os.path.realpath(p))

    def add_process(self, pid: int) -> None:
        """The libssl files pid maps, and its executable when that exports
        OpenSSL itself (Node.js does)."""
        for p in mapped_libraries(pid):
            self.add(p)
        try:
            self.add(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            pass

    def report(self) -> list[dict]:
        how = "uprobe_multi links" if self.kernel.uprobe_multi else "uprobes"
        return [dict(v, attached_by=how) for v in self.files.values() if v["functions"]]
