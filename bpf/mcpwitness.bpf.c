// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * mcpwitness kernel side: follow tracked process trees and report their
 * forks, execs, exits, file opens and connects.
 *
 * Hooks:
 *   tp_btf/sched_process_{fork,exec,exit}  process tree, in the kernel
 *   fexit/__x64_sys_*, or tp_btf/sys_exit, or tracepoint/syscalls/sys_exit_*
 *                                          opens, connects, failed execs, payload
 *   cgroup/connect4/6, sendmsg4/6, lsm     policy checks (enforce.bpf.h)
 * Syscall arguments are read at sys_exit from the task's saved user
 * registers: one hook per syscall instead of an enter/exit pair, and user
 * strings are read after the kernel itself faulted them in.
 *
 * Untracked processes pay one hash lookup (procs, by tgid) per hook.
 */
#include "common.bpf.h"
#include "enforce.bpf.h"
#include "payload.bpf.h"
#include "tls.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ------------------------------------------------------------------ */
/* process tree                                                        */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(mw_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	struct mw_proc *pp = lookup_tracked(parent, ptgid);
	if (!pp)
		return 0;
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (BPF_CORE_READ(child, pid) != ctgid) {
		/* attribution needs to know which thread started which (a server
		 * that starts a thread per request) */
		count(MW_C_THREADS);
		struct mw_scratch *t = begin(MW_EV_THREAD, pp, parent, 0);
		if (t) {
			t->ev.args.thread.new_tid = BPF_CORE_READ(child, pid);
			emit(t, 0);
		}
		return 0;
	}
	struct mw_proc c = {};
	c.start_ns = BPF_CORE_READ(child, start_boottime);
	c.root = pp->root;
	c.depth = pp->depth + 1;
	c.ancestors[0] = ptgid;
	c.policy = pp->policy;
#pragma unroll
	for (int i = 1; i < MW_ANCESTORS; i++)
		c.ancestors[i] = pp->ancestors[i - 1];
	if (bpf_map_update_elem(&procs, &ctgid, &c, BPF_ANY))
		count(MW_C_PROC_MAP_FULL);
	else
		count(MW_C_FORKS);

	struct mw_scratch *s = begin(MW_EV_FORK, pp, parent, 0);
	if (!s)
		return 0;
	s->ev.args.fork.child_pid = ctgid;
	s->ev.args.fork.child_start_ns = c.start_ns;
	emit(s, 0);
	return 0;
}


/* Hand-offs between the threads of a tracked process, for attribution's wake-up
 * evidence (off unless --wakeup-evidence: sched_waking runs for every wake-up on
 * the machine). Only a wake made from a futex or write-family syscall counts: a
 * wake-up from interrupt context (an expired timer) runs on whatever task the
 * interrupt hit, and must not look like that task handing work over. Written
 * straight into the ring, not through the per-CPU scratch buffer, because this
 * can run nested inside another program's event on the same CPU. */
SEC("tp_btf/sched_waking")
int BPF_PROG(mw_waking, struct task_struct *p)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32;
	if (BPF_CORE_READ(p, tgid) != tgid)
		return 0;
	__u32 wakee = BPF_CORE_READ(p, pid);
	if (wakee == (__u32)pt)
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	struct mw_proc *pp = lookup_tracked(cur, tgid);
	if (!pp)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(cur);
	long nr = BPF_CORE_READ(regs, orig_ax);
	/* x86-64: futex, futex_waitv, write, writev, pwrite64, pwritev, pwritev2, sendto, sendmsg */
	if (nr != 202 && nr != 449 && nr != 1 && nr != 20 && nr != 18 && nr != 296 && nr != 328 && nr != 44 &&
	    nr != 46)
		return 0;
	struct mw_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(MW_C_RB_FULL);
		return 0;
	}
	__builtin_memset(e, 0, MW_HDR_SIZE);
	e->ts_ns = bpf_ktime_get_ns();
	e->start_ns = pp->start_ns;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->type = MW_EV_WAKE;
	e->flags = MW_F_LAST | (pp->depth > MW_ANCESTORS ? MW_F_DEPTH : 0);
	e->pid = tgid;
	e->tid = (__u32)pt;
	e->ppid = BPF_CORE_READ(cur, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->root = pp->root;
	e->depth = pp->depth;
#pragma unroll
	for (int i = 0; i < MW_ANCESTORS; i++)
		e->ancestors[i] = pp->ancestors[i];
	e->policy = pp->policy;
	e->args.wake.wakee = wakee;
	e->args.wake.syscall = nr;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	count(MW_C_EVENTS);
	return 0;
}


