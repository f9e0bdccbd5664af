"""MMIO exits, NISV, injected synchronous external aborts and poisoned memory (seed 003).

Behaviours of the KVM selftest arm64/external_aborts.c and sea_to_user.c, rewritten for the
sandbox: the guest's own vector table records what it took."""

import errno

import pytest

from sandbox import Cap, ExitReason, Vm
from sandbox.arch import esr as E
from sandbox.events import VcpuEvents

from conftest import assert_halted, boot

MMIO = 0x8000000  # no RAM, no device: MMIO_ADDR of the selftest


def mmio_vm(**kw):
    return Vm(unbacked="exit", **kw)


def continue_(r):
    r.exit = r.vcpu.run()
    return r


def test_guest_prints_through_the_pl011():
    r = boot("""
.include "uart.S"
guest_main:
    stp x29, x30, [sp, #-16]!
    ldr x0, =msg
    bl uart_puts
    mov x0, #'!'
    bl uart_putc
    ldp x29, x30, [sp], #16
    ret
msg: .asciz "hello from EL1"
.balign 4
""")
    assert_halted(r)
    assert r.vm.uart.text == "hello from EL1!"


def test_mmio_read_exit_and_completion_into_the_register():
    r = boot(f"guest_main:\n ldr x1, ={MMIO:#x}\nload:\n ldr x0, [x1]\n mov x5, x0\n ret\n", vm=mmio_vm())
    assert r.exit.reason is ExitReason.MMIO
    m = r.exit.mmio
    assert (m.phys_addr, m.len, m.is_write, r.exit.pc) == (MMIO, 8, False, r.sym("load"))
    m.data[:8] = (0x1122334455667788).to_bytes(8, "little")
    assert_halted(continue_(r))
    assert r.vcpu.reg("x5") == 0x1122334455667788


@pytest.mark.parametrize("insn, data, expected, sas, sse, sf", [
    ("ldrb w0, [x1]", 0x80, 0x80, 0, False, False),
    ("ldrh w0, [x1]", 0x8001, 0x8001, 1, False, False),
    ("ldr w0, [x1]", 0x80000001, 0x80000001, 2, False, False),
    ("ldrsb w0, [x1]", 0x80, 0xFFFFFF80, 0, True, False),
    ("ldrsb x0, [x1]", 0x80, 0xFFFFFFFFFFFFFF80, 0, True, True),
    ("ldrsh w0, [x1]", 0x8001, 0xFFFF8001, 1, True, False),
    ("ldrsh x0, [x1]", 0x7001, 0x7001, 1, True, True),
    ("ldrsw x0, [x1]", 0x80000000, 0xFFFFFFFF80000000, 2, True, True),
    ("ldr x0, [x1]", 0xFFFF_0000_1234_5678, 0xFFFF_0000_1234_5678, 3, False, True),
    ("ldar w0, [x1]", 0x42, 0x42, 2, False, False),
])
def test_mmio_read_syndrome_and_sign_extension(insn, data, expected, sas, sse, sf):
    r = boot(f"guest_main:\n mov x0, #0x5555\n ldr x1, ={MMIO:#x}\n {insn}\n mov x5, x0\n ret\n", vm=mmio_vm())
    m = r.exit.mmio
    iss = m.esr_iss
    assert iss & E.ISV and (iss >> 22) & 3 == sas and bool(iss & E.SSE) == sse and bool(iss & E.SF) == sf
    assert (iss >> 16) & 31 == 0 and not iss & E.WNR
    assert bool(iss & E.AR) == insn.startswith("ldar")
    assert m.len == 1 << sas
    m.data[:8] = data.to_bytes(8, "little")
    assert_halted(continue_(r))
    assert r.vcpu.reg("x5") == expected


@pytest.mark.parametrize("insn, size, rt, sf, ar", [
    ("str x3, [x1]", 8, 3, True, False),
    ("strb w3, [x1, #2]", 1, 3, False, False),
    ("strh w7, [x1]", 2, 7, False, False),
    ("stlr w3, [x1]", 4, 3, False, True),
])
def test_mmio_write_exit_carries_the_data_and_the_syndrome(insn, size, rt, sf, ar):
    r = boot(f"guest_main:\n ldr x3, =0x1122334455667788\n mov x7, x3\n ldr x1, ={MMIO:#x}\n {insn}\n ret\n",
             vm=mmio_vm())
    m = r.exit.mmio
    assert m.is_write and m.len == size
    assert int.from_bytes(m.data[:size], "little") == 0x1122334455667788 & ((1 << 8 * size) - 1)
    iss = m.esr_iss
    assert iss & E.WNR and (iss >> 16) & 31 == rt and bool(iss & E.SF) == sf and bool(iss & E.AR) == ar
    assert_halted(continue_(r))


