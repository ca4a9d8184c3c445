/*
 * The evasion suite's hands: each case does one action the way a tool that
 * knows mcpwitness would, to get past the kernel hooks (tests/test_evasion.py).
 *
 *   evasion CASE ARG...
 *
 * It prints one line: "ok DETAIL" (the action worked) or "failed ERRNO-NAME
 * (STEP)" (the kernel refused it; exit 1), or "unsupported WHY" (exit 3: the
 * kernel lacks what the case needs). A case that runs a program passes that
 * program's output through. A process killed by a policy prints nothing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int fail(const char *step)
{
	int e = errno;
	printf("failed %s (%s)\n", strerrorname_np(e) ? strerrorname_np(e) : "?", step);
	return 1;
}

static int unsupported(const char *why)
{
	printf("unsupported %s (%s)\n", why, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
	return 3;
}

/* read a file through fd and print it */
static int show(int fd, const char *how)
{
	char buf[256];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return fail("read");
	buf[n] = 0;
	printf("ok %s: %s\n", how, buf);
	close(fd);
	return 0;
}

static void split(const char *path, char *dir, char *base)
{
	const char *slash = strrchr(path, '/');
	snprintf(dir, 4096, "%.*s", (int)(slash - path), path);
	snprintf(base, 4096, "%s", slash + 1);
}

/* ---- io_uring, raw: one submission, one completion ---- */

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int ring_open(struct ring *r)
{
	struct io_uring_params p = {0};
	r->fd = syscall(__NR_io_uring_setup, 4, &p);
	if (r->fd < 0)
		return -1;
	size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (cq_sz > sq_sz)
		sq_sz = cq_sz;
	char *sq = mmap(0, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	char *cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP))
		cq = mmap(0, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
	r->sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED)
		return -1;
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

