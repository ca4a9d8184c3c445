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

#define MW_TLS_NEAR_NS 50000000ULL /* "straight after": within 50 ms on one thread (the record type
					 * and length must agree too; an emulated or loaded host is slow) */

struct mw_ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 outlen; /* _ex: where the library writes the byte count */
	__u32 sys;
	__u32 dir;
};

struct mw_tls_thread {
	__u64 ssl;      /* the SSL object this thread is inside (in_call), or was last */
	__u64 w_ssl;    /* the last SSL object that wrote plaintext here (SSL_write returned n > 0) */
	__u64 w_ts;     /* when */
	__u64 h_ssl;    /* the last SSL object whose SSL_do_handshake returned here */
	__u64 h_ts;     /* when */
	__u64 ino;      /* the last TCP socket this thread moved bytes on */
	__u64 sk;
	__u64 sock_ts;
	__s32 fd;
	__u32 in_call;
	__u32 dir;
	__u32 pflags;   /* the process's MW_P_UNTRACKED | MW_P_PORT_SERVER, when captured by port */
	__u32 w_len;    /* that write's plaintext bytes in its first record (at most 16384) */
	__u32 rec_len;  /* the first TLS record the last socket read brought: its length */
	__u32 rec_type; /* and its type (22 handshake, 23 application data; 0: not a record start) */
};

/* A TLS record's header: type (22 handshake, 23 application data), version
 * 3.x, length. 0 when the buffer does not start with one. */
#define MW_TLS_RECORD_MAX 16384
#define MW_TLS_HANDSHAKE 22
#define MW_TLS_APPDATA 23
static __always_inline __u32 tls_record(__u64 ubuf, __u32 *type)
{
	__u8 h[5] = {};
	*type = 0;
	if (!ubuf || bpf_probe_read_user(h, sizeof(h), (void *)ubuf) || (h[0] != 22 && h[0] != 23) || h[1] != 3)
		return 0;
	*type = h[0];
	return (__u32)h[3] << 8 | h[4];
}

/* Does a record of rec bytes carry the first n plaintext bytes of one SSL
 * call? A record is its plaintext plus the cipher's overhead: 17 in TLS 1.3
 * (the inner type and a 16-byte tag), 24 for TLS 1.2 AES-GCM, 16 for
 * ChaCha20-Poly1305, up to ~80 for TLS 1.2's CBC suites (IV, MAC, padding).
 * With memory BIOs the socket I/O next to an SSL call may belong to another
 * connection of the same event loop: the lengths must agree too. */
static __always_inline int tls_record_fits(__u32 rec, __u64 n)
{
	__u64 first = n < MW_TLS_RECORD_MAX ? n : MW_TLS_RECORD_MAX;
	return rec >= first + 16 && rec <= first + 96;
}

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

/* An SSL object is an address in one process: two processes can hold the
 * same one, and a freed one's address comes back for the next connection. */
struct mw_ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mw_ssl_key);
	__type(value, struct mw_ssl_sock);
} ssl_socks SEC(".maps");

static __always_inline struct mw_ssl_key ssl_key(__u64 ssl)
{
	struct mw_ssl_key k = {.ssl = ssl, .tgid = bpf_get_current_pid_tgid() >> 32};
	return k;
}

static __always_inline void tls_bind(struct mw_proc *p, struct task_struct *task, __u64 ssl, struct sock *sk,
				     __u64 ino, __s32 fd, __u32 dir, __u32 pflags, __u64 how)
{
	struct mw_ssl_sock b = {.ino = ino, .fd = fd, .pflags = pflags};
	struct mw_ssl_key k = ssl_key(ssl);
	if (bpf_map_update_elem(&ssl_socks, &k, &b, BPF_NOEXIST))
		return; /* bound already */
	note_captured(sk, ino);
	if (p)
		emit_sock(p, task, sk, fd, dir, ino, how, ssl, 0);
}

/* The SSL object's life ends: its binding and its streams' state go with it,
 * since the allocator gives its address to the next connection (asyncio and
 * httpx open and free one per connection), which would inherit the old
 * socket and the old HTTP parser. Userspace is told, to finish the stream. */
