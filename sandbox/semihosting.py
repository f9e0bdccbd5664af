"""Arm semihosting for bare-metal guests ("Semihosting for AArch32 and AArch64", release 2.0).

A guest asks the host for I/O with `HLT #0xF000`: the operation number in W0, a parameter
(usually a pointer to a block of 64-bit fields) in X1, the result in X0. It is off by default,
as in QEMU (`-semihosting`): then HLT is UNDEFINED, as on hardware. Enable it with
`Vm(semihosting=True)`. As in QEMU, a call from EL0 is UNDEFINED unless `allow_el0` is set
(QEMU's `-semihosting-config userspace=on`).

What the host sees:
- Console output (SYS_WRITEC, SYS_WRITE0, SYS_WRITE to a ":tt" handle) is captured in
  `vm.semihosting.output` and, when `echo` is a stream, written to it as well.
- SYS_EXIT / SYS_EXIT_EXTENDED end the run with a SYSTEM_EVENT exit, the same exit PSCI
  SYSTEM_OFF gives (KVM has no word for semihosting; a VMM loop that knows only KVM's
  exits stops cleanly): type SHUTDOWN for ADP_Stopped_ApplicationExit, CRASH for any other
  reason the guest reports, and `exit.semihosting` carries the reason, the subcode and the
  exit status (the subcode for ApplicationExit, 1 otherwise, as QEMU's process status).
- Time is deterministic: one tick per retired instruction (SYS_TICKFREQ says 1 GHz), so a
  run replays with the same clock. Unicorn counts instructions only in runs given an
  instruction budget (`run(max_instructions=...)`); in a run without one the clock is
  unknown and SYS_CLOCK / SYS_ELAPSED return -1, the spec's failure value.
- The guest gets no host files and no host shell: only the special names ":tt" (console)
  and ":semihosting-features" open; SYS_OPEN of anything else, SYS_REMOVE, SYS_RENAME,
  SYS_SYSTEM and SYS_TMPNAM fail with errno EACCES. Unknown operations return -1 with
  errno ENOSYS (QEMU aborts the whole emulator instead; a sandbox never lets a guest do that).
- A pointer the guest passes that does not reach RAM makes the call return -1 with errno
  EFAULT.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, TextIO

from unicorn import arm64_const as A

from .arch import pstate as ps
from .exits import Exit, SemihostingExit, SystemEventExit
from .guest_memory import read_cstring, read_u64s, read_virtual, write_virtual
from .kvm import ExitReason, SystemEventType

if TYPE_CHECKING:
    from .vcpu import Vcpu

HLT_SEMIHOSTING = 0xF000  # A64 `HLT #0xF000` (spec 2.0, "Semihosting Trap Instructions")


class Op(IntEnum):
    """Semihosting operation numbers (spec 2.0, "Semihosting operations")."""

    SYS_OPEN = 0x01
    SYS_CLOSE = 0x02
    SYS_WRITEC = 0x03
    SYS_WRITE0 = 0x04
    SYS_WRITE = 0x05
    SYS_READ = 0x06
    SYS_READC = 0x07
    SYS_ISERROR = 0x08
    SYS_ISTTY = 0x09
    SYS_SEEK = 0x0A
    SYS_FLEN = 0x0C
    SYS_TMPNAM = 0x0D
    SYS_REMOVE = 0x0E
    SYS_RENAME = 0x0F
    SYS_CLOCK = 0x10
    SYS_TIME = 0x11
    SYS_SYSTEM = 0x12
    SYS_ERRNO = 0x13
    SYS_GET_CMDLINE = 0x15
    SYS_HEAPINFO = 0x16
    SYS_EXIT = 0x18  # formerly angel_SWIreason_ReportException
    SYS_EXIT_EXTENDED = 0x20
    SYS_ELAPSED = 0x30
    SYS_TICKFREQ = 0x31


class StopReason(IntEnum):
    """SYS_EXIT reason codes (spec 2.0, SYS_EXIT: hardware vector and software reason codes)."""

    ADP_Stopped_BranchThroughZero = 0x20000
    ADP_Stopped_UndefinedInstr = 0x20001
    ADP_Stopped_SoftwareInterrupt = 0x20002
    ADP_Stopped_PrefetchAbort = 0x20003
    ADP_Stopped_DataAbort = 0x20004
    ADP_Stopped_AddressException = 0x20005
    ADP_Stopped_IRQ = 0x20006
    ADP_Stopped_FIQ = 0x20007
    ADP_Stopped_BreakPoint = 0x20020
    ADP_Stopped_WatchPoint = 0x20021
    ADP_Stopped_StepComplete = 0x20022
    ADP_Stopped_RunTimeErrorUnknown = 0x20023
    ADP_Stopped_InternalError = 0x20024
    ADP_Stopped_UserInterruption = 0x20025
    ADP_Stopped_ApplicationExit = 0x20026
    ADP_Stopped_StackOverflow = 0x20027
    ADP_Stopped_DivisionByZero = 0x20028
    ADP_Stopped_OSSpecific = 0x20029


# ":semihosting-features": magic "SHFB", then feature byte 0 (spec 2.0, "Semihosting
# extensions"): bit 0 SH_EXT_EXIT_EXTENDED, bit 1 SH_EXT_STDOUT_STDERR.
SH_EXT_EXIT_EXTENDED = 1 << 0
SH_EXT_STDOUT_STDERR = 1 << 1
FEATURES = b"SHFB" + bytes([SH_EXT_EXIT_EXTENDED | SH_EXT_STDOUT_STDERR])

TICKS_PER_SECOND = 1_000_000_000  # the semihosting clock: one tick per retired instruction
_CENTISECOND = TICKS_PER_SECOND // 100
_MAX_STRING = 1 << 20  # longest string a call may pass (a runaway pointer ends here)
_MINUS_ONE = (1 << 64) - 1

# What a ":tt" handle is, by fopen mode (SYS_OPEN "Value of mode": 0-3 r, 4-7 w, 8-11 a;
# SH_EXT_STDOUT_STDERR: write access opens stdout, append access stderr).
_CONSOLE_IN, _STDOUT, _STDERR, _FEATURES = "stdin", "stdout", "stderr", "features"


class _Failed(Exception):
    """A call that fails: X0 gets `result`, SYS_ERRNO reports `code`."""

    def __init__(self, code: int, result: int = -1):
        self.code, self.result = code, result


@dataclass
class _Handle:
    kind: str
    position: int = 0


class Semihosting:
    """The semihosting implementation of one Vm (its console, handles and errno)."""

    def __init__(self, *, echo: TextIO | None = None, cmdline: str = "", allow_el0: bool = False,
                 heapinfo: tuple[int, int, int, int] = (0, 0, 0, 0), epoch: int = 0):
        """`cmdline` is what SYS_GET_CMDLINE returns; `heapinfo` is (heap_base, heap_limit,
        stack_base, stack_limit) for SYS_HEAPINFO (zeros: the guest uses its own layout);
        `epoch` is SYS_TIME's value at instruction 0."""
        self.output = bytearray()
        self.input = bytearray()  # console input the host feeds for SYS_READC / SYS_READ
        self.echo = echo
        self.cmdline = cmdline
        self.allow_el0 = allow_el0
        self.heapinfo = heapinfo
        self.epoch = epoch
        self.errno = 0
        self._handles: dict[int, _Handle] = {}
        self._next_handle = 1  # SYS_OPEN returns a nonzero handle on success

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def feed(self, data: bytes) -> None:
        """Queue console input for the guest."""
        self.input += data

    def claims(self, imm16: int, pstate: int) -> bool:
        """Whether an HLT with this immediate, executed at `pstate`, is a semihosting call."""
        return imm16 == HLT_SEMIHOSTING and (ps.el(pstate) != 0 or self.allow_el0)

    # -- the call -------------------------------------------------------------------------

    def call(self, vcpu: "Vcpu", pc: int) -> Exit | None:
        """Perform the call of the HLT at `pc`: X0 gets the result and the vCPU continues
        after the HLT, or the guest exits (SYS_EXIT) and the returned Exit ends the run."""
        uc = vcpu.uc
        op, arg = uc.reg_read_batch([A.UC_ARM64_REG_X0, A.UC_ARM64_REG_X1])
        op &= 0xFFFFFFFF  # W0: the top half of X0 is not part of the call (spec 2.0)
        handler = _HANDLERS.get(op)
        writes = [(A.UC_ARM64_REG_PC, pc + 4)]
        try:
            if handler is None:
                raise _Failed(errno.ENOSYS)
            result = handler(self, vcpu, arg)
        except _Failed as failed:
            self.errno = failed.code
            result = failed.result
            if op == Op.SYS_ELAPSED:
                writes.append((A.UC_ARM64_REG_X1, _MINUS_ONE))  # "PARAMETER REGISTER contains -1"
        except OSError:  # a pointer that does not reach RAM
            self.errno = errno.EFAULT
            result = -1
        if isinstance(result, Exit):
            result.pc = pc
            uc.reg_write_batch(writes)
            return result
        if result is not None:
            writes.append((A.UC_ARM64_REG_X0, result & _MINUS_ONE))
        uc.reg_write_batch(writes)
        return None

    # -- console ----------------------------------------------------------------------------

    def _print(self, data: bytes) -> None:
        self.output += data
        if self.echo is not None:
            self.echo.write(data.decode(errors="replace"))
            self.echo.flush()

    def _writec(self, vcpu: "Vcpu", arg: int) -> None:
        self._print(read_virtual(vcpu, arg, 1))

    def _write0(self, vcpu: "Vcpu", arg: int) -> None:
        self._print(read_cstring(vcpu, arg, _MAX_STRING))

    def _readc(self, vcpu: "Vcpu", arg: int) -> int:
        if not self.input:
            return -1  # no console input queued
        byte = self.input[0]
        del self.input[0]
        return byte

    # -- handles ----------------------------------------------------------------------------

    def _handle(self, number: int) -> _Handle:
        h = self._handles.get(number)
        if h is None:
            raise _Failed(errno.EBADF)
        return h

    def _open(self, vcpu: "Vcpu", arg: int) -> int:
        name_ptr, mode, length = read_u64s(vcpu, arg, 3)
        if length > _MAX_STRING:
            raise _Failed(errno.ENAMETOOLONG)
        name = read_virtual(vcpu, name_ptr, length)
        if mode > 11:
            raise _Failed(errno.EINVAL)
        if name == b":tt":
            kind = _CONSOLE_IN if mode < 4 else _STDOUT if mode < 8 else _STDERR
        elif name == b":semihosting-features":
            if mode not in (0, 1):  # only "r" and "rb" (spec 2.0, implementation requirements)
                raise _Failed(errno.EACCES)
            kind = _FEATURES
        else:
            raise _Failed(errno.EACCES)  # no host files for the guest
        number = self._next_handle
        self._next_handle += 1
        self._handles[number] = _Handle(kind)
        return number

    def _close(self, vcpu: "Vcpu", arg: int) -> int:
        (number,) = read_u64s(vcpu, arg, 1)
        self._handle(number)
        del self._handles[number]
        return 0

    def _write(self, vcpu: "Vcpu", arg: int) -> int:
        number, buf, length = read_u64s(vcpu, arg, 3)
        h = self._handle(number)
        if h.kind not in (_STDOUT, _STDERR):
            raise _Failed(errno.EBADF, length)  # nothing written
        self._print(read_virtual(vcpu, buf, length))
        return 0

    def _read(self, vcpu: "Vcpu", arg: int) -> int:
        number, buf, length = read_u64s(vcpu, arg, 3)
        h = self._handle(number)
        if h.kind == _FEATURES:
            data = FEATURES[h.position:h.position + length]
            h.position += len(data)
        elif h.kind == _CONSOLE_IN:
            data = bytes(self.input[:length])
            del self.input[:len(data)]
        else:
            raise _Failed(errno.EBADF)
        write_virtual(vcpu, buf, data)
        return length - len(data)  # bytes not filled: `length` means end of file

    def _istty(self, vcpu: "Vcpu", arg: int) -> int:
        (number,) = read_u64s(vcpu, arg, 1)
        return 0 if self._handle(number).kind == _FEATURES else 1

    def _seek(self, vcpu: "Vcpu", arg: int) -> int:
        number, position = read_u64s(vcpu, arg, 2)
        h = self._handle(number)
        if h.kind != _FEATURES:
            raise _Failed(errno.ESPIPE)
        h.position = position
        return 0

    def _flen(self, vcpu: "Vcpu", arg: int) -> int:
        (number,) = read_u64s(vcpu, arg, 1)
        if self._handle(number).kind != _FEATURES:
            raise _Failed(errno.ESPIPE)
        return len(FEATURES)

    def _refused(self, vcpu: "Vcpu", arg: int) -> int:
        raise _Failed(errno.EACCES)  # host files and commands stay out of the guest's reach

    # -- status and environment ------------------------------------------------------------

    def _iserror(self, vcpu: "Vcpu", arg: int) -> int:
        (status,) = read_u64s(vcpu, arg, 1)
        return int(status >> 63)  # an error status is a negative value

    def _errno(self, vcpu: "Vcpu", arg: int) -> int:
        return self.errno

    def _get_cmdline(self, vcpu: "Vcpu", arg: int) -> int:
        buf, size = read_u64s(vcpu, arg, 2)
        text = self.cmdline.encode()
        if len(text) + 1 > size:
            raise _Failed(errno.E2BIG)
        write_virtual(vcpu, buf, text + b"\0")
        write_virtual(vcpu, arg + 8, len(text).to_bytes(8, "little"))
        return 0

    def _heapinfo(self, vcpu: "Vcpu", arg: int) -> int:
        (block,) = read_u64s(vcpu, arg, 1)  # X1 holds the address of a pointer to the block
        write_virtual(vcpu, block, b"".join(v.to_bytes(8, "little") for v in self.heapinfo))
        return 0

    # -- time ---------------------------------------------------------------------------------

    @staticmethod
    def _ticks(vcpu: "Vcpu") -> int:
        ticks = vcpu.instruction_count()
        if ticks is None:
            raise _Failed(errno.ENOTSUP)  # this run does not count instructions
        return ticks

    def _clock(self, vcpu: "Vcpu", arg: int) -> int:
        return self._ticks(vcpu) // _CENTISECOND

    def _elapsed(self, vcpu: "Vcpu", arg: int) -> int:
        ticks = self._ticks(vcpu)
        write_virtual(vcpu, arg, ticks.to_bytes(8, "little"))  # one 64-bit field on AArch64
        return 0

    def _tickfreq(self, vcpu: "Vcpu", arg: int) -> int:
        return TICKS_PER_SECOND

    def _time(self, vcpu: "Vcpu", arg: int) -> int:
        ticks = vcpu.instruction_count() or 0
        return self.epoch + ticks // TICKS_PER_SECOND

    # -- exit -----------------------------------------------------------------------------------

    def _exit(self, vcpu: "Vcpu", arg: int) -> Exit:
        # AArch64 SYS_EXIT and SYS_EXIT_EXTENDED both take a block {reason, subcode}.
        reason, subcode = read_u64s(vcpu, arg, 2)
        normal = reason == StopReason.ADP_Stopped_ApplicationExit
        status = subcode if normal else 1  # the status QEMU's process exits with
        return Exit(ExitReason.SYSTEM_EVENT, 0,
                    system_event=SystemEventExit(SystemEventType.SHUTDOWN if normal else SystemEventType.CRASH),
                    semihosting=SemihostingExit(reason, subcode, status))

    # -- snapshots ------------------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        return {"output": self.output.hex(), "input": self.input.hex(), "errno": self.errno,
                "handles": {str(n): [h.kind, h.position] for n, h in self._handles.items()},
                "next_handle": self._next_handle, "cmdline": self.cmdline, "allow_el0": self.allow_el0,
                "heapinfo": list(self.heapinfo), "epoch": self.epoch}

    def restore(self, state: dict) -> None:  # type: ignore[type-arg]
        self.output = bytearray.fromhex(state["output"])
        self.input = bytearray.fromhex(state["input"])
        self.errno = int(state["errno"])
        self._handles = {int(n): _Handle(kind, int(pos)) for n, (kind, pos) in state["handles"].items()}
        self._next_handle = int(state["next_handle"])
        self.cmdline, self.allow_el0 = state["cmdline"], bool(state["allow_el0"])
        self.heapinfo = tuple(int(v) for v in state["heapinfo"])  # type: ignore[assignment]
        self.epoch = int(state["epoch"])


