// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * mcpwitness kernel side: follow tracked process trees and report their
 * forks, execs, exits, file opens and connects.
 *
 * Hooks:
 *   tp_btf/sched_process_{fork,exec,exit}  process tree, in the kernel
 *   tracepoint/syscalls/sys_exit_*         opens, connects, failed execs
 *   cgroup/connect4/6, sendmsg4/6, lsm     policy checks (enforce.bpf.h)
 * Syscall arguments are read at sys_exit from the task's saved user
 * registers: one hook per syscall instead of an enter/exit pair, and user
 * strings are read after the kernel itself faulted them in.
 *
 * Untracked processes pay one hash lookup (procs, by tgid) per hook.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "mcpwitness.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AT_FDCWD -100
#define EBADF 9
#define ENOTSOCK 88
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFIFO 0010000
#define S_IFCHR 0020000
#define UNIX98_PTY_SLAVE_MAJOR 136 /* .. 143: /dev/pts/N */
#define MW_MINORBITS 20             /* the kernel's dev_t: major << 20 | minor */

const volatile struct mw_config cfg = {
	.argv_max = MW_ARGV_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} iolimit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct mw_proc);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MW_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mw_stream_key);
	__type(value, struct mw_stream);
} streams SEC(".maps");

/* port filter: TCP ports whose traffic is captured for any process */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

/* the port filter's stand-in for an untracked process (see port_candidate) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mw_proc);
} portproc SEC(".maps");

struct mw_scratch {
	struct mw_event ev; /* header template; data unused */
	__u64 size;         /* see io_chunk */
	union {
		__u8 buf[MW_COMPOSE_SIZE];
		struct mw_sockinfo sock; /* MW_EV_SOCK's data */
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mw_scratch);
} scratch SEC(".maps");

/* path walk area: a path is built backwards ending at MW_PATH_MAX - 1 */
struct mw_walk {
	__u8 buf[2 * MW_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mw_walk);
} walkbuf SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

/*
 * The tracked entry of tgid, or NULL. An entry whose start time does not
 * match the running process is a leftover of a process whose pid was
 * reused: it is dropped (and counted), never applied to the newcomer.
 */
static __always_inline struct mw_proc *lookup_tracked(struct task_struct *task, __u32 tgid)
{
	struct mw_proc *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p)
		return NULL;
	__u64 st = BPF_CORE_READ(task, group_leader, start_boottime);
	if (p->start_ns == st)
		return p;
	if ((p->flags & MW_P_TICKS) &&
	    st / MW_NSEC_PER_TICK == p->start_ns / MW_NSEC_PER_TICK) {
		p->start_ns = st;
		p->flags &= ~MW_P_TICKS;
		return p;
	}
	bpf_map_delete_elem(&procs, &tgid);
	count(MW_C_STALE_ENTRY);
	return NULL;
}

static __always_inline struct mw_scratch *begin(__u32 type, struct mw_proc *p,
						struct task_struct *task, __s64 ret)
{
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return NULL;
	struct mw_event *e = &s->ev;
	__u64 pt = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_ns();
	e->start_ns = p->start_ns;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ret = ret;
	e->args[0] = 0;
	e->args[1] = 0;
	e->args[2] = 0;
	e->args[3] = 0;
	e->type = type;
	e->seq = 0;
	e->flags = (p->depth > MW_ANCESTORS ? MW_F_DEPTH : 0) | (p->flags & MW_P_UNTRACKED ? MW_F_UNTRACKED : 0);
	e->pid = pt >> 32;
	e->tid = (__u32)pt;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->root = p->root;
	e->depth = p->depth;
#pragma unroll
	for (int i = 0; i < MW_ANCESTORS; i++)
		e->ancestors[i] = p->ancestors[i];
	e->data_len = 0;
	e->policy = p->policy;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return s;
}

struct emit_ctx {
	__u32 len;
	__u32 nchunks;
};

/* One ring record: the template header of s, numbered seq. NULL (counted) when the ring is full. */
static __always_inline struct mw_event *reserve_record(struct mw_scratch *s, __u32 seq)
{
	struct mw_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(seq ? MW_C_RB_FULL_CHUNK : MW_C_RB_FULL);
		return NULL;
	}
	__builtin_memcpy(e, &s->ev, MW_HDR_SIZE);
	e->seq = seq;
	return e;
}

static __always_inline void submit_record(struct mw_event *e, __u32 seq, __u32 len, int last)
{
	e->data_len = len;
	if (last)
		e->flags |= MW_F_LAST;
	bpf_ringbuf_submit(e, 0);
	if (!seq)
		count(MW_C_EVENTS);
}

