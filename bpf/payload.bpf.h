/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * payload.bpf.h: the bytes of MCP conversations: what kind of stream an fd
 * is (pipe, Unix socket, pty, TCP), whether its bytes look like JSON or
 * HTTP, capturing them in chunks, socket facts (endpoints, peers, stdio),
 * the port filter and watch-mode discovery. The syscall programs that call
 * it are in mcpwitness.bpf.c; the TLS uprobes (tls.bpf.h) reuse it.
 */
#ifndef MW_PAYLOAD_BPF_H
#define MW_PAYLOAD_BPF_H

#include "common.bpf.h"

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

/* Send cap bytes from a buffer or an iovec array as one event (its header is
 * the scratch template begin() filled). A global function: the verifier
 * checks it once, on its own, not once for each path of every program that
 * captures, which multiplied the programs' verification by each path into it
 * (hundreds of thousands of instructions). Scalars only, as 5.x requires of a
 * global function's arguments. */
__noinline int mw_emit_user(__u64 ubuf, __u64 uiov, __u64 iovcnt, __u64 cap)
{
	const struct iovec *iov = (const struct iovec *)uiov;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	if (!iov) {
		struct chunk_ctx c = {.base = ubuf, .len = cap, .last = 1};
		bpf_loop(cap / MW_DATA_LEN + 1, chunk_step, &c, 0);
		return 0;
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
			return 0;
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
	return 0;
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

/* The socket half of an MW_EV_SOCK whose header begin() filled: sk's
 * endpoints and, for a Unix socket (peer_ino: its connected peer), the
 * peer's credentials; then the event goes out. Global, as mw_emit_user. */
__noinline int mw_emit_sock_info(__u64 usk, __u64 ssl, __u64 peer_ino)
{
	struct sock *sk = (struct sock *)usk;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct mw_sockinfo *si = &s->sock;
	__builtin_memset(si, 0, sizeof(*si));
	if (sk)
		sock_addrs(sk, si);
	si->ssl = ssl;
	si->peer_ino = peer_ino;
	if (sk && peer_ino) {
		struct unix_sock *us = (struct unix_sock *)sk;
		struct unix_sock *ps = (struct unix_sock *)BPF_CORE_READ(us, peer);
		si->unix_named = (BPF_CORE_READ(us, addr) ? 1 : 0) | (ps && BPF_CORE_READ(ps, addr) ? 2 : 0);
		/* the peer's credentials as the kernel keeps them for SO_PEERCRED */
		struct pid *pp = BPF_CORE_READ(sk, sk_peer_pid);
		if (pp)
			si->peer_pid = BPF_CORE_READ(pp, numbers[0].nr);
		const struct cred *pc = BPF_CORE_READ(sk, sk_peer_cred);
		if (pc) {
			si->peer_uid = BPF_CORE_READ(pc, euid.val);
			si->peer_gid = BPF_CORE_READ(pc, egid.val);
		}
	}
	emit(s, sizeof(*si));
	return 0;
}

/* One MW_EV_SOCK: the endpoints of sk (how: MW_SB_*), before bytes of it
 * are sent; for a Unix socket, peer_ino names its connected peer. */
static __always_inline void emit_sock(struct mw_proc *p, struct task_struct *task, struct sock *sk, long fd,
				      __u32 dir, __u64 ino, __u64 how, __u64 ssl, __u64 peer_ino)
{
	struct mw_scratch *s = begin(MW_EV_SOCK, p, task, 0);
	if (!s)
		return;
	s->ev.args.sock.fd = fd;
	s->ev.args.sock.dir = dir;
	s->ev.args.sock.binding = how;
	s->ev.args.sock.inode = ino;
	mw_emit_sock_info((__u64)sk, ssl, peer_ino);
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
	s->ev.args.stdio.ino[0] = t0.k.ino;
	s->ev.args.stdio.ino[1] = t1.k.ino;
	s->ev.args.stdio.dev[0] = t0.k.dev;
	s->ev.args.stdio.dev[1] = t1.k.dev;
	s->ev.args.stdio.kind[0] = k0;
	s->ev.args.stdio.kind[1] = k1;
	s->ev.args.stdio.why = why;
	__u64 *d = (__u64 *)s->buf;
	d[0] = peer0;
	d[1] = peer1;
	emit(s, 16);
}

/* Track the current process from now on: it read a JSON-RPC request (watch
 * mode) or served HTTP or JSON on a watched port. 1: done (global, so that
 * the new entry's stack is not its callers'). */
__noinline int mw_promote(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task = bpf_get_current_task_btf();
	struct mw_proc np = {};
	np.start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	np.root = tgid;
	np.flags = MW_P_WATCHED;
	if (bpf_map_update_elem(&procs, &tgid, &np, BPF_NOEXIST))
		return 0;
	count(MW_C_WATCH_FOUND);
	return 1;
}

static __always_inline struct mw_proc *promote(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return mw_promote() ? bpf_map_lookup_elem(&procs, &tgid) : NULL;
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
		p = promote();
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
	s->ev.args.io.fd = fd;
	s->ev.args.io.dir = dir;
	s->ev.args.io.kind = t->kind;
	s->ev.args.io.syscall = sys;
	s->ev.args.io.stream = a1;
	s->ev.args.io.stream2 = a2;
	s->ev.args.io.cap = cap;
	if (cap == 0) /* io_max 0: the event alone, no bytes */
		emit(s, 0);
	else
		mw_emit_user(ubuf, (__u64)iov, iovcnt, cap);
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

/* Under --port, which untracked processes userspace has been told to look
 * at for a TLS library: binaries (by inode) at their first exec, and
 * processes at their first bytes on a watched port. Once each. */
struct mw_exe_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mw_exe_key);
	__type(value, __u8);
} exe_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   /* tgid */
	__type(value, __u64); /* its start time (a reused pid is another process) */
} port_seen SEC(".maps");

