"""The policy language: validation with file:line:col, and the decision
logic the kernel implements (checked here in its Python twin; the kernel
side is checked against real syscalls in test_enforce.py)."""
import os

import pytest

from mcpwitness import policy
from mcpwitness.kernel.enforce import NET_VALUE, PKEY, compile_policy
from mcpwitness.policy import ACC_CREATE, ACC_EXEC, ACC_READ, ACC_WRITE, Identity, PolicyError, parse


def one(text):
    return parse(text, "p.yaml").policies[0]


@pytest.mark.parametrize("text,where,why", [
    ("policies: {}", "p.yaml:1:11", "must be a list"),
    ("nope: []", "p.yaml", "one key, policies"),
    ("policies:\n  - name: a\n    mode: block\n", "p.yaml:3:11", "monitor or enforce"),
    ("policies:\n  - name: a\n    colour: red\n", "p.yaml:3:13", "unknown key 'colour'"),
    ("policies:\n  - name: a\n    network:\n      allow: [example.com]\n", "p.yaml:4:15", "names are not resolved"),
    ("policies:\n  - name: a\n    network:\n      allow: ['127.0.0.1:99999']\n", "p.yaml:4:15", "port"),
    ("policies:\n  - name: a\n    files:\n      deny: ['/etc/*.conf']\n", "p.yaml:4:14", "other globs"),
    ("policies:\n  - name: a\n    files:\n      deny: [{path: /etc, access: [exec]}]\n", "p.yaml:4:35",
     "read, write, create"),
    ("policies:\n  - name: a\n    exec:\n      deny: ['cu*l']\n", "p.yaml:4:14", "plain file name"),
    ("policies:\n  - name: a\n    exec:\n      deny: ['memfd:x*']\n", "p.yaml:4:14", "memfd:** (every memfd)"),
    ("policies:\n  - name: a\n  - name: a\n", "p.yaml:3:5", "second policy"),
    ("policies:\n  - name: a\n    match: {cgroup: system.slice}\n", "p.yaml:3:21", "absolute"),
    ("policies:\n  - name: a\n    network: {allow: [1.2.3.4\n", "p.yaml:4:1", "not valid YAML"),
])
def test_bad_policies_are_refused_with_the_place(text, where, why):
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    msg = str(e.value)
    assert msg.startswith(where + ":"), msg
    assert why in msg


def test_memfd_exec_rules():
    p = one('policies:\n  - name: a\n    exec: {deny: ["memfd:**", "/usr/bin/curl"]}\n')
    assert policy.path_decide(p, "memfd:anything", ACC_EXEC)[0] != 0
    assert policy.path_decide(p, "/usr/bin/true", ACC_EXEC)[0] == 0
    q = one('policies:\n  - name: a\n    exec: {deny: ["memfd:payload"]}\n')
    assert policy.path_decide(q, "memfd:payload", ACC_EXEC)[0] != 0
    assert policy.path_decide(q, "memfd:payload2", ACC_EXEC)[0] == 0


def test_network_most_specific_wins_then_deny():
    p = one("""
policies:
  - name: a
    default: deny
    network:
      allow: ["127.0.0.0/8", "10.0.0.0/8:443", "[::1]:8000-8100"]
      deny: ["127.0.0.2", "10.1.0.0/16"]
""")
    assert policy.net_decide(p, "127.0.0.1", 5) == 0
    assert policy.net_decide(p, "127.0.0.2", 5) != 0            # /32 deny inside the /8 allow
    assert policy.net_decide(p, "10.2.3.4", 443) == 0
    assert policy.net_decide(p, "10.2.3.4", 80) == p.net_default  # port not allowed: the default
    assert policy.net_decide(p, "10.1.2.3", 443) != 0            # the /16 deny is more specific
    assert policy.net_decide(p, "::1", 8050) == 0 and policy.net_decide(p, "::1", 9000) == p.net_default
    assert policy.net_decide(p, "::ffff:127.0.0.2", 1) != 0      # mapped: the IPv4 rules
    # same prefix, both verdicts: deny wins
    q = one('policies:\n  - name: b\n    network: {allow: ["127.0.0.1:80"], deny: ["127.0.0.1:80"]}\n')
    assert policy.net_decide(q, "127.0.0.1", 80) != 0