SEC("tp_btf/sched_process_exec")
int BPF_PROG(mw_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct mw_proc *p = lookup_tracked(task, tgid);
	if (!p) {
		if (cfg.ports)
			tls_look_exec(task, bprm);
		return 0;
	}
	struct mw_scratch *s = begin(MW_EV_EXEC, p, task, 0);
	if (!s)
		return 0;

	long n = bpf_probe_read_kernel_str(s->buf, MW_PATH_MAX, BPF_CORE_READ(bprm, filename));
	__u32 n1 = n > 0 ? n - 1 : 0;
	int trunc = 0;
	struct file *f = BPF_CORE_READ(bprm, file);
	__u32 n2 = append_path(s, n1, __builtin_preserve_access_index(&f->f_path), &trunc);

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long a0 = BPF_CORE_READ(mm, arg_start);
	unsigned long a1 = BPF_CORE_READ(mm, arg_end);
	__u64 alen = a1 > a0 ? a1 - a0 : 0;
	__u64 cap = alen;
	__u32 pos = n1 + n2;
	if (cap > cfg.argv_max)
		cap = cfg.argv_max;
	if (cap > MW_ARGV_MAX)
		cap = MW_ARGV_MAX;
	pos &= 2 * MW_PATH_MAX - 1; /* n1, n2 < MW_PATH_MAX: a no-op the verifier needs */
	if (cap && bpf_probe_read_user(&s->buf[pos], cap, (void *)a0))
		cap = 0;
	if (trunc || cap < alen)
		s->ev.flags |= MW_F_TRUNC;
	s->ev.args.exec.filename_len = n1;
	s->ev.args.exec.exe_len = n2;
	s->ev.args.exec.argv_len = alen;
	s->ev.args.exec.argv_cap = cap;
	emit(s, pos + cap);
	/* the fallback judges the path still in the scratch buffer: before
	 * emit_stdio, which reuses that buffer */
	if (p->policy && !(cfg.lsm & MW_LSM_EXEC))
		path_fallback(p, task, s, n1, n2, MW_ACC_EXEC, BPF_CORE_READ(bprm, file, f_path.dentry),
			      MW_PW_EXEC, MW_PM_KILL_EXEC, 0);
	emit_stdio(p, task, MW_STDIO_EXEC);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(mw_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct mw_proc *p = lookup_tracked(task, tgid);
	if (!p)
		return 0;
	/* only the last thread of the group ends the process */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	int code = BPF_CORE_READ(task, exit_code);
	if (BPF_CORE_READ(task, signal, flags) & 0x4 /* SIGNAL_GROUP_EXIT */)
		code = BPF_CORE_READ(task, signal, group_exit_code);
	struct mw_scratch *s = begin(MW_EV_EXIT, p, task, code);
	if (s)
		emit(s, 0);
	bpf_map_delete_elem(&procs, &tgid);
	return 0;
}

/* ------------------------------------------------------------------ */
/* file opens                                                          */


static __always_inline int handle_open(struct mw_proc *p, long ret, long dirfd, const char *upath,
				       __u64 flags, __u64 mode, __u64 sys)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mw_scratch *s = begin(MW_EV_OPEN, p, task, ret);
	if (!s)
		return 0;

	__u32 n1 = 0;
	if (upath) { /* none for a file handle */
		long n = bpf_probe_read_user_str(s->buf, MW_PATH_MAX, upath);
		if (n > 0) {
			n1 = n - 1;
		} else {
			s->ev.flags |= MW_F_PATHERR;
			count(MW_C_USER_READ_FAIL);
		}
	}

	__u64 kind = MW_OPEN_SECOND_NONE;
	__u32 n2 = 0;
	int trunc = 0;
	if (ret >= 0) {
		struct file *f = fd_file(task, ret);
		if (f) {
			n2 = append_path(s, n1, __builtin_preserve_access_index(&f->f_path), &trunc);
			kind = MW_OPEN_SECOND_RESOLVED;
		}
	} else if (n1 > 0 && s->buf[0] != '/') {
		if (dirfd == AT_FDCWD) {
			struct fs_struct *fs = BPF_CORE_READ(task, fs);
			n2 = append_path(s, n1, __builtin_preserve_access_index(&fs->pwd), &trunc);
			kind = MW_OPEN_SECOND_BASEDIR;
		} else {
			struct file *f = fd_file(task, dirfd);
			if (f) {
				n2 = append_path(s, n1, __builtin_preserve_access_index(&f->f_path), &trunc);
				kind = MW_OPEN_SECOND_BASEDIR;
			}
		}
	}
	if (trunc)
		s->ev.flags |= MW_F_TRUNC;
	s->ev.args.open.flags = flags;
	s->ev.args.open.mode = mode;
	s->ev.args.open.dirfd = dirfd;
	s->ev.args.open.path_len = n1;
	s->ev.args.open.second_len = n2;
	s->ev.args.open.second = kind;
	s->ev.args.open.syscall = sys;
	emit(s, n1 + n2);
	if (kind == MW_OPEN_SECOND_RESOLVED && p->policy && !(cfg.lsm & MW_LSM_FILES))
		path_fallback(p, task, s, n1, n2, open_access(flags), NULL, MW_PW_OPEN, MW_PM_KILL_OPEN, flags);
	return 0;
}

