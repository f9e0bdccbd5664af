"""Virtual SError delivery: exactly where the architecture takes it, as the guest records it.

ESR = EC 0x2F << 26 | IL | ISS; the QEMU 7.2 reference case: pending, EL1h DAIF=1111,
`msr daifclr, #4` -> vector 0x380, ESR 0xbe000011, ELR = unmask+4, SPSR 0x2c5."""

import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import ExitReason, Vm
from sandbox.arch import ras
from sandbox.arch import esr as E
from sandbox.events import VcpuEvents

from conftest import assert_halted, boot


def pend(run, iss=0x11):
    run.vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=iss))


def start(source, iss=0x11, vm=None):
    r = boot(source, run=False, vm=vm)
    pend(r, iss)
    r.exit = r.vcpu.run()
    return r


def serrors(r):
    return [x for x in r.records if x.vector & 0x180 == 0x180]


def test_msr_daifclr_takes_it_at_the_next_instruction_el1h():
    r = start("""
guest_main:
    mrs x5, isr_el1
    ldr x6, =isr_seen
    str x5, [x6]
unmask:
    msr daifclr, #4
    nop
    msr daifset, #4
    ret
.balign 8
isr_seen: .quad 0
""")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr, rec.spsr) == (0x380, 0xBE000011, r.sym("unmask") + 4, 0x2C5)
    assert int.from_bytes(r.vm.read_memory(r.sym("isr_seen"), 8), "little") & 0x100  # ISR_EL1.A
    assert rec.isr & 0x100 == 0  # taken: no longer pending
    assert r.vcpu.get_events().serror_pending == 0


def test_code_translated_before_the_serror_was_pended_still_delivers_it():
    r = boot("""
guest_main:
    msr daifclr, #4
    mov x0, #0x2c0
    msr daif, x0
    msr daifset, #4
    b guest_halt
""")
    assert_halted(r)  # every instruction above is now translated, with no hooks in it
    for expected_elr in ("guest_main", None):
        r.vcpu.set_reg("pc", r.sym("guest_main") if expected_elr else r.sym("guest_main") + 4)
        pend(r)
        assert_halted(type(r)(r.vm, r.vcpu, r.program, r.vcpu.run()))
    first, second = r.records
    assert (first.vector, first.elr) == (0x380, r.sym("guest_main") + 4)  # at the daifclr
    assert (second.vector, second.elr) == (0x380, r.sym("guest_main") + 12)  # at msr daif


def test_msr_daif_register_write_that_clears_a():
    r = start("""
guest_main:
    mov x0, #0x2c0              // D, I, F set; A clear
unmask:
    msr daif, x0
    msr daifset, #4
    ret
""", iss=0x1D1ED)
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr, rec.spsr) == (0x380, 0xBE01D1ED, r.sym("unmask") + 4, 0x2C5)


def test_masking_writes_and_daifclr_without_a_do_not_deliver():
    r = start("""
guest_main:
    msr daifclr, #3             // I and F only
    mov x0, #0x3c0
    msr daif, x0                // everything masked
    msr daifset, #4
    ret
""")
    assert_halted(r)
    assert r.records == []
    assert r.vcpu.get_events().serror_pending == 1


def test_el1t_takes_it_at_the_sp0_serror_vector():
    r = start("""
guest_main:
    msr spsel, #0
    ldr x0, =el0_stack_top
    mov sp, x0
unmask:
    msr daifclr, #4
    msr daifset, #4
    msr spsel, #1
    ret
""")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.elr, rec.spsr) == (0x180, r.sym("unmask") + 4, 0x2C4)


def test_eret_to_el0_with_a_clear_takes_it_before_the_first_el0_instruction():
    r = start("""
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    svc #0xffff
""", iss=0x1000)
    assert_halted(r)
    rec = r.records[0]
    assert (rec.vector, rec.esr, rec.elr, rec.spsr) == (0x580, 0xBE001000, r.sym("task"), 0)


