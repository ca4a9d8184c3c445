/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * enforce.bpf.h: policy checks, compiled into mcpwitness.bpf.c; the maps and
 * helpers it shares with the rest are in common.bpf.h.
 *
 * A tracked process whose mw_proc.policy names a slot is checked:
 *   connects and UDP sends  cgroup sock_addr connect4/6, sendmsg4/6 on the
 *                           cgroup2 root: refused with EPERM before any packet
 *   file opens              lsm/file_open where BPF LSM is on (EPERM), else
 *                           SIGKILL at sys_exit of open* (the open happened,
 *                           the process never returns to use the fd)
 *   execs                   lsm/bprm_check_security (EPERM), else SIGKILL at
 *                           sched_process_exec (the new image never runs)
 *   Unix socket connects    cgroup/connect_unix (6.7+): EPERM before connecting
 *   connects (no cgroup)    lsm/socket_connect
 * In monitor mode the same checks report and allow. Every verdict that is
 * not "allowed" is one MW_EV_POLICY event; allowed actions cost a lookup.
 */
#ifndef MW_ENFORCE_BPF_H
#define MW_ENFORCE_BPF_H

#include "common.bpf.h"

#define EPERM 1
#define SIGKILL 9
#define O_ACCMODE 3
#define O_WRONLY 1
#define O_RDWR 2
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_PATH 010000000
#define FMODE_EXEC_FLAG 0x20 /* __FMODE_EXEC in f_flags: the kernel's own open of a binary */

/* The kernel's internal mounts (kern_mount, clone_private_mount) are in no
 * mount namespace: their mnt_ns is MNT_NS_INTERNAL, ERR_PTR(-EINVAL). */
#define MW_MNT_NS_INTERNAL ((void *)-22L)

/* A file the kernel opens for itself behind another one: overlayfs (6.5+)
 * opens the real file in its upper or lower layer as a "backing file", and
 * lsm/file_open sees that open too, after the process's open of the overlay
 * path was judged. Its f_path is on a private clone of the layer's mount, so
 * its walk stops at that mount's root ("/ld.so.cache"): judged, it would make
 * an allow-list refuse a file it allows. The process's own open is the one
 * to judge. Told by its mount, which is internal: FMODE_BACKING cannot be
 * used, its bit is a macro that moved (24 or 25) and stable kernels differ
 * (Debian's 6.12 has bit 24, upstream 6.12 bit 25). A process cannot open a
 * path on an internal mount by name. */
static __always_inline int backing_file(struct file *file)
{
	struct vfsmount *vm = BPF_CORE_READ(file, f_path.mnt);
	struct mount *m = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	return BPF_CORE_READ(m, mnt_ns) == MW_MNT_NS_INTERNAL;
}
#define AF_INET 2
#define AF_UNIX_FAM 1
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} policy_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MW_MAX_POLICIES);
	__type(key, __u32);
	__type(value, struct mw_policy);
} policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct mw_nkey);
	__type(value, struct mw_net_rules);
} net_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct mw_pkey);
	__type(value, struct mw_path_rule);
} path_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct mw_nmkey);
	__type(value, struct mw_name_rule);
} name_rules SEC(".maps");

/* [0]: the key a path is looked up by; [1]: the same as /proc/self/... (mw_proc_self) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct mw_pkey);
} pkeybuf SEC(".maps");

/* The digits at path[at..]: their value, *end set to the index after them (at: none). */
static __always_inline __u64 proc_number(const __u8 *path, __u32 at, __u32 *end)
{
	__u64 v = 0;
	*end = at;
#pragma unroll
	for (int j = 0; j < 10; j++) {
		__u8 c = path[(at + j) & 0x7f];
		if (c < '0' || c > '9')
			break;
		v = v * 10 + (c - '0');
		*end = at + j + 1;
	}
	return v;
}

/* A policy's /proc/self and /proc/thread-self mean the process judged: the
 * resolved path of pkeybuf[0] (NUL-terminated) under /proc/<its own tgid>
 * (or /proc/<tgid>/task/<its own tid>) is written to pkeybuf[1] as
 * /proc/self/... (or /proc/thread-self/...), which is then looked up instead
 * (the patterns are never resolved against the agent's own process; enclosing
 * /proc/... subtree rules still match the new key). 1 when it did. A global function:
 * verified once, whatever calls it. */