/* The syscall handlers below take the saved user registers (the syscall's
 * arguments) and its return value; the three hook sets at the end of this file
 * call them. Each leaves an untracked process after one lookup. */
static __always_inline int on_openat(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	return handle_open(p, ret, (int)MW_ARG1(r), (const char *)MW_ARG2(r), (__u32)MW_ARG3(r),
			   (__u32)MW_ARG4(r), MW_SYS_OPENAT);
}

static __always_inline int on_open(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	return handle_open(p, ret, AT_FDCWD, (const char *)MW_ARG1(r), (__u32)MW_ARG2(r),
			   (__u32)MW_ARG3(r), MW_SYS_OPEN);
}

static __always_inline int on_creat(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	/* creat(p, m) == open(p, O_CREAT|O_WRONLY|O_TRUNC, m) */
	return handle_open(p, ret, AT_FDCWD, (const char *)MW_ARG1(r), 0x241, (__u32)MW_ARG2(r),
			   MW_SYS_CREAT);
}

static __always_inline int on_openat2(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)MW_ARG3(r));
	return handle_open(p, ret, (int)MW_ARG1(r), (const char *)MW_ARG2(r), how.flags, how.mode,
			   MW_SYS_OPENAT2);
}

/* open_by_handle_at(mount_fd, handle, flags): no path, only the file it opened */
static __always_inline int on_open_by_handle_at(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	return handle_open(p, ret, (int)MW_ARG1(r), NULL, (__u32)MW_ARG3(r), 0, MW_SYS_OPEN_BY_HANDLE_AT);
}

/* ------------------------------------------------------------------ */
/* failed execs (successful ones are reported by sched_process_exec)   */

static __always_inline int handle_exec_fail(struct mw_proc *p, long ret, const char *ufile, __u64 sys)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mw_scratch *s = begin(MW_EV_EXEC, p, task, ret);
	if (!s)
		return 0;
	long n = bpf_probe_read_user_str(s->buf, MW_PATH_MAX, ufile);
	__u32 n1 = n > 0 ? n - 1 : 0;
	if (n <= 0) {
		s->ev.flags |= MW_F_PATHERR;
		count(MW_C_USER_READ_FAIL);
	}
	s->ev.args.exec.filename_len = n1;
	s->ev.args.exec.syscall = sys;
	emit(s, n1);
	return 0;
}

