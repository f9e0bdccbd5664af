"""Capstone disassembly for every place a user sees a guest address."""

from __future__ import annotations

from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs

_cs: Cs | None = None


def _capstone() -> Cs:
    global _cs
    if _cs is None:
        _cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
    return _cs


def disassemble(code: bytes, address: int) -> list[tuple[int, str]]:
    """(address, 'mnemonic operands') per instruction; undecodable words show as .inst."""
    out: list[tuple[int, str]] = []
    for off in range(0, len(code) - len(code) % 4, 4):
        word = code[off:off + 4]
        insns = list(_capstone().disasm(word, address + off, 1))
        if insns:
            i = insns[0]
            out.append((i.address, f"{i.mnemonic} {i.op_str}".strip()))
        else:
            out.append((address + off, f".inst {int.from_bytes(word, 'little'):#010x}"))
    return out


def disassemble_one(word: bytes | int, address: int = 0) -> str:
    if isinstance(word, int):
        word = (word & 0xFFFFFFFF).to_bytes(4, "little")
    return disassemble(word, address)[0][1]
