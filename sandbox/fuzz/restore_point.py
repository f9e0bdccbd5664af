"""Coming back to one machine state many thousand times: the fast path's restore.

Vm.snapshot()/restore() rebuild a whole machine (milliseconds), and Unicorn's
copy-on-write memory contexts (UC_CTL_CONTEXT_MEMORY) make the next run rebuild its
translations (~90 us, research note of issue 7). A `RestorePoint` keeps instead:

- the CPU context (uc_context_save: registers and system registers, about 1 us back);
- the RAM pages the guest writes after the point, found by write hooks over the pages not
  yet known (the gaps), so that each page costs one hook call the first time it is written
  in the whole campaign and a 4 KiB copy per restore afterwards;
- the host-side state the Python model keeps next to Unicorn (pending SError, DISR_EL1,
  instruction count, abort site, devices, poisoned ranges), the SDEI dispatcher's (events,
  handlers, pending instances, each PE's mask and running handlers: `SdeiPoint`) and the
  GIC's when the machine has one (its own state()/restore(), as a snapshot carries it; its
  register frames hold nothing else).

Restoring skips what cannot have changed: the TLB flush while the MMU was off at the point and
no translation-regime register has been written since (the vCPU's VirtualSites counts every
guest MSR and host write to one), and a device whose attributes are plain data equal to a copy
taken at the point.

Writes that bypass Unicorn's store path (DC ZVA) and host writes to RAM during an execution
(none of the fuzzer's event kinds does one) are not tracked; `verify()` compares every RAM
byte with the point, for the tests.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unicorn import UC_HOOK_MEM_WRITE, Uc

from ..hyp.sdei_events import Handler
from ..virt import GIC_REGION_NAMES

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

PAGE = 0x1000


class PageTracker:
    """The RAM pages written since the restore point, and their content at the point."""

    def __init__(self, vm: "Vm"):
        self.vm = vm
        self.images: dict[int, bytes] = {}  # page address -> content at the restore point
        self._slots: list[tuple[Any, int, bytes]] = []  # (buffer, offset, image), for restore()
        self._hooks: dict[int, list[int]] = {}  # vCPU index -> hook handles
        self._grown = True

    def _hook_gaps(self) -> None:
        for v in self.vm.vcpus:
            for h in self._hooks.pop(v.index, []):
                v.uc.hook_del(h)
            handles = []
            for region in self.vm.memory.ram:
                start = region.base
                for page in sorted(p for p in self.images if region.base <= p < region.end):
                    if page > start:
                        handles.append(v.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, None, start, page - 1))
                    start = page + PAGE
                if start < region.end:
                    handles.append(v.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, None, start, region.end - 1))
            self._hooks[v.index] = handles
        self._grown = False

    def _on_write(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> None:
        # Called before the store lands: the page still holds its content at the point.
        for page in {address & ~(PAGE - 1), (address + max(size, 1) - 1) & ~(PAGE - 1)}:
            if page not in self.images:
                region = self.vm.memory.ram_at(page)
                if region is None:
                    continue
                off = page - region.base
                image = bytes(region.buffer[off:off + PAGE])
                self.images[page] = image
                self._slots.append((region.buffer, off, image))
                self._grown = True

    def arm(self) -> None:
        self._hook_gaps()

    def rebase(self) -> None:
        """The pages' current content becomes their content at the point (a new point)."""
        self._slots = [(buffer, off, bytes(buffer[off:off + PAGE])) for buffer, off, _ in self._slots]
        self.images = {page: slot[2] for page, slot in zip(self.images, self._slots)}

    def restore(self) -> None:
        """Every written page back to its content at the point (outside a run)."""
        for buffer, off, image in self._slots:
            buffer[off:off + PAGE] = image
        if self._grown:
            self._hook_gaps()  # hooks cannot change inside a run: the new pages leave the gaps now


