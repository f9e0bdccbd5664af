"""The SError delivery gate of a campaign: the same decisions as `sandbox.serror.SErrorGate`,
with hooks that stay armed for the whole campaign and cost nothing while nothing is pending.

The vCPU's own gate arms Unicorn instruction hooks on every MRS/MSR when an SError becomes
pending, and arming means dropping every translation (Unicorn compiles those hooks into
translated code): about 90 us a time, on every execution of a campaign. Here the
instructions that can take, defer or reveal a pending SError are found once in the guest's
code (the firmware image) and get one code hook each, for good:

    `msr daifclr, #imm` with A, `esb`     SErrorGate._on_site, as the vCPU's own gate
    `msr daif, Xt`                       taken after it when it clears A
    `mrs Xt, isr_el1`                    reads ISR_EL1.A = 1 while pending
    ERET                                 the vCPU's permanent ERET check (unchanged)

Code the guest writes while it runs is not scanned: a campaign assumes the guest executes
only its firmware image (the general execution path has no such assumption).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UC_HOOK_CODE, Uc
from unicorn import arm64_const as A

from ..arch import pstate as ps
from ..arch.decode import decode_sysreg_access, find_words
from ..arch.sysreg import SYSREGS

if TYPE_CHECKING:
    from ..vcpu import Vcpu

_ISR = SYSREGS["ISR_EL1"]
_DAIF = SYSREGS["DAIF"]
_SCTLR = SYSREGS["SCTLR_EL1"]
_SCTLR_UMA = 1 << 9  # EL0 may access DAIF (Arm ARM D17.2.118)
_X = [A.UC_ARM64_REG_X0 + i for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]


def _sysreg_sites(code: bytes, base: int, want_read: bool, reg: object) -> dict[int, int]:
    """{address: Rt} of every MRS (want_read) or MSR (register) of `reg` in `code`."""
    probe = 0xD5300000 if want_read else 0xD5100000
    sites: dict[int, int] = {}
    enc = reg  # SysReg(op0, op1, crn, crm, op2)
    word = probe | ((enc.op0 & 1) << 19) | (enc.op1 << 16) | (enc.crn << 12) | (enc.crm << 8) | (enc.op2 << 5)  # type: ignore[attr-defined]
    for off in find_words(code, [word | rt for rt in range(32)]):
        insn = int.from_bytes(code[off:off + 4], "little")
        acc = decode_sysreg_access(insn)
        if acc is not None and acc.reg == reg and acc.is_read == want_read:
            sites[base + off] = acc.rt
    return sites


class CampaignGate:
    def __init__(self, vcpu: "Vcpu", code: bytes, base: int):
        self.vcpu = vcpu
        gate = vcpu.serror
        if gate._hooks or gate._site_hooks:
            gate._disarm()
        # The vCPU's gate still decides (pend, take, defer, on_eret); it only no longer arms.
        gate._arm = lambda: None  # type: ignore[method-assign]
        gate._disarm = lambda: None  # type: ignore[method-assign]
        # Clearing inside a run pauses Unicorn only to delete hooks: here there are none to delete.
        gate.clear = lambda: setattr(gate, "pending_iss", None)  # type: ignore[method-assign]
        self.isr_sites = _sysreg_sites(code, base, True, _ISR)
        self.daif_sites = _sysreg_sites(code, base, False, _DAIF)
        uc = vcpu.uc
        self.hooks = []
        for address in sorted(vcpu.vm.gate_sites):
            self.hooks.append(uc.hook_add(UC_HOOK_CODE, gate._on_site, None, address, address))
        for address in self.isr_sites:
            self.hooks.append(uc.hook_add(UC_HOOK_CODE, self._on_isr_read, None, address, address))
        for address in self.daif_sites:
            self.hooks.append(uc.hook_add(UC_HOOK_CODE, self._on_daif_write, None, address, address))

    def _on_isr_read(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        vcpu = self.vcpu
        if vcpu.serror.pending_iss is None:
            return
        try:
            if ps.el(vcpu.pstate()) == 0:
                return  # ISR_EL1 is UNDEFINED at EL0: Unicorn raises that itself
            rt = self.isr_sites[address]
            if rt != 31:
                # ISR_EL1.A (bit 8) reads 1 while a virtual SError is pending (QEMU isr_read).
                uc.reg_write(_X[rt], uc.cpr_read(*_ISR) | ps.A)
            uc.reg_write(A.UC_ARM64_REG_PC, address + 4)
        except Exception:
            vcpu._host_error("SError gate (ISR_EL1 read)")

    def _on_daif_write(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        vcpu = self.vcpu
        gate = vcpu.serror
        if gate.pending_iss is None:
            return
        try:
            pstate = vcpu.pstate()
            if ps.el(pstate) == 0 and not uc.cpr_read(*_SCTLR) & _SCTLR_UMA:
                return  # EL0 without SCTLR_EL1.UMA: Unicorn makes it UNDEFINED
            rt = self.daif_sites[address]
            value = 0 if rt == 31 else uc.reg_read(_X[rt])
            new = (pstate & ~ps.DAIF) | (value & ps.DAIF)
            if gate.masked(new):
                return
            # The write retires; the SError is taken at the next boundary (ELR = the next
            # instruction, SPSR = the new PSTATE), as SErrorGate._on_msr decides.
            gate.take(address + 4, new)
        except Exception:
            vcpu._host_error("SError gate (DAIF write)")
