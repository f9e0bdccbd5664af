"""System registers the sandbox emulates because Unicorn does not implement them.

Unicorn 2.1.4 treats the RAS registers as UNDEFINED (the MRS/MSR traps as EXCP_UDEF); a
vCPU modelling FEAT_RAS answers them here instead:

- DISR_EL1 (RAS spec DDI0587B 4.4.1): read/write; written by ESB deferral; resets to 0
  (architecturally UNKNOWN at reset; 0 keeps runs reproducible).
- ERRIDR_EL1 (DDI0587B 4.4.2): RAZ - NUM = 0, no error records are exposed.
- ERRSELR_EL1 and every ERX* register: RAZ/WI, as DDI0587B specifies when ERRIDR_EL1.NUM
  is 0.

Any other register Unicorn lacks is UNDEFINED for the guest, as KVM injects UNDEF for
an unknown system register access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .arch.sysreg import SYSREGS, SysReg
from .idregs import is_group3

_RAZ_WI = {SYSREGS[n] for n in (
    "ERRIDR_EL1", "ERRSELR_EL1", "ERXFR_EL1", "ERXCTLR_EL1", "ERXSTATUS_EL1", "ERXADDR_EL1",
    "ERXPFGF_EL1", "ERXPFGCTL_EL1", "ERXPFGCDN_EL1", "ERXMISC0_EL1", "ERXMISC1_EL1",
    "ERXMISC2_EL1", "ERXMISC3_EL1")}
DISR_EL1 = SYSREGS["DISR_EL1"]
ISR_EL1 = SYSREGS["ISR_EL1"]


@dataclass
class EmulatedSysRegs:
    """The emulated register file of one vCPU (plain data: it migrates with the vCPU)."""

    ras: bool = True
    disr_el1: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    # The guest's ID registers (sandbox.idregs): trapped with HCR_EL2.TID3, read from here.
    id_view: "Callable[[SysReg], int] | None" = field(default=None, repr=False, compare=False)

    def handles(self, reg: SysReg) -> bool:
        if self.id_view is not None and is_group3(reg):
            return True  # an MSR to one is ignored (read-only registers)
        return self.ras and (reg == DISR_EL1 or reg in _RAZ_WI)

    def read(self, reg: SysReg) -> int:
        if reg == DISR_EL1:
            return self.disr_el1
        if self.id_view is not None and is_group3(reg):
            return self.id_view(reg)
        return 0

    def write(self, reg: SysReg, value: int) -> None:
        if reg == DISR_EL1:
            # DISR_EL1: A (31), IDS (24), ISS [23:0] are the writable fields (DDI0587B 4.4.1).
            self.disr_el1 = value & 0x81FFFFFF
