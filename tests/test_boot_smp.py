"""`sandbox boot --smp N` and `sandbox.boot.start(smp=N)`: every vCPU runs through Vm.run();
the secondaries are off until the guest starts them with PSCI CPU_ON (entry point,
context_id in x0), as on QEMU's virt board. The guest is a flat binary at 0x40080000."""

from __future__ import annotations

import struct

import libfdt

from sandbox import ExitReason, assemble
from sandbox.boot import start
from sandbox.cli import main
from sandbox.hyp.psci import INVALID_PARAMETERS
from sandbox.memmap import FLAT_LOAD_ADDRESS

CONTEXT_ID = 0x1234ABCD5678

# CPU 0: records AFFINITY_INFO(1) before, starts CPU 1 at `secondary` with CONTEXT_ID,
# records the CPU_ON result, waits for CPU 1's flag, records AFFINITY_INFO while CPU 1
# waits for `go`, sets `go`, waits until AFFINITY_INFO says CPU 1 is off again, then
# SYSTEM_OFF. UART: "A" before CPU_ON (CPU 0), "B" (CPU 1), "C" after CPU 0 saw the flag.
# CPU 1: records x0 (context_id), MPIDR_EL1, CurrentEL, DAIF, SCTLR_EL1 and its own
# AFFINITY_INFO, prints "B", raises the flag, waits for `go`, CPU_OFF.
GUEST = f"""
_start:
    ldr x9, =results
    str x0, [x9]                 // the device tree address CPU 0 got
    ldr x20, =0x09000000
    mov w2, #'A'
    str w2, [x20]
    ldr x0, =0xC4000004          // AFFINITY_INFO_64(target 1, level 0)
    mov x1, #1
    mov x2, #0
    hvc #0
    str x0, [x9, #8]
    ldr x0, =0xC4000003          // CPU_ON_64(target 1, entry, context_id)
    mov x1, #1
    ldr x2, =secondary
    ldr x3, ={CONTEXT_ID:#x}
    hvc #0
    str x0, [x9, #16]
wait_flag:
    ldr x1, [x9, #32]
    cbz x1, wait_flag
    ldr x0, =0xC4000004          // CPU 1 waits for `go`: it is on
    mov x1, #1
    mov x2, #0
    hvc #0
    str x0, [x9, #24]
    mov w2, #'C'
    str w2, [x20]
    mov x1, #1
    str x1, [x9, #96]            // go
wait_off:
    ldr x0, =0xC4000004
    mov x1, #1
    mov x2, #0
    hvc #0
    cmp x0, #1                   // OFF
    b.ne wait_off
    str x0, [x9, #40]
    ldr x0, =0x84000008          // SYSTEM_OFF
    hvc #0

secondary:
    ldr x9, =results
    str x0, [x9, #48]            // context_id
    mrs x1, mpidr_el1
    str x1, [x9, #56]
    mrs x1, currentel
    str x1, [x9, #64]
    mrs x1, daif
    str x1, [x9, #72]
    mrs x1, sctlr_el1
    str x1, [x9, #80]
    ldr x0, =0xC4000004          // AFFINITY_INFO of itself
    mov x1, #1
    mov x2, #0
    hvc #0
    str x0, [x9, #88]
    ldr x1, =0x09000000
    mov w2, #'B'
    str w2, [x1]
    mov x1, #1
    str x1, [x9, #32]            // the flag CPU 0 waits for
wait_go:
    ldr x1, [x9, #96]
    cbz x1, wait_go
    ldr x0, =0x84000002          // CPU_OFF
    hvc #0
    b .
.ltorg
.balign 8
results: .skip 104
"""

FIELDS = ("dtb", "affinity_before", "cpu_on", "affinity_after", "flag", "affinity_end",
          "context_id", "mpidr", "currentel", "daif", "sctlr", "affinity_self")


def program():
    return assemble(GUEST, FLAT_LOAD_ADDRESS)


def results(vm, prog):
    return dict(zip(FIELDS, struct.unpack("<12Q", vm.read_memory(prog["results"], 96))))


def test_two_vcpus_started_with_psci_cpu_on_from_a_flat_image():
    prog = program()
    machine = start(prog.code, smp=2, ram_size=32 << 20)
    ex = machine.run()
    assert ex.reason is ExitReason.SYSTEM_EVENT and ex.vcpu == 0
    seen = results(machine.vm, prog)
    assert seen["dtb"] == machine.dtb_address
    assert seen["affinity_before"] == 1  # OFF (PSCI 5.1.5)
    assert seen["cpu_on"] == 0  # SUCCESS
    assert seen["affinity_after"] == 0  # ON
    assert seen["affinity_self"] == 0
    assert seen["affinity_end"] == 1  # CPU_OFF took it down again
    assert seen["flag"] == 1
    assert seen["context_id"] == CONTEXT_ID  # x0 at the entry point (PSCI 5.1.4)
    assert seen["mpidr"] & 0xFF00FFFFFF == 1
    assert seen["currentel"] == 1 << 2  # EL1
    assert seen["daif"] == 0xF << 6  # EL1h with D, A, I, F masked, as KVM resets a vCPU (VCPU_RESET_PSTATE_EL1)
    assert seen["sctlr"] & 1 == 0  # MMU off
    assert machine.vm.uart.text == "ABC"
    assert all(v.instructions > 0 for v in machine.vm.vcpus)


def test_the_device_tree_lists_every_vcpu_with_its_mpidr_and_psci():
    machine = start(program().code, smp=3, ram_size=32 << 20)
    fdt = libfdt.Fdt(machine.dtb())
    for i in range(3):
        node = f"/cpus/cpu@{i}"
        assert fdt.getprop(fdt.path_offset(node), "reg").as_uint32() == machine.vm.vcpus[i].mpidr & 0xFFFFFF
        assert fdt.getprop(fdt.path_offset(node), "enable-method").as_str() == "psci"
    assert fdt.getprop(fdt.path_offset("/psci"), "method").as_str() == "hvc"


def test_without_a_second_vcpu_cpu_on_is_refused():
    prog = program()
    machine = start(prog.code, smp=1, ram_size=32 << 20)
    ex = machine.run(max_instructions=10_000)
    # CPU 0 waits for a flag no one raises.
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET
    seen = results(machine.vm, prog)
    assert seen["affinity_before"] == INVALID_PARAMETERS  # no vCPU has MPIDR 1
    assert seen["cpu_on"] == INVALID_PARAMETERS
    assert machine.vm.uart.text == "A"


def test_sandbox_boot_smp_2_runs_both_vcpus(tmp_path, capsys):
    path = tmp_path / "smp.bin"
    path.write_bytes(program().code)
    status = main(["boot", str(path), "--smp", "2", "--mem", "32M"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert out.out == "ABC"
    assert "vCPU 0: SYSTEM_EVENT" in out.err and "2 vCPU(s)" in out.err


def test_the_same_smp_boot_replays_exactly():
    prog = program()
    counts = []
    for _ in range(2):
        machine = start(prog.code, smp=2, ram_size=32 << 20)
        machine.run()
        counts.append([v.instructions for v in machine.vm.vcpus])
    assert counts[0] == counts[1]
