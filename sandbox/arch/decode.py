"""A64 instruction decoding the trap dispatcher needs (Arm ARM C4 "A64 instruction set encoding").

Unicorn reports an exception number and a PC, never a syndrome (unicorn #838, #1732): the
sandbox reads the instruction word and derives what the hardware would have reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sysreg import SysReg, decode_sysreg_field

ERET = 0xD69F03E0
ERETAA = 0xD69F0BFF
ERETAB = 0xD69F0FFF
ESB = 0xD503221F  # HINT #16 (FEAT_RAS); a NOP without RAS
WFI = 0xD503207F
WFE = 0xD503205F
NOP = 0xD503201F


def _exc_gen(insn: int, opc: int, ll: int) -> bool:
    # Exception generation: 11010100 opc(3) imm16 000 LL(2) (Arm ARM C4.1.66)
    return (insn & 0xFFE0001F) == (0xD4000000 | (opc << 21) | ll)


def is_svc(insn: int) -> bool:
    return _exc_gen(insn, 0b000, 0b01)


def is_hvc(insn: int) -> bool:
    return _exc_gen(insn, 0b000, 0b10)


def is_smc(insn: int) -> bool:
    return _exc_gen(insn, 0b000, 0b11)


def is_brk(insn: int) -> bool:
    return _exc_gen(insn, 0b001, 0b00)


def is_hlt(insn: int) -> bool:
    return _exc_gen(insn, 0b010, 0b00)


def imm16(insn: int) -> int:
    return (insn >> 5) & 0xFFFF


def is_eret(insn: int) -> bool:
    return insn in (ERET, ERETAA, ERETAB)


@dataclass(frozen=True)
class SysRegAccess:
    """An MRS (read) or MSR-register (write) instruction."""

    reg: SysReg
    rt: int
    is_read: bool


def decode_sysreg_access(insn: int) -> SysRegAccess | None:
    top = insn & 0xFFF00000
    if top == 0xD5300000:  # MRS Xt, <sysreg> (L=1, op0 = 2 | o0)
        return SysRegAccess(decode_sysreg_field(insn), insn & 31, True)
    if top == 0xD5100000:  # MSR <sysreg>, Xt
        return SysRegAccess(decode_sysreg_field(insn), insn & 31, False)
    return None


# MSR (immediate) PSTATE fields (Arm ARM C6.2.230): op1, op2 select the field, CRm = imm.
PSTATEFIELD_DAIFSET = (3, 6)
PSTATEFIELD_DAIFCLR = (3, 7)


def decode_msr_imm(insn: int) -> tuple[int, int, int] | None:
    """(op1, op2, CRm) of an MSR (immediate), or None."""
    if (insn & 0xFFF8F01F) != 0xD500401F:
        return None
    return (insn >> 16) & 7, (insn >> 5) & 7, (insn >> 8) & 0xF


def is_daifclr(insn: int) -> bool:
    d = decode_msr_imm(insn)
    return d is not None and (d[0], d[1]) == PSTATEFIELD_DAIFCLR


# `msr daifclr, #imm` for every imm that clears PSTATE.A (imm bit 2; Arm ARM C6.2.230).
DAIFCLR_A = tuple(0xD50340FF | (crm << 8) for crm in range(16) if crm & 4)


def find_words(code: bytes, words: "tuple[int, ...] | list[int]") -> list[int]:
    """Offsets of the 4-byte-aligned occurrences of any of `words` (little-endian) in
    `code`, in order. bytes.find does the scanning, so a 30 MiB kernel image takes
    milliseconds rather than the seconds a Python loop over every word would."""
    found: list[int] = []
    for word in words:
        needle = word.to_bytes(4, "little")
        at = code.find(needle)
        while at >= 0:
            if not at & 3:
                found.append(at)
            at = code.find(needle, at + 1)
    return sorted(found)


@dataclass(frozen=True)
class LoadStore:
    """What a load/store instruction does, as far as a data-abort syndrome cares.

    `syndrome_valid` follows the Arm ARM rule for ESR_ELx.ISV (D17.2.37): 1 only for a load
    or store of a single general-purpose register (including XZR and the acquire/release
    forms), excluding writeback, exclusives, atomics, pairs and SIMD&FP."""

    is_load: bool
    size: int  # bytes accessed
    rt: int
    rn: int
    sign_extend: bool = False
    reg64: bool = False  # SF: the destination/source is an X register
    acquire_release: bool = False
    writeback: bool = False
    pair: bool = False
    simd: bool = False
    exclusive: bool = False
    atomic: bool = False

    @property
    def syndrome_valid(self) -> bool:
        return not (self.writeback or self.pair or self.simd or self.exclusive or self.atomic)

    @property
    def sas(self) -> int:
        return self.size.bit_length() - 1


def _single_register(insn: int, *, writeback: bool) -> LoadStore | None:
    size_log2 = (insn >> 30) & 3
    simd = bool(insn & (1 << 26))
    opc = (insn >> 22) & 3
    rt, rn = insn & 31, (insn >> 5) & 31
    if simd:
        # SIMD&FP: opc<1> extends the size to 128 bits for Q registers.
        size = 16 if (opc & 2 and size_log2 == 0) else (1 << size_log2)
        return LoadStore(bool(opc & 1), size, rt, rn, writeback=writeback, simd=True)
    size = 1 << size_log2
    if opc == 0:
        return LoadStore(False, size, rt, rn, reg64=size == 8, writeback=writeback)
    if opc == 1:
        return LoadStore(True, size, rt, rn, reg64=size == 8, writeback=writeback)
    if size == 8:
        return None  # PRFM / unallocated: no data access that can abort
    if size == 4 and opc == 3:
        return None  # unallocated
    # opc 2: sign-extend to 64 bits; opc 3: sign-extend to 32 bits.
    return LoadStore(True, size, rt, rn, sign_extend=True, reg64=opc == 2, writeback=writeback)


def decode_load_store(insn: int) -> LoadStore | None:
    """Decode the A64 load/store instruction classes (Arm ARM C4.1.4); None if `insn`
    is not a data access."""
    op = (insn >> 24) & 0x3B  # bits 29:27 and 25:24, V (bit 26) masked
    if op == 0x39:  # load/store register (unsigned immediate)
        return _single_register(insn, writeback=False)
    if op == 0x38:
        if insn & (1 << 21):
            if (insn >> 10) & 3 == 0b10:  # register offset
                return _single_register(insn, writeback=False)
            if (insn >> 10) & 3 == 0b00 and not insn & (1 << 26):  # atomic memory operations
                size = 1 << ((insn >> 30) & 3)
                acq_rel = bool(insn & (3 << 22))
                # LDAPR is an atomic-encoded single-register load-acquire (FEAT_LRCPC).
                if (insn & 0x3FFFFC00) == 0x38BFC000:
                    return LoadStore(True, size, insn & 31, (insn >> 5) & 31, reg64=size == 8,
                                     acquire_release=True)
                return LoadStore(True, size, insn & 31, (insn >> 5) & 31, reg64=size == 8,
                                 acquire_release=acq_rel, atomic=True)
            return None
        mode = (insn >> 10) & 3  # 00 unscaled, 01 post-index, 10 unprivileged, 11 pre-index
        return _single_register(insn, writeback=mode in (0b01, 0b11))
    if (insn >> 24) & 0x3F == 0x08:  # load/store exclusive and ordered
        size = 1 << ((insn >> 30) & 3)
        o2, load, o1, o0 = (insn >> 23) & 1, (insn >> 22) & 1, (insn >> 21) & 1, (insn >> 15) & 1
        rt, rn = insn & 31, (insn >> 5) & 31
        if o2 == 1 and o1 == 0:  # LDAR/STLR (o0=1) and LDLAR/STLLR (o0=0)
            return LoadStore(bool(load), size, rt, rn, reg64=size == 8, acquire_release=True)
        # exclusives (LDXR/STXR/LDAXR/STLXR/LDXP...) and CAS/CASP
        return LoadStore(bool(load), size, rt, rn, reg64=size == 8, acquire_release=bool(o0),
                         exclusive=True, pair=bool(o1) and o2 == 0)
    if (insn >> 24) & 0x3F == 0x19 and (insn >> 10) & 3 == 0 and not insn & (1 << 21):
        # LDAPUR/STLUR family (FEAT_LRCPC2): single register, unscaled, acquire/release
        size = 1 << ((insn >> 30) & 3)
        opc = (insn >> 22) & 3
        if opc == 0:
            return LoadStore(False, size, insn & 31, (insn >> 5) & 31, reg64=size == 8, acquire_release=True)
        if opc == 1:
            return LoadStore(True, size, insn & 31, (insn >> 5) & 31, reg64=size == 8, acquire_release=True)
        return LoadStore(True, size, insn & 31, (insn >> 5) & 31, sign_extend=True, reg64=opc == 2,
                         acquire_release=True)
    if (insn >> 27) & 7 == 0b101:  # load/store pair (all addressing forms)
        opc = (insn >> 30) & 3
        simd = bool(insn & (1 << 26))
        load = bool(insn & (1 << 22))
        writeback = ((insn >> 23) & 3) in (0b01, 0b11)
        size = (4 << opc) if simd else (8 if opc & 2 else 4)
        return LoadStore(load, 2 * size, insn & 31, (insn >> 5) & 31, reg64=not simd and size == 8,
                         writeback=writeback, pair=True, simd=simd, sign_extend=not simd and opc == 1)
    if (insn >> 24) & 0x3B == 0x18:  # load register (literal)
        opc = (insn >> 30) & 3
        simd = bool(insn & (1 << 26))
        if simd:
            return LoadStore(True, 4 << opc, insn & 31, 31, simd=True)
        if opc == 3:
            return None  # PRFM (literal)
        return LoadStore(True, 8 if opc == 1 else 4, insn & 31, 31, reg64=opc != 0, sign_extend=opc == 2)
    if (insn & 0xBFBF0000) == 0x0C000000 or (insn & 0xBFA00000) == 0x0C800000:
        # SIMD load/store multiple structures (LD1..LD4/ST1..ST4), no-offset and post-index
        return LoadStore(bool(insn & (1 << 22)), 16, insn & 31, (insn >> 5) & 31, simd=True,
                         writeback=bool(insn & (1 << 23)))
    if (insn & 0xBF9F0000) == 0x0D000000 or (insn & 0xBF800000) == 0x0D800000:
        # SIMD load/store single structure
        return LoadStore(bool(insn & (1 << 22)), 16, insn & 31, (insn >> 5) & 31, simd=True,
                         writeback=bool(insn & (1 << 23)))
    return None


def _sext(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def _extend_reg(value: int, option: int, shift: int) -> int:
    """ExtendReg (Arm ARM J1 shared/functions): UXTB/H/W/X, SXTB/H/W/X, then LSL."""
    size = 8 << (option & 3)
    value &= (1 << size) - 1 if size < 64 else 0xFFFFFFFFFFFFFFFF
    if option & 4 and size < 64:
        value = _sext(value, size)
    return (value << shift) & 0xFFFFFFFFFFFFFFFF


def effective_address(insn: int, pc: int, xreg: "callable[[int], int]", sp: int) -> int | None:
    """The virtual address a load/store accesses first (before any writeback), from its
    encoding and registers (`xreg(n)` reads Xn, n < 31; Rn = 31 is SP). None if `insn` is not
    a load/store this function knows."""
    def base(n: int) -> int:
        return sp if n == 31 else xreg(n)

    rn = (insn >> 5) & 31
    op = (insn >> 24) & 0x3B
    if op == 0x39:  # unsigned immediate, scaled
        size_log2 = (insn >> 30) & 3
        if insn & (1 << 26) and size_log2 == 0 and (insn >> 22) & 2:
            size_log2 = 4  # 128-bit SIMD&FP
        return (base(rn) + (((insn >> 10) & 0xFFF) << size_log2)) & 0xFFFFFFFFFFFFFFFF
    if op == 0x38:
        if insn & (1 << 21):
            if (insn >> 10) & 3 == 0b10:  # register offset
                size_log2 = (insn >> 30) & 3
                if insn & (1 << 26) and size_log2 == 0 and (insn >> 22) & 2:
                    size_log2 = 4
                rm = (insn >> 16) & 31
                m = 0 if rm == 31 else xreg(rm)
                shift = size_log2 if insn & (1 << 12) else 0
                return (base(rn) + _extend_reg(m, (insn >> 13) & 7, shift)) & 0xFFFFFFFFFFFFFFFF
            return base(rn)  # atomic memory operations
        mode = (insn >> 10) & 3
        imm9 = _sext((insn >> 12) & 0x1FF, 9)
        return base(rn) if mode == 0b01 else (base(rn) + imm9) & 0xFFFFFFFFFFFFFFFF
    if (insn >> 24) & 0x3F == 0x08 or (insn >> 24) & 0x3F == 0x19:
        if (insn >> 24) & 0x3F == 0x19:  # LDAPUR/STLUR: unscaled signed offset
            return (base(rn) + _sext((insn >> 12) & 0x1FF, 9)) & 0xFFFFFFFFFFFFFFFF
        return base(rn)  # exclusives, LDAR/STLR: no offset
    if (insn >> 27) & 7 == 0b101:  # pairs
        opc = (insn >> 30) & 3
        scale = (2 + opc) if insn & (1 << 26) else (3 if opc & 2 else 2)
        imm7 = _sext((insn >> 15) & 0x7F, 7) << scale
        mode = (insn >> 23) & 3
        return base(rn) if mode == 0b01 else (base(rn) + imm7) & 0xFFFFFFFFFFFFFFFF
    if (insn >> 24) & 0x3B == 0x18:  # literal
        return (pc + (_sext((insn >> 5) & 0x7FFFF, 19) << 2)) & 0xFFFFFFFFFFFFFFFF
    if (insn & 0xBF000000) in (0x0C000000, 0x0D000000):  # SIMD structures
        return base(rn)
    return None