__noinline int mw_proc_self(void)
{
	__u32 zero = 0, one = 1;
	struct mw_pkey *k = bpf_map_lookup_elem(&pkeybuf, &zero);
	struct mw_pkey *o = bpf_map_lookup_elem(&pkeybuf, &one);
	if (!k || !o)
		return 0;
	__u32 n = (k->prefixlen - 32) / 8; /* bytes, with the NUL */
	if (n < 8 || n > 96 || k->path[(n - 1) & 0x7f] != 0)
		return 0;
	if (k->path[0] != '/' || k->path[1] != 'p' || k->path[2] != 'r' || k->path[3] != 'o' || k->path[4] != 'c' ||
	    k->path[5] != '/')
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 end;
	__u64 pid = proc_number(k->path, 6, &end);
	if (end == 6 || pid != id >> 32 || (k->path[end & 0x7f] != '/' && k->path[end & 0x7f] != 0))
		return 0;
	__u32 rest = end, thread = 0;
	if (k->path[end & 0x7f] == '/' && k->path[(end + 1) & 0x7f] == 't' && k->path[(end + 2) & 0x7f] == 'a' &&
	    k->path[(end + 3) & 0x7f] == 's' && k->path[(end + 4) & 0x7f] == 'k' && k->path[(end + 5) & 0x7f] == '/') {
		__u32 e2;
		__u64 tid = proc_number(k->path, end + 6, &e2);
		if (e2 != end + 6 && tid == (__u32)id && (k->path[e2 & 0x7f] == '/' || k->path[e2 & 0x7f] == 0)) {
			rest = e2;
			thread = 1;
		}
	}
	__u32 tail = n - rest; /* from the / after the number, to the NUL */
	if (tail < 1 || tail > 96)
		return 0;
	o->scope = k->scope;
	__builtin_memcpy(o->path, "/proc/thread-self", 17);
	__u32 head = 10;
	if (thread)
		head = 17;
	else
		__builtin_memcpy(o->path + 6, "self", 4);
	bpf_probe_read_kernel(o->path + head, tail, k->path + rest);
	o->prefixlen = 32 + (head + tail) * 8;
	return 1;
}

/* The policy of a tracked process under the active generation, with the
 * scope its rules are keyed by; NULL when it has none (or it is off). */
static __always_inline struct mw_policy *policy_of(struct mw_proc *p, __u32 *scope)
{
	__u32 slot = p->policy;
	if (!slot || slot >= MW_MAX_POLICIES)
		return NULL;
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&policy_gen, &zero);
	if (!gen)
		return NULL;
	__u32 idx = (*gen & 1) * MW_MAX_POLICIES + slot;
	struct mw_policy *pol = bpf_map_lookup_elem(&policies, &idx);
	if (!pol || pol->mode == MW_MODE_OFF)
		return NULL;
	*scope = idx;
	count(MW_C_POLICY_CHECKS);
	return pol;
}

/* 0: allowed; else the id of the rule that denies. addr: network order. */
static __always_inline __u32 net_verdict(struct mw_policy *pol, __u32 scope, int v6, const __u32 *addr, __u16 port)
{
	struct mw_nkey k = {.prefixlen = 32 + (v6 ? 128 : 32), .scope = scope << 1 | (v6 ? 1 : 0)};
	__builtin_memcpy(k.addr, addr, 16);
	struct mw_net_rules *r = bpf_map_lookup_elem(&net_rules, &k);
	if (r) {
		__u32 n = r->n;
		for (int i = 0; i < MW_NET_RULES && i < n; i++) {
			if (port >= r->r[i].lo && port <= r->r[i].hi)
				return r->r[i].rule & MW_RULE_DENY ? r->r[i].rule & ~MW_RULE_DENY : 0;
		}
	}
	return pol->net_default;
}

/* Verdict for `access` on a path held in map memory (len bytes). Returns
 * the deciding rule id (0: allowed); *denied gets the refused access bits. */
