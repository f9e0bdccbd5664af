"""MMIO exits: the data-abort syndrome of the faulting access and the completion of reads,
as pure functions (Linux arch/arm64/kvm/mmio.c, Arm ARM D17.2.37)."""

from __future__ import annotations

from .arch import esr as E
from .arch.decode import LoadStore


def loaded_value(data: bytes, ls: LoadStore) -> int:
    """The register value a completed MMIO read leaves in Rt: the `ls.size` bytes read,
    sign-extended when SSE (mask = 1 << (8*len - 1); value = (data ^ mask) - mask, as
    kvm_handle_mmio_return does), truncated to 32 bits for a W register (SF = 0)."""
    value = int.from_bytes(bytes(data[: ls.size]), "little")
    if ls.sign_extend:
        mask = 1 << (8 * ls.size - 1)
        value = (value ^ mask) - mask
    return value & (0xFFFFFFFFFFFFFFFF if ls.reg64 else 0xFFFFFFFF)


def data_abort_iss(ls: LoadStore, fsc: int = E.FSC.SEA) -> int:
    """The ISS a data abort on this access reports: ISV with SAS/SSE/SRT/SF/AR only when the
    instruction gives a valid syndrome (single GPR load/store without writeback)."""
    value = E.syn_data_abort(True, fsc, wnr=not ls.is_load, isv=ls.syndrome_valid, sas=ls.sas,
                             sse=ls.sign_extend, srt=ls.rt, sf=ls.reg64, ar=ls.acquire_release)
    return E.iss_of(value)


def nisv_iss(iss: int) -> int:
    """kvm_run.arm_nisv.esr_iss: only CM, WnR and the FSC survive
    (kvm_vcpu_dabt_iss_nisv_sanitized)."""
    return iss & (E.CM | E.WNR | E.FSC_MASK)
