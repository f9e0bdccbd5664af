"""PSCI 1.1 with several vCPUs (CPU_ON, CPU_OFF, AFFINITY_INFO, SYSTEM_OFF/RESET), the
deterministic Vm.run scheduler, and SMCCC decoding on both conduits."""

import pytest

from sandbox import ExitReason, SystemEventType, Vm
from sandbox.hyp.power import MpState
from sandbox.hyp.smccc import Conduit

from guest_lib import machine, s64

NOT_SUPPORTED, INVALID, ALREADY_ON, ON_PENDING, INVALID_ADDRESS = -1, -2, -4, -5, -9

CALLS = """
// x0 = function ID, x1..x3 arguments; the result goes to out[x8]
call_hvc:
    hvc #0
    ldr x9, =out
    str x0, [x9, x8, lsl #3]
    ret
call_smc:
    smc #0
    ldr x9, =out
    str x0, [x9, x8, lsl #3]
    ret
.macro CALL conduit, slot, fid, a1=0, a2=0, a3=0
    ldr x0, =\\fid
    ldr x1, =\\a1
    ldr x2, =\\a2
    ldr x3, =\\a3
    mov x8, #\\slot
    bl call_\\conduit
.endm
"""


def test_smccc_version_features_and_unknown_ids_on_both_conduits():
    m = machine(CALLS + """
guest_main:
    str x30, [sp, #-16]!
    CALL hvc, 0, 0x80000000
    CALL smc, 1, 0x80000000
    CALL hvc, 2, 0x80000001, 0x80000000     // ARCH_FEATURES(SMCCC_VERSION)
    CALL hvc, 3, 0x80000001, 0x80008000     // ARCH_FEATURES(WORKAROUND_1): not needed
    CALL hvc, 4, 0x82000000                 // SiP service: unknown
    CALL hvc, 5, 0x84000020                 // SMC32 alias of SDEI_VERSION
    CALL hvc, 6, 0xC4000033                 // beyond the SDEI functions
    CALL hvc, 7, 0xC400003F
    CALL hvc, 8, 0x04000000                 // a yielding call
    CALL hvc, 9, 0xFFFFFFFFC4000020         // bits [63:32] of x0 are ignored: SDEI_VERSION
    ldr x30, [sp], #16
    ret
.balign 8
out: .skip 8 * 10
""")
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    out = m.signed("out", 10)
    assert out[:4] == [0x10001, 0x10001, 0, NOT_SUPPORTED]
    assert out[4:9] == [NOT_SUPPORTED] * 5
    assert out[9] == 0x1_0001_004B564D


def test_each_service_answers_on_its_own_conduit_only():
    m = machine(CALLS + """
guest_main:
    str x30, [sp, #-16]!
    CALL hvc, 0, 0x84000000     // PSCI_VERSION
    CALL smc, 1, 0x84000000
    CALL hvc, 2, 0xC4000020     // SDEI_VERSION
    CALL smc, 3, 0xC4000020
    ldr x30, [sp], #16
    ret
.balign 8
out: .skip 8 * 4
""", sdei_conduit=Conduit.SMC)
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert m.signed("out", 4) == [0x10001, NOT_SUPPORTED, NOT_SUPPORTED, 0x1_0001_004B564D]


def test_psci_features_and_migrate_info_type():
    m = machine(CALLS + """
guest_main:
    str x30, [sp, #-16]!
    CALL hvc, 0, 0x8400000A, 0xC4000003     // CPU_ON_64
    CALL hvc, 1, 0x8400000A, 0x84000002     // CPU_OFF
    CALL hvc, 2, 0x8400000A, 0x80000000     // SMCCC_VERSION (SMCCC 1.1 discovery)
    CALL hvc, 3, 0x8400000A, 0xC4000001     // CPU_SUSPEND: not implemented
    CALL hvc, 4, 0x84000006                 // MIGRATE_INFO_TYPE
    CALL hvc, 5, 0x8400000B                 // an unknown PSCI function
    ldr x30, [sp], #16
    ret
.balign 8
out: .skip 8 * 6
""")
    m.run()
    assert m.signed("out", 6) == [0, 0, 0, NOT_SUPPORTED, 2, NOT_SUPPORTED]


