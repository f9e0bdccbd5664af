"""Property: whatever a guest puts in x0-x17 and whichever conduit it uses, a hypercall never
crashes the host, never raises out of run(), and returns an SMCCC/PSCI/SDEI result code or a
value the function defines."""

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import ExitReason, Vm, assemble
from sandbox.hyp.sdei_abi import FN_FIRST, FN_LAST, SdeiFn

from guest_lib import HEADER, RAM, s64

GUEST = HEADER + """
guest_main:
    ldr x9, =setup
    ldr x9, [x9]
    cbz x9, 1f
    mov x1, #0                  // some state to meet: event 0 registered, enabled, PE unmasked
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    mov x1, #0
    bl sdei_event_enable
    bl sdei_pe_unmask
1:  ldr x30, =args
    ldp x0, x1, [x30, #0]
    ldp x2, x3, [x30, #16]
    ldp x4, x5, [x30, #32]
    ldp x6, x7, [x30, #48]
    ldp x8, x9, [x30, #64]
    ldp x10, x11, [x30, #80]
    ldp x12, x13, [x30, #96]
    ldp x14, x15, [x30, #112]
    ldp x16, x17, [x30, #128]
    ldr x18, =conduit
    ldr x18, [x18]
    cbnz x18, 2f
    hvc #0
    b 3f
2:  smc #0
3:  ldr x9, =result
    mov x10, #1
    stp x10, x0, [x9]
    b guest_halt
.balign 8
setup: .quad 0
conduit: .quad 0
result: .quad 0, 0
args: .skip 8 * 18
"""
PROGRAM = assemble(GUEST, RAM)

SDEI_IDS = [int(f) for f in SdeiFn] + [FN_LAST, 0x84000020 | 5, 0xC4000033]
PSCI_IDS = [0x84000000, 0x8400000A, 0xC4000003, 0x84000003, 0xC4000004, 0x84000004, 0x84000006,
            0x84000001, 0xC4000001]
ARCH_IDS = [0x80000000, 0x80000001]
STOPPERS = {0x84000002, 0x84000008, 0x84000009}  # CPU_OFF, SYSTEM_OFF, SYSTEM_RESET do not return

SDEI_ERRORS = {-1, -2, -3, -5, -10}
PSCI_ERRORS = set(range(-9, 0))

word = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 40), st.integers(RAM, RAM + 0x40000),
                 st.sampled_from([2**63, 2**31, 0xFFFFFFFF, 2**64 - 1]))
fid = st.one_of(st.sampled_from(SDEI_IDS + PSCI_IDS + ARCH_IDS + sorted(STOPPERS)), st.integers(0, 2**64 - 1),
                st.integers(0xC4000000, 0xC40000FF))


def allowed(function: int, value: int) -> bool:
    f = function & 0xFFFFFFFF
    v = s64(value)
    if FN_FIRST <= f <= FN_LAST:
        return v in SDEI_ERRORS or v >= 0
    if (f >> 24) & 0x3F == 4 and (f & 0xFFFF) < 0x20:  # PSCI
        return v in PSCI_ERRORS or v >= 0
    if f == 0x80000000:
        return value == 0x10001
    if f == 0x80000001:
        return v in (0, -1)
    return v == -1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regs=st.tuples(fid, *[word] * 17), smc=st.booleans(), setup=st.booleans(),
       quirky=st.booleans())
def test_random_hypercalls_never_crash_and_always_answer_a_code(regs, smc, setup, quirky):
    vm = Vm(quirks=("sdei-signal-unchecked", "sdei-resume-injects-irq") if quirky else ())
    vm.create_vcpu()
    vm.load(PROGRAM)
    vm.vcpus[0].set_reg("pc", PROGRAM["_start"])
    vm.write_memory(PROGRAM["args"], struct.pack("<18Q", *regs))
    vm.write_memory(PROGRAM["setup"], struct.pack("<QQ", int(setup), int(smc)))
    ex = vm.vcpus[0].run(timeout=5)
    assert ex.reason is not ExitReason.INTERNAL_ERROR or ex.internal.suberror.name != "HOST_ERROR", ex.describe()
    assert ex.reason is not ExitReason.TIME_BUDGET, ex.describe()
    written, value = struct.unpack("<QQ", vm.read_memory(PROGRAM["result"], 16))
    if written:
        assert allowed(regs[0], value), (hex(regs[0]), hex(value))
    else:
        # no answer: only a call that ends the vCPU's run on purpose
        assert regs[0] & 0xFFFFFFFF in STOPPERS, (hex(regs[0]), ex.describe())
        assert ex.reason in (ExitReason.SYSTEM_EVENT, ExitReason.POWERED_OFF)
    # and the Vm still answers
    assert vm.hypervisor.sdei.handlers[SdeiFn.VERSION](vm.vcpus[0], [SdeiFn.VERSION]) == (1 << 48) | (1 << 32) | 0x4B564D