def test_eret_to_el1h_with_a_clear():
    r = start("""
guest_main:
    mov x0, #0x2c5
    msr spsr_el1, x0
    adr x0, back
    msr elr_el1, x0
    eret
back:
    msr daifset, #4
    ret
""")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.elr, rec.spsr) == (0x380, r.sym("back"), 0x2C5)


def test_set_events_on_an_unmasked_vcpu_takes_it_immediately():
    r = boot("""
guest_main:
    msr daifclr, #4
    ldr x0, =flag
wait:
    ldr x1, [x0]
    cbz x1, wait
    msr daifset, #4
    ret
.balign 8
flag: .quad 0
""", run=False)
    ex = r.vcpu.run(max_instructions=200)
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET
    pc, pstate = r.vcpu.reg("pc"), r.vcpu.reg("pstate")
    pend(r, 0x33)
    # Taken before the next guest instruction: PC is already at the vector.
    assert r.vcpu.reg("pc") == r.sym("exc_vectors") + 0x380
    r.vm.write_memory(r.sym("flag"), (1).to_bytes(8, "little"))
    assert_halted(type(r)(r.vm, r.vcpu, r.program, r.vcpu.run()))
    [rec] = r.records
    assert (rec.esr, rec.elr, rec.spsr) == (0xBE000033, pc, pstate)


def test_a_masked_serror_stays_pending_and_isr_shows_it():
    r = start("""
guest_main:
    mrs x5, isr_el1
    ldr x6, =seen
    str x5, [x6]
    ret
.balign 8
seen: .quad 0
""")
    assert_halted(r)
    assert r.records == []
    assert int.from_bytes(r.vm.read_memory(r.sym("seen"), 8), "little") == 0x100
    ev = r.vcpu.get_events()
    assert (ev.serror_pending, ev.serror_esr) == (1, 0x11)


def test_esb_with_a_masked_defers_into_disr_and_nothing_is_taken_later():
    r = start("""
guest_main:
    esb
    mrs x5, DISR_EL1
    ldr x6, =seen
    str x5, [x6]
    msr daifclr, #4
    nop
    msr daifset, #4
    ret
.balign 8
seen: .quad 0
""", iss=0x1D1ED)
    assert_halted(r)
    assert r.records == []
    assert int.from_bytes(r.vm.read_memory(r.sym("seen"), 8), "little") == 0x8001D1ED
    assert r.vcpu.get_events().serror_pending == 0


def test_esb_right_after_an_unmask_takes_it_with_elr_at_the_esb():
    r = start("""
guest_main:
    msr daifclr, #4
the_esb:
    esb
    msr daifset, #4
    ret
""")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.elr) == (0x380, r.sym("the_esb"))
    assert r.vcpu.reg("DISR_EL1") == 0


def test_esb_with_nothing_pending_is_a_nop():
    r = boot("guest_main:\n esb\n mrs x0, DISR_EL1\n ret\n")
    assert_halted(r)
    assert r.records == [] and r.vcpu.reg("DISR_EL1") == 0


def test_esb_on_entry_of_the_svc_path_finds_the_error_in_disr():
    # Seed 004's example: EL0 triggers an SError, the SVC entry path's ESB defers it into
    # DISR_EL1 and the kernel finds it there (firmware/vectors.S ESB_ON_ENTRY).
    r = boot("""
guest_main:
    ldr x0, =exc_flags
    mov x1, #1
    str x1, [x0]
    mov x0, #0x100              // EL0t with A masked
    msr spsr_el1, x0
    ldr x0, =task
    msr elr_el1, x0
    ldr x0, =el0_stack_top
    msr sp_el0, x0
    eret
task:
    svc #0x42
    svc #0xffff
""", run=False)
    pend(r, 0x1D1ED)
    assert_halted(type(r)(r.vm, r.vcpu, r.program, r.vcpu.run()))
    svc = r.records[0]
    assert (svc.vector, svc.esr, svc.disr) == (0x400, 0x56000042, 0x8001D1ED)
    assert r.vcpu.get_events().serror_pending == 0


