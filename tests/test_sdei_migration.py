"""Migration of a Vm while an SDEI handler runs (a normal one, and a critical one preempting
a normal one), through the whole-Vm snapshot into a fresh Vm in another process: the rest of
the run, on two vCPUs whose interleaving the guest records, is identical to the unmigrated
one, and COMPLETE resumes the interrupted contexts bit for bit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import ExitReason, Vm, assemble
from sandbox.hyp.filter import FilterAction
from sandbox.sdei_client import sdei_records

from guest_lib import HEADER, RAM

CRITICAL = 0x400020
GUEST = HEADER + """
guest_main:
    mov x1, #0
    ldr x2, =handler_normal
    mov x3, #0x11
    mov x4, #0
    mov x5, #0
    bl sdei_event_register
    mov x1, #0
    bl sdei_event_enable
    ldr x1, =0x400020
    ldr x2, =handler_critical
    mov x3, #0x22
    mov x4, #0
    mov x5, #0
    bl sdei_event_register
    ldr x1, =0x400020
    bl sdei_event_enable
    bl sdei_pe_unmask
    mov x0, #1
    ldr x1, =counter_loop
    bl cpu_on
    ldr x19, =0x1919
    ldr x28, =0x2828
    mov x9, #0x30000000
    msr nzcv, x9
    mov x1, #0
    mov x2, #0
    ldr x7, =0x7777
    bl sdei_event_signal        // handler_normal runs after this call
    ldr x9, =result
    stp x7, x19, [x9]
    str x28, [x9, #16]
    mrs x10, nzcv
    str x10, [x9, #24]
    ldr x9, =stop
    mov x10, #1
    str x10, [x9]
    b guest_halt

counter_loop:                   // vCPU 1: count until told to stop
    ldr x9, =counter
    ldr x11, =stop
1:  ldr x10, [x9]
    add x10, x10, #1
    str x10, [x9]
    ldr x12, [x11]
    cbz x12, 1b
    ret

// sample(x0 = tag): append (tag, vCPU 1's counter) 40 times, with some work in between
sample:
    ldr x9, =log_count
    ldr x10, [x9]
    ldr x11, =log
    mov x12, #40
2:  ldr x13, =counter
    ldr x13, [x13]
    add x14, x11, x10, lsl #4
    stp x0, x13, [x14]
    add x10, x10, #1
    mov x15, #23
3:  subs x15, x15, #1
    b.ne 3b
    subs x12, x12, #1
    b.ne 2b
    str x10, [x9]
    ret

handler_normal:
    mov x20, x30
    mov x15, #101               // work before the migration point: well into the quantum
4:  subs x15, x15, #1
    b.ne 4b
    ldr x0, =0xC6000000         // the host stops here (and may inject the critical event)
    hvc #0
    mov x0, #'N'
    bl sample
    mov x30, x20
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0

handler_critical:
    mov x21, x30
    mov x15, #77
5:  subs x15, x15, #1
    b.ne 5b
    ldr x0, =0xC6000002         // the host stops here too
    hvc #0
    mov x0, #'C'
    bl sample
    mov x30, x21
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0

.balign 8
counter: .quad 0
stop: .quad 0
result: .skip 32
log_count: .quad 0
log: .skip 16 * 128
"""


def start(scenario: str) -> tuple[Vm, object]:
    """Run until the migration point: in the normal handler, or in the critical one that
    preempted it."""
    vm = Vm()
    vm.create_vcpu()
    vm.create_vcpu()
    program = assemble(GUEST, RAM)
    vm.load(program)
    vm.vcpus[0].set_reg("pc", program["_start"])
    vm.sdei.expose(CRITICAL, critical=True)
    vm.set_smccc_filter(0xC6000000, 3, FilterAction.FWD_TO_USER)
    ex = vm.run(quantum=700)
    assert ex.reason is ExitReason.HYPERCALL and ex.hypercall.nr == 0xC6000000, ex.describe()
    if scenario == "critical":
        vm.sdei.inject_event(vm.vcpus[0], CRITICAL)
        ex = vm.run(quantum=700)
        assert ex.reason is ExitReason.HYPERCALL and ex.hypercall.nr == 0xC6000002, ex.describe()
        st = vm.sdei.get_vcpu_state(vm.vcpus[0])
        assert (st.normal_num, st.critical_num) == (0, CRITICAL)  # critical on top of normal
    return vm, program


def finish(vm: Vm, program) -> dict:
    """Run the rest and describe everything the guest did."""
    exits = []
    while True:
        ex = vm.run(quantum=700)
        exits.append(ex.describe())
        if ex.reason is not ExitReason.HYPERCALL:
            break
    n = int.from_bytes(vm.read_memory(program["log_count"], 8), "little")
    return {"exits": exits, "log": vm.read_memory(program["log"], 16 * n).hex(),
            "result": vm.read_memory(program["result"], 32).hex(),
            "records": [[r.__dict__ for r in sdei_records(vm, program, cpu)] for cpu in (0, 1)],
            "regs": [v.regs() for v in vm.vcpus]}


CHILD = """
import json, sys
sys.path.insert(0, sys.argv[2])
from sandbox import Vm, assemble
import test_sdei_migration as T
vm = Vm.restore(open(sys.argv[1], "rb").read())
print(json.dumps(T.finish(vm, assemble(T.GUEST, T.RAM))))
"""


@pytest.mark.parametrize("scenario", ["normal", "critical"])
def test_migration_mid_handler_to_another_process_continues_identically(scenario, tmp_path):
    vm, program = start(scenario)
    snap = tmp_path / "vm.snap"
    snap.write_bytes(vm.snapshot())
    child = subprocess.run([sys.executable, "-c", CHILD, str(snap), str(Path(__file__).parent)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    theirs = json.loads(child.stdout)
    ours = json.loads(json.dumps(finish(vm, program)))
    assert theirs == ours
    # and the run itself did what it should: both handlers sampled vCPU 1 while it counted,
    # and the interrupted code got its registers and flags back
    log = bytes.fromhex(ours["log"])
    tags = [log[i] for i in range(0, len(log), 16)]
    assert tags == ([ord("C")] * 40 if scenario == "critical" else []) + [ord("N")] * 40
    counts = [int.from_bytes(log[i + 8:i + 16], "little") for i in range(0, len(log), 16)]
    assert counts == sorted(counts) and counts[0] < counts[-1]  # vCPU 1 ran in between
    x7, x19, x28, nzcv = [int(bytes.fromhex(ours["result"])[i:i + 8][::-1].hex(), 16) for i in range(0, 32, 8)]
    assert (x7, x19, x28, nzcv) == (0x7777, 0x1919, 0x2828, 0x30000000)
    assert ours["exits"][-1].startswith("SYSTEM_EVENT")
