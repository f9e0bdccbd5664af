"""What deterministic time and the ID-register view cost, as ratios measured in one run.

    python bench/bench_timer.py [--iterations N] [--repeat R]

1. A tight ALU loop: bare Unicorn, a plain Vm (no timer: uncounted), and a virt Vm (the
   generic timer: every run counted, the MRS/MSR intercept installed).
2. The same loop with an `mrs x, sp_el0` in it (a Linux kernel's most frequent MRS): what
   the intercept's callback adds per MRS it lets through, against an empty interrupt hook.
3. CNTVCT_EL0 reads: the emulated counter per read.
4. ID_AA64PFR0_EL1 reads: Unicorn's own value (no TID3) vs the sandbox's view (TID3 trap).
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from sandbox import ExitReason, Vm, assemble
from sandbox.virt import create_vm

BASE = 0x40000000


def loop(body: str) -> str:
    return f"""
_start:
    mov x0, #0
loop:
{body}
    add x0, x0, #1
    cmp x0, x3
    b.ne loop
done:
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16
    hvc #0
"""


def bare(program, iterations: int, empty_intr_hook: bool = False) -> float:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    uc.mem_map(BASE, 0x10000)
    uc.mem_write(BASE, program.code)
    uc.reg_write(A.UC_ARM64_REG_X3, iterations)
    uc.reg_write(A.UC_ARM64_REG_PSTATE, 0x3C5)
    if empty_intr_hook:
        uc.hook_add(UC_HOOK_INTR, lambda *a: None)
    t = time.perf_counter()
    uc.emu_start(BASE, program["done"])
    return time.perf_counter() - t


def sandboxed(program, iterations: int, virt: bool, ras: bool = True) -> float:
    if virt:
        vm = create_vm(ram_size=16 << 20, ras=ras)
        vcpu = vm.vcpus[0]
    else:
        vm = Vm(ram_size=16 << 20, ras=ras)
        vcpu = vm.create_vcpu()
    vm.load(program)
    vcpu.set_reg("pc", program["_start"])
    vcpu.set_reg("x3", iterations)
    t = time.perf_counter()
    ex = vcpu.run(timeout=None)
    dt = time.perf_counter() - t
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    return dt


def median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=4_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    n, r = a.iterations, a.repeat

    alu = assemble(loop("    add x1, x1, #2\n    eor x2, x2, x1"), BASE)
    t_bare = median(lambda: bare(alu, n), r)
    t_plain = median(lambda: sandboxed(alu, n, virt=False), r)
    t_virt = median(lambda: sandboxed(alu, n, virt=True), r)
    print("1. tight loop (5 instructions/iteration)")
    print(f"   bare Unicorn            {5 * n / t_bare / 1e6:8.1f} M instr/s")
    print(f"   plain Vm (no timer)     {5 * n / t_plain / 1e6:8.1f} M instr/s  ratio {t_bare / t_plain:.3f}")
    print(f"   virt Vm (timer, counted){5 * n / t_virt / 1e6:8.1f} M instr/s  ratio {t_bare / t_virt:.3f}")

    mrs = assemble(loop("    mrs x1, sp_el0"), BASE)
    m = n // 4
    t_bare_mrs = median(lambda: bare(mrs, m), r)
    t_hook = median(lambda: bare(alu, m, empty_intr_hook=True), r)
    t_virt_mrs = median(lambda: sandboxed(mrs, m, virt=True), r)
    t_virt_alu = median(lambda: sandboxed(alu, m, virt=True), r)
    per_mrs = ((t_virt_mrs - t_virt_alu) - (t_bare_mrs - bare(alu, m))) / m * 1e6
    print("2. loop with `mrs x1, sp_el0` (the intercept sees it, lets it through)")
    print(f"   bare Unicorn {t_bare_mrs:.3f} s, virt Vm {t_virt_mrs:.3f} s for {m} MRS; "
          f"intercept cost ~{per_mrs:.2f} us per MRS")
    del t_hook

    cnt = assemble(loop("    mrs x1, cntvct_el0"), BASE)
    t_cnt = median(lambda: sandboxed(cnt, m, virt=True), r)
    print("3. loop with `mrs x1, cntvct_el0` (emulated counter)")
    print(f"   {(t_cnt - t_virt_alu) / m * 1e6:.2f} us per counter read "
          f"(bare Unicorn's host-time read: {(t_bare_mrs - bare(alu, m)) / m * 1e6:.3f} us)")

    k = 20_000
    ids = assemble(loop("    mrs x1, id_aa64pfr0_el1"), BASE)
    t_native = median(lambda: sandboxed(ids, k, virt=False, ras=False), r)  # view == Unicorn: no trap
    t_trap = median(lambda: sandboxed(ids, k, virt=False, ras=True), r)  # RAS shown: TID3 trap
    print("4. ID_AA64PFR0_EL1 reads")
    print(f"   Unicorn's value (no TID3) {t_native / k * 1e6:.2f} us/iteration, "
          f"the sandbox's view (TID3 trap) {t_trap / k * 1e6:.2f} us/iteration: "
          f"{(t_trap - t_native) / k * 1e6:.1f} us per trapped read")


if __name__ == "__main__":
    main()