static __always_inline __u32 path_verdict(struct mw_policy *pol, __u32 scope, const __u8 *path, __u32 len,
					  __u32 access, __u32 name_rule, __u32 *denied)
{
	__u32 zero = 0;
	struct mw_pkey *k = bpf_map_lookup_elem(&pkeybuf, &zero);
	*denied = 0;
	if (!k)
		return 0;
	k->scope = scope;
	if (len >= MW_PKEY_PATH) {
		/* too long for an exact rule: only subtree rules can match */
		bpf_probe_read_kernel(k->path, MW_PKEY_PATH, path);
		k->prefixlen = 32 + MW_PKEY_PATH * 8;
	} else {
		/* the barrier keeps clang from passing the caller's len (whose bounds
		 * older verifiers, 6.12's among them, track as signed) instead of n */
		__u32 n = len;
		barrier_var(n);
		n &= 255;
		if (n > MW_PKEY_PATH - 1)
			n = MW_PKEY_PATH - 1;
		bpf_probe_read_kernel(k->path, n, path);
		k->path[n] = 0;
		k->prefixlen = 32 + (n + 1) * 8;
	}
	/* the /proc/ test inline first: every other path costs no call and no lookups */
	if (!(access & MW_ACC_CONNECT) && k->path[1] == 'p' && k->path[5] == '/' && mw_proc_self()) {
		__u32 one = 1;
		struct mw_pkey *self = bpf_map_lookup_elem(&pkeybuf, &one);
		if (self)
			k = self;
	}
	struct mw_path_rule *r = bpf_map_lookup_elem(&path_rules, k);
	__u32 rule = 0;
	/* an exec names by basename rule first: a denying name rule wins */
	if (access & MW_ACC_EXEC && name_rule & MW_RULE_DENY) {
		*denied = MW_ACC_EXEC;
		return name_rule & ~MW_RULE_DENY;
	}
#pragma unroll
	for (int i = 0; i < MW_ACC_BITS; i++) {
		__u32 bit = 1u << i;
		if (!(access & bit))
			continue;
		if (r && (r->deny & bit)) {
			*denied |= bit;
			if (!rule)
				rule = r->rule[i];
			continue;
		}
		if ((r && (r->allow & bit)) || (bit == MW_ACC_EXEC && name_rule))
			continue;
		__u32 d = bit == MW_ACC_EXEC ? pol->exec_default : bit == MW_ACC_CONNECT ? pol->net_default
											: pol->file_default;
		if (d) {
			*denied |= bit;
			if (!rule)
				rule = d;
		}
	}
	return rule;
}

/* The name rule (id | MW_RULE_DENY) for an executable's basename, or 0. */
static __always_inline __u32 name_verdict(__u32 scope, struct dentry *d)
{
	struct mw_nmkey k = {.scope = scope};
	__u32 len = BPF_CORE_READ(d, d_name.len);
	if (len == 0 || len >= MW_NAME_LEN)
		return 0;
	bpf_probe_read_kernel(k.name, len & 63, BPF_CORE_READ(d, d_name.name));
	struct mw_name_rule *r = bpf_map_lookup_elem(&name_rules, &k);
	if (!r)
		return 0;
	return r->rule | (r->deny ? MW_RULE_DENY : 0);
}

static __always_inline __u32 open_access(__u64 flags)
{
	if (flags & O_PATH)
		return 0;
	__u32 acc = (flags & O_ACCMODE) == O_WRONLY ? MW_ACC_WRITE
		  : (flags & O_ACCMODE) == O_RDWR ? MW_ACC_READ | MW_ACC_WRITE : MW_ACC_READ;
	if (flags & (O_TRUNC | O_APPEND))
		acc |= MW_ACC_WRITE;
	if (flags & O_CREAT)
		acc |= MW_ACC_CREATE;
	return acc;
}

/* What a denial does under this policy and mechanism. */
static __always_inline __u32 action_of(struct mw_policy *pol, int can_refuse)
{
	if (pol->mode != MW_MODE_ENFORCE)
		return MW_PA_MONITOR;
	return can_refuse ? MW_PA_DENIED : MW_PA_KILLED;
}

static __always_inline void count_action(__u32 action)
{
	if (action == MW_PA_KILL_FAILED) /* counted as it failed */
		return;
	count(action == MW_PA_DENIED ? MW_C_POLICY_DENIED
	      : action == MW_PA_KILLED ? MW_C_POLICY_KILLED : MW_C_POLICY_MONITOR);
}

