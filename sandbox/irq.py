"""IRQ and FIQ delivery into one vCPU, exact at the instruction boundary.

The GIC CPU interface drives two lines into the PE. The sandbox drives them the way KVM
drives a guest's: as the vCPU's virtual interrupt lines, HCR_EL2.VI and HCR_EL2.VF with
HCR_EL2.IMO/FMO set (Arm ARM D1.16.1 "Virtual interrupts"). Unicorn's CPU implements these
(QEMU arm_cpu_update_virq; measured: with VI set, `msr daifclr, #2` is followed by the
vector, ELR = the next instruction): it takes an asserted line at the first instruction
boundary where PSTATE.I (F) is 0 at EL1 or EL0, wherever the unmask happens - `msr daifclr`,
`msr daif`, ERET, exception return into EL0 - and a WFI does not sleep while one is
asserted (D1.16.2). Nothing is hooked per instruction or per block for this.

The entry itself goes through the core's exception entry: a code hook on the vector the
interrupt lands on (VBAR_EL1 + 0x080 / 0x280 / 0x480 / 0x680, FIQ +0x100 ...), present only
while a line is asserted, hands the entry Unicorn made to `Vcpu.take_exception` with the
ELR and SPSR it recorded, so the entry follows the sandbox's model (the same values: the
architecture's), is seen by observers and counts toward exception storms.

Lines changed by the running guest itself (a GIC register access, a timer programmed to
fire at once) end the run right after that instruction, so the interrupt is taken at the
next boundary, not at the end of Unicorn's translation block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UC_HOOK_CODE, Uc
from unicorn import arm64_const as A

from . import icount
from .arch.exception import ExceptionKind, VectorGroup
from .arch.sysreg import SYSREGS

if TYPE_CHECKING:
    from .vcpu import Vcpu

# HCR_EL2 (Arm ARM D17.2.48): route physical FIQ/IRQ to EL2, which enables the virtual
# ones at EL1/EL0, and the virtual lines themselves.
HCR_FMO = 1 << 3
HCR_IMO = 1 << 4
HCR_VF = 1 << 6
HCR_VI = 1 << 7
_HCR = SYSREGS["HCR_EL2"]
_SPSR_EL1 = SYSREGS["SPSR_EL1"]
_VBAR_EL1 = SYSREGS["VBAR_EL1"]
_GROUPS = tuple(VectorGroup)


class InterruptGate:
    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.irq = False  # the IRQ line from the CPU interface
        self.fiq = False
        self._vector_hooks: dict[int, int] = {}  # vector address -> hook
        self._vbar: int | None = None  # VBAR_EL1 the hooks were placed for
        self.taken = 0  # interrupts delivered (IRQ + FIQ)
        uc = vcpu.uc
        uc.cpr_write(*_HCR, (uc.cpr_read(*_HCR) | HCR_IMO | HCR_FMO) & ~(HCR_VI | HCR_VF))
        vcpu.intercept.on(_VBAR_EL1, write=self._on_vbar_write)

    @property
    def pending(self) -> bool:
        return self.irq or self.fiq

    def set_lines(self, irq: bool, fiq: bool) -> None:
        """The CPU interface drives the lines (the GIC calls this on every change)."""
        rising = (irq and not self.irq) or (fiq and not self.fiq)
        self.irq, self.fiq = irq, fiq
        v = self.vcpu
        hcr = v.uc.cpr_read(*_HCR) & ~(HCR_VI | HCR_VF)
        v.uc.cpr_write(*_HCR, hcr | HCR_IMO | HCR_FMO | (HCR_VI if irq else 0) | (HCR_VF if fiq else 0))
        if rising:
            if v._in_emulation:
                # Asserted by something the running guest did: end the run right after the
                # current instruction (Unicorn would look at the line only at the end of
                # the translation block). Not emu_stop: called from an MMIO read it makes
                # Unicorn execute the load again (measured: GICC_IAR read twice).
                if not (v._counting and icount.stop_before_next(v.uc)):
                    v._request_pause()
            else:
                self.settle()

    def settle(self) -> None:
        """Place the vector hooks while a line is asserted, drop them when none is (between
        runs: hooks are not removed from inside a hook)."""
        uc = self.vcpu.uc
        vbar = uc.reg_read(A.UC_ARM64_REG_VBAR_EL1) & ~0x7FF
        if self._vector_hooks and (not self.pending or vbar != self._vbar):
            for h in self._vector_hooks.values():
                uc.hook_del(h)
            self._vector_hooks.clear()
        if self.pending and not self._vector_hooks:
            self._vbar = vbar
            for group in _GROUPS:
                for kind in (ExceptionKind.IRQ, ExceptionKind.FIQ):
                    address = vbar + int(group) + int(kind)
                    self._vector_hooks[address] = uc.hook_add(UC_HOOK_CODE, self._on_vector, None, address, address)
                    uc.ctl_remove_cache(address, address + 4)  # hooks are compiled into translations

    def _on_vbar_write(self, _reg: object, _value: int) -> bool:
        """A new vector table while a line is asserted: end the run after this MSR so the
        vector hooks move with it (`settle`). Unicorn performs the write itself."""
        v = self.vcpu
        if self._vector_hooks and v._in_emulation and v._counting:
            icount.set_limit(v.uc, icount.started_instructions(v.uc) or 0)
        return False

    def _on_vector(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        """Unicorn took the virtual interrupt and arrived at its vector: redo the entry
        through the sandbox's exception entry, from the ELR and SPSR it recorded."""
        try:
            offset = address - (self._vbar or 0)
            kind = ExceptionKind.IRQ if offset & 0x180 == ExceptionKind.IRQ else ExceptionKind.FIQ
            if not (self.irq if kind is ExceptionKind.IRQ else self.fiq):
                return  # the guest branched here itself
            spsr = uc.cpr_read(*_SPSR_EL1)
            self.taken += 1
            # The PC is already the vector: take_exception leaves it alone, so the
            # instruction is not restarted (and not counted twice).
            self.vcpu.take_exception(kind, None, uc.reg_read(A.UC_ARM64_REG_ELR_EL1), from_pstate=spsr)
        except Exception:
            self.vcpu._host_error("interrupt entry")
