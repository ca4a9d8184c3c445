"""The kernel's side of the ring: the layout of struct mw_event and the
numbers in it, mirroring bpf/mcpwitness.h (checked against the object's BTF
by tests/test_layout.py)."""
from __future__ import annotations

import struct

# --- layout (checked against the object's BTF by tests/test_layout.py) ---
RECORD_SIZE = 512
EVENT_SIZE = RECORD_SIZE - 8
HDR_SIZE = 152
DATA_LEN = EVENT_SIZE - HDR_SIZE
ANCESTORS = 8
EVENT_FMT = "QQQq4QIHHIIIIII8III16s352s"
# the ring's own 8-byte header (len | BUSY | DISCARD, page offset) + the event
RECORD = struct.Struct("<II" + EVENT_FMT)
EVENT = struct.Struct("<" + EVENT_FMT)
PROC = struct.Struct("<QII8III")  # struct mw_proc
assert RECORD.size == RECORD_SIZE and EVENT.size == EVENT_SIZE

# union mw_args (bpf/mcpwitness.h): the byte offset of each type's named
# fields in the four little-endian u64 words of a record (R_ARG0..+3). The
# decoder's shifts read these places (byte k of word w: w*8+k); the test
# checks the table against the object's BTF.
ARGS = {
    "fork": {"child_pid": 0, "child_start_ns": 8},
    "thread": {"new_tid": 0},
    "wake": {"wakee": 0, "syscall": 8},
    "exec": {"filename_len": 0, "exe_len": 8, "syscall": 13, "argv_len": 16, "argv_cap": 24},
    "open": {"flags": 0, "mode": 8, "dirfd": 16, "path_len": 24, "second_len": 26, "second": 28, "syscall": 29},
    "connect": {"fd": 0, "addr_len": 8, "sock_type": 16, "protocol": 24},
    "io": {"fd": 0, "dir": 4, "kind": 5, "syscall": 6, "stream": 8, "stream2": 16, "cap": 24},
    "sock": {"fd": 0, "dir": 4, "binding": 5, "inode": 8},
    "stdio": {"ino": 0, "dev": 16, "kind": 24, "why": 26},
    "policy": {"check": 0, "action": 1, "mechanism": 2, "access": 3, "policy": 4, "rule": 8, "arg2": 16, "len": 24},
}

# tuple indices in a RECORD tuple
R_HDR, R_TS, R_START, R_CGROUP, R_RET = 0, 2, 3, 4, 5
R_ARG0 = 6
R_TYPE, R_SEQ, R_FLAGS, R_PID, R_TID, R_PPID, R_UID, R_ROOT, R_DEPTH = range(10, 19)
R_ANC = 19
R_DLEN, R_POLICY, R_COMM, R_DATA = 27, 28, 29, 30

EV_FORK, EV_EXEC, EV_EXIT, EV_OPEN, EV_CONNECT, EV_IO, EV_THREAD, EV_POLICY, EV_SOCK, EV_STDIO, EV_WAKE = range(1, 12)
F_LAST, F_TRUNC, F_PATHERR, F_DEPTH, F_UNTRACKED = 0x1, 0x2, 0x4, 0x8, 0x10
SOCKINFO = struct.Struct("<16s16sQQIHHHHIQQIIII")  # struct mw_sockinfo

COUNTERS = [
    "ringbuf_full_events",   # events lost whole
    "ringbuf_full_chunks",   # continuation records lost (event truncated)
    "proc_map_full",         # children that could not be tracked
    "user_read_failures",    # user strings/structs unreadable
    "stale_entries",         # map entries dropped on pid reuse
    "events",                # events emitted
    "forks_tracked",         # children tracked in the kernel
    "threads_created",       # threads created in tracked processes
    "io_skipped",            # reads/writes not sent: the stream is not JSON
    "io_truncated",          # reads/writes cut at io_max
    "watch_found",           # watch mode: processes the kernel started tracking
    "policy_checks",         # actions checked against a policy
    "policy_denied",         # refused with an errno
    "policy_killed",         # stopped with SIGKILL (fallback)
    "policy_monitor",        # monitor mode: would have been refused
    "policy_kill_failed",    # bpf_send_signal failed: the action went on
    "port_matched",          # port filter: payload syscalls of untracked processes on a watched port
    "tls_calls",             # SSL_read/SSL_write calls captured
    "tls_unbound",           # ... whose socket was not known yet
    "compat_syscalls",       # 32-bit syscalls of tracked processes: not decoded
    "uring_direct_opens",    # io_uring opens into a direct descriptor (no fd): not named
]

POLICY_CHECKS = {1: "connect", 2: "sendmsg", 3: "open", 4: "exec"}
POLICY_ACTIONS = {1: "denied", 2: "killed", 3: "monitor", 4: "kill_failed"}
POLICY_MECHANISMS = {
    1: "cgroup/connect4", 2: "cgroup/connect6", 3: "cgroup/sendmsg4", 4: "cgroup/sendmsg6",
    5: "lsm/file_open", 6: "lsm/bprm_check_security", 7: "lsm/socket_connect",
    8: "SIGKILL at sys_exit_open* (fallback)", 9: "SIGKILL at sched_process_exec (fallback)",
    10: "userspace, after the connect (this kernel has no cgroup/connect_unix)",
    11: "cgroup/connect_unix", 12: "lsm/path_mknod",
}
POLICY_OUTCOMES = {
    "denied": "refused before it happened",
    "killed": "the process was killed (SIGKILL) before it could go on; the action itself had happened",
    "monitor": "allowed: the policy is in monitor mode",
    "kill_failed": "NOT stopped: the kernel refused to send SIGKILL (counted as policy_kill_failed)",
}
POLICY_ACCESS = ((1, "read"), (2, "write"), (4, "create"), (8, "exec"))  # connect (0x10) is implied by check

OPEN_SYSCALLS = {0: "openat", 1: "open", 2: "openat2", 3: "creat", 6: "open_by_handle_at", 7: "io_uring"}
CONNECT_SYSCALLS = {0: "connect", 1: "sendto", 2: "sendmsg", 3: "sendmmsg", 4: "io_uring"}
EXEC_SYSCALLS = {4: "execve", 5: "execveat"}
IO_SYSCALLS = {0: "read", 1: "write", 2: "readv", 3: "writev", 4: "recvfrom", 5: "sendto", 6: "recvmsg",
               7: "sendmsg", 8: "SSL_read", 9: "SSL_write", 10: "SSL_read_ex", 11: "SSL_write_ex",
               12: "tls.(*Conn).Read", 13: "tls.(*Conn).Write"}
IO_KINDS = {1: "pipe", 2: "unix", 3: "tcp", 4: "tls", 5: "tty"}
STDIO_KINDS = {0: None, 1: "pipe", 2: "unix", 3: "tcp", 5: "tty", 15: "other"}  # None: the fd is closed
STDIO_WHY = {0: "exec", 1: "found"}
SOCK_BINDINGS = {0: "capture", 1: "inside the SSL call", 2: "next to the SSL call on its thread", 3: "closed",
                 4: "freed", 5: "look"}


