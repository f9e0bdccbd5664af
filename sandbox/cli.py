"""The `sandbox` command: run scenarios and guest assembly, list scenarios, assemble, disassemble.

Exit codes: 0 the guest ran and stopped cleanly (PSCI SYSTEM_OFF), 1 it stopped any other
way (budget, exception storm, internal error), 2 bad input (usage, assembly errors).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .asm import AsmError, assemble_file
from .disasm import disassemble, disassemble_one
from .cli_guest import gdb_session, is_elf, load_guest, run_status
from .kvm import ExitReason
from .trace import finish_trace, start_trace
from .vm import RAM_BASE, Vm


def _int(text: str) -> int:
    return int(text, 0)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib").rstrip("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t, 0)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.file.endswith(".toml"):
        from .scenario.cli import run_scenario
        return run_scenario(args)
    prog = None if is_elf(args.file) else assemble_file(args.file, args.base)
    vm = Vm(ram_size=args.ram, ram_base=args.ram_base, unbacked=args.unbacked, semihosting=args.semihosting,
            uart_echo=sys.stdout)
    vcpu = vm.create_vcpu()
    for _ in range(1, args.vcpus):
        vm.create_vcpu()  # powered off until the guest's PSCI CPU_ON
    run = vm.run if args.vcpus > 1 else vcpu.run
    entry = load_guest(vm, args, prog)  # an ELF (sandbox.loaders.elf) or the assembled program
    if entry is None:
        print(f"{args.file}: no symbol {args.entry!r} to start at", file=sys.stderr)
        return 2
    vcpu.set_reg("pc", entry)
    recorder = start_trace(args.trace, source=args.file) if args.trace or args.timeline else None
    if recorder is not None:
        recorder.attach(vm)
    ex, run_on = gdb_session(vm, args)  # with --gdb: the debugging session comes first
    for _ in range(args.max_exits if run_on else 0):
        ex = run(max_instructions=args.max_instructions, timeout=args.timeout)
        on = f" (vCPU {ex.vcpu})" if args.vcpus > 1 else ""
        print(f"exit: {ex.describe()}{on} {vm.symbols.annotate(ex.pc)}")
        if ex.reason is ExitReason.MMIO and ex.mmio and not ex.mmio.is_write:
            continue  # reads complete with zero, as a VMM without a device would
        if ex.reason is ExitReason.MMIO:
            continue
        break
    status = run_status(ex)
    if recorder is not None:
        finish_trace(recorder, args.timeline)
    if prog is not None and "exc_ring" in prog.symbols:
        records = vm.exception_records(prog)
        print(f"exception records ({len(records)}):")
        for r in records:
            # SVC/HVC/SMC report the next instruction in ELR; show the one that trapped.
            at = r.elr - 4 if r.ec in (0x15, 0x16, 0x17) else r.elr
            try:
                insn = disassemble_one(vm.read_memory(at, 4), at)
            except OSError:
                insn = "(not in RAM)"
            print(f"  {r.describe()}\n      {vm.symbols.annotate(at)}: {insn}")
    return status


def _cmd_list(args: argparse.Namespace) -> int:
    from .scenario.cli import list_scenarios
    return list_scenarios(args)


def _cmd_asm(args: argparse.Namespace) -> int:
    prog = assemble_file(args.file, args.base)
    if args.output:
        Path(args.output).write_bytes(prog.code)
        print(f"wrote {len(prog.code)} bytes to {args.output}")
    else:
        for addr, text in disassemble(prog.code[: args.limit * 4], prog.base):
            word = int.from_bytes(prog.code[addr - prog.base: addr - prog.base + 4], "little")
            print(f"{addr:#012x}: {word:08x}  {text}")
    if args.symbols:
        for name, value in sorted(prog.symbols.items(), key=lambda kv: kv[1]):
            print(f"{value:#012x} {name}")
    return 0


def _cmd_disasm(args: argparse.Namespace) -> int:
    if args.hex:
        data = bytes.fromhex(args.hex.replace(" ", ""))
    else:
        data = Path(args.file).read_bytes()
    for addr, text in disassemble(data, args.base):
        print(f"{addr:#012x}: {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandbox", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario (FILE.toml: PASS/FAIL), a .S file (assembled) or an AArch64 ELF "
                                   "(exits and exception records)")
    r.add_argument("file")
    r.add_argument("--base", type=_int, default=RAM_BASE, help="load address of a .S file (default 0x40000000)")
    r.add_argument("--entry", help="symbol to start at (default _start, else the load address)")
    r.add_argument("--ram", type=_size, default=64 << 20, help="guest RAM size (default 64M)")
    r.add_argument("--ram-base", type=_int, default=RAM_BASE)
    r.add_argument("--unbacked", choices=["abort", "exit"], default="abort",
                   help="accesses to nothing: external abort in the guest (QEMU virt) or KVM_EXIT_MMIO")
    r.add_argument("--max-instructions", type=int, default=None)
    r.add_argument("--timeout", type=float, default=10.0, help="wall-time budget in seconds")
    r.add_argument("--max-exits", type=int, default=64)
    r.add_argument("--semihosting", action="store_true", help="serve Arm semihosting calls (HLT #0xF000)")
    r.add_argument("--gdb", type=int, metavar="PORT",
                   help="wait for gdb on 127.0.0.1:PORT (0: any free port) and let it drive the guest; "
                        "the budgets apply once gdb detaches")
    r.add_argument("--trace", metavar="FILE.jsonl", help="write every exit, exception, ERET, injection... as JSON Lines")
    r.add_argument("--timeline", metavar="FILE.html", help="draw the run as a self-contained HTML (or .svg) picture")
    r.add_argument("--json", action="store_true", help="scenario: print the result as JSON")
    r.add_argument("--variant", action="append", help="scenario: run only this variant (repeatable)")
    r.add_argument("-v", "--verbose", action="store_true", help="scenario: show what was observed even on PASS")
    r.add_argument("--vcpus", type=int, default=1, choices=range(1, 9), metavar="N",
                   help="vCPUs (MPIDR Aff0 = index, 1-8); secondaries start powered off and PSCI "
                        "CPU_ON starts them; Vm.run takes turns of a fixed instruction quantum")
    r.set_defaults(func=_cmd_run)
    ls = sub.add_parser("list", help="list the scenarios (scenarios/*.toml) with their purpose")
    ls.add_argument("dir", nargs="?", help="folder to list (default: scenarios/)")
    ls.add_argument("--steps", action="store_true", help="list the step actions and triggers instead")
    ls.set_defaults(func=_cmd_list)
    a = sub.add_parser("asm", help="assemble a .S file; print a listing or write the image")
    a.add_argument("file")
    a.add_argument("--base", type=_int, default=RAM_BASE)
    a.add_argument("-o", "--output")
    a.add_argument("--symbols", action="store_true")
    a.add_argument("--limit", type=int, default=1 << 30, help="listing: at most this many instructions")
    a.set_defaults(func=_cmd_asm)
    from .fuzz.cli import add_commands as add_fuzz_commands
    add_fuzz_commands(sub)  # sweep, fuzz (sandbox.fuzz.cli)
    d = sub.add_parser("disasm", help="disassemble a flat binary or hex bytes")
    d.add_argument("file", nargs="?")
    d.add_argument("--hex")
    d.add_argument("--base", type=_int, default=0)
    d.set_defaults(func=_cmd_disasm)
    from .cli_boot import add_parser as add_boot
    add_boot(sub, _size, _int)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "disasm" and not (args.file or args.hex):
        parser.error("disasm needs a FILE or --hex")
    try:
        return args.func(args)
    except AsmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
