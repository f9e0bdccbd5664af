"""Boot figures of Debian's arm64 kernel on the virt machine: instructions retired and wall
time until given console lines appear, with and without a virtual SError pended before boot.

    python bench/bench_linux_boot.py [--full]

The kernel comes from tests/debian_kernel.py (apt; cached). Each milestone is found by
watching the UART: the run stops at the instruction boundary right after the store that
completes the line (icount.stop_before_next), so the counts are exact, not slice-rounded.
--full also boots without injection to the end (the kernel finds no root filesystem: that
is as far as a machine without block devices goes), which takes a few minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from debian_kernel import fetch  # noqa: E402

from sandbox import icount  # noqa: E402
from sandbox.boot import boot  # noqa: E402
from sandbox.events import VcpuEvents  # noqa: E402
from sandbox.loaders.image import load_linux_image  # noqa: E402
from sandbox.memmap import UART_BASE  # noqa: E402
from sandbox.virt import create_vm  # noqa: E402


class Watch:
    """A UART echo stream that notes the instruction count and the time at which each
    console line holding one of `patterns` is complete (the store of its newline)."""

    def __init__(self) -> None:
        self.text = ""
        self.patterns: list[str] = []
        self.hits: dict[str, tuple[int, float]] = {}
        self.vcpu = None
        self.start = 0.0

    def write(self, s: str) -> None:
        self.text += s
        if s != "\n":
            return
        line = self.text[self.text.rfind("\n", 0, len(self.text) - 1) + 1:]
        for pattern in self.patterns:
            if pattern not in self.hits and pattern in line:
                v = self.vcpu
                self.hits[pattern] = (v.instructions + (icount.started_instructions(v.uc) or 0),
                                      time.perf_counter() - self.start)

    def flush(self) -> None:
        pass


def milestones(kernel: Path, patterns: list[str], serror: bool, budget: float) -> list[tuple[str, int, float]]:
    watch = Watch()
    watch.patterns = patterns
    vm = create_vm(uart_echo=watch)  # type: ignore[arg-type]
    boot(vm, load_linux_image(vm, kernel), bootargs=f"earlycon=pl011,{UART_BASE:#x}")
    vcpu = watch.vcpu = vm.vcpus[0]
    if serror:
        vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=0x11))
    watch.start = start = time.perf_counter()
    while len(watch.hits) < len(patterns):
        if time.perf_counter() - start > budget:
            raise SystemExit(f"not reached in {budget} s: {[p for p in patterns if p not in watch.hits]}")
        ex = vcpu.run(max_instructions=1_000_000, timeout=budget)
        if ex.reason.name != "INSTRUCTION_BUDGET" and len(watch.hits) < len(patterns):
            raise SystemExit(f"stopped early: {ex.describe()}")
    return [(p, *watch.hits[p]) for p in patterns]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also boot to the end (minutes)")
    args = ap.parse_args()
    kernel = fetch()
    print(f"kernel: {kernel}")
    runs = [
        ("SError pended before boot", True, ["Linux version", "SError Interrupt on CPU0"]),
        ("no injection", False, ["Linux version", "Root IRQ handler: gic_handle_irq",
                                 "sched_clock: 57 bits", "clocksource: Switched to clocksource arch_sys_counter"]),
    ]
    if args.full:
        runs.append(("no injection, to the end", False, ["VFS: Unable to mount root fs"]))
    for title, serror, patterns in runs:
        print(f"\n{title}:")
        for pattern, retired, seconds in milestones(kernel, patterns, serror, budget=1200):
            print(f"  {pattern!r:60} {retired:>13,} instructions {seconds:8.2f} s")


if __name__ == "__main__":
    main()