def test_a_load_into_xzr_completes_without_writing_anything():
    r = boot(f"guest_main:\n ldr x1, ={MMIO:#x}\n ldr wzr, [x1]\n ret\n", vm=mmio_vm())
    r.exit.mmio.data[:4] = b"\xff\xff\xff\xff"
    assert_halted(continue_(r))


@pytest.mark.parametrize("insn", ["ldr x0, [x1], #8", "ldr x0, [x1, #8]!", "ldp x2, x3, [x1]", "stp x2, x3, [x1]",
                                  "ldr q0, [x1]", "ldxr x0, [x1]"])
def test_accesses_without_a_valid_syndrome_fail_with_enosys_without_nisv_to_user(insn):
    r = boot(f"guest_main:\n ldr x1, ={MMIO:#x}\n {insn}\n ret\n", vm=mmio_vm(), run=False)
    with pytest.raises(OSError) as e:
        r.vcpu.run()
    assert e.value.errno == errno.ENOSYS
    assert r.records == []  # the guest took nothing


def test_nisv_exit_and_abort_injection_with_nisv_to_user():
    vm = mmio_vm()
    vm.enable_cap(Cap.ARM_NISV_TO_USER)
    r = boot(f"guest_main:\n mov x19, #7\n ldr x1, ={MMIO:#x}\nfault:\n ldr x19, [x1], #8\n mov x20, x1\n ret\n", vm=vm)
    assert r.exit.reason is ExitReason.ARM_NISV
    assert r.exit.arm_nisv.fault_ipa == MMIO
    assert r.exit.arm_nisv.esr_iss & ~(E.CM | E.WNR | E.FSC_MASK) == 0
    r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1))
    assert_halted(continue_(r))
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr, rec.far) == (0x200, 0x96000010, r.sym("fault"), MMIO)
    assert r.vcpu.reg("x19") == 7 and r.vcpu.reg("x20") == MMIO  # not retired: no load, no writeback


def test_aborted_mmio_instruction_does_not_retire():
    r = boot(f"guest_main:\n mov x0, #7\n ldr x1, ={MMIO:#x}\nfault:\n ldr x0, [x1]\n mov x5, x0\n ret\n",
             vm=mmio_vm())
    assert r.exit.reason is ExitReason.MMIO
    r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1))
    # Taken at once, as KVM commits the exception in KVM_SET_VCPU_EVENTS.
    assert r.vcpu.reg("pc") == r.sym("exc_vectors") + 0x200
    assert_halted(continue_(r))
    [rec] = r.records
    # Linux e735a5da6442: ELR = the faulting load, destination untouched.
    assert (rec.esr, rec.elr, rec.far) == (0x96000010, r.sym("fault"), MMIO)
    assert r.vcpu.reg("x5") == 7


def test_injected_abort_from_el0_uses_the_lower_el_class_and_vector():
    r = boot(f"""
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    ldr x1, ={MMIO + 0x10:#x}
fault:
    ldrh w2, [x1]
    svc #0xffff
""", vm=mmio_vm())
    assert r.exit.reason is ExitReason.MMIO
    r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1))
    assert_halted(continue_(r))
    rec = r.records[0]
    assert (rec.vector, rec.esr, rec.elr, rec.far, rec.spsr) == (0x400, 0x92000010, r.sym("fault"), MMIO + 0x10, 0)


def test_user_iss_is_ored_into_the_injected_syndrome():
    fake = E.ISV | (3 << 22) | E.SF | E.AR | E.CM | E.FNV | E.EA  # FAKE_DABT_ISS of the selftest
    r = boot(f"guest_main:\n ldr x1, ={MMIO:#x}\nfault:\n ldr x0, [x1]\n ret\n", vm=mmio_vm())
    r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1, ext_abt_esr=fake))
    assert_halted(continue_(r))
    [rec] = r.records
    assert rec.esr == 0x96000010 | fake == 0x97C0C710


def test_injected_instruction_abort_needs_the_iabt_capability():
    vm = mmio_vm()
    vm.set_capability(Cap.ARM_INJECT_EXT_IABT, True)
    r = boot(f"guest_main:\n ldr x1, ={MMIO:#x}\nfault:\n ldr x0, [x1]\n ret\n", vm=vm)
    raw = VcpuEvents(ext_iabt_pending=1, ext_abt_esr=E.FNV | E.EA).pack(with_iabt=True)
    r.vcpu.set_events(raw)
    assert_halted(continue_(r))
    [rec] = r.records
    assert rec.esr == 0x86000010 | E.FNV | E.EA and rec.elr == r.sym("fault")


def test_an_abort_after_an_exit_that_was_not_mmio_is_refused():
    r = boot("guest_main:\n ret\n", vm=mmio_vm())
    assert r.exit.reason is ExitReason.SYSTEM_EVENT
    with pytest.raises(OSError) as e:
        r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1))
    assert e.value.errno == errno.EINVAL


