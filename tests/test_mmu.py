"""Stage-1 translation (the host's view of guest virtual addresses) and traps taken with
the MMU on: the syndrome comes from the instruction at the virtual PC."""

import pytest

from sandbox import Vm, assemble
from sandbox.arch.mmu import TranslationRegime, translate

from conftest import RAM

TABLE, PAGE, BLOCK = 0b11, 0b11, 0b01
AF = 1 << 10  # access flag, so the tables are also valid for Unicorn's own walker


def tcr(t0sz=25, t1sz=25, tg0=0b00, tg1=0b10, tbi0=False):
    return t0sz | (tg0 << 14) | (t1sz << 16) | (tg1 << 30) | (int(tbi0) << 37) | (0b101 << 32)


def walk(mem, va, **regs):
    regime = TranslationRegime(regs.get("sctlr", 1), regs.get("tcr", tcr()), regs.get("ttbr0", 0),
                               regs.get("ttbr1", 0))
    return translate(va, regime, mem.get)


def test_mmu_off_is_a_flat_mapping():
    assert walk({}, 0x40001234, sctlr=0) == 0x40001234


def test_4k_granule_three_levels_with_a_page_and_a_block():
    # T0SZ=25: 39-bit VAs, walk starts at level 1 (Arm ARM D8.2.6).
    mem = {0x1000 + 8 * 1: 0x2000 | TABLE,          # L1[1] -> L2 table at 0x2000
           0x2000 + 8 * 3: 0x3000 | TABLE,          # L2[3] -> L3 table at 0x3000
           0x3000 + 8 * 5: 0x87654000 | PAGE | AF,  # L3[5] -> page
           0x1000 + 8 * 2: 0x40000000 | BLOCK | AF}  # L1[2]: 1 GiB block
    va = (1 << 30) | (3 << 21) | (5 << 12) | 0x123
    assert walk(mem, va, ttbr0=0x1000) == 0x87654123
    assert walk(mem, (2 << 30) | 0x1234567, ttbr0=0x1000) == 0x41234567
    assert walk(mem, 3 << 30, ttbr0=0x1000) is None  # L1[3] invalid
    assert walk(mem, 1 << 39, ttbr0=0x1000) is None  # above the 39-bit region


def test_ttbr1_selects_the_upper_region_and_tbi_ignores_the_top_byte():
    mem = {0x5000 + 8 * 511: 0x40000000 | BLOCK | AF, 0x6000: 0x80000000 | BLOCK | AF}
    upper = 0xFFFFFFFFC0000000 | 0xABC
    assert walk(mem, upper, ttbr1=0x5000) == 0x40000ABC
    tagged = (0x5A << 56) | 0x123
    assert walk(mem, tagged, ttbr0=0x6000) is None
    assert walk(mem, tagged, ttbr0=0x6000, tcr=tcr(tbi0=True)) == 0x80000123


@pytest.mark.parametrize("tg0, granule", [(0b01, 16), (0b10, 14)])
def test_64k_and_16k_granules(tg0, granule):
    # T0SZ=22 (42 bits): 64K walks levels 2-3, 16K walks levels 1-3.
    stride = granule - 3
    va = (7 << granule) | 0x321
    mem = {}
    levels = -(-(42 - granule) // stride)
    table = 0x100000
    for level in range(4 - levels, 3):
        shift = granule + stride * (3 - level)
        nxt = table + (1 << granule)
        mem[table + 8 * ((va >> shift) & ((1 << stride) - 1))] = nxt | TABLE
        table = nxt
    mem[table + 8 * 7] = 0x40000000 | PAGE | AF
    assert walk(mem, va, ttbr0=0x100000, tcr=tcr(t0sz=22, tg0=tg0)) == 0x40000321


def test_an_svc_at_a_virtual_alias_reports_its_immediate():
    # The guest's image at RAM runs with the MMU on from an alias 1 GiB above RAM: the trap
    # dispatcher must read the SVC at the virtual PC to build ESR = 0x56000042.
    prog = assemble('.include "kernel.S"\nguest_main:\n ret\nalias_code:\n svc #0x42\n b guest_halt\n', RAM)
    vm = Vm()
    vcpu = vm.create_vcpu()
    vm.load(prog)
    tables = RAM + 0x200000
    # L1 (4K granule, T0SZ=25): [1] identity 1 GiB block at RAM, [2] alias -> RAM. MAIR attr 0
    # = normal memory (0xFF); descriptors with AF and inner-shareable.
    vm.write_memory(tables + 8, (RAM | BLOCK | AF | (3 << 8)).to_bytes(8, "little"))
    vm.write_memory(tables + 16, (RAM | BLOCK | AF | (3 << 8)).to_bytes(8, "little"))
    vcpu.set_reg("MAIR_EL1", 0xFF)
    vcpu.set_reg("TCR_EL1", tcr(tg0=0b00))
    vcpu.set_reg("TTBR0_EL1", tables)
    vcpu.set_reg("SCTLR_EL1", vcpu.reg("SCTLR_EL1") | 1)
    vcpu.set_reg("pc", prog["_start"])
    vcpu.run()  # boot: stacks and VBAR (identity-mapped), guest_main returns, SYSTEM_OFF
    alias = prog["alias_code"] + (1 << 30)
    assert vcpu.translate(alias) == prog["alias_code"]
    vcpu.set_reg("pc", alias)
    vcpu.run()
    [rec] = vm.exception_records(prog)
    assert (rec.vector, rec.esr, rec.elr) == (0x200, 0x56000042, alias + 4)