/* after a successful exec the registers are the new program's: only a
 * failed one is looked at here */
static __always_inline int on_execve(struct pt_regs *r, long ret)
{
	struct mw_proc *p = ret < 0 ? current_tracked() : NULL;
	if (!p)
		return 0;
	return handle_exec_fail(p, ret, (const char *)MW_ARG1(r), MW_SYS_EXECVE);
}

static __always_inline int on_execveat(struct pt_regs *r, long ret)
{
	struct mw_proc *p = ret < 0 ? current_tracked() : NULL;
	if (!p)
		return 0;
	return handle_exec_fail(p, ret, (const char *)MW_ARG2(r), MW_SYS_EXECVEAT);
}

/* ------------------------------------------------------------------ */
/* connects                                                            */

/* A connect event: the address the process passed (uaddr: user memory).
 * how: MW_CONN_*. */
static __always_inline int emit_connect(struct mw_proc *p, struct task_struct *task, long ret, long fd,
					 struct file *f, const void *uaddr, __u32 alen, __u32 how)
{
	struct mw_scratch *s = begin(MW_EV_CONNECT, p, task, ret);
	if (!s)
		return 0;
	__u64 n = alen > 128 ? 128 : alen;
	asm volatile("%[n] &= 255" : [n] "+r"(n)); /* (a bound the verifier keeps whatever the caller) */
	if (n && bpf_probe_read_user(s->buf, n, uaddr)) {
		n = 0;
		s->ev.flags |= MW_F_PATHERR;
		count(MW_C_USER_READ_FAIL);
	}
	s->ev.args.connect.fd = (__u32)fd | (__u64)how << 32;
	s->ev.args.connect.addr_len = alen;
	struct socket *sock = f ? BPF_CORE_READ(f, private_data) : NULL;
	if (sock) {
		struct sock *sk = BPF_CORE_READ(sock, sk);
		s->ev.args.connect.sock_type = BPF_CORE_READ(sock, type);
		if (sk)
			s->ev.args.connect.protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	}
	emit(s, n);
	return 0;
}

static __always_inline int on_connect(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	long fd = (int)MW_ARG1(r);
	struct file *f = ret != -EBADF && ret != -ENOTSOCK ? fd_file(task, fd) : NULL;
	return emit_connect(p, task, ret, fd, f, (void *)MW_ARG2(r), (__u32)MW_ARG3(r), MW_CONN_CONNECT);
}

/* Datagrams sent to an address without a connect (UDP, raw and packet
 * sockets, Unix datagrams): the first one each socket sends to each address
 * is reported as a connect event. The key: the socket's inode (never reused
 * soon, unlike a struct file's address) and the address's first 28 bytes. */
struct dgram_key {
	__u64 ino;
	__u8 addr[28];
	__u32 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dgram_key);
	__type(value, __u8);
} dgram_dests SEC(".maps");

/* (global functions, as mw_io_exit: checked once, and their stack is not
 * the caller's) */
__noinline int mw_sent_to(long ret, long fd, __u64 uaddr, __u64 alen, __u64 how)
{
	if (!uaddr || !alen || ret == -EBADF || ret == -ENOTSOCK)
		return 0;
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *f = fd_file(task, fd);
	struct socket *sock = f ? BPF_CORE_READ(f, private_data) : NULL;
	if (!sock || BPF_CORE_READ(sock, type) == 1 /* SOCK_STREAM: the address is ignored */)
		return 0;
	struct dgram_key k = {.ino = BPF_CORE_READ(f, f_inode, i_ino), .tgid = bpf_get_current_pid_tgid() >> 32};
	__u64 n = alen < sizeof(k.addr) ? alen : sizeof(k.addr);
	asm volatile("%[n] &= 31" : [n] "+r"(n)); /* (a bound the verifier keeps: alen is any value here) */
	bpf_probe_read_user(k.addr, n, (void *)uaddr);
	__u8 one = 1;
	if (bpf_map_update_elem(&dgram_dests, &k, &one, BPF_NOEXIST))
		return 0; /* this socket already sent there: reported once */
	emit_connect(p, task, ret, fd, f, (void *)uaddr, (__u32)alen, how);
	return 0;
}

