/* A stand-in for BoringSSL's ssl/ssl_lib.cc, for tests/test_tls.py: the
 * functions mcpwitness looks for in a stripped Bun binary, with the same
 * error reports (library 16, the reason codes, __FILE__ and __LINE__) in
 * the same order, and made to be called, so that the compiler keeps them.
 * Built with symbols, then stripped: what kernel/boringssl.py finds in the
 * stripped file must be what the symbol table said.
 *   -DTWICE: a second function reports what SSL_write does (must be refused)
 *   -DPEEK:  SSL_peek kept apart from SSL_read (must be refused: SSL_read
 *            is then not told by its reports) */
#include <stdlib.h>
#include <string.h>

volatile int errors;

__attribute__((noinline)) void ERR_put_error(int library, int unused, int reason, const char *file,
                                             unsigned line)
{
	errors += library + unused + reason + (int)line + (file[0] == '.');
}

#define PUT(reason) ERR_put_error(16, 0, reason, __FILE__, __LINE__)

struct ssl {
	void *quic;
	void *handshake;
	char *pending;
	long npending;
	char *buffer;
	int shaking;
};

__attribute__((noinline)) static void discard(struct ssl *s)
{
	free(s->buffer);
	s->buffer = NULL;
}

#line 700 "../../vendor/boringssl/ssl/ssl_lib.cc"
__attribute__((noinline)) int SSL_do_handshake(struct ssl *s)
{
	if (!s->handshake) {
		PUT(134);
		return -1;
	}
	return s->shaking-- > 0 ? 1 : 0;
}

__attribute__((noinline)) static int ssl_read_impl(struct ssl *s)
{
	if (!s->handshake) {
		PUT(226);
		return -1;
	}
	while (s->shaking) {
		int r = SSL_do_handshake(s);
		if (r == 0) {
			PUT(215);
			return -1;
		}
		if (r < 0)
			return r;
	}
	return 1;
}

#ifdef PEEK
__attribute__((noinline)) int SSL_peek(struct ssl *s, void *buf, int num)
{
	if (s->quic) {
		PUT(66);
		return -1;
	}
	int r = ssl_read_impl(s);
	if (r <= 0)
		return r;
	size_t todo = (size_t)num < (size_t)s->npending ? (size_t)num : (size_t)s->npending;
	memcpy(buf, s->pending, todo);
	return (int)todo;
}

__attribute__((noinline)) int SSL_read(struct ssl *s, void *buf, int num)
{
	int r = SSL_peek(s, buf, num);
	if (r <= 0)
		return r;
	s->pending += r;
	s->npending -= r;
	if (!s->npending)
		discard(s);
	return r;
}
#else
__attribute__((noinline)) int SSL_read(struct ssl *s, void *buf, int num)
{
	if (s->quic) {
		PUT(66);
		return -1;
	}
	int r = ssl_read_impl(s);
	if (r <= 0)
		return r;
	size_t todo = (size_t)num < (size_t)s->npending ? (size_t)num : (size_t)s->npending;
	memcpy(buf, s->pending, todo);
	s->pending += todo;
	s->npending -= todo;
	if (!s->npending)
		discard(s);
	return (int)todo;
}
#endif

__attribute__((noinline)) int SSL_write(struct ssl *s, const void *buf, int num)
{
	if (s->quic) {
		PUT(66);
		return -1;
	}
	if (!s->handshake) {
		PUT(226);
		return -1;
	}
	if (s->shaking) {
		int r = SSL_do_handshake(s);
		if (r == 0) {
			PUT(215);
			return -1;
		}
		if (r < 0)
			return r;
	}
	if (num < 0) {
		PUT(111);
		return -1;
	}
	memcpy(s->buffer, buf, (size_t)num);
	return num;
}

#ifdef TWICE
__attribute__((noinline)) int SSL_write_again(struct ssl *s, const void *buf, int num)
{
	if (s->quic) {
		PUT(66);
		return -1;
	}
	if (!s->handshake) {
		PUT(226);
		return -1;
	}
	if (s->shaking && SSL_do_handshake(s) == 0) {
		PUT(215);
		return -1;
	}
	if (num < 0) {
		PUT(111);
		return -1;
	}
	memcpy(s->buffer, buf, (size_t)num);
	return num;
}
#endif

int main(int argc, char **argv)
{
	struct ssl s = {.quic = argc > 5 ? argv : NULL, .handshake = argv, .pending = argv[0],
			.npending = (long)strlen(argv[0]), .buffer = malloc(64), .shaking = argc - 1};
	char buf[64];
	int n = SSL_read(&s, buf, sizeof(buf));
	n += SSL_write(&s, buf, argc > 3 ? -1 : 8);
#ifdef TWICE
	n += SSL_write_again(&s, buf, 4);
#endif
	return (n + errors) & 1;
}