static __always_inline int ssl_gone(void *ssl)
{
	__u64 pt = bpf_get_current_pid_tgid();
	struct mw_ssl_key k = ssl_key((__u64)ssl);
	struct mw_ssl_sock *b = bpf_map_lookup_elem(&ssl_socks, &k);
	struct mw_proc *p = current_tracked();
	struct task_struct *task = bpf_get_current_task_btf();
	if (!p && b && (b->pflags & MW_P_UNTRACKED))
		p = stand_in(task, b->pflags);
	struct mw_stream_key sk = {.ino = (__u64)ssl, .dev = pt >> 32, .dir = MW_IO_READ};
	int known = bpf_map_delete_elem(&streams, &sk) == 0;
	sk.dir = MW_IO_WRITE;
	known |= bpf_map_delete_elem(&streams, &sk) == 0;
	if (b)
		bpf_map_delete_elem(&ssl_socks, &k);
	if (p && (known || b))
		emit_sock(p, task, NULL, -1, 0, 0, MW_SB_TLS_FREED, (__u64)ssl, 0);
	return 0;
}

/* A tracked (or port-matched) thread moved bytes on TCP socket fd: bind the
 * SSL object it is inside, or has just left, to the socket; remember the
 * socket for an SSL_* call that comes straight after. pflags: the process's
 * MW_P_UNTRACKED/MW_P_PORT_SERVER flags, as mw_io_exit found them (a
 * port-matched process's stand-in is made again from them). Global, as
 * mw_io_exit: scalars only, and called after it, not from it, so that their
 * frames are never on the stack together. */
__noinline int mw_tls_saw_socket(long fd, __u64 dir, __u64 pflags, __u64 first)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct mw_tls_thread *th = bpf_map_lookup_elem(&tls_threads, &tid);
	if (!th)
		return 0; /* this thread never called into libssl */
	pflags &= MW_P_UNTRACKED | MW_P_PORT_SERVER;
	struct task_struct *task = bpf_get_current_task_btf();
	struct io_target t = {};
	if (fd_kind(task, fd, dir, &t) != MW_KIND_TCP)
		return 0;
	__u64 ino = t.k.ino;
	struct sock *sk = t.sk;
	struct mw_proc *p = current_tracked();
	if (!p && (pflags & MW_P_UNTRACKED))
		p = stand_in(task, pflags);
	__u64 now = bpf_ktime_get_ns();
	__u32 type;
	__u32 rec = tls_record(first, &type);
	if (th->ssl && th->in_call) {
		/* the library's own I/O: this object speaks over this socket. Bound to another one,
		 * it is a freed object's address given to a new connection (BoringSSL in Bun is
		 * probed without SSL_free): the old binding and streams go first */
		struct mw_ssl_key k = ssl_key(th->ssl);
		struct mw_ssl_sock *old = bpf_map_lookup_elem(&ssl_socks, &k);
		if (old && old->ino != ino)
			ssl_gone((void *)th->ssl);
		tls_bind(p, task, th->ssl, sk, ino, fd, dir, pflags, MW_SB_TLS_IN);
	} else if (dir == MW_IO_WRITE) {
		/* memory BIOs: the first socket write after an SSL call, soon, that carries what the
		 * call produced: a handshake record after SSL_do_handshake, the first record of an
		 * SSL_write's plaintext (its length says so) after SSL_write. Bound once, so that
		 * the first bytes of an untracked client are known to go to a watched port. */
		if (th->h_ssl && now - th->h_ts < MW_TLS_NEAR_NS && type == MW_TLS_HANDSHAKE)
			tls_bind(p, task, th->h_ssl, sk, ino, fd, dir, pflags, MW_SB_TLS_NEAR);
		else if (th->w_ssl && now - th->w_ts < MW_TLS_NEAR_NS && type == MW_TLS_APPDATA &&
			 tls_record_fits(rec, th->w_len))
			tls_bind(p, task, th->w_ssl, sk, ino, fd, dir, pflags, MW_SB_TLS_NEAR);
		th->h_ssl = th->w_ssl = 0;
	}
	th->rec_len = dir == MW_IO_READ ? rec : 0;
	th->rec_type = dir == MW_IO_READ ? type : 0;
	th->ino = ino;
	th->sk = (__u64)sk;
	th->fd = fd;
	th->dir = dir;
	th->sock_ts = now;
	th->pflags = pflags;
	return 0;
}

