#!/usr/bin/env python3
"""Compile the kernel programs under bpf/ into the objects shipped as package data.

    python3 scripts/build_bpf.py            # writes src/mcpwitness/bpf/
    python3 scripts/build_bpf.py --out DIR  # elsewhere (tests rebuild to compare)

Each object gets a manifest (<name>.json) with the sha256 of every source it
was built from and the compiler version, so tests can tell when a shipped
object is stale. Paths given to clang are relative to the repository root so
that the object (its BTF line info) does not depend on where the tree lives.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# object name -> main source; every object also depends on the shared headers
OBJECTS = {
    "mcpwitness": "bpf/mcpwitness.bpf.c",
    "probe": "bpf/probe.bpf.c",
}
HEADERS = ["bpf/mcpwitness.h", "bpf/common.bpf.h", "bpf/enforce.bpf.h", "bpf/payload.bpf.h", "bpf/tls.bpf.h",
           "bpf/vmlinux.h"]
ARCHES = {"x86_64": "x86", "aarch64": "arm64"}


def arch() -> str:
    return platform.machine()


def object_name(name: str, machine: str | None = None) -> str:
    return f"{name}.{machine or arch()}.bpf.o"


def sources_digest(name: str) -> dict[str, str]:
    out = {}
    for rel in [OBJECTS[name], *HEADERS]:
        with open(os.path.join(ROOT, rel), "rb") as f:
            out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def clang_version(clang: str) -> str:
    return subprocess.run([clang, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def build(out_dir: str, clang: str = "clang", strip: str = "llvm-strip") -> list[str]:
    machine = arch()
    if machine not in ARCHES:
        sys.exit(f"build_bpf: unsupported architecture {machine}")
    for tool in (clang, strip):
        if not shutil.which(tool):
            sys.exit(f"build_bpf: {tool} not found (apt-get install clang llvm)")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, src in OBJECTS.items():
        obj = os.path.join(os.path.abspath(out_dir), object_name(name))
        cmd = [clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{ARCHES[machine]}",
               "-Wall", "-Werror", f"-ffile-prefix-map={ROOT}=.", "-Ibpf", "-c", src, "-o", obj]
        subprocess.run(cmd, cwd=ROOT, check=True)
        # drop DWARF, keep .BTF/.BTF.ext (CO-RE needs them)
        subprocess.run([strip, "-g", obj], check=True)
        with open(obj, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        manifest = {
            "object": os.path.basename(obj),
            "sha256": digest,
            "sources": sources_digest(name),
            "compiler": clang_version(clang),
            "command": " ".join(cmd[:-1] + ["<out>"]).replace(ROOT, "<repo>"),
        }
        with open(obj[: -len(".bpf.o")] + ".json", "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        written.append(obj)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "src", "mcpwitness", "bpf"))
    args = ap.parse_args()
    for obj in build(args.out):
        print(os.path.relpath(obj, ROOT))


if __name__ == "__main__":
    main()
