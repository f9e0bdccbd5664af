"""What the guest's firmware-first consumer (firmware/ghes.S) recorded: its `ghes_log`."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

LOG_ENTRIES = 32  # keep in step with GHES_LOG_ENTRIES in firmware/ghes.S
ENTRY = struct.Struct("<8Q")
FLAG_MEMORY_SECTION = 1 << 0
FLAG_ADDRESS_VALID = 1 << 1


@dataclass(frozen=True)
class ConsumedError:
    """One record as the guest read it from its error status block."""

    source_id: int
    notification: int  # HEST notification type the guest was serving
    block_status: int
    severity: int
    physical_address: int
    flags: int
    esr: int  # syndrome of the exception that announced it (0 when polled)
    validation_bits: int

    @property
    def memory_section(self) -> bool:
        return bool(self.flags & FLAG_MEMORY_SECTION)

    @property
    def address_valid(self) -> bool:
        return bool(self.flags & FLAG_ADDRESS_VALID)


class _Memory(Protocol):
    def read_memory(self, address: int, size: int) -> bytes: ...


def consumed_errors(mem: _Memory, log_address: int) -> list[ConsumedError]:
    """The guest's log at `log_address` (symbol ghes_log), oldest first."""
    (count,) = struct.unpack("<Q", mem.read_memory(log_address, 8))
    raw = mem.read_memory(log_address + 8, ENTRY.size * LOG_ENTRIES)
    first = max(0, count - LOG_ENTRIES)
    return [ConsumedError(*ENTRY.unpack_from(raw, (n % LOG_ENTRIES) * ENTRY.size)) for n in range(first, count)]
