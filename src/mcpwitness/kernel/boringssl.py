"""Where BoringSSL's SSL_read and SSL_write are in an executable that links
it without their symbols (Bun, and so Claude Code, built with Bun).

Nothing names the functions: they are found by what their code does. Each
error BoringSSL reports is a call ERR_put_error(library, 0, reason, __FILE__,
__LINE__), so the code of ssl/ssl_lib.cc loads the address of that file's
name, the library number of SSL (16), a reason code and a line number as
immediates just before the call. The reason codes are BoringSSL's stable ABI;
the line numbers change with each release, but their order does not:

- SSL_write reports, in this order in the source, "should not have been
  called" (QUIC), "uninitialized", "handshake failure" and "bad length":
  the one function whose reports are exactly those four is SSL_write;
- ssl_read_impl reports "uninitialized" then "handshake failure", before
  SSL_write in the file; SSL_read is SSL_peek's "should not have been
  called" (SSL_peek inlined into it) between the two, in a function that
  calls ssl_read_impl (or has it inlined) and goes on to consume what it
  copied (more calls after the copy: SSL_peek alone makes just the copy);
- SSL_do_handshake reports "connection type not set", alone, and SSL_write
  calls it (to finish a handshake first): both must hold. Probed too, since
  Bun drives the handshake with it: the records it writes tie the SSL object
  to its socket before the first plaintext.

A function's first byte is taken only when it is at once the target of a
direct call, 16-byte aligned, preceded by padding (int3 or NOPs) or a return, a usual
prologue, and the start of a linear decoding that reaches the report's
instruction exactly, without crossing padding. A uprobe inside an
instruction corrupts the program: anything less than one checked match for
each function is refused, with the reason, and the binary is left alone.
"""
from __future__ import annotations

import bisect
import mmap
import os
import re
import struct

ERR_LIB_SSL = 16
R_SHOULD_NOT_HAVE_BEEN_CALLED = 66  # ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED (2 | ERR_R_FATAL)
R_UNINITIALIZED = 226               # SSL_R_UNINITIALIZED
R_HANDSHAKE_FAILURE = 215           # SSL_R_SSL_HANDSHAKE_FAILURE
R_BAD_LENGTH = 111                  # SSL_R_BAD_LENGTH
R_CONNECTION_TYPE_NOT_SET = 134     # SSL_R_CONNECTION_TYPE_NOT_SET
WRITE_REPORTS = [R_SHOULD_NOT_HAVE_BEEN_CALLED, R_UNINITIALIZED, R_HANDSHAKE_FAILURE, R_BAD_LENGTH]
READ_IMPL_REPORTS = [R_UNINITIALIZED, R_HANDSHAKE_FAILURE]
OURS = set(WRITE_REPORTS) | {R_CONNECTION_TYPE_NOT_SET}
FILE_TAIL = b"/ssl/ssl_lib.cc\0"  # the end of __FILE__ in ssl_lib.cc's reports
BACK = 8192     # how far before a report its function's first byte may be
PROLOGUES = (b"\x55", b"\xf3\x0f\x1e\xfa", b"\x41\x57", b"\x41\x56", b"\x41\x55", b"\x41\x54", b"\x53",
             b"\x48\x83\xec", b"\x48\x81\xec")
ARGS = {"edi": "library", "esi": "unused", "edx": "reason", "r8d": "line"}
# what can end the bytes before a function: lld's int3 fill, a return, or the assembler's
# alignment NOPs (the canonical 1- to 11-byte forms)
_NOPS = [bytes.fromhex(h) for h in (
    "90", "6690", "0f1f00", "0f1f4000", "0f1f440000", "660f1f440000", "0f1f8000000000",
    "0f1f840000000000", "660f1f840000000000", "662e0f1f840000000000", "66662e0f1f840000000000")]
ENDS = [b"\xcc", b"\xc3"] + _NOPS


