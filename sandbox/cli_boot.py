"""`sandbox boot IMAGE`: run a kernel or a bare-metal image on the virt machine, with the
guest's UART on the terminal (stdout) and the sandbox's own messages on stderr.

An arm64 Linux `Image` (or Image.gz) is recognised by its header; anything else is a flat
binary loaded at --load-address (QEMU's -kernel place for non-Linux images). The guest gets
a device tree generated from the machine (or --dtb) in x0. Exit status: 0 when the guest
powers off or resets through PSCI, 1 when it stops any other way (budget, idle, error),
2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .boot import check_dtb, start
from .hyp.smccc import Conduit
from .kvm import ExitReason, SystemEventType
from .memmap import FLAT_LOAD_ADDRESS
from .virt import DEFAULT_RAM_SIZE


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", size: "type", number: "type") -> None:
    b = sub.add_parser("boot", help="boot a Linux Image or a flat binary on the virt machine, UART on stdout")
    b.add_argument("image")
    b.add_argument("--append", default="", help="kernel command line (/chosen/bootargs)")
    b.add_argument("--dtb", help="hand the guest this device tree blob instead of the generated one")
    b.add_argument("--dump-dtb", metavar="FILE", help="write the device tree the guest gets to FILE")
    b.add_argument("--smp", type=int, default=1, help="vCPUs (1-8); all but vCPU 0 wait for PSCI CPU_ON")
    b.add_argument("--mem", type=size, default=DEFAULT_RAM_SIZE, help="guest RAM (default 256M)")
    b.add_argument("--load-address", type=number, default=FLAT_LOAD_ADDRESS,
                   help="where a flat binary goes (default 0x40080000)")
    b.add_argument("--conduit", choices=["hvc", "smc"], default="hvc", help="PSCI conduit (default hvc)")
    b.add_argument("--max-instructions", type=int, default=None, help="instruction budget")
    b.add_argument("--timeout", type=float, default=60.0, help="wall-time budget in seconds")
    b.set_defaults(func=cmd_boot)


def _say(text: str) -> None:
    print(f"\n[sandbox] {text}", file=sys.stderr, flush=True)


def cmd_boot(args: argparse.Namespace) -> int:
    path = Path(args.image)
    conduit = Conduit.SMC if args.conduit == "smc" else Conduit.HVC
    dtb = Path(args.dtb).read_bytes() if args.dtb else None
    if dtb is not None:
        check_dtb(dtb, args.dtb)
    machine = start(path, smp=args.smp, ram_size=args.mem, bootargs=args.append, dtb=dtb,
                    load_address=args.load_address, psci_conduit=conduit, uart_echo=sys.stdout)
    image = machine.image
    if args.dump_dtb:
        Path(args.dump_dtb).write_bytes(machine.dtb())
    _say(f"{image.kind} {path} at {image.base:#x}, entry {image.entry:#x}, device tree at "
         f"{machine.dtb_address:#x}, {args.smp} vCPU(s)")
    # Every vCPU through Vm.run: the secondaries join when the guest powers them on (CPU_ON).
    started = time.monotonic()
    ex = machine.run(max_instructions=args.max_instructions, timeout=args.timeout)
    elapsed = time.monotonic() - started
    per_cpu = ", ".join(str(v.instructions) for v in machine.vm.vcpus)
    who = "" if ex.vcpu is None else f"vCPU {ex.vcpu}: "
    _say(f"{who}{ex.describe()} after {machine.instructions} instructions ({per_cpu}), {elapsed:.2f} s")
    if ex.reason is ExitReason.SYSTEM_EVENT and ex.system_event is not None:
        return 0 if ex.system_event.type in (SystemEventType.SHUTDOWN, SystemEventType.RESET) else 1
    return 1
