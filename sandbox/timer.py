"""The architected generic timer of one vCPU, on deterministic time.

Time is guest instructions, not host time: every vCPU reads the Vm's one system counter
(sandbox/system_counter.py), which advances by TICKS_PER_INSTRUCTION for every instruction
any vCPU retires and jumps ahead while every vCPU idles in WFI with a timer armed (as
QEMU's -icount does with sleep=off); CNTFRQ_EL0 reads CNTFRQ_HZ. So the guest sees
CNTFRQ_HZ / TICKS_PER_INSTRUCTION instructions per second (shared by the vCPUs that run),
and two runs of the same guest read the same counter values and take their timer
interrupts at the same instructions: a run with timers replays exactly.

What Unicorn 2.1.4 does with these registers (measured): CNTFRQ_EL0 = 62.5 MHz; CNTPCT/CNTVCT
follow host time (CLOCK_MONOTONIC / 16 ns, minus CNTVOFF_EL2); writes to CNTV_/CNTP_ CTL
and CVAL are discarded (they read 0) and nothing ever fires. So every counter and timer
register is emulated here, through `SysregIntercept` (EL1 cannot be made to trap CNTVCT or
CNTV_* on Armv8.0). EL0 accesses the guest did not allow in CNTKCTL_EL1 are left to Unicorn,
which makes them UNDEFINED itself.

Exactness: the vCPU always runs count-limited while it has a timer; a run stops at the
instruction where an armed timer's compare value is reached (`instructions_until_event`),
and a timer programmed during a run lowers that run's limit (`icount.set_limit`). The
timer of a vCPU that is not running is looked at when the turn passes (sandbox/smp.py):
it cannot take its interrupt earlier than its next instruction anyway. The timer's output
is a level-sensitive PPI raised and lowered through `Vm.raise_interrupt` /
`Vm.lower_interrupt` (the virtual timer on INTID 27, the EL1 physical timer on 30, as QEMU
virt wires them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import icount
from .arch import pstate as ps
from .kvm import EBUSY, kvm_error
from .arch.sysreg import SYSREGS, SysReg
from .memmap import PHYS_TIMER_INTID, VIRT_TIMER_INTID
from .sysreg_intercept import SysregIntercept  # noqa: F401 (the type of vcpu.intercept)
from .system_counter import CNTFRQ_HZ, MASK64 as _MASK64, TICKS_PER_INSTRUCTION, SystemCounter

if TYPE_CHECKING:
    from .vcpu import Vcpu

# CNTx_CTL_EL0 (Arm ARM D17.8): ENABLE, IMASK, ISTATUS (read-only).
CTL_ENABLE = 1 << 0
CTL_IMASK = 1 << 1
CTL_ISTATUS = 1 << 2

# CNTKCTL_EL1 EL0 access controls (Arm ARM D17.8.6).
EL0PCTEN = 1 << 0
EL0VCTEN = 1 << 1
EL0VTEN = 1 << 8
EL0PTEN = 1 << 9

_CNTKCTL = SYSREGS["CNTKCTL_EL1"]


@dataclass
class TimerState:
    """One EL1 timer (CNTV_* or CNTP_*): its registers and its output line."""

    name: str
    intid: int
    ctl: int = 0  # ENABLE and IMASK as written
    cval: int = 0
    line: bool = False  # the PPI's level as last driven


class GenericTimer:
    """CNTPCT/CNTVCT, CNTFRQ and the EL1 virtual and physical timers of one vCPU."""

    def __init__(self, vcpu: "Vcpu", intercept: SysregIntercept):
        self.vcpu = vcpu
        self.intercept = intercept
        self.virt = TimerState("virt", VIRT_TIMER_INTID)
        self.phys = TimerState("phys", PHYS_TIMER_INTID)
        self.cntvoff = 0  # CNTVOFF_EL2: the host's offset of the virtual count
        self.counter: SystemCounter = vcpu.vm.system_counter  # shared by every vCPU
        self.accesses = 0  # emulated register accesses (for benchmarks)
        r = SYSREGS
        intercept.on(r["CNTFRQ_EL0"], read=self._read_cntfrq)
        intercept.on(r["CNTPCT_EL0"], read=self._read_cntpct)
        intercept.on(r["CNTVCT_EL0"], read=self._read_cntvct)
        for prefix, timer, enable in (("CNTV", self.virt, EL0VTEN), ("CNTP", self.phys, EL0PTEN)):
            intercept.on(r[f"{prefix}_CTL_EL0"], read=self._reader(timer, "ctl", enable),
                         write=self._writer(timer, "ctl", enable))
            intercept.on(r[f"{prefix}_CVAL_EL0"], read=self._reader(timer, "cval", enable),
                         write=self._writer(timer, "cval", enable))
            intercept.on(r[f"{prefix}_TVAL_EL0"], read=self._reader(timer, "tval", enable),
                         write=self._writer(timer, "tval", enable))
        vcpu.uc.cpr_write(*r["CNTFRQ_EL0"], CNTFRQ_HZ)

    # -- the counter -------------------------------------------------------------------------

    def physical_count(self) -> int:
        """CNTPCT_EL0 now (the system count): at an instruction boundary between runs, or
        (inside a run) the value the instruction being executed reads."""
        return self.counter.count()

    def virtual_count(self) -> int:
        """CNTVCT_EL0 = CNTPCT_EL0 - CNTVOFF_EL2 (Arm ARM D11.2.2)."""
        return (self.physical_count() - self.cntvoff) & _MASK64

    def set_virtual_count(self, value: int) -> None:
        """KVM_REG_ARM_TIMER_CNT: make the guest's virtual count read `value` now (KVM
        adjusts CNTVOFF_EL2 the same way)."""
        self.cntvoff = (self.physical_count() - value) & _MASK64
        self.update()

    def _count_for(self, timer: TimerState) -> int:
        return self.virtual_count() if timer is self.virt else self.physical_count()

    # -- timer conditions --------------------------------------------------------------------

    def _met(self, timer: TimerState, count: int) -> bool:
        # ISTATUS: enabled and CompareValue <= count (Arm ARM D11.2.4, QEMU gt_recalc_timer).
        return bool(timer.ctl & CTL_ENABLE) and count >= timer.cval

    def update(self) -> None:
        """Drive each timer's PPI from its condition (ENABLE, ISTATUS and not IMASK)."""
        for timer in (self.virt, self.phys):
            level = self._met(timer, self._count_for(timer)) and not timer.ctl & CTL_IMASK
            if level != timer.line:
                timer.line = level
                vm = self.vcpu.vm
                if level:
                    vm.raise_interrupt(timer.intid, self.vcpu.mpidr)
                else:
                    vm.lower_interrupt(timer.intid, self.vcpu.mpidr)

    def ticks_to_event(self) -> int | None:
        """Ticks until the next armed timer asserts its interrupt, or None."""
        best = None
        for timer in (self.virt, self.phys):
            if timer.line or timer.ctl & (CTL_ENABLE | CTL_IMASK) != CTL_ENABLE:
                continue
            ticks = timer.cval - self._count_for(timer)
            if ticks > 0 and (best is None or ticks < best):
                best = ticks
        return best

    def instructions_until_event(self, limit: int) -> int:
        """The count limit for the next run: `limit` (0 = none) lowered to stop at the
        instruction where an armed timer's compare value is reached."""
        ticks = self.ticks_to_event()
        n = limit or icount.UNBOUNDED
        if ticks is not None:
            n = min(n, -(-ticks // TICKS_PER_INSTRUCTION))
        return n

    def _reschedule(self) -> None:
        """After the guest programmed a timer inside a run: drive the line now, and stop the
        run where the new compare value will be reached if that is sooner than planned."""
        self.update()
        v = self.vcpu
        ticks = self.ticks_to_event()
        if ticks is None or not (v._in_emulation and v._counting):
            return
        started = icount.started_instructions(v.uc) or 0  # includes the MSR doing this
        limit = icount.run_limit(v.uc)
        # The instruction that reads the compare value is number started + ticks: stop
        # before it starts.
        stop_at = started - 1 + -(-ticks // TICKS_PER_INSTRUCTION)
        if limit is not None and stop_at < limit:
            icount.set_limit(v.uc, stop_at)

    # -- register accesses ---------------------------------------------------------------------

    def _el0_denied(self, enable_bits: int) -> bool:
        if ps.el(self.intercept.pstate()) != 0:
            return False
        return not self.vcpu.uc.cpr_read(*_CNTKCTL) & enable_bits

    def _read_cntfrq(self, _reg: SysReg) -> int | None:
        return None if self._el0_denied(EL0PCTEN | EL0VCTEN) else CNTFRQ_HZ

    def _read_cntpct(self, _reg: SysReg) -> int | None:
        self.accesses += 1
        return None if self._el0_denied(EL0PCTEN) else self.physical_count()

    def _read_cntvct(self, _reg: SysReg) -> int | None:
        self.accesses += 1
        return None if self._el0_denied(EL0VCTEN) else self.virtual_count()

    def _reader(self, timer: TimerState, field: str, enable: int):  # noqa: ANN202
        def read(_reg: SysReg) -> int | None:
            self.accesses += 1
            if self._el0_denied(enable):
                return None
            count = self._count_for(timer)
            if field == "ctl":
                return timer.ctl | (CTL_ISTATUS if self._met(timer, count) else 0)
            if field == "cval":
                return timer.cval
            # TVAL reads (CVAL - count)[31:0] (Arm ARM D11.2.4, TimerValue view).
            return (timer.cval - count) & 0xFFFFFFFF
        return read

    def _writer(self, timer: TimerState, field: str, enable: int):  # noqa: ANN202
        def write(_reg: SysReg, value: int) -> bool:
            self.accesses += 1
            if self._el0_denied(enable):
                return False
            if field == "ctl":
                timer.ctl = value & (CTL_ENABLE | CTL_IMASK)
            elif field == "cval":
                timer.cval = value & _MASK64
            else:
                # TVAL write: CVAL = count + SignExtend(value[31:0]).
                tval = value & 0xFFFFFFFF
                if tval & 0x80000000:
                    tval -= 1 << 32
                timer.cval = (self._count_for(timer) + tval) & _MASK64
            self._reschedule()
            return True
        return write

    # -- migration ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Migratable state: the (system) physical count now, CNTVOFF and both timers."""
        return {"count": self.physical_count(), "cntvoff": self.cntvoff,
                "timers": {t.name: {"ctl": t.ctl, "cval": t.cval} for t in (self.virt, self.phys)}}

    def restore(self, state: dict[str, Any]) -> None:
        self.counter.set(int(state["count"]) & _MASK64)  # the same count in every vCPU's entry
        self.cntvoff = int(state["cntvoff"]) & _MASK64
        for t in (self.virt, self.phys):
            saved = state["timers"][t.name]
            t.ctl = int(saved["ctl"]) & (CTL_ENABLE | CTL_IMASK)
            t.cval = int(saved["cval"]) & _MASK64
        self.update()


def attach_timer(vcpu: "Vcpu") -> GenericTimer:
    """Give `vcpu` its generic timer; from then on it runs on deterministic time."""
    if vcpu.timer is not None:
        raise kvm_error(EBUSY, f"vCPU {vcpu.index} already has a timer")
    vcpu._refuse_while_running("attach a timer")
    vcpu.timer = GenericTimer(vcpu, vcpu.intercept)
    return vcpu.timer
