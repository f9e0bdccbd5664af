"""Traps taken with the MMU on: the syndrome comes from the instruction at the virtual PC
(the host translates it through the guest's tables, Vcpu.translate)."""

from sandbox import Vm, assemble

from conftest import RAM

TABLE, PAGE, BLOCK = 0b11, 0b11, 0b01
AF = 1 << 10  # access flag, so the tables are also valid for Unicorn's own walker


def tcr(t0sz=25, t1sz=25, tg0=0b00, tg1=0b10, tbi0=False):
    return t0sz | (tg0 << 14) | (t1sz << 16) | (tg1 << 30) | (int(tbi0) << 37) | (0b101 << 32)


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
