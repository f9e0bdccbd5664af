"""Which signal gdb is shown for each guest exception and vCPU exit (pure functions)."""

from sandbox.arch import esr as E
from sandbox.exits import Exit, SemihostingExit, SystemEventExit
from sandbox.gdb.stops import (GDB_SIGNAL_ABRT, GDB_SIGNAL_BUS, GDB_SIGNAL_ILL, GDB_SIGNAL_SEGV, GDB_SIGNAL_TRAP,
                               exception_signal, exit_signal)
from sandbox.kvm import ExitReason, InternalErrorSuberror, SystemEventType
from sandbox.exits import InternalErrorExit


def test_exception_classes_map_to_the_signals_a_process_would_get():
    assert exception_signal(E.syn_uncategorized()) == GDB_SIGNAL_ILL
    assert exception_signal(E.syn_data_abort(True, E.FSC.SEA)) == GDB_SIGNAL_BUS  # external abort
    assert exception_signal(E.syn_data_abort(True, 0x07)) == GDB_SIGNAL_SEGV  # translation fault, level 3
    assert exception_signal(E.syn_instruction_abort(False, 0x0F)) == GDB_SIGNAL_SEGV  # permission fault
    assert exception_signal(E.syn_serror(0)) == GDB_SIGNAL_BUS
    assert exception_signal(E.syn_svc(1)) == GDB_SIGNAL_TRAP and exception_signal(0) == GDB_SIGNAL_TRAP


def test_exits_map_to_signals_and_machine_stops_to_a_status():
    internal = Exit(ExitReason.INTERNAL_ERROR, 0, internal=InternalErrorExit(InternalErrorSuberror.HOST_ERROR, ""))
    assert exit_signal(internal) == GDB_SIGNAL_ABRT
    assert exit_signal(Exit(ExitReason.ARM_SEA, 0)) == GDB_SIGNAL_BUS
    assert exit_signal(Exit(ExitReason.MMIO, 0)) == GDB_SIGNAL_TRAP
    off = Exit(ExitReason.SYSTEM_EVENT, 0, system_event=SystemEventExit(SystemEventType.SHUTDOWN))
    reset = Exit(ExitReason.SYSTEM_EVENT, 0, system_event=SystemEventExit(SystemEventType.RESET))
    semihosted = Exit(ExitReason.SYSTEM_EVENT, 0, system_event=SystemEventExit(SystemEventType.SHUTDOWN),
                      semihosting=SemihostingExit(0x20026, 300, 300))
    assert (off.machine_status(), reset.machine_status(), semihosted.machine_status()) == (0, 1, 300 & 0xFF)
    assert internal.machine_status() is None
