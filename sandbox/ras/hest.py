"""The ACPI Hardware Error Source Table (HEST) with GHESv2 entries: exact byte layouts.

    ACPI table header            36 bytes (ACPI 6.5 5.2.6)
    Error Source Count            4 bytes
    GHESv2 entry (type 10)       92 bytes (ACPI 6.5 18.3.2.8; ACPICA acpi_hest_generic_v2)
        type u16, source_id u16, related_source_id u16, flags u8, enabled u8,
        records_to_preallocate u32, max_sections_per_record u32, max_raw_data_length u32,
        error_status_address GAS(12), notify(28), error_block_length u32,
        read_ack_register GAS(12), read_ack_preserve u64, read_ack_write u64
    Hardware Error Notification  28 bytes (ACPI 6.5 18.3.2.9; ACPICA acpi_hest_notify)
    Generic Address Structure    12 bytes (ACPI 6.5 5.2.3.2)

The guest finds its error status blocks through this table, as Linux's ghes driver does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

ACPI_HEADER = struct.Struct("<4sIBB6s8sI4sI")
GAS = struct.Struct("<BBBBQ")
NOTIFY = struct.Struct("<BBHIIIIII")
GHES_V2 = struct.Struct("<HHHBBIII12s28sI12sQQ")
assert (ACPI_HEADER.size, GAS.size, NOTIFY.size, GHES_V2.size) == (36, 12, 28, 92)

HEST_SIGNATURE = b"HEST"
HEST_REVISION = 1
HEST_HEADER_SIZE = ACPI_HEADER.size + 4
HEST_TYPE_GHES_V2 = 10  # ACPI_HEST_TYPE_GENERIC_ERROR_V2
GAS_SYSTEM_MEMORY = 0  # address space ID
GAS_ACCESS_QWORD = 4
READ_ACK_PRESERVE = 0xFFFFFFFFFFFFFFFE  # ~1: QEMU hw/acpi/ghes.c
READ_ACK_WRITE = 1


class Notification(IntEnum):
    """HEST notification types (ACPICA actbl1.h ACPI_HEST_NOTIFY_*)."""

    POLLED = 0
    EXTERNAL = 1
    LOCAL = 2
    SCI = 3
    NMI = 4
    CMCI = 5
    MCE = 6
    GPIO = 7
    SEA = 8  # synchronous external abort (arm64)
    SEI = 9  # SError interrupt (arm64)
    GSIV = 10
    SOFTWARE_DELEGATED = 11  # SDEI: the notification vector is the SDEI event number


@dataclass(frozen=True)
class GhesV2:
    source_id: int
    notification: Notification
    error_status_address: int  # guest PA of the u64 that holds the status block's address
    read_ack_address: int  # guest PA of the read-ack register
    error_block_length: int
    vector: int = 0  # notification vector (SDEI event number for SOFTWARE_DELEGATED)
    related_source_id: int = 0xFFFF  # none
    enabled: int = 1
    max_sections_per_record: int = 1
    records_to_preallocate: int = 1
    # max_raw_data_length is written equal to error_block_length, as QEMU does (1 KiB).

    def pack(self) -> bytes:
        status_gas = GAS.pack(GAS_SYSTEM_MEMORY, 64, 0, GAS_ACCESS_QWORD, self.error_status_address)
        ack_gas = GAS.pack(GAS_SYSTEM_MEMORY, 64, 0, GAS_ACCESS_QWORD, self.read_ack_address)
        notify = NOTIFY.pack(int(self.notification), NOTIFY.size, 0, 0, self.vector, 0, 0, 0, 0)
        return GHES_V2.pack(HEST_TYPE_GHES_V2, self.source_id, self.related_source_id, 0, self.enabled,
                            self.records_to_preallocate, self.max_sections_per_record,
                            self.error_block_length, status_gas, notify, self.error_block_length,
                            ack_gas, READ_ACK_PRESERVE, READ_ACK_WRITE)

    @classmethod
    def unpack(cls, raw: bytes, offset: int = 0) -> "GhesV2":
        (kind, source, related, _flags, enabled, prealloc, sections, _raw_len, status_gas, notify,
         block_len, ack_gas, _preserve, _write) = GHES_V2.unpack_from(raw, offset)
        if kind != HEST_TYPE_GHES_V2:
            raise ValueError(f"HEST entry type {kind} is not GHESv2")
        n_type, _n_len, _cwe, _poll, vector, *_ = NOTIFY.unpack(notify)
        return cls(source, Notification(n_type), GAS.unpack(status_gas)[4], GAS.unpack(ack_gas)[4],
                   block_len, vector, related, enabled, sections, prealloc)


def build_hest(entries: list[GhesV2]) -> bytes:
    """A complete HEST with a valid checksum (the table's bytes sum to 0 mod 256)."""
    body = struct.pack("<I", len(entries)) + b"".join(e.pack() for e in entries)
    length = ACPI_HEADER.size + len(body)
    head = ACPI_HEADER.pack(HEST_SIGNATURE, length, HEST_REVISION, 0, b"SBXRAS", b"SANDBOX ", 1, b"SBX ", 1)
    table = bytearray(head + body)
    table[9] = (-sum(table)) & 0xFF  # checksum byte at offset 9
    return bytes(table)


def parse_hest(raw: bytes) -> list[GhesV2]:
    sig, length, _rev, _csum, *_ = ACPI_HEADER.unpack_from(raw, 0)
    if sig != HEST_SIGNATURE or sum(raw[:length]) & 0xFF:
        raise ValueError("not a HEST, or its checksum is wrong")
    (count,) = struct.unpack_from("<I", raw, ACPI_HEADER.size)
    return [GhesV2.unpack(raw, HEST_HEADER_SIZE + i * GHES_V2.size) for i in range(count)]