/* submit sqe, wait for its completion, return its result */
static int ring_do(struct ring *r, const struct io_uring_sqe *sqe)
{
	unsigned tail = *r->sq_tail, i = tail & *r->sq_mask;
	r->sqes[i] = *sqe;
	r->sq_array[i] = i;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
	int res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

/* ---- files: argv[2] = the file ---- */

static int f_open(char **a) { int fd = open(a[2], O_RDONLY); return fd < 0 ? fail("open") : show(fd, "open"); }

static int f_io_uring(char **a)
{
	struct ring r;
	if (ring_open(&r))
		return unsupported("io_uring_setup");
	struct io_uring_sqe s = {.opcode = IORING_OP_OPENAT, .fd = AT_FDCWD, .addr = (uint64_t)a[2],
				 .open_flags = O_RDONLY};
	int fd = ring_do(&r, &s);
	if (fd < 0) {
		errno = -fd;
		return fail("IORING_OP_OPENAT");
	}
	return show(fd, "io_uring openat");
}

static int f_openat2(char **a)
{
	char dir[4096], base[4096];
	split(a[2], dir, base);
	int d = open(dir, O_PATH | O_DIRECTORY);
	struct open_how how = {.flags = O_RDONLY,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	int fd = syscall(__NR_openat2, d, base, &how, sizeof(how));
	return fd < 0 ? fail("openat2") : show(fd, "openat2 RESOLVE_BENEATH");
}

static int f_by_handle(char **a)
{
	char dir[4096], base[4096];
	split(a[2], dir, base);
	struct {
		struct file_handle h;
		unsigned char b[128];
	} fh = {.h.handle_bytes = 128};
	int mount_id;
	if (name_to_handle_at(AT_FDCWD, a[2], &fh.h, &mount_id, 0))
		return unsupported("name_to_handle_at");
	int m = open(dir, O_RDONLY | O_DIRECTORY);
	int fd = open_by_handle_at(m, &fh.h, O_RDONLY);
	return fd < 0 ? fail("open_by_handle_at") : show(fd, "open_by_handle_at");
}

static int f_dirfd(char **a)
{
	char dir[4096], base[4096];
	split(a[2], dir, base);
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	int fd = openat(d, base, O_RDONLY);
	return fd < 0 ? fail("openat(dirfd)") : show(fd, "openat relative to a dirfd");
}

static int f_proc_fd(char **a)
{
	int p = open(a[2], O_PATH); /* an O_PATH fd opens nothing */
	char via[64];
	snprintf(via, sizeof(via), "/proc/self/fd/%d", p);
	int fd = open(via, O_RDONLY);
	return fd < 0 ? fail("open /proc/self/fd/N") : show(fd, "reopened through /proc/self/fd");
}

/* argv[3]: where to make the link, symbolic or hard */
static int through_link(char **a, int hard)
{
	unlink(a[3]);
	if (hard ? link(a[2], a[3]) : symlink(a[2], a[3]))
		return fail(hard ? "link" : "symlink");
	int fd = open(a[3], O_RDONLY);
	return fd < 0 ? fail("open through the link") : show(fd, hard ? "through a hard link" : "through a symlink");
}

static int f_symlink(char **a) { return through_link(a, 0); }
static int f_hardlink(char **a) { return through_link(a, 1); }

/* argv[3]: an empty directory to bind the file's directory onto, in a mount namespace of its own */
static int f_bind(char **a)
{
	char dir[4096], base[4096], alias[8300];
	split(a[2], dir, base);
	if (unshare(CLONE_NEWNS))
		return unsupported("unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) || mount(dir, a[3], NULL, MS_BIND, NULL))
		return fail("mount --bind");
	snprintf(alias, sizeof(alias), "%s/%s", a[3], base);
	int fd = open(alias, O_RDONLY);
	return fd < 0 ? fail("open through a bind mount") : show(fd, "through a bind mount");
}

/* ---- execs: argv[2] = the program (it prints its argv[1]) ---- */

static char *prog_argv[] = {"forbidden", "ran", NULL};

static int reap(pid_t pid, const char *how)
{
	int st;
	if (waitpid(pid, &st, 0) < 0)
		return fail("waitpid");
	if (WIFSIGNALED(st)) {
		printf("killed %s: signal %d\n", how, WTERMSIG(st));
		return 2;
	}
	printf("ok %s: exit %d\n", how, WEXITSTATUS(st));
	return WEXITSTATUS(st) ? 1 : 0;
}

static int x_execve(char **a)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execve(a[2], prog_argv, environ);
		fail("execve");
		_exit(1);
	}
	return reap(pid, "execve");
}

static int x_memfd(char **a)
{
	int src = open(a[2], O_RDONLY);
	int m = memfd_create("innocent", 0);
	if (src < 0 || m < 0)
		return fail("memfd_create");
	char buf[65536];
	ssize_t n;
	while ((n = read(src, buf, sizeof(buf))) > 0)
		write(m, buf, n);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		fexecve(m, prog_argv, environ);
		fail("fexecve");
		_exit(1);
	}
	return reap(pid, "fexecve of a memfd copy");
}

static int x_execveat(char **a)
{
	int fd = open(a[2], O_PATH);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		syscall(__NR_execveat, fd, "", prog_argv, environ, AT_EMPTY_PATH);
		fail("execveat AT_EMPTY_PATH");
		_exit(1);
	}
	return reap(pid, "execveat AT_EMPTY_PATH");
}

static int x_posix_spawn(char **a)
{
	pid_t pid;
	fflush(stdout);
	int e = posix_spawn(&pid, a[2], NULL, NULL, prog_argv, environ);
	if (e) {
		errno = e;
		return fail("posix_spawn");
	}
	return reap(pid, "posix_spawn");
}

static int x_vfork(char **a)
{
	fflush(stdout);
	pid_t pid = vfork();
	if (pid == 0) {
		execve(a[2], prog_argv, environ);
		_exit(127);
	}
	return reap(pid, "vfork");
}

