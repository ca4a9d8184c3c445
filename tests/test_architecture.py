"""The architecture contract (pyproject.toml, [tool.importlinter]): each
layer imports only the layers below it, each decode stage only the stages
before it, the kernel package nothing above it, and no package has an
import cycle. Checked by import-linter on the installed source tree."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lint_imports():
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed (scripts/setup installs the test extras)"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)


def test_the_import_contract_holds():
    r = lint_imports()
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "4 kept, 0 broken" in r.stdout, r.stdout[-2000:]


def test_the_contract_catches_an_import_against_the_layers(tmp_path):
    """A contract that cannot fail proves nothing: a kernel module that
    imports the agent is reported."""
    import tempfile
    src = tempfile.mkdtemp(dir=tmp_path)
    shutil.copytree(os.path.join(ROOT, "src", "mcpwitness"), os.path.join(src, "mcpwitness"))
    with open(os.path.join(src, "mcpwitness", "kernel", "system.py"), "a") as f:
        f.write("\n\ndef _upward():\n    from ..agent import Agent\n    return Agent\n")
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    r = subprocess.run([exe, "--no-cache", os.path.join(ROOT, "pyproject.toml")], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=src), capture_output=True, text=True)
    assert r.returncode != 0
    assert "Each layer imports only the layers below it BROKEN" in r.stdout, r.stdout[-3000:]
    assert "mcpwitness.kernel.system -> mcpwitness.agent" in r.stdout, r.stdout[-3000:]
