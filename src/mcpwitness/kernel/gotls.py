"""Where Go's crypto/tls plaintext is: (*crypto/tls.Conn).Read and .Write in
a Go executable, and the file offsets of their entries and of each of their
return instructions (the kernel side, tls.bpf.h, says why not uretprobes).

A uprobe is an int3 written over the first byte of an instruction: at an
offset inside an instruction it corrupts the program. So the offsets come
from decoding the function's machine code from its first byte to its last
(its symbol's size; Go puts no data inside functions), and a function is
probed only when that decoding covers it exactly, instruction by
instruction, and finds at least one return. Anything else (a stripped
binary, a Go older than 1.17's register ABI, an architecture not decoded
here, a decoder missing) is said, and the binary is left alone.
"""
from __future__ import annotations

import mmap
import os
import re
import struct

READ = "crypto/tls.(*Conn).Read"
WRITE = "crypto/tls.(*Conn).Write"
FUNCTIONS = (READ, WRITE)
BUILDINFO = b"\xff Go buildinf:"
MIN_VERSION = (1, 17)  # the register ABI on amd64 (arguments in AX, BX, CX; g in R14)


def _vaddr_offset(loads, vaddr: int) -> int | None:
    for v, off, size in loads:
        if v <= vaddr < v + size:
            return vaddr - v + off
    return None


