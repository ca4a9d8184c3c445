/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tls.bpf.h: plaintext at OpenSSL's SSL_read/SSL_write(_ex), compiled into
 * mcpwitness.bpf.c; it reuses the payload path (payload.bpf.h).
 *
 * The uprobes sit in the libssl file (every process that maps it), the
 * uretprobe sends what the call really moved, as MW_KIND_TLS bytes whose
 * stream is the SSL object. Which socket an SSL object speaks over is
 * learnt on the thread that uses both:
 *  - inside the call: the library reads or writes the socket itself
 *    (SSL_set_fd), so the syscall happens while the SSL_* call is open;
 *  - next to the call (memory BIOs, as asyncio and most event loops do):
 *    the loop reads TLS records from a socket and hands them to SSL_read
 *    straight after, or writes what SSL_write produced straight after it.
 * A binding is made once per SSL object and sent up as MW_EV_SOCK.
 */

#ifndef MW_TLS_BPF_H
#define MW_TLS_BPF_H

#include "payload.bpf.h"

#define MW_TLS_NEAR_NS 2000000ULL /* "straight after": within 2 ms on one thread */

struct mw_ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 outlen; /* _ex: where the library writes the byte count */
	__u32 sys;
	__u32 dir;
};

struct mw_tls_thread {
	__u64 ssl;      /* the last SSL object this thread called into */
	__u64 ssl_ts;   /* when that call returned */
	__u64 ino;      /* the last TCP socket this thread moved bytes on */
	__u64 sk;
	__u64 sock_ts;
	__s32 fd;
	__u32 in_call;
	__u32 dir;
	__u32 pflags;   /* the process's MW_P_UNTRACKED | MW_P_PORT_SERVER, when captured by port */
};

struct mw_ssl_sock {
	__u64 ino;
	__s32 fd;
	__u32 pflags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct mw_ssl_call);
} ssl_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct mw_tls_thread);
} tls_threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* SSL object */
	__type(value, struct mw_ssl_sock);
} ssl_socks SEC(".maps");

static __always_inline void tls_bind(struct mw_proc *p, struct task_struct *task, __u64 ssl, struct sock *sk,
				     __u64 ino, __s32 fd, __u32 dir, __u32 pflags, __u64 how)
{
	struct mw_ssl_sock b = {.ino = ino, .fd = fd, .pflags = pflags};
	if (bpf_map_update_elem(&ssl_socks, &ssl, &b, BPF_NOEXIST))
		return; /* bound already */
	note_captured(sk, ino);
	if (p)
		emit_sock(p, task, sk, fd, dir, ino, how, ssl, 0);
}

/* A tracked (or port-matched) thread moved bytes on a TCP socket: bind the
 * SSL object it is inside, or has just left, to the socket; remember the
 * socket for an SSL_* call that comes straight after. */
static __always_inline void tls_saw_socket(struct mw_proc *p, struct task_struct *task, struct io_target *t,
					   long fd, __u32 dir)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct mw_tls_thread *th = bpf_map_lookup_elem(&tls_threads, &tid);
	if (!th)
		return; /* this thread never called into libssl */
	__u64 now = bpf_ktime_get_ns();
	__u32 pflags = p->flags & (MW_P_UNTRACKED | MW_P_PORT_SERVER);
	if (th->ssl && th->in_call)
		tls_bind(p, task, th->ssl, t->sk, t->k.ino, fd, dir, pflags, MW_SB_TLS_IN);
	else if (th->ssl && dir == MW_IO_WRITE && now - th->ssl_ts < MW_TLS_NEAR_NS)
		tls_bind(p, task, th->ssl, t->sk, t->k.ino, fd, dir, pflags, MW_SB_TLS_NEAR);
	th->ino = t->k.ino;
	th->sk = (__u64)t->sk;
	th->fd = fd;
	th->dir = dir;
	th->sock_ts = now;
	th->pflags = pflags;
}

static __always_inline int ssl_enter(void *ssl, void *buf, void *outlen, __u32 sys, __u32 dir)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pt;
	struct mw_proc *p = current_tracked();
	if (!p && !cfg.ports)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct mw_tls_thread *th = bpf_map_lookup_elem(&tls_threads, &tid);
	if (!th) {
		struct mw_tls_thread z = {};
		bpf_map_update_elem(&tls_threads, &tid, &z, BPF_ANY);
		th = bpf_map_lookup_elem(&tls_threads, &tid);
		if (!th)
			return 0;
	}
	th->ssl = (__u64)ssl;
	th->in_call = 1;
	/* a read of TLS records straight before: they were this object's */
	if (th->ino && th->dir == MW_IO_READ && now - th->sock_ts < MW_TLS_NEAR_NS &&
	    !bpf_map_lookup_elem(&ssl_socks, &th->ssl)) {
		struct task_struct *task = bpf_get_current_task_btf();
		struct mw_proc *q = p;
		if (!q && (th->pflags & MW_P_UNTRACKED))
			q = stand_in(task, th->pflags);
		if (q)
			tls_bind(q, task, th->ssl, (struct sock *)th->sk, th->ino, th->fd, MW_IO_READ, th->pflags,
				 MW_SB_TLS_NEAR);
	}
	if (!buf)
		return 0; /* SSL_do_handshake: binding only */
	struct mw_ssl_call c = {.ssl = (__u64)ssl, .buf = (__u64)buf, .outlen = (__u64)outlen, .sys = sys, .dir = dir};
	bpf_map_update_elem(&ssl_calls, &pt, &c, BPF_ANY);
	return 0;
}

