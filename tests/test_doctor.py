"""`mcpwitness doctor` tells the truth about this kernel."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from mcpwitness.doctor import features

pytestmark = pytest.mark.kernel
MW = shutil.which("mcpwitness") or os.path.join(os.path.dirname(sys.executable), "mcpwitness")


@pytest.fixture(scope="module")
def report():
    p = subprocess.run([MW, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_every_mechanism_is_probed(report):
    names = {m["mechanism"] for m in report["mechanisms"]}
    for n in ("tracepoint", "raw_tracepoint", "tp_btf", "fentry", "kprobe", "uprobe", "lsm/file_open",
              "lsm/socket_connect", "lsm/bprm_check_security", "cgroup/connect4", "cgroup/connect6",
              "helper bpf_send_signal", "ring buffer output"):
        assert n in names
    assert report["btf"] is True and report["map_types"]["ringbuf"] is True
    assert report["main_object"]["ok"] is True
    assert "tracefs" in report["mounts"] and "bpffs" in report["mounts"]


def test_probe_results_match_what_loading_really_does(report):
    """Cross-check two probes by hand: tracepoints attach, and LSM is
    reported available exactly when an LSM program really loads here."""
    from mcpwitness.kernel.probes import run_probe
    mech = {m["mechanism"]: m["ok"] for m in report["mechanisms"]}
    assert mech["tracepoint"] and mech["tp_btf"]
    assert mech["lsm/file_open"] == run_probe("probe_lsm_file_open", "attach").ok
    assert mech["fentry"] == run_probe("probe_fentry", "attach").ok


def test_fallbacks_are_named_when_lsm_is_missing(report):
    mech = {m["mechanism"]: m["ok"] for m in report["mechanisms"]}
    rows = {f["feature"]: f for f in report["features"]}
    if mech["lsm/file_open"]:
        assert rows["file enforcement"]["mechanism"].startswith("lsm/file_open")
    else:
        assert "SIGKILL" in rows["file enforcement"]["mechanism"]
        assert "O_CREAT/O_TRUNC" in rows["file enforcement"]["note"]
        assert "unavailable here" in rows["file enforcement"]["alternatives"]
    if mech["cgroup/connect4"]:
        assert rows["network enforcement"]["mechanism"].startswith("cgroup sock_addr")


def test_feature_table_without_lsm_or_cgroup():
    rows = {f["feature"]: f for f in features({"tracepoint": True, "tp_btf": True})}
    assert rows["network enforcement"]["mechanism"] == "none: policies can only be monitored"
    assert rows["file enforcement"]["mechanism"] == "none: policies can only be monitored"
    assert rows["file enforcement"]["status"] == "unavailable"
    rows = {f["feature"]: f for f in features({"tracepoint": True, "tp_btf": True, "lsm/file_open": True,
                                               "lsm/socket_connect": True, "lsm/bprm_check_security": True})}
    assert rows["network enforcement"]["mechanism"].startswith("lsm/socket_connect")
    assert rows["exec enforcement"]["mechanism"].startswith("lsm/bprm_check_security")


def test_text_output(report):
    p = subprocess.run([MW, "doctor"], capture_output=True, text=True, timeout=120)
    assert "feature -> mechanism used here" in p.stdout and "main BPF object: OK" in p.stdout
    assert "verified in " in p.stdout and "instructions processed" in p.stdout


def test_verification_is_reported_and_a_program_near_the_limit_is_warned_of(report):
    from mcpwitness.doctor import render, verification
    v = report["main_object"]["verification"]
    assert v["programs"] and v["insns"] == sum(x["insns"] for x in v["programs"].values()) and v["near_limit"] == []
    near = verification({"mw_big": {"insns": 600000, "limit": 1000000, "usec": 5000},
                         "mw_small": {"insns": 100, "limit": 1000000, "usec": 10}})
    assert near["near_limit"] == ["mw_big"] and near["ms"] == 5.0
    text = render({**report, "main_object": {**report["main_object"], "verification": near}})
    assert "WARNING: mw_big is near the verifier's instruction limit (600000 of 1000000)" in text
