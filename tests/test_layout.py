"""The Python mirror of bpf/mcpwitness.h matches the compiled object's BTF,
and the shipped objects were built from the sources in this tree."""
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest

from mcpwitness.kernel import abi
from mcpwitness.kernel import loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import build_bpf  # noqa: E402


def btf_structs(obj):
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed")
    raw = subprocess.run(["bpftool", "-j", "btf", "dump", "file", obj, "format", "raw"],
                         capture_output=True, check=True).stdout
    types = json.loads(raw)["types"]
    return {t["name"]: t for t in types if t.get("kind") == "STRUCT" and t.get("name")}


def offsets(fmt: str) -> list[int]:
    """Byte offset of each struct-module field (arrays counted once)."""
    out, off = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z])", fmt.lstrip("<")):
        n = int(count or 1)
        size = struct.calcsize("<" + code)
        if code == "s":
            out.append(off)
            off += n
        elif count:  # an array of n elements: one C member
            out.append(off)
            off += n * size
        else:
            out.append(off)
            off += size
    return out


def test_event_args_union_matches_btf():
    """Each event type's arguments are a named struct in union mw_args; the
    decoder reads them where kernel/abi.py's ARGS says they are."""
    raw = subprocess.run(["bpftool", "-j", "btf", "dump", "file", loader.object_path(), "format", "raw"],
                         capture_output=True, check=True).stdout if shutil.which("bpftool") else pytest.skip("bpftool")
    types = {t["id"]: t for t in json.loads(raw)["types"]}
    union = next(t for t in types.values() if t.get("kind") == "UNION" and t.get("name") == "mw_args")
    assert union["size"] == 32
    got = {}
    for m in union["members"]:
        if m["name"] == "raw":
            continue
        st = types[m["type_id"]]
        assert st["kind"] == "STRUCT", m
        got[m["name"]] = {f["name"]: f["bits_offset"] // 8 for f in st["members"] if not f["name"].startswith("_")}
    assert got == abi.ARGS


def test_event_layout_matches_btf():
    s = btf_structs(loader.object_path())
    ev = s["mw_event"]
    assert ev["size"] == abi.EVENT_SIZE
    assert [m["bits_offset"] // 8 for m in ev["members"]] == offsets(abi.EVENT_FMT)
    names = [m["name"] for m in ev["members"]]
    assert names.index("data") == len(names) - 1 and ev["members"][-1]["bits_offset"] // 8 == abi.HDR_SIZE
    assert s["mw_proc"]["size"] == abi.PROC.size
    assert [m["bits_offset"] // 8 for m in s["mw_proc"]["members"]] == offsets(abi.PROC.format)
    assert s["mw_config"]["size"] == loader.CONFIG.size
    assert s["mw_sockinfo"]["size"] == abi.SOCKINFO.size
    assert [m["bits_offset"] // 8 for m in s["mw_sockinfo"]["members"]] == offsets(abi.SOCKINFO.format)
    assert s["mw_stream_key"]["size"] == loader.STREAM_KEY.size


def test_counter_names_match_header():
    with open(os.path.join(ROOT, "bpf", "mcpwitness.h")) as f:
        h = f.read()
    body = h[h.index("enum mw_counter {"):h.index("MW_C_MAX,")]
    assert len(re.findall(r"MW_C_\w+", body)) == len(abi.COUNTERS)


@pytest.mark.parametrize("name", list(build_bpf.OBJECTS))
def test_shipped_object_matches_sources(name, tmp_path):
    pkg = os.path.join(ROOT, "src", "mcpwitness", "bpf")
    obj = os.path.join(pkg, build_bpf.object_name(name))
    with open(obj[: -len(".bpf.o")] + ".json") as f:
        manifest = json.load(f)
    with open(obj, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == manifest["sha256"]
    # every source the object was built from is unchanged since
    assert manifest["sources"] == build_bpf.sources_digest(name), \
        "bpf/ changed since the shipped object was built: run python3 scripts/build_bpf.py"
    if not shutil.which("clang"):
        pytest.skip("clang not installed: sources checked by hash only")
    if build_bpf.clang_version("clang") != manifest["compiler"]:
        pytest.skip(f"compiler differs from the one that built the object ({manifest['compiler']})")
    rebuilt = os.path.join(tmp_path, build_bpf.object_name(name))
    build_bpf.build(str(tmp_path))
    with open(rebuilt, "rb") as a, open(obj, "rb") as b:
        assert a.read() == b.read(), "rebuilding from these sources gives another object"


def test_policy_map_layouts_match_btf():
    from mcpwitness.kernel import enforce
    s = btf_structs(loader.object_path())
    for name, st in (("mw_policy", enforce.POLICY), ("mw_nkey", enforce.NKEY), ("mw_net_rules", enforce.NET_VALUE),
                     ("mw_pkey", enforce.PKEY), ("mw_path_rule", enforce.PATH_VALUE), ("mw_nmkey", enforce.NMKEY),
                     ("mw_name_rule", enforce.NAME_VALUE)):
        assert s[name]["size"] == st.size, name
