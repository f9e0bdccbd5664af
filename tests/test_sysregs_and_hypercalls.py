"""Emulated RAS registers, UNDEFINED unknown registers, and the minimal SMCCC/PSCI shim."""

from sandbox import ExitReason, SystemEventType, Vm

from conftest import assert_halted, boot


def test_disr_el1_is_read_write_and_error_records_are_raz_wi():
    r = boot("""
guest_main:
    mov x0, #0x80000000
    movk x0, #0x11
    msr DISR_EL1, x0
    mrs x1, DISR_EL1
    mrs x2, ERRIDR_EL1
    mov x3, #5
    msr ERRSELR_EL1, x3
    mrs x3, ERRSELR_EL1
    mrs x4, ERXSTATUS_EL1
    ldr x5, =out
    stp x1, x2, [x5]
    stp x3, x4, [x5, #16]
    ret
.balign 8
out: .quad 1, 1, 1, 1
""")
    assert_halted(r)
    out = r.vm.read_memory(r.sym("out"), 32)
    vals = [int.from_bytes(out[i:i + 8], "little") for i in range(0, 32, 8)]
    assert vals == [0x80000011, 0, 0, 0]
    assert r.records == []
    assert r.vcpu.reg("DISR_EL1") == 0x80000011


def test_ras_registers_are_undefined_on_a_cpu_without_ras():
    r = boot("guest_main:\n mrs x0, DISR_EL1\n ret\n", vm=Vm(ras=False))
    assert_halted(r)
    [rec] = r.records
    assert rec.esr == 0x02000000


def test_unknown_system_register_is_undefined_with_the_instruction_as_elr():
    r = boot("guest_main:\nbad:\n mrs x0, s3_0_c15_c2_0\n ret\n")
    assert_halted(r)
    [rec] = r.records
    assert (rec.esr, rec.elr) == (0x02000000, r.sym("bad"))


def test_psci_version_and_unknown_function_ids():
    r = boot("""
guest_main:
    mov x0, #0x84000000
    hvc #0
    mov x19, x0
    mov x0, #0x1234
    hvc #0
    mov x20, x0
    mov x0, #0x84000000
    smc #0                      // PSCI answers on HVC only: SMC gets NOT_SUPPORTED
    mov x21, x0
    mov x0, #0x84000000
    hvc #1                      // non-zero immediate: not an SMCCC call
    mov x22, x0
    ldr x5, =out
    stp x19, x20, [x5]
    stp x21, x22, [x5, #16]
    ret
.balign 8
out: .quad 0, 0, 0, 0
""")
    assert_halted(r)
    out = r.vm.read_memory(r.sym("out"), 32)
    vals = [int.from_bytes(out[i:i + 8], "little") for i in range(0, 32, 8)]
    assert vals == [0x10001, 2**64 - 1, 2**64 - 1, 2**64 - 1]


def test_system_reset_is_a_system_event_exit_and_the_vcpu_can_continue():
    r = boot("""
guest_main:
    mov x0, #0x0009
    movk x0, #0x8400, lsl #16
    hvc #0
after:
    mov x7, #77
    ret
""")
    assert r.exit.reason is ExitReason.SYSTEM_EVENT
    assert r.exit.system_event.type is SystemEventType.RESET
    assert r.exit.pc == r.sym("after")
    again = r.vcpu.run()
    assert again.system_event.type is SystemEventType.SHUTDOWN
    assert r.vcpu.reg("x7") == 77


def test_hvc_and_smc_at_el0_are_undefined():
    r = boot("""
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    hvc #0
    smc #0
    svc #0xffff
""")
    assert_halted(r)
    hvc, smc, _ = r.records
    assert (hvc.vector, hvc.esr, hvc.elr) == (0x400, 0x02000000, r.sym("task"))
    assert (smc.esr, smc.elr) == (0x02000000, r.sym("task") + 4)
