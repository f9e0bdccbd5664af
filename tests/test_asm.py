"""The keystone front-end: what it adds to keystone, and where it says errors are."""

import pytest

from sandbox.asm import AsmError, assemble, assemble_file
from sandbox.disasm import disassemble


def words(src: str, base: int = 0x1000) -> list[str]:
    p = assemble(src, base)
    return [t for _, t in disassemble(p.code, base)]


def test_esb_and_ras_register_names_are_spelled_for_keystone():
    p = assemble("esb\nmrs x0, DISR_EL1\nmsr VSESR_EL2, x1\nmrs x2, erxstatus_el1\n", 0)
    got = [int.from_bytes(p.code[i:i + 4], "little") for i in range(0, 16, 4)]
    # ESB = HINT #16; MRS/MSR with the (op0, op1, CRn, CRm, op2) of each register
    assert got == [0xD503221F, 0xD538C120, 0xD51C5261, 0xD5385442]


def test_numeric_local_labels_resolve_backward_and_forward():
    p = assemble("1: nop\n b 1f\n b 1b\n1: b 1b\n", 0x1000)
    assert [t for _, t in disassemble(p.code, 0x1000)] == ["nop", "b #0x100c", "b #0x1000", "b #0x100c"]


def test_udf_and_inst_are_emitted_as_words():
    assert words("udf #5\n.inst 0xd503201f\n") == ["udf #5", "nop"]


def test_labels_and_constants_are_exported():
    p = assemble(".equ LIMIT, 42\nstart: nop\n.balign 16\nlater: ldr x0, =0x123456789abc\n", 0x4000)
    assert p["start"] == 0x4000 and p["later"] == 0x4010 and p["LIMIT"] == 42
    assert len(p.code) == 0x20  # literal pool included, symbol table not


def test_include_finds_firmware_and_the_including_folder(tmp_path):
    (tmp_path / "part.S").write_text("helper: ret\n")
    main = tmp_path / "main.S"
    main.write_text('.include "part.S"\n.include "vectors.S"\nentry: bl helper\n')
    p = assemble_file(main, 0x40000000)
    assert p["helper"] == 0x40000000 and p["exc_vectors"] % 2048 == 0


@pytest.mark.parametrize("src, line, fragment", [
    ("nop\nnop\nfrobnicate x1\nnop\n", 3, "mnemonic"),
    ("nop\nb nowhere\n", 2, "undefined symbol 'nowhere'"),
    ("nop\n.section .data\n", 2, "sections are not supported"),
    ('.include "no-such-file.S"\n', 1, "file not found"),
    ("nop\nb 1f\n", 2, "b 1f"),
])
def test_errors_name_file_line_and_message(src, line, fragment):
    with pytest.raises(AsmError) as e:
        assemble(src, 0x1000, filename="guest.S")
    assert (e.value.file, e.value.line) == ("guest.S", line)
    assert fragment in str(e.value)


def test_error_inside_an_included_file_names_that_file(tmp_path):
    (tmp_path / "bad.S").write_text("nop\nmov x0, x1, x2\n")
    main = tmp_path / "main.S"
    main.write_text('nop\n.include "bad.S"\n')
    with pytest.raises(AsmError) as e:
        assemble_file(main)
    assert e.value.file.endswith("bad.S") and e.value.line == 2


def test_an_assembler_abort_is_an_error_not_a_dead_process():
    # A branch out of range makes LLVM call exit(); the front-end reports it instead.
    with pytest.raises(AsmError) as e:
        assemble("b far\n.skip 0x9000000\nfar: nop\n", 0)
    assert "out of range" in str(e.value) or "error" in str(e.value).lower()
