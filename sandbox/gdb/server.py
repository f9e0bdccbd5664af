"""A GDB remote stub for a sandbox Vm, so `gdb-multiarch` can attach (`target remote :PORT`).

It listens on 127.0.0.1 only: a guest's memory and registers are never offered to the
network. One debugger at a time; each vCPU is a gdb thread (thread id = vCPU index + 1).

Run control goes through the vCPU's KVM_SET_GUEST_DEBUG state (sandbox.guest_debug):
software breakpoints are `BRK #0` written over the instruction (Z0/z0, as QEMU's gdbstub does
on KVM), single step is KVM_GUESTDBG_SINGLESTEP, and with `stop_on_exceptions` every
exception the guest takes stops it at the vector. A continue runs the selected vCPU in slices
of `slice_seconds` so that Ctrl-C is seen between slices (the guest's execution does not
depend on where a slice ends). Other vCPUs stay stopped while one is debugged.

What gdb is told when the guest stops:
- breakpoint / step: SIGTRAP (with `swbreak` when gdb asked for it);
- a guest exception: a signal by exception class (SIGSEGV for aborts, SIGILL for UNDEFINED,
  SIGBUS for SError and external aborts, SIGTRAP for calls and BRK), after a console line
  with the syndrome, FAR and vector;
- a vCPU exit nobody handled (MMIO, ARM_SEA, internal error, budgets, WFI idle): a signal by
  exit reason and a console line with `Exit.describe()`;
- the guest stopping the machine (PSCI SYSTEM_OFF/RESET, semihosting SYS_EXIT): "process
  exited" with `Exit.machine_status()` (the semihosting status; 0 for a power-off, 1 for a
  reset or crash); the session ends.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TextIO

from ..guest_debug import (BREAKPOINT, EXCEPTION, GUESTDBG_EXIT_ON_EXCEPTION, KVM_GUESTDBG_ENABLE,
                           KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_SW_BP)
from ..guest_memory import read_virtual, write_virtual
from ..kvm import ExitReason
from . import registers as R
from .packets import INTERRUPT, Connection, Disconnected, escape_binary
from .stops import GDB_SIGNAL_INT, GDB_SIGNAL_TRAP, exception_signal, exit_signal

if TYPE_CHECKING:
    from ..exits import Exit
    from ..vcpu import Vcpu
    from ..vm import Vm

LOOPBACK = "127.0.0.1"
BRK_0 = 0xD4200000  # `brk #0`, the software breakpoint (A64 BRK, imm16 = 0)

@dataclass
class SessionEnd:
    """How a debugging session ended: "exited" (the guest stopped the machine; `exit` says
    how), "detached" (the guest is left to run on), "killed" or "disconnected"."""

    how: str
    exit: "Exit | None" = None


class _Stop(Exception):
    """The session is over."""

    def __init__(self, end: SessionEnd):
        self.end = end


class GdbServer:
    """A listening GDB stub for `vm`. `serve()` waits for gdb and runs the session.

    `handle_exit(exit) -> bool` lets the caller act as the VMM for vCPU exits during a
    continue (return True to resume the guest, e.g. after completing an MMIO read); exits it
    does not take stop the guest and are reported to gdb."""

    def __init__(self, vm: "Vm", port: int = 0, *, vcpu: int = 0, stop_on_exceptions: bool = True,
                 handle_exit: Callable[["Exit"], bool] | None = None, slice_seconds: float = 0.1):
        if not vm.vcpus:
            raise ValueError("the Vm has no vCPU to debug")
        self.vm = vm
        self.stop_on_exceptions = stop_on_exceptions
        self.handle_exit = handle_exit
        self.slice_seconds = slice_seconds
        self._listener = socket.create_server((LOOPBACK, port))
        self.port: int = self._listener.getsockname()[1]
        self._current = vcpu  # vCPU index for registers, memory and resuming
        self._breakpoints: dict[int, bytes] = {}  # address -> the instruction the BRK replaced
        self._swbreak = False
        self._last_stop = f"T{GDB_SIGNAL_TRAP:02x}thread:{vcpu + 1:x};"
        self._conn: Connection | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where the stub listens (always the loopback address)."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> "GdbServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vcpu(self) -> "Vcpu":
        return self.vm.vcpus[self._current]

    # -- the session ------------------------------------------------------------------------

    def serve(self, accept_timeout: float | None = None) -> SessionEnd:
        """Wait for one gdb to connect (socket.timeout after `accept_timeout` seconds) and
        serve it until it detaches, kills, disconnects or the guest exits."""
        self._listener.settimeout(accept_timeout)
        sock, _ = self._listener.accept()
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn = Connection(sock)
        try:
            while True:
                packet = conn.receive()
                if packet == INTERRUPT:
                    conn.send(f"T{GDB_SIGNAL_INT:02x}thread:{self._current + 1:x};")
                    continue
                reply = self._command(packet)
                if reply is not None:
                    conn.send(reply)
        except _Stop as stop:
            return stop.end
        except (Disconnected, ConnectionError):
            return SessionEnd("disconnected")
        finally:
            self._remove_breakpoints()
            for v in self.vm.vcpus:
                v.set_guest_debug(0)
            sock.close()
            self._conn = None

    def _command(self, packet: str) -> str | None:
        """The reply to one packet ("" = not supported; None = no reply)."""
        kind, body = packet[:1], packet[1:]
        try:
            handler = _COMMANDS.get(kind)
            if handler is None:
                return self._query(packet)
            return handler(self, body)
        except _Stop:
            raise
        except (ValueError, IndexError, KeyError):
            return "E16"  # EINVAL: a packet the stub cannot parse
        except OSError as e:
            return f"E{(e.errno or 14) & 0xFF:02x}"

    # -- queries ----------------------------------------------------------------------------

    def _query(self, packet: str) -> str:
        if packet.startswith("qSupported"):
            self._swbreak = "swbreak+" in packet
            return "PacketSize=4000;qXfer:features:read+;swbreak+;vContSupported+;QStartNoAckMode+"
        if packet == "QStartNoAckMode":
            assert self._conn is not None
            self._conn.send("OK")
            self._conn.acks = False
            return None  # type: ignore[return-value]
        if packet.startswith("qXfer:features:read:"):
            annex, _, span = packet[len("qXfer:features:read:"):].partition(":")
            if annex != "target.xml":
                return "E00"
            offset, length = (int(x, 16) for x in span.split(","))
            data = R.target_xml().encode()
            chunk = data[offset:offset + length]
            return ("l" if offset + length >= len(data) else "m") + escape_binary(chunk).decode("latin-1")
        if packet == "qAttached":
            return "1"  # attached to a running machine: gdb detaches rather than kills on quit
        if packet == "qC":
            return f"QC{self._current + 1:x}"
        if packet == "qfThreadInfo":
            return "m" + ",".join(f"{v.index + 1:x}" for v in self.vm.vcpus)
        if packet == "qsThreadInfo":
            return "l"
        if packet.startswith("qThreadExtraInfo,"):
            v = self._vcpu_of(packet.split(",", 1)[1])
            return f"vCPU {v.index} MPIDR {v.mpidr:#x}".encode().hex()
        if packet.startswith("qRcmd,"):
            return self._monitor(bytes.fromhex(packet[6:]).decode(errors="replace"))
        if packet == "qSymbol::":
            return "OK"
        if packet == "vCont?":
            return "vCont;c;C;s;S"
        if packet.startswith("vCont;"):
            return self._vcont(packet[6:])
        if packet == "vMustReplyEmpty":
            return ""
        return ""

    def _monitor(self, command: str) -> str:
        """`monitor exceptions on|off` and `monitor help`."""
        words = command.split()
        if words[:1] == ["exceptions"] and len(words) == 2 and words[1] in ("on", "off"):
            self.stop_on_exceptions = words[1] == "on"
            self._console(f"stop on guest exceptions: {words[1]}\n")
            return "OK"
        self._console("monitor commands: exceptions on|off (stop when the guest takes an exception)\n")
        return "OK"

    def _console(self, text: str) -> None:
        assert self._conn is not None
        self._conn.send("O" + text.encode().hex())

    # -- threads ----------------------------------------------------------------------------

    def _vcpu_of(self, thread: str) -> "Vcpu":
        tid = int(thread, 16)
        if tid in (0, -1):
            return self.vcpu
        if not 1 <= tid <= len(self.vm.vcpus):
            raise ValueError(thread)
        return self.vm.vcpus[tid - 1]

    def _set_thread(self, body: str) -> str:
        tid = body[1:]
        if tid not in ("0", "-1"):
            self._current = self._vcpu_of(tid).index
        return "OK"

    def _thread_alive(self, body: str) -> str:
        self._vcpu_of(body)
        return "OK"

    # -- registers and memory -----------------------------------------------------------------

    def _read_register(self, reg: R.Register) -> str:
        try:
            return R.encode(reg, reg.read(self.vcpu))
        except Exception:
            return "xx" * (reg.bits // 8)  # unavailable

    def _read_registers(self, body: str) -> str:
        return "".join(self._read_register(r) for r in R.REGISTERS)

    def _write_registers(self, body: str) -> str:
        at = 0
        for reg in R.REGISTERS:
            text = body[at:at + reg.bits // 4]
            at += reg.bits // 4
            if len(text) < reg.bits // 4:
                break
            if "x" not in text:
                reg.write(self.vcpu, R.decode(reg, text))
        return "OK"

    def _read_one(self, body: str) -> str:
        return self._read_register(R.REGISTERS[int(body, 16)])

    def _write_one(self, body: str) -> str:
        number, value = body.split("=")
        reg = R.REGISTERS[int(number, 16)]
        reg.write(self.vcpu, R.decode(reg, value))
        return "OK"

    def _read_memory(self, body: str) -> str:
        address, length = (int(x, 16) for x in body.split(","))
        return read_virtual(self.vcpu, address, min(length, 0x2000)).hex()

    def _write_memory(self, body: str) -> str:
        where, data = body.split(":")
        address, length = (int(x, 16) for x in where.split(","))
        raw = bytes.fromhex(data)
        if len(raw) != length:
            raise ValueError(body)
        write_virtual(self.vcpu, address, raw)
        return "OK"

    # -- breakpoints ----------------------------------------------------------------------------

    def _insert(self, body: str) -> str:
        kind, address, _size = body.split(",")[:3]
        if kind != "0":
            return ""  # hardware breakpoints and watchpoints: not offered (gdb falls back)
        pc = int(address, 16)
        if pc not in self._breakpoints:
            original = read_virtual(self.vcpu, pc, 4)
            write_virtual(self.vcpu, pc, BRK_0.to_bytes(4, "little"))
            self._breakpoints[pc] = original
        return "OK"

    def _remove(self, body: str) -> str:
        kind, address, _size = body.split(",")[:3]
        if kind != "0":
            return ""
        pc = int(address, 16)
        original = self._breakpoints.pop(pc, None)
        if original is not None:
            write_virtual(self.vcpu, pc, original)
        return "OK"

    def _remove_breakpoints(self) -> None:
        for pc, original in list(self._breakpoints.items()):
            try:
                write_virtual(self.vcpu, pc, original)
            except OSError:
                pass  # the guest remapped the page since: nothing of ours is left to restore
        self._breakpoints.clear()

    # -- run control ----------------------------------------------------------------------------

    def _continue(self, body: str) -> str:
        return self._resume(step=False, address=body.split(";")[-1] if body else "")

    def _continue_signal(self, body: str) -> str:  # C sig[;addr]: there are no signals to deliver
        return self._resume(step=False, address=body.split(";")[1] if ";" in body else "")

    def _step(self, body: str) -> str:
        return self._resume(step=True, address=body)

    def _step_signal(self, body: str) -> str:
        return self._resume(step=True, address=body.split(";")[1] if ";" in body else "")

    def _vcont(self, actions: str) -> str:
        """vCont;ACTION[:thread];...: the first step action wins (one vCPU is resumed)."""
        chosen: tuple[bool, str] | None = None
        for action in actions.split(";"):
            verb, _, thread = action.partition(":")
            step = verb[:1] in ("s", "S")
            if chosen is None or (step and not chosen[0]):
                chosen = (step, thread)
        if chosen is None:
            return "E16"
        step, thread = chosen
        if thread and thread not in ("-1", "0"):
            self._current = self._vcpu_of(thread).index
        return self._resume(step=step, address="")

    def _resume(self, *, step: bool, address: str) -> str:
        """A step runs the current vCPU alone; a continue runs every powered-on vCPU
        (Vm.run, deterministic as without gdb) until one of them stops, and that vCPU
        becomes the thread of the stop reply. Breakpoints are BRKs in shared guest
        memory, so every vCPU debugs the same way."""
        vcpu = self.vcpu
        if address:
            vcpu.set_reg("pc", int(address, 16))
        control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP
        if self.stop_on_exceptions:
            control |= GUESTDBG_EXIT_ON_EXCEPTION
        for v in self.vm.vcpus:
            v.set_guest_debug(control | (KVM_GUESTDBG_SINGLESTEP if step and v is vcpu else 0))
        assert self._conn is not None
        while True:
            if not step and self._conn.interrupted():
                return self._stop_reply(GDB_SIGNAL_INT)
            exit_ = vcpu.run(timeout=None) if step else self.vm.run(timeout=self.slice_seconds)
            if exit_.vcpu is not None:
                self._current = exit_.vcpu  # the thread that stopped
            if exit_.reason is ExitReason.TIME_BUDGET and not step:
                continue  # a slice ended: look for Ctrl-C, then run on
            if exit_.reason is ExitReason.DEBUG and exit_.debug is not None:
                reply = self._debug_stop(exit_)
                if reply is not None:
                    return reply
                continue
            if exit_.reason is not ExitReason.DEBUG and self.handle_exit is not None and self.handle_exit(exit_):
                if step:  # the exit interrupted the step: it ends where the host left the guest
                    return self._stop_reply(GDB_SIGNAL_TRAP)
                continue
            return self._exit_stop(exit_)

    def _debug_stop(self, exit_: "Exit") -> str | None:
        """The stop reply for a KVM_EXIT_DEBUG, or None to run on (a guest BRK handed back)."""
        debug = exit_.debug
        assert debug is not None
        if debug.event == BREAKPOINT:
            if exit_.pc in self._breakpoints:
                return self._stop_reply(GDB_SIGNAL_TRAP, "swbreak:;" if self._swbreak else "")
            self.vcpu.guest_debug.reinject(exit_)  # the guest's own BRK: its vector takes it
            if not self.stop_on_exceptions:
                return None
            self._console(f"guest exception: BRK64 ESR {debug.hsr:#010x} at {self._where(exit_.pc)}\n")
            return self._stop_reply(GDB_SIGNAL_TRAP)
        if debug.event == EXCEPTION:
            self._console(f"guest exception: {debug.detail}; ESR {debug.hsr:#010x} FAR {debug.far:#x}; "
                          f"vector {self._where(exit_.pc)}\n")
            return self._stop_reply(exception_signal(debug.hsr))
        return self._stop_reply(GDB_SIGNAL_TRAP)  # single step

    def _exit_stop(self, exit_: "Exit") -> str:
        """Report a vCPU exit; a machine that stopped itself ends the session."""
        self._console(f"vCPU {self.vcpu.index} exit: {exit_.describe()} at {self._where(exit_.pc)}\n")
        status = exit_.machine_status()
        if status is not None:
            assert self._conn is not None
            self._conn.send(f"W{status:02x}")
            raise _Stop(SessionEnd("exited", exit_))
        return self._stop_reply(exit_signal(exit_))

    def _where(self, address: int) -> str:
        return self.vm.symbols.annotate(address)

    def _stop_reply(self, signal: int, extra: str = "") -> str:
        self._last_stop = f"T{signal:02x}thread:{self._current + 1:x};{extra}"
        return self._last_stop

    # -- session control -----------------------------------------------------------------------

    def _last(self, body: str) -> str:
        return self._last_stop

    def _detach(self, body: str) -> str:
        assert self._conn is not None
        self._conn.send("OK")
        raise _Stop(SessionEnd("detached"))

    def _kill(self, body: str) -> str:
        raise _Stop(SessionEnd("killed"))


_COMMANDS: dict[str, Callable[[GdbServer, str], str]] = {
    "?": GdbServer._last, "g": GdbServer._read_registers, "G": GdbServer._write_registers,
    "p": GdbServer._read_one, "P": GdbServer._write_one, "m": GdbServer._read_memory,
    "M": GdbServer._write_memory, "Z": GdbServer._insert, "z": GdbServer._remove,
    "c": GdbServer._continue, "C": GdbServer._continue_signal, "s": GdbServer._step, "S": GdbServer._step_signal,
    "H": GdbServer._set_thread, "T": GdbServer._thread_alive, "D": GdbServer._detach, "k": GdbServer._kill,
}


def serve(vm: "Vm", port: int, *, announce: TextIO | None = None, **options: object) -> SessionEnd:
    """Listen on 127.0.0.1:`port`, wait for gdb, debug until the session ends. For the
    `--gdb PORT` option of the CLI commands (`options` go to GdbServer)."""
    with GdbServer(vm, port, **options) as server:  # type: ignore[arg-type]
        if announce is not None:
            announce.write(f"waiting for gdb on {LOOPBACK}:{server.port} "
                           f"(gdb-multiarch -ex 'target remote {LOOPBACK}:{server.port}')\n")
            announce.flush()
        return server.serve()
