"""kernel/unotify.py, the seccomp user-notification layer of `run`, stage by stage: the filter
program, the access bits, path resolution, and the supervisor answering a real filtered child
(the kernel's tracking map stood in for; tests/test_enforce.py runs it whole, under `run`)."""
import errno
import os
import socket
import struct

import pytest

from mcpwitness import policy
from mcpwitness.kernel import unotify


def run_filter(prog: bytes, nr: int, arch: int) -> int:
    """A classic BPF interpreter for the three instructions the filter uses."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *([0] * 6))
    ins = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


@pytest.mark.parametrize("machine", sorted(unotify.ARCHES))
def test_the_filter_notifies_exactly_the_open_and_exec_calls(machine):
    audit, calls = unotify.ARCHES[machine]
    prog = unotify.filter_program(machine)
    for nr in range(0, 600):
        for n in (nr, nr | 0x40000000):
            want = unotify.SECCOMP_RET_USER_NOTIF if n in calls else unotify.SECCOMP_RET_ALLOW
            assert run_filter(prog, n, audit) == want, (machine, n)
    # another architecture's calls (i386 on x86-64) are left alone: the kernel's hooks judge them
    assert run_filter(prog, 5, 0x40000003) == unotify.SECCOMP_RET_ALLOW
    names = {v[0] for v in calls.values()}
    assert {"openat", "openat2", "execve", "execveat"} <= names


def test_open_access_is_the_kernel_fallbacks():
    R, W, C = policy.ACC_READ, policy.ACC_WRITE, policy.ACC_CREATE
    assert unotify.open_access(os.O_RDONLY) == R
    assert unotify.open_access(os.O_WRONLY) == W
    assert unotify.open_access(os.O_RDWR) == R | W
    assert unotify.open_access(os.O_RDONLY | os.O_TRUNC) == R | W
    assert unotify.open_access(os.O_WRONLY | os.O_APPEND) == W
    assert unotify.open_access(os.O_WRONLY | os.O_CREAT) == W | C
    assert unotify.open_access(os.O_PATH | os.O_RDONLY) == 0


def test_resolve_as_the_kernel_would(tmp_path):
    me, tid = os.getpid(), os.getpid()
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    os.symlink(tmp_path / "f", tmp_path / "d" / "link")
    old = os.getcwd()
    os.chdir(tmp_path / "d")
    try:
        assert unotify.resolve(tid, me, "link", None) == str(tmp_path / "f")
        assert unotify.resolve(tid, me, "../f", unotify.AT_FDCWD) == str(tmp_path / "f")
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert unotify.resolve(tid, me, "d/../f", fd) == str(tmp_path / "f")
        finally:
            os.close(fd)
    finally:
        os.chdir(old)
    # /proc/self is the caller's, never the agent's (here they are the same process, so: its pid)
    assert unotify.resolve(tid, me, "/proc/self/environ", None) == f"/proc/{me}/environ"
    assert unotify.resolve(tid, me, "/proc/thread-self/comm", None) == f"/proc/{me}/task/{tid}/comm"
    r, w = os.pipe()
    try:  # a magic link to no path: left to the kernel
        with pytest.raises(unotify.Unsure):
            unotify.resolve(tid, me, f"/proc/self/fd/{r}", None)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(unotify.Unsure):
        unotify.resolve(tid, me, "", None)


def test_a_script_is_judged_with_its_interpreter(tmp_path):
    s = tmp_path / "s"
    s.write_text("#!/bin/sh -e\necho hi\n")
    assert unotify._interpreter(str(s)) == "/bin/sh"
    s.write_text("echo no shebang\n")
    assert unotify._interpreter(str(s)) is None
    assert unotify._interpreter(str(tmp_path)) is None


def test_wanted_only_for_enforced_file_or_exec_rules():
    ps = policy.parse("""
policies:
  - name: net
    mode: enforce
    network: {default: deny}
  - name: files
    mode: enforce
    files: {deny: ["/secret/**"]}
  - name: watching
    mode: monitor
    exec: {deny: [sh]}
