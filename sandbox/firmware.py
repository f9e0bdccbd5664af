"""The guest library in `firmware/`: where it is, and how the host reads what it records.

`firmware/vectors.S` records every exception it takes into a per-CPU ring in guest memory;
`exception_records()` turns that ring back into Python objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .arch import esr as esr_mod
from .arch import pstate as ps


def firmware_dir() -> Path:
    """The `firmware/` folder: inside the package when installed as a wheel, at the top of
    the checkout when installed in editable mode."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_firmware", here.parent / "firmware"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("the sandbox's firmware/ folder is missing from this installation")


# Layout of the ring written by firmware/vectors.S (keep in step with its .equ lines).
RING_HEADER = 16  # u64 count, u64 capacity
RECORD_SIZE = 128  # 16 x u64 (9 used)
RING_ENTRIES = 64
RING_BYTES = RING_HEADER + RECORD_SIZE * RING_ENTRIES

# Return policies understood by the vector table (symbol `exc_policy`).
POLICY_AUTO = 0  # synchronous: past the faulting instruction, except SVC/HVC/SMC; async: ELR
POLICY_SKIP = 1  # synchronous: always ELR + 4
POLICY_RETRY = 2  # return to ELR unchanged
POLICY_STOP = 3  # stop the guest (PSCI SYSTEM_OFF)


@dataclass(frozen=True)
class ExceptionRecord:
    """One exception as the guest's own vector table saw it."""

    seq: int
    vector: int  # offset from VBAR_EL1
    esr: int
    far: int
    elr: int
    spsr: int
    mpidr: int
    isr: int  # ISR_EL1 read at entry
    disr: int  # DISR_EL1 after an entry ESB (exc_flags ESB_ON_ENTRY), else 0

    @property
    def ec(self) -> int:
        return esr_mod.ec_of(self.esr)

    def describe(self) -> str:
        return (f"#{self.seq} vector +{self.vector:#05x} ESR {self.esr:#010x} "
                f"({esr_mod.ec_name(self.ec)}) ELR {self.elr:#x} FAR {self.far:#x} "
                f"SPSR {self.spsr:#x} [{ps.describe(self.spsr)}]")


class _Memory(Protocol):
    def read_memory(self, address: int, size: int) -> bytes: ...


def exception_records(mem: _Memory, ring_address: int, cpu: int = 0) -> list[ExceptionRecord]:
    """The records of CPU `cpu` (MPIDR Aff0), oldest first; at most RING_ENTRIES survive."""
    base = ring_address + cpu * RING_BYTES
    # The ring straight from the RAM buffer when it lies in one region (a Vm), else copied.
    region = mem.memory.ram_at(base) if hasattr(mem, "memory") else None
    if region is not None and base + RING_BYTES <= region.end:
        raw, at = region.buffer, base - region.base
    else:
        raw, at = mem.read_memory(base, RING_BYTES), 0
    count, capacity = struct.unpack_from("<QQ", raw, at)
    if capacity == 0 or capacity > RING_ENTRIES:
        capacity = RING_ENTRIES  # the ring has RING_ENTRIES slots whatever the header says
    first = max(0, count - capacity)
    at += RING_HEADER
    return [ExceptionRecord(*struct.unpack_from("<9Q", raw, at + (n % capacity) * RECORD_SIZE))
            for n in range(first, count)]
