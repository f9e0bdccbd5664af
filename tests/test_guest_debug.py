"""KVM_SET_GUEST_DEBUG: software breakpoints, single step and exits on guest exceptions."""

from __future__ import annotations

import errno

import pytest

from sandbox import ExitReason, Vm
from sandbox.guest_debug import (GUESTDBG_EXIT_ON_EXCEPTION, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
                                 KVM_GUESTDBG_USE_HW, KVM_GUESTDBG_USE_SW_BP)

from conftest import assert_halted, boot

SW_BP = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP
# Software step from a lower EL as KVM reports it: EC 0x32 << 26 | IL | ISV | IFSC 0b100010
# (Arm ARM D17.2.37, ISS encoding for a Software Step exception).
SOFTWARE_STEP_HSR = 0x32 << 26 | 1 << 25 | 1 << 24 | 0x22


def test_control_bits_kvm_would_refuse_are_einval_and_enable_gates_the_rest(vcpu):
    for bad in (KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW, 1 << 5):
        with pytest.raises(OSError) as e:
            vcpu.set_guest_debug(bad)
        assert e.value.errno == errno.EINVAL
    vcpu.set_guest_debug(KVM_GUESTDBG_SINGLESTEP)  # without ENABLE: debugging stays off
    assert vcpu.guest_debug.control == 0


def test_with_use_sw_bp_a_brk_exits_to_the_host_and_can_be_reinjected_into_the_guest():
    run = boot("guest_main:\n nop\nbp:\n brk #0x7\n ret\n", run=False)
    run.vcpu.set_guest_debug(SW_BP)
    ex = run.vcpu.run(max_instructions=1000)
    assert ex.reason is ExitReason.DEBUG and ex.pc == run.sym("bp")
    assert ex.debug.hsr == 0xF2000007 and ex.debug.event == "breakpoint"
    assert ex.instructions == 11  # _start's 10, then the nop: the BRK did not retire
    assert run.records == []  # the guest saw nothing
    run.vcpu.guest_debug.reinject(ex)
    run.vcpu.set_guest_debug(0)
    run.exit = run.vcpu.run()
    assert_halted(run)
    (record,) = run.records
    assert (record.esr, record.elr) == (0xF2000007, run.sym("bp"))


def test_single_step_retires_one_instruction_per_run_with_the_software_step_syndrome():
    run = boot("guest_main:\n mov x3, #1\n add x3, x3, #2\n ret\n", run=False)
    vcpu = run.vcpu
    vcpu.set_reg("pc", run.sym("guest_main"))
    vcpu.set_guest_debug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP)
    pcs = []
    for _ in range(2):
        ex = vcpu.run()
        assert ex.reason is ExitReason.DEBUG and ex.debug.hsr == SOFTWARE_STEP_HSR
        assert ex.debug.event == "step" and ex.instructions == 1
        pcs.append(ex.pc)
    assert pcs == [run.sym("guest_main") + 4, run.sym("guest_main") + 8] and vcpu.reg("x3") == 3


def test_a_step_over_svc_ends_at_the_vector():
    run = boot("guest_main:\ncall:\n svc #0x42\n ret\n", run=False)
    run.vcpu.set_reg("pc", run.sym("call"))
    run.vcpu.set_guest_debug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP)
    ex = run.vcpu.run()
    vbar = run.vcpu.reg("VBAR_EL1")
    assert ex.reason is ExitReason.DEBUG and ex.pc == vbar + 0x200
    assert run.vcpu.reg("ELR_EL1") == run.sym("call") + 4 and run.vcpu.reg("ESR_EL1") == 0x56000042


def test_exit_on_exception_stops_at_the_vector_with_the_guests_syndrome_then_the_guest_handles_it():
    run = boot("guest_main:\n ldr x1, =0x10000000\nload:\n ldr x2, [x1]\n ret\n",
               vm=Vm(unbacked="abort"), run=False)
    run.vcpu.set_guest_debug(KVM_GUESTDBG_ENABLE | GUESTDBG_EXIT_ON_EXCEPTION)
    ex = run.vcpu.run()
    assert ex.reason is ExitReason.DEBUG and ex.debug.event == "exception"
    assert (ex.debug.hsr, ex.debug.far) == (0x96000010, 0x10000000)  # SEA, as QEMU virt gives
    assert ex.pc == run.vcpu.reg("VBAR_EL1") + 0x200 and run.vcpu.reg("ELR_EL1") == run.sym("load")
    assert "DABT_CUR" in ex.debug.detail
    run.vcpu.set_guest_debug(0)
    run.exit = run.vcpu.run()
    assert_halted(run)
    assert [(r.esr, r.far) for r in run.records] == [(0x96000010, 0x10000000)]


def test_reinject_refuses_anything_but_a_breakpoint_exit():
    run = boot("guest_main:\n ret\n")
    with pytest.raises(OSError) as e:
        run.vcpu.guest_debug.reinject(run.exit)
    assert e.value.errno == errno.EINVAL
