"""Firmware-first RAS: the platform firmware's side of APEI/GHES, as QEMU's hw/acpi/ghes.c
plays it for a guest.

`FirmwareFirst(vm, base, sources)` lays out in guest RAM what QEMU's "etc/hardware_errors"
blob and HEST hold: a HEST with one GHESv2 entry per error source, the error status address
registers (u64 each: where that source's status block is), the read-ack registers (u64 each,
initialised to 1) and the 1 KiB status blocks. `record_memory_error()` then does what
QEMU's acpi_ghes_memory_errors() + kvm_inject_arm_sea() do for a SIGBUS:

1. pick the source as a HEST would: an action-required error (BUS_MCEERR_AR, the guest
   consumed it) goes to the synchronous source (SEA), an action-optional one (BUS_MCEERR_AO)
   to the first asynchronous one (SEI, polled; SDEI once the dispatcher lands);
2. if the guest has not acknowledged the previous record (read-ack register still 0), queue
   the error: it is written and notified right after the guest's acknowledging write (QEMU
   aborted here before "Retry pushing CPER error if necessary"; quirk ghes-busy-error-lost);
3. otherwise write 0 to the read-ack register, write the CPER record (sandbox.ras.cper) into
   the block and raise the source's notification (sandbox.ras.notify).

Layout at `base` (page-aligned, in RAM):

    +0x000  HEST                               (HEST_AREA bytes)
    +0x400  error status address, per source   (u64)
            read-ack register, per source      (u64)
    +0x800  error status blocks, per source    (BLOCK_LENGTH bytes each)

The guest finds everything through the HEST; `publish()` writes the HEST's address where
the guest's consumer looks for it (firmware/ghes.S `ghes_hest_ptr`), as boot firmware hands
ACPI tables to the OS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any, Iterable

from ..kvm import EBUSY, EINVAL, kvm_error
from .cper import MemoryErrorType, Severity, memory_error_block
from .hest import READ_ACK_PRESERVE, READ_ACK_WRITE, GhesV2, Notification, build_hest
from .notify import NOTIFIERS, SYNCHRONOUS, check_notifiable

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

BLOCK_LENGTH = 1024  # QEMU ACPI_GHES_MAX_RAW_DATA_LENGTH
HEST_AREA = 0x400
REGISTERS = 0x400
BLOCKS = 0x800
MAX_SOURCES = 16


class MemoryErrorKind(IntEnum):
    """The SIGBUS si_code that tells the VMM how the host found the error (Linux
    include/uapi/asm-generic/siginfo.h)."""

    ACTION_REQUIRED = 4  # BUS_MCEERR_AR: consumed by the vCPU, notify synchronously
    ACTION_OPTIONAL = 5  # BUS_MCEERR_AO: found (scrub, other user), notify asynchronously


class Outcome(Enum):
    DELIVERED = "delivered"  # written into the status block and notified
    QUEUED = "queued"  # the guest has not acknowledged the previous record yet


@dataclass(frozen=True)
class MemoryError:
    physical_address: int
    kind: MemoryErrorKind = MemoryErrorKind.ACTION_REQUIRED
    severity: Severity = Severity.RECOVERABLE
    error_type: MemoryErrorType = MemoryErrorType.UNKNOWN
    vcpu: int | None = None  # the vCPU to notify (None: the first vCPU, or the one that acknowledges)

    @property
    def action_required(self) -> bool:
        return self.kind == MemoryErrorKind.ACTION_REQUIRED

    def state(self) -> dict[str, Any]:
        return {"pa": f"{self.physical_address:#x}", "kind": int(self.kind), "severity": int(self.severity),
                "type": int(self.error_type), "vcpu": self.vcpu}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> "MemoryError":
        return cls(int(s["pa"], 16), MemoryErrorKind(s["kind"]), Severity(s["severity"]),
                   MemoryErrorType(s["type"]), s["vcpu"])


@dataclass
class ErrorSource:
    """One GHESv2 error source: its HEST entry and what waits behind it."""

    entry: GhesV2
    block_address: int
    queue: list[MemoryError]

    @property
    def source_id(self) -> int:
        return self.entry.source_id

    @property
    def notification(self) -> Notification:
        return self.entry.notification


class FirmwareFirst:
    def __init__(self, vm: "Vm", base: int,
                 sources: Iterable[tuple[int, Notification] | tuple[int, Notification, int]] = ((0, Notification.SEA),),
                 *, initialise: bool = True):
        """`sources`: (source id, notification[, vector]) per GHESv2 entry, in HEST order
        (QEMU's virt board has one: (0, SEA)). Raises OSError(EINVAL) for a layout that does
        not fit in RAM, duplicate ids or a notification nothing can raise."""
        specs = [tuple(s) for s in sources]
        if not 1 <= len(specs) <= MAX_SOURCES:
            raise kvm_error(EINVAL, f"firmware-first needs 1 to {MAX_SOURCES} error sources")
        if base % 0x1000:
            raise kvm_error(EINVAL, f"firmware-first region {base:#x} must be page-aligned")
        ids = [int(s[0]) for s in specs]
        if len(set(ids)) != len(ids):
            raise kvm_error(EINVAL, f"duplicate error source ids {ids}")
        self.vm = vm
        self.base = base
        self.size = BLOCKS + BLOCK_LENGTH * len(specs)
        vm._check_ram_range(base, self.size)
        n = len(specs)
        self.sources: list[ErrorSource] = []
        for i, spec in enumerate(specs):
            notification = Notification(spec[1])
            if notification not in NOTIFIERS:
                raise kvm_error(EINVAL, f"no notifier for HEST notification {notification.name} "
                                        f"(known: {', '.join(k.name for k in NOTIFIERS)})")
            entry = GhesV2(source_id=ids[i], notification=notification,
                           error_status_address=base + REGISTERS + 8 * i,
                           read_ack_address=base + REGISTERS + 8 * n + 8 * i,
                           error_block_length=BLOCK_LENGTH, vector=int(spec[2]) if len(spec) > 2 else 0)
            self.sources.append(ErrorSource(entry, base + BLOCKS + BLOCK_LENGTH * i, []))
        self.hest = build_hest([s.entry for s in self.sources])
        if len(self.hest) > HEST_AREA:
            raise kvm_error(EINVAL, "too many error sources for the HEST area")
        self._ack_hooks: dict[tuple[int, int], int] = {}  # (vcpu index, source id) -> hook
        if initialise:
            vm.write_memory(base, bytes(self.size))
            vm.write_memory(base, self.hest)
            for s in self.sources:
                vm.write_memory(s.entry.error_status_address, struct.pack("<Q", s.block_address))
                # QEMU initialises the read-ack register to 1: nothing waits for an ack.
                vm.write_memory(s.entry.read_ack_address, struct.pack("<Q", READ_ACK_WRITE))
        vm.ghes = self

    # -- what the guest sees -----------------------------------------------------------

    @property
    def hest_address(self) -> int:
        return self.base

    def publish(self, pointer_address: int) -> None:
        """Write the HEST's guest-physical address as a u64 at `pointer_address`."""
        self.vm.write_memory(pointer_address, struct.pack("<Q", self.hest_address))

    def source(self, source_id: int) -> ErrorSource:
        for s in self.sources:
            if s.source_id == source_id:
                return s
        raise kvm_error(EINVAL, f"no error source {source_id}")

    def acknowledged(self, source: ErrorSource) -> bool:
        """Whether the guest has acknowledged the last record (read-ack register bit set)."""
        value = struct.unpack("<Q", self.vm.read_memory(source.entry.read_ack_address, 8))[0]
        return bool(value & READ_ACK_WRITE)

    # -- recording -------------------------------------------------------------------------

    def source_for(self, kind: MemoryErrorKind) -> ErrorSource:
        """The source a HEST assigns: synchronous for action-required errors, asynchronous for
        action-optional ones."""
        want_sync = kind == MemoryErrorKind.ACTION_REQUIRED
        for s in self.sources:
            if (s.notification in SYNCHRONOUS) == want_sync:
                return s
        raise kvm_error(EINVAL, f"the HEST has no {'synchronous' if want_sync else 'asynchronous'} error source "
                                f"for a {kind.name.lower().replace('_', '-')} memory error")

    def record_memory_error(self, physical_address: int, *,
                            kind: MemoryErrorKind = MemoryErrorKind.ACTION_REQUIRED,
                            severity: Severity = Severity.RECOVERABLE,
                            error_type: MemoryErrorType = MemoryErrorType.UNKNOWN,
                            vcpu: int | None = None, source_id: int | None = None) -> Outcome:
        """Record a memory error at guest physical `physical_address` and notify the guest
        (or queue it behind an unacknowledged record). Raises OSError(EINVAL) for an address
        outside guest RAM or a missing source; with quirks, the errors QEMU aborted on."""
        error = MemoryError(physical_address, MemoryErrorKind(kind), Severity(severity), MemoryErrorType(error_type), vcpu)
        if vcpu is not None and not 0 <= vcpu < len(self.vm.vcpus):
            raise kvm_error(EINVAL, f"no vCPU {vcpu}")
        if physical_address == 0 and self.vm.has_quirk("ghes-address-zero-rejected"):
            # Before QEMU 2e223c5ec114, a zero address was taken for "no address": recording failed.
            raise kvm_error(EINVAL, "acpi_ghes_record_errors: physical_address is 0, failed to record the error")
        if self.vm.memory.ram_at(physical_address) is None:
            raise kvm_error(EINVAL, f"{physical_address:#x} is not guest RAM")
        source = self.source(source_id) if source_id is not None else self.source_for(error.kind)
        if source.queue or not self.acknowledged(source):
            if self.vm.has_quirk("ghes-busy-error-lost"):
                raise kvm_error(EBUSY, "OSPM does not acknowledge previous error, so can not record CPER "
                                       "for current error anymore; failed to record the error")
            source.queue.append(error)
            self._watch_ack(source)
            self._observe("queued", source, error)
            return Outcome.QUEUED
        self._deliver(source, error, None)
        return Outcome.DELIVERED

    def _deliver(self, source: ErrorSource, error: MemoryError, acking: "Vcpu | None") -> None:
        vm = self.vm
        target = vm.vcpus[error.vcpu] if error.vcpu is not None else (acking or (vm.vcpus[0] if vm.vcpus else None))
        if target is not None:
            check_notifiable(source.notification, target, source.entry.vector)  # before anything is written
        # QEMU: read_ack = 0 (now owned by firmware), then the record.
        vm.write_memory(source.entry.read_ack_address, struct.pack("<Q", 0))
        vm.write_memory(source.block_address, memory_error_block(error.physical_address, error.severity,
                                                                 error.error_type).ljust(BLOCK_LENGTH, b"\0"))
        self._observe("recorded", source, error, target)
        if target is not None:
            NOTIFIERS[source.notification](target, error, source.entry.vector)

    def _observe(self, action: str, source: ErrorSource, error: MemoryError | None, vcpu: "Vcpu | None" = None) -> None:
        vm = self.vm
        who = vcpu or (vm.vcpus[0] if vm.vcpus else None)
        if vm.observers and who is not None:
            data: dict[str, object] = {"action": action, "source": source.source_id,
                                       "notification": source.notification.name, "queued": len(source.queue)}
            if error is not None:
                data.update(address=error.physical_address, severity=error.severity.name,
                            error_kind=error.kind.name)
            vm.notify("ghes", who, who.reg("pc"), **data)

    # -- acknowledgement -------------------------------------------------------------------

    def _watch_ack(self, source: ErrorSource) -> None:
        """Watch guest writes to the read-ack register while something waits behind it (a
        RAM watch on those 8 bytes, in every vCPU)."""
        for v in self.vm.vcpus:
            key = (v.index, source.source_id)
            if key not in self._ack_hooks:
                address = source.entry.read_ack_address
                self._ack_hooks[key] = v.watch_writes(
                    address, address + 7, lambda at, size, value, v=v: self._on_ack_write(v, source, at, value))

    def _unwatch_ack(self, source: ErrorSource) -> None:
        for v in self.vm.vcpus:
            hook = self._ack_hooks.pop((v.index, source.source_id), None)
            if hook is not None:
                v.unwatch(hook)

    def _on_ack_write(self, vcpu: "Vcpu", source: ErrorSource, address: int, value: int) -> None:
        shift = 8 * (address - source.entry.read_ack_address)
        if (value << shift) & READ_ACK_WRITE & ~READ_ACK_PRESERVE:
            # Deliver once the write has retired (sandbox/access_completion.py).
            vcpu.pause_then(lambda: self._on_ack(source, vcpu))

    def _on_ack(self, source: ErrorSource, vcpu: "Vcpu") -> None:
        """The guest acknowledged (its write has retired): deliver the next queued error."""
        if not self.acknowledged(source):
            return
        self._observe("acked", source, None, vcpu)
        if source.queue:
            try:
                self._deliver(source, source.queue[0], vcpu)
                source.queue.pop(0)
            except OSError:  # cannot be notified now (SDEI event not enabled): stays queued,
                # the watch stays armed for a later acknowledgement
                self._observe("undeliverable", source, source.queue[0], vcpu)
        if not source.queue:
            self._unwatch_ack(source)

    # -- migration -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a snapshot carries besides guest RAM (which holds the HEST, registers, blocks)."""
        return {"base": f"{self.base:#x}",
                "sources": [[s.source_id, int(s.notification), s.entry.vector] for s in self.sources],
                "queues": [[e.state() for e in s.queue] for s in self.sources]}

    @classmethod
    def restore(cls, vm: "Vm", state: dict[str, Any]) -> "FirmwareFirst":
        ff = cls(vm, int(state["base"], 16), [tuple(s) for s in state["sources"]], initialise=False)
        for source, queue in zip(ff.sources, state["queues"]):
            source.queue = [MemoryError.from_state(e) for e in queue]
            if source.queue:
                ff._watch_ack(source)
        return ff
