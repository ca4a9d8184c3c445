"""The installed package runs without a compiler: the BPF objects (and the default rules) ship inside the wheel."""
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_ships_the_bpf_objects(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), ROOT], capture_output=True, text=True, timeout=300)
    if p.returncode != 0 and "No module named" in p.stderr:
        pytest.skip(f"cannot build a wheel here: {p.stderr.strip()[-200:]}")
    assert p.returncode == 0, p.stderr
    whl = next(tmp_path.glob("mcpwitness-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    import platform
    for obj in ("mcpwitness", "probe"):
        assert f"mcpwitness/bpf/{obj}.{platform.machine()}.bpf.o" in names
        assert f"mcpwitness/bpf/{obj}.{platform.machine()}.json" in names
    assert not [n for n in names if n.endswith(".bpf.c") or n.endswith("vmlinux.h")]
    assert "mcpwitness/detect/default_rules.yaml" in names  # detection works from an installed wheel
    for pkg in ("kernel", "decode", "detect", "output", "ui", "fleet"):  # every layer is in the wheel
        assert f"mcpwitness/{pkg}/__init__.py" in names
    # the web timeline needs no CDN: its front end is in the wheel
    for f in ("index.html", "app.js", "app.css"):
        assert f"mcpwitness/ui/static/{f}" in names