static long emit_chunk(__u32 i, struct emit_ctx *c)
{
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s || i >= MW_MAX_CHUNKS)
		return 1;
	struct mw_event *e = reserve_record(s, i);
	if (!e)
		return 1;
	__u32 off = i * MW_DATA_LEN;
	bpf_probe_read_kernel(e->data, MW_DATA_LEN, s->buf + off);
	__u32 left = c->len > off ? c->len - off : 0;
	submit_record(e, i, left > MW_DATA_LEN ? MW_DATA_LEN : left, i + 1 >= c->nchunks);
	return 0;
}

/* Send the template header and len bytes of s->buf as one or more records. */
static __always_inline void emit(struct mw_scratch *s, __u32 len)
{
	struct emit_ctx c = {.len = len};
	if (len > MW_COMPOSE_SIZE)
		c.len = len = MW_COMPOSE_SIZE;
	c.nchunks = len ? (len + MW_DATA_LEN - 1) / MW_DATA_LEN : 1;
	bpf_loop(c.nchunks, emit_chunk, &c, 0);
}

/*
 * Absolute path of a struct path, built backwards in the walk buffer so that
 * it ends at MW_PATH_MAX - 1, crossing mount points up to the root of the
 * process's mount namespace. One bpf_loop step per component.
 */
#define MW_WALK_DEPTH 64
struct walk_ctx {
	struct dentry *d;
	struct mount *m;
	__u32 off;
	int trunc;
};

static long walk_step(__u32 i, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct mw_walk *w = bpf_map_lookup_elem(&walkbuf, &zero);
	if (!w)
		return 1;
	struct dentry *d = c->d;
	struct mount *m = c->m;
	struct dentry *mnt_root = BPF_CORE_READ(m, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == mnt_root || d == parent) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (d != mnt_root || mp == m)
			return 1;
		c->d = BPF_CORE_READ(m, mnt_mountpoint);
		c->m = mp;
		return 0;
	}
	__u32 len = BPF_CORE_READ(d, d_name.len) & 255;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 off = c->off;
	if (len + 1 > off || off >= MW_PATH_MAX) {
		c->trunc = 1;
		return 1;
	}
	off -= len;
	bpf_probe_read_kernel(&w->buf[off & (MW_PATH_MAX - 1)], len, name);
	off -= 1;
	w->buf[off & (MW_PATH_MAX - 1)] = '/';
	c->off = off;
	c->d = parent;
	if (i == MW_WALK_DEPTH - 1)
		c->trunc = 1;
	return 0;
}

static __always_inline __u32 walk_path(const struct path *path, struct mw_walk *w, int *trunc)
{
	struct vfsmount *vm = BPF_CORE_READ(path, mnt);
	struct walk_ctx c = {
		.d = BPF_CORE_READ(path, dentry),
		.m = (void *)vm - bpf_core_field_offset(struct mount, mnt),
		.off = MW_PATH_MAX - 1,
	};
	bpf_loop(MW_WALK_DEPTH, walk_step, &c, 0);
	*trunc = c.trunc;
	__u32 off = c.off;
	if (off == MW_PATH_MAX - 1) {
		off -= 1;
		w->buf[off] = '/';
	}
	return off;
}

/* Append the walked path of `path` to s->buf at pos; returns its length. */
static __always_inline __u32 append_path(struct mw_scratch *s, __u32 pos, const struct path *path, int *trunc)
{
	__u32 zero = 0;
	struct mw_walk *w = bpf_map_lookup_elem(&walkbuf, &zero);
	if (!w)
		return 0;
	__u32 start = walk_path(path, w, trunc) & (MW_PATH_MAX - 1);
	__u32 len = (MW_PATH_MAX - 1 - start) & (MW_PATH_MAX - 1);
	pos &= MW_PATH_MAX - 1;
	bpf_probe_read_kernel(&s->buf[pos], len, &w->buf[start]);
	return len;
}

static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;

	if (fd < 0 || fd >= max)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* Syscall arguments from the saved user registers. bpf_task_pt_regs gives a
 * BTF-typed pointer, so these are direct (fault-safe) loads, not helper
 * calls: they run on every hooked syscall of every process in watch mode. */
#if defined(__TARGET_ARCH_x86)
#define MW_ARG1(r) ((r)->di)
#define MW_ARG2(r) ((r)->si)
#define MW_ARG3(r) ((r)->dx)
#define MW_ARG4(r) ((r)->r10)
#else
#define MW_ARG1(r) PT_REGS_PARM1_CORE_SYSCALL(r)
#define MW_ARG2(r) PT_REGS_PARM2_CORE_SYSCALL(r)
#define MW_ARG3(r) PT_REGS_PARM3_CORE_SYSCALL(r)
#define MW_ARG4(r) PT_REGS_PARM4_CORE_SYSCALL(r)
#endif

