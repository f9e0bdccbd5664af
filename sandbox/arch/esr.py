"""Exception syndromes (ESR_ELx values): every ESR the sandbox gives a guest is built here.

One small constructor per syndrome kind, named after the Arm ARM's description of that
exception class (Arm ARM DDI0487, D17.2.37 "ESR_EL1", the ISS encodings per EC), the way
QEMU's target/arm/syndrome.h does it. Field positions follow Linux
arch/arm64/include/asm/esr.h.
"""

from __future__ import annotations

from enum import IntEnum


class EC(IntEnum):
    """Exception classes, ESR_ELx.EC bits [31:26] (Arm ARM D17.2.37; Linux asm/esr.h)."""

    UNKNOWN = 0x00
    WFX = 0x01
    ILLEGAL_STATE = 0x0E
    SVC64 = 0x15
    HVC64 = 0x16
    SMC64 = 0x17
    SYS64 = 0x18
    IABT_LOW = 0x20
    IABT_CUR = 0x21
    PC_ALIGN = 0x22
    DABT_LOW = 0x24
    DABT_CUR = 0x25
    SP_ALIGN = 0x26
    SERROR = 0x2F
    SOFTSTP_LOW = 0x32
    SOFTSTP_CUR = 0x33
    BRK64 = 0x3C


EC_SHIFT = 26
IL = 1 << 25  # instruction length: 1 = 32-bit instruction (every A64 instruction)
ISS_MASK = (1 << 25) - 1  # ISS is ESR bits [24:0] (Linux ESR_ELx_ISS_MASK)

# Data/instruction abort ISS fields (Arm ARM D17.2.37, ISS encoding for an exception from a
# Data Abort; Linux asm/esr.h).
ISV = 1 << 24
SAS_SHIFT = 22
SSE = 1 << 21
SRT_SHIFT = 16
SF = 1 << 15
AR = 1 << 14
VNCR = 1 << 13
SET_SHIFT = 11
FNV = 1 << 10
EA = 1 << 9
CM = 1 << 8
S1PTW = 1 << 7
WNR = 1 << 6
FSC_MASK = 0x3F

# SError ISS fields (RAS spec DDI0587B 2.4.4; Linux asm/esr.h).
IDS = 1 << 24
IESB = 1 << 13
AET_SHIFT = 10
AET_MASK = 0x7 << AET_SHIFT


class FSC(IntEnum):
    """Fault status codes used by the sandbox (Arm ARM D17.2.37 DFSC/IFSC)."""

    SEA = 0x10  # synchronous external abort, not on a translation table walk
    SERROR = 0x11  # asynchronous SError interrupt (SError DFSC)
    ALIGNMENT = 0x21


class AET(IntEnum):
    """SError Asynchronous Error Type, ISS[12:10] (RAS spec DDI0587B 2.4.4)."""

    UC = 0b000
    UEU = 0b001
    UEO = 0b010
    UER = 0b011
    CE = 0b110


class SET(IntEnum):
    """Synchronous Error Type, abort ISS[12:11] when FSC is 0x10 (FEAT_RAS)."""

    UER = 0b00
    UC = 0b10
    UEO = 0b11


def esr(ec: int, iss: int = 0, il: bool = True) -> int:
    """ESR = EC[31:26] | IL[25] | ISS[24:0]."""
    return (int(ec) << EC_SHIFT) | (IL if il else 0) | (iss & ISS_MASK)


def ec_of(value: int) -> int:
    return (value >> EC_SHIFT) & 0x3F


def iss_of(value: int) -> int:
    return value & ISS_MASK


def syn_uncategorized() -> int:
    """UNDEFINED instruction (EC 0x00): ISS is RES0, IL=1 for an A64 instruction."""
    return esr(EC.UNKNOWN, 0)


def syn_illegal_state() -> int:
    """Illegal Execution State (EC 0x0E): taken when PSTATE.IL=1 (Arm ARM D1.4.4)."""
    return esr(EC.ILLEGAL_STATE, 0)


def syn_svc(imm16: int) -> int:
    """SVC from AArch64 (EC 0x15), ISS[15:0] = the immediate."""
    return esr(EC.SVC64, imm16 & 0xFFFF)


def syn_hvc(imm16: int) -> int:
    """HVC from AArch64 (EC 0x16), ISS[15:0] = the immediate."""
    return esr(EC.HVC64, imm16 & 0xFFFF)


def syn_smc(imm16: int) -> int:
    """SMC from AArch64 (EC 0x17), ISS[15:0] = the immediate."""
    return esr(EC.SMC64, imm16 & 0xFFFF)


def syn_brk(imm16: int) -> int:
    """BRK instruction (EC 0x3C), ISS[15:0] = the comment field."""
    return esr(EC.BRK64, imm16 & 0xFFFF)


def syn_pc_alignment() -> int:
    """PC alignment fault (EC 0x22): ISS RES0, FAR = the misaligned PC (Arm ARM D1.10.2)."""
    return esr(EC.PC_ALIGN, 0)


