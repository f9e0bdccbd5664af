"""Build the bare-metal test guest (tests/guests/baremetal) with the real cross toolchain,
and read facts about the result with binutils (an oracle independent of the sandbox)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "guests" / "baremetal"
CC = "aarch64-linux-gnu-gcc"  # Debian gcc-aarch64-linux-gnu (.ci/run installs it)
CFLAGS = ["-nostdlib", "-ffreestanding", "-fno-pie", "-no-pie", "-static", "-mgeneral-regs-only", "-O2", "-g",
          "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments"]


def build_hello(out_dir: Path) -> Path:
    if shutil.which(CC) is None:
        raise RuntimeError(f"{CC} is not installed (Debian package gcc-aarch64-linux-gnu; .ci/run installs it)")
    elf = out_dir / "hello.elf"
    subprocess.run([CC, *CFLAGS, "-T", str(SOURCE / "link.ld"), str(SOURCE / "start.S"), str(SOURCE / "hello.c"),
                    "-o", str(elf)], check=True, capture_output=True, text=True)
    return elf


def nm(elf: Path) -> dict[str, int]:
    """name -> address, as aarch64-linux-gnu-nm reports them."""
    out = subprocess.run(["aarch64-linux-gnu-nm", str(elf)], check=True, capture_output=True, text=True).stdout
    return {name: int(addr, 16) for addr, _kind, name in (line.split() for line in out.splitlines())}


def instruction_addresses(elf: Path, function: str, mnemonic: str) -> list[int]:
    """Addresses of `mnemonic` instructions inside `function`, from objdump's disassembly."""
    out = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(elf)], check=True, capture_output=True,
                         text=True).stdout
    found, inside = [], False
    for line in out.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            inside = header.group(1) == function
            continue
        insn = re.match(r"^\s+([0-9a-f]+):\s+[0-9a-f]{8}\s+(\S+)", line)
        if inside and insn and insn.group(2) == mnemonic:
            found.append(int(insn.group(1), 16))
    return found
