"""Direct views of a Unicorn vCPU's x0-x30, PC and SCTLR_EL1, for the hypercall hot path.

A register access through Unicorn's API costs about as much as the empty interrupt hook it
is made from; a hypercall needs a few. QEMU keeps the general-purpose registers and the PC
in CPUARMState (`xregs[32]`, then `pc`) and SCTLR_EL1 in `cp15.sctlr_el[1]`, inside the CPU
object that `uc_struct` points to; `uc_reg_read/write` of X0-X30 and PC only copy those
fields. This module finds the three places once per process, as sandbox.icount finds the
instruction counter: a calibration Unicorn gets distinctive register values through the
API, the pointers in its `uc_struct` that lead to readable memory (per /proc/self/maps,
so nothing unmapped is touched) are searched for them, and each location is confirmed with
a second value. Every vCPU's views are then checked once more through the API; if
anything fails, `views()` returns None and callers use the API.

The views are only read or written while Unicorn is outside generated code (in the
interrupt hook, or between runs), where CPUARMState is the architectural state. PSTATE is
not a plain field in QEMU (NZCV and DAIF live apart) and always goes through the API.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from .arch.sysreg import SYSREGS

_SIG = [0x5A17C0DE00000000 + i * 0x1111 for i in range(4)]
_WINDOW = 0x40000  # how far into a pointed-to object the registers may lie
_SCTLR = SYSREGS["SCTLR_EL1"]


@dataclass(frozen=True)
class Layout:
    cpu_pointer: int  # offset in uc_struct of the pointer to the CPU object
    xregs: int  # offset of xregs[0] in that object (pc follows xregs[31])
    sctlr_el1: int  # offset of SCTLR_EL1 from xregs[0]


def _readable_regions() -> list[tuple[int, int]]:
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[1].startswith("r"):
                    lo, hi = (int(v, 16) for v in fields[0].split("-"))
                    out.append((lo, hi))
    except OSError:
        return []
    return out


def _region_end(regions: list[tuple[int, int]], address: int) -> int | None:
    for lo, hi in regions:
        if lo <= address < hi:
            return hi
    return None


def _handle(uc: Uc) -> int:
    h = uc._uch
    return int(h.value if hasattr(h, "value") else ctypes.cast(h, ctypes.c_void_p).value)


def _calibrate() -> Layout | None:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    for i, v in enumerate(_SIG):
        uc.reg_write(A.UC_ARM64_REG_X0 + i, v)  # also makes Unicorn create the CPU (it does so lazily)
    uc.reg_write(A.UC_ARM64_REG_PC, 0x5A17C0DE0000)
    needle = struct.pack("<4Q", *_SIG)
    regions = _readable_regions()
    base = _handle(uc)
    end = _region_end(regions, base)
    if end is None:
        return None
    raw = ctypes.string_at(base, min(0x2000, end - base))
    for off in range(0, len(raw) - 7, 8):
        p = struct.unpack_from("<Q", raw, off)[0]
        limit = _region_end(regions, p) if p % 8 == 0 else None
        if limit is None:
            continue
        window = ctypes.string_at(p, min(_WINDOW, limit - p))
        k = window.find(needle)
        if k < 0 or k % 8 or len(window) < k + 33 * 8:
            continue
        if struct.unpack_from("<Q", window, k + 32 * 8)[0] != 0x5A17C0DE0000:
            continue
        sctlr = _find_sctlr(uc, p + k, min(_WINDOW, limit - p - k))
        if sctlr is not None:
            layout = Layout(off, k, sctlr)
            return layout if _check(uc, layout) else None
    return None


def _find_sctlr(uc: Uc, xregs: int, size: int) -> int | None:
    found: set[int] | None = None
    for value in (0x30D01800, 0x30D00804):  # RES1 bits plus one distinctive bit each
        uc.cpr_write(*_SCTLR, value)
        packed = struct.pack("<Q", uc.cpr_read(*_SCTLR))
        window = ctypes.string_at(xregs, size)
        hits, k = set(), window.find(packed)
        while k >= 0:
            if k % 8 == 0:
                hits.add(k)
            k = window.find(packed, k + 1)
        found = hits if found is None else found & hits
    return min(found) if found else None


@functools.cache
def layout() -> Layout | None:
    try:
        return _calibrate()
    except Exception:  # pragma: no cover - an engine we cannot read: the API it is
        return None


class CpuViews:
    """`xregs[0..30]` = x0-x30, `xregs[32]` = PC, `sctlr[0]` = SCTLR_EL1, as ctypes arrays
    over the CPU's own storage."""

    def __init__(self, xregs: int, sctlr: int):
        self.xregs = (ctypes.c_uint64 * 33).from_address(xregs)
        self.sctlr = (ctypes.c_uint64 * 1).from_address(sctlr)


def _addresses(uc: Uc, lay: Layout) -> tuple[int, int]:
    cpu = ctypes.c_uint64.from_address(_handle(uc) + lay.cpu_pointer).value
    return cpu + lay.xregs, cpu + lay.xregs + lay.sctlr_el1


def _check(uc: Uc, lay: Layout) -> bool:
    """The views and the API agree, both ways, for x0, PC and SCTLR_EL1."""
    uc.reg_read(A.UC_ARM64_REG_X0)  # the CPU exists from here on
    xregs, sctlr = _addresses(uc, lay)
    regions = _readable_regions()
    end = _region_end(regions, xregs)
    if end is None or xregs + 33 * 8 > end or _region_end(regions, sctlr) is None:
        return False
    v = CpuViews(xregs, sctlr)
    saved = (uc.reg_read(A.UC_ARM64_REG_X0), uc.reg_read(A.UC_ARM64_REG_PC), uc.cpr_read(*_SCTLR))
    try:
        uc.reg_write(A.UC_ARM64_REG_X0, 0x0123456789ABCDEF)
        uc.reg_write(A.UC_ARM64_REG_PC, 0x40000ABC)
        if v.xregs[0] != 0x0123456789ABCDEF or v.xregs[32] != 0x40000ABC or v.sctlr[0] != saved[2]:
            return False
        v.xregs[0] = 0xFEDCBA9876543210
        return uc.reg_read(A.UC_ARM64_REG_X0) == 0xFEDCBA9876543210
    finally:
        uc.reg_write(A.UC_ARM64_REG_X0, saved[0])
        uc.reg_write(A.UC_ARM64_REG_PC, saved[1])


def views(uc: Uc) -> CpuViews | None:
    """Views of this Unicorn's registers, or None (use the API)."""
    lay = layout()
    if lay is None or not _check(uc, lay):
        return None
    return CpuViews(*_addresses(uc, lay))
