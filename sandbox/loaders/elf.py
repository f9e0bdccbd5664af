"""ELF loader: put an AArch64 executable built by a real toolchain into guest RAM.

What QEMU's `-kernel file.elf` does on the virt board (hw/core/loader.c load_elf): every
PT_LOAD segment is copied to its physical address (p_paddr), `p_filesz` bytes from the file
and zeros up to `p_memsz` (the .bss); the vCPU starts at e_entry. The sandbox starts with the
MMU off, so an entry point given as a virtual address inside a segment whose p_vaddr differs
from p_paddr is translated to the matching physical address.

The ELF symbol table (.symtab, else .dynsym) is exported: functions, objects and assembler
labels by name in `LoadedImage.symbols`, and into `vm.symbols` so that exits, exception
records, gdb and traces show `symbol+offset` next to guest addresses.

Everything is checked before the first byte is written, so a bad file never leaves half an
image in guest memory: a file that is not ELF, not 64-bit little-endian AArch64, not
executable, truncated, or with a segment outside guest RAM is refused with OSError(EINVAL)
naming the file and what is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..kvm import EINVAL, kvm_error
from ..symbols import RANK_FUNCTION, RANK_LABEL, RANK_OBJECT, Symbol
from . import LoadedImage

if TYPE_CHECKING:
    from ..vm import Vm

_SYMBOL_RANKS = {"STT_FUNC": RANK_FUNCTION, "STT_OBJECT": RANK_OBJECT, "STT_NOTYPE": RANK_LABEL}


@dataclass(frozen=True)
class _Segment:
    index: int
    paddr: int
    vaddr: int
    data: bytes
    memsz: int
    executable: bool


def _refuse(path: str, why: str) -> OSError:
    return kvm_error(EINVAL, f"{path}: {why}")


def load_elf(vm: "Vm", path: str | os.PathLike[str]) -> LoadedImage:
    """Load the AArch64 ELF executable at `path` into `vm`'s RAM and return where it went.
    The caller starts a vCPU at `image.entry` (the Vm is not otherwise changed)."""
    name = os.fspath(path)
    with open(name, "rb") as f:
        try:
            elf = ELFFile(f)
            segments, entry = _segments(elf, name)
            symbols = _symbols(elf)
        except ELFError as e:
            raise _refuse(name, f"not a valid ELF file ({e})") from None
    for seg in segments:
        _check_in_ram(vm, seg, name)
    for seg in segments:
        vm.write_memory(seg.paddr, seg.data)
        if seg.memsz > len(seg.data):  # the .bss: RAM is reused between images, zero it
            vm.write_memory(seg.paddr + len(seg.data), bytes(seg.memsz - len(seg.data)))
        if seg.executable:
            vm.note_code(seg.paddr, seg.data)
    lo = min(s.vaddr for s in segments)
    hi = max(s.vaddr + s.memsz for s in segments)
    vm.symbols.add_image(symbols, lo, hi)
    image = LoadedImage("elf", min(s.paddr for s in segments), max(s.paddr + s.memsz for s in segments), entry,
                        {s.name: s.address for s in symbols})
    return image


def _segments(elf: ELFFile, name: str) -> tuple[list[_Segment], int]:
    h = elf.header
    if elf.elfclass != 64:
        raise _refuse(name, f"ELF{elf.elfclass} file; an AArch64 executable is ELF64")
    if not elf.little_endian:
        raise _refuse(name, "big-endian ELF; the sandbox runs little-endian AArch64")
    if h["e_machine"] != "EM_AARCH64":
        raise _refuse(name, f"built for {h['e_machine']}, not AArch64 (EM_AARCH64)")
    if h["e_type"] not in ("ET_EXEC", "ET_DYN"):
        raise _refuse(name, f"{h['e_type']} is not an executable (link it first)")
    size = os.fstat(elf.stream.fileno()).st_size
    segments: list[_Segment] = []
    for i, seg in enumerate(elf.iter_segments()):
        if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
            continue
        filesz, memsz, offset = seg["p_filesz"], seg["p_memsz"], seg["p_offset"]
        if filesz > memsz:
            raise _refuse(name, f"segment {i}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")
        if offset + filesz > size:
            raise _refuse(name, f"segment {i}: file is truncated (needs {offset + filesz:#x} bytes, has {size:#x})")
        segments.append(_Segment(i, seg["p_paddr"], seg["p_vaddr"], seg.data(), memsz,
                                 bool(seg["p_flags"] & P_FLAGS.PF_X)))
    if not segments:
        raise _refuse(name, "no PT_LOAD segment: nothing to load")
    entry = h["e_entry"]
    for seg in segments:
        # The vCPU starts with the MMU off: an entry given as a virtual address becomes the
        # physical address it is loaded at.
        if seg.vaddr != seg.paddr and seg.vaddr <= entry < seg.vaddr + seg.memsz:
            entry = seg.paddr + (entry - seg.vaddr)
            break
    return segments, entry


def _check_in_ram(vm: "Vm", seg: _Segment, name: str) -> None:
    region = vm.memory.ram_at(seg.paddr)
    if region is None or seg.paddr + seg.memsz > region.end:
        ram = ", ".join(f"[{r.base:#x}, {r.end:#x})" for r in vm.memory.ram) or "none"
        raise _refuse(name, f"segment {seg.index} at [{seg.paddr:#x}, {seg.paddr + seg.memsz:#x}) "
                            f"is not inside guest RAM (RAM: {ram})")


def _symbols(elf: ELFFile) -> list[Symbol]:
    table = elf.get_section_by_name(".symtab")
    if not isinstance(table, SymbolTableSection):
        table = elf.get_section_by_name(".dynsym")
    if not isinstance(table, SymbolTableSection):
        return []
    out = []
    for sym in table.iter_symbols():
        rank = _SYMBOL_RANKS.get(sym["st_info"]["type"])
        # Skip undefined names and the AArch64 ELF mapping symbols ($x, $d: AAELF64 5.7.3).
        if rank is None or not sym.name or sym.name.startswith("$") or sym["st_shndx"] == "SHN_UNDEF":
            continue
        # At one address a function beats an object beats a label; a global beats a local.
        rank = 2 * rank + (sym["st_info"]["bind"] != "STB_LOCAL")
        out.append(Symbol(sym.name, sym["st_value"], sym["st_size"], rank))
    return out
