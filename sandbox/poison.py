"""Poisoned guest-physical memory: byte ranges whose data a guest access never returns
(an uncorrectable memory error, as EINJ or a real DIMM fault would leave it).

Pure bookkeeping: which ranges are poisoned, which pages must be protected in Unicorn so
that accesses trap, and whether an access overlaps poison. The vCPU layer protects the pages
(`mem_protect`), steps accesses to the clean bytes of a protected page, and turns accesses to
poisoned bytes into KVM_EXIT_ARM_SEA or an injected synchronous external abort.
"""

from __future__ import annotations

PAGE = 0x1000


class PoisonMap:
    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []  # sorted, disjoint [start, end)

    def add(self, start: int, size: int) -> None:
        merged = [(start, start + size)]
        for r in self.ranges:
            merged.append(r)
        merged.sort()
        out: list[tuple[int, int]] = []
        for s, e in merged:
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        self.ranges = out

    def remove(self, start: int, size: int) -> None:
        end = start + size
        out: list[tuple[int, int]] = []
        for s, e in self.ranges:
            if e <= start or s >= end:
                out.append((s, e))
                continue
            if s < start:
                out.append((s, start))
            if e > end:
                out.append((end, e))
        self.ranges = out

    def overlaps(self, address: int, size: int) -> bool:
        end = address + max(size, 1)
        return any(s < end and address < e for s, e in self.ranges)

    def pages(self) -> set[int]:
        pages: set[int] = set()
        for s, e in self.ranges:
            pages.update(range(s & ~(PAGE - 1), e, PAGE))
        return pages

    def __bool__(self) -> bool:
        return bool(self.ranges)