CPU_ON_GUEST = CALLS + """
guest_main:
    str x30, [sp, #-16]!
    CALL hvc, 0, 0xC4000003, 1, raw_entry, 0x1234ABCD       // CPU_ON(1, raw_entry, ctx)
    CALL hvc, 1, 0xC4000003, 1, raw_entry, 0                // again: it is on (or pending)
    CALL hvc, 2, 0xC4000004, 1, 0                           // AFFINITY_INFO(1, 0)
    CALL hvc, 3, 0xC4000003, 0, raw_entry, 0                // CPU_ON(self)
    CALL hvc, 4, 0xC4000003, 7, raw_entry, 0                // no such MPIDR
    CALL hvc, 5, 0xC4000003, 0x100000002, raw_entry, 0      // bits outside the affinity fields
    CALL hvc, 6, 0xC4000003, 2, 0x10000, 0                  // entry outside RAM
    CALL hvc, 7, 0x84000003, 2, 0x100000000 + raw_entry, 9  // SMC32: upper halves ignored
    CALL hvc, 8, 0xC4000004, 0, 1                           // AFFINITY_INFO(level 1: Aff1 = 0)
    CALL hvc, 9, 0xC4000004, 0x100, 0                       // AFFINITY_INFO of no vCPU
    CALL hvc, 10, 0xC4000004, 0, 4                          // level 4 does not exist
1:  ldr x9, =seen                                           // both secondaries started
    ldr x10, [x9, #56]
    cmp x10, #2
    b.ne 1b
    mov x10, #1
    str x10, [x9, #48]                                      // release vCPU 1: it powers off
2:  CALL hvc, 11, 0xC4000004, 1, 0                          // ... until AFFINITY_INFO says OFF
    ldr x9, =out
    ldr x10, [x9, #88]
    cmp x10, #1
    b.ne 2b
    CALL hvc, 12, 0xC4000004, 2, 0                          // vCPU 2 waits in WFI: on
    ldr x30, [sp], #16
    ret

// A secondary's first instructions: record what CPU_ON gave it and count; vCPU 1 then
// powers off when released, vCPU 2 waits in WFI for ever.
raw_entry:
    mrs x9, mpidr_el1
    and x9, x9, #0xff
    ldr x10, =seen
    add x10, x10, x9, lsl #4
    mrs x11, currentel
    mrs x12, daif
    orr x11, x11, x12
    mrs x12, spsel
    orr x11, x11, x12
    stp x0, x11, [x10]          // context_id, PSTATE
    ldr x10, =seen
    add x10, x10, #56
3:  ldaxr x11, [x10]
    add x11, x11, #1
    stlxr w12, x11, [x10]
    cbnz w12, 3b
    cmp x9, #2
    b.eq park
4:  ldr x10, =seen
    ldr x11, [x10, #48]
    cbz x11, 4b
    ldr x0, =0x84000002         // CPU_OFF
    hvc #0
park:
    wfi
    b park
.balign 8
out: .skip 8 * 13
seen: .skip 8 * 8
"""


def test_cpu_on_starts_a_secondary_with_context_id_and_psci_errors():
    m = machine(CPU_ON_GUEST, cpus=3)
    v0, v1, v2 = m.vm.vcpus
    assert v1.run().reason is ExitReason.POWERED_OFF  # secondaries start powered off
    assert m.vm.hypervisor.power.get_mp_state(v1) is MpState.STOPPED
    ex = m.run(timeout=20)
    assert ex.reason is ExitReason.SYSTEM_EVENT and ex.vcpu == 0, ex.describe()
    out = [s64(x) for x in m.words("out", 13)]
    assert out[:3] == [0, ALREADY_ON, 0]  # AFFINITY_INFO: ON
    assert out[3:7] == [ALREADY_ON, INVALID, INVALID, INVALID_ADDRESS]
    assert out[7] == 0
    assert out[8] == 0  # some vCPU with Aff1 = 0 is on
    assert out[9:11] == [INVALID, INVALID]
    assert out[11:13] == [1, 0]  # vCPU 1 off again, vCPU 2 in WFI but on
    seen = m.words("seen", 8)
    assert seen[2:4] == [0x1234ABCD, 0x3C5]  # x0 = context_id; EL1h with D, A, I, F masked
    assert seen[4:6] == [9, 0x3C5]
    assert m.vm.hypervisor.power.get_mp_state(v1) is MpState.STOPPED
    assert m.vm.hypervisor.power.get_mp_state(v2) is MpState.RUNNABLE


