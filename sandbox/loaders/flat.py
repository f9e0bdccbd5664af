"""Flat binaries: the bytes of the file at a given guest-physical address, entered at that
address (QEMU's -kernel does this with a non-Linux image at RAM base + 0x80000, the device
tree's address in x0)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..kvm import EINVAL, kvm_error
from ..memmap import FLAT_LOAD_ADDRESS
from . import LoadedImage

if TYPE_CHECKING:
    from ..vm import Vm

_SCAN_LIMIT = 4 << 20  # instructions in images up to this size are indexed for the vCPU gates


def load_flat(vm: "Vm", source: "str | Path | bytes", address: int = FLAT_LOAD_ADDRESS,
              entry: int | None = None) -> LoadedImage:
    """Copy `source` into guest RAM at `address`; start at `entry` (default: `address`)."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    name = "image" if isinstance(source, (bytes, bytearray)) else str(source)
    if not data:
        raise kvm_error(EINVAL, f"{name}: empty file")
    if address % 4:
        raise kvm_error(EINVAL, f"{name}: load address {address:#x} is not 4-byte aligned")
    ram = vm.memory.ram_at(address)
    if ram is None or address + len(data) > ram.end:
        raise kvm_error(EINVAL, f"{name}: {len(data):#x} bytes at {address:#x} are not inside guest RAM")
    vm.write_memory(address, data)
    if len(data) <= _SCAN_LIMIT:
        vm.note_code(address, data)  # ERET / ESB / daifclr sites, as for assembled programs
    start = address if entry is None else entry
    if not address <= start < address + len(data):
        raise kvm_error(EINVAL, f"{name}: entry {start:#x} is outside the image")
    return LoadedImage("flat", address, address + len(data), start)
