"""The SError gate and the ERET check with the MMU on: the guest builds no 1:1 world only;
it runs code from a high alias (TTBR1_EL1) of its image, and the instructions that unmask
PSTATE.A or return from an exception are caught at the virtual address it executes them
from (the walk of sandbox.arch.stage1 finds the aliases; sandbox/virtual_sites.py hooks
them)."""

from __future__ import annotations

from sandbox import Vm, assemble
from sandbox.arch.esr import syn_illegal_state, syn_serror
from sandbox.arch.stage1 import Regime, executable_aliases
from sandbox.events import VcpuEvents

from conftest import RAM

BLOCK, TABLE, PAGE = 0b01, 0b11, 0b11
AF = 1 << 10
INNER_SHAREABLE = 3 << 8
ALIAS = 0xFFFFFF8000000000  # TTBR1 with T1SZ = 25: L1 entry 1 maps RAM at ALIAS + RAM
TABLES0 = RAM + 0x200000
TABLES1 = RAM + 0x201000
# T0SZ = T1SZ = 25 (39-bit VAs, walks start at level 1), TG0 = 4K, TG1 = 4K, IPS = 48 bits.
TCR = 25 | (0b00 << 14) | (25 << 16) | (0b10 << 30) | (0b101 << 32)
TCR_EPD1 = 1 << 23
ISS = 0x11  # asynchronous SError, uncontainable (DFSC 0x11)

GUEST = f"""
.include "kernel.S"
guest_main:
    ldr x0, =0xff                // MAIR attr 0: normal memory
    msr mair_el1, x0
    ldr x0, ={TCR:#x}
    msr tcr_el1, x0
    ldr x0, ={TABLES0:#x}
    msr ttbr0_el1, x0
    ldr x0, ={TABLES1:#x}
    msr ttbr1_el1, x0
    isb
    mrs x0, sctlr_el1
    orr x0, x0, #1               // M: the guest turns its MMU on itself
    msr sctlr_el1, x0
    isb
    ldr x1, ={ALIAS:#x}
    ldr x0, =high
    add x0, x0, x1
    br x0                        // on to the high alias
high:
{{body}}
    b guest_halt                 // PC-relative: the alias of guest_halt
"""

DAIFCLR = """
    nop
    msr daifclr, #4
unmasked:
    nop
"""

ERET_TO = """
    ldr x0, ={spsr:#x}
    msr spsr_el1, x0
    adr x0, after_eret           // an alias address: adr is PC-relative
    msr elr_el1, x0
at_eret:
    eret
after_eret:
    nop
"""


def run_guest(body: str, *, pend: bool):
    prog = assemble(GUEST.format(body=body), RAM)
    vm = Vm()
    vcpu = vm.create_vcpu()
    vm.load(prog)
    descriptor = (RAM | BLOCK | AF | INNER_SHAREABLE).to_bytes(8, "little")
    vm.write_memory(TABLES0 + 8, descriptor)  # identity: L1[1] = the GiB of RAM
    vm.write_memory(TABLES1 + 8, descriptor)  # the high alias of the same GiB
    vcpu.set_reg("pc", prog["_start"])
    if pend:
        vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=ISS))
    exit_ = vcpu.run()
    return vm, vcpu, prog, exit_


def test_an_serror_pended_while_masked_is_taken_at_daifclr_executed_at_the_alias():
    vm, vcpu, prog, _ = run_guest(DAIFCLR, pend=True)
    [rec] = vm.exception_records(prog)  # nothing before: A stayed masked until the daifclr
    # SError from the current EL with SP_ELx: +0x380 (Arm ARM D1.10.2); taken right after
    # the unmask, ELR = the alias of the next instruction.
    assert (rec.vector, rec.esr, rec.elr) == (0x380, syn_serror(ISS), prog["unmasked"] + ALIAS)
    assert vcpu.get_events().serror_pending == 0
    assert prog["unmasked"] - 4 + ALIAS in vcpu.virtual_sites.gate


def test_an_illegal_eret_at_the_alias_takes_the_illegal_execution_state_exception():
    vm, vcpu, prog, _ = run_guest(ERET_TO.format(spsr=0x3C9), pend=False)  # EL2h from EL1: illegal
    [rec] = vm.exception_records(prog)
    assert (rec.vector, rec.esr, rec.elr) == (0x200, syn_illegal_state(), prog["after_eret"] + ALIAS)
    assert rec.spsr & (1 << 20)  # PSTATE.IL was set by the illegal return (Arm ARM D1.11.4)
    assert prog["at_eret"] + ALIAS in vcpu.virtual_sites.eret


def test_a_pending_serror_is_taken_on_an_eret_at_the_alias_to_a_context_with_a_clear():
    spsr = 0x2C5  # EL1h with D, I, F masked and A clear
    vm, vcpu, prog, _ = run_guest(ERET_TO.format(spsr=spsr), pend=True)
    [rec] = vm.exception_records(prog)
    # Taken before the first instruction of the context returned to.
    assert (rec.vector, rec.esr, rec.elr) == (0x380, syn_serror(ISS), prog["after_eret"] + ALIAS)
    assert rec.spsr & 0x3FF == spsr


def test_aliases_lose_their_hooks_when_the_tables_go():
    vm, vcpu, prog, _ = run_guest(DAIFCLR, pend=False)
    assert vcpu.virtual_sites.eret  # kernel.S's ERETs, seen through TTBR1
    walks = vcpu.virtual_sites.walks
    vcpu.set_reg("TCR_EL1", TCR | TCR_EPD1)  # no more TTBR1 walks: the alias is gone
    vcpu.set_reg("pc", prog["guest_halt"])
    vcpu.run()
    assert vcpu.virtual_sites.walks == walks + 1
    assert vcpu.virtual_sites.eret == {} and vcpu.virtual_sites.gate == set()


def test_the_walk_finds_page_and_block_aliases_and_skips_execute_never():
    memory = bytearray(0x4000)
    base = 0x80000000
    l1, l2, l3 = base, base + 0x1000, base + 0x2000
    memory[8:16] = (l2 | TABLE).to_bytes(8, "little")  # L1[1]: VA 1 GiB -> L2
    memory[0x1000:0x1008] = (l3 | TABLE).to_bytes(8, "little")  # L2[0] -> L3
    memory[0x1008:0x1010] = (0x40200000 | BLOCK | AF).to_bytes(8, "little")  # L2[1]: 2 MiB block
    memory[0x2000 + 8 * 5:0x2000 + 8 * 6] = (0x40000000 | PAGE | AF).to_bytes(8, "little")  # L3[5]
    memory[0x2000 + 8 * 6:0x2000 + 8 * 7] = (0x40000000 | PAGE | AF | 3 << 53).to_bytes(8, "little")  # XN

    def read(pa, size):
        off = pa - base
        return bytes(memory[off:off + size]) if 0 <= off and off + size <= len(memory) else None

    regime = Regime(sctlr=1, tcr=TCR | TCR_EPD1, ttbr0=l1, ttbr1=0)
    found = executable_aliases(regime, {0x40000010, 0x40200404, 0x50000000}, read)
    assert found == {0x40000010: {(1 << 30) + 5 * 0x1000 + 0x10},
                     0x40200404: {(1 << 30) + 0x200000 + 0x404}}
    assert executable_aliases(Regime(0, TCR, l1, 0), {0x40000010}, read) == {}  # MMU off