def test_iesb_does_not_defer_or_take_a_virtual_serror_on_entry():
    # DESIGN: with SCTLR_EL1.IESB=1 an SVC from EL0 with A masked is taken first (0x400,
    # ESR 0x56000042, ISR_EL1.A still 1, DISR 0); the vSError stays pending.
    r = boot("""
guest_main:
    mrs x0, sctlr_el1
    orr x0, x0, #(1 << 21)
    msr sctlr_el1, x0
    mov x0, #0x100
    msr spsr_el1, x0
    ldr x0, =task
    msr elr_el1, x0
    ldr x0, =el0_stack_top
    msr sp_el0, x0
    eret
task:
    svc #0x42
    svc #0xffff
""", run=False)
    pend(r)
    assert_halted(type(r)(r.vm, r.vcpu, r.program, r.vcpu.run()))
    svc = r.records[0]
    assert (svc.vector, svc.esr, svc.isr & 0x100, svc.disr) == (0x400, 0x56000042, 0x100, 0)
    assert r.vcpu.reg("DISR_EL1") == 0 and r.vcpu.get_events().serror_pending == 1


def test_wfi_wakes_for_a_pending_serror_even_when_masked():
    r = start("guest_main:\n wfi\n mov x7, #1\n ret\n")
    assert_halted(r)
    assert r.vcpu.reg("x7") == 1


def test_default_syndrome_without_esr_is_0xbf000000_and_without_ras_too():
    for vm in (Vm(), Vm(ras=False)):
        r = boot("guest_main:\n msr daifclr, #4\n msr daifset, #4\n ret\n", run=False, vm=vm)
        r.vcpu.set_events(VcpuEvents(serror_pending=1))
        r.vcpu.run()
        assert [x.esr for x in r.records] == [0xBF000000]


@settings(max_examples=40, deadline=None)
@given(iss=st.integers(0, (1 << 25) - 1), before=st.integers(0, 12), after=st.integers(0, 12))
def test_property_the_guest_sees_the_iss_exactly_once_and_never_while_masked(iss, before, after):
    r = start("guest_main:\n" + " nop\n" * before + "unmask:\n msr daifclr, #4\n" + " nop\n" * after
              + " msr daifset, #4\n ret\n", iss=iss)
    assert_halted(r)
    [rec] = r.records
    assert rec.esr == (0x2F << 26) | (1 << 25) | iss
    assert rec.elr == r.sym("unmask") + 4
    assert not rec.spsr & 0x100  # taken only where PSTATE.A was clear


def test_multiple_serror_rule_reports_the_most_severe_architected_error():
    ce = 0x11 | (E.AET.CE << 10)
    uer = 0x11 | (E.AET.UER << 10)
    uc = 0x11 | (E.AET.UC << 10)
    assert ras.merge_serror_syndromes(ce, uer) == uer
    assert ras.merge_serror_syndromes(uc, ce) == uc
    assert ras.merge_serror_syndromes(ce | E.EA, ce) == ce | E.EA
    assert ras.merge_serror_syndromes(uer, E.IDS | 0x42) == E.IDS | 0x42
    assert ras.merge_serror_syndromes(E.IDS | 5, uer) == E.IDS | (uer & 0xFFFFFF)


MIGRATION_GUEST = """
guest_main:
    mov x19, #0
loop:
    add x19, x19, #1
    cmp x19, #500
    b.ne loop
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    svc #1
    mov x0, #0x1d
    svc #0xffff
"""

CHILD = """
import json, sys
from sandbox import Vm
from sandbox.asm import assemble
vm = Vm.restore(open(sys.argv[1], "rb").read())
prog = assemble('.include "kernel.S"\\n' + sys.argv[2], 0x40000000)
ex = vm.vcpus[0].run()
print(json.dumps({"exit": ex.describe(), "records": [list(r.__dict__.values()) for r in vm.exception_records(prog)],
                  "regs": vm.vcpus[0].regs()}))
"""