/* Report a policy verdict with len bytes of s->buf as data (already there). */
static __always_inline void report(struct mw_proc *p, struct task_struct *task, __u32 scope, __u32 what,
				   __u32 action, __u32 mech, __u32 access, __u32 rule, __u64 arg2, long ret, __u32 len)
{
	struct mw_scratch *s = begin(MW_EV_POLICY, p, task, ret);
	if (!s)
		return;
	s->ev.args.policy.check = what;
	s->ev.args.policy.action = action;
	s->ev.args.policy.mechanism = mech;
	s->ev.args.policy.access = access;
	s->ev.args.policy.policy = scope % MW_MAX_POLICIES;
	s->ev.args.policy.rule = rule;
	s->ev.args.policy.arg2 = arg2;
	s->ev.args.policy.len = len;
	emit(s, len);
}

/* Move len bytes at s->buf + off to the front of s->buf (through the walk buffer). */
static __always_inline void to_front(struct mw_scratch *s, __u32 off, __u32 len)
{
	__u32 zero = 0;
	struct mw_walk *w = bpf_map_lookup_elem(&walkbuf, &zero);
	if (!w)
		return;
	off &= MW_PATH_MAX - 1;
	len &= MW_PATH_MAX - 1;
	bpf_probe_read_kernel(w->buf, len, s->buf + off);
	bpf_probe_read_kernel(s->buf, len, w->buf);
}

/* The fallback's stop. SIGKILL is delivered on the way back to user space,
 * so the process never runs on; what is reported is what really happened. */
static __always_inline __u32 kill_current(__u32 action)
{
	if (action != MW_PA_KILLED)
		return action;
	if (bpf_send_signal(SIGKILL)) {
		count(MW_C_POLICY_KILL_FAIL);
		return MW_PA_KILL_FAILED;
	}
	return action;
}

/* ---- network ------------------------------------------------------------ */

/* ::ffff:a.b.c.d is an IPv4 destination: the IPv4 rules apply. Returns v6. */
static __always_inline int unmap_v4(__u32 *addr)
{
	if (addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff)) {
		addr[0] = addr[3];
		addr[2] = addr[3] = 0;
		return 0;
	}
	return 1;
}

/* Judge a destination (addr in network order) and report what is not
 * allowed. Returns the action taken, 0 when allowed. */
static __always_inline __u32 net_judge(struct mw_proc *p, struct mw_policy *pol, __u32 scope, int v6,
				       __u32 *addr, __u16 port, __u32 what, __u32 mech)
{
	if (v6)
		v6 = unmap_v4(addr);
	__u32 rule = net_verdict(pol, scope, v6, addr, port);
	if (!rule)
		return 0;
	__u32 action = action_of(pol, 1);
	count_action(action);
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (s) {
		__builtin_memcpy(s->buf, addr, 16);
		report(p, bpf_get_current_task_btf(), scope, what, action, mech, 0, rule,
		       port | (__u64)(v6 ? AF_INET6 : AF_INET) << 16, action == MW_PA_DENIED ? -EPERM : 0, 16);
	}
	return action;
}

/* 1: let it go, 0: refuse (EPERM). */
static __always_inline int net_check(struct bpf_sock_addr *ctx, int v6, __u32 what, __u32 mech)
{
	struct mw_proc *p = current_tracked();
	if (!p || !p->policy)
		return 1;
	__u32 scope;
	struct mw_policy *pol = policy_of(p, &scope);
	if (!pol)
		return 1;
	__u32 addr[4] = {};
	if (v6) {
		addr[0] = ctx->user_ip6[0];
		addr[1] = ctx->user_ip6[1];
		addr[2] = ctx->user_ip6[2];
		addr[3] = ctx->user_ip6[3];
	} else {
		addr[0] = ctx->user_ip4;
	}
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	return net_judge(p, pol, scope, v6, addr, port, what, mech) != MW_PA_DENIED;
}

SEC("cgroup/connect4")
int mw_connect4(struct bpf_sock_addr *ctx)
{
	return net_check(ctx, 0, MW_PW_CONNECT, MW_PM_CGROUP_CONNECT4);
}

SEC("cgroup/connect6")
int mw_connect6(struct bpf_sock_addr *ctx)
{
	return net_check(ctx, 1, MW_PW_CONNECT, MW_PM_CGROUP_CONNECT6);
}

SEC("cgroup/sendmsg4")
int mw_sendmsg4(struct bpf_sock_addr *ctx)
{
	return net_check(ctx, 0, MW_PW_SENDMSG, MW_PM_CGROUP_SENDMSG4);
}