_HANDLERS = {
    Op.SYS_OPEN: Semihosting._open, Op.SYS_CLOSE: Semihosting._close, Op.SYS_WRITEC: Semihosting._writec,
    Op.SYS_WRITE0: Semihosting._write0, Op.SYS_WRITE: Semihosting._write, Op.SYS_READ: Semihosting._read,
    Op.SYS_READC: Semihosting._readc, Op.SYS_ISERROR: Semihosting._iserror, Op.SYS_ISTTY: Semihosting._istty,
    Op.SYS_SEEK: Semihosting._seek, Op.SYS_FLEN: Semihosting._flen, Op.SYS_TMPNAM: Semihosting._refused,
    Op.SYS_REMOVE: Semihosting._refused, Op.SYS_RENAME: Semihosting._refused, Op.SYS_CLOCK: Semihosting._clock,
    Op.SYS_TIME: Semihosting._time, Op.SYS_SYSTEM: Semihosting._refused, Op.SYS_ERRNO: Semihosting._errno,
    Op.SYS_GET_CMDLINE: Semihosting._get_cmdline, Op.SYS_HEAPINFO: Semihosting._heapinfo,
    Op.SYS_EXIT: Semihosting._exit, Op.SYS_EXIT_EXTENDED: Semihosting._exit, Op.SYS_ELAPSED: Semihosting._elapsed,
    Op.SYS_TICKFREQ: Semihosting._tickfreq,
}