""")
    net, files, watching = ps.policies
    assert not unotify.wanted(net) and unotify.wanted(files) and not unotify.wanted(watching)
    assert not unotify.wanted(None)


class _Kernel:
    """The tracking map: every process tracked, under policy slot 1."""
    def tracked_one(self, pid):
        return (1, pid, 0, [0] * 8, 0, 1)


class _Enforcer:
    def __init__(self, pol):
        self.pol = pol

    def policy(self, slot):
        return self.pol if slot == 1 else None

    def names(self, slot, rule):
        return ("files", f"rule {rule}")


CHILD = """
import os, sys
res = []
for path, flags in ((sys.argv[1], os.O_RDONLY), (sys.argv[2], os.O_RDONLY),
                    (sys.argv[3], os.O_WRONLY | os.O_CREAT), (sys.argv[4], os.O_RDONLY)):
    try:
        os.close(os.open(path, flags))
        res.append("ok")
    except OSError as e:
        res.append(os.strerror(e.errno))
print(",".join(res))
"""


def _filtered(sup, argv):
    """Run argv with the filter installed before its exec (as spawn_tracked does); its stdout."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            os.close(go_w)
            os.dup2(out_w, 1)
            unotify.install(child)
            os.read(go_r, 1)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    child.close()
    os.close(go_r)
    os.close(out_w)
    fd, said = unotify.receive(parent)
    assert fd is not None, said
    sup.add(fd, pid, said)
    os.write(go_w, b"x")
    os.close(go_w)
    with os.fdopen(out_r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


OPENAT2 = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
res = []
for path, resolve in ((sys.argv[1], 0), (sys.argv[2], 0x10)):
    how = ctypes.create_string_buffer(struct.pack("=QQQ", os.O_RDONLY, 0, resolve), 24)
    dirfd = os.open(sys.argv[3], os.O_RDONLY | os.O_DIRECTORY)
    fd = libc.syscall(437, dirfd, path.encode(), how, ctypes.c_size_t(24))
    res.append("ok" if fd >= 0 else os.strerror(ctypes.get_errno()))
    if fd >= 0:
        os.close(fd)
print(",".join(res))
"""


@pytest.mark.kernel
def test_openat2_is_judged_and_resolve_in_root_left_to_the_kernel(tmp_path):
    """openat2 reads its flags from struct open_how: a denied read refused; under RESOLVE_IN_ROOT
    the dirfd is the root, resolved otherwise than the agent can: left to the kernel."""
    import sys
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("k")
    jail = tmp_path / "jail"
    inside = jail / str(secret).lstrip("/")     # the secret's own path, under the jail's root
    inside.mkdir(parents=True)
    (inside / "key").write_text("not the secret")
    pol = policy.parse(f'policies:\n  - name: files\n    mode: enforce\n    files: {{deny: ["{secret}/**"]}}\n').policies[0]
    sup = unotify.Supervisor(_Kernel(), _Enforcer(pol), lambda t: "t")
    try:
        out = _filtered(sup, [sys.executable, "-c", OPENAT2, str(secret / "key"), str(secret / "key"), str(jail)])
    finally:
        sup.close()
    assert out.strip() == f"{os.strerror(errno.EPERM)},ok", out
    assert sup.stats()["left_to_kernel_why"].get("openat2 with RESOLVE_IN_ROOT") == 1


@pytest.mark.kernel
def test_the_supervisor_answers_a_filtered_child(tmp_path):
    """A child under the filter: the denied read and create fail with EPERM (the create makes no
    file), the allowed read works, a missing file is the kernel's own ENOENT; one refusal event each."""
    import sys
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("k")
    ok = tmp_path / "ok"
    ok.write_text("fine")
    pol = policy.parse(f'policies:\n  - name: files\n    mode: enforce\n    files: {{deny: ["{secret}/**"]}}\n').policies[0]
    sup = unotify.Supervisor(_Kernel(), _Enforcer(pol), lambda t: "t")
    argv = [sys.executable, "-c", CHILD, str(ok), str(secret / "key"), str(secret / "new"), str(tmp_path / "missing")]
    try:
        out = _filtered(sup, argv)
    finally:
        sup.close()
    assert out.strip() == ",".join(["ok", os.strerror(errno.EPERM), os.strerror(errno.EPERM),
                                    os.strerror(errno.ENOENT)]), out
    assert not (secret / "new").exists()
    evs = sup.take(1 << 62)
    assert [(e.check, e.path, e.access, e.errno) for e in evs] == [
        ("open", str(secret / "key"), ["read"], "EPERM"), ("open", str(secret / "new"), ["write", "create"], "EPERM")]
    st = sup.stats()
    assert st["refused"] == 2 and st["checks"] >= 4 and not st.get("errors"), st
