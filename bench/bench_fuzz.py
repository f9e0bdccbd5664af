"""Sweep executions per second over a ~50-instruction exception handler: each execution
restores the machine, pends an SError at one boundary, runs to the scenario's end (the
pending SError is taken on the handler's ERET, its own handler runs, the guest powers off)
and checks every invariant. Goal: >= 20,000 executions/s on one core.

Reference in the same run: bare Unicorn doing the same guest work per execution (restore a
CPU context, run the same number of instructions, no hooks, no checks), so the ratio shows
what the sandbox's exactness costs.

    python bench/bench_fuzz.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from sandbox.fuzz.fastpath import FastExecutor
from sandbox.fuzz.general import run_general
from sandbox.fuzz.sweep import sweep_points
from sandbox.fuzz.target import Target

SCENARIO = Path(__file__).resolve().parent / "fuzz_handler.toml"


def sandbox_sweep(fx: FastExecutor, plans: list, rounds: int) -> float:
    """Seconds per execution (median over `rounds` passes over every point)."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for p in plans:
            outcome = fx.execute(p)
        times.append((time.perf_counter() - t) / len(plans))
        assert outcome.ok, outcome.summary()
    return statistics.median(times)


def bare_unicorn(target: Target, instructions: int, count: int) -> float:
    """Seconds per (context restore + emu_start of `instructions` instructions) on a bare
    Unicorn holding the same image, stopped by the same HVC."""
    prog = target.program
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    uc.mem_map(0x40000000, 64 << 20)
    uc.mem_write(prog.base, prog.code)
    uc.hook_add(UC_HOOK_INTR, lambda u, i, d: u.emu_stop())
    loop = prog.base + len(prog.code)
    uc.mem_write(loop, bytes.fromhex("21040091") * 4 + bytes.fromhex("fdffff17"))  # add x1,x1,#1 x4; b .-16
    uc.reg_write(A.UC_ARM64_REG_PC, loop)
    ctx = uc.context_save()
    t = time.perf_counter()
    for _ in range(count):
        uc.context_restore(ctx)
        uc.emu_start(loop, 0, count=instructions)
    return (time.perf_counter() - t) / count


def main() -> None:
    target = Target(SCENARIO)
    points = sweep_points(target)
    plans = [p.plan for p in points]
    fx = FastExecutor(target)
    fx.advance_to(points[0].boundary.count)
    work = [fx.execute(p).instructions - fx.start for p in plans]
    fast = sandbox_sweep(fx, plans, 7)
    general = statistics.median(_time(lambda: run_general(target, plans[len(plans) // 2])) for _ in range(5))
    bare = bare_unicorn(target, int(statistics.mean(work)), 20_000)
    print(f"sweep points (handler boundaries) : {len(plans)}, {statistics.mean(work):.0f} guest instructions "
          f"per execution")
    print(f"sandbox fast path                 : {1 / fast:10,.0f} executions/s  ({fast * 1e6:.1f} us each; goal >= 20,000)")
    print(f"sandbox general path (reference)  : {1 / general:10,.0f} executions/s")
    print(f"bare Unicorn, same work, no checks: {1 / bare:10,.0f} executions/s")
    print(f"ratio fast path / bare Unicorn    : {bare / fast:.3f}")


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
