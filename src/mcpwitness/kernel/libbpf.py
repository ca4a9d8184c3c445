"""ctypes binding to the system's libbpf.so.1: the few calls mcpwitness needs.

Why ctypes over libbpf (docs/loader.md): libbpf does the CO-RE relocation,
map creation and attachment that every BPF tool needs, it is packaged by every
distribution, and it has a stable C ABI; no maintained Python binding covers
ring buffers, cgroup and uprobe attachment together.

Every call that can fail raises BPFError with libbpf's own log lines (the
verifier log among them) attached, never a bare errno.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import threading
from ctypes import CFUNCTYPE, POINTER, c_bool, c_char_p, c_int, c_long, c_size_t, c_uint, c_uint32, c_uint64, c_void_p


class BPFError(OSError):
    """A libbpf call failed; .log holds what libbpf printed while it ran."""

    def __init__(self, err: int, what: str, log: list[str] | None = None):
        self.log = log or []
        msg = f"{what}: {os.strerror(err)}"
        tail = [line for line in self.log if line.strip()][-12:]
        if tail:
            msg += "\n  libbpf: " + "\n  libbpf: ".join(tail)
        super().__init__(err, msg)


def _load() -> ctypes.CDLL:
    for name in ("libbpf.so.1", ctypes.util.find_library("bpf")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise OSError(errno.ENOENT, "libbpf.so.1 not found: install the libbpf1 package")


lib = _load()
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.vasprintf.argtypes = [POINTER(c_void_p), c_char_p, c_void_p]
libc.free.argtypes = [c_void_p]

_P = c_void_p


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


bpf_object__open_file = _fn("bpf_object__open_file", _P, c_char_p, _P)
bpf_object__load = _fn("bpf_object__load", c_int, _P)
bpf_object__close = _fn("bpf_object__close", None, _P)
bpf_object__next_program = _fn("bpf_object__next_program", _P, _P, _P)
bpf_object__next_map = _fn("bpf_object__next_map", _P, _P, _P)
bpf_program__name = _fn("bpf_program__name", c_char_p, _P)
bpf_program__section_name = _fn("bpf_program__section_name", c_char_p, _P)
bpf_program__set_autoload = _fn("bpf_program__set_autoload", c_int, _P, c_bool)
bpf_program__autoload = _fn("bpf_program__autoload", c_bool, _P)
bpf_program__fd = _fn("bpf_program__fd", c_int, _P)
bpf_program__set_log_level = _fn("bpf_program__set_log_level", c_int, _P, c_uint32)
BPF_LOG_STATS = 4  # the verifier's log: its statistics alone (instructions processed, time)
bpf_program__type = _fn("bpf_program__type", c_int, _P)
bpf_program__set_type = _fn("bpf_program__set_type", c_int, _P, c_int)
bpf_program__set_expected_attach_type = _fn("bpf_program__set_expected_attach_type", c_int, _P, c_int)
bpf_program__attach = _fn("bpf_program__attach", _P, _P)
bpf_program__attach_cgroup = _fn("bpf_program__attach_cgroup", _P, _P, c_int)
bpf_program__attach_uprobe = _fn("bpf_program__attach_uprobe", _P, _P, c_bool, c_int, c_char_p, c_size_t)
bpf_link__destroy = _fn("bpf_link__destroy", c_int, _P)
bpf_link__disconnect = _fn("bpf_link__disconnect", None, _P)
bpf_link__pin = _fn("bpf_link__pin", c_int, _P, c_char_p)
bpf_map__pin = _fn("bpf_map__pin", c_int, _P, c_char_p)
bpf_program__pin = _fn("bpf_program__pin", c_int, _P, c_char_p)
bpf_obj_get = _fn("bpf_obj_get", c_int, c_char_p)
bpf_map__name = _fn("bpf_map__name", c_char_p, _P)
bpf_map__fd = _fn("bpf_map__fd", c_int, _P)
bpf_map__set_max_entries = _fn("bpf_map__set_max_entries", c_int, _P, c_uint32)
bpf_map__max_entries = _fn("bpf_map__max_entries", c_uint32, _P)
bpf_map__value_size = _fn("bpf_map__value_size", c_uint32, _P)
bpf_map__initial_value = _fn("bpf_map__initial_value", _P, _P, POINTER(c_size_t))
bpf_map_update_elem = _fn("bpf_map_update_elem", c_int, c_int, _P, _P, c_uint64)
bpf_map_lookup_elem = _fn("bpf_map_lookup_elem", c_int, c_int, _P, _P)
bpf_map_delete_elem = _fn("bpf_map_delete_elem", c_int, c_int, _P)
bpf_map_get_next_key = _fn("bpf_map_get_next_key", c_int, c_int, _P, _P)
libbpf_num_possible_cpus = _fn("libbpf_num_possible_cpus", c_int)
libbpf_probe_bpf_map_type = _fn("libbpf_probe_bpf_map_type", c_int, c_int, _P)
libbpf_probe_bpf_prog_type = _fn("libbpf_probe_bpf_prog_type", c_int, c_int, _P)

RING_BUFFER_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
ring_buffer__new = _fn("ring_buffer__new", _P, c_int, RING_BUFFER_SAMPLE_FN, _P, _P)
ring_buffer__poll = _fn("ring_buffer__poll", c_int, _P, c_int)
ring_buffer__consume = _fn("ring_buffer__consume", c_int, _P)
ring_buffer__free = _fn("ring_buffer__free", None, _P)

BPF_ANY = 0
BPF_NOEXIST = 1

# libbpf's log goes through one callback; it is collected per thread so that a
# failed call can carry the lines it produced.
_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_log = threading.local()


@_PRINT_FN
def _print(level, fmt, ap):  # pragma: no cover - called from C
    lines = getattr(_log, "lines", None)
    if lines is None:
        return 0
    # one message can be a whole verifier log (libbpf prints it in one call):
    # vasprintf sizes the buffer, so its last lines, the verifier's verdict, survive
    out = c_void_p()
    if libc.vasprintf(ctypes.byref(out), fmt, ap) < 0 or not out.value:
        return 0
    try:
        text = ctypes.string_at(out.value).decode("utf-8", "replace")
    finally:
        libc.free(out)
    lines.extend(text.rstrip("\n").split("\n"))
    del lines[:-400]
    stats = getattr(_log, "stats", None)
    if stats is not None and "-- BEGIN PROG LOAD LOG --" in text:
        stats.append(text)
    return 0


lib.libbpf_set_print.restype = c_void_p
lib.libbpf_set_print.argtypes = [_PRINT_FN]
lib.libbpf_set_print(_print)


class capture_log:
    """Collect libbpf's messages on this thread while the block runs
    (its last 400 lines; with stats, also every program's whole load log in
    .stats: verifier_stats reads them)."""

    def __init__(self, stats: bool = False):
        self.stats: list[str] | None = [] if stats else None

    def __enter__(self) -> list[str]:
        self.prev = getattr(_log, "lines", None), getattr(_log, "stats", None)
        _log.lines, _log.stats = [], self.stats
        return _log.lines

    def __exit__(self, *exc) -> None:
        _log.lines, _log.stats = self.prev


_PROG = re.compile(r"prog '([^']+)': -- BEGIN PROG LOAD LOG --")
_PROCESSED = re.compile(r"processed (\d+) insns \(limit (\d+)\)")
_VTIME = re.compile(r"verification time (\d+) usec")


def verifier_stats(logs: list[str]) -> dict[str, dict]:
    """Per program, from its load log at BPF_LOG_STATS: the instructions the
    verifier processed, its limit, and the time it took (microseconds)."""
    out: dict[str, dict] = {}
    for text in logs:
        prog, n, t = _PROG.search(text), _PROCESSED.search(text), _VTIME.search(text)
        if prog and n:
            out[prog.group(1)] = {"insns": int(n.group(1)), "limit": int(n.group(2)),
                                  "usec": int(t.group(1)) if t else None}
    return out


def check_ptr(ptr: int | None, what: str, log: list[str]) -> int:
    if not ptr:
        raise BPFError(ctypes.get_errno() or errno.EINVAL, what, log)
    return ptr


def check_int(ret: int, what: str, log: list[str] | None = None) -> int:
    if ret < 0:
        raise BPFError(-ret if ret != -1 else (ctypes.get_errno() or errno.EINVAL), what, log)
    return ret


# sections newer than the oldest libbpf we support (1.1): program type, attach type
NEWER_SECTIONS = {
    "cgroup/connect_unix": (18, 49),  # BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UNIX_CONNECT (6.7+)
    "uprobe.multi": (2, 48),          # BPF_PROG_TYPE_KPROBE, BPF_TRACE_UPROBE_MULTI (6.6+)
    "uretprobe.multi": (2, 48),
}


def set_newer_section_type(prog: int) -> None:
    """Give a program whose section this libbpf does not know its types."""
    sec = bpf_program__section_name(prog).decode()
    if sec in NEWER_SECTIONS and bpf_program__type(prog) == 0:
        ptype, atype = NEWER_SECTIONS[sec]
        bpf_program__set_type(prog, ptype)
        bpf_program__set_expected_attach_type(prog, atype)


def possible_cpus() -> int:
    return check_int(libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


__all__ = [n for n in dir() if n.startswith(("bpf_", "ring_buffer", "libbpf_"))] + [
    "BPFError", "capture_log", "check_ptr", "check_int", "possible_cpus", "set_newer_section_type", "BPF_ANY",
    "BPF_NOEXIST", "RING_BUFFER_SAMPLE_FN", "c_long", "c_uint",
]


class UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts as of libbpf 1.1 (sz tells newer libbpfs which fields we know)."""
    _fields_ = [("sz", c_size_t), ("ref_ctr_offset", c_size_t), ("bpf_cookie", c_uint64),
                ("retprobe", c_bool), ("func_name", c_char_p)]