static __always_inline int ssl_enter(void *ssl, void *buf, void *outlen, __u32 sys, __u32 dir)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pt;
	struct mw_proc *p = current_tracked();
	if (!p && !cfg.ports)
		return 0;
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
	if (!buf) { /* SSL_do_handshake: binding only */
		/* memory BIOs: the handshake record a socket read brought straight before */
		if (th->ino && th->dir == MW_IO_READ && th->rec_type == MW_TLS_HANDSHAKE &&
		    bpf_ktime_get_ns() - th->sock_ts < MW_TLS_NEAR_NS) {
			struct mw_ssl_key k = ssl_key((__u64)ssl);
			struct task_struct *task = bpf_get_current_task_btf();
			struct mw_proc *q = p;
			if (!q && (th->pflags & MW_P_UNTRACKED))
				q = stand_in(task, th->pflags);
			if (q && !bpf_map_lookup_elem(&ssl_socks, &k))
				tls_bind(q, task, (__u64)ssl, (struct sock *)th->sk, th->ino, th->fd, MW_IO_READ,
					 th->pflags, MW_SB_TLS_NEAR);
			th->ino = 0;
		}
		return 0;
	}
	struct mw_ssl_call c = {.ssl = (__u64)ssl, .buf = (__u64)buf, .outlen = (__u64)outlen, .sys = sys, .dir = dir};
	bpf_map_update_elem(&ssl_calls, &pt, &c, BPF_ANY);
	return 0;
}

static __always_inline int ssl_exit(long rc)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pt;
	struct mw_tls_thread *th = bpf_map_lookup_elem(&tls_threads, &tid);
	if (th)
		th->in_call = 0;
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
	if (n <= 0) {
		/* nothing moved, but the call may have advanced the handshake (Node and most
		 * event loops never call SSL_do_handshake: the first SSL_read or SSL_write does
		 * it): a handshake record the thread writes next is this object's */
		if (th) {
			th->h_ssl = c.ssl;
			th->h_ts = bpf_ktime_get_ns();
		}
		return 0;
	}
	struct mw_ssl_key sk = ssl_key(c.ssl);
	struct mw_ssl_sock *b = bpf_map_lookup_elem(&ssl_socks, &sk);
	struct task_struct *task = bpf_get_current_task_btf();
	struct mw_proc *p = current_tracked();
	if (th && c.dir == MW_IO_WRITE && !b) {
		/* the loop writes the records out next: bound there. The first write not yet
		 * flushed is the one whose record leads (Node writes headers and body with two
		 * SSL_write calls and both records with one writev) */
		__u64 now = bpf_ktime_get_ns();
		if (!th->w_ssl || now - th->w_ts >= MW_TLS_NEAR_NS) {
			th->w_ssl = c.ssl;
			th->w_ts = now;
			th->w_len = n < MW_TLS_RECORD_MAX ? n : MW_TLS_RECORD_MAX;
		}
	} else if (th && c.dir == MW_IO_READ && th->ino && th->dir == MW_IO_READ) {
		if (!b && bpf_ktime_get_ns() - th->sock_ts < MW_TLS_NEAR_NS && tls_record_fits(th->rec_len, n)) {
			/* a socket read straight before brought the record this read decrypted */
			struct mw_proc *q = p;
			if (!q && (th->pflags & MW_P_UNTRACKED))
				q = stand_in(task, th->pflags);
			if (q) {
				tls_bind(q, task, c.ssl, (struct sock *)th->sk, th->ino, th->fd, MW_IO_READ, th->pflags,
					 MW_SB_TLS_NEAR);
				b = bpf_map_lookup_elem(&ssl_socks, &sk);
			}
		}
		th->ino = 0; /* the first read after a socket read is the one its record can bind */
	}
	if (!p) {
		if (!b || !(b->pflags & MW_P_UNTRACKED) || !(p = stand_in(task, b->pflags)))
			return 0;
	}
	count(MW_C_TLS_CALLS);
	if (!b)
		count(MW_C_TLS_UNBOUND);
	struct io_target t = {.kind = MW_KIND_TLS};
	t.k.ino = c.ssl;
	t.k.dev = pt >> 32; /* a TLS stream: the SSL object in its process */
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