def test_cpu_on_target_is_on_pending_until_it_first_runs():
    m = machine(CPU_ON_GUEST, cpus=3)
    ex = m.vm.vcpus[0].run(max_instructions=200)  # only vCPU 0 runs: vCPU 1 never starts
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET
    out = [s64(x) for x in m.words("out", 3)]
    assert out == [0, ON_PENDING, 2]  # AFFINITY_INFO: ON_PENDING


def test_cpu_off_then_on_again_resets_the_vcpu():
    m = machine("""
guest_main:
    str x30, [sp, #-16]!
    mov x19, #0
again:
    ldr x0, =0xC4000003
    mov x1, #1
    ldr x2, =entry
    add x3, x19, #0x70
    hvc #0
1:  ldr x9, =count
    ldr x10, [x9]
    add x11, x19, #1
    cmp x10, x11
    b.ne 1b
2:  ldr x0, =0xC4000004         // wait until it is off
    mov x1, #1
    mov x2, #0
    hvc #0
    cmp x0, #1
    b.ne 2b
    add x19, x19, #1
    cmp x19, #2
    b.ne again
    ldr x30, [sp], #16
    ret
entry:
    ldr x9, =regs
    ldr x10, =count
    ldr x11, [x10]
    add x12, x9, x11, lsl #4
    stp x0, x5, [x12]           // x5 is zero after reset, whatever the last run left
    mov x5, #0x55
    add x11, x11, #1
    str x11, [x10]
    ldr x0, =0x84000002
    hvc #0
.balign 8
count: .quad 0
regs: .skip 32
""", cpus=2)
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert m.words("regs", 4) == [0x70, 0, 0x71, 0]


def test_system_off_and_reset_from_a_secondary_name_the_vcpu():
    for fid, kind in ((0x84000008, SystemEventType.SHUTDOWN), (0x84000009, SystemEventType.RESET)):
        m = machine(f"""
guest_main:
    mov x0, #1
    ldr x1, =work
    bl cpu_on
1:  b 1b
work:
    ldr x0, ={fid:#x}
    hvc #0
""", cpus=2)
        ex = m.run()
        assert (ex.reason, ex.system_event.type, ex.vcpu) == (ExitReason.SYSTEM_EVENT, kind, 1)


SHARED_LOG = """
// Two CPUs append their Aff0 to one log (an atomic ticket), 40 times each, with a delay
// loop between entries; CPU 0 waits for both and powers off.
guest_main:
    mov x0, #1
    ldr x1, =writer
    bl cpu_on
    bl writer
1:  ldr x9, =done
    ldr x10, [x9]
    cmp x10, #2
    b.ne 1b
    b guest_halt
writer:
    mrs x19, mpidr_el1
    and x19, x19, #0xff
    mov x20, #40
2:  ldr x9, =ticket
3:  ldaxr x10, [x9]
    add x11, x10, #1
    stlxr w12, x11, [x9]
    cbnz w12, 3b
    ldr x13, =log
    strb w19, [x13, x10]
    mov x14, #37
4:  subs x14, x14, #1
    b.ne 4b
    subs x20, x20, #1
    b.ne 2b
    ldr x9, =done
5:  ldaxr x10, [x9]
    add x10, x10, #1
    stlxr w12, x10, [x9]
    cbnz w12, 5b
    ret
.balign 8
ticket: .quad 0
done: .quad 0
log: .skip 80
"""


