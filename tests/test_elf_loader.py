"""ELF images built by a real toolchain: loading, symbols, semihosting and UART output,
the exit status; QEMU's virt board runs the same file as an oracle."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from baremetal import build_hello, instruction_addresses, nm
from sandbox import ExitReason, SystemEventType, Vm
from sandbox.loaders.elf import load_elf
from sandbox.semihosting import StopReason

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello(tmp_path_factory.mktemp("elf"))


def _booted(elf: Path, **vm_kwargs: object):
    vm = Vm(semihosting=True, **vm_kwargs)
    vm.write_memory(0x40080000, b"\xaa" * 0x20000)  # dirty RAM: the loader must zero the bss
    image = load_elf(vm, elf)
    vcpu = vm.create_vcpu()
    vcpu.set_reg("pc", image.entry)
    return vm, vcpu, image


def test_bare_metal_elf_prints_through_semihosting_and_the_uart_and_exits_with_its_status(hello):
    vm, vcpu, image = _booted(hello)
    ex = vcpu.run(max_instructions=200_000)
    assert ex.reason is ExitReason.SYSTEM_EVENT and ex.system_event.type is SystemEventType.SHUTDOWN
    assert ex.semihosting.reason == StopReason.ADP_Stopped_ApplicationExit
    assert ex.semihosting.status == 42  # 40 from .data + 2: the .data arrived, the .bss was zero
    assert vm.semihosting.text == "hello from semihosting\n!\nwritten to stdout\n"
    assert vm.uart.text == "hello from the UART\n"


def test_exit_pc_is_shown_as_symbol_plus_offset_of_the_hlt_objdump_finds(hello):
    vm, vcpu, image = _booted(hello)
    ex = vcpu.run(max_instructions=200_000)
    function = nm(hello)["semihosting_exit"]
    (hlt,) = instruction_addresses(hello, "semihosting_exit", "hlt")
    assert ex.pc == hlt
    assert vm.symbols.format(ex.pc) == f"semihosting_exit+{hlt - function:#x}"
    assert vm.symbols.annotate(ex.pc) == f"{hlt:#x} <semihosting_exit+{hlt - function:#x}>"


def test_symbols_are_the_ones_nm_lists_and_entry_is_e_entry(hello):
    vm, vcpu, image = _booted(hello)
    expected = nm(hello)
    for name in ("_start", "main", "semihosting_exit", "answer", "scratch", "banner", "__bss_start"):
        assert image.symbols[name] == expected[name], name
        assert vm.symbols[name] == expected[name]
    assert image.entry == expected["_start"] and image.kind == "elf"
    assert vm.read_memory(expected["scratch"], 256) == bytes(256)  # the .bss, zeroed
    assert vm.read_memory(expected["answer"], 4) == (40).to_bytes(4, "little")
    assert vm.symbols.format(expected["scratch"] + 0x10) == "scratch+0x10"
    assert vm.symbols.format(expected["scratch"] + 0x100) == ""  # past the object's size


def test_without_semihosting_the_hlt_is_undefined(hello):
    vm = Vm()  # off by default, as in QEMU
    image = load_elf(vm, hello)
    vcpu = vm.create_vcpu()
    vcpu.set_reg("pc", image.entry)
    vcpu.set_reg("VBAR_EL1", 0x40000000)
    vm.write_memory(0x40000200, (0xD4200000 | 0x55 << 5).to_bytes(4, "little"))  # brk #0x55 at the vector
    vcpu.set_guest_debug(0x10001)  # KVM_GUESTDBG_ENABLE | USE_SW_BP: the brk exits to us
    ex = vcpu.run(max_instructions=200_000)
    assert ex.reason is ExitReason.DEBUG and ex.pc == 0x40000200
    assert vcpu.reg("ESR_EL1") == 0x02000000  # UNDEFINED
    (first_hlt,) = instruction_addresses(hello, "main", "hlt")[:1]
    assert vcpu.reg("ELR_EL1") == first_hlt


def test_cli_runs_the_elf_and_exits_with_the_guest_status(hello):
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", str(hello), "--semihosting"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 42, p.stderr
    assert "hello from semihosting\n!\nwritten to stdout\n" in p.stdout
    assert "hello from the UART\n" in p.stdout
    assert "<semihosting_exit+0x" in p.stdout and "entry 0x40080000 <_start>" in p.stdout


@pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None, reason="qemu-system-aarch64 not installed")
def test_qemu_virt_runs_the_same_elf_to_the_same_output_and_status(hello, tmp_path):
    uart = tmp_path / "uart.txt"
    p = subprocess.run(["qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-nographic", "-nic", "none",
                        "-monitor", "none", "-semihosting", "-serial", f"file:{uart}", "-kernel", str(hello)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 42
    # QEMU 7.2 writes the debug channel (SYS_WRITE0/WRITEC) to stderr and ":tt" opened for
    # writing to stdout; the sandbox captures both in one console, in program order.
    assert p.stderr.replace("\r", "") == "hello from semihosting\n!\n"
    assert p.stdout.replace("\r", "") == "written to stdout\n"
    assert uart.read_text() == "hello from the UART\n"


def test_bad_files_are_refused_with_einval_naming_the_file_and_leave_ram_untouched(hello, tmp_path):
    vm = Vm()
    before = vm.read_memory(0x40080000, 0x1000)
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    x86 = Path(shutil.which("true") or "/bin/true")
    obj = tmp_path / "hello.o"
    subprocess.run(["aarch64-linux-gnu-gcc", "-c", "-ffreestanding", "-o", str(obj),
                    str(ROOT / "tests/guests/baremetal/hello.c")], check=True)
    truncated = tmp_path / "truncated.elf"
    truncated.write_bytes(hello.read_bytes()[:0x10100])
    cases = {text: "not a valid ELF", x86: "not AArch64", obj: "ET_REL is not an executable",
             truncated: "truncated"}
    for path, why in cases.items():
        with pytest.raises(OSError) as e:
            load_elf(vm, path)
        assert e.value.errno == errno.EINVAL and str(path) in str(e.value) and why in str(e.value), e.value
    elsewhere = Vm(ram_base=0x80000000)
    with pytest.raises(OSError) as e:
        load_elf(elsewhere, hello)
    assert e.value.errno == errno.EINVAL and "segment 0 at [0x40080000" in str(e.value)
    assert "not inside guest RAM (RAM: [0x80000000, 0x84000000))" in str(e.value)
    assert vm.read_memory(0x40080000, 0x1000) == before and len(vm.symbols) == 0
    with pytest.raises(FileNotFoundError):
        load_elf(vm, tmp_path / "missing.elf")