struct clone_args_v0 {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

/* clone3 with CLONE_PARENT: the child is the caller's sibling, so the caller
 * waits for it through a pipe whose write end only the child holds */
static int x_clone3_parent(char **a)
{
	int p[2];
	pipe(p);
	fflush(stdout);
	struct clone_args_v0 ca = {.flags = CLONE_PARENT};
	long pid = syscall(__NR_clone3, &ca, sizeof(ca));
	if (pid < 0)
		return unsupported("clone3");
	if (pid == 0) {
		close(p[0]);
		execve(a[2], prog_argv, environ);
		_exit(127);
	}
	close(p[1]);
	char c;
	while (read(p[0], &c, 1) > 0)
		;
	printf("ok clone3 CLONE_PARENT: pid %ld\n", pid);
	return 0;
}

static int x_clone3_newpid(char **a)
{
	fflush(stdout);
	struct clone_args_v0 ca = {.flags = CLONE_NEWPID, .exit_signal = SIGCHLD};
	long pid = syscall(__NR_clone3, &ca, sizeof(ca));
	if (pid < 0)
		return unsupported("clone3 CLONE_NEWPID");
	if (pid == 0) {
		execve(a[2], prog_argv, environ);
		_exit(127);
	}
	return reap(pid, "clone3 CLONE_NEWPID");
}

/* argv[3]: a directory for the two scripts: s1 runs s2 runs the program */
static int x_shebang(char **a)
{
	char s1[4200], s2[4200];
	snprintf(s1, sizeof(s1), "%s/s1", a[3]);
	snprintf(s2, sizeof(s2), "%s/s2", a[3]);
	FILE *f = fopen(s2, "w");
	fprintf(f, "#!%s\n", a[2]);
	fclose(f);
	f = fopen(s1, "w");
	fprintf(f, "#!%s\n", s2);
	fclose(f);
	chmod(s1, 0755);
	chmod(s2, 0755);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = {s1, NULL};
		execve(s1, argv, environ);
		fail("execve shebang");
		_exit(1);
	}
	return reap(pid, "a shebang chain");
}

static int x_ldso(char **a)
{
	const char *ld = "/lib64/ld-linux-x86-64.so.2";
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = {(char *)ld, a[2], "ran", NULL};
		execve(ld, argv, environ);
		fail("execve ld.so");
		_exit(1);
	}
	return reap(pid, "ld.so with the program as its argument");
}

/* ---- network: argv[2] = IPv4 address, argv[3] = TCP port, argv[4] = UDP port ---- */

static struct sockaddr_in sin_of(const char *host, const char *port)
{
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
	inet_pton(AF_INET, host, &s.sin_addr);
	return s;
}

static int n_connect(char **a)
{
	struct sockaddr_in s = sin_of(a[2], a[3]);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&s, sizeof(s)))
		return fail("connect");
	printf("ok connect\n");
	return 0;
}

static int n_io_uring_connect(char **a)
{
	struct ring r;
	if (ring_open(&r))
		return unsupported("io_uring_setup");
	struct sockaddr_in s = sin_of(a[2], a[3]);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct io_uring_sqe q = {.opcode = IORING_OP_CONNECT, .fd = fd, .addr = (uint64_t)&s, .off = sizeof(s)};
	int res = ring_do(&r, &q);
	if (res < 0) {
		errno = -res;
		return fail("IORING_OP_CONNECT");
	}
	struct io_uring_sqe w = {.opcode = IORING_OP_SEND, .fd = fd, .addr = (uint64_t)"exfil via io_uring", .len = 18};
	res = ring_do(&r, &w);
	printf("ok io_uring connect, send %d\n", res);
	return 0;
}

static int n_sendto(char **a)
{
	struct sockaddr_in s = sin_of(a[2], a[4]);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (sendto(fd, "exfil", 5, 0, (struct sockaddr *)&s, sizeof(s)) < 0)
		return fail("sendto");
	printf("ok sendto without connect\n");
	return 0;
}