def _log(quantum: int) -> bytes:
    m = machine(SHARED_LOG, cpus=2)
    ex = m.run(quantum=quantum, timeout=20)
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    return m.vm.read_memory(m.sym("log"), 80)


def test_vm_run_interleaves_vcpus_deterministically_by_quantum():
    a, b = _log(300), _log(300)
    assert a == b  # the same interleaving on every run
    assert sorted(a) == [0] * 40 + [1] * 40
    assert a != bytes(sorted(a))  # both CPUs really ran by turns
    assert _log(5000) != a  # ... whose length is the quantum


def test_vm_run_budget_counts_every_vcpu_exactly_and_resumes():
    m = machine(SHARED_LOG, cpus=2)
    total = 0
    while True:
        ex = m.run(max_instructions=777, quantum=300)
        if ex.reason is not ExitReason.INSTRUCTION_BUDGET:
            break
        assert ex.instructions == 777
        total += ex.instructions
    assert ex.reason is ExitReason.SYSTEM_EVENT
    assert m.vm.read_memory(m.sym("log"), 80) == _log(300)  # budgets do not change the interleaving
    assert total > 6000


def test_vm_run_reports_idle_when_every_vcpu_waits():
    m = machine("guest_main:\n wfi\n b guest_main\n")
    ex = m.run()
    assert (ex.reason, ex.vcpu) == (ExitReason.IDLE, 0)


def test_exit_of_a_secondary_names_it_and_resumes_it():
    m = machine("""
guest_main:
    mov x0, #1
    ldr x1, =work
    bl cpu_on
1:  ldr x9, =flag
    ldr x10, [x9]
    cbz x10, 1b
    b guest_halt
work:
    ldr x1, =0x10000000
    ldr x2, [x1]                // no device there: KVM_EXIT_MMIO on vCPU 1
    ldr x9, =flag
    str x2, [x9]
    ret
.balign 8
flag: .quad 0
""", cpus=2, unbacked="exit")
    ex = m.run()
    assert (ex.reason, ex.vcpu) == (ExitReason.MMIO, 1)
    ex.mmio.data[:8] = (0xAB).to_bytes(8, "little")
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert m.word("flag") == 0xAB


def test_mp_state_and_vcpu_limits():
    vm = Vm()
    v0, v1 = vm.create_vcpu(), vm.create_vcpu()
    power = vm.hypervisor.power
    assert [power.get_mp_state(v) for v in (v0, v1)] == [MpState.RUNNABLE, MpState.STOPPED]
    power.set_mp_state(v1, MpState.RUNNABLE)
    assert power.get_mp_state(v1) is MpState.RUNNABLE
    with pytest.raises(OSError) as e:
        power.set_mp_state(v1, 3)
    assert e.value.errno == 22
    with pytest.raises(OSError) as e:
        vm.create_vcpu(mpidr=1)
    assert e.value.errno == 17  # EEXIST: that MPIDR is taken


def test_cli_runs_a_guest_on_several_vcpus(tmp_path):
    import subprocess
    import sys
    src = tmp_path / "two_cpus.S"  # not smp.S: .include looks beside the including file first
    src.write_text("""
.include "kernel.S"
.include "smp.S"
guest_main:
    str x30, [sp, #-16]!
    mov x0, #1
    ldr x1, =hello
    bl cpu_on
1:  ldr x9, =flag
    ldr x10, [x9]
    cbz x10, 1b
    ldr x30, [sp], #16
    ret
hello:
    ldr x9, =flag
    mov x10, #1
    str x10, [x9]
    ret
.balign 8
flag: .quad 0
""")
    done = subprocess.run([sys.executable, "-m", "sandbox", "run", str(src), "--vcpus", "2", "--timeout", "5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SHUTDOWN (vCPU 0)" in done.stdout
    alone = subprocess.run([sys.executable, "-m", "sandbox", "run", str(src), "--timeout", "1"],
                           capture_output=True, text=True, timeout=120)
    assert alone.returncode == 1 and "TIME_BUDGET" in alone.stdout  # nobody else to set the flag
