"""IRQ and FIQ delivery into one vCPU, exact at the instruction boundary.

The GIC CPU interface drives two lines into the PE (IRQ, FIQ). The PE takes an asserted one
at the first instruction boundary where PSTATE.I (F) is 0, at EL0 or EL1, into the EL1 vector
+0x080 (IRQ) / +0x100 (FIQ) of the group the interrupted context selects (+0x080 from EL1t,
+0x280 from EL1h, +0x480 from EL0: Arm ARM D1.10.2), with ELR = the first instruction not
executed and no ESR/FAR (asynchronous exceptions write neither).

Unicorn takes no interrupts itself, so the sandbox finds that boundary:

- a line asserted between runs: the run loop takes it before the next instruction
  (`deliver_if_unmasked`);
- a line asserted during a run (a GIC register write, a timer programmed to fire now): the run
  stops before the next instruction (`icount.stop_before_next`) and the run loop takes it;
- a line asserted while masked: a block hook is armed, and only then. Every instruction that
  can clear PSTATE.I/F ends a Unicorn translation block (`msr daifclr`, `msr daif`, ERET:
  QEMU ends the block after any PSTATE or system-register write and after an exception
  return), so the start of the next block is exactly the boundary after the unmask. The hook
  takes the interrupt there, before the block's first instruction (a PC written from a block
  hook redirects execution before the block runs; measured). The hook is removed by the run
  loop once nothing is asserted (removing a hook from inside one is unsafe).

WFI wakes on an asserted line whatever PSTATE says (Arm ARM D1.16.2); the run loop asks
`pending`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UC_HOOK_BLOCK, Uc
from unicorn import arm64_const as A

from . import icount
from .arch import pstate as ps
from .arch.exception import ExceptionKind

if TYPE_CHECKING:
    from .vcpu import Vcpu


class InterruptGate:
    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.irq = False  # the IRQ line from the CPU interface
        self.fiq = False
        self._hook: int | None = None
        self.taken = 0  # interrupts delivered (IRQ + FIQ)

    @property
    def pending(self) -> bool:
        return self.irq or self.fiq

    def set_lines(self, irq: bool, fiq: bool) -> None:
        """The CPU interface drives the lines (the GIC calls this on every change)."""
        rising = (irq and not self.irq) or (fiq and not self.fiq)
        self.irq, self.fiq = irq, fiq
        v = self.vcpu
        if rising and v._in_emulation:
            # Asserted by something the running guest did: end the run right after the
            # current instruction so the run loop can take it or arm the gate.
            if not (v._counting and icount.stop_before_next(v.uc)):
                v._request_pause()

    def deliverable(self, pstate: int) -> ExceptionKind | None:
        """Which interrupt the PE takes at `pstate`, if any. FIQ first: it is the one the
        GIC gives the higher priority group (Group 0)."""
        if ps.el(pstate) > 1:
            return None
        if self.fiq and not pstate & ps.F:
            return ExceptionKind.FIQ
        if self.irq and not pstate & ps.I:
            return ExceptionKind.IRQ
        return None

    def deliver_if_unmasked(self) -> bool:
        """At an instruction boundary (the run loop): take an asserted, unmasked interrupt
        now, or arm the gate if it is masked. True if one was taken."""
        if not self.pending:
            self.settle()
            return False
        v = self.vcpu
        pstate = v.pstate()
        kind = self.deliverable(pstate)
        if kind is None:
            self._arm()
            return False
        self._take(kind, v.uc.reg_read(A.UC_ARM64_REG_PC), pstate)
        return True

    def _take(self, kind: ExceptionKind, preferred_return: int, pstate: int) -> None:
        self.taken += 1
        self.vcpu.take_exception(kind, None, preferred_return, from_pstate=pstate)

    def settle(self) -> None:
        """Drop the block hook when nothing is asserted (run loop only)."""
        if self._hook is not None and not self.pending:
            self.vcpu.uc.hook_del(self._hook)
            self._hook = None

    def _arm(self) -> None:
        if self._hook is None:
            uc = self.vcpu.uc
            self._hook = uc.hook_add(UC_HOOK_BLOCK, self._on_block)
            uc.ctl_flush_tb()  # block hooks are compiled into translations

    def _on_block(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        try:
            if not self.pending:
                return
            pstate = self.vcpu.pstate()
            kind = self.deliverable(pstate)
            if kind is not None:
                self._take(kind, address, pstate)
        except Exception:
            self.vcpu._host_error("interrupt delivery gate")