/* The tracked entry of the current process, or NULL: the one map lookup an
 * untracked process pays. Every handler calls it before anything else. */
static __always_inline struct mw_proc *current_tracked(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return NULL;
	return lookup_tracked(bpf_get_current_task_btf(), tgid);
}

#include "enforce.bpf.h"

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
			t->ev.args[0] = BPF_CORE_READ(child, pid);
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
	s->ev.args[0] = ctgid;
	s->ev.args[1] = c.start_ns;
	emit(s, 0);
	return 0;
}

static __noinline void emit_stdio(struct mw_proc *p, struct task_struct *task, __u32 why);

SEC("tp_btf/sched_process_exec")
int BPF_PROG(mw_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct mw_proc *p = lookup_tracked(task, tgid);
	if (!p)
		return 0;
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
	s->ev.args[0] = n1;
	s->ev.args[1] = n2;
	s->ev.args[2] = alen;
	s->ev.args[3] = cap;
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

	long n = bpf_probe_read_user_str(s->buf, MW_PATH_MAX, upath);
	__u32 n1 = 0;
	if (n > 0) {
		n1 = n - 1;
	} else {
		s->ev.flags |= MW_F_PATHERR;
		count(MW_C_USER_READ_FAIL);
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
	s->ev.args[0] = flags;
	s->ev.args[1] = mode;
	s->ev.args[2] = dirfd;
	s->ev.args[3] = n1 | ((__u64)n2 << 16) | (kind << 32) | (sys << 40);
	emit(s, n1 + n2);
	if (kind == MW_OPEN_SECOND_RESOLVED && p->policy && !(cfg.lsm & MW_LSM_FILES))
		path_fallback(p, task, s, n1, n2, open_access(flags), NULL, MW_PW_OPEN, MW_PM_KILL_OPEN, flags);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int mw_openat(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct pt_regs *r = user_regs();
	return handle_open(p, ctx->ret, (int)MW_ARG1(r),
			   (const char *)MW_ARG2(r),
			   (__u32)MW_ARG3(r),
			   (__u32)MW_ARG4(r), MW_SYS_OPENAT);
}

SEC("tracepoint/syscalls/sys_exit_open")
int mw_open(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct pt_regs *r = user_regs();
	return handle_open(p, ctx->ret, AT_FDCWD, (const char *)MW_ARG1(r),
			   (__u32)MW_ARG2(r),
			   (__u32)MW_ARG3(r), MW_SYS_OPEN);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int mw_creat(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct pt_regs *r = user_regs();
	/* creat(p, m) == open(p, O_CREAT|O_WRONLY|O_TRUNC, m) */
	return handle_open(p, ctx->ret, AT_FDCWD, (const char *)MW_ARG1(r),
			   0x241, (__u32)MW_ARG2(r), MW_SYS_CREAT);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int mw_openat2(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct pt_regs *r = user_regs();
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)MW_ARG3(r));
	return handle_open(p, ctx->ret, (int)MW_ARG1(r),
			   (const char *)MW_ARG2(r), how.flags, how.mode,
			   MW_SYS_OPENAT2);
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
	s->ev.args[0] = n1;
	s->ev.args[1] = sys << 40;
	emit(s, n1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int mw_execve(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = ctx->ret < 0 ? current_tracked() : NULL;
	if (!p)
		return 0;
	return handle_exec_fail(p, ctx->ret, (const char *)MW_ARG1(user_regs()),
				MW_SYS_EXECVE);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int mw_execveat(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = ctx->ret < 0 ? current_tracked() : NULL;
	if (!p)
		return 0;
	return handle_exec_fail(p, ctx->ret, (const char *)MW_ARG2(user_regs()),
				MW_SYS_EXECVEAT);
}

/* ------------------------------------------------------------------ */
/* connects                                                            */

SEC("tracepoint/syscalls/sys_exit_connect")
int mw_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	long ret = ctx->ret;
	struct pt_regs *r = user_regs();
	long fd = (int)MW_ARG1(r);
	void *uaddr = (void *)MW_ARG2(r);
	__u32 alen = (__u32)MW_ARG3(r);

	struct mw_scratch *s = begin(MW_EV_CONNECT, p, task, ret);
	if (!s)
		return 0;
	__u32 n = alen > 128 ? 128 : alen;
	if (n && bpf_probe_read_user(s->buf, n, uaddr)) {
		n = 0;
		s->ev.flags |= MW_F_PATHERR;
		count(MW_C_USER_READ_FAIL);
	}
	s->ev.args[0] = fd;
	s->ev.args[1] = alen;
	if (ret != -EBADF && ret != -ENOTSOCK) {
		struct file *f = fd_file(task, fd);
		struct socket *sock = f ? BPF_CORE_READ(f, private_data) : NULL;
		if (sock) {
			struct sock *sk = BPF_CORE_READ(sock, sk);
			s->ev.args[2] = BPF_CORE_READ(sock, type);
			if (sk)
				s->ev.args[3] = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
		}
	}
	emit(s, n);
	return 0;
}

/* ------------------------------------------------------------------ */
/* payload: reads and writes on pipes and Unix sockets                 */

/* One buffer's share of an event's records. The callback keeps no state
 * from one step to the next (the offset is the loop index), so the
 * verifier's simulation of it converges at once. */
struct chunk_ctx {
	__u64 base;    /* user address of the buffer */
	__u64 len;     /* bytes of it to capture */
	__u32 seq0;    /* seq of its first record */
	__u32 last;    /* this buffer ends the event */
	__u32 failed;  /* out: a reservation failed */
	__u32 _pad;
};

static long chunk_step(__u32 i, struct chunk_ctx *c)
{
	__u64 off = (__u64)i * MW_DATA_LEN;
	if (off >= c->len)
		return 1;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 1;
	__u32 seq = c->seq0 + i;
	struct mw_event *e = reserve_record(s, seq);
	if (!e) {
		c->failed = 1;
		return 1;
	}
	/* the copy size goes through map memory so that the verifier does not
	 * mark the values it came from as precise */
	*(volatile __u64 *)&s->size = c->len - off;
	__u64 sz = *(volatile __u64 *)&s->size;
	if (sz > MW_DATA_LEN)
		sz = MW_DATA_LEN;
	if (bpf_probe_read_user(e->data, sz, (void *)(c->base + off)))
		e->flags |= MW_F_PATHERR;
	submit_record(e, seq, sz, c->last && off + sz >= c->len);
	return 0;
}

#define MW_IOV_MAX 8

/* Send cap bytes from a buffer or an iovec array as one event. */
static __always_inline void emit_user(struct mw_scratch *s, __u64 ubuf, const struct iovec *iov,
				      __u64 iovcnt, __u64 cap)
{
	if (!iov) {
		struct chunk_ctx c = {.base = ubuf, .len = cap, .last = 1};
		bpf_loop(cap / MW_DATA_LEN + 1, chunk_step, &c, 0);
		return;
	}
	__u64 left = cap;
	__u32 seq = 0;
	for (int j = 0; j < MW_IOV_MAX; j++) {
		if (j >= iovcnt || left == 0)
			break;
		struct iovec v = {};
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(iov + j)))
			break;
		__u64 take = v.iov_len < left ? v.iov_len : left;
		if (take == 0)
			continue;
		struct chunk_ctx c = {.base = (__u64)v.iov_base, .len = take, .seq0 = seq, .last = take == left};
		bpf_loop(take / MW_DATA_LEN + 1, chunk_step, &c, 0);
		if (c.failed)
			return;
		seq += (take + MW_DATA_LEN - 1) / MW_DATA_LEN;
		left -= take;
	}
	if (left) {
		/* more iovecs than followed: close the event, marked cut short */
		s->ev.flags |= MW_F_TRUNC;
		count(MW_C_IO_TRUNC);
		struct mw_event *e = reserve_record(s, seq);
		if (e)
			submit_record(e, seq, 0, 1);
	}
}

/* The user address of a chunk's first byte: the buffer, or iov[0]'s. */
static __always_inline __u64 first_buffer(__u64 ubuf, const struct iovec *iov)
{
	if (!iov)
		return ubuf;
	struct iovec v = {};
	bpf_probe_read_user(&v, sizeof(v), (void *)iov);
	return (__u64)v.iov_base;
}

/* first non-blank byte of a chunk: '{' or '[' says JSON */
struct head_ctx {
	__u8 buf[8];
	__u64 limit;
	int verdict;
};

static long head_step(__u32 i, struct head_ctx *h)
{
	if (i >= h->limit || i >= sizeof(h->buf))
		return 1;
	__u8 ch = h->buf[i & 7];
	if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
		return 0;
	h->verdict = (ch == '{' || ch == '[') ? 1 : -1;
	return 1;
}

/* 1: the chunk at first starts like JSON; -1: it does not; 0: only blanks */
static __always_inline int json_head(__u64 first, long ret)
{
	struct head_ctx h = {.limit = ret < 8 ? ret : 8};
	if (bpf_probe_read_user(h.buf, sizeof(h.buf), (void *)first))
		return -1;
	bpf_loop(8, head_step, &h, 0);
	return h.verdict;
}

/* What a payload syscall's fd is: pipe, Unix socket, TCP socket or a pty's slave, with
 * its stream key (one direction of it) and, for sockets, the sock. */
struct io_target {
	struct mw_stream_key k;
	struct sock *sk;
	__u64 kind;
};

static __always_inline __u64 fd_kind(struct task_struct *task, long fd, __u32 dir, struct io_target *t)
{
	struct file *f = fd_file(task, fd);
	if (!f)
		return 0;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	__u32 mode = BPF_CORE_READ(ino, i_mode) & S_IFMT;
	__u64 kind;
	if (mode == S_IFIFO) {
		kind = MW_KIND_PIPE;
	} else if (mode == S_IFSOCK) {
		struct socket *sock = BPF_CORE_READ(f, private_data);
		struct sock *sk = BPF_CORE_READ(sock, sk);
		__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (fam == AF_UNIX)
			kind = MW_KIND_UNIX;
		else if ((fam == AF_INET || fam == AF_INET6) && BPF_CORE_READ(sock, type) == SOCK_STREAM)
			kind = MW_KIND_TCP;
		else
			return 0;
		t->sk = sk;
	} else if (mode == S_IFCHR) {
		__u32 major = BPF_CORE_READ(ino, i_rdev) >> MW_MINORBITS;
		if (major < UNIX98_PTY_SLAVE_MAJOR || major > UNIX98_PTY_SLAVE_MAJOR + 7)
			return 0;
		kind = MW_KIND_TTY;
	} else {
		return 0;
	}
	t->k.ino = BPF_CORE_READ(ino, i_ino);
	t->k.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	t->k.dir = dir;
	t->kind = kind;
	return kind;
}

/* A TCP stream's first bytes: an HTTP/1.x request or status line, the
 * HTTP/2 preface (let through so that userspace can say it is not
 * supported), or JSON. 1: yes, -1: no, 0: only blanks so far. */
static __always_inline int http_head(__u64 first, long ret)
{
	__u32 w = 0;
	if (ret >= 4 && !bpf_probe_read_user(&w, 4, (void *)first)) {
		switch (w) {
		case 0x20544547: /* "GET " */
		case 0x54534f50: /* "POST" */
		case 0x20545550: /* "PUT " */
		case 0x44414548: /* "HEAD" */
		case 0x454c4544: /* "DELE" */
		case 0x4954504f: /* "OPTI" */
		case 0x43544150: /* "PATC" */
		case 0x50545448: /* "HTTP" */
		case 0x20495250: /* "PRI " */
			return 1;
		}
	}
	return json_head(first, ret);
}

static __always_inline void sock_addrs(struct sock *sk, struct mw_sockinfo *si)
{
	si->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	si->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	si->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (si->family == AF_INET6) {
		BPF_CORE_READ_INTO(&si->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&si->raddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)si->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)si->raddr, sk, __sk_common.skc_daddr);
	}
	si->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	si->netns_cookie = BPF_CORE_READ(net, net_cookie);
	si->netns_ino = BPF_CORE_READ(net, ns.inum);
}