def go_version(path: str, loads=()) -> str | None:
    """The Go release that built path ("go1.19.8"), from its build info
    (the `.go.buildinfo` blob: since 1.18 the version string inline, before
    that a pointer to a string header), or None for a file that has none."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            i = m.find(BUILDINFO)
            while i >= 0 and i % 16:  # the blob is 16-byte aligned: a copy elsewhere is not it
                i = m.find(BUILDINFO, i + 1)
            if i < 0 or i + 32 > len(m):
                return None
            ptrsize, flags = m[i + 14], m[i + 15]
            if flags & 2:  # 1.18+: varint length, then the bytes
                j, n, shift = i + 32, 0, 0
                while j < len(m) and shift < 35:
                    b = m[j]
                    n |= (b & 0x7F) << shift
                    j += 1
                    shift += 7
                    if not b & 0x80:
                        break
                v = bytes(m[j:j + n])
            elif ptrsize == 8:  # 1.17 and before: *string at +16 -> {ptr, len}
                (hdr,) = struct.unpack_from("<Q", m, i + 16)
                at = _vaddr_offset(loads, hdr)
                if at is None or at + 16 > len(m):
                    return None
                ptr, n = struct.unpack_from("<QQ", m, at)
                at = _vaddr_offset(loads, ptr)
                if at is None or n > 64 or at + n > len(m):
                    return None
                v = bytes(m[at:at + n])
            else:
                return None
    except (OSError, ValueError):
        return None
    s = v.decode("ascii", "replace")
    return s if s.startswith("go") else None


def version_tuple(v: str | None) -> tuple[int, ...]:
    """go1.19.8 -> (1, 19, 8); devel or unreadable -> ()."""
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", v or "")
    return tuple(int(x) for x in m.groups() if x is not None) if m else ()


def return_offsets(code: bytes, machine: str = "x86_64") -> list[int]:
    """The offsets (from the function's first byte) of every return
    instruction in code, decoded linearly from its start. Raises ValueError
    when the decoding does not cover code exactly (an undecodable byte), or
    finds no return; ImportError when the decoder (capstone) is missing."""
    import capstone
    if machine != "x86_64":
        raise ValueError(f"return instructions are found on x86-64 only (this is {machine})")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = False
    rets, end = [], 0
    for addr, size, mnemonic, _ in md.disasm_lite(code, 0):
        if addr != end:
            raise ValueError(f"decoding broke at byte {end} of {len(code)}")
        if mnemonic in ("ret", "retq"):
            rets.append(addr)
        end = addr + size
    # Go pads a function's symbol to its alignment with int3: the tail may stop short of them only
    tail = code[end:]
    if tail.strip(b"\xcc"):
        raise ValueError(f"decoding stopped at byte {end} of {len(code)}")
    if not rets:
        raise ValueError("no return instruction")
    return rets


def probe_points(path: str, functions: dict[str, tuple[int, int]], loads=()) -> dict:
    """For a Go executable whose symbols gave `functions` ({name: (file
    offset, size)}): {"version": "go1.19.8", READ: (entry, [returns]),
    WRITE: ...} with file offsets, or {"version": ..., "error": why} when it
    must not be probed."""
    v = go_version(path, loads)
    out: dict = {"version": v}
    if version_tuple(v) < MIN_VERSION:
        out["error"] = (f"built by {v}: before Go 1.17's register ABI" if v else
                        "no Go build info: its version cannot be checked")
        return out
    machine = os.uname().machine
    try:
        with open(path, "rb") as f:
            for name in FUNCTIONS:
                off, size = functions[name]
                if not 0 < size <= 1 << 20:
                    raise ValueError(f"{name}: a symbol size of {size}")
                f.seek(off)
                code = f.read(size)
                if len(code) != size:
                    raise ValueError(f"{name}: outside the file")
                out[name] = (off, [off + r for r in return_offsets(code, machine)])
    except ImportError:
        out = {"version": v, "error": "the x86-64 decoder (Python package capstone) is not installed"}
    except (OSError, ValueError) as e:
        out = {"version": v, "error": str(e)}
    return out


# The runtime's function table (.gopclntab), kept in stripped binaries since the runtime
# needs it (stack traces, the garbage collector): its header's magic by format
PCLNTAB_MAGIC = {0xFFFFFFFA: "1.16", 0xFFFFFFF0: "1.18", 0xFFFFFFF1: "1.20"}


def pclntab_functions(path: str, wanted, loads) -> dict[str, tuple[int, int]]:
    """{name: (file offset, size)} of the functions in `wanted`, from the Go
    runtime's own function table: what a stripped binary (-ldflags=-s) still
    carries. The table is found by its header (magic, pc quantum 1, pointer
    size 8) and believed only when it is consistent: every offset inside the
    file, entries in order, the text start an address of a loaded segment.
    A function's size is up to the next function's entry (the padding after
    it included: the decoding allows an int3 tail). {} when not found."""
    wanted = {w.encode(): w for w in wanted}
    out: dict[str, tuple[int, int]] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for magic, fmt in PCLNTAB_MAGIC.items():
            head = struct.pack("<I", magic) + b"\0\0\x01\x08"
            i = m.find(head)
            while i >= 0 and not out:
                try:
                    out = _read_pclntab(m, i, fmt, wanted, loads)
                except (ValueError, struct.error):
                    out = {}
                i = m.find(head, i + 1)
            if out:
                break
    return out


def _read_pclntab(m, at: int, fmt: str, wanted: dict, loads) -> dict[str, tuple[int, int]]:
    size = len(m)

    def word(k: int) -> int:
        return struct.unpack_from("<Q", m, at + 8 + 8 * k)[0]

    nfunc = word(0)
    if not 0 < nfunc < 1 << 22:
        raise ValueError("nfunc")
    if fmt == "1.16":  # no text start: entries are addresses
        text, (nameoff, pcln) = 0, (word(2), word(6))
        ent = 16  # {entry uintptr, funcoff uintptr}
    else:
        text, nameoff, pcln = word(2), word(3), word(7)
        ent = 8   # {entryoff uint32, funcoff uint32}
        if _vaddr_offset([(v, o, s) for v, o, s in loads], text) is None:
            raise ValueError("text start outside the loaded segments")
    tab = at + pcln
    if tab + ent * (nfunc + 1) > size or at + nameoff >= size:
        raise ValueError("outside the file")
    out: dict[str, tuple[int, int]] = {}
    last = -1
    for k in range(nfunc):
        if ent == 16:
            entry, funcoff, nxt = *struct.unpack_from("<QQ", m, tab + 16 * k), struct.unpack_from("<Q", m, tab + 16 * k + 16)[0]
        else:
            e, funcoff = struct.unpack_from("<II", m, tab + 8 * k)
            entry, nxt = text + e, text + struct.unpack_from("<I", m, tab + 8 * k + 8)[0]
        if entry < last or nxt < entry:
            raise ValueError("entries out of order")
        last = entry
        fn = tab + funcoff
        if fn + 8 + (4 if ent == 16 else 0) > size:
            raise ValueError("a function outside the file")
        name_at = struct.unpack_from("<i", m, fn + (8 if ent == 16 else 4))[0]
        p = at + nameoff + name_at
        if not 0 <= p < size:
            raise ValueError("a name outside the file")
        end = m.find(b"\0", p, p + 512)
        if end < 0:
            raise ValueError("a name without its end")
        name = m[p:end]
        if name in wanted:
            off = _vaddr_offset(loads, entry)
            if off is None:
                raise ValueError(f"{name!r}: an entry outside the loaded segments")
            out[wanted[name]] = (off, nxt - entry)
    if not out:
        raise ValueError("none of the functions")
    return out
