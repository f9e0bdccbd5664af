"""A GICv2 (Arm GIC Architecture Specification v2, IHI 0048B) without the Security
Extensions, as QEMU's virt board has by default: the distributor at 0x08000000 and the CPU
interface at 0x08010000, up to 8 CPUs, 256 SPIs.

This module holds the interrupt state and the decision of what each CPU interface signals;
the register maps are in gic_regs.py. Every interrupt source reaches it through
`Vm.raise_interrupt` / `Vm.lower_interrupt` (the `raise_` / `lower` pair of the interrupt
contract); what it signals goes to each vCPU's `InterruptGate` (sandbox/irq.py).

Model (IHI 0048B chapter 3):
- each interrupt is inactive, pending, active, or active and pending; SGIs are pending per
  source CPU; SGIs and PPIs (INTID 0-31) are banked per CPU;
- a level-sensitive interrupt is pending while its line is high, or while latched by a
  GICD_ISPENDR write; an edge-triggered one latches on the rising edge; acknowledging clears
  the latch;
- a CPU interface signals its highest-priority pending interrupt that is enabled, targets
  it, belongs to an enabled group, is not active, has a priority below GICC_PMR and can
  preempt (its group priority is below the running priority); Group 0 is signalled as FIQ
  when GICC_CTLR.FIQEn is set, everything else as IRQ (3.6.1);
- 5 priority bits (32 levels, as a GIC-400): the low 3 bits of every priority are RAZ/WI,
  the minimum binary point is 2 (3.3.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..kvm import EBUSY, EINVAL, kvm_error
from ..memmap import GIC_CPU_BASE, GIC_CPU_SIZE, GIC_DIST_BASE, GIC_DIST_SIZE, NUM_SPIS

if TYPE_CHECKING:
    from ..vm import Vm

MAX_CPUS = 8  # GICv2: CPU targets are an 8-bit mask (IHI 0048B 4.3.12)
PRIORITY_MASK = 0xF8  # 5 implemented priority bits
MIN_BPR = 2  # 7 - (priority bits): IHI 0048B 3.3.3 table 3-2
IDLE_PRIORITY = 0xFF  # GICC_RPR with nothing active
SPURIOUS = 1023  # no interrupt to acknowledge (IHI 0048B 3.2.5)
GROUP1_NOT_ACKED = 1022  # Group 1 HPPI read through GICC_IAR with AckCtl = 0

# GICC_CTLR without the Security Extensions (IHI 0048B 4.4.1, table 4-30).
CTLR_ENABLE_GRP0 = 1 << 0
CTLR_ENABLE_GRP1 = 1 << 1
CTLR_ACKCTL = 1 << 2
CTLR_FIQEN = 1 << 3
CTLR_CBPR = 1 << 4
CTLR_EOIMODE_GRP0 = 1 << 9  # EOImodeS
CTLR_EOIMODE_GRP1 = 1 << 10  # EOImodeNS
CTLR_WRITABLE = 0x7FF


@dataclass
class IrqBank:
    """Per-interrupt state for a range of INTIDs (the SPIs, or one CPU's SGIs and PPIs)."""

    enabled: set[int] = field(default_factory=set)
    latched: set[int] = field(default_factory=set)  # pending latch (edge, or ISPENDR)
    level: set[int] = field(default_factory=set)  # input line high
    active: set[int] = field(default_factory=set)
    edge: set[int] = field(default_factory=set)  # edge-triggered (GICD_ICFGR Int_config[1])
    group1: set[int] = field(default_factory=set)
    priority: dict[int, int] = field(default_factory=dict)


@dataclass
class CpuInterface:
    """One CPU interface and the distributor state banked for its CPU."""

    index: int
    banked: IrqBank = field(default_factory=IrqBank)
    sgi_sources: dict[int, set[int]] = field(default_factory=dict)  # SGI INTID -> source CPUs
    ctlr: int = 0
    pmr: int = 0
    bpr: int = MIN_BPR
    abpr: int = MIN_BPR + 1
    # Active priorities, most recent last: (INTID, source CPU, group priority).
    active_priorities: list[tuple[int, int, int]] = field(default_factory=list)
    signalled: tuple[bool, bool] = (False, False)  # (IRQ, FIQ) last driven


class GicV2:
    """The GICv2 of one Vm; installed as `vm.interrupt_controller` by `GicV2.create`."""

    def __init__(self, vm: "Vm", num_spis: int = NUM_SPIS):
        if not vm.vcpus:
            raise kvm_error(EINVAL, "create the vCPUs before the GIC (KVM_DEV_ARM_VGIC_CTRL_INIT)")
        if len(vm.vcpus) > MAX_CPUS:
            raise kvm_error(EINVAL, f"a GICv2 serves at most {MAX_CPUS} CPUs, not {len(vm.vcpus)}")
        if num_spis % 32 or not 0 < num_spis <= 988:
            raise kvm_error(EINVAL, "the number of SPIs must be a multiple of 32, at most 988")
        self.vm = vm
        self.num_irqs = 32 + num_spis
        self.ctlr = 0  # GICD_CTLR: EnableGrp0, EnableGrp1
        self.spi = IrqBank()
        self.targets: dict[int, int] = {}  # SPI -> CPU target mask
        self.cpus = [CpuInterface(i) for i in range(len(vm.vcpus))]
        for cpu in self.cpus:
            cpu.banked.edge.update(range(16))  # SGIs are edge-triggered (4.3.13)
            cpu.banked.enabled.update(range(16))  # and always enabled, as on a GIC-400
        self.initialized = True

    @classmethod
    def create(cls, vm: "Vm", num_spis: int = NUM_SPIS) -> "GicV2":
        """Build the GIC for the vCPUs `vm` has, map its two register frames at QEMU virt's
        addresses, give every vCPU its interrupt gate and install it as the Vm's
        interrupt controller."""
        from ..irq import InterruptGate
        from .gic_regs import CpuInterfaceRegs, DistributorRegs

        if vm.interrupt_controller is not None:
            raise kvm_error(EBUSY, "the Vm already has an interrupt controller")
        gic = cls(vm, num_spis)
        for vcpu in vm.vcpus:
            vcpu.irq = InterruptGate(vcpu)
        vm.interrupt_controller = gic
        vm.add_device(GIC_DIST_BASE, GIC_DIST_SIZE, DistributorRegs(gic), "gic-dist")
        vm.add_device(GIC_CPU_BASE, GIC_CPU_SIZE, CpuInterfaceRegs(gic), "gic-cpu")
        return gic

    # -- the interrupt contract ----------------------------------------------------------------

    def cpu_of(self, mpidr: int | None) -> CpuInterface:
        if mpidr is None:
            return self.cpus[0]
        for vcpu, cpu in zip(self.vm.vcpus, self.cpus):
            if vcpu.mpidr == mpidr:
                return cpu
        raise kvm_error(EINVAL, f"no vCPU with MPIDR {mpidr:#x}")

    def _check(self, intid: int) -> None:
        if not 0 <= intid < self.num_irqs:
            raise kvm_error(EINVAL, f"INTID {intid} is outside this GIC's 0..{self.num_irqs - 1}")

    def raise_(self, intid: int, mpidr: int | None = None) -> None:
        """Drive interrupt line `intid` high (PPIs and SGIs: on the CPU `mpidr` names)."""
        self._check(intid)
        if intid < 16:  # an SGI the host raises: pending from the target CPU itself
            cpu = self.cpu_of(mpidr)
            cpu.sgi_sources.setdefault(intid, set()).add(cpu.index)
        else:
            bank = self.cpu_of(mpidr).banked if intid < 32 else self.spi
            if intid not in bank.level:
                bank.level.add(intid)
                if intid in bank.edge and intid not in bank.latched:
                    bank.latched.add(intid)  # rising edge
                    if self.vm.observers:  # an instance made pending (sandbox.fuzz.irq_invariants)
                        self._notify("irq_pend", self.cpu_of(mpidr).index if intid < 32 else 0, intid)
        self.update()

    def lower(self, intid: int, mpidr: int | None = None) -> None:
        """Drive interrupt line `intid` low."""
        self._check(intid)
        if intid >= 16:
            bank = self.cpu_of(mpidr).banked if intid < 32 else self.spi
            bank.level.discard(intid)
            self.update()

    # -- state queries -------------------------------------------------------------------------

    def bank(self, cpu: CpuInterface, intid: int) -> IrqBank:
        return cpu.banked if intid < 32 else self.spi

    def priority(self, cpu: CpuInterface, intid: int) -> int:
        return self.bank(cpu, intid).priority.get(intid, 0)

    def is_pending(self, cpu: CpuInterface, intid: int) -> bool:
        if intid < 16:
            return bool(cpu.sgi_sources.get(intid))
        bank = self.bank(cpu, intid)
        return intid in bank.latched or (intid in bank.level and intid not in bank.edge)

    def _candidates(self, cpu: CpuInterface) -> list[int]:
        """Pending, enabled, not active interrupts that target `cpu`."""
        out = [i for i, sources in cpu.sgi_sources.items() if sources]
        b = cpu.banked
        for i in (b.latched | (b.level - b.edge)):
            if i >= 16:
                out.append(i)
        s = self.spi
        for i in (s.latched | (s.level - s.edge)):
            if self.targets.get(i, 0) & (1 << cpu.index):
                out.append(i)
        return [i for i in out if i in self.bank(cpu, i).enabled and i not in self.bank(cpu, i).active]

    def group_enabled(self, cpu: CpuInterface, group1: bool) -> bool:
        bit = 2 if group1 else 1
        return bool(self.ctlr & bit) and bool(cpu.ctlr & bit)

    def highest_pending(self, cpu: CpuInterface) -> int | None:
        """The highest-priority pending interrupt of `cpu` whose group is enabled (lowest
        priority value, then lowest INTID), regardless of PMR and preemption (GICC_HPPIR)."""
        best: tuple[int, int] | None = None
        for intid in self._candidates(cpu):
            if not self.group_enabled(cpu, intid in self.bank(cpu, intid).group1):
                continue
            key = (self.priority(cpu, intid), intid)
            if best is None or key < best:
                best = key
        return None if best is None else best[1]

    def group_priority(self, cpu: CpuInterface, priority: int, group1: bool) -> int:
        """The preemption-relevant part of a priority (IHI 0048B 3.3.3): Group 1 uses
        GICC_ABPR - 1 unless GICC_CTLR.CBPR makes it share GICC_BPR."""
        bpr = cpu.bpr if (not group1 or cpu.ctlr & CTLR_CBPR) else cpu.abpr - 1
        return priority & ~((2 << bpr) - 1) & 0xFF

    def running_priority(self, cpu: CpuInterface) -> int:
        """GICC_RPR: the group priority of the most recent active interrupt not yet dropped."""
        return cpu.active_priorities[-1][2] if cpu.active_priorities else IDLE_PRIORITY

    def signalled(self, cpu: CpuInterface) -> int | None:
        """The interrupt `cpu` signals to its PE now, if any (IHI 0048B 3.2.2, 3.3)."""
        intid = self.highest_pending(cpu)
        if intid is None:
            return None
        prio = self.priority(cpu, intid)
        group1 = intid in self.bank(cpu, intid).group1
        if prio >= cpu.pmr or self.group_priority(cpu, prio, group1) >= self.running_priority(cpu):
            return None
        return intid

    def update(self) -> None:
        """Recompute what every CPU interface signals and drive the vCPUs' lines."""
        for vcpu, cpu in zip(self.vm.vcpus, self.cpus):
            intid = self.signalled(cpu)
            irq = fiq = False
            if intid is not None:
                group0 = intid not in self.bank(cpu, intid).group1
                fiq = group0 and bool(cpu.ctlr & CTLR_FIQEN)
                irq = not fiq
            if (irq, fiq) != cpu.signalled:
                cpu.signalled = (irq, fiq)
                if vcpu.irq is not None:
                    vcpu.irq.set_lines(irq, fiq)

    # -- acknowledge, end of interrupt, deactivate (IHI 0048B 3.2) ------------------------------------

    def acknowledge(self, cpu: CpuInterface, group1_alias: bool = False) -> int:
        """GICC_IAR (or GICC_AIAR for Group 1): the signalled interrupt becomes active."""
        intid = self.signalled(cpu)
        if intid is None:
            return SPURIOUS
        bank = self.bank(cpu, intid)
        group1 = intid in bank.group1
        if group1 and not group1_alias and not cpu.ctlr & CTLR_ACKCTL:
            return GROUP1_NOT_ACKED
        if group1_alias and not group1:
            return SPURIOUS
        source = 0
        if intid < 16:
            sources = cpu.sgi_sources[intid]
            source = min(sources)
            sources.discard(source)
        else:
            bank.latched.discard(intid)
        bank.active.add(intid)
        cpu.active_priorities.append((intid, source, self.group_priority(cpu, self.priority(cpu, intid), group1)))
        self.update()
        if self.vm.observers:
            self._notify("irq_ack", cpu.index, intid)
        return intid | (source << 10)

    def _notify(self, kind: str, index: int, intid: int) -> None:
        vcpu = self.vm.vcpus[index]
        self.vm.notify(kind, vcpu, vcpu.reg("pc"), intid=intid)

    def end_of_interrupt(self, cpu: CpuInterface, value: int) -> None:
        """GICC_EOIR: priority drop of the interrupt, and its deactivation unless EOImode
        splits the two (then GICC_DIR deactivates)."""
        intid, source = value & 0x3FF, (value >> 10) & 7
        for n in range(len(cpu.active_priorities) - 1, -1, -1):
            entry = cpu.active_priorities[n]
            if entry[0] == intid and (intid >= 16 or entry[1] == source):
                del cpu.active_priorities[n]
                break
        else:
            return  # not an active interrupt of this CPU: UNPREDICTABLE, ignored
        group1 = intid in self.bank(cpu, intid).group1
        if not cpu.ctlr & (CTLR_EOIMODE_GRP1 if group1 else CTLR_EOIMODE_GRP0):
            self.bank(cpu, intid).active.discard(intid)
        self.update()

    def deactivate(self, cpu: CpuInterface, value: int) -> None:
        """GICC_DIR."""
        intid = value & 0x3FF
        if intid < self.num_irqs:
            self.bank(cpu, intid).active.discard(intid)
            self.update()

    def send_sgi(self, source: CpuInterface, value: int) -> None:
        """GICD_SGIR: TargetListFilter [25:24], CPUTargetList [23:16], SGIINTID [3:0]."""
        intid, targets, filt = value & 0xF, (value >> 16) & 0xFF, (value >> 24) & 3
        if filt == 1:
            targets = 0xFF & ~(1 << source.index)
        elif filt == 2:
            targets = 1 << source.index
        elif filt == 3:
            return  # reserved
        for cpu in self.cpus:
            if targets & (1 << cpu.index):
                cpu.sgi_sources.setdefault(intid, set()).add(source.index)
        self.update()

    # -- migration -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        def bank(b: IrqBank) -> dict[str, Any]:
            return {"enabled": sorted(b.enabled), "latched": sorted(b.latched), "level": sorted(b.level),
                    "active": sorted(b.active), "edge": sorted(b.edge), "group1": sorted(b.group1),
                    "priority": {str(k): v for k, v in sorted(b.priority.items())}}
        return {
            "version": 2, "num_irqs": self.num_irqs, "ctlr": self.ctlr, "spi": bank(self.spi),
            "targets": {str(k): v for k, v in sorted(self.targets.items())},
            "cpus": [{"banked": bank(c.banked), "sgi_sources": {str(k): sorted(v) for k, v in c.sgi_sources.items()},
                      "ctlr": c.ctlr, "pmr": c.pmr, "bpr": c.bpr, "abpr": c.abpr,
                      "active_priorities": [list(e) for e in c.active_priorities]} for c in self.cpus],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 2 or state.get("num_irqs") != self.num_irqs or len(state["cpus"]) != len(self.cpus):
            raise kvm_error(EINVAL, "GIC state does not match this machine (GIC version, interrupts or CPUs)")

        def bank(b: IrqBank, s: dict[str, Any]) -> None:
            for name in ("enabled", "latched", "level", "active", "edge", "group1"):
                setattr(b, name, {int(i) for i in s[name]})
            b.priority = {int(k): int(v) for k, v in s["priority"].items()}
        self.ctlr = int(state["ctlr"])
        bank(self.spi, state["spi"])
        self.targets = {int(k): int(v) for k, v in state["targets"].items()}
        for cpu, s in zip(self.cpus, state["cpus"]):
            bank(cpu.banked, s["banked"])
            cpu.sgi_sources = {int(k): {int(x) for x in v} for k, v in s["sgi_sources"].items()}
            cpu.ctlr, cpu.pmr, cpu.bpr, cpu.abpr = (int(s[k]) for k in ("ctlr", "pmr", "bpr", "abpr"))
            cpu.active_priorities = [(int(a), int(b), int(c)) for a, b, c in s["active_priorities"]]
            cpu.signalled = (False, False)
        self.update()
