/* Load for bench/pressure.py: a tracked tree that forks many short processes,
 * or opens one file many times.
 *   pressure forks N     N children, each exits at once (waited for)
 *   pressure opens N F   open + close F, N times
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		return 64;
	long n = atol(argv[2]);
	if (!strcmp(argv[1], "forks")) {
		for (long i = 0; i < n; i++) {
			pid_t p = fork();
			if (p == 0)
				_exit(0);
			if (p < 0)
				return 1;
			waitpid(p, NULL, 0);
		}
		return 0;
	}
	if (!strcmp(argv[1], "opens") && argc > 3) {
		for (long i = 0; i < n; i++) {
			int fd = open(argv[3], O_RDONLY);
			if (fd < 0)
				return 1;
			close(fd);
		}
		return 0;
	}
	return 64;
}