static int n_sendmmsg(char **a)
{
	struct sockaddr_in s = sin_of(a[2], a[4]);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct iovec v[2] = {{"one", 3}, {"two", 3}};
	struct mmsghdr m[2] = {{.msg_hdr = {.msg_name = &s, .msg_namelen = sizeof(s), .msg_iov = &v[0], .msg_iovlen = 1}},
			       {.msg_hdr = {.msg_name = &s, .msg_namelen = sizeof(s), .msg_iov = &v[1], .msg_iovlen = 1}}};
	int n = sendmmsg(fd, m, 2, 0);
	if (n < 0)
		return fail("sendmmsg");
	printf("ok sendmmsg: %d sent\n", n);
	return 0;
}

/* a DNS query whose name carries the data, over UDP, as a resolver sends it */
static int n_dns(char **a)
{
	struct sockaddr_in s = sin_of(a[2], a[4]);
	unsigned char q[512] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	size_t n = 12;
	const char *labels[] = {"c2VjcmV0", "exfil", "test"};
	for (int i = 0; i < 3; i++) {
		q[n++] = strlen(labels[i]);
		memcpy(q + n, labels[i], strlen(labels[i]));
		n += strlen(labels[i]);
	}
	q[n++] = 0;
	q[n++] = 0, q[n++] = 16, q[n++] = 0, q[n++] = 1; /* TXT, IN */
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (sendto(fd, q, n, 0, (struct sockaddr *)&s, sizeof(s)) < 0)
		return fail("sendto (DNS)");
	printf("ok DNS query over UDP\n");
	return 0;
}

static int n_mapped(char **a)
{
	struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(a[3]))};
	char mapped[64];
	snprintf(mapped, sizeof(mapped), "::ffff:%s", a[2]);
	inet_pton(AF_INET6, mapped, &s.sin6_addr);
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&s, sizeof(s)))
		return fail("connect ::ffff:");
	printf("ok connect to an IPv4-mapped IPv6 address\n");
	return 0;
}

/* a UDP datagram built by hand on a raw socket: no UDP socket, no sendmsg4 hook */
static int n_raw(char **a)
{
	struct sockaddr_in s = sin_of(a[2], a[4]);
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
	if (fd < 0)
		return unsupported("raw socket");
	struct {
		struct udphdr h;
		char body[5];
	} d = {.h = {.source = htons(40000), .dest = s.sin_port, .len = htons(sizeof(d)), .check = 0}};
	memcpy(d.body, "exfil", 5);
	if (sendto(fd, &d, sizeof(d), 0, (struct sockaddr *)&s, sizeof(s)) < 0)
		return fail("sendto (raw)");
	printf("ok raw socket\n");
	return 0;
}

static uint16_t csum(const void *p, size_t n)
{
	const uint16_t *w = p;
	uint32_t sum = 0;
	for (; n > 1; n -= 2)
		sum += *w++;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* a whole IPv4+UDP packet handed to the loopback device on a packet socket */
static int n_packet(char **a)
{
	int fd = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	if (fd < 0)
		return unsupported("packet socket");
	struct sockaddr_in dst = sin_of(a[2], a[4]);
	struct {
		unsigned char ip[20];
		struct udphdr h;
		char body[5];
	} __attribute__((packed)) pk = {0};
	pk.ip[0] = 0x45;
	uint16_t tot = htons(sizeof(pk));
	memcpy(pk.ip + 2, &tot, 2);
	pk.ip[8] = 64;
	pk.ip[9] = IPPROTO_UDP;
	inet_pton(AF_INET, "127.0.0.1", pk.ip + 12);
	memcpy(pk.ip + 16, &dst.sin_addr, 4);
	uint16_t c = csum(pk.ip, 20);
	memcpy(pk.ip + 10, &c, 2);
	pk.h = (struct udphdr){.source = htons(40001), .dest = dst.sin_port, .len = htons(13), .check = 0};
	memcpy(pk.body, "exfil", 5);
	struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
				 .sll_ifindex = if_nametoindex("lo"), .sll_halen = 6};
	if (sendto(fd, &pk, sizeof(pk), 0, (struct sockaddr *)&ll, sizeof(ll)) < 0)
		return fail("sendto (packet)");
	printf("ok packet socket\n");
	return 0;
}

