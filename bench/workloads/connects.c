/* Connect loop on loopback: N times socket + connect + close, TCP (with
 * the accept done here, so no other process is timed) or UDP (connect only
 * sets the destination: the cgroup connect4 hook and the connect tracepoint
 * with no handshake around them). Prints ns/iter.
 *   connects N tcp|udp PORT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000;
	int tcp = argc > 2 ? strcmp(argv[2], "udp") != 0 : 1;
	int port = argc > 3 ? atoi(argv[3]) : 0;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int lst = -1;
	if (tcp) {
		lst = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lst, (struct sockaddr *)&a, sizeof(a)) || listen(lst, 128)) {
			perror("listen");
			return 1;
		}
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		int s = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
		if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
			perror("connect");
			return 1;
		}
		if (tcp) {
			int c = accept(lst, NULL, NULL);
			if (c < 0) {
				perror("accept");
				return 1;
			}
			close(c);
		}
		close(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
	return 0;
}