static __always_inline void tls_look(struct task_struct *task)
{
	struct mw_proc *c = stand_in(task, MW_P_UNTRACKED);
	if (c)
		emit_sock(c, task, NULL, -1, 0, 0, MW_SB_TLS_LOOK, 0, 0);
}

/* an untracked process execs (port filter on): a binary seen for the first time is looked at */
static __always_inline void tls_look_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct inode *in = BPF_CORE_READ(bprm, file, f_inode);
	struct mw_exe_key k = {.ino = BPF_CORE_READ(in, i_ino), .dev = BPF_CORE_READ(in, i_sb, s_dev)};
	__u8 one = 1;
	if (bpf_map_update_elem(&exe_seen, &k, &one, BPF_NOEXIST) == 0)
		tls_look(task);
}

/* an untracked process moved bytes on a watched port: looked at once (what it mapped since its exec) */
static __always_inline void tls_look_port(struct task_struct *task)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 start = BPF_CORE_READ(task, group_leader, start_boottime);
	__u64 *seen = bpf_map_lookup_elem(&port_seen, &tgid);
	if (seen && *seen == start)
		return;
	bpf_map_update_elem(&port_seen, &tgid, &start, BPF_ANY);
	tls_look(task);
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
	tls_look_port(task);
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
 * without tracking, so the client is never taken for a server later.
 * 1: tracked now. Global, as mw_emit_user. */
__noinline int mw_watch_discover(long ret, long fd, __u64 first)
{
	/* every read on the host comes here in watch mode: one byte decides
	 * for nearly all of them */
	__u8 c0 = 0;
	if (bpf_probe_read_user(&c0, 1, (void *)first) ||
	    (c0 != '{' && c0 != ' ' && c0 != '\n' && c0 != '\r' && c0 != '\t'))
		return 0;
	if (json_head(first, ret) != 1)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct io_target t = {};
	__u64 kind = fd_kind(task, fd, MW_IO_READ, &t);
	if (!kind || kind == MW_KIND_TCP || bpf_map_lookup_elem(&streams, &t.k))
		return 0;
	__u32 zero = 0;
	struct mw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct scan_ctx c = {.limit = ret < 64 ? ret : 64};
	if (bpf_probe_read_user(s->buf, 64, (void *)first))
		return 0;
	bpf_loop(56, scan_step, &c, 0);
	if (!c.found) {
		struct mw_stream st = {.state = MW_S_JSON};
		bpf_map_update_elem(&streams, &t.k, &st, BPF_ANY);
		return 0;
	}
	/* the stream stays unclassified: capture() classifies it as it does
	 * every first chunk, and sends what it needs first (a socket's peer) */
	struct mw_proc *p = promote();
	if (p)
		emit_stdio(p, task, MW_STDIO_FOUND);
	return p ? 1 : 0;
}

#endif /* MW_PAYLOAD_BPF_H */
