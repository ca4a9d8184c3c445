#!/usr/bin/env python3
"""Debian's stock kernels for the kernel matrix, fetched into .cache/kernels idempotently.

The archive index is read through a private apt configuration (.cache/kernels/apt: its own
sources list, lists and cache; the machine's apt state is not touched), so every package is
checked against Debian's signed Release files with the machine's debian-archive-keyring. The
newest kernel of each family is chosen from the index at fetch time, since security updates
retire old versions. A kernel already unpacked is used as is when the archive cannot be reached.

    scripts/kernels.py            fetch (if needed) and print one line per kernel: NAME IMAGE
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "kernels")
APT = os.path.join(CACHE, "apt")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org"          # the host this machine's apt sources use
SOURCES = [
    ("debian", "bullseye"), ("debian-security", "bullseye-security"),
    ("debian", "bookworm"), ("debian-security", "bookworm-security"),
    ("debian", "trixie"), ("debian-security", "trixie-security"),
]
# name in the matrix -> package-name pattern; the newest match wins
FAMILIES = {
    "debian11-5.10": r"^linux-image-5\.10\.0-(\d+)-amd64-unsigned$",  # below the minimum: refused clearly
    "debian12-6.1": r"^linux-image-6\.1\.0-(\d+)-amd64-unsigned$",
    "debian13-6.12": r"^linux-image-6\.12\.(\d+)\+deb13(?:\.\d+)?-amd64-unsigned$",
}
INDEX_MAX_AGE = 24 * 3600
REQUIRED = {"debian12-6.1", "debian13-6.12"}  # the matrix fails without these


def _mirror() -> str:
    """The archive host of this machine's own apt sources (deb.debian.org if none is found)."""
    for path in ["/etc/apt/sources.list", *glob.glob("/etc/apt/sources.list.d/*.sources"),
                 *glob.glob("/etc/apt/sources.list.d/*.list")]:
        try:
            text = open(path).read()
        except OSError:
            continue
        m = re.search(r"(https?://[^/\s]+)/debian\b", text)
        if m:
            return m.group(1)
    return MIRROR


def _apt_opts() -> list[str]:
    return ["-o", f"Dir::Etc::SourceList={APT}/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={APT}/lists", "-o", f"Dir::Cache={APT}/cache",
            "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
            "-o", "APT::Get::List-Cleanup=0", "-o", "APT::Sandbox::User=root", "-q"]


def _update_index() -> bool:
    os.makedirs(f"{APT}/lists/partial", exist_ok=True)
    os.makedirs(f"{APT}/cache/archives/partial", exist_ok=True)
    mirror = _mirror()
    sources = "".join(f"deb [signed-by={KEYRING}] {mirror}/{path} {suite} main\n" for path, suite in SOURCES)
    with open(f"{APT}/sources.list", "w") as f:
        f.write(sources)
    stamp = f"{APT}/.updated"  # holds the sources list the index was read with
    try:
        fresh = time.time() - os.path.getmtime(stamp) < INDEX_MAX_AGE and open(stamp).read() == sources
    except OSError:
        fresh = False
    if fresh:
        return True
    p = subprocess.run(["apt-get", *_apt_opts(), "update"], capture_output=True, text=True)
    if p.returncode != 0:
        # a suite that has left the archive (bullseye, one day) must not take the others along
        gone = [suite for _, suite in SOURCES if f" {suite} " in p.stderr or f" {suite}/" in p.stderr]
        sys.stderr.write(f"kernels: apt index update failed{' for ' + ', '.join(gone) if gone else ''}:\n"
                         f"{p.stderr[-1500:]}")
        if not gone or len(gone) == len(SOURCES):
            return False
        sources = "".join(line for line in sources.splitlines(keepends=True)
                          if not any(f" {g} " in line for g in gone))
        with open(f"{APT}/sources.list", "w") as f:
            f.write(sources)
        if subprocess.run(["apt-get", *_apt_opts(), "update"], capture_output=True, text=True).returncode != 0:
            return False
    with open(stamp, "w") as f:
        f.write(sources)
    return True


def _newest(pattern: str) -> str | None:
    p = subprocess.run(["apt-cache", *_apt_opts(), "pkgnames", "linux-image-"],
                       capture_output=True, text=True)
    rx = re.compile(pattern)
    found = [(int(m.group(1)), name) for name in p.stdout.split() if (m := rx.match(name))]
    return max(found)[1] if found else None


def _unpacked(pkg: str) -> str | None:
    imgs = glob.glob(os.path.join(CACHE, pkg, "boot", "vmlinuz-*"))
    return imgs[0] if imgs else None


def _fetch(pkg: str) -> str:
    img = _unpacked(pkg)
    if img:
        return img
    work = os.path.join(CACHE, "download")
    os.makedirs(work, exist_ok=True)
    subprocess.run(["apt-get", *_apt_opts(), "download", pkg], cwd=work, check=True)
    deb = glob.glob(os.path.join(work, f"{pkg}_*.deb"))[0]
    tmp = os.path.join(CACHE, pkg + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
    os.rename(tmp, os.path.join(CACHE, pkg))
    os.unlink(deb)
    return _unpacked(pkg)


def kernels() -> list[tuple[str, str]]:
    """[(matrix name, kernel image path)] for every family that is (or can be made) available."""
    os.makedirs(CACHE, exist_ok=True)
    online = _update_index()
    out = []
    for name, pattern in FAMILIES.items():
        pkg = _newest(pattern) if online else None
        if pkg:
            try:
                out.append((name, _fetch(pkg)))
                continue
            except (subprocess.CalledProcessError, IndexError) as e:
                sys.stderr.write(f"kernels: {pkg}: download failed ({e})\n")
        # offline or failed: the newest one already unpacked
        have = sorted((d for d in os.listdir(CACHE) if re.match(pattern, d)), key=lambda d: int(re.match(pattern, d).group(1)))
        if have:
            out.append((name, _unpacked(have[-1])))
        else:
            sys.stderr.write(f"kernels: no {name} kernel available\n")
    return out


if __name__ == "__main__":
    for name, img in kernels():
        print(name, img)
