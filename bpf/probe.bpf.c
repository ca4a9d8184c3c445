// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * probe.bpf.c: one trivial program per kernel mechanism mcpwitness may use.
 * `mcpwitness doctor` (and the loader at start-up) loads and attaches them
 * one at a time, so each answer is what this kernel really does, not what
 * its config claims. Every program allows everything and does nothing.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_rb SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx) { return 0; }

SEC("raw_tp/sched_process_fork")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_tp_btf) { return 0; }

SEC("fentry/do_sys_openat2")
int BPF_PROG(probe_fentry) { return 0; }

SEC("kprobe/do_sys_openat2")
int probe_kprobe(void *ctx) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

SEC("uprobe.multi")
int probe_uprobe_multi(void *ctx) { return 0; }

SEC("lsm/file_open")
int BPF_PROG(probe_lsm_file_open) { return 0; }

SEC("lsm/bprm_check_security")
int BPF_PROG(probe_lsm_bprm_check) { return 0; }

SEC("lsm/path_mknod")
int BPF_PROG(probe_lsm_path_mknod) { return 0; }

SEC("lsm/socket_connect")
int BPF_PROG(probe_lsm_socket_connect) { return 0; }

SEC("cgroup/connect4")
int probe_connect4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/connect6")
int probe_connect6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/connect_unix")
int probe_connect_unix(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg4")
int probe_sendmsg4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg6")
int probe_sendmsg6(struct bpf_sock_addr *ctx) { return 1; }

/* helpers: loaded, never attached */
SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_send_signal(void *ctx)
{
	if (bpf_get_current_pid_tgid() == ~0ULL) /* never true */
		bpf_send_signal(9);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_ringbuf(void *ctx)
{
	bpf_ringbuf_output(&probe_rb, &ctx, sizeof(ctx), 0);
	return 0;
}

static long probe_loop_cb(__u32 i, void *ctx) { return 1; }

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_loop(void *ctx)
{
	bpf_loop(1, probe_loop_cb, NULL, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_task_pt_regs(void *ctx)
{
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return r ? 0 : 1;
}