POISON_GUEST = """
guest_main:
    ldr x1, =target
    ldr x2, =clean
    ldr x6, [x2]            // same page, clean bytes: works
load:
    ldr x0, [x1]
    mov x5, x0
    ret
.balign 4096
clean: .quad 0x600d
.balign 64
target: .quad 0x5eed
"""


def test_poisoned_load_without_sea_to_user_injects_a_sea():
    r = boot(POISON_GUEST, run=False)
    r.vm.poison(r.sym("target"), 8)
    assert_halted(continue_(r))
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr, rec.far) == (0x200, 0x96000010, r.sym("load"), r.sym("target"))
    assert r.vcpu.reg("x6") == 0x600D and r.vcpu.reg("x5") != 0x5EED


def test_poisoned_load_with_sea_to_user_exits_and_the_host_injects_with_iss():
    r = boot(POISON_GUEST, run=False)
    r.vm.enable_cap(Cap.ARM_SEA_TO_USER)
    r.vm.poison(r.sym("target"), 8)
    ex = r.vcpu.run()
    assert ex.reason is ExitReason.ARM_SEA
    sea = ex.arm_sea
    assert (sea.flags, sea.gva, sea.gpa) == (1, r.sym("target"), r.sym("target") & ~0xFFF)
    assert E.ec_of(sea.esr) == 0x24 and sea.esr & 0x3F == 0x10 and not sea.esr & (E.ISV | E.FNV)
    r.vcpu.set_events(VcpuEvents(ext_dabt_pending=1, ext_abt_esr=E.SET.UER << E.SET_SHIFT))
    assert_halted(continue_(r))
    [rec] = r.records
    assert (rec.esr, rec.far, rec.elr) == (0x96000010, r.sym("target"), r.sym("load"))


def test_repairing_the_page_lets_the_access_complete():
    r = boot(POISON_GUEST, run=False)
    r.vm.enable_cap(Cap.ARM_SEA_TO_USER)
    r.vm.poison(r.sym("target"), 8)
    assert r.vcpu.run().reason is ExitReason.ARM_SEA
    r.vm.unpoison(r.sym("target"), 8)
    assert_halted(continue_(r))
    assert r.records == [] and r.vcpu.reg("x5") == 0x5EED


FETCH_AND_STORE_GUEST = """
guest_main:
    ldr x1, =data
    mov x2, #9
store:
    str x2, [x1]
    stp x29, x30, [sp, #-16]!
    bl code
    ldp x29, x30, [sp], #16
    ret
.balign 4096
code:
    ret                     // poisoned: the fetch aborts; the handler returns past it
    ret                     // clean bytes of the same (protected) page
.balign 4096
data: .quad 0
"""


def test_poisoned_fetch_and_store():
    r = boot(FETCH_AND_STORE_GUEST, run=False)
    r.vm.poison(r.sym("code"), 4)
    r.vm.poison(r.sym("data"), 8)
    assert_halted(continue_(r))
    store, fetch = r.records[:2]
    assert (store.esr, store.far, store.elr) == (0x96000050, r.sym("data"), r.sym("store"))
    assert (fetch.esr, fetch.far, fetch.elr) == (0x86000010, r.sym("code"), r.sym("code"))
    assert r.vm.read_memory(r.sym("data"), 8) == bytes(8)  # the store never completed


def test_poisoned_fetch_and_store_with_sea_to_user_exit_with_the_el2_view():
    r = boot(FETCH_AND_STORE_GUEST, run=False)
    r.vm.enable_cap(Cap.ARM_SEA_TO_USER)
    r.vm.poison(r.sym("code"), 4)
    r.vm.poison(r.sym("data"), 8)
    store = r.vcpu.run()
    assert store.reason is ExitReason.ARM_SEA and store.pc == r.sym("store")
    # Linux mmu.c kvm_handle_guest_sea: the EL2 view of a lower-EL abort, WnR for the store.
    assert (store.arm_sea.esr, store.arm_sea.gva, store.arm_sea.gpa) == (0x92000050, r.sym("data"), r.sym("data"))
    r.vm.unpoison(r.sym("data"), 8)  # the host repairs the page: the store completes
    fetch = r.vcpu.run()
    assert fetch.reason is ExitReason.ARM_SEA and fetch.pc == r.sym("code")
    assert (fetch.arm_sea.esr, fetch.arm_sea.gva) == (0x82000010, r.sym("code"))
    # The host answers this one with an SError instead of an abort; the guest, which never
    # unmasks PSTATE.A, keeps it pending and goes on once the page is repaired.
    r.vcpu.set_events(VcpuEvents(serror_pending=1))
    r.vm.unpoison(r.sym("code"), 4)
    assert_halted(continue_(r))
    assert r.vm.read_memory(r.sym("data"), 8) == (9).to_bytes(8, "little")
    assert r.records == [] and r.vcpu.get_events().serror_pending == 1
