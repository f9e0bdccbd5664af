"""KVM_GET/SET_VCPU_EVENTS for one vCPU: read and pend a virtual SError, inject external
aborts after an MMIO/NISV/SEA exit (Linux arch/arm64/kvm/guest.c, inject_fault.c)."""

from __future__ import annotations

from unicorn import arm64_const as A

from ..arch import esr as E
from ..arch import pstate as ps
from ..arch.exception import ExceptionKind
from ..events import VcpuEvents
from ..events import validate as validate_events
from ..kvm import EINVAL, Cap, kvm_error
from ..serror import default_vserror_iss


class EventInjection:
    """Mixin of Vcpu: the vCPU events API."""

    def get_events(self) -> VcpuEvents:
        """KVM_GET_VCPU_EVENTS: the pending SError and, with KVM_CAP_ARM_SET_SERROR_ESR, its
        ESR (has_esr always 1 then). A pending external abort is never reported: it is taken
        when it is set (api.rst)."""
        self._refuse_while_running("get vCPU events")
        ev = VcpuEvents()
        iss = self.serror.pending_iss
        ev.serror_pending = int(iss is not None)
        if self.vm.check_extension(Cap.ARM_INJECT_SERROR_ESR):
            ev.serror_has_esr = 1
            ev.serror_esr = iss or 0
        return ev

    def set_events(self, events: VcpuEvents | bytes) -> None:
        """KVM_SET_VCPU_EVENTS. Raises OSError(EINVAL) for what KVM rejects, OSError(EBUSY)
        while the vCPU runs. An SError cannot be cancelled: serror_pending=0 leaves a pending
        one pending. A pended SError is taken at once if PSTATE.A is already clear."""
        self._refuse_while_running("set vCPU events")
        with_iabt = bool(self.vm.check_extension(Cap.ARM_INJECT_EXT_IABT))
        ev = VcpuEvents.unpack(bytes(events), with_iabt) if isinstance(events, (bytes, bytearray)) else events
        req = validate_events(ev, has_ras_esr=bool(self.vm.check_extension(Cap.ARM_INJECT_SERROR_ESR)),
                              with_iabt=with_iabt, has_dabt=bool(self.vm.check_extension(Cap.ARM_INJECT_EXT_DABT)),
                              has_iabt=with_iabt)
        serror_iss = req.serror_iss
        if serror_iss is not None and not ev.serror_has_esr:
            serror_iss = default_vserror_iss(self.vm)  # KVM's own syndrome (quirk vserror-without-vsesr)
        if self.vm.observers and (req.dabt or req.iabt or serror_iss is not None):
            self.vm.notify("inject", self, self.pc(), events=ev,
                           serror_iss=serror_iss, dabt=req.dabt, iabt=req.iabt, abt_iss=req.abt_iss)
        if (req.dabt or req.iabt) and self._abort_site is None:
            # api.rst calls it a programming error; the sandbox refuses rather than inject
            # at a stale address.
            raise kvm_error(EINVAL, "an external abort can only follow a KVM_EXIT_MMIO, "
                                    "KVM_EXIT_ARM_NISV or KVM_EXIT_ARM_SEA exit")
        if req.dabt or req.iabt:
            assert self._abort_site is not None
            pc, far = self._abort_site
            self._abort_site = None
            # The aborted access does not retire (Linux e735a5da6442): no MMIO completion,
            # ELR = the faulting instruction. ESR = EC by EL | IL | FSC 0x10, ORed with the
            # user's ISS bits (seed 003; inject_abt64 starts from the user ISS).
            if self._mmio_pending is not None and self.vm.has_quirk("retire-aborted-mmio"):
                # The bug e735a5da6442 fixed: the MMIO still completes (Rt written, PC + 4)
                # and the abort is taken at the next instruction.
                self._complete_mmio()
                pc = self.uc.reg_read(A.UC_ARM64_REG_PC)
            self._mmio_pending = None
            same_el = ps.el(self.pstate()) != 0
            esr = (E.syn_data_abort(same_el, E.FSC.SEA) if req.dabt
                   else E.syn_instruction_abort(same_el, E.FSC.SEA)) | req.abt_iss
            self.take_exception(ExceptionKind.SYNC, esr, pc, far=far)
        if serror_iss is not None:
            self.serror.pend(serror_iss)
            self.serror.deliver_if_unmasked()