def test_any_address_and_unix_rules():
    p = one('policies:\n  - name: a\n    network:\n      deny: ["*:22", "unix:/run/docker.sock", "unix:/run/secrets/"]\n')
    assert policy.net_decide(p, "127.0.0.1", 22) and policy.net_decide(p, "::1", 22)
    assert not policy.net_decide(p, "127.0.0.1", 23)
    assert policy.unix_decide(p, "/run/docker.sock") and policy.unix_decide(p, "/run/secrets/x")
    assert not policy.unix_decide(p, "/run/other.sock")


def test_files_most_specific_wins_per_access(tmp_path):
    d = tmp_path / "data"
    (d / "secret").mkdir(parents=True)
    p = one(f"""
policies:
  - name: a
    files:
      allow: ["{d}/**"]
      deny:
        - {{path: "{d}/secret/**", access: [read]}}
        - {{path: "{d}/readonly.txt", access: [write, create]}}
""")
    assert policy.path_decide(p, f"{d}/x", ACC_READ | ACC_WRITE) == (0, 0)
    rid, denied = policy.path_decide(p, f"{d}/secret/k", ACC_READ | ACC_WRITE)
    assert rid and denied == ACC_READ  # write is still allowed by the subtree rule
    assert policy.path_decide(p, f"{d}/readonly.txt", ACC_READ)[0] == 0
    assert policy.path_decide(p, f"{d}/readonly.txt", ACC_WRITE | ACC_CREATE)[1] == ACC_WRITE | ACC_CREATE
    # a subtree covers the directory itself, but not a sibling with the same prefix
    assert policy.path_decide(p, f"{d}/secret", ACC_READ)[1] == ACC_READ
    assert policy.path_decide(p, f"{d}/secretive", ACC_READ)[0] == 0


def test_default_deny_files_with_allow_list():
    p = one('policies:\n  - name: a\n    files:\n      default: deny\n      allow: [/usr/**, /etc/hostname]\n')
    assert policy.path_decide(p, "/usr/lib/x.so", ACC_READ) == (0, 0)
    assert policy.path_decide(p, "/etc/hostname", ACC_READ) == (0, 0)
    rid, denied = policy.path_decide(p, "/etc/passwd", ACC_READ)
    assert rid == p.file_default and denied == ACC_READ
    assert parse('policies:\n  - name: a\n    files:\n      default: deny\n', "p.yaml").rules[rid].text == "default deny"


