"""The pending virtual SError of one vCPU, and the delivery gate that takes it exactly.

KVM pends a virtual SError with HCR_EL2.VSE and VSESR_EL2; the hardware takes it at the
first instruction boundary where PSTATE.A is 0 (at EL0/EL1 with HCR_EL2.AMO=1, TGE=0), and
ESB defers it into VDISR_EL2 (seen by the guest as DISR_EL1) while it is masked (RAS spec
DDI0587B 2.4.4). Unicorn models none of this (HCR_EL2.VSE does nothing, ESB is a NOP), so the
sandbox watches the few instructions that can clear PSTATE.A or synchronize errors, and
only while an SError is pending:

- `msr daif, xN` through the vCPU's MRS/MSR intercept (wherever the code is);
- `msr daifclr, #imm` with the A bit, and `esb`, through code hooks on their addresses in
  the guest code the Vm knows (`Vm.note_code`: every image loaded through the Vm);
- ERET through the permanent ERET check of the vCPU;
- reads of ISR_EL1 (A reads 1 while pending) through the same intercept.

With nothing pending none of these hooks exist, and a masked pending SError costs nothing
for code that does not touch DAIF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import Uc
from unicorn import arm64_const as A

from .arch import decode
from .arch import pstate as ps
from .arch.esr import syn_serror
from .arch.exception import ExceptionKind
from .arch.ras import DEFAULT_VSERROR_ISS, deferred_disr, merge_serror_syndromes
from .arch.sysreg import SYSREGS, SysReg

if TYPE_CHECKING:
    from .vcpu import Vcpu
    from .vm import Vm


def default_vserror_iss(vm: "Vm") -> int:
    """The syndrome KVM gives a virtual SError it pends without one from user space
    (kvm_inject_vabt): IDS, so the guest sees 0xBF000000. With the quirk
    "vserror-without-vsesr", ISS 0 as before Linux 4715c14bc136 (HCR_EL2.VSE set without
    writing VSESR_EL2: the guest sees 0xBE000000, "RAS uncategorized")."""
    return 0 if vm.has_quirk("vserror-without-vsesr") else DEFAULT_VSERROR_ISS

_DAIF = SYSREGS["DAIF"]
_ISR = SYSREGS["ISR_EL1"]
_SCTLR_UMA = 1 << 9  # SCTLR_EL1.UMA: EL0 may access DAIF (Arm ARM D17.2.118)


class SErrorGate:
    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.pending_iss: int | None = None  # VSESR_EL2[24:0] while HCR_EL2.VSE is set
        self.last_pended_iss: int | None = None  # the host's cached VSE/VSESR (quirk stale-vserror-restored)
        self._armed = False  # DAIF / ISR_EL1 handlers registered on the vCPU's intercept
        self._persistent = False  # keep_armed(): the hooks stay while nothing is pending
        self._site_hooks: dict[int, int] = {}

    # -- state ----------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return self.pending_iss is not None

    def pend(self, iss: int) -> None:
        """Make a virtual SError pending. A second one overwrites the syndrome, as KVM's
        KVM_SET_VCPU_EVENTS does (one VSE bit, the latest VSESR_EL2)."""
        self.pending_iss = iss
        self.last_pended_iss = iss
        vm = self.vcpu.vm
        if vm.observers:
            vm.notify("serror_pend", self.vcpu, self.vcpu.pc(), esr=syn_serror(iss))
        self._arm()

    def pend_another(self, iss: int) -> None:
        """An SError condition the sandbox raises on its own account (a device's error
        response, a firmware-first SEI notification) rather than the host through
        KVM_SET_VCPU_EVENTS. While one is pending, the PE takes one SError for both, whose
        ISS follows the RAS "multiple SError interrupts" rule (DDI0587B 2.5.3: the overall
        error state, arch.ras.merge_serror_syndromes). Seed 001 leaves that rule to user
        space; the host API itself overwrites, as KVM does."""
        if self.pending_iss is not None:
            iss = merge_serror_syndromes(self.pending_iss, iss)
        self.pend(iss)

    def saved_iss(self) -> int | None:
        """The pending syndrome a vCPU save carries: the live one (taking or deferring the
        SError cleared it). With the quirk "stale-vserror-restored", the one the host last
        pended even after the guest took it, as Xen saved its cached HCR_EL2 before "Save
        HCR_EL2 when a guest took the SError"."""
        if self.vcpu.vm.has_quirk("stale-vserror-restored"):
            return self.last_pended_iss
        return self.pending_iss

    def keep_armed(self) -> None:
        """Arm the gate for good, for a host that pends SErrors again and again (a fuzzing
        campaign): arming makes code translated before it be translated again, which costs
        far more than the gate's handlers cost on the few instructions they watch while
        nothing is pending."""
        self._persistent = True
        self._arm()

    def clear(self) -> None:
        """No SError pending any more. Unicorn must not lose hooks while it runs one of
        them (deleting a hook from inside a hook discards the PC the hook wrote), so inside
        a run the hooks are removed when the run loop next gets control."""
        self.pending_iss = None
        if self._persistent:
            return
        if self.vcpu._in_emulation:
            self.vcpu._request_pause()
        else:
            self._disarm()

    def settle(self) -> None:
        """Drop the hooks if nothing is pending (called by the run loop between runs)."""
        if self.pending_iss is None and not self._persistent and (self._armed or self._site_hooks):
            self._disarm()

    def masked(self, pstate: int) -> bool:
        return bool(pstate & ps.A) and ps.el(pstate) <= 1

    def deliver_if_unmasked(self) -> bool:
        """Take the pending SError now if PSTATE.A is clear (before the next instruction)."""
        if self.pending_iss is None:
            return False
        pstate = self.vcpu.pstate()
        if self.masked(pstate):
            return False
        self.take(self.vcpu.pc(), pstate)
        return True

    def take(self, preferred_return: int, from_pstate: int) -> None:
        """Enter the SError vector: ESR = EC 0x2F | IL | ISS; taking it clears the pending
        state (HCR_EL2.VSE is cleared when the vSError is taken; Xen "Save HCR_EL2 when a
        guest took the SError")."""
        iss = self.pending_iss
        assert iss is not None
        self.clear()
        self.vcpu.take_exception(ExceptionKind.SERROR, syn_serror(iss), preferred_return, from_pstate=from_pstate)

    # -- hooks ------------------------------------------------------------------------------

    def _arm(self) -> None:
        if not self._armed:
            # (The intercept retranslates code made before its hooks existed.)
            self.vcpu.intercept.on(_DAIF, write=self._on_daif_write)
            self.vcpu.intercept.on(_ISR, read=self._on_isr_read)
            self._armed = True
        for address in self.vcpu.vm.gate_sites:
            self.watch(address)
        for address in self.vcpu.virtual_sites.gate:  # their aliases with the MMU on
            self.watch(address)

    def _disarm(self) -> None:
        if self._armed:
            self.vcpu.intercept.off(_DAIF, read=False)
            self.vcpu.intercept.off(_ISR, write=False)
            self.vcpu.intercept.prune()
            self._armed = False
        for h in self._site_hooks.values():
            self.vcpu.raw_hooks.delete(h)
        self._site_hooks.clear()

    def watch(self, address: int) -> None:
        """Hook one `msr daifclr` / `esb` site (only while armed)."""
        if self._armed and address not in self._site_hooks:
            uc = self.vcpu.uc
            self._site_hooks[address] = self.vcpu.raw_hooks.code(self._on_site, address, address)
            uc.ctl_remove_cache(address, address + 4)

    def unwatch(self, address: int) -> None:
        """Drop the hook of a site alias the guest's tables no longer have (never from
        inside a hook)."""
        handle = self._site_hooks.pop(address, None)
        if handle is not None:
            self.vcpu.raw_hooks.delete(handle)
            self.vcpu.uc.ctl_remove_cache(address, address + 4)

    def _on_daif_write(self, _reg: SysReg, value: int) -> bool:
        """`msr daif, xN` while an SError is pending (the intercept's MSR handler)."""
        vcpu = self.vcpu
        uc = vcpu.uc
        if self.pending_iss is None:
            return False
        pstate = vcpu.pstate()
        if ps.el(pstate) == 0 and not uc.cpr_read(*SYSREGS["SCTLR_EL1"]) & _SCTLR_UMA:
            return False  # EL0 without SCTLR_EL1.UMA: Unicorn makes it UNDEFINED
        new = (pstate & ~ps.DAIF) | (value & ps.DAIF)
        if self.masked(new):
            return False
        # `msr daif, xN` clears A: the write retires, then the SError is taken at the
        # next instruction boundary (ELR = the next instruction, SPSR = the new PSTATE).
        # A PC written from an instruction hook is ignored, but Unicorn ends the block
        # after an MSR: stop there and enter the vector from the run loop.
        after = uc.reg_read(A.UC_ARM64_REG_PC) + 4
        vcpu.pause_then(lambda: self.take(after, new))
        return True

    def _on_isr_read(self, _reg: SysReg) -> int | None:
        """ISR_EL1.A (bit 8) reads 1 while a virtual SError is pending (QEMU isr_read)."""
        if self.pending_iss is None:
            return None
        return self.vcpu.uc.cpr_read(*_ISR) | ps.A

    def _on_site(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        try:
            if self.pending_iss is None:
                return
            insn = self.vcpu._fetch(address)
            if insn is None:
                return
            pstate = self.vcpu.pstate()
            if ps.el(pstate) > 1:
                return
            if insn == decode.ESB:
                if not self.vcpu.vm.ras:
                    return  # without FEAT_RAS, ESB is a NOP
                if self.masked(pstate):
                    # ESB with the SError masked defers it: pending cleared, DISR_EL1 (the
                    # guest's view of VDISR_EL2) = A | syndrome (DDI0587B 2.4.4).
                    self.vcpu.sysregs.disr_el1 = deferred_disr(self.pending_iss)
                    self.clear()
                    if self.vcpu.vm.observers:
                        self.vcpu.vm.notify("serror_defer", self.vcpu, address, disr=self.vcpu.sysregs.disr_el1)
                else:
                    self.take(address, pstate)  # taken before the ESB completes: ELR = ESB
                return
            fields = decode.decode_msr_imm(insn)
            if fields is None or (fields[0], fields[1]) != decode.PSTATEFIELD_DAIFCLR or not fields[2] & 4:
                return
            if ps.el(pstate) == 0 and not self.vcpu.uc.cpr_read(*SYSREGS["SCTLR_EL1"]) & _SCTLR_UMA:
                return
            new = pstate & ~(fields[2] << 6)
            if not self.masked(new):
                # `msr daifclr, #imm` with A: taken right after it (ELR = next, SPSR = new PSTATE).
                self.take(address + 4, new)
        except Exception:
            self.vcpu._host_error("SError gate")

    def on_eret(self, spsr: int, elr: int) -> bool:
        """Called before a legal ERET: a pending SError is taken on return to a context with
        A clear, before that context's first instruction (ELR = the return address, SPSR =
        the context's PSTATE, vector chosen by the context's EL and SP)."""
        if self.pending_iss is None or self.masked(spsr):
            return False
        self.take(elr, spsr & ps.SPSR_VALID)
        return True
