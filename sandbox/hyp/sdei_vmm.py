"""SDEI as the VMM sees it: the KVM_ARM_SDEI_COMMAND set of seed 002 (KVM SDEI series v5),
as `vm.sdei`.

The VMM exposes events (number, type, priority, signalled, a notifier), reads and writes
the registered events, each vCPU's pending events and its SDEI state (for migration), and
injects events. Each method is named after its sub-command and takes and returns the
sdei_uapi objects, or their bytes; `command()` is the ioctl form (struct kvm_sdei_cmd plus
the array its pointer would point to). Errors are OSError with an errno:

    ENOTTY  the Vm does not offer KVM_CAP_ARM_SDEI      EINVAL  a malformed struct or field
    ENOENT  no such event                                EEXIST  the event is registered already
    ERANGE  more than KVM_SDEI_MAX_EVENTS instances      EPERM   INJECT_EVENT: not registered and
    EBUSY   a vCPU concerned is running                          enabled on that vCPU

Interrupt bindings and RM_ANY's routing position have no struct in v5 (its "Future Work"):
they travel only in the whole-Vm snapshot, which carries all SDEI state exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..arch import pstate as ps
from ..kvm import EBUSY, EEXIST, EINVAL, ENOENT, ENOTTY, EPERM, ERANGE, Cap, kvm_error
from .power import MPIDR_HWID_MASK
from .sdei_abi import (KVM_SDEI_IMPL_VERSION, KVM_SDEI_INVALID_EVENT, KVM_SDEI_MAX_EVENTS, RM_PE, SAVED_GPREGS,
                       is_kvm_visible)
from .sdei_events import SHARED, Dispatch, Handler, SavedContext, SdeiEvent
from .sdei_state import EventState
from .sdei_uapi import (VCPU_COMMANDS, ExposedEventState, KvmSdeiCmd, RegisteredEventState, SdeiCmd,
                        VcpuEventState, VcpuRegsState, VcpuState, unpack_array)

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm
    from .sdei import Sdei


class SdeiVmm:
    def __init__(self, vm: "Vm"):
        self.vm = vm

    @property
    def _sdei(self) -> "Sdei":
        if not self.vm.check_extension(Cap.ARM_SDEI):
            raise kvm_error(ENOTTY, "the Vm does not offer KVM_CAP_ARM_SDEI")
        return self.vm.hypervisor.sdei

    def _idle(self, vcpu: "Vcpu | None" = None) -> None:
        for v in ([vcpu] if vcpu is not None else self.vm.vcpus):
            if v._running:
                raise kvm_error(EBUSY, f"vCPU {v.index} is running")

    # -- VM commands ---------------------------------------------------------------------------

    def get_version(self) -> int:
        """KVM_SDEI_CMD_GET_VERSION: the implementation's version (not the spec's)."""
        self._sdei
        return KVM_SDEI_IMPL_VERSION

    def get_exposed_event_count(self) -> int:
        return len(self.get_exposed_events())

    def get_exposed_events(self) -> list[ExposedEventState]:
        """Event 0 and the events the VMM exposed (not the interrupt-bind slots)."""
        return [ExposedEventState(e.num, int(e.shared), int(e.signaled), int(e.critical), notifier=e.notifier)
                for e in self._sdei.table.events.values() if e.origin != "dynamic"]

    def set_exposed_events(self, events: "list[ExposedEventState] | bytes", count: int | None = None) -> None:
        """KVM_SDEI_CMD_SET_EXPOSED_EVENT: expose new events; for one that exists only the
        notifier changes (its other fields must match). Numbers follow the v5 convention:
        event 0, or bit 31 clear and 0b01 in bits [23:22]."""
        sdei = self._sdei
        self._idle()
        if isinstance(events, (bytes, bytearray)):
            events = unpack_array(ExposedEventState, bytes(events), count if count is not None else
                                  len(events) // 24)
        table = sdei.table
        new = 0
        for e in events:
            if any(bytes(e.padding)) or e.type not in (0, 1) or e.signaled not in (0, 1) or e.priority not in (0, 1):
                raise kvm_error(EINVAL, f"exposed event {e.num:#x}: type/signaled/priority must be 0 or 1, "
                                        "padding 0")
            if not is_kvm_visible(e.num):
                raise kvm_error(EINVAL, f"event {e.num:#x} is not a KVM SDEI number (event 0, or bit 31 clear "
                                        "and 0b01 in bits [23:22])")
            old = table.get(e.num)
            if old is not None:
                if old.origin == "dynamic" or (int(old.shared), int(old.signaled), int(old.critical)) != (
                        e.type, e.signaled, e.priority):
                    raise kvm_error(EINVAL, f"event {e.num:#x} exists with other attributes")
            else:
                new += 1
        exposed = sum(1 for e in table.events.values() if e.origin != "dynamic")
        if exposed + new > KVM_SDEI_MAX_EVENTS:
            raise kvm_error(ERANGE, f"at most KVM_SDEI_MAX_EVENTS = {KVM_SDEI_MAX_EVENTS} exposed events")
        for e in events:
            old = table.get(e.num)
            if old is not None:
                old.notifier = e.notifier
            else:
                table.add(SdeiEvent(e.num, bool(e.type), bool(e.priority), bool(e.signaled), "vmm", e.notifier))

    def expose(self, num: int, *, shared: bool = False, critical: bool = False, signaled: bool = False,
               notifier: "Callable[[Any, int, int], None] | None" = None) -> None:
        """Expose one event (SET_EXPOSED_EVENT with one struct)."""
        self.set_exposed_events([ExposedEventState(num, int(shared), int(signaled), int(critical),
                                                   notifier=notifier)])

    def set_notifier(self, num: int, notifier: "Callable[[Any, int, int], None] | None") -> None:
        ev = self._sdei.table.get(num)
        if ev is None:
            raise kvm_error(ENOENT, f"no SDEI event {num:#x}")
        ev.notifier = notifier

    def set_bind_slots(self, private: int, shared: int) -> None:
        """How many PPI (private) and SPI (shared) bindings INTERRUPT_BIND offers
        (FEATURES(BIND_SLOTS)); fixed once a vCPU has run."""
        sdei = self._sdei
        if self.vm.hypervisor.power.has_run:
            raise kvm_error(EBUSY, "bind slots are fixed once a vCPU has run")
        if not (0 <= private <= 0xFFFF and 0 <= shared <= 0xFFFF):
            raise kvm_error(EINVAL, "bind slot counts are 16-bit")
        sdei.table.set_bind_slots(private, shared)

    def get_registered_event_count(self) -> int:
        return len(self.get_registered_events())

    def get_registered_events(self) -> list[RegisteredEventState]:
        table = self._sdei.table
        out: dict[int, RegisteredEventState] = {}
        for (num, pe), h in sorted(table.handlers.items()):
            if h.state is EventState.UNREGISTERED:
                continue
            r = out.get(num)
            if r is None:
                r = out[num] = RegisteredEventState(num)
            i = 0 if pe == SHARED else pe
            if pe == SHARED:
                r.route_mode, r.route_affinity = h.route_mode, h.affinity
            r.ep_address[i], r.ep_arg[i] = h.ep, h.arg
            if h.state & 1:
                r.set_bit(r.registered, i)
            if h.state & 2:
                r.set_bit(r.enabled, i)
            if h.state is EventState.UNREGISTER_PENDING:
                r.set_bit(r.unregister_pending, i)
        return list(out.values())

    def set_registered_events(self, events: "list[RegisteredEventState] | bytes", count: int | None = None) -> None:
        """KVM_SDEI_CMD_SET_REGISTERED_EVENT (migration destination). Running state comes
        with SET_VCPU_STATE; an unregister-pending handler needs it to complete."""
        sdei = self._sdei
        self._idle()
        if isinstance(events, (bytes, bytearray)):
            events = unpack_array(RegisteredEventState, bytes(events), count if count is not None else 1)
        table = sdei.table
        staged: list[tuple[SdeiEvent, int, Handler]] = []
        for r in events:
            ev = table.get(r.num) if r.num <= 0x7FFFFFFF else None
            if ev is None or (ev.origin == "dynamic" and ev.intid is None):
                raise kvm_error(ENOENT, f"no SDEI event {r.num:#x} (exposed, or bound on this Vm)")
            if table.registered_anywhere(ev) or any(s[0] is ev for s in staged):
                raise kvm_error(EEXIST, f"event {r.num:#x} is registered already")
            if any(bytes(r.padding)) or r.route_mode not in (0, 1):
                raise kvm_error(EINVAL, f"registered event {r.num:#x}: route_mode 0 or 1, padding 0")
            indices = r.indices()
            if not indices:
                raise kvm_error(EINVAL, f"registered event {r.num:#x} is registered nowhere")
            if ev.shared and indices != [0]:
                raise kvm_error(EINVAL, f"shared event {r.num:#x} uses index 0 only")
            if ev.shared and r.route_mode == RM_PE and sdei.pe_by_mpidr(r.route_affinity) is None:
                raise kvm_error(EINVAL, f"shared event {r.num:#x}: affinity {r.route_affinity:#x} is no vCPU")
            for i in indices:
                if i >= len(self.vm.vcpus):
                    raise kvm_error(EINVAL, f"registered event {r.num:#x}: vCPU {i} does not exist")
                reg, en, unreg = (r.bit(r.registered, i), r.bit(r.enabled, i), r.bit(r.unregister_pending, i))
                if (en and not reg) or (unreg and (reg or en)):
                    raise kvm_error(EINVAL, f"registered event {r.num:#x} vCPU {i}: inconsistent bits")
                state = EventState.UNREGISTER_PENDING if unreg else EventState(1 | (2 if en else 0))
                if not sdei.valid_entry(self.vm.vcpus[i], r.ep_address[i]):
                    raise kvm_error(EINVAL, f"registered event {r.num:#x} vCPU {i}: entry point "
                                            f"{r.ep_address[i]:#x} is not in guest RAM")
                h = Handler(state, r.ep_address[i], r.ep_arg[i], r.route_mode if ev.shared else RM_PE,
                            r.route_affinity if ev.shared and r.route_mode == RM_PE else
                            (0 if ev.shared else self.vm.vcpus[i].mpidr & MPIDR_HWID_MASK))
                staged.append((ev, SHARED if ev.shared else i, h))
        if table.registered_events() + len({s[0].num for s in staged}) > KVM_SDEI_MAX_EVENTS:
            raise kvm_error(ERANGE, f"at most KVM_SDEI_MAX_EVENTS = {KVM_SDEI_MAX_EVENTS} registered events")
        for ev, where, h in staged:
            table.handlers[(ev.num, where)] = h
        sdei.kick_all()

    # -- vCPU commands -----------------------------------------------------------------------------

    def get_vcpu_event_count(self, vcpu: "Vcpu") -> int:
        return len(self.get_vcpu_events(vcpu))

    def get_vcpu_events(self, vcpu: "Vcpu") -> list[VcpuEventState]:
        """Events pending on `vcpu`: its private ones, and the shared ones routed to it now
        (RM_PE: its affinity; RM_ANY: the PE routing would pick, else vCPU 0)."""
        sdei = self._sdei
        self._idle(vcpu)
        out = []
        for (num, where), count in sorted(sdei.table.pending.items()):
            if where == SHARED:
                ev = sdei.table.events[num]
                target = sdei.shared_target(ev, sdei.table.handler(ev, 0))
                where = 0 if target is None else target
            if where == vcpu.index:
                out.append(VcpuEventState(num, min(count, 0xFFFFFFFF)))
        return out

    def set_vcpu_events(self, vcpu: "Vcpu", events: "list[VcpuEventState] | bytes", count: int | None = None) -> None:
        """KVM_SDEI_CMD_SET_VCPU_EVENT: make events pending (replacing their counts)."""
        sdei = self._sdei
        self._idle(vcpu)
        if isinstance(events, (bytes, bytearray)):
            events = unpack_array(VcpuEventState, bytes(events), count if count is not None else len(events) // 16)
        if len(events) > KVM_SDEI_MAX_EVENTS:
            raise kvm_error(ERANGE, f"at most KVM_SDEI_MAX_EVENTS = {KVM_SDEI_MAX_EVENTS} vCPU events")
        staged = []
        for e in events:
            ev = sdei.table.get(e.num) if e.num <= 0x7FFFFFFF else None
            if ev is None:
                raise kvm_error(ENOENT, f"no SDEI event {e.num:#x}")
            if e.padding or not 1 <= e.event_count <= 0xFFFFFFFF:
                raise kvm_error(EINVAL, f"vCPU event {e.num:#x}: event_count >= 1, padding 0")
            if sdei.table.handler(ev, vcpu.index).state is EventState.UNREGISTERED:
                raise kvm_error(EINVAL, f"event {e.num:#x} is not registered for vCPU {vcpu.index}")
            staged.append(((ev.num, SHARED if ev.shared else vcpu.index), e.event_count))
        for key, n in staged:
            sdei.set_pending(key, n, at=vcpu.index)

    def get_vcpu_state(self, vcpu: "Vcpu") -> VcpuState:
        sdei = self._sdei
        self._idle(vcpu)
        pe = sdei.pes[vcpu.index]
        st = VcpuState(masked=int(pe.masked))
        for d in pe.stack:
            regs = VcpuRegsState(list(d.saved.regs), d.saved.pc, d.saved.pstate)
            if d.critical:
                st.critical_num, st.critical_regs = d.num, regs
            else:
                st.normal_num, st.normal_regs = d.num, regs
        return st

    def set_vcpu_state(self, vcpu: "Vcpu", state: "VcpuState | bytes") -> None:
        """KVM_SDEI_CMD_SET_VCPU_STATE: the PE mask and the running handlers (normal below
        critical) with the contexts COMPLETE will restore."""
        sdei = self._sdei
        self._idle(vcpu)
        if isinstance(state, (bytes, bytearray)):
            state = VcpuState.unpack(bytes(state))
        if state.masked not in (0, 1) or any(bytes(state.padding)):
            raise kvm_error(EINVAL, "kvm_sdei_vcpu_state: masked 0 or 1, padding 0")
        stack = []
        for num, regs, critical in ((state.normal_num, state.normal_regs, False),
                                    (state.critical_num, state.critical_regs, True)):
            if num == KVM_SDEI_INVALID_EVENT:
                continue
            ev = sdei.table.get(num) if num <= 0x7FFFFFFF else None
            if ev is None:
                raise kvm_error(ENOENT, f"no SDEI event {num:#x}")
            if ev.critical != critical:
                raise kvm_error(EINVAL, f"event {num:#x} is not a {'critical' if critical else 'normal'} event")
            if sdei.table.handler(ev, vcpu.index).state is EventState.UNREGISTERED:
                raise kvm_error(EINVAL, f"event {num:#x} is not registered for vCPU {vcpu.index}")
            if ev.shared and any(d.num == num for i, p in enumerate(sdei.pes) if i != vcpu.index for d in p.stack):
                raise kvm_error(EINVAL, f"shared event {num:#x} runs on another vCPU")
            if len(regs.regs) != SAVED_GPREGS or regs.pstate & ps.NRW or (regs.pstate & ps.M_MASK) not in (
                    ps.EL0T, ps.EL1T, ps.EL1H):
                raise kvm_error(EINVAL, f"event {num:#x}: the saved context must be AArch64 EL0t/EL1t/EL1h")
            stack.append(Dispatch(num, critical, SavedContext(tuple(r & 0xFFFFFFFFFFFFFFFF for r in regs.regs),
                                                              regs.pc, regs.pstate)))
        pe = sdei.pes[vcpu.index]
        for d in pe.stack:  # what ran before no longer runs
            h = sdei.table.handler(sdei.table.events[d.num], vcpu.index)
            if h.state is not EventState.UNREGISTER_PENDING:
                h.state = EventState(h.state & ~4)
        for d in stack:
            h = sdei.table.handler(sdei.table.events[d.num], vcpu.index)
            h.state = EventState(h.state | 4) if h.state is not EventState.UNREGISTER_PENDING else h.state
        pe.stack, pe.masked = stack, bool(state.masked)
        sdei.kick(vcpu.index)

    def inject_event(self, vcpu: "Vcpu", num: int) -> None:
        """KVM_SDEI_CMD_INJECT_EVENT: one more pending instance of `num` for `vcpu` (a shared
        event is routed by its registration). The handler runs when the vCPU next runs and
        can take it."""
        sdei = self._sdei
        self._idle(vcpu)
        ev = sdei.table.get(num) if 0 <= num <= 0x7FFFFFFF else None
        if ev is None:
            raise kvm_error(ENOENT, f"no SDEI event {num:#x}")
        if not sdei.table.enabled_on(ev, vcpu.index):
            raise kvm_error(EPERM, f"event {num:#x} is not registered and enabled for vCPU {vcpu.index}")
        where = SHARED if ev.shared else vcpu.index
        if (num, where) not in sdei.table.pending and sum(
                1 for (_, w) in sdei.table.pending if w == where) >= KVM_SDEI_MAX_EVENTS:
            raise kvm_error(ERANGE, f"at most KVM_SDEI_MAX_EVENTS = {KVM_SDEI_MAX_EVENTS} pending vCPU events")
        sdei.pend(ev, vcpu.index, count=1)

    # -- the ioctl form ------------------------------------------------------------------------------

    def command(self, cmd: "KvmSdeiCmd | bytes", data: bytes = b"",
                vcpu: "Vcpu | None" = None) -> tuple[KvmSdeiCmd, bytes]:
        """KVM_ARM_SDEI_COMMAND: `cmd` (struct kvm_sdei_cmd) with `data` standing for the
        array its pointer names; returns the updated struct and the array written back. vCPU
        commands need `vcpu` (a VM fd cannot run them: EINVAL), VM commands must not have it."""
        c = KvmSdeiCmd.unpack(bytes(cmd)) if isinstance(cmd, (bytes, bytearray)) else cmd
        try:
            sub = SdeiCmd(c.cmd)
        except ValueError:
            raise kvm_error(EINVAL, f"unknown KVM_SDEI_CMD {c.cmd}") from None
        if (sub in VCPU_COMMANDS) != (vcpu is not None):
            raise kvm_error(EINVAL, f"{sub.name} is a {'vCPU' if sub in VCPU_COMMANDS else 'VM'} command")
        out = KvmSdeiCmd(c.cmd, c.count, c.num)
        if sub is SdeiCmd.GET_VERSION:
            out.count = self.get_version()
            return out, b""
        counts = {SdeiCmd.GET_EXPOSED_EVENT_COUNT: self.get_exposed_events,
                  SdeiCmd.GET_REGISTERED_EVENT_COUNT: self.get_registered_events}
        if sub in counts:
            out.count = len(counts[sub]())
            return out, b""
        gets = {SdeiCmd.GET_EXPOSED_EVENT: self.get_exposed_events,
                SdeiCmd.GET_REGISTERED_EVENT: self.get_registered_events}
        if sub in gets:
            items = gets[sub]()[:c.count]
            out.count = len(items)
            return out, b"".join(i.pack() for i in items)
        if sub is SdeiCmd.SET_EXPOSED_EVENT:
            self.set_exposed_events(unpack_array(ExposedEventState, data, c.count))
            return out, b""
        if sub is SdeiCmd.SET_REGISTERED_EVENT:
            self.set_registered_events(unpack_array(RegisteredEventState, data, c.count))
            return out, b""
        assert vcpu is not None
        if sub is SdeiCmd.GET_VCPU_EVENT_COUNT:
            out.count = self.get_vcpu_event_count(vcpu)
            return out, b""
        if sub is SdeiCmd.GET_VCPU_EVENT:
            items = self.get_vcpu_events(vcpu)[:c.count]
            out.count = len(items)
            return out, b"".join(i.pack() for i in items)
        if sub is SdeiCmd.SET_VCPU_EVENT:
            self.set_vcpu_events(vcpu, unpack_array(VcpuEventState, data, c.count))
            return out, b""
        if sub is SdeiCmd.GET_VCPU_STATE:
            return out, self.get_vcpu_state(vcpu).pack()
        if sub is SdeiCmd.SET_VCPU_STATE:
            self.set_vcpu_state(vcpu, VcpuState.unpack(data))
            return out, b""
        self.inject_event(vcpu, c.num)  # INJECT_EVENT
        return out, b""