__noinline int mw_sent_msg(long ret, long fd, __u64 umsg, __u64 how)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0; /* untracked: one lookup */
	struct user_msghdr m = {};
	if (!bpf_probe_read_user(&m, sizeof(m), (void *)umsg))
		mw_sent_to(ret, fd, (__u64)m.msg_name, m.msg_namelen, how);
	return 0;
}

/* sendmmsg(fd, vec, vlen, flags): the addresses of its first few messages */
#define MW_MMSG_MAX 4
static __always_inline int on_sendmmsg(struct pt_regs *r, long ret)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct mmsghdr *vec = (struct mmsghdr *)MW_ARG2(r);
	__u32 vlen = (__u32)MW_ARG3(r);
	for (int i = 0; i < MW_MMSG_MAX; i++) {
		if (i >= vlen)
			break;
		mw_sent_msg(ret, (int)MW_ARG1(r), (__u64)&vec[i].msg_hdr, MW_CONN_SENDMMSG);
	}
	return 0;
}

/* Every payload syscall: untracked processes leave after one lookup (in
 * watch mode a read may first make its reader tracked; with a port filter
 * a TCP socket on a watched port is captured), then capture. buf is the
 * buffer, or the iovec array when how has MW_IO_VEC; how also carries the
 * direction (low byte) and the syscall (MW_IO_SYS). A global function, so
 * that the verifier checks it once per program rather than once for every
 * path that leads into it (scalar arguments only, for 5.x): the handlers
 * before it stay small. Returns MW_IO_TCP | the process's flags << 8 for a
 * TCP socket, else 0. */
#define MW_IO_VEC (1ULL << 32)
#define MW_IO_TCP 1
#define MW_IO_SYS(sys) ((__u64)(sys) << 8)
__noinline int mw_io_exit(long ret, long fd, __u64 buf, __u64 iovcnt, __u64 how)
{
	__u32 dir = how & 0xff, sys = (how >> 8) & 0xffff;
	__u64 ubuf = how & MW_IO_VEC ? 0 : buf;
	const struct iovec *iov = how & MW_IO_VEC ? (const struct iovec *)buf : NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	struct io_target t = {};
	if (ret <= 0)
		return 0;
	struct mw_proc *p = current_tracked(); /* (io_exit's watch-mode discovery may have made it so) */
	if (!p) {
		if (cfg.ports && fd_kind(task, fd, dir, &t) == MW_KIND_TCP)
			p = port_candidate(task, &t);
		if (!p)
			return 0;
	}
	if (!t.kind && !fd_kind(task, fd, dir, &t))
		return 0;
	/* a TCP socket: the caller looks at it for TLS next (MW_IO_TCP and the
	 * process's flags as they were before capture() could promote it) */
	__u32 tcp = t.kind == MW_KIND_TCP ? MW_IO_TCP | p->flags << 8 : 0;
	capture(p, task, ret, fd, &t, ubuf, iov, iovcnt, dir, sys, t.k.ino, t.k.dev);
	return tcp;
}

/* In watch mode an untracked process's read may make it tracked (its first
 * JSON-RPC request), then the payload's way is mw_io_exit's, then a TCP
 * socket's TLS binding (mw_tls_saw_socket). (Discovery
 * and the TLS binding are called from here, not from mw_io_exit: their
 * frames would not fit in BPF's 512-byte stack on top of its own.) */
static __always_inline int io_exit(void *tracked, long ret, long fd, __u64 buf, __u64 iovcnt, __u64 how)
{
	__u64 first = how & MW_IO_VEC ? first_buffer(0, (const struct iovec *)buf) : buf;
	if (!tracked && cfg.watch && (how & 0xff) == MW_IO_READ)
		mw_watch_discover(ret, fd, first);
	int tcp = mw_io_exit(ret, fd, buf, iovcnt, how);
	if (tcp & MW_IO_TCP)
		mw_tls_saw_socket(fd, how & 0xff, (__u32)tcp >> 8, first);
	return 0;
}

