"""Loaders: an arm64 Linux Image goes 2 MiB-aligned (RAM base + 2 MiB + text_offset) and is
entered at EL1h with x0 = the device tree, x1-x3 = 0, DAIF masked; a flat binary goes where
it is told (0x40080000 by default); bad files are refused with a message naming the field."""

import gzip
import struct

import pytest

from sandbox import ExitReason, assemble
from sandbox.boot import DtbError, boot, check_dtb
from sandbox.cli import main
from sandbox.loaders.flat import load_flat
from sandbox.loaders.image import ImageFormatError, is_linux_image, load_linux_image, parse_header
from sandbox.virt import create_vm

# Entry code of the test "kernel": records x0-x3, its own address, CurrentEL and DAIF, then
# powers off. Position-independent, as a kernel's first instructions are.
ENTRY = """
    b body
    .skip 60                 // the rest of the 64-byte header
body:
    adr x9, seen
    stp x0, x1, [x9]
    stp x2, x3, [x9, #16]
    adr x4, entry_here
entry_here:
    mrs x5, currentel
    mrs x6, daif
    stp x4, x5, [x9, #32]
    str x6, [x9, #48]
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16
    hvc #0
.balign 8
seen: .skip 56
"""


def make_image(text_offset=0, flags=0xA, extra_bss=0x10000, magic=0x644D5241):
    prog = assemble(ENTRY, 0)
    code = bytearray(prog.code)
    image_size = len(code) + extra_bss
    # code0 is the branch, code1 stays; then text_offset, image_size, flags, res2-4, magic.
    struct.pack_into("<QQQQQQI", code, 8, text_offset, image_size, flags, 0, 0, 0, magic)
    return bytes(code), prog["seen"], prog["entry_here"]


def test_image_is_placed_2mib_aligned_and_entered_at_el1h_with_the_dtb_in_x0():
    data, seen_off, here_off = make_image(text_offset=0x80000)
    vm = create_vm(ram_size=64 << 20)
    image = load_linux_image(vm, data)
    assert image.kind == "linux-image"
    assert image.base == image.entry == 0x40000000 + (2 << 20) + 0x80000
    assert image.end - image.base == len(data) + 0x10000  # image_size, bss included
    dtb = boot(vm, image, bootargs="x")
    assert vm.vcpus[0].run().reason is ExitReason.SYSTEM_EVENT
    x0, x1, x2, x3, here, el, daif = struct.unpack("<7Q", vm.read_memory(image.base + seen_off, 56))
    assert x0 == dtb and (x1, x2, x3) == (0, 0, 0)
    assert here == image.base + here_off
    assert el == 1 << 2 and daif == 0x3C0  # EL1, D A I F masked


def test_gzip_compressed_image_is_decompressed():
    data, _, _ = make_image()
    packed = gzip.compress(data)
    assert is_linux_image(packed) and is_linux_image(data)
    vm = create_vm(ram_size=32 << 20)
    image = load_linux_image(vm, packed)
    assert vm.read_memory(image.base, len(data)) == data


@pytest.mark.parametrize("mutate, field", [
    (dict(magic=0x12345678), "offset 0x38"),
    (dict(flags=0xB), "big-endian"),
    (dict(text_offset=0x123), "text_offset"),
])
def test_bad_image_headers_are_refused_naming_the_field(mutate, field):
    data, _, _ = make_image(**mutate)
    with pytest.raises(ImageFormatError, match=field):
        parse_header(data, "vmlinuz")


def test_an_image_larger_than_ram_is_refused(tmp_path):
    data, _, _ = make_image(extra_bss=40 << 20)
    path = tmp_path / "Image"
    path.write_bytes(data)
    vm = create_vm(ram_size=32 << 20)
    with pytest.raises(ImageFormatError, match=r"Image: image_size .* does not fit"):
        load_linux_image(vm, path)


def test_truncated_file_is_not_an_image():
    with pytest.raises(ImageFormatError, match="too short"):
        parse_header(b"\0" * 10)
    assert not is_linux_image(b"\x1f\x8bnot gzip")


def test_flat_binary_runs_at_its_address_with_the_dtb_in_x0():
    prog = assemble("""
    ldr x9, =seen
    str x0, [x9]
    adr x1, .
    str x1, [x9, #8]
    ldr x0, =0x84000008
    hvc #0
.balign 8
seen: .skip 16
""", 0x40080000)
    vm = create_vm(ram_size=32 << 20)
    image = load_flat(vm, prog.code)
    assert (image.kind, image.base, image.entry) == ("flat", 0x40080000, 0x40080000)
    dtb = boot(vm, image)
    assert vm.vcpus[0].run().reason is ExitReason.SYSTEM_EVENT
    x0, pc = struct.unpack("<2Q", vm.read_memory(prog["seen"], 16))
    assert x0 == dtb and pc == 0x40080008


def test_flat_binary_outside_ram_is_refused():
    vm = create_vm(ram_size=32 << 20)
    with pytest.raises(OSError, match="not inside guest RAM"):
        load_flat(vm, b"\0" * 16, 0x10000000)


def test_a_user_dtb_is_checked():
    with pytest.raises(DtbError, match="magic"):
        check_dtb(b"\0" * 64, "my.dtb")


def test_sandbox_boot_runs_a_flat_image_and_stops_on_system_off(tmp_path, capsys):
    prog = assemble("""
    ldr x1, =0x09000000
    mov w2, #'o'
    str w2, [x1]
    mov w2, #'k'
    str w2, [x1]
    ldr x0, =0x84000008
    hvc #0
""", 0x40080000)
    path = tmp_path / "hello.bin"
    path.write_bytes(prog.code)
    dtb = tmp_path / "out.dtb"
    status = main(["boot", str(path), "--smp", "2", "--mem", "32M", "--dump-dtb", str(dtb)])
    out = capsys.readouterr()
    assert status == 0
    assert out.out == "ok"
    assert "SYSTEM_EVENT" in out.err and "SHUTDOWN" in out.err
    import libfdt
    fdt = libfdt.Fdt(dtb.read_bytes())
    assert fdt.path_offset("/cpus/cpu@1") > 0


def test_sandbox_boot_reports_a_bad_dtb_file(tmp_path, capsys):
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x1f\x20\x03\xd5")
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"junk")
    assert main(["boot", str(path), "--dtb", str(bad), "--mem", "32M"]) == 2
    assert f"{bad}: 4 bytes is too short for a flattened device tree" in capsys.readouterr().err
