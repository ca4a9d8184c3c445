/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * common.bpf.h: what every part of mcpwitness.bpf.c shares: the maps (the
 * tracked processes, the ring, counters, the per-CPU scratch event, the
 * configuration), the tracked-process lookup, building an event (begin) and
 * sending it in ring records (emit), the path walk, and syscall arguments.
 * enforce.bpf.h, payload.bpf.h and tls.bpf.h include it; all of them are
 * compiled into the one object, mcpwitness.bpf.c.
 */
#ifndef MW_COMMON_BPF_H
#define MW_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "mcpwitness.h"

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
	__builtin_memset(&e->args, 0, sizeof(e->args));
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
	int pseudo = 0;
	if (d == mnt_root || d == parent) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (d == mnt_root && mp != m) {
			c->d = BPF_CORE_READ(m, mnt_mountpoint);
			c->m = mp;
			return 0;
		}
		/* a dentry that is its own root but not its mount's: a file with no
		 * place in any tree (memfd_create's "memfd:NAME", an anonymous
		 * inode). Its name is all there is, written without a leading '/'
		 * so that it cannot pass for a path (a memfd run by execveat). */
		if (d == mnt_root || BPF_CORE_READ(d, d_name.len) == 0)
			return 1;
		pseudo = 1;
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
	if (pseudo) {
		c->off = off;
		return 1;
	}
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

/* The file behind fd in task (a BTF pointer: the walk to the fd array is
 * direct loads, the array slot one helper read). It runs on every read and
 * write of every process while a port is watched. */
static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt)
		return NULL;
	unsigned int max = fdt->max_fds;
	struct file **fds = fdt->fd;
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
#define MW_ARG5(r) ((r)->r8)
#define MW_ARG6(r) ((r)->r9)
#else
#define MW_ARG1(r) PT_REGS_PARM1_CORE_SYSCALL(r)
#define MW_ARG2(r) PT_REGS_PARM2_CORE_SYSCALL(r)
#define MW_ARG3(r) PT_REGS_PARM3_CORE_SYSCALL(r)
#define MW_ARG4(r) PT_REGS_PARM4_CORE_SYSCALL(r)
#define MW_ARG5(r) PT_REGS_PARM5_CORE_SYSCALL(r)
#define MW_ARG6(r) PT_REGS_PARM6_CORE(r)
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

#endif /* MW_COMMON_BPF_H */