/* Untracked, and not a read that watch mode must look at, nor a port to check: leave. */
#define IO_SKIP(p, dir) (!(p) && !((cfg.watch && (dir) == MW_IO_READ) || cfg.ports))

/* A payload handler: the common prologue, then BODY finds the buffers
 * (r: the saved user registers) and calls io_exit. */
#define PAYLOAD_HANDLER(name, dir, BODY)                                              \
	static __always_inline int on_##name(struct pt_regs *r, long ret)             \
	{                                                                             \
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;                        \
		void *p = ret > 0 ? bpf_map_lookup_elem(&procs, &tgid) : NULL;        \
		if (ret <= 0 || IO_SKIP(p, dir)) /* (mw_io_exit checks again) */       \
			return 0;                                                     \
		BODY                                                                  \
	}

/* read/write(fd, buf, n), recvfrom/sendto(fd, buf, n, ...) */
#define IO_HANDLER(name, sys, dir) PAYLOAD_HANDLER(name, dir,                        \
	return io_exit(p, ret, (int)MW_ARG1(r), MW_ARG2(r), 0, dir | MW_IO_SYS(sys));)

/* readv/writev(fd, iov, iovcnt) */
#define IOV_HANDLER(name, sys, dir) PAYLOAD_HANDLER(name, dir,                       \
	return io_exit(p, ret, (int)MW_ARG1(r), MW_ARG2(r), MW_ARG3(r),               \
			  dir | MW_IO_SYS(sys) | MW_IO_VEC);)

/* recvmsg/sendmsg(fd, msghdr, flags) */
#define MSG_HANDLER(name, sys, dir) PAYLOAD_HANDLER(name, dir,                       \
	/* msg_iov and msg_iovlen only: the stack is shared with mw_io_exit's */   \
	struct { struct iovec *iov; __u64 len; } m = {};                              \
	if (bpf_probe_read_user(&m, sizeof(m), (void *)MW_ARG2(r) +                   \
				offsetof(struct user_msghdr, msg_iov)))               \
		return 0;                                                             \
	return io_exit(p, ret, (int)MW_ARG1(r), (__u64)m.iov, m.len,                  \
			  dir | MW_IO_SYS(sys) | MW_IO_VEC);)

IO_HANDLER(read, MW_IOSYS_READ, MW_IO_READ)
IO_HANDLER(write, MW_IOSYS_WRITE, MW_IO_WRITE)
IO_HANDLER(recvfrom, MW_IOSYS_RECVFROM, MW_IO_READ)
IO_HANDLER(sendto_io, MW_IOSYS_SENDTO, MW_IO_WRITE)
IOV_HANDLER(readv, MW_IOSYS_READV, MW_IO_READ)
IOV_HANDLER(writev, MW_IOSYS_WRITEV, MW_IO_WRITE)
MSG_HANDLER(recvmsg, MW_IOSYS_RECVMSG, MW_IO_READ)
MSG_HANDLER(sendmsg_io, MW_IOSYS_SENDMSG, MW_IO_WRITE)

/* sendto(fd, buf, n, flags, addr, alen), sendmsg(fd, msg, flags): where the
 * datagram went (when an address was given), then the payload */
static __always_inline int on_sendto(struct pt_regs *r, long ret)
{
	if (MW_ARG5(r)) /* (it leaves at once for an untracked process) */
		mw_sent_to(ret, (int)MW_ARG1(r), MW_ARG5(r), (__u32)MW_ARG6(r), MW_CONN_SENDTO);
	return on_sendto_io(r, ret);
}

static __always_inline int on_sendmsg(struct pt_regs *r, long ret)
{
	mw_sent_msg(ret, (int)MW_ARG1(r), MW_ARG2(r), MW_CONN_SENDMSG);
	return on_sendmsg_io(r, ret);
}

/* ------------------------------------------------------------------ */
/* the syscall hook sets: the loader attaches one of them               */

