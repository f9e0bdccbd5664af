"""The host's SMCCC filter (KVM_ARM_VM_SMCCC_FILTER) and KVM_EXIT_HYPERCALL, and the
"hypercall" observer events."""

import errno

import pytest

from sandbox import ExitReason, Vm
from sandbox.exits import KVM_HYPERCALL_EXIT_SMC
from sandbox.hyp.filter import FILTER_SIZE, FilterAction, KvmSmcccFilter

from guest_lib import machine, s64

GUEST = """
guest_main:
    ldr x0, =0xC6000010         // a vendor-hypervisor call the host takes over
    mov x1, #11
    mov x2, #12
    mov x3, #13
    mov x4, #14
    mov x5, #15
    mov x6, #16
    hvc #0
after_hvc:
    ldr x9, =out
    stp x0, x1, [x9]
    stp x2, x3, [x9, #16]
    ldr x0, =0xC6000011
    smc #0
    ldr x9, =out
    str x0, [x9, #32]
    ldr x0, =0xC4000020         // SDEI_VERSION, denied by the filter
    hvc #0
    str x0, [x9, #40]
    ldr x0, =0x84000000         // PSCI_VERSION: not filtered
    hvc #0
    str x0, [x9, #48]
    b guest_halt
.balign 8
out: .skip 56
"""


def test_forwarded_calls_exit_with_kvm_exit_hypercall_and_the_host_supplies_x0_to_x3():
    m = machine(GUEST)
    m.vm.set_smccc_filter(0xC6000000, 0x100, FilterAction.FWD_TO_USER)
    m.vm.set_smccc_filter(0xC4000020, 0x20, FilterAction.DENY)
    ex = m.run()
    assert ex.reason is ExitReason.HYPERCALL and ex.vcpu == 0
    hc = ex.hypercall
    assert (hc.nr, hc.args, hc.flags) == (0xC6000010, (11, 12, 13, 14, 15, 16), 0)
    assert ex.pc == m.sym("after_hvc")
    hc.ret[:] = [0x100, 0x101, 0x102, 0x103]
    ex = m.run()
    assert ex.reason is ExitReason.HYPERCALL
    assert (ex.hypercall.nr, ex.hypercall.flags) == (0xC6000011, KVM_HYPERCALL_EXIT_SMC)
    ex.hypercall.ret[0] = 7  # the others stay as the guest had them
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    out = m.words("out", 7)
    assert out[:4] == [0x100, 0x101, 0x102, 0x103]
    assert out[4] == 7
    assert s64(out[5]) == -1  # DENY: NOT_SUPPORTED
    assert out[6] == 0x10001


def test_filter_refuses_overlaps_the_arch_range_bad_ranges_and_late_changes():
    vm = Vm()
    vm.create_vcpu()
    vm.set_smccc_filter(0x84000000, 0x20, FilterAction.FWD_TO_USER)  # a VMM that does PSCI itself
    cases = [
        ((0x8400001F, 2, FilterAction.DENY), errno.EEXIST),  # overlaps the PSCI range
        ((0x80000000, 1, FilterAction.DENY), errno.EEXIST),  # the Arm Architecture calls are KVM's
        ((0xC000FFFF, 1, FilterAction.DENY), errno.EEXIST),
        ((0, 0, FilterAction.DENY), errno.EINVAL),  # empty range (KVM 64dc6f1db7e6)
        ((0xFFFFFFFF, 2, FilterAction.DENY), errno.EINVAL),  # wraps
        ((0xC6000000, 1, 3), errno.EINVAL),  # no such action
    ]
    for args, code in cases:
        with pytest.raises(OSError) as e:
            vm.set_smccc_filter(*args)
        assert e.value.errno == code, args
    with pytest.raises(OSError) as e:
        vm.hypervisor.set_smccc_filter(KvmSmcccFilter(0xC6000000, 1, 0, pad=b"\1" + bytes(14)))
    assert e.value.errno == errno.EINVAL
    raw = KvmSmcccFilter(0xC6000000, 4, FilterAction.DENY).pack()
    assert len(raw) == FILTER_SIZE == 24 and raw[:9] == bytes.fromhex("000000c6" "04000000" "01")
    vm.hypervisor.set_smccc_filter(raw)
    assert [(f.base, f.nr_functions, f.action) for f in vm.hypervisor.filter.ranges()] == [
        (0x84000000, 0x20, 2), (0xC6000000, 4, 1)]
    vm.vcpus[0].run(max_instructions=1)
    with pytest.raises(OSError) as e:
        vm.set_smccc_filter(0xC7000000, 1, FilterAction.DENY)
    assert e.value.errno == errno.EBUSY  # KVM: fixed once the VM has run


def test_a_vmm_can_implement_psci_itself_through_the_filter():
    m = machine("""
guest_main:
    ldr x0, =0x84000000
    hvc #0
    ldr x9, =out
    str x0, [x9]
    b guest_halt
.balign 8
out: .quad 0
""")
    m.vm.set_smccc_filter(0x84000000, 0x20, FilterAction.FWD_TO_USER)
    ex = m.run()
    assert ex.hypercall.nr == 0x84000000
    ex.hypercall.ret[0] = 0x10000  # "PSCI 1.0"
    ex = m.run()
    assert ex.hypercall.nr == 0x84000008  # guest_halt's SYSTEM_OFF reaches the VMM too
    assert m.word("out") == 0x10000


def test_hypercall_observer_sees_conduit_function_arguments_and_results():
    m = machine("""
guest_main:
    ldr x0, =0x84000000
    mov x1, #5
    hvc #0
    ldr x0, =0x12345678
    smc #0
    b guest_halt
""")
    seen = []
    m.vm.observers.append(lambda e: seen.append(e) if e.kind == "hypercall" else None)
    m.run()
    first, second = seen[0], seen[1]
    assert (first.data["conduit"], first.data["function_id"], first.data["args"][0], first.data["results"]) == (
        "HVC", 0x84000000, 5, (0x10001,))
    assert (second.data["conduit"], second.data["function_id"], second.data["results"]) == (
        "SMC", 0x12345678, (2**64 - 1,))
    assert first.pc == m.sym("guest_main") + 12


def test_function_ids_are_decoded_for_observers():
    from sandbox.hyp.smccc import FunctionId
    f = FunctionId(0x84000003)
    assert (f.fast, f.smc64, f.owner, f.number, f.reserved_bits_clear) == (True, False, 4, 3, True)
    assert FunctionId(0xC4000021).describe() == "0xc4000021 (fast SMC64 STANDARD_SECURE function 0x21)"
    assert not FunctionId(0x02000001).fast and not FunctionId(0x80010000).reserved_bits_clear
    m = machine("guest_main:\n ldr x0, =0xC4000020\n hvc #0\n b guest_halt\n")
    seen = []
    m.vm.observers.append(lambda e: seen.append(e.data["function"]) if e.kind == "hypercall" else None)
    m.run()
    assert seen[0] == "0xc4000020 (fast SMC64 STANDARD_SECURE function 0x20)"