/* TCP sockets whose bytes (or TLS plaintext) are sent up: their end is reported too */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* struct sock * */
	__type(value, __u64); /* its inode */
} cap_socks SEC(".maps");

static __always_inline void note_captured(struct sock *sk, __u64 ino)
{
	__u64 key = (__u64)sk;
	bpf_map_update_elem(&cap_socks, &key, &ino, BPF_ANY);
}

/* One MW_EV_SOCK: the endpoints of sk (how: MW_SB_*), before bytes of it
 * are sent; for a Unix socket, peer_ino names its connected peer. */
static __always_inline void emit_sock(struct mw_proc *p, struct task_struct *task, struct sock *sk, long fd,
				      __u32 dir, __u64 ino, __u64 how, __u64 ssl, __u64 peer_ino)
{
	struct mw_scratch *s = begin(MW_EV_SOCK, p, task, 0);
	if (!s)
		return;
	struct mw_sockinfo *si = &s->sock;
	__builtin_memset(si, 0, sizeof(*si));
	sock_addrs(sk, si);
	si->ssl = ssl;
	si->peer_ino = peer_ino;
	if (peer_ino) {
		struct unix_sock *us = (struct unix_sock *)sk;
		struct unix_sock *ps = (struct unix_sock *)BPF_CORE_READ(us, peer);
		si->unix_named = (BPF_CORE_READ(us, addr) ? 1 : 0) | (ps && BPF_CORE_READ(ps, addr) ? 2 : 0);
	}
	s->ev.args[0] = (__u32)fd | ((__u64)dir << 32) | (how << 40);
	s->ev.args[1] = ino;
	emit(s, sizeof(*si));
}

