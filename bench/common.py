"""Shared bits of the benchmarks: build the C workloads, take medians."""
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))


def build(name: str) -> str:
    src = os.path.join(HERE, "workloads", f"{name}.c")
    exe = os.path.join(OUT, name)
    os.makedirs(OUT, exist_ok=True)
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-o", exe, src], check=True)
    return exe


def median(xs):
    return statistics.median(xs)


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.2f}%"


class Floor:
    """Empty BPF programs (workloads/floor.bpf.c) on the hooks mcpwitness uses:
    the price of the hook mechanism alone, before any of mcpwitness's work.
    hooks: the syscall hook set ("fexit", "dispatch", "syscalls") or None; ssl: empty
    uprobe_multi links on these libssl files, host-wide, on the functions
    mcpwitness probes."""

    def __init__(self, hooks: str | None = None, ssl: tuple = ()):
        from mcpwitness.kernel import libbpf
        self.libbpf = libbpf
        src = os.path.join(HERE, "workloads", "floor.bpf.c")
        obj = os.path.join(OUT, "floor.bpf.o")
        os.makedirs(OUT, exist_ok=True)
        if not os.path.exists(obj) or os.path.getmtime(obj) < os.path.getmtime(src):
            arch = {"x86_64": "x86", "aarch64": "arm64"}[platform.machine()]
            subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-c", src, "-o", obj],
                           check=True)
        with libbpf.capture_log() as log:
            self.obj = libbpf.check_ptr(libbpf.bpf_object__open_file(obj.encode(), None), "open floor", log)
        progs = {}
        p = libbpf.bpf_object__next_program(self.obj, None)
        while p:
            sec = libbpf.bpf_program__section_name(p).decode()
            libbpf.set_newer_section_type(p)
            mine = "fexit" if sec.startswith("fexit/") else "dispatch" if sec == "tp_btf/sys_exit" \
                else "syscalls" if sec.startswith("tracepoint/") else "ssl"
            want = mine == "ssl" if ssl else mine == hooks
            libbpf.bpf_program__set_autoload(p, bool(want) and (bool(ssl) or hooks is not None))
            progs[libbpf.bpf_program__name(p).decode()] = p
            p = libbpf.bpf_object__next_program(self.obj, p)
        with libbpf.capture_log() as log:
            libbpf.check_int(libbpf.bpf_object__load(self.obj), "load floor", log)
        self.links, self.fds = [], []
        if hooks is not None:
            for name, p in progs.items():
                if libbpf.bpf_program__autoload(p):
                    with libbpf.capture_log() as log:
                        self.links.append(libbpf.check_ptr(libbpf.bpf_program__attach(p), "attach floor", log))
        if ssl:
            from mcpwitness.kernel.tls import ENTRY, RETURN, TlsProbes, elf_symbols
            for path in ssl:
                found = TlsProbes(kernel=None)._symbols(path)[1]
                if found and found["library"] == "go":  # entries and return instructions: plain uprobes
                    points = [o for entry, rets in found["points"].values() for o in (entry, *rets)]
                    self.fds.append(libbpf.uprobe_multi_link(libbpf.bpf_program__fd(progs["floor_ssl_entry"]), path,
                                                             points, [0] * len(points), False))
                    continue
                # (BoringSSL in Bun: the functions found by their code)
                syms = found["syms"] if found and found["library"] == "boringssl" else elf_symbols(path, set(ENTRY))
                fns = sorted(syms)
                rets = [f for f in fns if f in RETURN]
                for prog, names, ret in (("floor_ssl_entry", fns, False), ("floor_ssl_ret", rets, True)):
                    self.fds.append(libbpf.uprobe_multi_link(libbpf.bpf_program__fd(progs[prog]), path,
                                                             [syms[f] for f in names], [0] * len(names), ret))

    def close(self):
        for link in self.links:
            self.libbpf.bpf_link__destroy(link)
        for fd in self.fds:
            os.close(fd)
        self.libbpf.bpf_object__close(self.obj)
