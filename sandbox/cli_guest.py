"""What the run commands share for real guests: load an ELF or an assembled program, debug
it with gdb (`--gdb PORT`), and turn the last exit into the command's exit status."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .kvm import ExitReason

if TYPE_CHECKING:
    from .asm import Program
    from .exits import Exit
    from .vm import Vm

_ELF_MAGIC = b"\x7fELF"


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == _ELF_MAGIC
    except OSError:
        return False  # the assembler reports the file


def load_guest(vm: "Vm", args: argparse.Namespace, program: "Program | None") -> int | None:
    """Load the guest; return where to start (`--entry SYMBOL`, else the image's own entry),
    or None when the symbol does not exist. Semihosting output goes to the terminal."""
    if vm.semihosting is not None:
        vm.semihosting.echo = sys.stdout
    if program is None:
        from .loaders.elf import load_elf
        image = load_elf(vm, args.file)
        entry = image.symbols.get(args.entry) if args.entry else image.entry
        print(f"loaded {args.file}: ELF [{image.base:#x}, {image.end:#x}), entry "
              f"{'?' if entry is None else vm.symbols.annotate(entry)}")
        return entry
    vm.load(program)
    entry = program.symbols.get(args.entry, None) if args.entry else program.symbols.get("_start", program.base)
    if entry is not None:
        print(f"loaded {args.file}: {len(program.code):#x} bytes at {program.base:#x}, entry {entry:#x}")
    return entry


def _complete_mmio(exit_: "Exit") -> bool:
    """The CLI is the VMM: an MMIO exit to nothing completes (reads return zero)."""
    return exit_.reason is ExitReason.MMIO


def gdb_session(vm: "Vm", args: argparse.Namespace) -> "tuple[Exit | None, bool]":
    """With `--gdb PORT`: wait for gdb and debug. Returns (the last exit, whether the command
    runs the guest on): on after gdb detaches, off when the guest stopped or gdb killed it."""
    if getattr(args, "gdb", None) is None:
        return None, True
    from .gdb import serve
    end = serve(vm, args.gdb, announce=sys.stderr, handle_exit=_complete_mmio)
    print(f"gdb session {end.how}")
    if end.exit is not None:
        print(f"exit: {end.exit.describe()} {vm.symbols.annotate(end.exit.pc)}")
    return end.exit, end.how == "detached"


def run_status(exit_: "Exit | None") -> int:
    """The command's status: the guest's own with semihosting SYS_EXIT (as QEMU exits), 0
    for a power-off (PSCI SYSTEM_OFF), 1 for anything else."""
    status = exit_.machine_status() if exit_ is not None else None
    return 1 if status is None else status
