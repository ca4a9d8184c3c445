"""The benchmarks still run (they are not part of the suite's timing), and
their loss figure, which is a correctness figure, is zero."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_mcp_calls_benchmark_quick(transport):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "mcp_calls.py"), "--quick",
                          "--transport", transport], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lost = re.search(r"MCP messages lost:\s+(\d+) \(of (\d+) per run\)", out.stdout)
    assert lost and lost.group(1) == "0" and int(lost.group(2)) == 404, out.stdout
    assert re.search(r"with mcpwitness\s+\d+ calls/s", out.stdout), out.stdout
    # the cost counts the agent until its last record is written, and the BPF programs' run time
    cost = re.search(r"mcpwitness cost per call: agent CPU\s+(\d+) us .* \+ BPF programs\s+([\d.]+) us", out.stdout)
    assert cost and int(cost.group(1)) > 0 and float(cost.group(2)) > 0, out.stdout


def test_mcp_calls_benchmark_against_mcp_snoop_quick():
    """The side-by-side run: without, under mcpwitness and under mcp-snoop in both its modes (its default
    and --verbose), each labelled, in the same round."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "mcp_calls.py"), "--quick", "--snoop",
                          "--size", "1024"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for mode in (r"mcp-snoop \(its default: one line per message\)", r"mcp-snoop --verbose \(every message's JSON\)"):
        assert re.search(r"with " + mode + r"\s+\d+ calls/s", out.stdout), out.stdout
        assert re.search(r"mcpwitness ahead of " + mode + r" in [01] of 1 rounds", out.stdout), out.stdout
        assert re.search(mode + r" CPU per call:\s+\d+ us", out.stdout), out.stdout
    assert re.search(r"agent CPU\s+\d+ us", out.stdout)
    lost = re.search(r"MCP messages lost:\s+(\d+)", out.stdout)
    assert lost and lost.group(1) == "0", out.stdout


def test_untracked_overhead_benchmark_quick():
    """Every state (the floor, run, watch, port; both syscall hook sets) loads and is measured."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "untracked_overhead.py"), "--quick",
                          "--hooks", "syscalls,dispatch"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    states = re.findall(r"^\s+((?:floor|run|watch|port)/(?:syscalls|dispatch))\s+[\d.]+\s+[+-][\d.]+%",
                        out.stdout, re.M)
    assert len(states) == 3 * 8, out.stdout  # 3 workloads x 8 states (4 modes x 2 hook sets)


@pytest.mark.parametrize("library", ["openssl", "node", "go", "bun"])
def test_tls_untracked_benchmark_quick(library):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "tls_untracked.py"), "--quick",
                          "--library", library], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(re.findall(r"us per round trip", out.stdout)) == 5, out.stdout  # the floor row too


def test_detect_benchmark_quick():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "detect.py"), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rate = re.search(r"default rule set:\s+([\d,]+) records/s \((\d+) matches per pass, \d+ alert lines", out.stdout)
    assert rate and int(rate.group(2)) > 0, out.stdout
    assert re.search(r"kernel event -> alert line \(aggregation off\), .*: (\d+) alerts from kernel events, p50 [\d.]+ ms",
                     out.stdout)
