"""tls.py without the kernel: finding libssl and the offsets the uprobes go on."""
import os


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
