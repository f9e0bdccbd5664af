"""Device accesses that must not happen twice when a device stops the vCPU.

When a device's MMIO callback asks the vCPU to stop (it raised an interrupt that must be
taken before the next instruction), Unicorn abandons the access instruction and restarts it
on the next run: its device accesses would run again (measured on 2.1.4: the PC stays at
the store, and every restart writes again). So the vCPU records the accesses made from
that request until Unicorn returns, completes the instruction with a single step in which
those accesses are replayed from the record instead of reaching the device, and only then
takes the interrupt, after the instruction, as the architecture has it.
"""

from __future__ import annotations

from collections import deque


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

    def clear(self) -> None:
        self.recording = False
        self._log.clear()