/* The inode of a Unix socket's connected peer (0: none), so that userspace
 * can join the two ends of one conversation. */
static __always_inline __u64 unix_peer_ino(struct sock *sk)
{
	struct unix_sock *us = (struct unix_sock *)sk;
	struct socket *ps = BPF_CORE_READ(us, peer, sk_socket);
	if (!ps)
		return 0;
	/* the socket's inode follows it in struct socket_alloc */
	struct socket_alloc *sa = (void *)ps - bpf_core_field_offset(struct socket_alloc, socket);
	return BPF_CORE_READ(sa, vfs_inode.i_ino);
}

/* One MW_EV_STDIO: what the task's fd 0 and fd 1 are. A server's stdio is its
 * conversation with the client that launched it, whatever the client made it
 * of (pipes, one or two socketpairs, a pty): userspace joins the two
 * directions by these inodes, and the client's ends by their peers. */
static __noinline void emit_stdio(struct mw_proc *p, struct task_struct *task, __u32 why)
{
	struct io_target t0 = {}, t1 = {};
	__u64 k0 = fd_kind(task, 0, MW_IO_READ, &t0);
	__u64 k1 = fd_kind(task, 1, MW_IO_WRITE, &t1);
	if (!k0 && fd_file(task, 0))
		k0 = MW_KIND_OTHER;
	if (!k1 && fd_file(task, 1))
		k1 = MW_KIND_OTHER;
	__u64 peer0 = k0 == MW_KIND_UNIX ? unix_peer_ino(t0.sk) : 0;
	__u64 peer1 = k1 == MW_KIND_UNIX ? unix_peer_ino(t1.sk) : 0;
	struct mw_scratch *s = begin(MW_EV_STDIO, p, task, 0);
	if (!s)
		return;
	s->ev.args[0] = t0.k.ino;
	s->ev.args[1] = t1.k.ino;
	s->ev.args[2] = t0.k.dev | ((__u64)t1.k.dev << 32);
	s->ev.args[3] = k0 | (k1 << 8) | ((__u64)why << 16);
	__u64 *d = (__u64 *)s->buf;
	d[0] = peer0;
	d[1] = peer1;
	emit(s, 16);
}