/* argv[2]: a Unix socket where an untracked broker hands over a TCP socket it connected */
static int n_scm_rights(char **a)
{
	struct sockaddr_un u = {.sun_family = AF_UNIX};
	snprintf(u.sun_path, sizeof(u.sun_path), "%s", a[2]);
	int us = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(us, (struct sockaddr *)&u, sizeof(u)))
		return fail("connect to the broker");
	char c;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec v = {&c, 1};
	struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
	if (recvmsg(us, &m, 0) <= 0)
		return fail("recvmsg");
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	if (!h || h->cmsg_type != SCM_RIGHTS)
		return fail("no fd passed");
	int fd;
	memcpy(&fd, CMSG_DATA(h), sizeof(fd));
	if (write(fd, "exfil via a passed socket", 25) < 0)
		return fail("write");
	printf("ok wrote through a socket passed in\n");
	return 0;
}

/* ---- escaping the tree: argv[2] = the file, opened by the escaped process ---- */

/* the escaped process reports through a pipe: the caller waits for it */
static int escaped(int (*go)(int wfd, char **a), char **a, const char *how)
{
	int p[2];
	pipe(p);
	fflush(stdout);
	if (fork() == 0) {
		close(p[0]);
		_exit(go(p[1], a));
	}
	close(p[1]);
	char buf[512];
	ssize_t n, got = 0;
	while ((n = read(p[0], buf + got, sizeof(buf) - 1 - got)) > 0)
		got += n;
	buf[got] = 0;
	while (wait(NULL) > 0)
		;
	if (!got) {
		printf("killed %s: no report\n", how);
		return 2;
	}
	printf("%s %s\n", buf, how);
	return strncmp(buf, "ok", 2) ? 1 : 0;
}

static int report_open(int wfd, const char *path)
{
	char buf[300];
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		dprintf(wfd, "failed %s (open)", strerrorname_np(errno));
		return 1;
	}
	ssize_t n = read(fd, buf, 200);
	dprintf(wfd, "ok %.*s", (int)(n > 0 ? n : 0), buf);
	return 0;
}

static int go_daemon(int wfd, char **a)
{
	setsid();
	if (fork())
		return 0;
	_exit(report_open(wfd, a[2]));
}

static int go_subreaper(int wfd, char **a)
{
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (fork() == 0) {
		if (fork() == 0) {
			while (getppid() != getpgrp() && getppid() == 1) /* wait to be reparented */
				usleep(1000);
			usleep(20000);
			_exit(report_open(wfd, a[2]));
		}
		_exit(0);
	}
	while (wait(NULL) > 0)
		;
	return 0;
}

static int go_unshare(int wfd, char **a)
{
	if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC)) {
		dprintf(wfd, "unsupported unshare");
		return 3;
	}
	return report_open(wfd, a[2]);
}

/* argv[3]: a cgroup2 directory to create and move into */
static int go_cgroup(int wfd, char **a)
{
	char procs[4200];
	mkdir(a[3], 0755);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", a[3]);
	int fd = open(procs, O_WRONLY);
	if (fd < 0 || dprintf(fd, "%d\n", getpid()) < 0) {
		dprintf(wfd, "unsupported cgroup move");
		return 3;
	}
	close(fd);
	return report_open(wfd, a[2]);
}

