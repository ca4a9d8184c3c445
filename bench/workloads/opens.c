/* Event generator: N failing opens, each one event when tracked. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	for (long i = 0; i < n; i++)
		syscall(SYS_openat, AT_FDCWD, "/nonexistent/mcpwitness-bench", O_RDONLY);
	return 0;
}
