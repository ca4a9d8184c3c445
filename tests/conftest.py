import json
import os
import platform
import socket
import sys
import subprocess
import threading
import time
import uuid

import pytest

from mcpwitness.agent import Agent
from mcpwitness.kernel.loader import LoadOptions, fentry_works
from mcpwitness.output.jsonl import ListSink

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPM = os.path.join(ROOT, ".cache", "npm-servers", "node_modules", ".bin")  # scripts/setup installs them


def npm_server(name: str) -> str:
    """The installed npm MCP server `name`; the test fails (not skips) when it is missing."""
    exe = os.path.join(NPM, name)
    if not os.path.exists(exe):
        pytest.fail(f"{exe} is not installed: run scripts/setup")
    return exe


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:  # matrix(..., ids=[...]): only those parameters run in the kernel matrix
        m = item.get_closest_marker("matrix")
        if m and m.kwargs.get("ids") and getattr(item, "callspec", None) and item.callspec.id not in m.kwargs["ids"]:
            item.own_markers = [x for x in item.own_markers if x.name != "matrix"]
    _leave_to_other_guests(config, items)
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root to load BPF programs")
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip)


def _leave_to_other_guests(config, items):
    """In a guest of the kernel matrix: the matrix tests scripts/kernel_matrix.py leaves to another
    guest of the same run (MW_MATRIX_ELSEWHERE_FILE, a JSON file {test glob: that guest}, from tests/kernels/*.yaml
    `leave_to`) are deselected here and written to the results as "elsewhere", so the judge knows
    they were left, not lost, and checks that the other guest ran them."""
    text = os.environ.get("MW_MATRIX_ELSEWHERE") or ""
    if os.environ.get("MW_MATRIX_ELSEWHERE_FILE"):  # what kernel_matrix.py writes (the command line is short)
        with open(os.environ["MW_MATRIX_ELSEWHERE_FILE"]) as f:
            text = f.read()
    plan = json.loads(text or "{}")
    if not plan:
        return
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from kernel_matrix import ELSEWHERE, _match
    keep, left = [], []
    for item in items:
        where = next((g for glob, g in plan.items() if _match(item.nodeid, glob)), None)
        if where and item.get_closest_marker("matrix"):
            left.append(item)
            if _MATRIX_OUT:
                with open(_MATRIX_OUT, "a") as f:
                    f.write(json.dumps({"test": item.nodeid, "feature": (item.get_closest_marker("matrix").args or [None])[0],
                                        "when": "collect", "outcome": ELSEWHERE, "reason": where,
                                        "seconds": 0}) + "\n")
        else:
            keep.append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = keep


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: loads real BPF programs on the running kernel")
    config.addinivalue_line("markers", "matrix(feature): also run by scripts/test-kernels in every kernel of the "
                                       "matrix; `feature` is its row in the table")


# scripts/guest-tests: one JSON line per test, for the kernel matrix's table
_MATRIX_OUT = os.environ.get("MW_MATRIX_RESULTS")


