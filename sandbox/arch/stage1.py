"""Stage 1 translation of the EL1&0 regime, walked backwards: at which virtual addresses
the guest's tables map given physical addresses, where it may execute them.

Unicorn keys code hooks by the virtual PC, while the sandbox finds the instructions it must
watch (ERET, `msr daifclr` with A, ESB) in the physical image. With the MMU on, a hook
belongs at every virtual alias the guest can execute such an instruction from. This is the
Arm ARM's VMSAv8-64 walk (D8.2 "Translation tables and the translation process"): TTBR0_EL1
for the bottom of the address space and TTBR1_EL1 for the top, sized by TCR_EL1.T0SZ/T1SZ,
granule by TG0/TG1, disabled by EPD0/EPD1; table, block and page descriptors; the
execute-never bits PXN/UXN (D8.4.1) and their hierarchical PXNTable/UXNTable (D8.4.2).
Only 48-bit output addresses (no FEAT_LPA). Pure: memory comes in through `read`.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Callable

SCTLR_M = 1 << 0  # SCTLR_EL1.M: stage 1 MMU enable

# TCR_EL1 granule encodings (Arm ARM D17.2.131): log2 of the granule size.
TG0_GRANULE = {0b00: 12, 0b01: 16, 0b10: 14}
TG1_GRANULE = {0b10: 12, 0b11: 16, 0b01: 14}
TCR_EPD0 = 1 << 7
TCR_EPD1 = 1 << 23

DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1  # table (levels 0-2) or page (level 3); 0 = block
PXN = 1 << 53
UXN = 1 << 54
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
OA_BITS = 48
TTBR_BADDR = ((1 << OA_BITS) - 1) & ~1  # BADDR[47:1]; bit 0 is CnP, [63:48] the ASID
MIN_TXSZ = 16  # 48-bit virtual addresses (no FEAT_LVA)
MAX_TABLES = 1 << 14  # a walk reads at most this many tables (a guest's tables are input)

ReadMemory = Callable[[int, int], "bytes | None"]


@dataclass(frozen=True)
class Regime:
    """The registers that decide the EL1&0 stage 1 translation."""

    sctlr: int
    tcr: int
    ttbr0: int
    ttbr1: int

    @property
    def mmu_on(self) -> bool:
        return bool(self.sctlr & SCTLR_M)


def _block_allowed(granule: int, level: int) -> bool:
    # Block descriptors: level 1 and 2 with 4K, level 2 with 16K and 64K (D8.3.1, no FEAT_LPA).
    return level == 2 or (level == 1 and granule == 12)


class _Walk:
    def __init__(self, read: ReadMemory, physical: list[int]):
        self.read = read
        self.physical = physical  # sorted
        self.found: dict[int, set[int]] = {}
        self.tables = 0

    def half(self, ttbr: int, txsz: int, granule: int | None, va_base: int) -> None:
        if granule is None:
            return  # a reserved TGx encoding: nothing we can follow
        txsz = max(MIN_TXSZ, txsz)
        stride = granule - 3
        inputsize = 64 - txsz
        levels = -(-(inputsize - granule) // stride)
        start = 4 - levels
        top_bits = inputsize - granule - stride * (levels - 1)
        self.table(ttbr & TTBR_BADDR, start, granule, va_base, 1 << top_bits, False, False)

    def table(self, pa: int, level: int, granule: int, va: int, entries: int, pxn: bool, uxn: bool) -> None:
        if self.tables >= MAX_TABLES:
            return
        self.tables += 1
        raw = self.read(pa, 8 * entries)
        if raw is None or len(raw) != 8 * entries:
            return
        shift = granule + (granule - 3) * (3 - level)
        oa_mask = ((1 << OA_BITS) - 1) & ~((1 << shift) - 1)
        for i, d in enumerate(struct.unpack(f"<{entries}Q", raw)):
            if not d & DESC_VALID:
                continue
            at = va + (i << shift)
            if d & DESC_TABLE and level < 3:
                npxn, nuxn = pxn or bool(d & PXN_TABLE), uxn or bool(d & UXN_TABLE)
                if not (npxn and nuxn):
                    next_pa = d & ((1 << OA_BITS) - 1) & ~((1 << granule) - 1)
                    self.table(next_pa, level + 1, granule, at, 1 << (granule - 3), npxn, nuxn)
                continue
            if not d & DESC_TABLE and not _block_allowed(granule, level):
                continue  # reserved (a level-3 descriptor with bit 1 clear is invalid)
            if (pxn or d & PXN) and (uxn or d & UXN):
                continue  # never executable at EL1 or EL0
            oa = d & oa_mask
            lo = bisect.bisect_left(self.physical, oa)
            hi = bisect.bisect_left(self.physical, oa + (1 << shift), lo)
            for p in self.physical[lo:hi]:
                self.found.setdefault(p, set()).add((at + (p - oa)) & 0xFFFFFFFFFFFFFFFF)


def executable_aliases(regime: Regime, physical: "set[int] | list[int]", read: ReadMemory) -> dict[int, set[int]]:
    """For each physical address in `physical`, the virtual addresses the regime maps to it
    with execute permission at EL1 or EL0 (empty when the MMU is off: then VA = PA).
    `read(pa, size)` returns guest memory or None where there is none."""
    if not regime.mmu_on or not physical:
        return {}
    walk = _Walk(read, sorted(physical))
    tcr = regime.tcr
    if not tcr & TCR_EPD0:
        walk.half(regime.ttbr0, tcr & 0x3F, TG0_GRANULE.get((tcr >> 14) & 3), 0)
    if not tcr & TCR_EPD1:
        t1sz = max(MIN_TXSZ, (tcr >> 16) & 0x3F)
        walk.half(regime.ttbr1, t1sz, TG1_GRANULE.get((tcr >> 30) & 3), (1 << 64) - (1 << (64 - t1sz)))
    return walk.found
