"""Starting a loaded image the way a bootloader does (Linux Documentation/arch/arm64/booting.rst):
the device tree in RAM, the boot CPU at the image's entry in EL1h with the MMU and caches
off and D, A, I, F masked, x0 = the device tree's physical address, x1 = x2 = x3 = 0.
Secondary vCPUs stay off until the guest starts them with PSCI CPU_ON."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import devicetree
from .memmap import DTB_ALIGN, DTB_MAX_SIZE
from .vcpu import RESET_PSTATE

if TYPE_CHECKING:
    from .loaders import LoadedImage
    from .vm import Vm

FDT_MAGIC = 0xD00DFEED
SZ_2M = 2 << 20


class DtbError(ValueError):
    """A device tree blob that cannot be handed to the guest."""


def check_dtb(dtb: bytes, name: str = "dtb") -> None:
    if len(dtb) < 40:
        raise DtbError(f"{name}: {len(dtb)} bytes is too short for a flattened device tree header")
    magic, totalsize = struct.unpack_from(">II", dtb)
    if magic != FDT_MAGIC:
        raise DtbError(f"{name}: magic is {magic:#010x}, not 0xd00dfeed: not a device tree blob")
    if totalsize != len(dtb):
        raise DtbError(f"{name}: header totalsize {totalsize:#x} but the file has {len(dtb):#x} bytes")
    if totalsize > DTB_MAX_SIZE:
        raise DtbError(f"{name}: {totalsize:#x} bytes; booting.rst allows at most 2 MiB")


def dtb_address(vm: "Vm", image: "LoadedImage", size: int) -> int:
    """Where the device tree goes: the start of RAM when it fits below the image (QEMU's
    place for it), else the first 2 MiB boundary above the image."""
    ram = min(vm.memory.ram, key=lambda r: r.base)
    start = -(-ram.base // DTB_ALIGN) * DTB_ALIGN
    if start + size <= image.base or start >= image.end:
        return start
    above = -(-image.end // SZ_2M) * SZ_2M
    r = vm.memory.ram_at(above)
    if r is None or above + size > r.end:
        raise DtbError(f"no room for a {size:#x}-byte device tree in RAM next to the image")
    return above


def boot(vm: "Vm", image: "LoadedImage", *, bootargs: str = "", dtb: bytes | None = None,
         vcpu: int = 0) -> int:
    """Put the device tree (generated from `vm` unless given) in RAM and set vCPU `vcpu`
    up to enter `image`. Returns the device tree's address (the x0 the guest gets)."""
    blob = devicetree.generate(vm, bootargs) if dtb is None else bytes(dtb)
    check_dtb(blob)
    address = dtb_address(vm, image, len(blob))
    vm.write_memory(address, blob)
    cpu = vm.vcpus[vcpu]
    cpu.set_regs({"pstate": RESET_PSTATE, "pc": image.entry, "x0": address, "x1": 0, "x2": 0, "x3": 0})
    return address
