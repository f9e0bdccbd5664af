"""System-register encodings (op0, op1, CRn, CRm, op2), named as in the Arm ARM D17.

One table for the whole sandbox: the host API, the emulated registers and the assembler
front-end (which spells RAS registers keystone lacks as S3_ names) all read it.
"""

from __future__ import annotations

from typing import NamedTuple


class SysReg(NamedTuple):
    op0: int
    op1: int
    crn: int
    crm: int
    op2: int

    def generic_name(self) -> str:
        """The S<op0>_<op1>_C<n>_C<m>_<op2> spelling every assembler accepts."""
        return f"s{self.op0}_{self.op1}_c{self.crn}_c{self.crm}_{self.op2}"


def decode_sysreg_field(insn: int) -> SysReg:
    """The system-register operand of an MRS/MSR (register) instruction."""
    return SysReg(
        2 + ((insn >> 19) & 1),
        (insn >> 16) & 7,
        (insn >> 12) & 0xF,
        (insn >> 8) & 0xF,
        (insn >> 5) & 7,
    )


SYSREGS: dict[str, SysReg] = {
    # Identification (Arm ARM D17.2)
    "MIDR_EL1": SysReg(3, 0, 0, 0, 0),
    "MPIDR_EL1": SysReg(3, 0, 0, 0, 5),
    "ID_AA64PFR0_EL1": SysReg(3, 0, 0, 4, 0),
    "ID_AA64PFR1_EL1": SysReg(3, 0, 0, 4, 1),
    "ID_AA64MMFR1_EL1": SysReg(3, 0, 0, 7, 1),
    "REVIDR_EL1": SysReg(3, 0, 0, 0, 6),
    "ID_AA64ZFR0_EL1": SysReg(3, 0, 0, 4, 4),
    "ID_AA64DFR0_EL1": SysReg(3, 0, 0, 5, 0),
    "ID_AA64DFR1_EL1": SysReg(3, 0, 0, 5, 1),
    "ID_AA64AFR0_EL1": SysReg(3, 0, 0, 5, 4),
    "ID_AA64AFR1_EL1": SysReg(3, 0, 0, 5, 5),
    "ID_AA64ISAR0_EL1": SysReg(3, 0, 0, 6, 0),
    "ID_AA64ISAR1_EL1": SysReg(3, 0, 0, 6, 1),
    "ID_AA64ISAR2_EL1": SysReg(3, 0, 0, 6, 2),
    "ID_AA64MMFR0_EL1": SysReg(3, 0, 0, 7, 0),
    "ID_AA64MMFR2_EL1": SysReg(3, 0, 0, 7, 2),
    # EL1 control and exception state
    "SCTLR_EL1": SysReg(3, 0, 1, 0, 0),
    "ACTLR_EL1": SysReg(3, 0, 1, 0, 1),
    "CPACR_EL1": SysReg(3, 0, 1, 0, 2),
    "TTBR0_EL1": SysReg(3, 0, 2, 0, 0),
    "TTBR1_EL1": SysReg(3, 0, 2, 0, 1),
    "TCR_EL1": SysReg(3, 0, 2, 0, 2),
    "SPSR_EL1": SysReg(3, 0, 4, 0, 0),
    "ELR_EL1": SysReg(3, 0, 4, 0, 1),
    "SP_EL0": SysReg(3, 0, 4, 1, 0),
    "SPSEL": SysReg(3, 0, 4, 2, 0),
    "CURRENTEL": SysReg(3, 0, 4, 2, 2),
    "PAN": SysReg(3, 0, 4, 2, 3),
    "AFSR0_EL1": SysReg(3, 0, 5, 1, 0),
    "AFSR1_EL1": SysReg(3, 0, 5, 1, 1),
    "ESR_EL1": SysReg(3, 0, 5, 2, 0),
    "FAR_EL1": SysReg(3, 0, 6, 0, 0),
    "PAR_EL1": SysReg(3, 0, 7, 4, 0),
    "MAIR_EL1": SysReg(3, 0, 10, 2, 0),
    "AMAIR_EL1": SysReg(3, 0, 10, 3, 0),
    "VBAR_EL1": SysReg(3, 0, 12, 0, 0),
    "ISR_EL1": SysReg(3, 0, 12, 1, 0),
    "CONTEXTIDR_EL1": SysReg(3, 0, 13, 0, 1),
    "TPIDR_EL1": SysReg(3, 0, 13, 0, 4),
    "CNTKCTL_EL1": SysReg(3, 0, 14, 1, 0),
    # Generic timer (Arm ARM D11.2, D17.8)
    "CNTFRQ_EL0": SysReg(3, 3, 14, 0, 0),
    "CNTPCT_EL0": SysReg(3, 3, 14, 0, 1),
    "CNTVCT_EL0": SysReg(3, 3, 14, 0, 2),
    "CNTP_TVAL_EL0": SysReg(3, 3, 14, 2, 0),
    "CNTP_CTL_EL0": SysReg(3, 3, 14, 2, 1),
    "CNTP_CVAL_EL0": SysReg(3, 3, 14, 2, 2),
    "CNTV_TVAL_EL0": SysReg(3, 3, 14, 3, 0),
    "CNTV_CTL_EL0": SysReg(3, 3, 14, 3, 1),
    "CNTV_CVAL_EL0": SysReg(3, 3, 14, 3, 2),
    "NZCV": SysReg(3, 3, 4, 2, 0),
    "DAIF": SysReg(3, 3, 4, 2, 1),
    "TPIDR_EL0": SysReg(3, 3, 13, 0, 2),
    "TPIDRRO_EL0": SysReg(3, 3, 13, 0, 3),
    # RAS extension (RAS spec DDI0587B chapter 4; Arm ARM D17.2); Unicorn lacks them all.
    "ERRIDR_EL1": SysReg(3, 0, 5, 3, 0),
    "ERRSELR_EL1": SysReg(3, 0, 5, 3, 1),
    "ERXFR_EL1": SysReg(3, 0, 5, 4, 0),
    "ERXCTLR_EL1": SysReg(3, 0, 5, 4, 1),
    "ERXSTATUS_EL1": SysReg(3, 0, 5, 4, 2),
    "ERXADDR_EL1": SysReg(3, 0, 5, 4, 3),
    "ERXPFGF_EL1": SysReg(3, 0, 5, 4, 4),
    "ERXPFGCTL_EL1": SysReg(3, 0, 5, 4, 5),
    "ERXPFGCDN_EL1": SysReg(3, 0, 5, 4, 6),
    "ERXMISC0_EL1": SysReg(3, 0, 5, 5, 0),
    "ERXMISC1_EL1": SysReg(3, 0, 5, 5, 1),
    "ERXMISC2_EL1": SysReg(3, 0, 5, 5, 2),
    "ERXMISC3_EL1": SysReg(3, 0, 5, 5, 3),
    "DISR_EL1": SysReg(3, 0, 12, 1, 1),
    # EL2/EL3 registers the sandbox programs from the host side only.
    "VPIDR_EL2": SysReg(3, 4, 0, 0, 0),
    "VMPIDR_EL2": SysReg(3, 4, 0, 0, 5),
    "HCR_EL2": SysReg(3, 4, 1, 1, 0),
    "CPTR_EL2": SysReg(3, 4, 1, 1, 2),
    "CNTHCTL_EL2": SysReg(3, 4, 14, 1, 0),
    "CNTVOFF_EL2": SysReg(3, 4, 14, 0, 3),
    "VSESR_EL2": SysReg(3, 4, 5, 2, 3),
    "VDISR_EL2": SysReg(3, 4, 12, 1, 1),
    "SCR_EL3": SysReg(3, 6, 1, 1, 0),
    "CPTR_EL3": SysReg(3, 6, 1, 1, 2),
}

