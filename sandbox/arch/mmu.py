"""Stage-1 address translation for the EL1&0 regime (Arm ARM D8 "The AArch64 Virtual Memory
System Architecture"), as a pure function.

Unicorn translates guest accesses itself but offers the host no way to translate a virtual
address (its `mem_read` takes physical addresses). The trap dispatcher needs one whenever
the guest runs with the MMU on: the instruction at a trapping PC, the FAR of an abort and
code hooks are all virtual. `translate` walks the guest's tables the way the hardware does
for the cases a guest kernel uses: 4K, 16K and 64K granules, TTBR0/TTBR1 selection with
top-byte-ignore, table/block/page descriptors, 48-bit output addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SCTLR_M = 1 << 0  # stage 1 MMU enable (Arm ARM D17.2.118)

# TCR_EL1 fields (Arm ARM D17.2.131).
_T0SZ_SHIFT, _T1SZ_SHIFT = 0, 16
_EPD0, _EPD1 = 1 << 7, 1 << 23
_TG0_SHIFT, _TG1_SHIFT = 14, 30
_TBI0, _TBI1 = 1 << 37, 1 << 38

# Granule size (log2 bytes) by TCR.TG0 and TCR.TG1 encodings.
_TG0_GRANULE = {0b00: 12, 0b01: 16, 0b10: 14}
_TG1_GRANULE = {0b10: 12, 0b11: 16, 0b01: 14}

_OA_MASK = (1 << 48) - 1  # output address bits [47:0] (no FEAT_LPA)


@dataclass(frozen=True)
class TranslationRegime:
    """The EL1&0 registers a walk reads."""

    sctlr: int
    tcr: int
    ttbr0: int
    ttbr1: int

    @property
    def mmu_on(self) -> bool:
        return bool(self.sctlr & SCTLR_M)


def translate(va: int, regime: TranslationRegime, read_u64: Callable[[int], int | None]) -> int | None:
    """The physical address `va` maps to, or None where the walk faults (no mapping, an
    invalid descriptor, an address outside both regions). With the MMU off, PA = VA
    (Arm ARM D8.2.11: a flat mapping). `read_u64(pa)` reads a descriptor or returns None."""
    va &= 0xFFFFFFFFFFFFFFFF
    if not regime.mmu_on:
        return va & _OA_MASK
    tcr = regime.tcr
    upper = bool(va >> 55 & 1) if tcr & (_TBI1 if va >> 55 & 1 else _TBI0) else bool(va >> 63)
    if upper:
        size, granule, ttbr, disabled, tbi = ((tcr >> _T1SZ_SHIFT) & 0x3F, _TG1_GRANULE.get((tcr >> _TG1_SHIFT) & 3, 12),
                                              regime.ttbr1, tcr & _EPD1, tcr & _TBI1)
    else:
        size, granule, ttbr, disabled, tbi = ((tcr >> _T0SZ_SHIFT) & 0x3F, _TG0_GRANULE.get((tcr >> _TG0_SHIFT) & 3, 12),
                                              regime.ttbr0, tcr & _EPD0, tcr & _TBI0)
    if disabled:
        return None
    inputsize = 64 - size
    top = 56 if tbi else 64
    # VA[top-1:inputsize] must all equal the region's select bit (Arm ARM D8.2.4).
    high = (va >> inputsize) & ((1 << (top - inputsize)) - 1)
    if high != (((1 << (top - inputsize)) - 1) if upper else 0):
        return None
    stride = granule - 3
    levels = -(-(inputsize - granule) // stride)  # ceil
    level = 4 - levels
    # TTBR_ELx.BADDR: the first table is aligned to its own size (bit 0 is CnP).
    table = ttbr & _OA_MASK & ~1
    while True:
        shift = granule + stride * (3 - level)
        width = inputsize - shift if level == 4 - levels else stride
        index = (va >> shift) & ((1 << width) - 1)
        desc = read_u64(table + 8 * index)
        if desc is None or not desc & 1:
            return None
        if level == 3:
            if desc & 3 != 3:
                return None  # a level-3 descriptor with bit 1 clear is reserved
            return ((desc & _OA_MASK) & ~((1 << granule) - 1)) | (va & ((1 << granule) - 1))
        if desc & 2:  # table descriptor
            table = (desc & _OA_MASK) & ~((1 << granule) - 1)
            level += 1
            continue
        # Block descriptor (levels 1 and 2 with 4K, level 2 with 16K/64K).
        return ((desc & _OA_MASK) & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
