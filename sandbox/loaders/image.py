"""The arm64 Linux `Image` loader (Linux Documentation/arch/arm64/booting.rst, section 4).

The 64-byte header: code0/code1, text_offset (u64 at 0x08), image_size (u64 at 0x10), flags
(u64 at 0x18), three reserved words, the magic "ARM\\x64" (0x644d5241 at 0x38) and the PE
header offset. The image goes text_offset bytes above a 2 MiB-aligned base in RAM: QEMU's
choice, RAM base + 2 MiB (the first 2 MiB stay free for the device tree: hw/arm/boot.c
load_aarch64_image), and is entered at its first byte. A gzip-compressed Image (Image.gz) is
decompressed first, as QEMU's -kernel does.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..kvm import ENOMEM, kvm_error
from . import LoadedImage

if TYPE_CHECKING:
    from ..vm import Vm

IMAGE_MAGIC = 0x644D5241  # "ARM\x64", little-endian at offset 0x38
HEADER = struct.Struct("<IIQQQQQQII")  # code0 code1 text_offset image_size flags res2 res3 res4 magic res5
SZ_2M = 2 << 20
LEGACY_TEXT_OFFSET = 0x80000  # booting.rst: image_size == 0 means a pre-3.17 kernel at 0x80000

# flags (booting.rst): bit 0 endianness, bits 1-2 kernel page size, bit 3 physical placement.
FLAG_BE = 1 << 0
FLAG_PAGE_SIZE_SHIFT = 1
FLAG_PLACEMENT_ANYWHERE = 1 << 3
PAGE_SIZES = {0: None, 1: 4 << 10, 2: 16 << 10, 3: 64 << 10}


class ImageFormatError(ValueError):
    """A file that is not a loadable arm64 Image; the message names the file and field."""


@dataclass(frozen=True)
class ImageHeader:
    text_offset: int
    image_size: int  # 0 for kernels older than 3.17 (size unknown)
    flags: int

    @property
    def page_size(self) -> int | None:
        """The kernel's page size, or None when the header does not say."""
        return PAGE_SIZES[(self.flags >> FLAG_PAGE_SIZE_SHIFT) & 3]

    @property
    def placement_anywhere(self) -> bool:
        """Bit 3: the 2 MiB-aligned base may be anywhere in RAM (else near the start of DRAM)."""
        return bool(self.flags & FLAG_PLACEMENT_ANYWHERE)


def parse_header(data: bytes, name: str = "Image") -> ImageHeader:
    """Check and decode an Image header; ImageFormatError names what is wrong."""
    if len(data) < HEADER.size:
        raise ImageFormatError(f"{name}: {len(data)} bytes is too short for an arm64 Image header (64 bytes)")
    _c0, _c1, text_offset, image_size, flags, _r2, _r3, _r4, magic, _r5 = HEADER.unpack_from(data)
    if magic != IMAGE_MAGIC:
        raise ImageFormatError(f"{name}: magic at offset 0x38 is {magic:#010x}, not 0x644d5241 ('ARM\\x64'): "
                               "not an arm64 Linux Image")
    if image_size == 0:
        text_offset = LEGACY_TEXT_OFFSET
    elif flags & FLAG_BE:
        raise ImageFormatError(f"{name}: flags bit 0 says big-endian kernel; the sandbox runs little-endian guests")
    if text_offset % 4096:
        raise ImageFormatError(f"{name}: text_offset {text_offset:#x} (offset 0x08) is not page aligned")
    return ImageHeader(text_offset, image_size, flags)


def is_linux_image(data: bytes) -> bool:
    """Whether `data` (possibly gzip-compressed) starts with an arm64 Image header."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=__import__("io").BytesIO(data)) as f:
                data = f.read(HEADER.size)
        except (OSError, EOFError, zlib.error):
            return False
    return len(data) >= HEADER.size and HEADER.unpack_from(data)[8] == IMAGE_MAGIC


def _contents(source: "str | Path | bytes") -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "Image"
    else:
        name = str(source)
        data = Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ImageFormatError(f"{name}: gzip-compressed but cannot be decompressed: {e}") from None
    return data, name


def load_linux_image(vm: "Vm", source: "str | Path | bytes") -> LoadedImage:
    """Load an arm64 Image (or Image.gz) into the Vm's first RAM region at
    2 MiB-aligned RAM base + 2 MiB + text_offset. The memory the image claims
    (image_size: text, data and bss) must fit in that region."""
    data, name = _contents(source)
    header = parse_header(data, name)
    if not vm.memory.ram:
        raise kvm_error(ENOMEM, "the Vm has no RAM to load a kernel into")
    ram = min(vm.memory.ram, key=lambda r: r.base)
    base = -(-ram.base // SZ_2M) * SZ_2M + SZ_2M
    load = base + header.text_offset
    size = max(header.image_size, len(data))
    if load + size > ram.end:
        raise ImageFormatError(f"{name}: image_size {size:#x} at {load:#x} does not fit in RAM "
                               f"[{ram.base:#x}, {ram.end:#x}); give the Vm more memory")
    vm.write_memory(load, data)
    return LoadedImage("linux-image", load, load + size, load)
