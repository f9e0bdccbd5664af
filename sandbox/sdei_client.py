"""What the guest's SDEI client (firmware/sdei.S) records, and how the host reads it.

`sdei_records(vm, program, cpu)` returns the records of the recording handler `sdei_handler`
on CPU `cpu` (MPIDR Aff0), oldest first. The constants name the client's host-settable
knobs (symbols `sdei_policy`, `sdei_flags`, `sdei_conduit`, `sdei_resume_address`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from .arch import pstate as ps

# Layout of the ring in firmware/sdei.S (keep in step with its .equ lines).
RING_HEADER = 16
RECORD_SIZE = 256
RING_ENTRIES = 32
RING_BYTES = RING_HEADER + RECORD_SIZE * RING_ENTRIES

# sdei_policy: how the recording handler completes.
COMPLETE = 0  # EVENT_COMPLETE(EV_HANDLED)
COMPLETE_FAILED = 1  # EVENT_COMPLETE(EV_FAILED)
RESUME_INTERRUPTED = 2  # EVENT_COMPLETE_AND_RESUME(the interrupted PC)
RESUME_ADDRESS = 3  # EVENT_COMPLETE_AND_RESUME(sdei_resume_address)

READ_CONTEXT = 1 << 0  # sdei_flags: read EVENT_CONTEXT(0..17) into the record


@dataclass(frozen=True)
class SdeiRecord:
    """One handler run as the guest's handler saw it."""

    seq: int
    event: int  # x0
    arg: int  # x1
    interrupted_pc: int  # x2
    interrupted_pstate: int  # x3
    pstate: int  # the handler's own PSTATE as MRS shows it (NZCV, DAIF, EL, SPSel, PAN, UAO)
    mpidr: int
    status: int  # EVENT_STATUS(event) read inside the handler (7 = registered, enabled, running)
    completion: int  # the sdei_policy value it completed with
    sp: int
    context: tuple[int, ...]  # EVENT_CONTEXT(0..17), zeros unless READ_CONTEXT

    def describe(self) -> str:
        return (f"#{self.seq} event {self.event:#x} arg {self.arg:#x} on MPIDR {self.mpidr:#x}: interrupted "
                f"PC {self.interrupted_pc:#x} [{ps.describe(self.interrupted_pstate)}], handler "
                f"[{ps.describe(self.pstate)}] status {self.status}")


class _Memory(Protocol):
    def read_memory(self, address: int, size: int) -> bytes: ...


def sdei_records(mem: _Memory, program: object, cpu: int = 0) -> list[SdeiRecord]:
    """The recording handler's records on CPU `cpu`, oldest first (at most RING_ENTRIES)."""
    base = program["sdei_ring"] + cpu * RING_BYTES  # type: ignore[index]
    count, capacity = struct.unpack("<QQ", mem.read_memory(base, RING_HEADER))
    capacity = capacity or RING_ENTRIES
    raw = mem.read_memory(base + RING_HEADER, RECORD_SIZE * capacity)
    out = []
    for n in range(max(0, count - capacity), count):
        f = struct.unpack_from("<28Q", raw, (n % capacity) * RECORD_SIZE)
        out.append(SdeiRecord(*f[:10], context=tuple(f[10:28])))
    return out