def pytest_runtest_logreport(report):
    if not _MATRIX_OUT or (report.when != "call" and not (report.failed or report.skipped)):
        return
    if not getattr(report, "_mw_markers", None):  # the native suite writes the host's matrix tests only
        return
    if report.when == "teardown" and report.skipped:
        return
    feature = next((m.args[0] for m in getattr(report, "_mw_markers", []) if m.args), None)
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
    elif report.failed:  # where it failed and the assertion's first lines
        lines = (report.longreprtext or "").strip().splitlines()
        errs = [ln[1:].strip() for ln in lines if ln.startswith("E ")][:4]
        reason = " | ".join((lines[-1:] or [""]) + errs)[:1200]
    with open(_MATRIX_OUT, "a") as f:
        f.write(json.dumps({"test": report.nodeid, "feature": feature, "when": report.when,
                            "outcome": report.outcome, "reason": reason,
                            "seconds": round(report.duration, 1)}) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result()._mw_markers = list(item.iter_markers("matrix"))


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory):
    """Every mcpwitness the tests start keeps its JSON Lines and store here,
    not in the machine's /var/lib/mcpwitness."""
    os.environ["MCPWITNESS_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))


@pytest.fixture
def workdir(tmp_path):
    """A directory whose name is unique to the test, to find its events by."""
    d = tmp_path / f"mw-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


# the syscall hook sets: tests of what the syscall hooks see run with each
# (`@pytest.mark.parametrize("agent", HOOK_SETS, indirect=True)`)
HOOK_SETS = ["syscalls"] + (["dispatch"] if platform.machine() == "x86_64" else []) \
    + (["fexit"] if platform.machine() == "x86_64" and os.geteuid() == 0 and fentry_works() else [])


@pytest.fixture
def agent(request):
    sink = ListSink()
    a = Agent(sink, LoadOptions(hooks=getattr(request, "param", None)))
    a.start()
    yield a
    if a.kernel.obj:
        a.stop(settle=0)


class Listener:
    """A TCP listener on a loopback address that counts accepted connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = srv = socket.socket(fam)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(64)
        srv.settimeout(0.2)
        self.host, self.port = host, srv.getsockname()[1]
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                c, peer = self.sock.accept()
                self.accepted.append(peer)
                c.close()
            except OSError:
                continue

    def getsockname(self):
        return self.sock.getsockname()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that counts accepted connections."""
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture
def listen():
    """listen(host, port=0): more listeners (other loopback addresses, ::1), closed at the end."""
    made = []

    def make(host="127.0.0.1", port=0):
        made.append(Listener(host, port))
        return made[-1]

    yield make
    for lst in made:
        lst.close()


def free_port(host="127.0.0.1") -> int:
    """A TCP port nobody listens on right now (on a loopback address)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# under an emulated kernel (scripts/test-kernels, TCG) everything takes 10-20 times longer:
# timeouts are ceilings for a wait on an event, scaled by this factor
SLOW = float(os.environ.get("MW_TEST_SLOW", "1"))
if SLOW > 1:
    # the SDK client gives server/discover 10 s, then falls back to initialize (which a
    # modern server refuses): a slow start is not what these tests are about
    import mcp.client.session as _sdk_session
    _sdk_session.DISCOVER_TIMEOUT_SECONDS *= SLOW


def wait_for(pred, timeout=10.0, step=0.02):
    end = time.time() + timeout * SLOW
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def _tree_state(agent, workdir) -> str:
    """What a wait that failed can say: the files the workload wrote, and where each
    process still tracked is (state and kernel wait channel), for a failure in a guest."""
    try:
        files = sorted(os.listdir(workdir))
    except OSError as e:
        files = [f"({e})"]
    procs = []
    for pid in agent.kernel.tracked():
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/wchan") as f:
                wchan = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
            procs.append(f"{pid} {state} {wchan or '-'} {cmd}")
        except OSError:
            procs.append(f"{pid} gone")
    return f"files: {files}; tracked: {procs or 'none'}"


def run_tracked(agent, argv, done_marker=None, timeout=20.0):
    """Run argv tracked, wait for it (and for done_marker, written by a
    descendant that outlives it), stop the agent, return its events."""
    pid = agent.spawn_tracked(argv)
    _, status = os.waitpid(pid, 0)
    if done_marker is not None:
        assert wait_for(lambda: os.path.exists(done_marker), timeout), \
            f"{done_marker} never appeared; {_tree_state(agent, os.path.dirname(done_marker))}"
        # let the descendant that wrote it exit
        wait_for(lambda: not [p for p in agent.kernel.tracked()], 5.0)
    agent.stop()
    return pid, os.waitstatus_to_exitcode(status), agent.sink.events


PY = "/usr/bin/python3"


@pytest.fixture(scope="session")
def system_python():
    """PYTHONPATH for running mcpwitness (and the SDK) with the system's
    interpreter, as a user who cannot reach the tests' own (it may live
    under /root)."""
    v = subprocess.run([PY, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    if v.returncode != 0 or v.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"{PY} is not Python {sys.version_info[0]}.{sys.version_info[1]} (the tests' packages are)")
    # the package and its dependencies, where an unprivileged user can read them
    import anyio
    import msgspec

    import mcpwitness
    dirs = dict.fromkeys(os.path.dirname(os.path.dirname(m.__file__)) for m in (mcpwitness, msgspec, anyio))
    return ":".join(dirs)
