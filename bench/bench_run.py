"""Guest instructions per second on a tight loop: bare Unicorn vs the sandbox with nothing
pending, measured in the same run, reported as a ratio (goal >= 0.95).

    python bench/bench_run.py [--instructions N] [--repeat R]

Not part of the test suite: speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from sandbox import ExitReason, Vm, assemble

BASE = 0x40000000
LOOP = """
_start:
    mov x0, #0
loop:
    add x0, x0, #1
    add x1, x1, #2
    sub x2, x2, #1
    cmp x0, x3
    b.ne loop
done:
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16
    hvc #0
"""
PER_ITERATION = 5


def bare_unicorn(iterations: int, program) -> float:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(BASE, 0x10000)
    uc.mem_write(BASE, program.code)
    uc.reg_write(A.UC_ARM64_REG_X3, iterations)
    t = time.perf_counter()
    uc.emu_start(BASE, program["done"])
    return time.perf_counter() - t


def sandbox(iterations: int, program) -> float:
    vm = Vm(ram_size=0x100000)
    vcpu = vm.create_vcpu()
    vm.load(program)
    vcpu.set_reg("pc", program["_start"])
    vcpu.set_reg("x3", iterations)
    t = time.perf_counter()
    ex = vcpu.run(timeout=None)
    dt = time.perf_counter() - t
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instructions", type=int, default=200_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    program = assemble(LOOP, BASE)
    iterations = args.instructions // PER_ITERATION
    bare, sbx = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine state
        bare.append(bare_unicorn(iterations, program))
        sbx.append(sandbox(iterations, program))
    b, s = statistics.median(bare), statistics.median(sbx)
    n = iterations * PER_ITERATION
    print(f"bare Unicorn : {n / b / 1e6:10.1f} M guest instructions/s (median of {args.repeat})")
    print(f"sandbox      : {n / s / 1e6:10.1f} M guest instructions/s")
    print(f"ratio        : {b / s:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