static __always_inline int ssl_exit(long rc)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pt;
	struct mw_tls_thread *th = bpf_map_lookup_elem(&tls_threads, &tid);
	if (th) {
		th->in_call = 0;
		th->ssl_ts = bpf_ktime_get_ns();
	}
	struct mw_ssl_call *cp = bpf_map_lookup_elem(&ssl_calls, &pt);
	if (!cp)
		return 0;
	struct mw_ssl_call c = *cp;
	bpf_map_delete_elem(&ssl_calls, &pt);
	/* All four return a C int in eax: the upper half of rax is whatever the
	 * last 32-bit move left there (zero for libssl's `mov $0xffffffff,%eax`),
	 * so -1 must be read as the int it is, not as 4294967295. */
	int ret = (int)rc;
	long n = ret;
	if (c.sys == MW_IOSYS_SSL_READ_EX || c.sys == MW_IOSYS_SSL_WRITE_EX) {
		__u64 moved = 0;
		if (ret != 1 || bpf_probe_read_user(&moved, sizeof(moved), (void *)c.outlen))
			return 0;
		n = moved;
	}
	if (n <= 0)
		return 0;
	struct mw_ssl_sock *b = bpf_map_lookup_elem(&ssl_socks, &c.ssl);
	struct task_struct *task = bpf_get_current_task_btf();
	struct mw_proc *p = current_tracked();
	if (!p) {
		if (!b || !(b->pflags & MW_P_UNTRACKED) || !(p = stand_in(task, b->pflags)))
			return 0;
	}
	count(MW_C_TLS_CALLS);
	if (!b)
		count(MW_C_TLS_UNBOUND);
	struct io_target t = {.kind = MW_KIND_TLS};
	t.k.ino = c.ssl;
	t.k.dev = 0;
	t.k.dir = c.dir;
	return capture(p, task, n, b ? b->fd : -1, &t, c.buf, NULL, 0, c.dir, c.sys, c.ssl, b ? b->ino : 0);
}

SEC("uprobe")
int BPF_KPROBE(mw_ssl_read, void *ssl, void *buf, int num)
{
	return ssl_enter(ssl, buf, NULL, MW_IOSYS_SSL_READ, MW_IO_READ);
}

SEC("uprobe")
int BPF_KPROBE(mw_ssl_write, void *ssl, void *buf, int num)
{
	return ssl_enter(ssl, buf, NULL, MW_IOSYS_SSL_WRITE, MW_IO_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(mw_ssl_read_ex, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return ssl_enter(ssl, buf, readbytes, MW_IOSYS_SSL_READ_EX, MW_IO_READ);
}

SEC("uprobe")
int BPF_KPROBE(mw_ssl_write_ex, void *ssl, void *buf, __u64 num, void *written)
{
	return ssl_enter(ssl, buf, written, MW_IOSYS_SSL_WRITE_EX, MW_IO_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(mw_ssl_handshake, void *ssl)
{
	return ssl_enter(ssl, NULL, NULL, 0, 0);
}

/* one return probe for the four data calls: the entry said which it was */
SEC("uretprobe")
int BPF_KRETPROBE(mw_ssl_ret, long rc)
{
	return ssl_exit(rc);
}

/* The same probes as one uprobe_multi link per library (kernel 6.6+): one
 * entry program for the five functions, told apart by the attach cookie,
 * and one return program. A multi link attaches and detaches in one go
 * (each single uprobe costs the kernel a synchronisation to remove). */
#define MW_TLS_HANDSHAKE_COOKIE 100

SEC("uprobe.multi")
int BPF_KPROBE(mw_ssl_entry_multi, void *ssl, void *buf, __u64 num, void *outlen)
{
	__u64 fn = bpf_get_attach_cookie(ctx);
	switch (fn) {
	case MW_IOSYS_SSL_READ:
		return ssl_enter(ssl, buf, NULL, MW_IOSYS_SSL_READ, MW_IO_READ);
	case MW_IOSYS_SSL_WRITE:
		return ssl_enter(ssl, buf, NULL, MW_IOSYS_SSL_WRITE, MW_IO_WRITE);
	case MW_IOSYS_SSL_READ_EX:
		return ssl_enter(ssl, buf, outlen, MW_IOSYS_SSL_READ_EX, MW_IO_READ);
	case MW_IOSYS_SSL_WRITE_EX:
		return ssl_enter(ssl, buf, outlen, MW_IOSYS_SSL_WRITE_EX, MW_IO_WRITE);
	case MW_TLS_HANDSHAKE_COOKIE:
		return ssl_enter(ssl, NULL, NULL, 0, 0);
	}
	return 0;
}

SEC("uretprobe.multi")
int BPF_KRETPROBE(mw_ssl_ret_multi, long rc)
{
	return ssl_exit(rc);
}

#endif /* MW_TLS_BPF_H */