@dataclass
class _VcpuState:
    instructions: int
    pending_iss: int | None
    last_pended_iss: int | None
    disr_el1: int
    sysregs_extra: dict[str, int]
    abort_site: Any
    mmio_pending: Any
    last_exit: Any
    delayed: list[list[Any]]  # pause_then actions waiting for instructions
    sdei_check: bool


class RestorePoint:
    def __init__(self, vm: "Vm", *, verifying: bool = False):
        """`verifying`: keep a digest of all RAM for `verify()` (costs a hash of all of it)."""
        self.vm = vm
        self.verifying = verifying
        self.pages = PageTracker(vm)
        self.save()
        self.pages.arm()

    def save(self) -> None:
        """Make the machine's present state the point (again)."""
        vm = self.vm
        if hasattr(self, "pages"):
            self.pages.rebase()
        self.contexts = [v.uc.context_save() for v in vm.vcpus]
        # (regime writes seen, MMU on) per vCPU: restoring needs no TLB flush when neither changed.
        self.regimes = [(v.virtual_sites.regime_writes, bool(v.sctlr_el1() & 1)) for v in vm.vcpus]
        self.vcpus = [_VcpuState(v.instructions, v.serror.pending_iss, v.serror.last_pended_iss,
                                 v.sysregs.disr_el1, dict(v.sysregs.extra), v._abort_site, v._mmio_pending, v.last_exit,
                                 [list(d) for d in v._delayed], v.sdei_check)
                      for v in vm.vcpus]
        gic = vm.interrupt_controller
        self.gic = (gic, gic.state()) if gic is not None and hasattr(gic, "state") else None
        self.devices = [(r.device, _device_state(r.device), _fingerprint(r.device)) for r in vm.memory.mmio
                        if self.gic is None or r.name not in GIC_REGION_NAMES]
        self.sdei = SdeiPoint(vm.hypervisor.sdei)
        self.poisoned = list(vm.poisoned.ranges)
        self.semihosting = vm.semihosting.state() if vm.semihosting is not None else None
        self.digest = ram_digest(vm) if self.verifying else None

    def restore(self) -> None:
        vm = self.vm
        for v, ctx, s in zip(vm.vcpus, self.contexts, self.vcpus):
            v.uc.context_restore(ctx)
            _restore_vcpu(v, s)
        self.pages.restore()
        for device, state, fingerprint in self.devices:
            if fingerprint is None or _attributes(device) != fingerprint:
                _restore_device(device, state)
        self.sdei.restore()
        if self.gic is not None:
            gic = self.gic[0]
            gic.restore(self.gic[1])
            for v, cpu in zip(vm.vcpus, gic.cpus):
                if v.irq is not None:
                    # Drive the lines again from the GIC's state: after a run that ended with
                    # a line asserted, restoring the CPU context alone left the vCPU taking
                    # IRQs the GIC no longer had (measured: a storm at +0x280, IAR spurious).
                    v.irq.set_lines(*cpu.signalled)
        if vm.poisoned.ranges != self.poisoned:
            before = vm.poisoned.pages()
            vm.poisoned.ranges = list(self.poisoned)
            for v in vm.vcpus:
                v.apply_poison(before, vm.poisoned.pages())
        if self.semihosting is not None and vm.semihosting is not None:
            vm.semihosting.restore(self.semihosting)
        for i, (v, (writes, mmu_on)) in enumerate(zip(vm.vcpus, self.regimes)):
            if not v.virtual_sites.tlb_clean_since(writes, mmu_on):
                v._flush_tlb()  # the guest may have changed its translation tables since the point
                self.regimes[i] = (v.virtual_sites.regime_writes, mmu_on)  # clean again from here

    def verify(self) -> bool:
        """Whether RAM is exactly what it was at the point (slow: hashes all of it)."""
        assert self.digest is not None, "RestorePoint(verifying=True) keeps the digest"
        return ram_digest(self.vm) == self.digest