/*
 * "dispatch" (the default where fexit does not load): one BTF-typed program on the raw sys_exit tracepoint, for every
 * syscall of every task, that switches on the syscall number. A syscall it
 * does not handle leaves at once; one it handles costs no perf record (the
 * per-syscall tracepoints below build one for each hooked syscall before the
 * program runs). 32-bit and x32 syscalls have other numbers: left alone, as
 * the per-syscall tracepoints leave them (counted for tracked processes).
 */
#if defined(__TARGET_ARCH_x86)
#define TS_COMPAT 0x0002
#define X32_SYSCALL_BIT 0x40000000

SEC("tp_btf/sys_exit")
int BPF_PROG(mw_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	switch (nr) {
	case 0: case 1: case 2: case 19: case 20: case 42: case 44: case 45: case 46: case 47:
	case 59: case 85: case 257: case 304: case 307: case 322: case 437:
		break;
	default:
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_info.status & TS_COMPAT) {
		if (current_tracked())
			count(MW_C_COMPAT_SYSCALL);
		return 0;
	}
	switch (nr) {
	case 0: return on_read(regs, ret);
	case 1: return on_write(regs, ret);
	case 2: return on_open(regs, ret);
	case 19: return on_readv(regs, ret);
	case 20: return on_writev(regs, ret);
	case 42: return on_connect(regs, ret);
	case 44: return on_sendto(regs, ret);
	case 45: return on_recvfrom(regs, ret);
	case 46: return on_sendmsg(regs, ret);
	case 47: return on_recvmsg(regs, ret);
	case 59: return on_execve(regs, ret);
	case 85: return on_creat(regs, ret);
	case 257: return on_openat(regs, ret);
	case 304: return on_open_by_handle_at(regs, ret);
	case 307: return on_sendmmsg(regs, ret);
	case 322: return on_execveat(regs, ret);
	case 437: return on_openat2(regs, ret);
	}
	return 0;
}
#endif

