"""Budgets, guards, determinism, host changes between runs, and bad input."""

import errno

import pytest

from sandbox import ExitReason, Vm, assemble
from sandbox.kvm import InternalErrorSuberror

from conftest import RAM, assert_halted, boot


def test_same_program_twice_gives_identical_exits_and_records():
    src = """
guest_main:
    svc #1
    brk #2
    ldr x1, =0x10000000
    ldr x2, [x1]
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    svc #3
    udf #4
    svc #0xffff
"""
    a, b = boot(src, vm=Vm(unbacked="abort")), boot(src, vm=Vm(unbacked="abort"))
    assert a.exit.describe() == b.exit.describe()
    assert a.records == b.records
    assert len(a.records) == 6


def test_infinite_loop_stops_at_the_instruction_budget_exactly():
    r = boot("guest_main:\n mov x0, #0\nloop:\n add x0, x0, #1\n b loop\n", max_instructions=10_000)
    assert r.exit.reason is ExitReason.INSTRUCTION_BUDGET
    assert r.exit.instructions == 10_000
    # _start runs 10 instructions, guest_main 1 before the loop; then 2 per iteration.
    assert r.vcpu.reg("x0") == (10_000 - 11) // 2 + (1 if (10_000 - 11) % 2 else 0)


def test_instruction_budget_counts_across_traps_handled_in_the_guest():
    r = boot("guest_main:\nloop:\n svc #0\n b loop\n", max_instructions=5_000)
    assert r.exit.reason is ExitReason.INSTRUCTION_BUDGET
    assert r.exit.instructions == 5_000


def test_a_budget_is_exact_for_code_an_uncounted_run_translated_first():
    r = boot("guest_main:\n mov x0, #0\nloop:\n add x0, x0, #1\n b loop\n", timeout=0.1)
    assert r.exit.reason is ExitReason.TIME_BUDGET
    r.vcpu.set_reg("pc", r.sym("guest_main"))
    ex = r.vcpu.run(max_instructions=11, timeout=5)
    assert (ex.reason, ex.instructions, r.vcpu.reg("x0")) == (ExitReason.INSTRUCTION_BUDGET, 11, 5)


def test_infinite_loop_stops_at_the_time_budget_and_can_be_resumed():
    r = boot("guest_main:\nloop:\n add x0, x0, #1\n b loop\n", timeout=0.2)
    assert r.exit.reason is ExitReason.TIME_BUDGET
    before = r.vcpu.reg("x0")
    again = r.vcpu.run(timeout=0.1)
    assert again.reason is ExitReason.TIME_BUDGET
    assert r.vcpu.reg("x0") > before


def test_host_changes_registers_and_memory_between_runs_and_the_guest_continues():
    r = boot("""
guest_main:
    brk #0              // policy STOP below: the guest powers off inside the handler
    ldr x1, =value
    ldr x2, [x1]
    add x3, x2, x19
    ret
.balign 8
value: .quad 0
""", run=False)
    ex = r.vcpu.run(max_instructions=10)  # _start, up to and including `bl guest_main`
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET and r.vcpu.reg("pc") == r.sym("guest_main")
    r.vcpu.set_reg("pc", r.sym("guest_main") + 4)  # skip the brk
    r.vcpu.set_reg("x19", 5)
    r.vm.write_memory(r.sym("value"), (37).to_bytes(8, "little"))
    assert_halted(type(r)(r.vm, r.vcpu, r.program, r.vcpu.run()))
    assert r.vcpu.reg("x3") == 42


def test_exception_storm_names_the_vector_and_the_faulting_instruction():
    r = boot("""
guest_main:
    ldr x0, =exc_policy
    mov x1, #2              // RETRY: return to ELR, so the UDF repeats forever
    str x1, [x0]
    udf #0x55
    ret
""")
    assert r.exit.reason is ExitReason.INTERNAL_ERROR
    assert r.exit.internal.suberror is InternalErrorSuberror.EXCEPTION_STORM
    assert "+0x200" in r.exit.internal.message and "udf #0x55" in r.exit.internal.message
    # The Vm stays usable: point the vCPU elsewhere and run on.
    r.vm.write_memory(r.sym("exc_policy"), (0).to_bytes(8, "little"))
    assert r.vcpu.run().reason is ExitReason.SYSTEM_EVENT


