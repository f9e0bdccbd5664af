"""CPER records as firmware writes them into a GHES error status block: exact byte layouts.

    Generic Error Status Block      20 bytes  (ACPI 6.5 18.3.2.7.1; ACPICA acpi_hest_generic_status)
    Generic Error Data Entry        72 bytes  revision 0x300 (ACPI 6.5 18.3.2.7.1, table 18.11;
                                              ACPICA acpi_hest_generic_data_v300)
    Memory Error Section            80 bytes  (UEFI 2.10 N.2.5, GUID A5BC1114-6F64-4EDE-B863-3E83ED7C83B1)

All little-endian. `memory_error_block()` builds the three for one memory error, the way QEMU
hw/acpi/ghes.c does (validation bits PA valid | type valid = 0x4002, type 0 "unknown"), except
that BlockStatus also carries the entry count in bits [13:4] as ACPI defines it (QEMU leaves
the count 0; Linux ignores it, NetBSD reads it). `parse_status_block()` reads one back.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum

MEMORY_ERROR_SECTION = uuid.UUID("A5BC1114-6F64-4EDE-B863-3E83ED7C83B1")  # UEFI N.2.5 "Memory Error Section"

GESB = struct.Struct("<IIIII")  # block_status, raw_data_offset, raw_data_length, data_length, error_severity
GEDE = struct.Struct("<16sIHBBI16s20sQ")  # section type, severity, revision, validation, flags, length, FRU id, FRU text, timestamp
MEMORY_SECTION_SIZE = 80
assert GESB.size == 20 and GEDE.size == 72

GEDE_REVISION = 0x300  # ACPI 6.x Generic Error Data Entry revision carrying the timestamp

# BlockStatus bits (ACPICA ACPI_HEST_UNCORRECTABLE ... ACPI_HEST_ERROR_ENTRY_COUNT).
BLOCK_UNCORRECTABLE = 1 << 0
BLOCK_CORRECTABLE = 1 << 1
BLOCK_MULTIPLE_UNCORRECTABLE = 1 << 2
BLOCK_MULTIPLE_CORRECTABLE = 1 << 3
BLOCK_ENTRY_COUNT_SHIFT = 4
BLOCK_ENTRY_COUNT_MASK = 0x3FF << BLOCK_ENTRY_COUNT_SHIFT  # bits [13:4] (ACPICA masks 0xFF << 4)

# Memory Error Section validation bits (UEFI N.2.5 table N-31).
MEM_VALID_ERROR_STATUS = 1 << 0
MEM_VALID_PHYSICAL_ADDRESS = 1 << 1
MEM_VALID_MEMORY_ERROR_TYPE = 1 << 14
MEM_PHYSICAL_ADDRESS_OFFSET = 16
MEM_ERROR_TYPE_OFFSET = 72


class Severity(IntEnum):
    """CPER error severity (UEFI N.2.1; ACPI Generic Error Status Block ErrorSeverity)."""

    RECOVERABLE = 0
    FATAL = 1
    CORRECTED = 2
    NONE = 3  # informational


class MemoryErrorType(IntEnum):
    """Memory Error Section "Memory Error Type" (UEFI N.2.5), the values firmware commonly uses."""

    UNKNOWN = 0
    NO_ERROR = 1
    SINGLE_BIT_ECC = 2
    MULTI_BIT_ECC = 3
    SINGLE_SYMBOL_CHIPKILL = 4
    MULTI_SYMBOL_CHIPKILL = 5
    MASTER_ABORT = 6
    TARGET_ABORT = 7
    PARITY = 8
    WATCHDOG_TIMEOUT = 9
    INVALID_ADDRESS = 10
    MIRROR_BROKEN = 11
    MEMORY_SPARING = 12
    SCRUB_CORRECTED = 13
    SCRUB_UNCORRECTED = 14
    PHYSICAL_MEMORY_MAP_OUT = 15


def memory_error_section(physical_address: int, error_type: MemoryErrorType = MemoryErrorType.UNKNOWN) -> bytes:
    """The 80-byte Memory Error Section: PA and type valid, everything else zero."""
    out = bytearray(MEMORY_SECTION_SIZE)
    struct.pack_into("<Q", out, 0, MEM_VALID_PHYSICAL_ADDRESS | MEM_VALID_MEMORY_ERROR_TYPE)
    struct.pack_into("<Q", out, MEM_PHYSICAL_ADDRESS_OFFSET, physical_address & 0xFFFFFFFFFFFFFFFF)
    out[MEM_ERROR_TYPE_OFFSET] = int(error_type)
    return bytes(out)


def block_status_for(severity: Severity, entries: int = 1) -> int:
    """BlockStatus: uncorrectable or correctable valid, and the entry count."""
    valid = BLOCK_CORRECTABLE if severity == Severity.CORRECTED else BLOCK_UNCORRECTABLE
    return valid | ((entries << BLOCK_ENTRY_COUNT_SHIFT) & BLOCK_ENTRY_COUNT_MASK)


def memory_error_block(physical_address: int, severity: Severity = Severity.RECOVERABLE,
                       error_type: MemoryErrorType = MemoryErrorType.UNKNOWN) -> bytes:
    """Generic Error Status Block + one Generic Error Data Entry + the Memory Error Section
    (172 bytes; DataLength 0x98 = 72 + 80, as in QEMU's records)."""
    section = memory_error_section(physical_address, error_type)
    entry = GEDE.pack(MEMORY_ERROR_SECTION.bytes_le, int(severity), GEDE_REVISION, 0, 0, len(section),
                      b"\0" * 16, b"\0" * 20, 0)
    head = GESB.pack(block_status_for(severity), 0, 0, len(entry) + len(section), int(severity))
    return head + entry + section


@dataclass(frozen=True)
class DataEntry:
    section_type: uuid.UUID
    severity: int
    revision: int
    validation_bits: int
    flags: int
    data: bytes

    @property
    def physical_address(self) -> int | None:
        """The error's physical address if this is a memory error section with PA valid."""
        if self.section_type != MEMORY_ERROR_SECTION or len(self.data) < MEM_PHYSICAL_ADDRESS_OFFSET + 8:
            return None
        (valid,) = struct.unpack_from("<Q", self.data, 0)
        if not valid & MEM_VALID_PHYSICAL_ADDRESS:
            return None
        return struct.unpack_from("<Q", self.data, MEM_PHYSICAL_ADDRESS_OFFSET)[0]


@dataclass(frozen=True)
class StatusBlock:
    block_status: int
    raw_data_offset: int
    raw_data_length: int
    data_length: int
    error_severity: int
    entries: tuple[DataEntry, ...]


def parse_status_block(raw: bytes) -> StatusBlock:
    """Read a Generic Error Status Block and its data entries (revision 0x300 layout)."""
    status, raw_off, raw_len, data_len, severity = GESB.unpack_from(raw, 0)
    entries = []
    offset, end = GESB.size, GESB.size + min(data_len, max(0, len(raw) - GESB.size))
    while offset + GEDE.size <= end:
        guid, sev, rev, valid, flags, length, _fru, _text, _ts = GEDE.unpack_from(raw, offset)
        start = offset + GEDE.size
        entries.append(DataEntry(uuid.UUID(bytes_le=guid), sev, rev, valid, flags, bytes(raw[start:start + length])))
        offset = start + length
    return StatusBlock(status, raw_off, raw_len, data_len, severity, tuple(entries))
