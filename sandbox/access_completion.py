"""Stopping the vCPU from inside a memory access: the one mechanism every device and watch uses.

Anything the guest's memory accesses reach - an MMIO device's read or write, a host watch
on guest RAM (`Vcpu.watch_writes`, e.g. the GHES read-ack register) - may need the vCPU
stopped once the access is done: a device raised an interrupt that must be taken after the
access instruction (an SDEI-bound PPI, a GIC line), a device's error must be pended
(devices/serror_source.py), firmware must deliver a queued error after the guest's
acknowledgement (ras/ghes.py). It asks the way any hook does, with `Vcpu.pause_then(action)`
(or `_request_pause()` for a bare stop), and needs to know nothing else:

1. The vCPU calls every device and watch through `guarded_access`. Once a callback has
   asked for a stop, that access and any later one of the same instruction are recorded.
2. Unicorn, stopped from inside a memory callback, abandons the access instruction and
   would execute it again on the next run (measured on 2.1.4: the PC stays at the
   instruction; a RAM store has already written memory but not its base-register
   writeback; the second register of an STP is not written; a device access would reach
   the device twice). So the run loop completes the instruction with a single step
   (`Vcpu._complete_stopped_access`) in which the recorded accesses are replayed: a device
   read returns the recorded value and a write is dropped, without calling the device; a
   watch is not called again. An access the step makes that was not recorded (the second
   register of an STP) reaches its device now; if that one asks for a stop too, the step
   is taken again with both replayed. Code hooks see the step with `vcpu.replaying_access`
   set (a breakpoint on the instruction must not fire twice). A watched RAM store is
   performed again by the step: the same value lands twice, harmless for plain stores
   (an atomic read-modify-write of a watched address would apply twice).
3. Then the run loop runs the actions, in the order they were asked for. An action given
   `after_instructions=N` waits until N more instructions have retired (an error response
   that comes back later); those instructions come off the run's instruction budget like
   any others, and a run that ends first keeps the action for the next one. A vCPU that
   goes idle in WFI meanwhile gets it at once (time passes while it waits). A Vm with such
   an action in flight cannot be snapshotted (EBUSY): the action is host code, not state.

The PC Unicorn leaves is not always the access instruction: once a hook has written the PC
through the API in the same run, Unicorn skips its PC restore on the next exit request
(uc.c, skip_sync_pc_on_exit) and the PC is the start of the translation block, whose
earlier instructions have already executed. `locate_access` finds the instruction in that
straight-line block whose address operands give the recorded access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .arch.decode import decode_load_store, effective_address

if TYPE_CHECKING:
    from .vcpu import Vcpu

MAX_SCAN = 512  # instructions: longer than any translation block Unicorn builds
MAX_COMPLETING_STEPS = 64  # one per access an instruction makes, and more: LD4/ST4 make 8
Access = tuple[str, int, int, int]  # (kind "r"/"w", physical address, size, value)


class AccessCompletion:
    """Per vCPU: the accesses of the instruction a callback stopped, and their replay."""

    def __init__(self) -> None:
        self.recording = False  # a callback asked for a stop during the current instruction
        self.completing = False  # the run loop is stepping that instruction once more
        self.log: list[Access] = []
        self._next = 0  # during the step: the next recorded access to replay

    def rewind(self) -> None:
        """A completing step begins: replay the record from its first access."""
        self.completing, self._next = True, 0

    def clear(self) -> None:
        self.recording = self.completing = False
        self.log.clear()
        self._next = 0

    def replayed(self, kind: str, address: int, size: int) -> int | None:
        """During the completing step: the recorded value of this access, or None when it
        was not made before the stop (it must reach its callback now)."""
        if self._next < len(self.log) and self.log[self._next][:3] == (kind, address, size):
            self._next += 1
            return self.log[self._next - 1][3]
        del self.log[self._next:]  # not the access recorded here: the rest cannot follow
        return None

    def record(self, access: Access) -> None:
        self.log.append(access)
        self._next = len(self.log)


def guarded_access(vcpu: "Vcpu", kind: str, address: int, size: int, call: Callable[..., int], *args: int) -> int:
    """Run one device or watch callback `call(*args)` for an access at guest-physical
    `address` and return its value (a read's data); during a completing step, an access
    already made returns the recorded value without calling it."""
    c = vcpu._access
    if c.completing:
        again = c.replayed(kind, address, size)
        if again is not None:
            return again
    pauses = vcpu._pause_requests
    value = call(*args)
    if not c.recording and vcpu._pause_requests != pauses:  # the callback asked for a stop
        stop = vcpu._stop
        c.recording = stop is not None and stop.exit is None and stop.trap is None
    if c.recording:
        c.record((kind, address, size, value))
    return value


def _ends_block(insn: int) -> bool:
    """Branches, exception generation, system instructions: a translation block ends there."""
    return (insn >> 26) & 0b111 == 0b101 or (insn >> 24) == 0xD4 or (insn >> 22) == 0b1101010100


def locate_access(pc: int, access: Access, fetch: Callable[[int], int | None],
                  xreg: Callable[[int], int], sp: int, to_physical: Callable[[int], int | None]) -> int | None:
    """The address of the load/store at or after `pc` (straight-line, up to a block end) that
    made `access` = (kind, physical address, size, value), judged from its encoding and the
    registers as they are now (the instructions before it have run, it has not)."""
    kind, address, size, _ = access
    for k in range(MAX_SCAN):
        at = pc + 4 * k
        insn = fetch(at)
        if insn is None:
            return None
        ls = decode_load_store(insn)
        if ls is not None and ls.is_load == (kind == "r"):
            va = effective_address(insn, at, xreg, sp)
            span = ls.size * (2 if ls.pair else 1)
            pa = None if va is None else to_physical(va)
            if pa is not None and pa <= address < pa + span:
                return at
        if _ends_block(insn):
            return None
    return None
