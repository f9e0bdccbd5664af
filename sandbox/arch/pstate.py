"""PSTATE and SPSR fields for AArch64 (Arm ARM C5.2.18 "SPSR_EL1", D1.4 "Process state").

SPSR_ELx holds PSTATE in the same bit positions, so one set of constants serves both.
"""

from __future__ import annotations

N = 1 << 31
Z = 1 << 30
C = 1 << 29
V = 1 << 28
NZCV = N | Z | C | V
TCO = 1 << 25
DIT = 1 << 24
UAO = 1 << 23
PAN = 1 << 22
SS = 1 << 21
IL = 1 << 20
SSBS = 1 << 12
BTYPE = 3 << 10
D = 1 << 9
A = 1 << 8
I = 1 << 7  # noqa: E741 - the Arm ARM's name
F = 1 << 6
DAIF = D | A | I | F
NRW = 1 << 4  # 1 = AArch32 (never for this sandbox)
M_MASK = 0xF  # M[3:0] = EL << 2 | SPSel

# M[3:0] encodings (Arm ARM C5.2.18).
EL0T = 0b0000
EL1T = 0b0100
EL1H = 0b0101
EL2T = 0b1000
EL2H = 0b1001

# The bits of PSTATE that an SPSR records for an AArch64 context (Arm ARM C5.2.18);
# anything else is RES0.
SPSR_VALID = NZCV | TCO | DIT | UAO | PAN | SS | IL | SSBS | BTYPE | DAIF | NRW | M_MASK


def el(pstate: int) -> int:
    """Exception level encoded in M[3:2]."""
    return (pstate >> 2) & 3


def sp_sel(pstate: int) -> int:
    """SPSel, M[0]: 1 = SP_ELx ('h'), 0 = SP_EL0 ('t')."""
    return pstate & 1


def mode_name(pstate: int) -> str:
    e = el(pstate)
    return f"EL{e}" + ("" if e == 0 else ("h" if sp_sel(pstate) else "t"))


def describe(pstate: int) -> str:
    """Readable PSTATE, e.g. 'EL1h DAIF=1111 nzcv'."""
    flags = "".join(ch.upper() if pstate & bit else ch for ch, bit in (("n", N), ("z", Z), ("c", C), ("v", V)))
    daif = "".join("1" if pstate & bit else "0" for bit in (D, A, I, F))
    extra = "".join(f" {name}" for name, bit in (("PAN", PAN), ("DIT", DIT), ("SS", SS), ("IL", IL)) if pstate & bit)
    return f"{mode_name(pstate)} DAIF={daif} {flags}{extra}"
