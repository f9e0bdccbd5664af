"""Hypercall and SDEI round trips per second, each as a ratio to an empty Unicorn interrupt
hook measured in the same run (goal: hypercall >= 0.33).

- hypercall: a guest loop calling SDEI_VERSION over HVC, through the whole sandbox
  (Vcpu.run: trap, SMCCC dispatch, result in x0), against the same loop on bare Unicorn
  whose interrupt hook does nothing;
- SDEI dispatch + COMPLETE: a guest loop signalling event 0 to itself; each signal enters the
  handler (context saved, PSTATE per TakeException) and the handler's EVENT_COMPLETE
  restores the interrupted context; the ratio compares one such round trip (two hypercalls
  and two context switches) with one empty-hook trap.

    python bench/bench_hypercall.py [--calls N] [--repeat R]

Not part of the test suite: speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn import arm64_const as A

from sandbox import ExitReason, Vm, assemble
from sandbox.arch.sysreg import HCR_RW, SCR_HCE, SCR_NS, SCR_RW, SYSREGS

BASE = 0x40000000
LOOP = """
_start:
    mov x0, #0x20
    movk x0, #0xc400, lsl #16   // SDEI_VERSION
    hvc #0
    subs x5, x5, #1
    b.ne _start
"""
VERSION_LOOP = LOOP + """
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16   // PSCI SYSTEM_OFF
    hvc #0
"""
BARE_LOOP = LOOP + """
    brk #0                      // the end, for the bare run's hook
"""
SIGNAL_LOOP = """
_start:
    ldr x0, =0xC4000021         // EVENT_REGISTER(0, handler, 0, RM_ANY)
    mov x1, #0
    ldr x2, =handler
    mov x3, #0
    mov x4, #0
    hvc #0
    ldr x0, =0xC4000022         // EVENT_ENABLE(0)
    mov x1, #0
    hvc #0
    ldr x0, =0xC400002C         // PE_UNMASK
    hvc #0
loop:
    ldr x0, =0xC400002F         // EVENT_SIGNAL(0, self)
    mov x1, #0
    mrs x2, mpidr_el1
    and x2, x2, #0xff
    hvc #0
    subs x5, x5, #1
    b.ne loop
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16   // PSCI SYSTEM_OFF
    hvc #0
handler:
    ldr x0, =0xC4000025         // EVENT_COMPLETE(HANDLED)
    mov x1, #0
    hvc #0
.ltorg
"""


def empty_hook(n: int, program) -> float:
    """Seconds for `n` traps of the loop on bare Unicorn with an interrupt hook that does
    nothing (but stop at the final BRK)."""
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    uc.mem_map(BASE, 0x10000)
    uc.mem_write(BASE, program.code)
    uc.cpr_write(*SYSREGS["SCR_EL3"], SCR_NS | SCR_HCE | SCR_RW)
    uc.cpr_write(*SYSREGS["HCR_EL2"], HCR_RW)
    uc.reg_write(A.UC_ARM64_REG_X5, n)

    def hook(u: Uc, intno: int, _ud: object) -> None:
        if intno != 11:  # not EXCP_HVC: the final BRK
            u.emu_stop()

    uc.hook_add(UC_HOOK_INTR, hook)
    t = time.perf_counter()
    try:
        uc.emu_start(BASE, 0)
    except UcError:
        pass
    return time.perf_counter() - t


def sandbox(n: int, program) -> float:
    vm = Vm(ram_size=0x100000)
    vcpu = vm.create_vcpu()
    vm.load(program)
    vcpu.set_reg("pc", program["_start"])
    vcpu.set_reg("x5", n)
    t = time.perf_counter()
    ex = vcpu.run(timeout=None)
    dt = time.perf_counter() - t
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bare, version, signal = assemble(BARE_LOOP, BASE), assemble(VERSION_LOOP, BASE), assemble(SIGNAL_LOOP, BASE)
    n, m = args.calls, max(1, args.calls // 10)
    hook, calls, hook2, trips = [], [], [], []
    for _ in range(args.repeat):  # interleaved, so all see the same machine state
        hook.append(empty_hook(n, bare))
        calls.append(sandbox(n, version))
        hook2.append(empty_hook(m, bare))
        trips.append(sandbox(m, signal))
    h, c = statistics.median(hook), statistics.median(calls)
    h2, r = statistics.median(hook2), statistics.median(trips)
    print(f"empty interrupt hook      : {n / h / 1e3:9.1f} k traps/s (median of {args.repeat})")
    print(f"SDEI_VERSION hypercalls   : {n / c / 1e3:9.1f} k calls/s   ratio {h / c:.3f}  (goal >= 0.33)")
    print(f"SDEI dispatch + COMPLETE  : {m / r / 1e3:9.1f} k round trips/s   ratio {h2 / r:.3f}")


if __name__ == "__main__":
    main()
