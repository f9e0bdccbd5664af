"""What gdb is told when the guest stops: a signal for each exception class and exit reason,
and the exit status of a guest that stopped the machine. Pure functions of an Exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..arch.esr import EC, FSC, ec_of
from ..kvm import ExitReason

if TYPE_CHECKING:
    from ..exits import Exit

# GDB's own signal numbers (gdb/include/gdb/signals.def), not the host's.
GDB_SIGNAL_INT, GDB_SIGNAL_ILL, GDB_SIGNAL_TRAP, GDB_SIGNAL_ABRT = 2, 4, 5, 6
GDB_SIGNAL_BUS, GDB_SIGNAL_SEGV, GDB_SIGNAL_XCPU = 10, 11, 24

_EXCEPTION_SIGNALS = {
    EC.UNKNOWN: GDB_SIGNAL_ILL, EC.ILLEGAL_STATE: GDB_SIGNAL_ILL, EC.SYS64: GDB_SIGNAL_ILL,
    EC.IABT_LOW: GDB_SIGNAL_SEGV, EC.IABT_CUR: GDB_SIGNAL_SEGV, EC.DABT_LOW: GDB_SIGNAL_SEGV,
    EC.DABT_CUR: GDB_SIGNAL_SEGV, EC.PC_ALIGN: GDB_SIGNAL_BUS, EC.SP_ALIGN: GDB_SIGNAL_BUS,
    EC.SERROR: GDB_SIGNAL_BUS,
}
_EXIT_SIGNALS = {
    ExitReason.ARM_SEA: GDB_SIGNAL_BUS, ExitReason.ARM_NISV: GDB_SIGNAL_BUS,
    ExitReason.INTERNAL_ERROR: GDB_SIGNAL_ABRT, ExitReason.INSTRUCTION_BUDGET: GDB_SIGNAL_XCPU,
    ExitReason.TIME_BUDGET: GDB_SIGNAL_XCPU,
}
_ABORTS = (EC.DABT_LOW, EC.DABT_CUR, EC.IABT_LOW, EC.IABT_CUR)


def exception_signal(esr: int) -> int:
    """The signal for an exception the guest took with syndrome `esr` (0 for IRQ/FIQ)."""
    if esr == 0:
        return GDB_SIGNAL_TRAP  # IRQ/FIQ: no syndrome (every A64 synchronous ESR has IL set)
    ec = ec_of(esr)
    if ec in _ABORTS and esr & 0x3F == FSC.SEA:
        return GDB_SIGNAL_BUS  # a synchronous external abort is a bus error, not a bad address
    return _EXCEPTION_SIGNALS.get(ec, GDB_SIGNAL_TRAP)


def exit_signal(exit_: "Exit") -> int:
    """The signal for a vCPU exit nobody handled (MMIO, hypercalls, WFI: SIGTRAP)."""
    return _EXIT_SIGNALS.get(exit_.reason, GDB_SIGNAL_TRAP)