BY_ENCODING: dict[SysReg, str] = {enc: name for name, enc in SYSREGS.items()}

# Registers keystone 0.9.2 cannot name: the assembler front-end rewrites them.
KEYSTONE_MISSING = (
    "DISR_EL1", "VDISR_EL2", "VSESR_EL2", "ERRIDR_EL1", "ERRSELR_EL1", "ERXFR_EL1",
    "ERXCTLR_EL1", "ERXSTATUS_EL1", "ERXADDR_EL1", "ERXPFGF_EL1", "ERXPFGCTL_EL1",
    "ERXPFGCDN_EL1", "ERXMISC0_EL1", "ERXMISC1_EL1", "ERXMISC2_EL1", "ERXMISC3_EL1",
)

# HCR_EL2 / SCR_EL3 bits the vCPU reset programs (Arm ARM D17.2.48, D17.2.120).
HCR_RW = 1 << 31  # EL1 is AArch64: without it Unicorn treats ERET to EL1 as illegal
SCR_NS = 1 << 0
SCR_HCE = 1 << 8  # HVC enabled: HVC then reaches UC_HOOK_INTR as EXCP_HVC (11)
SCR_RW = 1 << 10  # lower ELs are AArch64


def name_of(reg: SysReg) -> str:
    return BY_ENCODING.get(reg, reg.generic_name().upper())
