"""Shared bits of the benchmarks: build the C workloads, take medians."""
import os
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