SEC("uprobe")
int BPF_KPROBE(mw_ssl_free, void *ssl)
{
	return ssl_gone(ssl);
}

/* one return probe for the four data calls: the entry said which it was */
SEC("uretprobe")
int BPF_KRETPROBE(mw_ssl_ret, long rc)
{
	return ssl_exit(rc);
}

/* SSL_do_handshake returned: no longer inside it (a socket the loop uses now
 * is not the library's own); what it produced goes out next, if anything. */
static __always_inline int handshake_exit(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct mw_tls_thread *th = bpf_map_lookup_elem(&tls_threads, &tid);
	if (th && th->in_call) {
		th->in_call = 0;
		th->h_ssl = th->ssl;
		th->h_ts = bpf_ktime_get_ns();
	}
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(mw_ssl_handshake_ret, long rc)
{
	return handshake_exit();
}

/* ---- Go's crypto/tls ------------------------------------------------
 *
 * A Go program carries its own TLS: (*crypto/tls.Conn).Read and .Write.
 * Go's register ABI (1.17+) passes the receiver and the slice in AX (the
 * *Conn), BX (the buffer), CX (its length), and returns n in AX; R14 holds
 * the current goroutine. A goroutine can park inside Read and resume on
 * another thread, and Go's stack moves, so there is no uretprobe: a uprobe
 * on each of the function's return instructions (found by userspace) ends
 * the call, matched to its entry by goroutine. The socket is the Conn's
 * own: Conn.conn is a net.Conn interface whose data word points to a
 * *net.TCPConn, whose first word is its *netFD, whose poll.FD has Sysfd at
 * byte 16 (the same layout from Go 1.9 to 1.24); the fd found there must be
 * a TCP socket of this process, or the stream is left unbound. */
struct mw_go_key {
	__u64 g;
	__u32 tgid;
	__u32 dir;
};

struct mw_go_call {
	__u64 conn;
	__u64 buf;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mw_go_key);
	__type(value, struct mw_go_call);
} go_calls SEC(".maps");

static __always_inline struct mw_go_key go_key(struct pt_regs *regs, __u32 dir)
{
	struct mw_go_key k = {.g = regs->r14, .tgid = bpf_get_current_pid_tgid() >> 32, .dir = dir};
	return k;
}

static __always_inline int go_enter(struct pt_regs *regs, __u32 dir)
{
	if (!current_tracked() && !cfg.ports)
		return 0;
	struct mw_go_key k = go_key(regs, dir);
	struct mw_go_call c = {.conn = regs->ax, .buf = regs->bx};
	bpf_map_update_elem(&go_calls, &k, &c, BPF_ANY);
	return 0;
}

/* the fd inside a *tls.Conn (see above); -1 if the chain does not read */
static __always_inline long go_conn_fd(__u64 conn)
{
	__u64 data = 0, nfd = 0;
	long fd = -1;
	if (bpf_probe_read_user(&data, sizeof(data), (void *)(conn + 8)) || !data ||
	    bpf_probe_read_user(&nfd, sizeof(nfd), (void *)data) || !nfd ||
	    bpf_probe_read_user(&fd, sizeof(fd), (void *)(nfd + 16)))
		return -1;
	return fd >= 0 && fd < (1 << 24) ? fd : -1;
}