SEC("cgroup/sendmsg6")
int mw_sendmsg6(struct bpf_sock_addr *ctx)
{
	return net_check(ctx, 1, MW_PW_SENDMSG, MW_PM_CGROUP_SENDMSG6);
}

/* 6.2+; weak, so the object still loads where it is missing (6.1): the only
 * caller, cgroup/connect_unix (6.7+), is then not loaded (loader.py) */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/* Unix socket paths. The section is newer than some libbpfs: the loader
 * sets the program and attach types itself where libbpf does not know it. */
SEC("cgroup/connect_unix")
int mw_connect_unix(struct bpf_sock_addr *ctx)
{
	struct mw_proc *p = current_tracked();
	if (!p || !p->policy)
		return 1;
	__u32 scope;
	struct mw_policy *pol = policy_of(p, &scope);
	if (!pol)
		return 1;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 1;
	struct bpf_sock_addr_kern *k = bpf_cast_to_kern_ctx(ctx);
	const char *sun_path = (const char *)k->uaddr + 2; /* after sun_family */
	__u32 alen = k->uaddrlen;
	__u32 n = alen > 2 ? alen - 2 : 0;
	if (n > 108)
		n = 108;
	__u32 len = 0;
	if (n) {
		__u8 first = 0;
		bpf_probe_read_kernel(&first, 1, sun_path);
		if (first) {
			long r = bpf_probe_read_kernel_str(s->buf, 109, sun_path);
			len = r > 0 ? r - 1 : 0;
		} else {
			/* abstract: the name is every byte after the NUL, written '@name' */
			s->buf[0] = '@';
			bpf_probe_read_kernel(s->buf + 1, (n - 1) & 127, sun_path + 1);
			len = n;
		}
	}
	__u32 denied;
	__u32 rule = path_verdict(pol, scope, s->buf, len, MW_ACC_CONNECT, 0, &denied);
	if (!rule)
		return 1;
	__u32 action = action_of(pol, 1);
	count_action(action);
	report(p, bpf_get_current_task_btf(), scope, MW_PW_CONNECT, action, MW_PM_CGROUP_CONNECT_UNIX, 0, rule,
	       (__u64)AF_UNIX_FAM << 16, action == MW_PA_DENIED ? -EPERM : 0, len);
	return action == MW_PA_DENIED ? 0 : 1;
}

/* ---- files and execs ----------------------------------------------------- */

/* Judge `access` to the path at s->buf + off (len bytes) and report what is
 * not allowed. can_refuse: the hook can fail the syscall (LSM); otherwise
 * (the fallbacks, after the fact) the process is killed. Returns the
 * action taken, 0 when allowed. */
static __always_inline __u32 path_judge(struct mw_proc *p, struct mw_policy *pol, __u32 scope,
					struct task_struct *task, struct mw_scratch *s, __u32 off, __u32 len,
					__u32 access, struct dentry *exe, __u32 what, __u32 mech, __u64 arg2,
					int can_refuse)
{
	if (!access)
		return 0;
	__u32 nr = exe ? name_verdict(scope, exe) : 0;
	__u32 denied;
	__u32 rule = path_verdict(pol, scope, s->buf + (off & (MW_PATH_MAX - 1)), len, access, nr, &denied);
	if (!rule)
		return 0;
	__u32 action = action_of(pol, can_refuse);
	if (!can_refuse)
		action = kill_current(action);
	count_action(action);
	if (off)
		to_front(s, off, len);
	report(p, task, scope, what, action, mech, denied, rule, arg2, action == MW_PA_DENIED ? -EPERM : 0, len);
	return action;
}

/* The fallbacks (no BPF LSM), from the tracepoint handlers: the kernel has
 * already opened or loaded the file, whose resolved path is at s->buf + off,
 * and the open or exec event is emitted. */
static __always_inline void path_fallback(struct mw_proc *p, struct task_struct *task, struct mw_scratch *s,
					  __u32 off, __u32 len, __u32 access, struct dentry *exe, __u32 what,
					  __u32 mech, __u64 arg2)
{
	__u32 scope;
	struct mw_policy *pol = policy_of(p, &scope);
	if (pol)
		path_judge(p, pol, scope, task, s, off, len, access, exe, what, mech, arg2, 0);
}

/* ---- BPF LSM: refuse before the action (kernels with lsm=...,bpf) ------- */

