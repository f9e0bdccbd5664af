"""RAS extension rules as pure functions (Arm RAS specification DDI0587B).

- `DEFAULT_VSERROR_ISS`: the syndrome a virtual SError carries when the host gives none.
- `deferred_disr`: what ESB writes to DISR_EL1 when it defers a masked SError.
- `merge_serror_syndromes`: the "multiple SError interrupts" rule (DDI0587B 2.5.3), for a
  second SError made pending while one is pending.
"""

from __future__ import annotations

from . import esr as E

# KVM's default when the host gives no ESR: ISS = IDS (bit 24), "implementation-defined
# syndrome" (Linux kvm_inject_serror() passes ESR_ELx_ISV; commit 4715c14bc136). The guest
# then sees ESR_EL1 = 0xBF000000. A CPU without RAS also reports IDS=1: the sandbox's choice
# for the IMPLEMENTATION DEFINED pre-RAS syndrome (documented in README).
DEFAULT_VSERROR_ISS = E.IDS

DISR_A = 1 << 31

# Severity, least to most severe: CE < UEO < UER < UEU < UC (DDI0587B 2.2: an error may be
# reported as a more severe type, never a less severe one; CE as least severe is inferred).
_SEVERITY = {E.AET.CE: 0, E.AET.UEO: 1, E.AET.UER: 2, E.AET.UEU: 3, E.AET.UC: 4}


def deferred_disr(iss: int) -> int:
    """DISR_EL1 after ESB defers a pending virtual SError: A (bit 31) | VSESR_EL2[24:0]
    (DDI0587B 2.4.4; VDISR_EL2 layout: A, IDS, ISS[23:0]; QEMU HELPER(vesb) does the same)."""
    return DISR_A | (iss & E.ISS_MASK)


def is_architected(iss: int) -> bool:
    """IDS=0 and DFSC = Asynchronous SError (0x11): AET is meaningful."""
    return not iss & E.IDS and (iss & E.FSC_MASK) == E.FSC.SERROR


def severity(iss: int) -> int:
    """Severity rank of an SError syndrome; uncategorized or IDS=1 counts as UC, as Linux's
    arm64_ras_serror_get_severity() treats it."""
    if not is_architected(iss):
        return _SEVERITY[E.AET.UC]
    return _SEVERITY.get(E.AET((iss & E.AET_MASK) >> E.AET_SHIFT), _SEVERITY[E.AET.UC])


def merge_serror_syndromes(pending: int, new: int) -> int:
    """The ISS of the single SError taken for two pending SError conditions (DDI0587B 2.5.3).

    - Both architected (IDS=0, DFSC 0x11): one exception reporting the overall PE error state,
      i.e. the more severe AET (CE < UEO < UER < UEU < UC); EA is set if either had it; the
      other ISS bits come from the more severe syndrome.
    - Otherwise the ISS is IMPLEMENTATION DEFINED. The sandbox reports IDS=1 with ISS[23:0]
      of the newer syndrome when either has IDS=1, and the more severe one (uncategorized
      counting as UC) when both have IDS=0.
    """
    pending &= E.ISS_MASK
    new &= E.ISS_MASK
    if is_architected(pending) and is_architected(new):
        worse = new if severity(new) >= severity(pending) else pending
        return worse | ((pending | new) & E.EA)
    if pending & E.IDS or new & E.IDS:
        return E.IDS | (new & (E.IDS - 1))
    return new if severity(new) >= severity(pending) else pending