static __always_inline int go_exit(struct pt_regs *regs, __u32 dir)
{
	struct mw_go_key k = go_key(regs, dir);
	struct mw_go_call *cp = bpf_map_lookup_elem(&go_calls, &k);
	if (!cp)
		return 0;
	struct mw_go_call c = *cp;
	bpf_map_delete_elem(&go_calls, &k);
	long n = (long)regs->ax;
	if (n <= 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct mw_proc *p = current_tracked();
	struct mw_ssl_key sk = ssl_key(c.conn);
	struct mw_ssl_sock *b = bpf_map_lookup_elem(&ssl_socks, &sk);
	long fd = go_conn_fd(c.conn);
	struct io_target s = {};
	int tcp = fd >= 0 && fd_kind(task, fd, dir, &s) == MW_KIND_TCP;
	if (b && tcp && b->ino != s.k.ino) {
		/* Go has no SSL_free: the garbage collector gave a closed Conn's address to a
		 * new one, whose binding, stream state and HTTP parser would be the old one's */
		ssl_gone((void *)c.conn);
		b = NULL;
	}
	if (!b) { /* first bytes: the Conn's own socket */
		if (tcp) {
			struct mw_proc *q = p ? p : port_candidate(task, &s);
			if (q) {
				tls_bind(q, task, c.conn, s.sk, s.k.ino, fd, dir, q->flags & (MW_P_UNTRACKED | MW_P_PORT_SERVER),
					 MW_SB_TLS_IN);
				b = bpf_map_lookup_elem(&ssl_socks, &sk);
			}
		}
	}
	if (!p) {
		if (!b || !(b->pflags & MW_P_UNTRACKED) || !(p = stand_in(task, b->pflags)))
			return 0;
	}
	if (!b)
		count(MW_C_TLS_UNBOUND);
	struct io_target t = {.kind = MW_KIND_TLS};
	t.k.ino = c.conn;
	t.k.dev = bpf_get_current_pid_tgid() >> 32;
	t.k.dir = dir;
	return capture(p, task, n, b ? b->fd : -1, &t, c.buf, NULL, 0, dir,
		       dir == MW_IO_READ ? MW_IOSYS_GO_READ : MW_IOSYS_GO_WRITE, c.conn, b ? b->ino : 0);
}

SEC("uprobe")
int mw_go_read(struct pt_regs *ctx)
{
	return go_enter(ctx, MW_IO_READ);
}

SEC("uprobe")
int mw_go_read_ret(struct pt_regs *ctx)
{
	return go_exit(ctx, MW_IO_READ);
}

SEC("uprobe")
int mw_go_write(struct pt_regs *ctx)
{
	return go_enter(ctx, MW_IO_WRITE);
}

SEC("uprobe")
int mw_go_write_ret(struct pt_regs *ctx)
{
	return go_exit(ctx, MW_IO_WRITE);
}

/* The same probes as one uprobe_multi link per library (kernel 6.6+): one
 * entry program for the five functions, told apart by the attach cookie,
 * and one return program. A multi link attaches and detaches in one go
 * (each single uprobe costs the kernel a synchronisation to remove). */
#define MW_TLS_HANDSHAKE_COOKIE 100
#define MW_TLS_FREE_COOKIE 101
#define MW_GO_READ_COOKIE 200  /* (*tls.Conn).Read's entry */
#define MW_GO_READ_RET_COOKIE 201 /* one of its return instructions */
#define MW_GO_WRITE_COOKIE 202
#define MW_GO_WRITE_RET_COOKIE 203

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
	case MW_TLS_FREE_COOKIE:
		return ssl_gone(ssl);
	}
	return 0;
}

SEC("uretprobe.multi")
int BPF_KRETPROBE(mw_ssl_ret_multi, long rc)
{
	if (bpf_get_attach_cookie(ctx) == MW_TLS_HANDSHAKE_COOKIE)
		return handshake_exit();
	return ssl_exit(rc);
}

/* Go's four probe kinds as one uprobe_multi link per binary: the cookie says
 * which (entries are even, return instructions odd) */
SEC("uprobe.multi")
int mw_go_multi(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 dir = cookie >= MW_GO_WRITE_COOKIE ? MW_IO_WRITE : MW_IO_READ;
	if (cookie < MW_GO_READ_COOKIE || cookie > MW_GO_WRITE_RET_COOKIE)
		return 0;
	return cookie & 1 ? go_exit(ctx, dir) : go_enter(ctx, dir);
}

#endif /* MW_TLS_BPF_H */