def test_jump_into_unmapped_memory_with_no_vector_table_is_reported_not_raised():
    vm = Vm(storm_threshold=16)
    vcpu = vm.create_vcpu()
    prog = assemble("ldr x0, =0x20000000\nbr x0\n", RAM)
    vm.load(prog)
    vcpu.set_reg("pc", RAM)
    ex = vcpu.run()  # VBAR_EL1 = 0: the vector itself is unbacked -> storm at +0x200
    assert ex.reason is ExitReason.INTERNAL_ERROR
    assert "vector +0x200" in ex.internal.message
    vm.write_memory(RAM, assemble("mov x0, #0x0008\nmovk x0, #0x8400, lsl #16\nhvc #0\n", RAM).code)
    vcpu.set_reg("pc", RAM)
    assert vcpu.run().reason is ExitReason.SYSTEM_EVENT


def test_wfi_with_nothing_to_wake_the_vcpu_is_an_idle_exit():
    r = boot("guest_main:\n wfi\n ret\n")
    assert r.exit.reason is ExitReason.IDLE
    assert r.exit.pc == r.sym("guest_main") + 4
    assert r.vcpu.run().reason is ExitReason.SYSTEM_EVENT


def test_a_raising_device_model_becomes_an_internal_error_exit():
    class Broken:
        def read(self, offset, size):
            raise RuntimeError("device bug")

        def write(self, offset, size, value):
            pass

    vm = Vm()
    vm.add_device(0xA000000, 0x1000, Broken(), "broken")
    r = boot("guest_main:\n ldr x1, =0xA000000\n ldr w2, [x1]\n ret\n", vm=vm)
    assert r.exit.reason is ExitReason.INTERNAL_ERROR
    assert "device bug" in r.exit.internal.message


def test_overlapping_memory_is_refused_with_eexist_and_the_vm_stays_usable():
    vm = Vm()
    with pytest.raises(OSError) as e:
        vm.add_ram(RAM + 0x1000, 0x1000)
    assert e.value.errno == errno.EEXIST
    r = boot("guest_main:\n ret\n", vm=vm)
    assert_halted(r)


def test_too_large_or_misaligned_ram_is_refused():
    with pytest.raises(OSError) as e:
        Vm(ram_size=1 << 40)
    assert e.value.errno == errno.ENOMEM
    vm = Vm()
    with pytest.raises(OSError) as e:
        vm.add_ram(0x1234, 0x1000)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        vm.add_ram(1 << 48, 0x1000)
    assert e.value.errno == errno.EINVAL


def test_registers_cannot_be_set_while_the_vcpu_runs():
    vm = Vm()
    vcpu = vm.create_vcpu()
    seen = []

    class Probe:
        def read(self, offset, size):
            try:
                vcpu.set_reg("x0", 1)
            except OSError as e:
                seen.append(e.errno)
            return 0

        def write(self, offset, size, value):
            pass

    vm.add_device(0xA000000, 0x1000, Probe(), "probe")
    r = boot("guest_main:\n ldr x1, =0xA000000\n ldr w2, [x1]\n ret\n", vm=vm)
    assert_halted(r)
    assert seen == [errno.EBUSY]


def test_unknown_register_name_is_einval():
    vm = Vm()
    vcpu = vm.create_vcpu()
    with pytest.raises(OSError) as e:
        vcpu.reg("NOT_A_REG")
    assert e.value.errno == errno.EINVAL


def test_unbacked_policy_exit_reports_kvm_exit_mmio():
    r = boot("guest_main:\n ldr x1, =0x10000010\n mov x2, #0x1234\nst:\n str w2, [x1]\n ret\n", vm=Vm(unbacked="exit"))
    assert r.exit.reason is ExitReason.MMIO
    m = r.exit.mmio
    assert (m.phys_addr, m.len, m.is_write, int.from_bytes(m.data[:4], "little")) == (0x10000010, 4, True, 0x1234)
    assert r.exit.pc == r.sym("st")


def test_vcpu_reset_state_is_el1h_with_daif_masked_and_mpidr_from_the_index():
    vm = Vm()
    v0, v1 = vm.create_vcpu(), vm.create_vcpu()
    assert v0.reg("pstate") == 0x3C5
    assert v1.reg("MPIDR_EL1") & 0xFF_FFFF == 1


def test_observers_see_exceptions_returns_injections_and_exits():
    from sandbox.events import VcpuEvents
    r = boot("guest_main:\n svc #7\n msr daifclr, #4\n ret\n", run=False)
    seen = []
    r.vm.observers.append(lambda e: seen.append((e.kind, e.pc)))
    r.vcpu.set_events(VcpuEvents(serror_pending=1))
    r.exit = r.vcpu.run()
    assert_halted(r)
    kinds = [k for k, _ in seen]
    assert kinds[0] == "inject" and kinds[-1] == "exit"
    assert kinds.count("exception") == 2 and kinds.count("eret") == 2
    svc = r.sym("guest_main")
    assert ("exception", svc + 4) in seen  # SVC: ELR = the next instruction