def _restore_vcpu(v: "Vcpu", s: _VcpuState) -> None:
    v.instructions = s.instructions
    v.serror.pending_iss = s.pending_iss
    v.serror.last_pended_iss = s.last_pended_iss
    v.sysregs.disr_el1 = s.disr_el1
    if v.sysregs.extra != s.sysregs_extra:
        v.sysregs.extra = dict(s.sysregs_extra)
    v._abort_site = s.abort_site
    v._mmio_pending = s.mmio_pending
    v.last_exit = s.last_exit
    v._delayed = [list(d) for d in s.delayed]
    v.sdei_check = s.sdei_check
    v._storm_key, v._storm_count = None, 0


class SdeiPoint:
    """The SDEI dispatcher's state at the point, as the Python objects it keeps (copied, not
    serialised: sdei_migration's JSON is for snapshots and costs more). Restoring compares
    first and assigns only what differs: a run that left SDEI alone (every SError run of a
    campaign) costs a few comparisons."""

    def __init__(self, sdei: Any):
        self.sdei = sdei
        t = sdei.table
        self.events = dict(t.events)
        self.dynamic = [e for e in t.events.values() if e.origin == "dynamic"]
        self.intids = [e.intid for e in self.dynamic]
        self.bind_slots = t.bind_slots
        self.handlers = {k: _handler_fields(h) for k, h in t.handlers.items()}
        self.pending = dict(t.pending)
        self.pes = [(pe.masked, list(pe.stack)) for pe in sdei.pes]  # Dispatch records are not changed
        self.rm_any_last = dict(sdei.rm_any_last)

    def restore(self) -> None:
        sdei = self.sdei
        t = sdei.table
        if t.pending != self.pending:
            t.pending = dict(self.pending)
        if (t.handlers or self.handlers) and (len(t.handlers) != len(self.handlers) or any(
                _handler_fields(h) != self.handlers.get(k) for k, h in t.handlers.items())):
            t.handlers = {k: Handler(*f) for k, f in self.handlers.items()}
        for pe, (masked, stack) in zip(sdei.pes, self.pes):
            if pe.masked is not masked or pe.stack != stack:
                pe.masked, pe.stack = masked, list(stack)
        if t.events != self.events or t.bind_slots != self.bind_slots:
            t.events = dict(self.events)
            t.bind_slots = self.bind_slots
        if [e.intid for e in self.dynamic] != self.intids:
            for e, intid in zip(self.dynamic, self.intids):
                e.intid = intid
        if sdei.rm_any_last != self.rm_any_last:
            sdei.rm_any_last = dict(self.rm_any_last)


def _handler_fields(h: Any) -> tuple[Any, ...]:
    return (h.state, h.ep, h.arg, h.route_mode, h.affinity)


def _attributes(device: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(device).items() if k != "vm"}


def _fingerprint(device: Any) -> dict[str, Any] | None:
    """A copy of the device's attributes at the point, when they are plain data: while they
    compare equal, the device is as it was and restoring it can be skipped (most executions
    leave the UART alone). None for a device holding anything else (objects compare by
    identity): it is always restored."""
    try:
        attributes = _attributes(device)
    except TypeError:  # no __dict__ (__slots__)
        return None
    return copy.deepcopy(attributes) if _plain(attributes) else None


_SCALARS = (int, float, str, bytes, bytearray, bool, type(None))


def _plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if depth > 4:
        return False
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_plain(v, depth + 1) for v in value)
    return False


def _device_state(device: Any) -> Any:
    if hasattr(device, "state") and hasattr(device, "restore"):
        return device.state()
    return {k: copy.copy(v) for k, v in vars(device).items() if k != "vm"}


def _restore_device(device: Any, state: Any) -> None:
    if hasattr(device, "state") and hasattr(device, "restore"):
        device.restore(state)
    else:
        vars(device).update({k: copy.copy(v) for k, v in state.items()})


def ram_digest(vm: "Vm") -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for region in vm.memory.ram:
        h.update(region.buffer)
    return h.digest()
