"""tls.py without the kernel: finding libssl and the offsets the uprobes go on."""
import os
import subprocess
import tempfile

import pytest


def test_elf_symbols_of_libssl_and_of_files_that_are_not_elf(tmp_path):
    from mcpwitness.kernel.tls import ENTRY, TlsProbes, elf_symbols, system_libraries

    libs = system_libraries()
    assert libs, "no libssl on this host"
    syms = elf_symbols(os.path.realpath(libs[0]), set(ENTRY))
    assert {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"} <= set(syms) and all(syms.values())
    junk = tmp_path / "libssl.so.9"
    junk.write_bytes(b"\x7fELF\x02\x01" + b"\xff" * 100)  # an ELF header that lies
    probes = TlsProbes(kernel=None)
    assert probes.add(str(junk)) is False and probes.errors  # counted, never raised
    text = tmp_path / "notes.txt"
    text.write_text("not a library")
    assert elf_symbols(str(text), set(ENTRY)) == {}


def _elf_regions(data: bytes) -> list[tuple[int, int]]:
    """Where a real ELF's parser input lives: the ELF header, the program
    headers and the section headers."""
    import struct
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    return [(0, 64), (phoff, phentsize * phnum), (shoff, shentsize * shnum)]


def test_a_crafted_elf_gives_offsets_or_says_it_is_malformed(tmp_path):
    """Any tracked process may exec a file that claims to be ELF, and its
    headers are read at that exec: lies in them (offsets, sizes, counts,
    links, a cut file) give offsets or ValueError("malformed ELF"), never
    another exception nor a read the file's size does not back."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from test_fuzz_decoders import EXAMPLES

    from mcpwitness.kernel.tls import ENTRY, elf_symbols, system_libraries

    real = open(os.path.realpath(system_libraries()[0]), "rb").read()
    regions = _elf_regions(real)
    path = tmp_path / "crafted.so"
    edit = st.tuples(st.integers(0, len(regions) - 1), st.integers(0, 1 << 20),
                     st.binary(min_size=1, max_size=8) | st.sampled_from([b"\xff" * 8, b"\0" * 8, b"\x7f" * 2]))

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(st.lists(edit, min_size=1, max_size=6), st.one_of(st.none(), st.integers(0, len(real))))
    def check(edits, cut):
        data = bytearray(real)
        for region, k, b in edits:
            start, n = regions[region]
            at = start + k % max(n, 1)
            data[at:at + len(b)] = b
        path.write_bytes(bytes(data[:cut] if cut is not None else data))
        try:
            out = elf_symbols(str(path), set(ENTRY))
        except ValueError as e:
            assert "malformed ELF" in str(e), e
            return
        assert isinstance(out, dict) and all(isinstance(v, int) and v >= 0 for v in out.values())

    check()


def test_go_return_instructions_are_those_objdump_finds_and_bad_code_is_refused():
    """The uprobes on Go's (*tls.Conn).Read and .Write go on each return
    instruction: found by decoding the function whole, they are exactly
    binutils' objdump's `ret`s there; code that does not decode cleanly to
    its end, or has no return, is refused (a uprobe inside an instruction
    corrupts the program)."""
    import re
    import subprocess

    import pytest
    from test_real_clients import _go

    from mcpwitness.kernel import gotls
    from mcpwitness.kernel.tls import TlsProbes, elf_functions

    path = _go("server")
    funcs, loads = elf_functions(path, set(gotls.FUNCTIONS))
    points = gotls.probe_points(path, funcs, loads)
    assert gotls.version_tuple(points["version"]) >= (1, 17), points
    for fn in gotls.FUNCTIONS:
        off, size = funcs[fn]
        vaddr = next(v + off - o for v, o, n in loads if o <= off < o + n)
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={vaddr:#x}",
                              f"--stop-address={vaddr + size:#x}", path], capture_output=True, text=True,
                             check=True).stdout
        rets = [int(m, 16) - vaddr + off for m in re.findall(r"^\s*([0-9a-f]+):\s+ret", dis, re.M)]
        assert rets and points[fn] == (off, rets), (fn, points[fn], rets)
    # push rbp; mov rbp, rsp; ret; then int3 padding: one return at byte 4
    assert gotls.return_offsets(b"\x55\x48\x89\xe5\xc3\xcc\xcc") == [4]
    # ret imm16 (c2 08 00) and a byte c3 inside an immediate (mov eax, 0xc3) is not a return
    assert gotls.return_offsets(b"\xb8\xc3\x00\x00\x00\xc2\x08\x00") == [5]
    with pytest.raises(ValueError, match="no return"):
        gotls.return_offsets(b"\x90\x90\xcc")
    with pytest.raises(ValueError, match="stopped|broke"):
        gotls.return_offsets(b"\xc3\x06\x90")  # push es: invalid in 64-bit mode, before the end
    assert gotls.version_tuple("go1.19.8") == (1, 19, 8) and gotls.version_tuple("devel +abc") == ()
    # what the probes make of it: a Go binary, both functions' probe points
    probes = TlsProbes(kernel=None)
    key, found = probes._symbols(path)
    assert found["library"] == "go" and set(found["points"]) == set(gotls.FUNCTIONS)


def test_a_go_binary_before_the_register_abi_is_not_probed(tmp_path):
    """Go before 1.17 passed arguments on the stack: the registers the
    kernel side reads would be garbage. A binary whose build info says so is
    refused, with the reason, before any uprobe."""
    from test_real_clients import _go

    from mcpwitness.kernel import gotls
    from mcpwitness.kernel.tls import TlsProbes

    data = bytearray(open(_go("server"), "rb").read())
    i = data.find(gotls.BUILDINFO)
    while i % 16:
        i = data.find(gotls.BUILDINFO, i + 1)
    assert data[i + 15] & 2 and data[i + 32] == len(b"go1.19.8")
    data[i + 33:i + 41] = b"go1.16.9"
    old = tmp_path / "old-go"
    old.write_bytes(bytes(data))
    probes = TlsProbes(kernel=None)
    assert probes.add(str(old)) is False
    assert "go1.16.9" in probes.unread[str(old)] and "register ABI" in probes.unread[str(old)]


def test_tls_stacks_that_cannot_be_read_are_recognised_and_said(tmp_path):
    """An executable that carries its TLS without the symbols a probe needs
    (BoringSSL in Bun and Claude Code, rustls in Deno, a stripped Go binary)
    is not probed, and says so: by the source paths its error reports and
    panics leave in the file, its build info for Go. Anything else is quiet."""
    from mcpwitness.kernel import gotls
    from mcpwitness.kernel.tls import TlsProbes

    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 57  # an ELF header with no program or section headers
    cases = {
        "bun": (b"../../vendor/boringssl/ssl/ssl_lib.cc\0", "BoringSSL"),
        "deno": (b"/home/runner/.cargo/registry/src/index/rustls-0.23.40/src/conn.rs\0"
                 b"/aws-lc/crypto/fipsmodule/aes.c\0", "rustls 0.23.40"),
        "go-stripped": (b"\0" * 12 + gotls.BUILDINFO + b"\x08\x02" + b"\0" * 16 + b"\x08go1.22.1", "stripped"),
        "plain": (b"nothing of the kind here\0", None),
    }
    probes = TlsProbes(kernel=None)
    for name, (body, want) in cases.items():
        path = tmp_path / name
        path.write_bytes(elf + body)
        assert probes.add(str(path)) is False
        said = probes.unread.get(str(path))
        assert (want in said and "not read" in said) if want else said is None, (name, said)


def test_boringssl_functions_found_by_their_code_are_those_the_symbols_name(tmp_path):
    """A stand-in for BoringSSL's ssl_lib.cc (tests/workloads/boringssl_like.c:
    the same error reports in the same order), built with symbols, then
    stripped: SSL_read, SSL_write and SSL_do_handshake found in the stripped
    file (fixed-address and position-independent) are where the symbol table
    says; a build where two functions report what SSL_write does, or where
    SSL_peek stands apart from SSL_read, is refused with the reason (a uprobe
    at a wrong offset corrupts the program)."""
    import shutil
    from mcpwitness.kernel import boringssl
    from mcpwitness.kernel.tls import elf_functions
    cc = shutil.which("clang") or shutil.which("gcc")
    assert cc, "no C compiler: scripts/setup installs clang"
    src = os.path.join(os.path.dirname(__file__), "workloads", "boringssl_like.c")
    wanted = ("SSL_read", "SSL_write", "SSL_do_handshake")

    def build(name, *flags):
        out = tmp_path / name
        subprocess.run([cc, "-O2", "-fno-omit-frame-pointer", *flags, "-o", str(out), src], check=True)
        subprocess.run(["strip", "-o", str(out) + ".stripped", str(out)], check=True)
        return str(out), str(out) + ".stripped"

    for name, flags in (("fixed", ["-fno-pie", "-no-pie"]), ("pie", ["-fpie", "-pie"])):
        full, stripped = build(name, *flags)
        syms = {f: off for f, (off, _) in elf_functions(full, set(wanted))[0].items()}
        assert set(syms) == set(wanted) and elf_functions(stripped, set(wanted))[0] == {}
        got = boringssl.locate(stripped)
        assert {f: got[f] for f in wanted} == syms, (name, got, syms)
    for name, flag, why in (("twice", "-DTWICE", "2 functions report what SSL_write does"),
                            ("peek", "-DPEEK", "0 functions do what SSL_read does")):
        _, stripped = build(name, "-fno-pie", "-no-pie", flag)
        with pytest.raises(ValueError, match=why):
            boringssl.locate(stripped)
    plain = tmp_path / "plain"
    subprocess.run([cc, "-O2", "-o", str(plain), "-x", "c", "-"], input=b"int main(void) { return 0; }\n", check=True)
    with pytest.raises(ValueError, match="no ssl/ssl_lib.cc error reports"):
        boringssl.locate(str(plain))


def test_go_functions_from_the_runtime_table_are_those_the_symbols_name():
    """A Go binary built with -ldflags="-s -w" has no symbol table, but the
    runtime's own function table (.gopclntab) is still there: read from it,
    (*tls.Conn).Read and .Write start where the unstripped build's symbols
    say (the same code), and their sizes reach to the next function (the
    symbol's size plus int3 padding). A table that lies is not believed."""
    from mcpwitness.kernel import gotls
    from mcpwitness.kernel.tls import TlsProbes, elf_functions
    d = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "go-workloads")
    full, stripped = os.path.join(d, "server"), os.path.join(d, "server-stripped")
    assert os.access(stripped, os.X_OK), f"{stripped} missing: run scripts/setup"
    syms, loads = elf_functions(full, set(gotls.FUNCTIONS))
    table = gotls.pclntab_functions(full, gotls.FUNCTIONS, loads)
    assert set(syms) == set(table) == set(gotls.FUNCTIONS)
    for fn in gotls.FUNCTIONS:
        assert table[fn][0] == syms[fn][0] and 0 <= table[fn][1] - syms[fn][1] < 64, (fn, table[fn], syms[fn])
    s_syms, s_loads = elf_functions(stripped, set(gotls.FUNCTIONS))
    assert s_syms == {} and gotls.pclntab_functions(stripped, gotls.FUNCTIONS, s_loads) == table
    found = TlsProbes(kernel=None)._symbols(stripped)[1]
    want = gotls.probe_points(full, syms, loads)  # the entries and return instructions the symbols give
    assert found["library"] == "go" and found["points"] == {fn: want[fn] for fn in gotls.FUNCTIONS}, found
    # the same table with its function count made huge, or its entries pointing outside the file
    data = bytearray(open(stripped, "rb").read())
    at = data.find(b"\xf0\xff\xff\xff\x00\x00\x01\x08")
    assert at > 0
    bad = bytearray(data)
    bad[at + 8:at + 16] = (1 << 40).to_bytes(8, "little")
    with tempfile.NamedTemporaryFile() as f:
        f.write(bad)
        f.flush()
        assert gotls.pclntab_functions(f.name, gotls.FUNCTIONS, s_loads) == {}


def test_a_process_mapping_two_libssl_copies_is_said_to_read_through_the_one_under_its_soname(tmp_path, monkeypatch):
    """Python wheels bundle their own libssl (psycopg's libssl-<hash>.so.3): a
    process that maps one beside the system's is read through the one its
    ssl module links, the one under libssl's own soname, whatever the order
    in its maps."""
    from mcpwitness.kernel import tls
    bundled, system = tmp_path / "libssl-6a9b88ec.so.3", tmp_path / "libssl.so.3"
    for f in (bundled, system):
        f.write_bytes(b"\x7fELF")
    monkeypatch.setattr(tls, "mapped_libraries", lambda pid: [str(bundled), str(system)])
    t = tls.TlsProbes.__new__(tls.TlsProbes)
    t.libs = {}
    t.files = {(os.stat(f).st_dev, os.stat(f).st_ino): {"functions": {"SSL_read": (1, 1)}} for f in (bundled, system)}
    assert t.library_of(os.getpid()).file == str(system)
    t.libs = {}
    monkeypatch.setattr(tls, "mapped_libraries", lambda pid: [str(bundled)])
    assert t.library_of(os.getpid()).file == str(bundled)  # the only one probed