/* Check a path about to be opened, executed or made; 0 or -EPERM. The path
 * is walked from `path`; `name`, when given, is a new entry in that directory
 * (its last component, not made yet). */
static __always_inline int lsm_path_check(const struct path *path, struct dentry *name, __u32 access, __u32 what,
					  __u32 mech, struct dentry *exe_dentry, __u64 arg2)
{
	struct mw_proc *p = current_tracked();
	if (!p || !p->policy)
		return 0;
	__u32 scope;
	struct mw_policy *pol = policy_of(p, &scope);
	if (!pol)
		return 0;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	int trunc = 0;
	__u32 len = append_path(s, 0, path, &trunc) & (MW_PATH_MAX - 1);
	if (name) {
		if (len == 1) /* the root: "/" + name, not "//name" */
			len = 0;
		__u32 nlen = BPF_CORE_READ(name, d_name.len) & 255;
		if (len + 1 + nlen < MW_PATH_MAX) {
			s->buf[len & (MW_PATH_MAX - 1)] = '/';
			bpf_probe_read_kernel(&s->buf[(len + 1) & (MW_PATH_MAX - 1)], nlen,
					      BPF_CORE_READ(name, d_name.name));
			len += 1 + nlen;
		}
	}
	__u32 action = path_judge(p, pol, scope, bpf_get_current_task_btf(), s, 0, len, access, exe_dentry, what,
				  mech, arg2, 1);
	return action == MW_PA_DENIED ? -EPERM : 0;
}

SEC("lsm/file_open")
int BPF_PROG(mw_lsm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	__u32 fl = BPF_CORE_READ(file, f_flags);
	if (fl & FMODE_EXEC_FLAG) /* the kernel opening a binary for exec: bprm_check decides */
		return 0;
	if (backing_file(file))
		return 0;
	__u32 access = open_access(fl);
	if (!access)
		return 0;
	return lsm_path_check(__builtin_preserve_access_index(&file->f_path), NULL, access, MW_PW_OPEN,
			      MW_PM_LSM_FILE_OPEN, NULL, fl);
}

/* A new name about to be made (open with O_CREAT of a file that does not
 * exist, mknod): file_open runs only after the kernel has created the file,
 * so a refused creation is refused here, before it. The path is the parent
 * directory's, walked from its struct path, plus the new name. Needs
 * CONFIG_SECURITY_PATH (Debian, Ubuntu, Fedora: yes); the loader leaves it
 * out where the hook is missing and says so. */
SEC("lsm/path_mknod")
int BPF_PROG(mw_lsm_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev,
	     int ret)
{
	if (ret)
		return ret;
	return lsm_path_check(dir, dentry, MW_ACC_CREATE, MW_PW_OPEN, MW_PM_LSM_PATH_MKNOD, NULL, O_CREAT);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(mw_lsm_bprm_check, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	struct file *f = BPF_CORE_READ(bprm, file);
	return lsm_path_check(__builtin_preserve_access_index(&f->f_path), NULL, MW_ACC_EXEC, MW_PW_EXEC,
			      MW_PM_LSM_BPRM_CHECK, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_flags));
}

SEC("lsm/socket_connect")
int BPF_PROG(mw_lsm_socket_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return ret;
	struct mw_proc *p = current_tracked();
	if (!p || !p->policy)
		return 0;
	__u32 scope;
	struct mw_policy *pol = policy_of(p, &scope);
	if (!pol)
		return 0;
	__u16 fam = BPF_CORE_READ(address, sa_family);
	__u32 addr[4] = {};
	__u16 port;
	int v6 = 0;
	if (fam == AF_INET) {
		struct sockaddr_in *in = (void *)address;
		addr[0] = BPF_CORE_READ(in, sin_addr.s_addr);
		port = bpf_ntohs(BPF_CORE_READ(in, sin_port));
	} else if (fam == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)address;
		bpf_probe_read_kernel(addr, 16, __builtin_preserve_access_index(&in6->sin6_addr));
		port = bpf_ntohs(BPF_CORE_READ(in6, sin6_port));
		v6 = 1;
	} else {
		return 0;
	}
	__u32 action = net_judge(p, pol, scope, v6, addr, port, MW_PW_CONNECT, MW_PM_LSM_SOCKET_CONNECT);
	return action == MW_PA_DENIED ? -EPERM : 0;
}

#endif
