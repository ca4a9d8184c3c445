// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The floor of bench/untracked_overhead.py: empty programs on the hooks
 * mcpwitness uses for syscalls (each hook set), so that the benchmark can
 * tell the hook mechanism's own price from the work of mcpwitness's programs. */
#include "../../bpf/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EMPTY(name)                                            \
	SEC("tracepoint/syscalls/sys_exit_" #name)             \
	int floor_##name(void *ctx) { return 0; }

EMPTY(openat) EMPTY(open) EMPTY(creat) EMPTY(openat2) EMPTY(execve) EMPTY(execveat)
EMPTY(connect) EMPTY(read) EMPTY(write) EMPTY(recvfrom) EMPTY(sendto) EMPTY(readv)
EMPTY(writev) EMPTY(recvmsg) EMPTY(sendmsg)

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_dispatch, struct pt_regs *regs, long ret)
{
	return 0;
}

#if defined(__TARGET_ARCH_x86)
#define EMPTY_FEXIT(name)                                                   \
	SEC("fexit/__x64_sys_" #name)                                       \
	int BPF_PROG(floor_fx_##name, const struct pt_regs *regs, long ret) { return 0; }

EMPTY_FEXIT(openat) EMPTY_FEXIT(open) EMPTY_FEXIT(creat) EMPTY_FEXIT(openat2) EMPTY_FEXIT(execve)
EMPTY_FEXIT(execveat) EMPTY_FEXIT(connect) EMPTY_FEXIT(read) EMPTY_FEXIT(write) EMPTY_FEXIT(recvfrom)
EMPTY_FEXIT(sendto) EMPTY_FEXIT(readv) EMPTY_FEXIT(writev) EMPTY_FEXIT(recvmsg) EMPTY_FEXIT(sendmsg)
#endif

/* bench/tls_untracked.py: empty probes on the libssl functions mcpwitness
 * probes, host-wide (the trap of a uprobe and a uretprobe alone) */
SEC("uprobe.multi")
int floor_ssl_entry(void *ctx)
{
	return 0;
}

SEC("uretprobe.multi")
int floor_ssl_ret(void *ctx)
{
	return 0;
}