/* Track the current process from now on: it read a JSON-RPC request (watch
 * mode) or served HTTP or JSON on a watched port. */
static __always_inline struct mw_proc *promote(struct task_struct *task)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct mw_proc np = {};
	np.start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	np.root = tgid;
	np.flags = MW_P_WATCHED;
	if (bpf_map_update_elem(&procs, &tgid, &np, BPF_NOEXIST))
		return NULL;
	count(MW_C_WATCH_FOUND);
	return bpf_map_lookup_elem(&procs, &tgid);
}

/* Classify one payload syscall's stream and send its bytes (a1, a2: the
 * event's args[1..2], the stream's identity). */
static __always_inline int capture(struct mw_proc *p, struct task_struct *task, long ret, long fd,
				   struct io_target *t, __u64 ubuf, const struct iovec *iov, __u64 iovcnt,
				   __u32 dir, __u32 sys, __u64 a1, __u64 a2)
{
	struct mw_stream *st = bpf_map_lookup_elem(&streams, &t->k);
	__u32 state = st ? st->state : MW_S_UNKNOWN;
	if (state == MW_S_OTHER)
		return 0;
	if (state == MW_S_UNKNOWN) {
		__u64 first = first_buffer(ubuf, iov);
		int verdict = (t->kind == MW_KIND_TCP || t->kind == MW_KIND_TLS) ? http_head(first, ret)
										   : json_head(first, ret);
		struct mw_stream nst = {.state = MW_S_JSON};
		if (verdict <= 0) {
			count(MW_C_IO_SKIPPED);
			if (verdict == 0)
				return 0;
			nst.nonjson = (st ? st->nonjson : 0) + 1;
			nst.state = nst.nonjson >= MW_NONJSON_GIVEUP ? MW_S_OTHER : MW_S_UNKNOWN;
			bpf_map_update_elem(&streams, &t->k, &nst, BPF_ANY);
			return 0;
		}
		bpf_map_update_elem(&streams, &t->k, &nst, BPF_ANY);
	}
	if (p->flags & MW_P_PORT_SERVER) {
		p = promote(task);
		if (!p)
			return 0;
	}
	if (state == MW_S_UNKNOWN && t->kind == MW_KIND_TCP) { /* first bytes: where they go */
		emit_sock(p, task, t->sk, fd, t->k.dir, t->k.ino, MW_SB_CAPTURE, 0, 0);
		note_captured(t->sk, t->k.ino);
	} else if (state == MW_S_UNKNOWN && t->kind == MW_KIND_UNIX) {
		__u64 peer = unix_peer_ino(t->sk);
		if (peer)
			emit_sock(p, task, t->sk, fd, t->k.dir, t->k.ino, MW_SB_CAPTURE, 0, peer);
	}

	struct mw_scratch *s = begin(MW_EV_IO, p, task, ret);
	if (!s)
		return 0;
	__u32 zero = 0;
	__u64 *lim = bpf_map_lookup_elem(&iolimit, &zero);
	__u64 io_max = lim ? *lim : 0;
	__u64 cap = ret;
	if (cap > io_max) {
		cap = io_max;
		s->ev.flags |= MW_F_TRUNC;
		count(MW_C_IO_TRUNC);
	}
	s->ev.args[0] = (__u32)fd | ((__u64)dir << 32) | (t->kind << 40) | ((__u64)sys << 48);
	s->ev.args[1] = a1;
	s->ev.args[2] = a2;
	s->ev.args[3] = cap;
	if (cap == 0) /* io_max 0: the event alone, no bytes */
		emit(s, 0);
	else
		emit_user(s, ubuf, iov, iovcnt, cap);
	return 0;
}

