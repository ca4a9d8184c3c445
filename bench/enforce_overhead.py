#!/usr/bin/env python3
"""Benchmark: what enforcement costs the actions it allows.

A tracked process runs loops of loopback connects (TCP with its accept, and
UDP connects) and file opens under `mcpwitness` with no policy, then under a
policy whose rules are looked up on every one of those actions and allow
them all, alternating the states round by round: the kernel's checks only
(`--no-seccomp`), and, where the kernel has no BPF LSM, with `run`'s seccomp
layer in front (every open and exec a round trip through the agent). Prints
the median ns/iteration of each and the ratios to no policy (same run, same
machine). Target for the kernel's checks: under 5%.

    .venv/bin/python bench/enforce_overhead.py [--rounds 5] [--quick]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile

from common import build, median, pct

from mcpwitness.agent import Agent
from mcpwitness.kernel.loader import LoadOptions
from mcpwitness.output.jsonl import JsonlSink

POLICY = """
policies:
  - name: bench
    mode: enforce
    network:
      default: deny
      allow: ["127.0.0.1:{port}", "127.0.0.1:{udp}", "[::1]:443"]
      deny: ["127.0.0.2", "10.0.0.0/8", "192.168.0.0/16", "*:22"]
    files:
      deny: ["~/.ssh/**", "~/.aws/**", /etc/shadow, /etc/sudoers, "/root/.gnupg/**", "/var/lib/secret/**",
             {{path: "/etc/**", access: [write, create]}}, {{path: "/usr/**", access: [write, create]}}]
    exec:
      deny: [curl, wget, nc, ssh]
"""


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tracked(agent, argv, out_path) -> float:
    pid = agent.spawn_tracked(["/bin/sh", "-c", " ".join(argv) + f" > {out_path}"])
    _, st = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        raise RuntimeError(f"{argv} failed: {st}")
    with open(out_path) as f:
        return float(f.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a short run to check that it works")
    a = ap.parse_args()
    rounds = 2 if a.quick else a.rounds
    scale = 10 if a.quick else 1
    conn, opens = build("connects"), build("syscalls")
    tmp = tempfile.mkdtemp(prefix="mw-enforce-bench-")
    port, udp = free_port(), free_port(socket.SOCK_DGRAM)
    pfile = os.path.join(tmp, "policy.yaml")
    with open(pfile, "w") as f:
        f.write(POLICY.format(port=port, udp=udp))
    out = os.path.join(tmp, "result")
    workloads = {
        "TCP connect+accept+close (C), ns/iter": [conn, str(20_000 // scale), "tcp", str(port)],
        "UDP connect+close (C), ns/iter": [conn, str(100_000 // scale), "udp", str(udp)],
        "open+read+close (C), ns/iter": [opens, str(200_000 // scale), "/etc/hostname"],
    }
    states = ["off", "on", "seccomp"]
    res = {name: {st: [] for st in states} for name in workloads}
    checks = denied = 0
    layer = None
    for r in range(rounds):
        for state in (states if r % 2 == 0 else states[::-1]):
            agent = Agent(JsonlSink(os.devnull), LoadOptions(seccomp=state == "seccomp"),
                          policy_path=None if state == "off" else pfile)
            layer = layer if state != "seccomp" else agent.supervisor is not None
            agent.start()
            try:
                for name, argv in workloads.items():
                    res[name][state].append(run_tracked(agent, argv, out))
            finally:
                st = agent.stop()
                agent.sink.close()
            if state != "off":
                checks += st["kernel"]["policy_checks"]
                denied += st["kernel"]["policy_denied"] + st["kernel"]["policy_killed"]
                denied += (st.get("policy") or {}).get("seccomp", {}).get("refused", 0)
    print(f"tracked workloads, policy allowing them vs no policy, median of {rounds} rounds")
    sec = "+ seccomp" if layer else "(no layer)"
    print(f"{'workload':42} {'no policy':>10} {'kernel':>10} {sec:>10}  kernel   seccomp")
    for name, v in res.items():
        off, on, sc = median(v["off"]), median(v["on"]), median(v["seccomp"])
        print(f"{name:42} {off:10.1f} {on:10.1f} {sc:10.1f}  {pct(on / off):7}  {pct(sc / off)}")
    if not layer:
        print("(this kernel refuses with BPF LSM: run's seccomp layer is not used, its column is the kernel's again)")
    print(f"policy checks made: {checks}, refused: {denied} (must be 0: every action was allowed)")
    subprocess.run(["rm", "-rf", tmp])
    return 0 if denied == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