static int t_daemon(char **a) { return escaped(go_daemon, a, "after a double fork and setsid"); }
static int t_subreaper(char **a) { return escaped(go_subreaper, a, "reparented to a subreaper"); }
static int t_unshare(char **a) { return escaped(go_unshare, a, "in new namespaces"); }
static int t_cgroup(char **a) { return escaped(go_cgroup, a, "in another cgroup"); }

/* argv[2]: the puppet's pid, argv[3]: its command buffer's address, argv[4]: the file to make it open */
static int t_vm_write(char **a)
{
	struct iovec local = {a[4], strlen(a[4]) + 1};
	struct iovec remote = {(void *)strtoull(a[3], NULL, 16), strlen(a[4]) + 1};
	if (process_vm_writev(atoi(a[2]), &local, 1, &remote, 1, 0) < 0)
		return fail("process_vm_writev");
	printf("ok wrote the puppet's command\n");
	return 0;
}

/* An untracked process the test starts: it opens whatever path appears in its
 * command buffer and prints the first line. */
static volatile char command[4096];

static int puppet(char **a)
{
	printf("%d %p\n", getpid(), (void *)command);
	fflush(stdout);
	for (;;) {
		if (command[0]) {
			char path[4096];
			snprintf(path, sizeof(path), "%s", (const char *)command);
			memset((void *)command, 0, sizeof(command));
			int fd = open(path, O_RDONLY);
			if (fd < 0) {
				printf("failed %s\n", strerrorname_np(errno));
			} else {
				char buf[200];
				ssize_t n = read(fd, buf, sizeof(buf));
				printf("ok %.*s\n", (int)(n > 0 ? n : 0), buf);
			}
			fflush(stdout);
		}
		usleep(1000);
	}
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(char **);
	int args;
} CASES[] = {
	{"open", f_open, 1},
	{"io_uring_openat", f_io_uring, 1},
	{"openat2_resolve", f_openat2, 1},
	{"open_by_handle_at", f_by_handle, 1},
	{"dirfd_relative", f_dirfd, 1},
	{"proc_self_fd", f_proc_fd, 1},
	{"symlink", f_symlink, 2},
	{"hard_link", f_hardlink, 2},
	{"bind_mount", f_bind, 2},
	{"execve", x_execve, 1},
	{"memfd_fexecve", x_memfd, 1},
	{"execveat_empty_path", x_execveat, 1},
	{"posix_spawn", x_posix_spawn, 1},
	{"vfork", x_vfork, 1},
	{"clone3_parent", x_clone3_parent, 1},
	{"clone3_newpid", x_clone3_newpid, 1},
	{"shebang_chain", x_shebang, 2},
	{"ld_so", x_ldso, 1},
	{"connect", n_connect, 3},
	{"io_uring_connect", n_io_uring_connect, 3},
	{"sendto_udp", n_sendto, 3},
	{"sendmmsg", n_sendmmsg, 3},
	{"dns_udp", n_dns, 3},
	{"ipv4_mapped", n_mapped, 3},
	{"raw_socket", n_raw, 3},
	{"packet_socket", n_packet, 3},
	{"scm_rights", n_scm_rights, 1},
	{"double_fork_setsid", t_daemon, 1},
	{"subreaper", t_subreaper, 1},
	{"unshare", t_unshare, 1},
	{"cgroup_move", t_cgroup, 2},
	{"process_vm_writev", t_vm_write, 3},
	{"puppet", puppet, 0},
};

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; argc > 1 && i < sizeof(CASES) / sizeof(CASES[0]); i++)
		if (!strcmp(argv[1], CASES[i].name)) {
			if (argc < 2 + CASES[i].args) {
				fprintf(stderr, "evasion %s: needs %d arguments\n", argv[1], CASES[i].args);
				return 64;
			}
			return CASES[i].fn(argv);
		}
	fprintf(stderr, "usage: evasion CASE ARG...\n");
	return 64;
}
