"""The kernel follows a whole process tree, and nothing outside it."""
import os
import subprocess
import sys

import pytest
from conftest import SLOW, run_tracked

from mcpwitness.records import ConnectEvent, ExecEvent, ExitEvent, ForkEvent, OpenEvent

pytestmark = pytest.mark.kernel
TREE = os.path.join(os.path.dirname(__file__), "workloads", "tree.py")


def lineage(forks: dict[int, int], pid: int, root: int) -> list[int]:
    out = []
    while pid != root:
        pid = forks[pid]
        out.append(pid)
    return out


@pytest.mark.matrix("process tree (fork, exec, exit)")
def test_whole_tree_is_followed_and_nothing_else(agent, workdir, listener, tmp_path):
    port = listener.getsockname()[1]
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    # the same workload, untracked, running at the same time
    outside = subprocess.Popen([sys.executable, TREE, str(outside_dir), str(port)])
    root, code, events = run_tracked(agent, [sys.executable, TREE, str(workdir), str(port)],
                                     done_marker=workdir / "done")
    outside.wait(timeout=30 * SLOW)
    assert (outside_dir / "done").exists() or wait_done(outside_dir)
    assert code == 5

    wd = str(workdir)
    forks = {e.child_pid: e.pid for e in events if isinstance(e, ForkEvent)}
    # every event of every process carries its fork lineage up to the root
    for e in events:
        assert e.root == root
        assert e.ancestry == lineage(forks, e.pid, root), e

    opens = {os.path.basename(e.path): e for e in events
             if isinstance(e, OpenEvent) and e.path.startswith(wd) and e.result is not None}
    # root and its threads
    assert opens["root.txt"].pid == root and opens["root.txt"].ancestry == []
    assert opens["root.txt"].flags[:3] == ["O_WRONLY", "O_CREAT", "O_TRUNC"]
    assert opens["root.txt"].access == "write"
    tids = {opens[f"thread-{i}.txt"].tid for i in range(3)}
    assert len(tids) == 3 and root not in tids
    assert all(opens[f"thread-{i}.txt"].pid == root for i in range(3))
    # sh -c chains: cat run by sh run by the forked child
    for name in ("a.txt", "a2.txt", "g.txt"):
        e = opens[name]
        assert e.comm == "cat" and e.access == "read" and e.resolved == f"{wd}/{name}"
        assert e.ancestry[-1] == root and len(e.ancestry) >= 2
    # the daemon: double fork + setsid, reparented away from its parent,
    # still attributed to its fork lineage, and outliving the root
    d = opens["daemon.txt"]
    assert len(d.ancestry) == 2 and d.ancestry[-1] == root
    assert d.ppid != d.ancestry[0]
    root_exit = next(e for e in events if isinstance(e, ExitEvent) and e.pid == root)
    assert root_exit.exit_code == 5 and d.ktime_ns > root_exit.ktime_ns
    assert opens["done"].pid == d.pid or d.pid in opens["done"].ancestry

    # execs with their argv
    execs = [e for e in events if isinstance(e, ExecEvent) and e.result == 0]
    assert any(e.argv[:2] == ["sh", "-c"] and f"cat {wd}/a.txt" in e.argv[2] for e in execs)
    assert any(e.argv[:2] == ["sh", "-c"] and f"cat {wd}/a2.txt" in e.argv[2] for e in execs)
    assert any(e.argv == ["cat", f"{wd}/g.txt"] and e.exe == "/usr/bin/cat" for e in execs)

    # connects: 3 threads + the daemon, all to the loopback listener
    conns = [e for e in events if isinstance(e, ConnectEvent) and e.port == port]
    assert len(conns) == 4
    # a connect with a timeout is non-blocking: the syscall itself says EINPROGRESS
    assert all(c.family == "AF_INET" and c.address == "127.0.0.1" and c.result in (0, -115) and
               c.protocol == "tcp" and c.sock_type == "stream" for c in conns)
    assert {c.pid for c in conns} == {root, d.pid}
    assert len(listener.accepted) == 8  # both trees connected; only one was seen

    # every process that started in the tree ended in it
    exits = {e.pid for e in events if isinstance(e, ExitEvent)}
    assert set(forks) <= exits

    # nothing of the outside run
    outside_s = str(outside_dir)
    for e in events:
        for v in (getattr(e, "path", ""), getattr(e, "resolved", "") or "", " ".join(getattr(e, "argv", []))):
            assert outside_s not in v


def wait_done(d):
    from conftest import wait_for
    return wait_for(lambda: (d / "done").exists(), 10)


def test_map_entries_leave_at_exit(agent):
    pid = agent.spawn_tracked(["/bin/sh", "-c", "sleep 0.1 & wait"])
    assert pid in agent.kernel.tracked()
    os.waitpid(pid, 0)
    from conftest import wait_for
    assert wait_for(lambda: not agent.kernel.tracked(), 5)
