"""Device accesses that must not happen twice when a device stops the vCPU.

When a device's MMIO callback asks the vCPU to stop (it raised an interrupt that must be
taken before the next instruction), Unicorn abandons the access instruction and restarts it
on the next run: its device accesses would run again (measured on 2.1.4: the PC stays at
the store, and every restart writes again). So the vCPU records the accesses made from
that request until Unicorn returns, completes the instruction with a single step in which
those accesses are replayed from the record instead of reaching the device, and only then
takes the interrupt, after the instruction, as the architecture has it.

The PC Unicorn leaves is not always the access instruction: once a hook has written the PC
through the API in the same run, Unicorn skips its PC restore on the next exit request
(uc.c, skip_sync_pc_on_exit) and the PC is the start of the translation block, whose
earlier instructions have already executed. `locate_access` finds the instruction in that
straight-line block whose address operands give the recorded access.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from .arch.decode import decode_load_store, effective_address

MAX_SCAN = 512  # instructions: longer than any translation block Unicorn builds


class AccessReplay:
    def __init__(self) -> None:
        self.recording = False
        self._log: deque[tuple[str, int, int, int]] = deque()  # (kind, address, size, value)

    @property
    def pending(self) -> bool:
        return bool(self._log)

    def record(self, kind: str, address: int, size: int, value: int) -> None:
        if self.recording:
            self._log.append((kind, address, size, value))

    def start(self) -> None:
        """A device asked for a stop: the access that did it and those after it are recorded."""
        self.recording = True

    def replay(self, kind: str, address: int, size: int) -> int | None:
        """The recorded value of this access during the completing step, None if it must
        reach the device (it was not made before the stop)."""
        if self._log and self._log[0][:3] == (kind, address, size):
            return self._log.popleft()[3]
        self._log.clear()
        return None

    @property
    def first(self) -> tuple[str, int, int, int] | None:
        return self._log[0] if self._log else None

    def clear(self) -> None:
        self.recording = False
        self._log.clear()


def _ends_block(insn: int) -> bool:
    """Branches, exception generation, system instructions: a translation block ends there."""
    return (insn >> 26) & 0b111 == 0b101 or (insn >> 24) == 0xD4 or (insn >> 22) == 0b1101010100


def locate_access(pc: int, access: tuple[str, int, int, int], fetch: Callable[[int], int | None],
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
