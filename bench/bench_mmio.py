"""MMIO round trips per second, as ratios to an empty Unicorn interrupt hook measured in the
same run (issue goal >= 0.25 for a Python device model):

- device: a guest load from a Python device model registered on the Vm's MMIO bus (the
  sandbox's device path: Unicorn's mmio_map callback into the model), back to the guest;
- exit: a guest load from an address with nothing behind it under the "exit" policy:
  KVM_EXIT_MMIO to the host, the host supplies the data, run() again (KVM's userspace path);
- reference: bare Unicorn, a guest loop of `svc #0` with an empty Python UC_HOOK_INTR.

    python bench/bench_mmio.py [--count N]
"""

from __future__ import annotations

import argparse
import time

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from sandbox import ExitReason, Vm, assemble

BASE = 0x40000000
DEVICE = 0x0A000000
NOTHING = 0x0B000000

LOOP = """
_start:
    mov x0, #0
loop:
    ldr w2, [x1]                // 32-bit: one device access (see MmioDevice)
    add x0, x0, #1
    cmp x0, x3
    b.ne loop
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16
    hvc #0
"""
SVC_LOOP = """
_start:
    mov x0, #0
loop:
    svc #0
    add x0, x0, #1
    cmp x0, x3
    b.ne loop
done:
    nop
"""


class Counter:
    """The smallest useful device: a register that counts its reads."""

    def __init__(self) -> None:
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        self.value += 1
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value


def empty_interrupt_hook(count: int) -> float:
    prog = assemble(SVC_LOOP, BASE)
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(BASE, 0x10000)
    uc.mem_write(BASE, prog.code)
    uc.reg_write(A.UC_ARM64_REG_X3, count)
    uc.hook_add(UC_HOOK_INTR, lambda uc, intno, ud: None)
    t = time.perf_counter()
    uc.emu_start(BASE, prog["done"])
    dt = time.perf_counter() - t
    assert uc.reg_read(A.UC_ARM64_REG_X0) == count
    return count / dt


def device_reads(count: int) -> float:
    prog = assemble(LOOP, BASE)
    vm = Vm(ram_size=0x100000)
    dev = Counter()
    vm.add_device(DEVICE, 0x1000, dev, "counter")
    vcpu = vm.create_vcpu()
    vm.load(prog)
    vcpu.set_regs({"pc": prog["_start"], "x1": DEVICE, "x3": count})
    t = time.perf_counter()
    ex = vcpu.run(timeout=None)
    dt = time.perf_counter() - t
    assert ex.reason is ExitReason.SYSTEM_EVENT and dev.value == count, ex.describe()
    return count / dt


def exit_round_trips(count: int) -> float:
    prog = assemble(LOOP, BASE)
    vm = Vm(ram_size=0x100000, unbacked="exit")
    vcpu = vm.create_vcpu()
    vm.load(prog)
    vcpu.set_regs({"pc": prog["_start"], "x1": NOTHING, "x3": count})
    t = time.perf_counter()
    exits = 0
    while True:
        ex = vcpu.run(timeout=None)
        if ex.reason is not ExitReason.MMIO:
            break
        ex.mmio.data[:4] = exits.to_bytes(4, "little")
        exits += 1
    dt = time.perf_counter() - t
    assert ex.reason is ExitReason.SYSTEM_EVENT and exits == count, ex.describe()
    return count / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    args = ap.parse_args()
    ref = empty_interrupt_hook(args.count)
    dev = device_reads(args.count)
    ext = exit_round_trips(args.count // 10)
    print(f"empty interrupt hook (bare Unicorn): {ref:12,.0f} /s")
    print(f"device model read round trips      : {dev:12,.0f} /s   ratio {dev / ref:.3f} (goal >= 0.25)")
    print(f"KVM_EXIT_MMIO round trips          : {ext:12,.0f} /s   ratio {ext / ref:.3f}")


if __name__ == "__main__":
    main()
