/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * mcpwitness.h: the only contract between the kernel programs and userspace.
 *
 * Every record in the ring buffer is one struct mw_event of exactly
 * MW_EVENT_SIZE bytes (MW_RECORD_SIZE with the ring's 8-byte header), so
 * userspace can decode a whole batch with one struct.iter_unpack call.
 * An event whose data does not fit in one record continues in records with
 * the same (tid, ts_ns), seq 1, 2, ...; the last record carries MW_F_LAST.
 *
 * src/mcpwitness/events.py mirrors this layout; tests/test_layout.py checks
 * the mirror against the BTF of the compiled object.
 */
#ifndef MCPWITNESS_H
#define MCPWITNESS_H

#define MW_RECORD_SIZE 512
#define MW_EVENT_SIZE (MW_RECORD_SIZE - 8)
#define MW_HDR_SIZE 152
#define MW_DATA_LEN (MW_EVENT_SIZE - MW_HDR_SIZE) /* 352 */
#define MW_ANCESTORS 8
#define MW_COMM_LEN 16

#define MW_PATH_MAX 4096
#define MW_ARGV_MAX 16384
/* compose area: two paths and an argv, padded so the last chunk copy stays inside */
#define MW_COMPOSE_MAX (2 * MW_PATH_MAX + MW_ARGV_MAX)
#define MW_MAX_CHUNKS ((MW_COMPOSE_MAX + MW_DATA_LEN - 1) / MW_DATA_LEN)
#define MW_COMPOSE_SIZE (MW_MAX_CHUNKS * MW_DATA_LEN)

enum mw_event_type {
	MW_EV_FORK = 1,    /* args: [0]=child tgid [1]=child start_boottime */
	MW_EV_EXEC = 2,    /* ret: 0 or -errno; args: [0]=len filename [1]=len exe [2]=argv real len [3]=argv captured len */
	MW_EV_EXIT = 3,    /* ret: raw wait status (exit code << 8 | signal) */
	MW_EV_OPEN = 4,    /* ret: fd or -errno; args: [0]=flags [1]=mode [2]=dirfd [3]=lens (see MW_OPEN_*) */
	MW_EV_CONNECT = 5, /* ret: 0 or -errno; args: [0]=fd | MW_CONN_* << 32 [1]=addrlen [2]=sock type [3]=protocol;
			    * data: sockaddr */
	MW_EV_IO = 6,      /* ret: bytes moved; args: [0]=fd | dir << 32 | kind << 40 | syscall << 48
			    * [1]=inode [2]=device [3]=bytes captured; data: the bytes, in order */
	MW_EV_THREAD = 7,  /* a tracked process created a thread; tid = the creating thread; args: [0]=new tid */
	MW_EV_POLICY = 8,  /* a policy refused (or, in monitor mode, would have refused) an action:
			    * ret: -errno the caller saw (0: allowed, or killed: see action)
			    * args: [0]=what | action << 8 | mechanism << 16 | access << 24 | slot << 32
			    * [1]=rule id [2]=port | family << 16 (network) or open flags (files)
			    * [3]=data length; data: the path (a Unix socket's too: '@' starts
			    * an abstract name), or the 16 address bytes */
	MW_EV_SOCK = 9,    /* the endpoints of a TCP connection (or the peer of a Unix socket) whose bytes
			    * are captured (sent once per direction, before its first captured bytes), or the socket a TLS stream
			    * was tied to: args: [0]=fd | dir << 32 | how << 40 (MW_SB_*) [1]=socket inode
			    * data: struct mw_sockinfo */
	MW_EV_STDIO = 10,  /* what a tracked process's fd 0 and fd 1 are, at its exec or when watch mode
			    * found it: args: [0]=fd 0's inode [1]=fd 1's inode [2]=fd 0's device | fd 1's << 32
			    * [3]=fd 0's kind | fd 1's kind << 8 (MW_KIND_*; 0: closed, MW_KIND_OTHER: a file,
			    * /dev/null, ...) | why << 16 (MW_STDIO_*); data: two __u64, the inode of each
			    * one's connected peer when it is a Unix socket (0: none) */
	MW_EV_WAKE = 11,   /* --wakeup-evidence: a thread of a tracked process woke another thread of the
			    * same process from a futex or write syscall (a hand-off to a pool or worker
			    * thread); tid = the waker; args: [0]=the woken thread's tid [1]=the waker's
			    * syscall number */
};

/* MW_EV_STDIO: when the record was sent */
#define MW_STDIO_EXEC 0  /* the process exec'd */
#define MW_STDIO_FOUND 1 /* watch mode: the kernel started tracking it */

/* MW_EV_SOCK: why the record was sent */
#define MW_SB_CAPTURE 0 /* a TCP stream's first captured bytes */
#define MW_SB_TLS_IN 1  /* TLS: the socket was used inside an SSL_* call (the library owns the fd) */
#define MW_SB_TLS_NEAR 2 /* TLS: the socket's TLS records and the SSL_* call met on one thread, back to back
			  * (memory BIOs, as Python's asyncio and most event loops use) */
#define MW_SB_CLOSED 3   /* a captured connection reached TCP_CLOSE: args[1] = its socket inode */
#define MW_SB_TLS_FREED 4 /* TLS: the SSL object (sock.ssl) was freed: its stream ended */
#define MW_SB_TLS_LOOK 5  /* port filter: an untracked process ran a binary not seen before, or first used
			   * a watched port: look at its executable and mappings for a TLS library */

struct mw_sockinfo {
	__u8 laddr[16]; /* IPv4: the first 4 bytes */
	__u8 raddr[16];
	__u64 cookie;       /* socket cookie (0: none was ever asked for) */
	__u64 netns_cookie; /* the socket's network namespace */
	__u32 netns_ino;    /* its inode (as /proc/PID/ns/net shows it) */
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u16 unix_named; /* AF_UNIX: 1: this end is bound to a name, 2: its peer is (neither: a socketpair) */
	__u32 _pad2;
	__u64 ssl; /* MW_SB_TLS_*: the SSL object */
	__u64 peer_ino; /* AF_UNIX: the inode of the connected peer's socket (0: none) */
	/* AF_UNIX with a peer: what SO_PEERCRED would tell this end: the peer process at
	 * connect() or socketpair() time (its pid in the initial PID namespace), its euid and egid */
	__u32 peer_pid;
	__u32 peer_uid;
	__u32 peer_gid;
	__u32 _pad3;
};

/* MW_EV_POLICY: what was checked, what was done, by which mechanism */
#define MW_PW_CONNECT 1
#define MW_PW_SENDMSG 2
#define MW_PW_OPEN 3
#define MW_PW_EXEC 4
#define MW_PA_DENIED 1  /* refused: the syscall failed with ret */
#define MW_PA_KILLED 2  /* the kernel offered no refusal here: SIGKILL before the process ran on */
#define MW_PA_MONITOR 3 /* monitor mode: allowed, reported */
#define MW_PA_KILL_FAILED 4 /* bpf_send_signal failed: the process went on */
#define MW_PM_CGROUP_CONNECT4 1
#define MW_PM_CGROUP_CONNECT6 2
#define MW_PM_CGROUP_SENDMSG4 3
#define MW_PM_CGROUP_SENDMSG6 4
#define MW_PM_LSM_FILE_OPEN 5
#define MW_PM_LSM_BPRM_CHECK 6
#define MW_PM_LSM_SOCKET_CONNECT 7
#define MW_PM_KILL_OPEN 8  /* bpf_send_signal(SIGKILL) at sys_exit of open* */
#define MW_PM_KILL_EXEC 9  /* bpf_send_signal(SIGKILL) at sched_process_exec */
#define MW_PM_CGROUP_CONNECT_UNIX 11
#define MW_PM_LSM_PATH_MKNOD 12 /* a new file's creation (open O_CREAT, mknod) */
/* access bits (files and execs) */
#define MW_ACC_READ 0x1
#define MW_ACC_WRITE 0x2
#define MW_ACC_CREATE 0x4
#define MW_ACC_EXEC 0x8
#define MW_ACC_CONNECT 0x10 /* a Unix socket path (network rules unix:...) */
#define MW_ACC_BITS 5

/* ---- policy maps, written by userspace (policy.py) -------------------
 * Every key carries a scope = generation * MW_MAX_POLICIES + policy slot.
 * A reload writes the whole new rule set under the inactive generation,
 * then flips policy_gen[0]: one 4-byte store switches every rule at once,
 * and no check ever runs against a half-written set. */
#define MW_MAX_POLICIES 256
#define MW_MODE_OFF 0
#define MW_MODE_MONITOR 1
#define MW_MODE_ENFORCE 2

struct mw_policy {
	__u32 mode;
	__u32 net_default;  /* rule id of the default-deny verdict; 0: allow by default */
	__u32 file_default;
	__u32 exec_default;
};

/* network rules: LPM trie over (scope << 1 | v6, address) */
#define MW_NET_RULES 16
#define MW_RULE_DENY 0x80000000u
struct mw_nkey {
	__u32 prefixlen; /* 32 + address bits */
	__u32 scope;     /* scope << 1 | is_v6 */
	__u8 addr[16];
};
struct mw_port_rule {
	__u16 lo;
	__u16 hi;
	__u32 rule; /* rule id | MW_RULE_DENY */
};
/* every rule that applies to the prefix, its own and its enclosing
 * prefixes', most specific first: the first whose ports match decides */
struct mw_net_rules {
	__u32 n;
	__u32 _pad;
	struct mw_port_rule r[MW_NET_RULES];
};

/* file, exec and Unix socket path rules: LPM trie over (scope, path bytes). An exact path is
 * stored with its terminating NUL, a subtree as "dir/" without one; the
 * value is, per access bit, the verdict of the most specific rule that
 * names that access (userspace folds enclosing rules in). */
#define MW_PKEY_PATH 248
struct mw_pkey {
	__u32 prefixlen; /* 32 + path bits */
	__u32 scope;
	__u8 path[MW_PKEY_PATH];
};
struct mw_path_rule {
	__u8 allow; /* MW_ACC_* bits */
	__u8 deny;
	__u16 _pad;
	__u32 rule[MW_ACC_BITS]; /* rule id per access bit: read, write, create, exec, connect */
};

/* exec rules by bare name (the executable's basename, whatever its directory) */
#define MW_NAME_LEN 60
struct mw_nmkey {
	__u32 scope;
	__u8 name[MW_NAME_LEN];
};
struct mw_name_rule {
	__u32 rule;
	__u32 deny;
};

/* MW_EV_IO: direction, kind of file behind the fd, syscall */
#define MW_IO_READ 0
#define MW_IO_WRITE 1
#define MW_KIND_PIPE 1
#define MW_KIND_UNIX 2
#define MW_KIND_TCP 3
#define MW_KIND_TLS 4 /* plaintext at SSL_read/SSL_write: args[1] = the SSL object, args[2] = its socket's inode (0: not known yet) */
#define MW_KIND_TTY 5 /* a pseudo-terminal's slave end (/dev/pts/N): a server whose stdio is a pty */
#define MW_KIND_OTHER 15 /* MW_EV_STDIO only: an open fd that is none of the above */
#define MW_IOSYS_READ 0
#define MW_IOSYS_WRITE 1
#define MW_IOSYS_READV 2
#define MW_IOSYS_WRITEV 3
#define MW_IOSYS_RECVFROM 4
#define MW_IOSYS_SENDTO 5
#define MW_IOSYS_RECVMSG 6
#define MW_IOSYS_SENDMSG 7
#define MW_IOSYS_SSL_READ 8
#define MW_IOSYS_SSL_WRITE 9
#define MW_IOSYS_SSL_READ_EX 10
#define MW_IOSYS_SSL_WRITE_EX 11
#define MW_IOSYS_GO_READ 12  /* Go crypto/tls: (*Conn).Read */
#define MW_IOSYS_GO_WRITE 13 /* (*Conn).Write */

/* In-kernel classification of a byte stream (one direction of one pipe or
 * socket): JSON once its first bytes look like a JSON value, from then on
 * everything is sent; OTHER after MW_NONJSON_GIVEUP chunks that do not. */
struct mw_stream_key {
	__u64 ino;
	__u32 dev;
	__u32 dir;
};

struct mw_stream {
	__u32 state;
	__u32 nonjson;
};

#define MW_S_UNKNOWN 0
#define MW_S_JSON 1
#define MW_S_OTHER 2
#define MW_NONJSON_GIVEUP 8

/* record flags */
#define MW_F_LAST 0x1     /* last record of this event */
#define MW_F_TRUNC 0x2    /* data was cut short (lengths in args say by how much) */
#define MW_F_PATHERR 0x4  /* a user string could not be read */
#define MW_F_DEPTH 0x8    /* ancestry deeper than MW_ANCESTORS: the rest is in userspace's table */
#define MW_F_UNTRACKED 0x10 /* captured by the port filter: the process is not tracked */

/* MW_EV_OPEN args.open.second: what the second path in data is */
#define MW_OPEN_SECOND_NONE 0
#define MW_OPEN_SECOND_RESOLVED 1 /* the opened file's absolute path */
#define MW_OPEN_SECOND_BASEDIR 2  /* failed relative open: the directory it was relative to */

/* the syscall behind an open or exec event (args.open.syscall, args.exec.syscall) */
#define MW_SYS_OPENAT 0
#define MW_SYS_OPEN 1
#define MW_SYS_OPENAT2 2
#define MW_SYS_CREAT 3
#define MW_SYS_EXECVE 4
#define MW_SYS_EXECVEAT 5
#define MW_SYS_OPEN_BY_HANDLE_AT 6 /* opens: no path was passed (a file handle) */
#define MW_SYS_IO_URING 7          /* opens and connects completed by io_uring: no syscall of their own */

/* the syscall behind a connect event (args.connect.fd >> 32): a connect, or the
 * first datagram a socket sent to an address (sendto/sendmsg/sendmmsg with one) */
#define MW_CONN_CONNECT 0
#define MW_CONN_SENDTO 1
#define MW_CONN_SENDMSG 2
#define MW_CONN_SENDMMSG 3
#define MW_CONN_IO_URING 4

/* The per-type part of an event: 32 bytes, one named struct per type. Every
 * member is laid out so that the four little-endian __u64 words userspace
 * unpacks (kernel/abi.py: EVENT_FMT's "4Q") hold the same bits as before:
 * the layout is checked against this object's BTF by tests/test_layout.py. */
union mw_args {
	__u64 raw[4];
	struct { /* MW_EV_FORK */
		__u64 child_pid;
		__u64 child_start_ns;
	} fork;
	struct { /* MW_EV_THREAD */
		__u64 new_tid;
	} thread;
	struct { /* MW_EV_WAKE */
		__u64 wakee;
		__u64 syscall;
	} wake;
	struct { /* MW_EV_EXEC: data = filename, exe, argv (NUL-separated) */
		__u64 filename_len;
		__u32 exe_len;
		__u8 _pad0;
		__u8 syscall; /* failed execs: MW_SYS_EXECVE or MW_SYS_EXECVEAT */
		__u16 _pad1;
		__u64 argv_len; /* what the process passed */
		__u64 argv_cap; /* what was captured */
	} exec;
	struct { /* MW_EV_OPEN: data = requested path, second path */
		__u64 flags;
		__u64 mode;
		__s64 dirfd;
		__u16 path_len;
		__u16 second_len;
		__u8 second; /* MW_OPEN_SECOND_* */
		__u8 syscall; /* MW_SYS_* */
		__u16 _pad;
	} open;
	struct { /* MW_EV_CONNECT: data = the sockaddr */
		__u64 fd;
		__u64 addr_len;
		__u64 sock_type;
		__u64 protocol;
	} connect;
	struct { /* MW_EV_IO: data = the bytes */
		__u32 fd;
		__u8 dir; /* 0 read, 1 write */
		__u8 kind; /* MW_KIND_* */
		__u8 syscall; /* MW_IO_* */
		__u8 _pad;
		__u64 stream; /* pipe or socket inode; TLS: the SSL object */
		__u64 stream2; /* TLS: its socket's inode (0: not known yet); else the device */
		__u64 cap; /* bytes captured */
	} io;
	struct { /* MW_EV_SOCK: data = struct mw_sockinfo */
		__u32 fd;
		__u8 dir;
		__u8 binding; /* MW_SB_* */
		__u16 _pad;
		__u64 inode;
	} sock;
	struct { /* MW_EV_STDIO: data = the two peers' inodes (__u64 each) */
		__u64 ino[2]; /* fd 0, fd 1 */
		__u32 dev[2];
		__u8 kind[2]; /* MW_KIND_*: 0 closed */
		__u8 why; /* MW_STDIO_* */
	} stdio;
	struct { /* MW_EV_POLICY: data = the path, or the address */
		__u8 check; /* MW_PW_* */
		__u8 action; /* MW_PA_* */
		__u8 mechanism; /* MW_PM_* */
		__u8 access; /* MW_ACC_* */
		__u16 policy; /* the policy's slot */
		__u16 _pad;
		__u64 rule;
		__u64 arg2; /* open flags, or family << 16 | port */
		__u64 len;
	} policy;
};

struct mw_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 start_ns;  /* process identity: group leader's start_boottime */
	__u64 cgroup_id; /* cgroup v2 id */
	__s64 ret;
	union mw_args args;
	__u32 type;
	__u16 seq;
	__u16 flags;
	__u32 pid;  /* tgid */
	__u32 tid;
	__u32 ppid; /* real parent's tgid now (after reparenting: the reaper) */
	__u32 uid;
	__u32 root;  /* tgid of the tracked root this process descends from */
	__u32 depth; /* fork generations below the root */
	__u32 ancestors[MW_ANCESTORS]; /* fork lineage: [0] = the tracked parent, ... */
	__u32 data_len;
	__u32 policy; /* the process's policy slot (0: none) */
	char comm[MW_COMM_LEN];
	__u8 data[MW_DATA_LEN];
};

/* value of the tracked-process map, keyed by tgid */
struct mw_proc {
	__u64 start_ns; /* start_boottime; in clock ticks * 10^7 when MW_P_TICKS */
	__u32 root;
	__u32 depth;
	__u32 ancestors[MW_ANCESTORS];
	__u32 flags;
	__u32 policy; /* policy slot (0: none), inherited by children */
};

#define MW_P_TICKS 0x1 /* seeded from /proc: start_ns only known to 1/USER_HZ */
#define MW_P_WATCHED 0x2 /* tracked by the kernel itself: it read a JSON-RPC request (watch mode) */
#define MW_P_UNTRACKED 0x4 /* a stand-in for a process the port filter captures without tracking */
#define MW_P_PORT_SERVER 0x8 /* ... on its local port: tracked once its stream proves HTTP or JSON */
#define MW_NSEC_PER_TICK 10000000ULL /* USER_HZ = 100 on every Linux ABI */

/* per-CPU counters, index into the counters map */
enum mw_counter {
	MW_C_RB_FULL = 0,      /* events lost whole: ring buffer reservation failed */
	MW_C_RB_FULL_CHUNK,    /* continuation records lost: event arrives truncated */
	MW_C_PROC_MAP_FULL,    /* a child could not be tracked: process map full */
	MW_C_USER_READ_FAIL,   /* a user string or struct could not be read */
	MW_C_STALE_ENTRY,      /* map entry whose identity did not match (pid reuse) */
	MW_C_EVENTS,           /* events emitted (first records) */
	MW_C_FORKS,            /* tracked children added in the kernel */
	MW_C_THREADS,          /* threads created in tracked processes */
	MW_C_IO_SKIPPED,       /* reads/writes not sent: the stream is not JSON */
	MW_C_IO_TRUNC,         /* reads/writes cut at io_max (real length kept) */
	MW_C_WATCH_FOUND,      /* watch mode: processes the kernel started tracking */
	MW_C_POLICY_CHECKS,    /* actions checked against a policy */
	MW_C_POLICY_DENIED,    /* refused with an errno */
	MW_C_POLICY_KILLED,    /* stopped with SIGKILL (fallback) */
	MW_C_POLICY_MONITOR,   /* monitor mode: would have been refused */
	MW_C_POLICY_KILL_FAIL, /* bpf_send_signal failed: the action went on */
	MW_C_PORT_MATCHED,     /* port filter: payload syscalls of untracked processes on a watched port */
	MW_C_TLS_CALLS,        /* SSL_read/SSL_write calls captured */
	MW_C_TLS_UNBOUND,      /* ... whose socket was not known yet */
	MW_C_COMPAT_SYSCALL,   /* 32-bit syscalls of tracked processes: not decoded */
	MW_C_URING_DIRECT,     /* io_uring opens into a direct descriptor: not named */
	MW_C_MAX,
};

/* set by userspace before load (.rodata) */
struct mw_config {
	__u32 argv_max; /* bytes of argv captured per exec, <= MW_ARGV_MAX */
	__u32 watch;    /* discover servers: track untracked processes that read a JSON-RPC request */
	__u32 lsm;      /* MW_LSM_* bits: which checks the LSM programs make (the fallbacks stand aside) */
	__u32 ports;    /* number of ports in the `ports` map: capture TCP on them for any process */
};
#define MW_LSM_FILES 0x1
#define MW_LSM_EXEC 0x2
#define MW_LSM_NET 0x4
#define MW_CG_UNIX 0x8 /* cgroup/connect_unix is attached: Unix paths are checked in the kernel */
/* The payload limit per read/write syscall is not in .rodata but in the
 * one-entry array map `iolimit`, written by userspace after load: a value
 * the verifier cannot see lets it converge on the capture loop (with a
 * frozen constant it simulates every chunk of a 16 MiB write and gives up). */

#endif
