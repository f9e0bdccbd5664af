"""Whole-VM snapshots: every piece of state a migration must carry, versioned and checksummed.

File layout (little-endian), in the spirit of Firecracker's snapshot files:

    magic    8 bytes  b"SBXSNAP\\0"
    version  u32      FORMAT_VERSION
    hlen     u32      length of the JSON header
    header   hlen     JSON: machine config, capabilities, vCPU registers, pending events
    blobs    ...      zlib-compressed RAM regions, in header order
    crc32    u32      zlib.crc32 of everything before it

A snapshot of another version, with a bad magic or a checksum mismatch is refused with
OSError(EINVAL) and a message saying which. Restoring on a fresh Vm (in this process or
another) continues the guest exactly where it was: same registers, same memory, same pending
SError, same emulated registers.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import TYPE_CHECKING, Any

from unicorn import arm64_const as A

from .kvm import EBUSY, EINVAL, Cap, kvm_error

if TYPE_CHECKING:
    from .memory import MmioDevice
    from .vcpu import Vcpu
    from .vm import Vm

MAGIC = b"SBXSNAP\0"
FORMAT_VERSION = 2  # 2: devices, GHES, SDEI/PSCI state, GIC, timers, ID registers, instruction counts

# System registers a vCPU snapshot carries (all EL1/EL0 state a guest kernel programs).
SAVED_SYSREGS = (
    "SCTLR_EL1", "CPACR_EL1", "TTBR0_EL1", "TTBR1_EL1", "TCR_EL1", "SPSR_EL1", "ELR_EL1", "ESR_EL1",
    "FAR_EL1", "PAR_EL1", "MAIR_EL1", "AMAIR_EL1", "VBAR_EL1", "CONTEXTIDR_EL1", "TPIDR_EL1",
    "TPIDR_EL0", "TPIDRRO_EL0", "CNTKCTL_EL1", "AFSR0_EL1", "AFSR1_EL1",
)
_V_IDS = [A.UC_ARM64_REG_Q0 + i for i in range(32)]


def _hex(v: int) -> str:
    return f"{v:#x}"


def vcpu_state(vcpu: "Vcpu") -> dict[str, Any]:
    uc = vcpu.uc
    state: dict[str, Any] = {
        "index": vcpu.index,
        "instructions": vcpu.instructions,
        "mpidr": _hex(vcpu.mpidr),
        "regs": {k: _hex(v) for k, v in vcpu.regs().items()},
        "sysregs": {name: _hex(vcpu.reg(name)) for name in SAVED_SYSREGS},
        "fp": [_hex(uc.reg_read(rid)) for rid in _V_IDS],
        "fpcr": _hex(uc.reg_read(A.UC_ARM64_REG_FPCR)),
        "fpsr": _hex(uc.reg_read(A.UC_ARM64_REG_FPSR)),
        "disr_el1": _hex(vcpu.sysregs.disr_el1),
        "serror_pending_iss": None if vcpu.serror.saved_iss() is None else _hex(vcpu.serror.saved_iss()),
        "abort_site": None if vcpu._abort_site is None else [_hex(x) for x in vcpu._abort_site],
        "mmio_pending": None,
    }
    if vcpu._mmio_pending is not None:
        ex, _ls = vcpu._mmio_pending
        assert ex.mmio is not None
        state["mmio_pending"] = {"pc": _hex(ex.pc), "phys_addr": _hex(ex.mmio.phys_addr),
                                 "data": bytes(ex.mmio.data).hex(), "len": ex.mmio.len,
                                 "is_write": ex.mmio.is_write}
    return state


def restore_vcpu_state(vcpu: "Vcpu", state: dict[str, Any]) -> None:
    from .arch.decode import decode_load_store
    from .exits import Exit, MmioExit
    from .kvm import ExitReason

    uc = vcpu.uc
    regs = {k: int(v, 16) for k, v in state["regs"].items()}
    vcpu.set_regs(regs)
    for name, value in state["sysregs"].items():
        vcpu.set_reg(name, int(value, 16))
    for rid, value in zip(_V_IDS, state["fp"]):
        uc.reg_write(rid, int(value, 16))
    uc.reg_write(A.UC_ARM64_REG_FPCR, int(state["fpcr"], 16))
    uc.reg_write(A.UC_ARM64_REG_FPSR, int(state["fpsr"], 16))
    vcpu.sysregs.disr_el1 = int(state["disr_el1"], 16)
    vcpu.instructions = int(state.get("instructions", 0))
    if state["serror_pending_iss"] is not None:
        vcpu.serror.pend(int(state["serror_pending_iss"], 16))
    site = state.get("abort_site")
    vcpu._abort_site = None if site is None else (int(site[0], 16), int(site[1], 16))
    mp = state.get("mmio_pending")
    if mp is not None:
        pc = int(mp["pc"], 16)
        insn = vcpu._fetch(pc)
        ls = decode_load_store(insn) if insn is not None else None
        if ls is not None:
            ex = Exit(ExitReason.MMIO, pc, mmio=MmioExit(int(mp["phys_addr"], 16), bytearray.fromhex(mp["data"]),
                                                         mp["len"], mp["is_write"]))
            vcpu._mmio_pending = (ex, ls)


def save(vm: "Vm") -> bytes:
    """Serialise `vm` (memory, configuration, every vCPU). The vCPUs must not be running."""
    from .virt import machine_state
    for v in vm.vcpus:
        v._refuse_while_running("snapshot the Vm")
        if v._delayed:  # host code waiting for instructions is no state (sandbox/access_completion.py)
            raise kvm_error(EBUSY, f"vCPU {v.index} has an action waiting for instructions (pause_then); "
                                   "run it until the action has run")
    blobs = [zlib.compress(bytes(r.buffer), 1) for r in vm.memory.ram]
    header = {
        "machine": {
            "unbacked": vm.unbacked_policy, "ras": vm.ras, "storm_threshold": vm.storm_threshold,
            "max_ram": vm.memory.max_ram, "psci_conduit": int(vm.hypervisor.psci_conduit),
            "uart": vm.uart is not None, "quirks": sorted(vm.quirks),
        },
        "semihosting": vm.semihosting.state() if vm.semihosting is not None else None,
        "caps": sorted(int(c) for c in vm.caps),
        "enabled_caps": sorted(int(c) for c in vm.enabled_caps),
        "ram": [{"base": _hex(r.base), "size": _hex(r.size), "blob": len(b)} for r, b in zip(vm.memory.ram, blobs)],
        "devices": [{"name": m.name, "base": _hex(m.base), "size": _hex(m.size),
                     "state": m.device.state() if hasattr(m.device, "state") else None} for m in vm.memory.mmio],
        "poisoned": [[_hex(s), _hex(e)] for s, e in vm.poisoned.ranges],
        "eret_sites": [_hex(a) for a in sorted(vm.eret_sites)],
        "gate_sites": [_hex(a) for a in sorted(vm.gate_sites)],
        "vcpus": [vcpu_state(v) for v in vm.vcpus],
        "hyp": vm.hypervisor.state(),  # PSCI power, SMCCC filter, SDEI, scheduler (sandbox/hyp)
    }
    if vm.ghes is not None:
        header["ghes"] = vm.ghes.state()
    header.update(machine_state(vm))  # GIC, generic timers, ID registers (sandbox.virt)
    head = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + struct.pack("<II", FORMAT_VERSION, len(head)) + head + b"".join(blobs)
    return body + struct.pack("<I", zlib.crc32(body))


def load(data: bytes, devices: dict[str, "MmioDevice"] | None = None) -> "Vm":
    """Rebuild a Vm from `save()` output. MMIO devices are host objects: pass them by the
    name they were registered under (a snapshot only records where they were)."""
    from .hyp.smccc import Conduit
    from .virt import GIC_REGION_NAMES, restore_machine_state
    from .vm import Vm

    if len(data) < len(MAGIC) + 12 or data[: len(MAGIC)] != MAGIC:
        raise kvm_error(EINVAL, "not a sandbox snapshot (bad magic)")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise kvm_error(EINVAL, "snapshot is corrupted (checksum mismatch)")
    version, hlen = struct.unpack_from("<II", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise kvm_error(EINVAL, f"snapshot format version {version}; this sandbox reads version {FORMAT_VERSION}")
    start = len(MAGIC) + 8
    header = json.loads(data[start:start + hlen])
    m = header["machine"]
    vm = Vm(ram_size=0, unbacked=m["unbacked"], ras=m["ras"], storm_threshold=m["storm_threshold"],
            max_ram=m["max_ram"], psci_conduit=Conduit(m["psci_conduit"]), uart=m["uart"],
            quirks=m.get("quirks", ()), semihosting=header.get("semihosting") is not None)
    if vm.semihosting is not None:
        vm.semihosting.restore(header["semihosting"])
    vm.caps = {Cap(c): 1 for c in header["caps"]}
    vm.enabled_caps = {Cap(c) for c in header["enabled_caps"]}
    offset = start + hlen
    for r in header["ram"]:
        base, size = int(r["base"], 16), int(r["size"], 16)
        vm.add_ram(base, size)
        raw = zlib.decompress(data[offset:offset + r["blob"]])
        offset += r["blob"]
        if len(raw) != size:
            raise kvm_error(EINVAL, "snapshot RAM region has the wrong size")
        vm.memory.write(base, raw)
    devices = devices or {}
    present = {r.name: r.device for r in vm.memory.mmio}
    for d in header["devices"]:
        if d["name"] in GIC_REGION_NAMES and header.get("gic") is not None:
            continue  # the GIC is rebuilt with its state below
        device = present.get(d["name"]) or devices.get(d["name"])
        if device is None:
            raise kvm_error(EINVAL, f"snapshot has device {d['name']!r}: pass it in `devices`")
        if d["name"] not in present:
            vm.add_device(int(d["base"], 16), int(d["size"], 16), device, d["name"])
        if d.get("state") is not None and hasattr(device, "restore"):
            device.restore(d["state"])
    for start, end in header.get("poisoned", []):
        vm.poison(int(start, 16), int(end, 16) - int(start, 16))
    vm.eret_sites = {int(a, 16) for a in header["eret_sites"]}
    vm.gate_sites = {int(a, 16) for a in header["gate_sites"]}
    for state in header["vcpus"]:
        vcpu = vm.create_vcpu(int(state["mpidr"], 16))
        restore_vcpu_state(vcpu, state)
    if header.get("ghes") is not None:
        from .ras.ghes import FirmwareFirst
        FirmwareFirst.restore(vm, header["ghes"])
    restore_machine_state(vm, header)
    if "hyp" in header:
        vm.hypervisor.restore(header["hyp"])
    return vm
