"""The registers gdb sees, and the target description that tells it so.

gdb's AArch64 support validates two features by register name and number (gdb manual,
"AArch64 Features"): `org.gnu.gdb.aarch64.core` (x0-x30, sp, pc, cpsr: numbers 0-33) and
`org.gnu.gdb.aarch64.fpu` (v0-v31, fpsr, fpcr: 34-67). A third feature of the sandbox's own
adds the EL1 system registers an exception-handler author looks at (ESR, FAR, ELR, SPSR,
VBAR, ...); gdb shows registers of a feature it does not know as ordinary registers
(`p/x $esr_el1`, `info registers esr_el1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from unicorn import arm64_const as A

if TYPE_CHECKING:
    from ..vcpu import Vcpu


@dataclass(frozen=True)
class Register:
    name: str
    bits: int
    read: Callable[["Vcpu"], int]
    write: Callable[["Vcpu", int], None]
    type: str = "uint64"


def _named(name: str) -> tuple[Callable[["Vcpu"], int], Callable[["Vcpu", int], None]]:
    return (lambda v: v.reg(name)), (lambda v, value: v.set_reg(name, value))


def _unicorn(rid: int) -> tuple[Callable[["Vcpu"], int], Callable[["Vcpu", int], None]]:
    return (lambda v: v.uc.reg_read(rid)), (lambda v, value: v.uc.reg_write(rid, value))


def _table() -> list[Register]:
    regs = [Register(f"x{i}", 64, *_named(f"x{i}")) for i in range(31)]
    regs.append(Register("sp", 64, *_named("sp"), type="data_ptr"))
    regs.append(Register("pc", 64, *_named("pc"), type="code_ptr"))
    regs.append(Register("cpsr", 32, *_named("pstate"), type="cpsr_flags"))
    regs += [Register(f"v{i}", 128, *_unicorn(A.UC_ARM64_REG_Q0 + i), type="aarch64v") for i in range(32)]
    regs.append(Register("fpsr", 32, *_unicorn(A.UC_ARM64_REG_FPSR), type="uint32"))
    regs.append(Register("fpcr", 32, *_unicorn(A.UC_ARM64_REG_FPCR), type="uint32"))
    regs += [Register(name.lower(), 64, *_named(name)) for name in SYSREG_NAMES]
    return regs


# The sandbox's feature: EL1 exception state, the vector base and the translation regime.
SYSREG_NAMES = ("ESR_EL1", "FAR_EL1", "ELR_EL1", "SPSR_EL1", "VBAR_EL1", "SCTLR_EL1", "TCR_EL1",
                "TTBR0_EL1", "TTBR1_EL1", "MAIR_EL1", "SP_EL0", "SP_EL1", "DISR_EL1")
CORE_COUNT, FPU_COUNT = 34, 34

REGISTERS = _table()
BY_NAME = {r.name: i for i, r in enumerate(REGISTERS)}


def encode(reg: Register, value: int) -> str:
    """A register value as gdb transfers it: target-endian (little) bytes in hex."""
    return (value & ((1 << reg.bits) - 1)).to_bytes(reg.bits // 8, "little").hex()


def decode(reg: Register, text: str) -> int:
    return int.from_bytes(bytes.fromhex(text[: reg.bits // 4]), "little")


# -- the target description ---------------------------------------------------------------

# PSTATE fields gdb can name in `p $cpsr` (Arm ARM D1.4 "Process state, PSTATE").
_CPSR_FIELDS = (("SP", 0, 0), ("EL", 2, 3), ("nRW", 4, 4), ("F", 6, 6), ("I", 7, 7), ("A", 8, 8), ("D", 9, 9),
                ("BTYPE", 10, 11), ("SSBS", 12, 12), ("IL", 20, 20), ("SS", 21, 21), ("PAN", 22, 22),
                ("UAO", 23, 23), ("DIT", 24, 24), ("TCO", 25, 25), ("V", 28, 28), ("C", 29, 29), ("Z", 30, 30),
                ("N", 31, 31))

# Views of a 128-bit SIMD register: lane type, lane count, union field name.
_V_LANES = {
    "q": (("uint128", 1, "u"), ("int128", 1, "s")),
    "d": (("ieee_double", 2, "f"), ("uint64", 2, "u"), ("int64", 2, "s")),
    "s": (("ieee_single", 4, "f"), ("uint32", 4, "u"), ("int32", 4, "s")),
    "h": (("ieee_half", 8, "f"), ("uint16", 8, "u"), ("int16", 8, "s")),
    "b": (("uint8", 16, "u"), ("int8", 16, "s")),
}


def _reg_xml(i: int) -> str:
    r = REGISTERS[i]
    return f'<reg name="{r.name}" bitsize="{r.bits}" type="{r.type}" regnum="{i}"/>'


def target_xml() -> str:
    """The whole target description, in one document (no xi:include to fetch)."""
    cpsr = "".join(f'<field name="{n}" start="{s}" end="{e}"/>' for n, s, e in _CPSR_FIELDS)
    vectors, unions, views = [], [], []
    for view, lanes in _V_LANES.items():
        fields = []
        for lane, count, field in lanes:
            vid = f"v{count}{field}{view}"
            vectors.append(f'<vector id="{vid}" type="{lane}" count="{count}"/>')
            fields.append(f'<field name="{field}" type="{vid}"/>')
        unions.append(f'<union id="vn{view}">{"".join(fields)}</union>')
        views.append(f'<field name="{view}" type="vn{view}"/>')
    core = "".join(_reg_xml(i) for i in range(CORE_COUNT))
    fpu = "".join(_reg_xml(i) for i in range(CORE_COUNT, CORE_COUNT + FPU_COUNT))
    sysregs = "".join(_reg_xml(i) for i in range(CORE_COUNT + FPU_COUNT, len(REGISTERS)))
    return ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
            '<target version="1.0"><architecture>aarch64</architecture>'
            f'<feature name="org.gnu.gdb.aarch64.core"><flags id="cpsr_flags" size="4">{cpsr}</flags>{core}</feature>'
            f'<feature name="org.gnu.gdb.aarch64.fpu">{"".join(vectors)}{"".join(unions)}'
            f'<union id="aarch64v">{"".join(views)}</union>{fpu}</feature>'
            f'<feature name="org.sandbox.aarch64.sysregs">{sysregs}</feature></target>')
