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