bpf_program__attach_uprobe_opts = _fn("bpf_program__attach_uprobe_opts", _P, _P, c_int, c_char_p, c_size_t,
                                      ctypes.POINTER(UprobeOpts))
libbpf_major_version = _fn("libbpf_major_version", c_uint32)


class _UprobeMultiAttr(ctypes.Structure):
    """union bpf_attr, the BPF_LINK_CREATE part, with its uprobe_multi member."""
    _fields_ = [("prog_fd", c_uint32), ("target_fd", c_uint32), ("attach_type", c_uint32), ("flags", c_uint32),
                ("path", c_uint64), ("offsets", c_uint64), ("ref_ctr_offsets", c_uint64), ("cookies", c_uint64),
                ("cnt", c_uint32), ("um_flags", c_uint32), ("pid", c_uint32), ("_pad", c_uint32)]


_NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_LINK_CREATE, BPF_TRACE_UPROBE_MULTI, BPF_F_UPROBE_MULTI_RETURN = 28, 48, 1


def uprobe_multi_link(prog_fd: int, path: str, offsets: list[int], cookies: list[int], retprobe: bool,
                      pid: int = 0) -> int:
    """One uprobe_multi link (kernel 6.6+; libbpf 1.1 predates it): prog on
    every offset of path, each with its cookie. Returns the link fd (close it
    to detach); OSError when the kernel refuses."""
    import platform
    n = len(offsets)
    offs, cks = (c_uint64 * n)(*offsets), (c_uint64 * n)(*cookies)
    cpath = ctypes.create_string_buffer(path.encode())
    attr = _UprobeMultiAttr(prog_fd=prog_fd, attach_type=BPF_TRACE_UPROBE_MULTI,
                            path=ctypes.addressof(cpath), offsets=ctypes.addressof(offs),
                            cookies=ctypes.addressof(cks), cnt=n,
                            um_flags=BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, pid=pid)
    fd = libc.syscall(ctypes.c_long(_NR_BPF.get(platform.machine(), 321)), ctypes.c_long(BPF_LINK_CREATE),
                      ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr)))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"uprobe_multi link on {path}: {os.strerror(e)}")
    return fd
libbpf_minor_version = _fn("libbpf_minor_version", c_uint32)


def version() -> str:
    return f"{libbpf_major_version()}.{libbpf_minor_version()}"