/*
 * "fexit" (the default where fentry/fexit programs load: Debian's 6.1 and
 * 6.12): one fexit program on each hooked syscall's entry function
 * (__x64_sys_*, which takes the saved user registers). Only the hooked
 * syscalls pay, through a BPF trampoline, and no syscall takes the tracing
 * slow path. 32-bit syscalls enter through __ia32_sys_*: not hooked, as above.
 */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL_FEXIT(name)                                                           \
	SEC("fexit/__x64_sys_" #name)                                                 \
	int BPF_PROG(mw_fx_##name, const struct pt_regs *regs, long ret)              \
	{                                                                             \
		return on_##name((struct pt_regs *)regs, ret);                        \
	}

SYSCALL_FEXIT(openat)
SYSCALL_FEXIT(open)
SYSCALL_FEXIT(creat)
SYSCALL_FEXIT(openat2)
SYSCALL_FEXIT(open_by_handle_at)
SYSCALL_FEXIT(execve)
SYSCALL_FEXIT(execveat)
SYSCALL_FEXIT(connect)
SYSCALL_FEXIT(read)
SYSCALL_FEXIT(write)
SYSCALL_FEXIT(recvfrom)
SYSCALL_FEXIT(sendto)
SYSCALL_FEXIT(readv)
SYSCALL_FEXIT(writev)
SYSCALL_FEXIT(recvmsg)
SYSCALL_FEXIT(sendmsg)
SYSCALL_FEXIT(sendmmsg)
#endif

/* "syscalls": one syscall tracepoint per syscall (any architecture; the
 * fallback where neither of the above is built or loads). */
#define SYSCALL_TP(name)                                                              \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int mw_##name(struct trace_event_raw_sys_exit *ctx)                           \
	{                                                                             \
		return on_##name(user_regs(), ctx->ret);                              \
	}

SYSCALL_TP(openat)
SYSCALL_TP(open)
SYSCALL_TP(creat)
SYSCALL_TP(openat2)
SYSCALL_TP(open_by_handle_at)
SYSCALL_TP(execve)
SYSCALL_TP(execveat)
SYSCALL_TP(connect)
SYSCALL_TP(read)
SYSCALL_TP(write)
SYSCALL_TP(recvfrom)
SYSCALL_TP(sendto)
SYSCALL_TP(readv)
SYSCALL_TP(writev)
SYSCALL_TP(recvmsg)
SYSCALL_TP(sendmsg)
SYSCALL_TP(sendmmsg)

/* ---- io_uring ------------------------------------------------------- */
/* io_uring opens files and connects sockets without those syscalls. They
 * are seen when the kernel posts their completion (io_uring_complete, run in
 * the submitting process: its own thread or one of its io-wq workers, which
 * share its files). The requested path is gone by then: an open is named by
 * the file it opened. A raw tracepoint: its arguments differ between
 * kernels, but the request is the second on all of them. */
#define MW_IORING_OP_CONNECT 16
#define MW_IORING_OP_OPENAT 18
#define MW_IORING_OP_OPENAT2 28

SEC("raw_tp/io_uring_complete")
int mw_uring_complete(struct bpf_raw_tracepoint_args *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct io_kiocb *req = (struct io_kiocb *)ctx->args[1];
	__u8 op = BPF_CORE_READ(req, opcode);
	int res = BPF_CORE_READ(req, cqe.res);
	if (op == MW_IORING_OP_OPENAT || op == MW_IORING_OP_OPENAT2) {
		struct io_open *o = (struct io_open *)req; /* the request's command area */
		if (BPF_CORE_READ(o, file_slot)) {
			count(MW_C_URING_DIRECT);  /* a direct descriptor: no fd to name the file by */
			return 0;
		}
		return handle_open(p, res, AT_FDCWD, NULL, BPF_CORE_READ(o, how.flags), BPF_CORE_READ(o, how.mode),
				   MW_SYS_IO_URING);
	}
	if (op == MW_IORING_OP_CONNECT) {
		struct io_connect *c = (struct io_connect *)req;
		return emit_connect(p, bpf_get_current_task_btf(), res, -1, BPF_CORE_READ(req, file),
				    BPF_CORE_READ(c, addr), BPF_CORE_READ(c, addr_len), MW_CONN_IO_URING);
	}
	return 0;
}

/* ---- socket cookies ------------------------------------------------ */
/* A TCP socket gets its cookie when it is established, so that the
 * endpoints sent up (MW_EV_SOCK) can name the socket the way other tools
 * (ss -e, cgroup/sockops programs) do. One helper call per connection. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(mw_sock_state, const struct sock *sk, int oldstate, int newstate)
{
	if (newstate == 1 /* TCP_ESTABLISHED */) {
		bpf_get_socket_cookie((void *)sk);
		return 0;
	}
	/* a captured connection is closed: TCP_CLOSE comes after its owner's
	 * close() (both FINs, or a reset), so after every byte it read */
	if (newstate != 7 /* TCP_CLOSE */)
		return 0;
	__u64 key = (__u64)sk;
	__u64 *ino = bpf_map_lookup_elem(&cap_socks, &key);
	if (!ino)
		return 0;
	__u64 inode = *ino;
	bpf_map_delete_elem(&cap_socks, &key);
	/* this can run in softirq, on top of a syscall program of this CPU that
	 * is using the scratch area: build the record in the ring directly */
	struct mw_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(MW_C_RB_FULL);
		return 0;
	}
	__builtin_memset(e, 0, MW_HDR_SIZE);
	__u64 pt = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->type = MW_EV_SOCK;
	e->flags = MW_F_LAST | MW_F_UNTRACKED; /* whoever runs now: not necessarily the socket's owner */
	e->pid = e->root = pt >> 32;
	e->tid = (__u32)pt;
	__builtin_memset(&e->args, 0, sizeof(e->args));
	e->args.sock.fd = 0xffffffff;
	e->args.sock.binding = MW_SB_CLOSED;
	e->args.sock.inode = inode;
	struct mw_sockinfo *si = (struct mw_sockinfo *)e->data;
	__builtin_memset(si, 0, sizeof(*si));
	sock_addrs((struct sock *)sk, si);
	e->data_len = sizeof(*si);
	bpf_ringbuf_submit(e, 0);
	count(MW_C_EVENTS);
	return 0;
}
