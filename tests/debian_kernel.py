"""An unmodified arm64 kernel from Debian's `linux-image-*-arm64` package, fetched with apt
into a cache outside git (never committed).

The ABI is resolved when it runs, from the dependency of the `linux-image-arm64:arm64`
meta-package (e.g. linux-image-6.1.0-57-arm64), so the test follows Debian's current kernel.
Needs root for `apt-get update` (it adds arm64 to the architectures apt looks at for that
one command) and network access to Debian's archive; a kernel already in the cache is used
when the archive cannot be reached.

    python3 tests/debian_kernel.py      # fetch (or find) it and print its path

Cache: $SANDBOX_KERNEL_CACHE, else $XDG_CACHE_HOME/sandbox/debian-kernel, else
~/.cache/sandbox/debian-kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

META_PACKAGE = "linux-image-arm64:arm64"


class KernelUnavailable(RuntimeError):
    """The kernel cannot be fetched here (no apt, not root, no network) and is not cached."""


def cache_dir() -> Path:
    if os.environ.get("SANDBOX_KERNEL_CACHE"):
        return Path(os.environ["SANDBOX_KERNEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sandbox" / "debian-kernel"


def _apt_options() -> list[str]:
    native = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    archs = native if native == "arm64" else f"{native},arm64"
    return ["-o", f"APT::Architectures={archs}"]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise KernelUnavailable(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return done.stdout


def resolve_abi(options: list[str]) -> str:
    """'6.1.0-57' from `linux-image-arm64:arm64`'s dependency."""
    out = _run(["apt-cache", *options, "depends", META_PACKAGE])
    m = re.search(r"Depends:\s*linux-image-([0-9][^\s:]*)-arm64", out)
    if not m:
        raise KernelUnavailable(f"cannot find the kernel package {META_PACKAGE} depends on:\n{out[:400]}")
    return m.group(1)


def _cached() -> list[Path]:
    return sorted(cache_dir().glob("vmlinuz-*-arm64"))


def fetch() -> Path:
    """The path of the kernel Image, downloading and unpacking it when it is not cached."""
    for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            return _fallback(f"{tool} is not installed")
    if os.geteuid() != 0:
        return _fallback("apt-get update needs root")
    options = _apt_options()
    try:
        _run(["apt-get", *options, "-q", "update"])
        abi = resolve_abi(options)
    except KernelUnavailable as e:
        return _fallback(str(e))
    dest = cache_dir() / f"vmlinuz-{abi}-arm64"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's download sandbox user must be able to write here
        _run(["apt-get", *options, "-q", "download", f"linux-image-{abi}-arm64:arm64"], cwd=work)
        [deb] = list(work.glob("*.deb"))
        _run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{work}' ./boot"])
        image = work / "boot" / f"vmlinuz-{abi}-arm64"
        if not image.exists():
            raise KernelUnavailable(f"{deb.name} has no boot/vmlinuz-{abi}-arm64")
        image.replace(dest)
    return dest


def _fallback(reason: str) -> Path:
    cached = _cached()
    if cached:
        return cached[-1]
    raise KernelUnavailable(f"no Debian arm64 kernel in {cache_dir()} and cannot fetch one: {reason}")


if __name__ == "__main__":
    try:
        print(fetch())
    except KernelUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