class Segments:
    """The loaded segments of a 64-bit little-endian ELF file, to go between
    file offsets and addresses (checked against the file's size)."""

    def __init__(self, m):
        if len(m) < 64 or m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF file")
        self.type, self.machine = struct.unpack_from("<HH", m, 16)
        phoff, = struct.unpack_from("<Q", m, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", m, 0x36)
        if phnum and (phentsize < 56 or phoff + phentsize * phnum > len(m)):
            raise ValueError("malformed ELF: program headers outside the file")
        self.loads = []  # (vaddr, offset, filesz, executable)
        for i in range(phnum):
            p_type, p_flags, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from(
                "<IIQQQQQQ", m, phoff + i * phentsize)
            if p_type == 1:
                if p_offset + p_filesz > len(m):
                    raise ValueError("malformed ELF: a segment outside the file")
                self.loads.append((p_vaddr, p_offset, p_filesz, bool(p_flags & 1)))

    def offset(self, vaddr: int, code: bool = False) -> int | None:
        for v, off, size, x in self.loads:
            if v <= vaddr < v + size and (x or not code):
                return vaddr - v + off
        return None

    def vaddr(self, offset: int) -> int | None:
        for v, off, size, _ in self.loads:
            if off <= offset < off + size:
                return offset - off + v
        return None

    def code(self):
        return [(v, off, size) for v, off, size, x in self.loads if x]


def _reports(m, seg: Segments, names: set[int], md) -> list[tuple[int, int, int, int]]:
    """Every ERR_put_error(16, 0, reason, name, line) whose name is one of
    `names`: [(address of the name's load, reason, line, callee)]."""
    out = []
    for v, off, size in seg.code():
        refs = []
        for a in names:
            if a < 1 << 32:  # a fixed-address executable: mov ecx, imm32
                pat = re.compile(re.escape(b"\xb9" + a.to_bytes(4, "little")))
                refs += [i.start() for i in pat.finditer(m, off, off + size)]
        if seg.type == 3:  # position-independent: lea rcx, [rip + rel32]
            lea = re.compile(rb"\x48\x8d\x0d(?=(.{4}))", re.DOTALL)
            for i in lea.finditer(m, off, off + size):
                rel = int.from_bytes(i.group(1), "little", signed=True)
                if v + (i.start() - off) + 7 + rel in names:
                    refs.append(i.start())
        for at in refs:
            regs: dict[str, int] = {}
            callee = _call_after(m, seg, at, v + at - off, md, regs)
            if callee is None or "reason" not in regs or "line" not in regs:
                continue
            if regs.get("library", ERR_LIB_SSL) != ERR_LIB_SSL or regs.get("unused", 0) != 0:
                continue
            out.append((v + at - off, regs["reason"], regs["line"], callee))
    return out


def _call_after(m, seg, at: int, addr: int, md, regs: dict, follow: int = 1):
    """Decode from file offset `at` (address addr) to the next call, noting the
    immediates moved into the argument registers; one jump is followed (the
    compiler shares the call between reports). The call's target, or None."""
    for a, size, mnemonic, ops in md.disasm_lite(bytes(m[at:at + 64]), addr):
        if mnemonic == "call":
            try:
                return int(ops, 16)
            except ValueError:
                return None
        if mnemonic == "jmp" and follow:
            try:
                t = int(ops, 16)
            except ValueError:
                return None
            to = seg.offset(t, code=True)
            return None if to is None else _call_after(m, seg, to, t, md, regs, follow - 1)
        if mnemonic in ("ret", "int3", "ud2") or mnemonic.startswith("j"):
            return None
        parts = [p.strip() for p in ops.split(",")]
        if len(parts) == 2 and parts[0] in ARGS:
            if mnemonic == "mov":
                try:
                    regs.setdefault(ARGS[parts[0]], int(parts[1], 0))
                except ValueError:
                    regs.setdefault(ARGS[parts[0]], -1)
            elif mnemonic == "xor" and parts[0] == parts[1]:
                regs.setdefault(ARGS[parts[0]], 0)
    return None


def _call_targets(m, seg: Segments, windows: list[tuple[int, int]]) -> dict[int, int]:
    """How many direct calls (e8 rel32) in the code land in each address of
    `windows` ([(lo, hi)], merged): {target: callers}."""
    windows = sorted(windows)
    merged: list[list[int]] = []
    for lo, hi in windows:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    starts = [w[0] for w in merged]
    out: dict[int, int] = {}
    # (a call within the code has a rel32 under 2**28 either way: its top byte says so, and
    # the regex drops most of the e8 bytes that are not calls at all)
    call = re.compile(rb"\xe8(?=(...[\x00-\x0f\xf0-\xff]))", re.DOTALL)
    for v, off, size in seg.code():
        base = v - off + 5
        for i in call.finditer(m, off, off + size):
            t = base + i.start() + int.from_bytes(i.group(1), "little", signed=True)
            k = bisect.bisect_right(starts, t) - 1
            if k >= 0 and t <= merged[k][1]:
                out[t] = out.get(t, 0) + 1
    return out


def _decodes_to(m, seg, start: int, target: int, md) -> bool:
    """Linear decoding from start reaches target on an instruction boundary,
    through valid instructions and no padding."""
    at = seg.offset(start, code=True)
    if at is None or not start <= target < start + BACK:
        return False
    end = start
    for a, size, mnemonic, _ in md.disasm_lite(bytes(m[at:at + (target - start) + 16]), start):
        if a != end or mnemonic == "int3":
            return False
        if a == target:
            return True
        end = a + size
        if end > target:
            return False
    return False


def _function_of(m, seg, addr: int, targets: dict[int, int], md) -> int | None:
    """The first byte of the function holding the instruction at addr (module doc)."""
    for p in sorted((t for t in targets if addr - BACK <= t <= addr), reverse=True):
        at = seg.offset(p, code=True)
        if p % 16 or at is None or at == 0:
            continue
        if not any(m[at - len(x):at] == x for x in ENDS) or not any(m[at:at + len(x)] == x for x in PROLOGUES):
            continue
        if _decodes_to(m, seg, p, addr, md):
            return p
    return None


def _calls_in(m, seg, start: int, md, targets: dict[int, int], limit: int = 4096) -> list:
    """The calls a function makes, in order ([target or None for an indirect
    one]), decoding from its start to int3 padding or the next function
    called directly, whichever comes first."""
    at = seg.offset(start, code=True)
    out = []
    if at is None:
        return out
    stop = min((t for t in targets if t > start), default=start + limit)
    for a, size, mnemonic, ops in md.disasm_lite(bytes(m[at:at + min(limit, stop - start)]), start):
        if mnemonic == "int3":
            break
        if mnemonic == "call":
            try:
                out.append(int(ops, 16))
            except ValueError:
                out.append(None)
    return out


def locate(path: str) -> dict:
    """{"SSL_read": file offset, "SSL_write": file offset, "evidence": how
    they were told}, or ValueError(why not) (module doc). ImportError when
    the decoder (capstone) is missing."""
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        seg = Segments(m)
        if seg.machine != 62:
            raise ValueError("BoringSSL's functions are found on x86-64 only")
        names = set()
        i = m.find(FILE_TAIL)
        while i >= 0:
            start = m.rfind(b"\0", max(0, i - 256), i) + 1
            if start > 0:
                a = seg.vaddr(start)
                if a is not None:
                    names.add(a)
            i = m.find(FILE_TAIL, i + 1)
        if not names:
            raise ValueError("no ssl/ssl_lib.cc error reports (BoringSSL's ssl library not linked, or renamed)")
        reports = _reports(m, seg, names, md)
        if not reports:
            raise ValueError("ssl/ssl_lib.cc is named, but no error report calls were decoded")
        callees: dict[int, int] = {}
        for r in reports:
            callees[r[3]] = callees.get(r[3], 0) + 1
        put_error = max(callees, key=callees.get)
        reports = [r for r in reports if r[3] == put_error]
        mine = [r for r in reports if r[1] in OURS]
        targets = _call_targets(m, seg, [(r[0] - BACK, r[0] + BACK) for r in mine])
        funcs: dict[int, list] = {}
        lost = 0
        for r in mine:
            p = _function_of(m, seg, r[0], targets, md)
            if p is None:
                lost += 1
                continue
            funcs.setdefault(p, []).append(r)
        for p in funcs:
            funcs[p].sort(key=lambda r: r[2])

        def reasons(p):
            return [r[1] for r in funcs[p]]

        writes = [p for p in funcs if reasons(p) == WRITE_REPORTS]
        if len(writes) != 1:
            raise ValueError(f"{len(writes)} functions report what SSL_write does (1 expected; "
                             f"{lost} reports not placed in a function)")
        w = writes[0]
        w_line = funcs[w][0][2]
        impls = [p for p in funcs if reasons(p) == READ_IMPL_REPORTS and funcs[p][-1][2] < w_line]
        reads = []
        for p in funcs:
            rs = funcs[p]
            calls = _calls_in(m, seg, p, md, targets)
            if reasons(p) == [R_SHOULD_NOT_HAVE_BEEN_CALLED] and len(impls) == 1 and \
                    funcs[impls[0]][-1][2] < rs[0][2] < w_line and impls[0] in calls:
                after = calls[calls.index(impls[0]) + 1:]
            elif reasons(p) == READ_IMPL_REPORTS + [R_SHOULD_NOT_HAVE_BEEN_CALLED] and rs[-1][2] < w_line:
                after = calls[max(i for i, c in enumerate(calls) if c == put_error) + 1:] if put_error in calls \
                    else []
            else:
                continue
            if len([c for c in after if c != put_error]) >= 2:  # the copy, then the consuming
                reads.append(p)
        if len(reads) != 1:
            raise ValueError(f"{len(reads)} functions do what SSL_read does (1 expected)")
        r = reads[0]
        w_calls = _calls_in(m, seg, w, md, targets)
        shakes = [p for p in funcs if reasons(p) == [R_CONNECTION_TYPE_NOT_SET] and p in w_calls]
        if len(shakes) != 1:
            raise ValueError(f"{len(shakes)} functions called by SSL_write do what SSL_do_handshake does "
                             "(1 expected)")
        h = shakes[0]
        out = {"SSL_read": seg.offset(r, code=True), "SSL_write": seg.offset(w, code=True),
               "SSL_do_handshake": seg.offset(h, code=True)}
        callers = f"{targets.get(w, 0)} and {targets.get(r, 0)} direct callers"
        out["evidence"] = (f"SSL_write at {w:#x} (reports at ssl_lib.cc lines "
                           f"{', '.join(str(x[2]) for x in funcs[w])}), SSL_read at {r:#x} "
                           f"(line {funcs[r][-1][2]}), SSL_do_handshake at {h:#x} (line {funcs[h][0][2]}, "
                           f"called by SSL_write); {callers}")
        return out
