"""Quirks: each one changes exactly the observable its registry entry documents, and nothing
else. Every test runs the same guest with the quirk off and on."""

import pytest

from sandbox import ExitReason, Vm
from sandbox.events import VcpuEvents
from sandbox.quirks import QUIRKS

from conftest import assert_halted, boot

MMIO = 0x8000000

UNMASK_AND_RECORD = """
guest_main:
    msr daifclr, #4
unmasked:
    nop
    ret
"""


def serror_esr_seen(quirks, events):
    vm = Vm(quirks=quirks)
    r = boot(UNMASK_AND_RECORD, vm=vm, run=False)
    r.vcpu.set_events(events)
    r.exit = r.vcpu.run()
    assert_halted(r)
    assert [rec.vector for rec in r.records] == [0x380]
    return r.records[0].esr


def test_vserror_without_vsesr_gives_iss_zero_only_when_no_esr_is_supplied():
    plain = VcpuEvents(serror_pending=1)
    assert serror_esr_seen((), plain) == 0xBF000000
    assert serror_esr_seen(("vserror-without-vsesr",), plain) == 0xBE000000
    with_esr = VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=0x0101D1ED)
    assert serror_esr_seen((), with_esr) == serror_esr_seen(("vserror-without-vsesr",), with_esr) == 0xBF01D1ED


def test_vserror_without_vsesr_is_what_get_events_reports_while_pending():
    vm = Vm(quirks=("vserror-without-vsesr",))
    v = vm.create_vcpu()
    v.set_events(VcpuEvents(serror_pending=1))
    ev = v.get_events()
    assert (ev.serror_pending, ev.serror_has_esr, ev.serror_esr) == (1, 1, 0)


ABORTED_LOAD = f"""
guest_main:
    mov x0, #0x5555
    ldr x1, ={MMIO:#x}
load:
    ldr x0, [x1]
after:
    nop
    ldr x2, =result
    str x0, [x2]
    ret
.balign 8
result: .quad 0
"""


def aborted_mmio(quirks):
    r = boot(ABORTED_LOAD, vm=Vm(unbacked="exit", quirks=quirks))
    assert r.exit.reason is ExitReason.MMIO
    r.exit.mmio.data[:8] = (0xDA7A).to_bytes(8, "little")
    r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1))
    r.exit = r.vcpu.run()
    assert_halted(r)
    (rec,) = r.records
    result = int.from_bytes(r.vm.read_memory(r.sym("result"), 8), "little")
    return r, rec, result


def test_retire_aborted_mmio_off_the_load_does_not_retire():
    r, rec, result = aborted_mmio(())
    assert (rec.esr, rec.elr, rec.far) == (0x96000010, r.sym("load"), MMIO)
    assert result == 0x5555  # destination untouched


def test_retire_aborted_mmio_on_elr_is_the_next_instruction_and_the_load_completed():
    r, rec, result = aborted_mmio(("retire-aborted-mmio",))
    assert (rec.esr, rec.elr, rec.far) == (0x96000010, r.sym("after"), MMIO)
    assert result == 0xDA7A


def test_retire_aborted_mmio_changes_nothing_after_an_nisv_exit():
    from sandbox import Cap
    records = []
    for quirks in ((), ("retire-aborted-mmio",)):
        vm = Vm(unbacked="exit", quirks=quirks)
        vm.enable_cap(Cap.ARM_NISV_TO_USER)
        r = boot(f"guest_main:\n ldr x1, ={MMIO:#x}\nload:\n ldr x0, [x1], #8\n ret\n", vm=vm)
        assert r.exit.reason is ExitReason.ARM_NISV
        r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1))
        assert_halted(continue_run(r))
        records.append([(x.esr, x.elr - r.sym("load")) for x in r.records])
    assert records[0] == records[1] == [(0x96000010, 0)]


def continue_run(r):
    r.exit = r.vcpu.run()
    return r


TAKE_THEN_WAIT = """
guest_main:
    msr daifclr, #4
taken:
    nop
    ldr x1, =phase
wait:
    ldr x2, [x1]
    cbz x2, wait
    ret
.balign 8
phase: .quad 0
"""


def serror_records_across_restore(quirks):
    vm = Vm(quirks=quirks)
    r = boot(TAKE_THEN_WAIT, vm=vm, run=False)
    r.vcpu.set_events(VcpuEvents(serror_pending=1))
    ex = r.vcpu.run(max_instructions=2000)  # takes the SError, then spins in `wait`
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET
    assert [x.vector for x in r.records] == [0x380]
    assert r.vcpu.get_events().serror_pending == 0
    moved = Vm.restore(vm.snapshot())
    moved.write_memory(r.sym("phase"), (1).to_bytes(8, "little"))
    ex = moved.vcpus[0].run()
    assert ex.reason is ExitReason.SYSTEM_EVENT
    return [x.vector for x in moved.exception_records(r.program)]


def test_stale_vserror_restored_off_a_restore_delivers_nothing_more():
    assert serror_records_across_restore(()) == [0x380]


def test_stale_vserror_restored_on_the_taken_serror_is_delivered_again():
    assert serror_records_across_restore(("stale-vserror-restored",)) == [0x380, 0x380]


def test_stale_vserror_restored_keeps_a_still_pending_serror_exactly_once():
    for quirks in ((), ("stale-vserror-restored",)):
        vm = Vm(quirks=quirks)
        r = boot(UNMASK_AND_RECORD, vm=vm, run=False)
        r.vcpu.set_events(VcpuEvents(serror_pending=1))
        moved = Vm.restore(vm.snapshot())  # still pending: both save it, once
        assert moved.vcpus[0].run().reason is ExitReason.SYSTEM_EVENT
        assert [x.vector for x in moved.exception_records(r.program)] == [0x380]


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_every_quirk_documents_its_source_and_both_behaviours(name):
    q = QUIRKS[name]
    assert q.reverts and q.source and q.buggy and q.fixed and q.name == name