def test_migration_mid_pending_to_another_process_gives_identical_records(tmp_path):
    r = boot(MIGRATION_GUEST, run=False)
    pend(r, 0x1D1ED)
    assert r.vcpu.run(max_instructions=300).reason is ExitReason.INSTRUCTION_BUDGET
    snap = tmp_path / "vm.snap"
    snap.write_bytes(r.vm.snapshot())
    child = subprocess.run([sys.executable, "-c", CHILD, str(snap), MIGRATION_GUEST], capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    theirs = json.loads(child.stdout)
    ex = r.vcpu.run()
    ours = {"exit": ex.describe(), "records": [list(x.__dict__.values()) for x in r.records], "regs": r.vcpu.regs()}
    assert theirs == ours
    assert [rec[1] for rec in ours["records"]] == [0x580, 0x400, 0x400]


def test_snapshot_refuses_corruption_and_other_versions():
    r = boot("guest_main:\n ret\n", run=False)
    snap = bytearray(r.vm.snapshot())
    bad = bytearray(snap)
    bad[len(bad) // 2] ^= 0xFF
    for blob, word in ((bytes(bad), "checksum"), (b"junk" * 10, "magic")):
        try:
            Vm.restore(blob)
        except OSError as e:
            assert word in str(e)
        else:
            raise AssertionError("restored a broken snapshot")
    import struct
    import zlib
    other = bytearray(snap[:-4])
    struct.pack_into("<I", other, 8, 99)
    other += struct.pack("<I", zlib.crc32(bytes(other)))
    try:
        Vm.restore(bytes(other))
    except OSError as e:
        assert "version 99" in str(e)
    else:
        raise AssertionError("restored another version")


def test_el0_unmasking_with_sctlr_uma_takes_it_at_the_lower_el_vector():
    r = start("""
guest_main:
    mrs x0, sctlr_el1
    orr x0, x0, #(1 << 9)       // UMA: EL0 may write DAIF
    msr sctlr_el1, x0
    mov x0, #0x100              // EL0t with A masked
    msr spsr_el1, x0
    ldr x0, =task
    msr elr_el1, x0
    ldr x0, =el0_stack_top
    msr sp_el0, x0
    eret
task:
    nop
unmask:
    msr daifclr, #4
    svc #0xffff
""", iss=0x4242)
    assert_halted(r)
    rec = r.records[0]
    assert (rec.vector, rec.esr, rec.elr, rec.spsr) == (0x580, 0xBE004242, r.sym("unmask") + 4, 0)


def test_two_device_errors_while_masked_are_taken_as_one_serror_with_the_overall_state():
    # Two bus errors (a recoverable one, then a corrected one) arrive while PSTATE.A is set:
    # one SError is taken at the unmask, reporting the more severe AET (DDI0587B 2.5.3;
    # severity order of reference/ras.md section 3), and nothing stays pending.
    from sandbox.devices.serror_source import SErrorSource
    ce = E.FSC.SERROR | (E.AET.CE << E.AET_SHIFT)
    uer = E.FSC.SERROR | (E.AET.UER << E.AET_SHIFT)
    r = boot("""
guest_main:
    ldr x9, =0x0a000000
    ldr x10, =0x0a001000
    str w1, [x9]                // recoverable error response
    str w1, [x10]               // corrected error response: must not replace it
    nop
unmask:
    msr daifclr, #4
    mrs x11, isr_el1
    ret
""", run=False)
    r.vm.add_device(0x0A000000, 0x1000, SErrorSource(r.vm, uer), "uer")
    r.vm.add_device(0x0A001000, 0x1000, SErrorSource(r.vm, ce), "ce")
    r.exit = r.vcpu.run()
    assert_halted(r)
    [rec] = serrors(r)
    # EC 0x2F, IL, ISS (Arm ARM D17.2.37): DFSC 0x11 with AET = UER
    assert (rec.vector, rec.esr, rec.elr) == (0x380, 0xBE000000 | uer, r.sym("unmask") + 4)
    assert r.vcpu.reg("x11") & (1 << 8) == 0  # ISR_EL1.A: nothing left pending