def test_symlinks_and_homes_are_expanded(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    p = one(f'policies:\n  - name: a\n    files:\n      deny: ["{tmp_path}/link/**", "~/.ssh/**"]\n')
    keys = {r.key for r in p.paths}
    assert f"{tmp_path}/link/".encode() in keys and f"{real}/".encode() in keys
    assert b"/root/.ssh/" in keys
    assert policy.path_decide(p, f"{real}/f", ACC_READ)[1] == ACC_READ


def test_exec_names_and_paths():
    p = one('policies:\n  - name: a\n    exec:\n      default: deny\n      allow: [/usr/bin/**, python3]\n'
            '      deny: [curl, sh]\n')
    assert policy.path_decide(p, "/usr/bin/git", ACC_EXEC) == (0, 0)
    assert policy.path_decide(p, "/usr/bin/curl", ACC_EXEC)[1] == ACC_EXEC  # the name deny wins
    assert policy.path_decide(p, "/opt/x/python3", ACC_EXEC) == (0, 0)       # the name allow counts
    assert policy.path_decide(p, "/opt/x/tool", ACC_EXEC)[0] == p.exec_default
    # sh resolves to another name on most systems (dash, bash): both names are denied
    real = os.path.basename(os.path.realpath("/bin/sh"))
    assert policy.path_decide(p, f"/usr/bin/{real}", ACC_EXEC)[1] == ACC_EXEC


def test_match_first_policy_wins():
    ps = parse("""
policies:
  - name: fs
    match: {exe: "*/node", cmdline: "*server-filesystem*"}
  - name: in-container
    match: {container: "abc1"}
  - name: service
    match: {cgroup: /system.slice/mcp.service}
  - name: rest
""", "p.yaml")
    node = Identity.of("/usr/bin/node", ["node", "/x/server-filesystem/dist/index.js", "/srv"], "/user.slice")
    assert ps.match(node).name == "fs"
    ctr = Identity.of("/usr/bin/python3", ["python3"], "/system.slice/docker-abc1" + "0" * 60 + ".scope")
    assert ctr.container == "abc1" + "0" * 60 and ps.match(ctr).name == "in-container"
    svc = Identity.of("/usr/bin/python3", ["python3"], "/system.slice/mcp.service/worker")
    assert ps.match(svc).name == "service"
    assert ps.match(Identity.of("/bin/true", ["true"], "/")).name == "rest"


def test_compiled_entries_follow_the_kernel_layout():
    p = one('policies:\n  - name: a\n    network:\n      allow: ["127.0.0.0/8"]\n      deny: ["127.0.0.2:1-1000"]\n'
            '    files:\n      deny: [/etc/shadow]\n')
    entries = compile_policy(p, 3)
    net = [(k, v) for m, k, v in entries if m == "net_rules"]
    by_len = {int.from_bytes(k[:4], "little"): v for k, v in net}
    inner = NET_VALUE.unpack(by_len[32 + 32])
    assert inner[0] == 2  # the /32 carries its own rule and the /8's, its own first
    assert inner[2:4] == (1, 1000) and inner[4] & policy.RULE_DENY and inner[7] & policy.RULE_DENY == 0
    path = [(k, v) for m, k, v in entries if m == "path_rules"]
    assert len(path) == 1 and path[0][0] == PKEY.pack(32 + 8 * len(b"/etc/shadow\0"), 3, b"/etc/shadow\0")


def test_too_many_rules_on_one_prefix_are_refused():
    rules = ", ".join(f'"127.0.0.1:{p}"' for p in range(1, 18))
    with pytest.raises(PolicyError, match="at most 16"):
        parse(f"policies:\n  - name: a\n    network: {{deny: [{rules}]}}\n", "p.yaml")


def test_unix_paths_judged_after_the_fact_where_the_kernel_cannot():
    """Kernels before 6.7 have no cgroup/connect_unix: the connect event is judged in userspace."""
    from mcpwitness.kernel.enforce import Enforcer, unix_violation
    from mcpwitness.records import ConnectEvent
    ps = parse('policies:\n  - name: p\n    network:\n      deny: ["unix:/run/docker.sock", "unix:@secret"]\n',
               "p.yaml")
    enf = Enforcer(kernel=None)
    enf.pset, enf.slots, enf.rules = ps, {"p": 1}, ps.rules

    def connect(path, slot=1):
        return ConnectEvent("t", 1, 10, 10, 1, 0, "c", 5, 0, 10, [], False, [], 3, "AF_UNIX", None, None, path,
                            "stream", None, 0, None, policy_slot=slot)

    pe = unix_violation(enf, connect("/run/docker.sock"))
    assert pe.action == "reported" and pe.path == "/run/docker.sock" and pe.family == "unix"
    assert ps.rules[pe.rule_id].text == "unix:/run/docker.sock"
    assert unix_violation(enf, connect("@secret")).rule_id
    assert unix_violation(enf, connect("/run/other.sock")) is None
    assert unix_violation(enf, connect("/run/docker.sock", slot=0)) is None  # no policy


def test_what_cannot_be_enforced_here_is_said():
    from mcpwitness.kernel.enforce import enforcement_gaps
    ps = parse('policies:\n  - name: a\n    network: {deny: ["*:22"]}\n    files: {deny: [/etc/shadow]}\n'
               '  - name: b\n    mode: monitor\n    network: {deny: ["*:22"]}\n'
               '  - name: c\n    exec: {default: deny}\n', "p.yaml")
    everything = {"network": "cgroup", "unix": "cgroup", "files": "lsm", "exec": "lsm"}
    assert enforcement_gaps(ps, everything) == []
    gaps = enforcement_gaps(ps, {**everything, "network": None, "exec": None})
    assert len(gaps) == 2  # b is monitor-only: nothing to enforce
    assert "'a': network rules cannot be enforced" in gaps[0] and "'c': exec rules" in gaps[1]