def syn_sp_alignment() -> int:
    """SP alignment fault (EC 0x26)."""
    return esr(EC.SP_ALIGN, 0)


def syn_data_abort(
    same_el: bool,
    fsc: int,
    *,
    wnr: bool = False,
    cm: bool = False,
    s1ptw: bool = False,
    ea: bool = False,
    fnv: bool = False,
    set_: int = 0,
    isv: bool = False,
    sas: int = 0,
    sse: bool = False,
    srt: int = 0,
    sf: bool = False,
    ar: bool = False,
) -> int:
    """Data Abort (EC 0x25 same EL, 0x24 lower EL). ISV/SAS/SSE/SRT/SF/AR only when the
    instruction syndrome is valid (Arm ARM D17.2.37 ISS encoding for a Data Abort)."""
    iss = fsc & FSC_MASK
    if wnr:
        iss |= WNR
    if cm:
        iss |= CM
    if s1ptw:
        iss |= S1PTW
    if ea:
        iss |= EA
    if fnv:
        iss |= FNV
    iss |= (set_ & 3) << SET_SHIFT
    if isv:
        iss |= ISV | ((sas & 3) << SAS_SHIFT) | ((srt & 31) << SRT_SHIFT)
        if sse:
            iss |= SSE
        if sf:
            iss |= SF
        if ar:
            iss |= AR
    return esr(EC.DABT_CUR if same_el else EC.DABT_LOW, iss)


def syn_instruction_abort(same_el: bool, fsc: int, *, s1ptw: bool = False, ea: bool = False,
                          fnv: bool = False, set_: int = 0) -> int:
    """Instruction Abort (EC 0x21 same EL, 0x20 lower EL), Arm ARM D17.2.37."""
    iss = fsc & FSC_MASK
    if s1ptw:
        iss |= S1PTW
    if ea:
        iss |= EA
    if fnv:
        iss |= FNV
    iss |= (set_ & 3) << SET_SHIFT
    return esr(EC.IABT_CUR if same_el else EC.IABT_LOW, iss)


def syn_serror(iss: int) -> int:
    """SError interrupt (EC 0x2F). IL is always 1 for SError (Cortex-A76 TRM ESR_EL1;
    RAS spec DDI0587B 2.4.4), ISS = VSESR_EL2[24:0] for a virtual SError."""
    return esr(EC.SERROR, iss)


def syn_software_step(same_el: bool, *, isv: bool = True, ex: bool = False) -> int:
    """Software Step exception (EC 0x32 from a lower EL, 0x33 from the same EL): ISS[24] ISV,
    ISS[6] EX (the stepped instruction was a load-exclusive), IFSC[5:0] = 0b100010
    (Arm ARM D17.2.37, ISS encoding for an exception from a Software Step exception)."""
    ec = EC.SOFTSTP_CUR if same_el else EC.SOFTSTP_LOW
    return esr(ec, (ISV if isv else 0) | (1 << 6 if ex else 0) | 0x22)


_EC_NAMES = {e.value: e.name for e in EC}


def ec_name(ec: int) -> str:
    return _EC_NAMES.get(ec, f"EC_{ec:#04x}")


def decode(value: int) -> dict[str, object]:
    """Name the fields of an ESR value (for traces and the CLI)."""
    ec = ec_of(value)
    iss = iss_of(value)
    out: dict[str, object] = {"ec": ec, "ec_name": ec_name(ec), "il": bool(value & IL), "iss": iss}
    if ec in (EC.DABT_CUR, EC.DABT_LOW, EC.IABT_CUR, EC.IABT_LOW):
        out["fsc"] = iss & FSC_MASK
        out["ea"] = bool(iss & EA)
        out["fnv"] = bool(iss & FNV)
        out["s1ptw"] = bool(iss & S1PTW)
        if (iss & FSC_MASK) == FSC.SEA:
            out["set"] = (iss >> SET_SHIFT) & 3
        if ec in (EC.DABT_CUR, EC.DABT_LOW):
            out["isv"] = bool(iss & ISV)
            out["wnr"] = bool(iss & WNR)
            out["cm"] = bool(iss & CM)
            if iss & ISV:
                out["sas"] = (iss >> SAS_SHIFT) & 3
                out["sse"] = bool(iss & SSE)
                out["srt"] = (iss >> SRT_SHIFT) & 31
                out["sf"] = bool(iss & SF)
                out["ar"] = bool(iss & AR)
    elif ec == EC.SERROR:
        out["ids"] = bool(iss & IDS)
        if not iss & IDS:
            out["dfsc"] = iss & FSC_MASK
            out["aet"] = (iss & AET_MASK) >> AET_SHIFT
            out["ea"] = bool(iss & EA)
            out["iesb"] = bool(iss & IESB)
    elif ec in (EC.SVC64, EC.HVC64, EC.SMC64, EC.BRK64):
        out["imm16"] = iss & 0xFFFF
    return out
