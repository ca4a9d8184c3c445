"""Policies into the kernel: map writes, generations, which process has which.

    enf = Enforcer(kernel)
    enf.apply(policy.load("policy.yaml"))    # all at once, no gap
    slot = enf.slot_for(Identity.of(exe, argv, cgroup))
    kernel.track(pid, policy=slot)           # children inherit it in the kernel

A reload writes the new rule set under the inactive generation and then
flips one 4-byte map value: every check runs either wholly under the old set
or wholly under the new one, and the programs stay attached throughout. The
generation left behind is cleared at the next reload, long after any check
that read the old generation has finished.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from collections import Counter

from ..policy import PolicyError, load as load_policy
from ..policy import (
    MAX_POLICIES, NET_RULES, PKEY_PATH, RULE_DENY, Identity, Policy, PolicySet, Rule, net_entries, path_entries,
    unix_decide
)
from ..proc import identity, read_cgroup
from ..records import ConnectEvent, PolicyEvent, PolicyLoad
from ..util import file_stamp, now_iso
from . import libbpf
from .abi import POLICY_MECHANISMS
from .loader import MECH_UNIX_CGROUP

POLICY = struct.Struct("<IIII")                      # struct mw_policy
NKEY = struct.Struct("<II16s")                       # struct mw_nkey
NET_VALUE = struct.Struct("<II" + "HHI" * NET_RULES)  # struct mw_net_rules
PKEY = struct.Struct(f"<II{PKEY_PATH}s")             # struct mw_pkey
PATH_VALUE = struct.Struct("<BBH5I")                 # struct mw_path_rule
NMKEY = struct.Struct("<I60s")                       # struct mw_nmkey
NAME_VALUE = struct.Struct("<II")                    # struct mw_name_rule
MODE = {"monitor": 1, "enforce": 2}


def compile_policy(pol: Policy, scope: int) -> list[tuple[str, bytes, bytes]]:
    """(map, key, value) entries for one policy under one scope
    (generation * MAX_POLICIES + slot)."""
    out = [("policies", struct.pack("<I", scope),
            POLICY.pack(MODE[pol.mode], pol.net_default, pol.file_default, pol.exec_default))]
    for version, net, rules in net_entries(pol):
        vals = []
        for r in rules:
            vals += [r.lo, r.hi, r.rule | (RULE_DENY if r.deny else 0)]
        vals += [0, 0, 0] * (NET_RULES - len(rules))
        addr = net.network_address.packed.ljust(16, b"\0")
        out.append(("net_rules", NKEY.pack(32 + net.prefixlen, scope << 1 | (version == 6), addr),
                    NET_VALUE.pack(len(rules), 0, *vals)))
    for key, allow, deny, ids in path_entries(pol):
        out.append(("path_rules", PKEY.pack(32 + 8 * len(key), scope, key),
                    PATH_VALUE.pack(allow, deny, 0, *ids)))
    for r in pol.names:
        out.append(("name_rules", NMKEY.pack(scope, r.name.encode()), NAME_VALUE.pack(r.rule, int(r.deny))))
    return out


class Enforcer:
    def __init__(self, kernel):
        self.kernel = kernel
        self.pset: PolicySet | None = None
        self.slots: dict[str, int] = {}          # policy name -> slot, stable across reloads
        self.rules: dict[int, Rule] = {}         # every rule id ever issued
        self.gen = 0                             # the active generation
        self._written: dict[int, list[tuple[str, bytes]]] = {0: [], 1: []}
        self.reloads = 0
        self.lock = threading.Lock()

    @property
    def mechanisms(self) -> dict:
        return self.kernel.mechanisms

    def next_rule_id(self) -> int:
        return max(self.rules, default=0) + 1

    def _fd(self, name: str) -> int:
        return self.kernel.map_fd(name)

    def _update(self, name: str, key: bytes, value: bytes) -> None:
        k = ctypes.create_string_buffer(key, len(key))
        v = ctypes.create_string_buffer(value, len(value))
        with libbpf.capture_log() as log:
            libbpf.check_int(libbpf.bpf_map_update_elem(self._fd(name), k, v, libbpf.BPF_ANY),
                             f"write policy map {name}", log)

    def _delete(self, name: str, key: bytes) -> None:
        k = ctypes.create_string_buffer(key, len(key))
        libbpf.bpf_map_delete_elem(self._fd(name), k)

    def snapshot(self) -> dict:
        """What a restarted agent needs to switch the pinned maps with no gap:
        the active generation, the slots by policy name, and the keys each
        generation wrote (cleared before that generation is written again)."""
        return {"gen": self.gen, "slots": dict(self.slots),
                "written": {str(g): [[n, k.hex()] for n, k in w] for g, w in self._written.items()}}

    def restore(self, snap: dict) -> None:
        """Take over maps a previous agent filled (kernel/pin.py): the next
        apply() writes the other generation and switches, as a reload does."""
        self.gen = int(snap["gen"])
        self.slots = {str(n): int(v) for n, v in snap["slots"].items()}
        self._written = {int(g): [(n, bytes.fromhex(k)) for n, k in w] for g, w in snap["written"].items()}

    def apply(self, pset: PolicySet) -> None:
        """Make pset the running policy set, atomically."""
        with self.lock:
            new = 1 - self.gen
            for name, key in self._written[new]:   # what the generation before last left
                if name == "policies":
                    self._update(name, key, POLICY.pack(0, 0, 0, 0))
                else:
                    self._delete(name, key)
            self._written[new] = []
            for pol in pset.policies:
                if pol.name not in self.slots:
                    used = set(self.slots.values())
                    free = next((s for s in range(1, MAX_POLICIES) if s not in used), None)
                    if free is None:  # names come and go over many reloads: reuse the slots of gone ones
                        live = {p.name for p in pset.policies}
                        self.slots = {n: s for n, s in self.slots.items() if n in live}
                        used = set(self.slots.values())
                        free = next(s for s in range(1, MAX_POLICIES) if s not in used)
                    self.slots[pol.name] = free
                for name, key, value in compile_policy(pol, new * MAX_POLICIES + self.slots[pol.name]):
                    self._update(name, key, value)
                    self._written[new].append((name, key))
            # the switch: one value
            self._update("policy_gen", struct.pack("<I", 0), struct.pack("<I", new))
            self.gen = new
            self.rules.update(pset.rules)
            self.pset = pset
            self.reloads += 1

    def match(self, ident: Identity) -> tuple[int, Policy | None]:
        """(slot, policy) for a server with this identity; (0, None) when no policy matches."""
        pol = self.pset.match(ident) if self.pset else None
        return (self.slots[pol.name], pol) if pol else (0, None)

    def policy_name(self, slot: int) -> str | None:
        return next((n for n, s in self.slots.items() if s == slot), None)

    def names(self, slot: int, rule_id: int) -> tuple[str | None, str | None]:
        """(policy name, the rule in words) of a policy event, from the running set."""
        r = self.rule(rule_id)
        return self.policy_name(slot), (r.describe() if r else None)

    def rule(self, rule_id: int) -> Rule | None:
        return self.rules.get(rule_id)

    def policy(self, slot: int) -> Policy | None:
        name = self.policy_name(slot)
        if not name or not self.pset:
            return None
        return next((p for p in self.pset.policies if p.name == name), None)


def enforcement_gaps(pset: PolicySet, mechanisms: dict) -> list[str]:
    """What the policies ask for that this kernel cannot enforce: said at
    start-up and at each reload, never left to be discovered later."""
    out = []
    for p in pset.policies:
        if p.mode != "enforce":
            continue
        has = {"network": bool(p.net) or bool(p.net_default),
               "files": any(r.access & 0x7 for r in p.paths) or bool(p.file_default),
               "exec": bool(p.names) or any(r.access & 0x8 for r in p.paths) or bool(p.exec_default)}
        for kind, wanted in has.items():
            if wanted and not mechanisms.get(kind):
                out.append(f"policy {p.name!r}: {kind} rules cannot be enforced on this kernel "
                           f"(no mechanism: see `mcpwitness doctor`); they are not checked")
    return out


def unix_violation(enforcer: Enforcer, ev: ConnectEvent) -> PolicyEvent | None:
    """Where the kernel has no cgroup/connect_unix: judge a Unix socket
    connect after the fact, from its connect event. Reported, not refused."""
    pol = enforcer.policy(ev.policy_slot)
    if pol is None or not ev.unix_path:
        return None
    rid = unix_decide(pol, ev.unix_path)
    if not rid:
        return None
    return PolicyEvent(ev.time, ev.ktime_ns, ev.pid, ev.tid, ev.ppid, ev.uid, ev.comm, ev.start_ns, ev.cgroup_id,
                       ev.root, ev.ancestry, False, [], "connect", "reported",
                       "not refused: this kernel has no cgroup/connect_unix; checked after the connect",
                       POLICY_MECHANISMS[10], ev.error, ev.policy_slot, rid, [], ev.unix_path, "unix", None,
                       None, None, *enforcer.names(ev.policy_slot, rid))


class PolicyRuntime:
    """The policy file at run time: which policy each tracked root has (matched
    on its identity, again at each reload), the file watched for changes (or
    a reload asked for, SIGHUP), policy events named, and Unix socket paths
    judged where the kernel cannot (reported, not refused)."""

    def __init__(self, kernel, path: str, pset: PolicySet, adopted: dict | None = None):
        self.kernel = kernel
        self.path = path
        self.enforcer = Enforcer(kernel)
        if adopted:  # the pinned maps hold the last agent's policy: switch from it, no gap
            self.enforcer.restore(adopted)
        self.enforcer.apply(pset)
        self.stamp = file_stamp(path)
        self.reload_requested = False
        self.last_look = 0
        self.roots: dict[int, tuple[int, Identity]] = {}   # root -> (slot, identity)
        self.refused = 0
        self.counts: Counter = Counter()
        self.errors: list[str] = []
        self.unix_in_userspace = kernel.mechanisms.get("unix") != MECH_UNIX_CGROUP

    # --- which policy a root has ----------------------------------------------
    def slot_for(self, ident: Identity | None) -> int:
        return self.enforcer.match(ident)[0] if ident is not None else 0

    def remember(self, pid: int, slot: int, ident: Identity) -> None:
        self.roots[pid] = (slot, ident)

    def for_pid(self, pid: int) -> int:
        """Match a running root against the policies; remembered for reloads."""
        exe, cmdline = identity(pid)
        ident = Identity.of(exe, cmdline or [], read_cgroup(pid))
        slot = self.slot_for(ident)
        self.roots[pid] = (slot, ident)
        return slot

    def slot_of(self, root: int) -> int:
        return self.roots.get(root, (0,))[0]

    def names(self, slot: int, rule_id: int) -> tuple[str | None, str | None]:
        return self.enforcer.names(slot, rule_id)

    # --- events ---------------------------------------------------------------
    def hook(self, ev, out: list) -> None:
        """Pipeline hook: a Unix socket connect judged here where the kernel could not."""
        if type(ev) is ConnectEvent and ev.unix_path and ev.policy_slot and self.unix_in_userspace:
            pe = unix_violation(self.enforcer, ev)
            if pe is not None:
                self.counts["policy_reported_unix"] += 1
                out.append(pe)

    def gaps(self) -> list[str]:
        return enforcement_gaps(self.enforcer.pset, self.enforcer.mechanisms)

    # --- reloads --------------------------------------------------------------
    def request_reload(self) -> None:
        self.reload_requested = True

    def maybe_reload(self, now: int) -> PolicyLoad | None:
        """At most once a second, or when asked: reload if the file changed."""
        if not self.reload_requested and now - self.last_look < 1e9:
            return None
        self.last_look = now
        forced, self.reload_requested = self.reload_requested, False
        stamp = file_stamp(self.path)
        if not forced and stamp == self.stamp:
            return None
        self.stamp = stamp
        return self.reload()

    def reload(self) -> PolicyLoad:
        """Load the policy file again and switch to it with no gap; a file
        that does not validate is refused and the running set stays."""
        e = self.enforcer
        try:
            pset = load_policy(self.path, first_rule=e.next_rule_id())
            e.apply(pset)
        except (PolicyError, OSError) as err:
            self.refused += 1
            self.errors.append(f"policy: {err}")
            return PolicyLoad(time=now_iso(), path=self.path, reload=True, result="refused", error=str(err),
                              running=e.pset.digest[:12])
        moved = {}
        live = {v[1] for v in self.kernel.tracked().values()}
        for root in [r for r in self.roots if r not in live]:
            del self.roots[root]  # its whole tree has exited: nothing to retag
        for root, (slot, ident) in list(self.roots.items()):
            new, _ = e.match(ident)
            if new != slot:
                self.roots[root] = (new, ident)
                moved[root] = self.kernel.set_policy(root, new)
        return PolicyLoad(time=now_iso(), reload=True, result="applied",
                          retagged={str(k): v for k, v in moved.items()}, **self.record())

    def record(self) -> dict:
        """The running policy set, as the start and policy_load records say it."""
        e = self.enforcer
        return {"path": self.path, "digest": e.pset.digest[:12], "generation": e.gen, "mechanisms": e.mechanisms,
                "fallback_reason": self.kernel.fallback_reason, "not_enforceable": self.gaps(),
                "policies": [{"name": p.name, "slot": e.slots[p.name], "mode": p.mode, "match": p.match,
                              "where": p.where} for p in e.pset.policies],
                "servers": {str(r): e.policy_name(s) for r, (s, _) in self.roots.items()}}

    def stats(self) -> dict:
        e = self.enforcer
        return {"reloads": e.reloads - 1, "refused_reloads": self.refused, "generation": e.gen}
