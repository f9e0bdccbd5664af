"""ERET checks and SError-gate hooks at the virtual addresses the guest executes them from.

`Vm.note_code` finds the instructions the sandbox must watch (ERET, `msr daifclr` with A,
ESB) by physical address, and hooks them there. Unicorn keys code hooks by the virtual PC,
so with the MMU on (a Linux kernel runs at 0xffff8000...) those hooks only fire where the
guest's tables map code 1:1. This component of a vCPU adds the missing ones: it walks the
guest's stage 1 tables (sandbox.arch.stage1) for the executable aliases of every known site
and keeps

- one ERET check (`Vcpu._on_eret`: the illegal-return rule and a pending SError taken on
  return) per alias, for good, like the physical ones;
- one SError-gate hook per alias of a `daifclr`/ESB site, only while an SError is pending
  (the gate arms and disarms them with its physical ones).

The walk is redone when the translation regime changes: an MSR to SCTLR_EL1, TCR_EL1,
TTBR0_EL1 or TTBR1_EL1 (the vCPU's MRS/MSR intercept sees it; such a write ends Unicorn's
translation block, so the run pauses right after it and the walk runs from the run loop,
where hooks may be removed), a host write of those registers (looked at when a run starts),
or new code noted by the Vm. Aliases the new tables no longer have lose their hooks. Tables
rewritten in place with none of these writes are seen at the next one (the hooks of an
alias check that the instruction there is still the one they watch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import Uc

from .arch import decode
from .arch.stage1 import SCTLR_M, Regime, executable_aliases
from .arch.sysreg import SYSREGS, SysReg

if TYPE_CHECKING:
    from .vcpu import Vcpu

REGIME_REGISTERS = tuple(SYSREGS[n] for n in ("SCTLR_EL1", "TCR_EL1", "TTBR0_EL1", "TTBR1_EL1"))
_ERETS = (decode.ERET, decode.ERETAA, decode.ERETAB)


class VirtualSites:
    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.regime: Regime | None = None  # what the aliases below were computed for
        self.stale = False  # a regime register was written during the run
        self.eret: dict[int, int] = {}  # alias VA -> hook handle
        self.gate: set[int] = set()  # alias VAs of gate sites
        self.walks = 0  # table walks done (for benchmarks and tests)
        self.regime_writes = 0  # writes to a regime register seen (guest MSRs once watching, host writes)
        self._watching = False

    def _read_regime(self) -> Regime:
        uc = self.vcpu.uc
        return Regime(*(uc.cpr_read(*r) for r in REGIME_REGISTERS))

    def check(self) -> None:
        """Before a run: start watching once the Vm knows code sites; walk again if the
        regime differs from the one the aliases were made for."""
        vm = self.vcpu.vm
        if not (vm.eret_sites or vm.gate_sites):
            return
        if not self._watching:
            for reg in REGIME_REGISTERS:
                self.vcpu.intercept.on(reg, write=self._on_regime_write)
            self._watching = True
        elif self.regime is not None and not self.regime.mmu_on and not self.vcpu.sctlr_el1() & SCTLR_M:
            return  # the MMU was off and still is: one register read per run
        self.refresh()

    def forget(self) -> None:
        """New code sites: walk again before the next run."""
        self.regime = None

    def tlb_clean_since(self, writes: int, mmu_was_on: bool) -> bool:
        """Whether the TLB can only hold flat (MMU off) translations made since a point
        where `regime_writes` was `writes` and the MMU was off: then nothing about the
        translation regime changed, and restoring the point needs no TLB flush."""
        return self._watching and not mmu_was_on and self.regime_writes == writes

    def note_regime_write(self) -> None:
        """A regime register was written (a guest MSR, or the host through Vcpu.set_reg)."""
        self.regime_writes += 1
        self.stale = True

    def _on_regime_write(self, _reg: SysReg, _value: int) -> bool:
        self.note_regime_write()
        self.vcpu._request_pause()  # after this MSR retires (it ends the translation block)
        return False  # Unicorn performs the write

    def refresh(self) -> None:
        """Walk the tables if the regime changed; hook new aliases, unhook vanished ones
        (never from inside a hook: the run loop and run start call this)."""
        self.stale = False
        regime = self._read_regime()
        if regime == self.regime:
            return
        self.regime = regime
        vm = self.vcpu.vm
        eret_vas: set[int] = set()
        gate_vas: set[int] = set()
        if regime.mmu_on:
            self.walks += 1
            aliases = executable_aliases(regime, vm.eret_sites | vm.gate_sites, self._read)
            for pa, vas in aliases.items():
                if pa in vm.eret_sites:
                    eret_vas |= {va for va in vas if va not in vm.eret_sites}
                if pa in vm.gate_sites:
                    gate_vas |= {va for va in vas if va not in vm.gate_sites}
        uc = self.vcpu.uc
        for va in set(self.eret) - eret_vas:
            self.vcpu.raw_hooks.delete(self.eret.pop(va))
            uc.ctl_remove_cache(va, va + 4)
        for va in eret_vas - set(self.eret):
            self.eret[va] = self.vcpu.raw_hooks.code(self._on_alias_eret, va, va)
            uc.ctl_remove_cache(va, va + 4)  # hooks are compiled into translations
        serror = self.vcpu.serror
        for va in self.gate - gate_vas:
            serror.unwatch(va)
        self.gate = gate_vas
        for va in gate_vas:
            serror.watch(va)  # a no-op unless an SError is pending

    def _read(self, address: int, size: int) -> bytes | None:
        try:
            return self.vcpu.vm.read_memory(address, size)
        except (OSError, ValueError):
            return None

    def _on_alias_eret(self, uc: Uc, address: int, size: int, ud: object) -> None:
        try:
            if self.vcpu._fetch(address) not in _ERETS:
                return  # the tables changed in place: not an ERET here any more
        except Exception:
            self.vcpu._host_error("ERET alias check")
            return
        self.vcpu._on_eret(uc, address, size, ud)
