"""A masked pending virtual SError must cost (almost) nothing: the same tight loop with an
SError pending and PSTATE.A masked throughout, vs bare Unicorn in the same run (goal >=
0.90); plus the cost of delivering one (pend, unmask, vector, ERET) for reference.

    python bench/bench_serror.py
"""

from __future__ import annotations

import statistics
import time

from bench_run import BASE, LOOP, PER_ITERATION, bare_unicorn

from sandbox import ExitReason, Vm, assemble
from sandbox.events import VcpuEvents


def pending_masked(iterations: int, program) -> float:
    vm = Vm(ram_size=0x100000)
    vcpu = vm.create_vcpu()
    vm.load(program)
    vcpu.set_reg("pc", program["_start"])
    vcpu.set_reg("x3", iterations)
    vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=0x11))
    t = time.perf_counter()
    ex = vcpu.run(timeout=None)
    dt = time.perf_counter() - t
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    assert vcpu.get_events().serror_pending == 1  # never unmasked, still pending
    return dt


def deliveries(count: int) -> float:
    """Seconds per pend + run: unmask, SError vector, record, ERET, power off."""
    prog = assemble("""
.include "kernel.S"
guest_main:
    msr daifclr, #4
    msr daifset, #4
    b guest_halt
""", BASE)
    vm = Vm()
    vcpu = vm.create_vcpu()
    vm.load(prog)
    vcpu.set_reg("pc", prog["_start"])
    vcpu.run()  # boot once: stacks and VBAR
    t = time.perf_counter()
    for _ in range(count):
        vcpu.set_reg("pc", prog["guest_main"])
        vcpu.set_events(VcpuEvents(serror_pending=1))
        ex = vcpu.run()
        assert ex.reason is ExitReason.SYSTEM_EVENT
    assert len(vm.exception_records(prog)) == min(count, 64)
    return (time.perf_counter() - t) / count


def main() -> None:
    program = assemble(LOOP, BASE)
    iterations = 200_000_000 // PER_ITERATION
    bare, sbx = [], []
    for _ in range(5):
        bare.append(bare_unicorn(iterations, program))
        sbx.append(pending_masked(iterations, program))
    b, s = statistics.median(bare), statistics.median(sbx)
    n = iterations * PER_ITERATION
    print(f"bare Unicorn               : {n / b / 1e6:10.1f} M guest instructions/s")
    print(f"sandbox, SError pending+masked: {n / s / 1e6:7.1f} M guest instructions/s")
    print(f"ratio                      : {b / s:.3f}  (goal >= 0.90)")
    print(f"one delivery (set_events, run: unmask, vector, record, ERET, exit): {deliveries(500) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