/* ---- port filter: TCP on watched ports, whoever the process is ------ */

/* The per-CPU stand-in entry for an untracked process whose bytes are
 * captured (MW_P_UNTRACKED, maybe MW_P_PORT_SERVER): the event header's source. */
static __always_inline struct mw_proc *stand_in(struct task_struct *task, __u32 flags)
{
	__u32 zero = 0;
	struct mw_proc *c = bpf_map_lookup_elem(&portproc, &zero);
	if (!c)
		return NULL;
	c->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	c->root = bpf_get_current_pid_tgid() >> 32;
	c->flags = flags;
	return c;
}

/* An untracked process moved bytes on a TCP socket: a stand-in entry when
 * one end is a watched port. On the local end (a server) the process is
 * tracked once its stream proves HTTP or JSON; on the remote end (a client)
 * its bytes are captured and the process is left alone. */
static __always_inline struct mw_proc *port_candidate(struct task_struct *task, struct io_target *t)
{
	struct sock *sk = t->sk; /* (a local struct: CO-RE must not relocate t->sk itself) */
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__u32 flags;
	if (bpf_map_lookup_elem(&ports, &lport))
		flags = MW_P_UNTRACKED | MW_P_PORT_SERVER;
	else if (bpf_map_lookup_elem(&ports, &rport))
		flags = MW_P_UNTRACKED;
	else
		return NULL;
	count(MW_C_PORT_MATCHED);
	return stand_in(task, flags);
}

/* ---- watch mode: find servers nobody wrapped ---------------------- */

/* "method" (with its quotes) somewhere in the first bytes of a chunk */
struct scan_ctx {
	__u64 limit;
	int found;
};

static long scan_step(__u32 i, struct scan_ctx *c)
{
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s || i + 8 > c->limit || i >= 56)
		return 1;
	__u64 j = i;
	asm volatile("%[j] &= 63" : [j] "+r"(j)); /* clang would drop a C mask here */
	__u8 *b = &s->buf[j];
	if (b[0] == '"' && b[1] == 'm' && b[2] == 'e' && b[3] == 't' && b[4] == 'h' && b[5] == 'o' &&
	    b[6] == 'd' && b[7] == '"') {
		c->found = 1;
		return 1;
	}
	return 0;
}

/* An untracked process read a chunk: if it is the first JSON on a pipe or
 * Unix socket and reads like a request ("method" near the start), the
 * process is an MCP server: track it from this chunk on. A first JSON chunk
 * without "method" (a client reading a response) marks the stream JSON
 * without tracking, so the client is never taken for a server later. */
static __always_inline struct mw_proc *watch_discover(long ret, long fd, __u64 first)
{
	/* every read on the host comes here in watch mode: one byte decides
	 * for nearly all of them */
	__u8 c0 = 0;
	if (bpf_probe_read_user(&c0, 1, (void *)first) ||
	    (c0 != '{' && c0 != ' ' && c0 != '\n' && c0 != '\r' && c0 != '\t'))
		return NULL;
	if (json_head(first, ret) != 1)
		return NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	struct io_target t = {};
	__u64 kind = fd_kind(task, fd, MW_IO_READ, &t);
	if (!kind || kind == MW_KIND_TCP || bpf_map_lookup_elem(&streams, &t.k))
		return NULL;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return NULL;
	struct scan_ctx c = {.limit = ret < 64 ? ret : 64};
	if (bpf_probe_read_user(s->buf, 64, (void *)first))
		return NULL;
	bpf_loop(56, scan_step, &c, 0);
	if (!c.found) {
		struct mw_stream st = {.state = MW_S_JSON};
		bpf_map_update_elem(&streams, &t.k, &st, BPF_ANY);
		return NULL;
	}
	/* the stream stays unclassified: capture() classifies it as it does
	 * every first chunk, and sends what it needs first (a socket's peer) */
	struct mw_proc *p = promote(task);
	if (p)
		emit_stdio(p, task, MW_STDIO_FOUND);
	return p;
}

