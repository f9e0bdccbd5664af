"""Guest image loaders: put a binary built by a real toolchain into guest RAM.

Every loader returns a `LoadedImage`; `sandbox boot` and scenarios start the guest from it.
Each format is a module here (flat binaries, arm64 Linux `Image`, ELF).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadedImage:
    """Where an image landed and how to start it."""

    kind: str  # "flat", "linux-image", "elf"
    base: int  # lowest guest-physical address written
    end: int  # one past the highest
    entry: int  # where the vCPU starts
    symbols: dict[str, int] = field(default_factory=dict)  # name -> address (ELF symtab)
