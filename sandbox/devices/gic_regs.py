"""The GICv2 register frames: the distributor (GICD_*, IHI 0048B 4.3) and the CPU interface
(GICC_*, 4.4) as MMIO devices over the state in gic.py.

Both frames are banked per CPU (GICD_ISENABLER0, IPRIORITYR0-7, ITARGETSR0-7, every GICC_
register), so each vCPU maps its own view (`for_vcpu`), the way each CPU of a real GIC sees
its own copy at the same address. Registers are 32-bit; the byte-array registers
(IPRIORITYR, ITARGETSR, CPENDSGIR, SPENDSGIR) also take byte accesses, and narrower
accesses to the others read or write the addressed bytes of the word (4.1.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .gic import (CTLR_WRITABLE, IDLE_PRIORITY, MIN_BPR, PRIORITY_MASK, SPURIOUS, CpuInterface, GicV2,
                  IrqBank)

if TYPE_CHECKING:
    from ..vcpu import Vcpu

# Distributor offsets (IHI 0048B table 4-1).
GICD_CTLR, GICD_TYPER, GICD_IIDR = 0x000, 0x004, 0x008
GICD_IGROUPR, GICD_ISENABLER, GICD_ICENABLER = 0x080, 0x100, 0x180
GICD_ISPENDR, GICD_ICPENDR, GICD_ISACTIVER, GICD_ICACTIVER = 0x200, 0x280, 0x300, 0x380
GICD_IPRIORITYR, GICD_ITARGETSR, GICD_ICFGR = 0x400, 0x800, 0xC00
GICD_SGIR, GICD_CPENDSGIR, GICD_SPENDSGIR = 0xF00, 0xF10, 0xF20
# CPU interface offsets (table 4-2).
GICC_CTLR, GICC_PMR, GICC_BPR, GICC_IAR, GICC_EOIR, GICC_RPR, GICC_HPPIR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18
GICC_ABPR, GICC_AIAR, GICC_AEOIR, GICC_AHPPIR = 0x1C, 0x20, 0x24, 0x28
GICC_APR0, GICC_NSAPR0, GICC_IIDR, GICC_DIR = 0xD0, 0xE0, 0xFC, 0x1000

# Identification as a GIC-400 r0p1 (GIC-400 TRM: GICD_IIDR, GICC_IIDR, peripheral ID registers,
# PIDR2.ArchRev = 2 for GICv2).
GICD_IIDR_VALUE = 0x0200143B
GICC_IIDR_VALUE = 0x0202143B
_DIST_ID = {0xFD0: 0x04, 0xFE0: 0x90, 0xFE4: 0xB4, 0xFE8: 0x2B, 0xFEC: 0x00,
            0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1}


def _sub_word(word: int, offset: int, size: int) -> int:
    return (word >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)


class _DistributorView:
    """GICD_* as one CPU sees them."""

    def __init__(self, gic: GicV2, cpu: CpuInterface):
        self.gic, self.cpu = gic, cpu

    # -- bitmap registers (one bit per INTID) --------------------------------------------------

    def _bits(self, n: int) -> tuple[IrqBank, range]:
        first = 32 * n
        return (self.cpu.banked if n == 0 else self.gic.spi), range(first, min(first + 32, self.gic.num_irqs))

    def _read_bitmap(self, base: int, n: int) -> int:
        bank, intids = self._bits(n)
        if base == GICD_IGROUPR:
            members = bank.group1
        elif base in (GICD_ISENABLER, GICD_ICENABLER):
            members = bank.enabled
        elif base in (GICD_ISACTIVER, GICD_ICACTIVER):
            members = bank.active
        else:
            return sum(1 << (i & 31) for i in intids if self.gic.is_pending(self.cpu, i))
        return sum(1 << (i & 31) for i in intids if i in members)

    def _write_bitmap(self, base: int, n: int, value: int, mask: int) -> None:
        bank, intids = self._bits(n)
        chosen = [i for i in intids if value & mask & (1 << (i & 31))]
        if base == GICD_IGROUPR:
            for i in intids:
                if mask & (1 << (i & 31)):
                    (bank.group1.add if value & (1 << (i & 31)) else bank.group1.discard)(i)
        elif base == GICD_ISENABLER:
            bank.enabled.update(chosen)
        elif base == GICD_ICENABLER:
            bank.enabled.difference_update(i for i in chosen if i >= 16)  # SGIs stay enabled
        elif base == GICD_ISPENDR:
            bank.latched.update(i for i in chosen if i >= 16)  # SGIs: GICD_SPENDSGIR
        elif base == GICD_ICPENDR:
            bank.latched.difference_update(i for i in chosen if i >= 16)
        elif base == GICD_ISACTIVER:
            bank.active.update(chosen)
        elif base == GICD_ICACTIVER:
            bank.active.difference_update(chosen)
        self.gic.update()

    # -- byte registers -----------------------------------------------------------------------

    def _read_byte(self, offset: int) -> int:
        gic, cpu = self.gic, self.cpu
        if GICD_IPRIORITYR <= offset < GICD_IPRIORITYR + gic.num_irqs:
            return gic.priority(cpu, offset - GICD_IPRIORITYR)
        if GICD_ITARGETSR <= offset < GICD_ITARGETSR + gic.num_irqs:
            intid = offset - GICD_ITARGETSR
            # SGIs and PPIs: read-only, the reading CPU's own bit (4.3.12).
            return (1 << cpu.index) if intid < 32 else gic.targets.get(intid, 0)
        if GICD_CPENDSGIR <= offset < GICD_SPENDSGIR + 16:
            intid = (offset - GICD_CPENDSGIR) & 0xF
            return sum(1 << s for s in cpu.sgi_sources.get(intid, ()))
        return 0

    def _write_byte(self, offset: int, value: int) -> None:
        gic, cpu = self.gic, self.cpu
        if GICD_IPRIORITYR <= offset < GICD_IPRIORITYR + gic.num_irqs:
            intid = offset - GICD_IPRIORITYR
            gic.bank(cpu, intid).priority[intid] = value & PRIORITY_MASK
        elif GICD_ITARGETSR + 32 <= offset < GICD_ITARGETSR + gic.num_irqs:
            gic.targets[offset - GICD_ITARGETSR] = value & ((1 << len(gic.cpus)) - 1)
        elif GICD_CPENDSGIR <= offset < GICD_CPENDSGIR + 16:
            cpu.sgi_sources.get(offset - GICD_CPENDSGIR, set()).difference_update(s for s in range(8) if value & (1 << s))
        elif GICD_SPENDSGIR <= offset < GICD_SPENDSGIR + 16:
            sources = cpu.sgi_sources.setdefault(offset - GICD_SPENDSGIR, set())
            sources.update(s for s in range(len(gic.cpus)) if value & (1 << s))
        else:
            return
        gic.update()

    @staticmethod
    def _is_byte_register(offset: int) -> bool:
        return (GICD_IPRIORITYR <= offset < GICD_ICFGR) or (GICD_CPENDSGIR <= offset < GICD_SPENDSGIR + 16)

    # -- words ----------------------------------------------------------------------------------

    def _read_word(self, offset: int) -> int:
        gic = self.gic
        if offset == GICD_CTLR:
            return gic.ctlr
        if offset == GICD_TYPER:
            # ITLinesNumber [4:0], CPUNumber [7:5]; no Security Extensions, no LPIs (4.3.2).
            return (gic.num_irqs // 32 - 1) | ((len(gic.cpus) - 1) << 5)
        if offset == GICD_IIDR:
            return GICD_IIDR_VALUE
        if GICD_IGROUPR <= offset < GICD_IPRIORITYR:
            base, n = offset & ~0x7F, (offset & 0x7F) // 4
            return self._read_bitmap(base, n) if n < gic.num_irqs // 32 else 0
        if GICD_ICFGR <= offset < GICD_ICFGR + gic.num_irqs // 4:
            first = (offset - GICD_ICFGR) * 4
            word = 0
            for k in range(16):
                intid = first + k
                if intid < gic.num_irqs and intid in gic.bank(self.cpu, intid).edge:
                    word |= 2 << (2 * k)  # Int_config[1]: edge-triggered
            return word
        if offset in _DIST_ID:
            return _DIST_ID[offset]
        return 0

    def _write_word(self, offset: int, value: int, mask: int) -> None:
        gic = self.gic
        if offset == GICD_CTLR:
            gic.ctlr = (gic.ctlr & ~mask | value & mask) & 3
            gic.update()
        elif GICD_IGROUPR <= offset < GICD_IPRIORITYR:
            base, n = offset & ~0x7F, (offset & 0x7F) // 4
            if n < gic.num_irqs // 32:
                self._write_bitmap(base, n, value, mask)
        elif GICD_ICFGR + 4 <= offset < GICD_ICFGR + gic.num_irqs // 4:
            # ICFGR0 (SGIs) is read-only; Int_config[1] of PPIs and SPIs is programmable.
            first = (offset - GICD_ICFGR) * 4
            for k in range(16):
                intid = first + k
                if intid < gic.num_irqs and mask & (2 << (2 * k)):
                    bank = gic.bank(self.cpu, intid)
                    (bank.edge.add if value & (2 << (2 * k)) else bank.edge.discard)(intid)
            gic.update()
        elif offset == GICD_SGIR and mask == 0xFFFFFFFF:
            gic.send_sgi(self.cpu, value)

    # -- the MMIO device interface --------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if self._is_byte_register(offset):
            return sum(self._read_byte(offset + k) << (8 * k) for k in range(size))
        return _sub_word(self._read_word(offset & ~3), offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        if self._is_byte_register(offset):
            for k in range(size):
                self._write_byte(offset + k, (value >> (8 * k)) & 0xFF)
            return
        shift = 8 * (offset & 3)
        mask = ((1 << (8 * size)) - 1) << shift
        self._write_word(offset & ~3, (value << shift) & 0xFFFFFFFF, mask & 0xFFFFFFFF)


class _CpuInterfaceView:
    """GICC_* of one CPU."""

    def __init__(self, gic: GicV2, cpu: CpuInterface):
        self.gic, self.cpu = gic, cpu

    def read(self, offset: int, size: int) -> int:
        return _sub_word(self._read_word(offset & ~3), offset, size)

    def _read_word(self, offset: int) -> int:
        gic, cpu = self.gic, self.cpu
        if offset == GICC_CTLR:
            return cpu.ctlr
        if offset == GICC_PMR:
            return cpu.pmr
        if offset == GICC_BPR:
            return cpu.bpr
        if offset == GICC_ABPR:
            return cpu.abpr
        if offset in (GICC_IAR, GICC_AIAR):
            return gic.acknowledge(cpu, group1_alias=offset == GICC_AIAR)
        if offset == GICC_RPR:
            return gic.running_priority(cpu)
        if offset in (GICC_HPPIR, GICC_AHPPIR):
            intid = gic.highest_pending(cpu)
            if intid is None:
                return SPURIOUS
            source = min(cpu.sgi_sources[intid]) if intid < 16 else 0
            return intid | (source << 10)
        if offset == GICC_APR0:
            # One bit per active group priority level (the recommended layout, 4.4.16).
            return sum(1 << (e[2] >> 3) for e in cpu.active_priorities) & 0xFFFFFFFF
        if offset == GICC_IIDR:
            return GICC_IIDR_VALUE
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        gic, cpu = self.gic, self.cpu
        offset &= ~3
        if offset == GICC_CTLR:
            cpu.ctlr = value & CTLR_WRITABLE
        elif offset == GICC_PMR:
            cpu.pmr = value & PRIORITY_MASK
        elif offset == GICC_BPR:
            cpu.bpr = max(MIN_BPR, value & 7)
        elif offset == GICC_ABPR:
            cpu.abpr = max(MIN_BPR + 1, value & 7)
        elif offset in (GICC_EOIR, GICC_AEOIR):
            gic.end_of_interrupt(cpu, value)
            return
        elif offset == GICC_DIR:
            gic.deactivate(cpu, value)
            return
        else:
            return  # read-only or reserved (APRn are kept by the model itself)
        gic.update()


class _BankedFrame:
    """A register frame every vCPU maps its own view of (`for_vcpu`); the host's accesses
    (no CPU) see CPU 0's."""

    view: type = _DistributorView

    def __init__(self, gic: GicV2):
        self.gic = gic

    def for_vcpu(self, vcpu: "Vcpu") -> "_DistributorView | _CpuInterfaceView":
        return self.view(self.gic, self.gic.cpus[vcpu.index])

    def read(self, offset: int, size: int) -> int:
        return self.view(self.gic, self.gic.cpus[0]).read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.view(self.gic, self.gic.cpus[0]).write(offset, size, value)


class DistributorRegs(_BankedFrame):
    """The GICD_* frame."""

    view = _DistributorView


class CpuInterfaceRegs(_BankedFrame):
    """The GICC_* frame."""

    view = _CpuInterfaceView


__all__ = ["CpuInterfaceRegs", "DistributorRegs", "IDLE_PRIORITY"]