#include "tls.bpf.h"

/* Every payload syscall: untracked processes leave after one lookup (in
 * watch mode a read may first make its reader tracked; with a port filter
 * a TCP socket on a watched port is captured), then capture. */
static __always_inline int io_exit(struct mw_proc *p, long ret, long fd, __u64 ubuf, const struct iovec *iov,
				   __u64 iovcnt, __u32 dir, __u32 sys)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct io_target t = {};
	if (!p) {
		if (cfg.watch && dir == MW_IO_READ)
			p = watch_discover(ret, fd, first_buffer(ubuf, iov));
		if (!p && cfg.ports && fd_kind(task, fd, dir, &t) == MW_KIND_TCP)
			p = port_candidate(task, &t);
		if (!p)
			return 0;
	}
	if (!t.kind && !fd_kind(task, fd, dir, &t))
		return 0;
	if (t.kind == MW_KIND_TCP)
		tls_saw_socket(p, task, &t, fd, dir);
	return capture(p, task, ret, fd, &t, ubuf, iov, iovcnt, dir, sys, t.k.ino, t.k.dev);
}

/* Untracked, and not a read that watch mode must look at, nor a port to check: leave. */
#define IO_SKIP(p, dir) (!(p) && !((cfg.watch && (dir) == MW_IO_READ) || cfg.ports))

/* A payload program: the common prologue, then BODY finds the buffers
 * (r: the saved user registers) and calls io_exit. */
#define PAYLOAD_PROG(name, dir, BODY)                                                 \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int mw_##name(struct trace_event_raw_sys_exit *ctx)                           \
	{                                                                             \
		struct mw_proc *p = ctx->ret > 0 ? current_tracked() : NULL;          \
		if (ctx->ret <= 0 || IO_SKIP(p, dir))                                 \
			return 0;                                                     \
		struct pt_regs *r = user_regs();                                      \
		BODY                                                                  \
	}

/* read/write(fd, buf, n), recvfrom/sendto(fd, buf, n, ...) */
#define IO_PROG(name, sys, dir) PAYLOAD_PROG(name, dir,                              \
	return io_exit(p, ctx->ret, (int)MW_ARG1(r), MW_ARG2(r), NULL, 0, dir, sys);)

/* readv/writev(fd, iov, iovcnt) */
#define IOV_PROG(name, sys, dir) PAYLOAD_PROG(name, dir,                             \
	return io_exit(p, ctx->ret, (int)MW_ARG1(r), 0, (const struct iovec *)MW_ARG2(r), \
		       MW_ARG3(r), dir, sys);)

/* recvmsg/sendmsg(fd, msghdr, flags) */
#define MSG_PROG(name, sys, dir) PAYLOAD_PROG(name, dir,                             \
	struct user_msghdr m = {};                                                    \
	if (bpf_probe_read_user(&m, sizeof(m), (void *)MW_ARG2(r)))                   \
		return 0;                                                             \
	return io_exit(p, ctx->ret, (int)MW_ARG1(r), 0, m.msg_iov, m.msg_iovlen, dir, sys);)

IO_PROG(read, MW_IOSYS_READ, MW_IO_READ)
IO_PROG(write, MW_IOSYS_WRITE, MW_IO_WRITE)
IO_PROG(recvfrom, MW_IOSYS_RECVFROM, MW_IO_READ)
IO_PROG(sendto, MW_IOSYS_SENDTO, MW_IO_WRITE)
IOV_PROG(readv, MW_IOSYS_READV, MW_IO_READ)
IOV_PROG(writev, MW_IOSYS_WRITEV, MW_IO_WRITE)
MSG_PROG(recvmsg, MW_IOSYS_RECVMSG, MW_IO_READ)
MSG_PROG(sendmsg, MW_IOSYS_SENDMSG, MW_IO_WRITE)

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
	e->args[0] = 0xffffffffULL | ((__u64)MW_SB_CLOSED << 40);
	e->args[1] = inode;
	struct mw_sockinfo *si = (struct mw_sockinfo *)e->data;
	__builtin_memset(si, 0, sizeof(*si));
	sock_addrs((struct sock *)sk, si);
	e->data_len = sizeof(*si);
	bpf_ringbuf_submit(e, 0);
	count(MW_C_EVENTS);
	return 0;
}
