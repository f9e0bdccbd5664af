"""Quirks: named switches that each revert one documented fix in the host model, so a
scenario can reproduce the bug report that fix answered. All are off by default.

A quirk is named after what it brings back and records the fix it reverts (commit id or
message id) and where that is documented. Code that honours a quirk asks
`vm.has_quirk(name)`; nothing else in the model changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kvm import EINVAL, kvm_error


@dataclass(frozen=True)
class Quirk:
    name: str
    reverts: str  # the fix, as its project names it
    source: str  # where the fix and the report are documented
    buggy: str  # what the guest or host observes with the quirk on
    fixed: str  # ... and without it


QUIRKS: dict[str, Quirk] = {q.name: q for q in (
    Quirk("vserror-without-vsesr",
          "Linux 4715c14bc136 \"KVM: arm64: Set an impdef ESR for Virtual-SError using VSESR_EL2.\"",
          "reference/ras.md section 6 row 1",
          "a vSError injected without an ESR carries ISS 0: the guest sees ESR 0xBE000000 "
          "(RAS: uncategorized, uncontainable)",
          "ISS = IDS: the guest sees 0xBF000000 (implementation-defined syndrome)"),
    Quirk("retire-aborted-mmio",
          "Linux e735a5da6442 \"KVM: arm64: Don't retire aborted MMIO instruction\"",
          "reference/ras.md section 6 row 6; reference/kvm-injection.md 3.4",
          "ext_dabt_pending after KVM_EXIT_MMIO still completes the access: ELR = the faulting "
          "PC + 4 and the load's destination register is written",
          "the access does not retire: ELR = the faulting PC, the destination is unchanged"),
    Quirk("sdei-resume-injects-irq",
          "KVM SDEI series v7 (20220527080253.1562538-*): \"resume from the specified address\"",
          "reference/sdei.md 3.4 (Oliver Upton on v6 13/18)",
          "SDEI_EVENT_COMPLETE_AND_RESUME ignores x1 and injects an IRQ (VBAR_EL1 + 0x280/0x480)",
          "execution resumes at the absolute address in x1 as if a synchronous exception were taken"),
    Quirk("sdei-entry-pstate-daif-only",
          "TF-A 37596fcb4 \"fix(sdei): set SPSR for SDEI based on TakeException\"; "
          "Linux 2376e75cc77e \"arm64: sdei: explicitly simulate PAN/UAO entry\"",
          "reference/sdei.md 3.2; reference/ras.md section 6 row 14",
          "the handler runs with the interrupted PSTATE plus DAIF only (PAN not set for SPAN=0)",
          "PSTATE per AArch64.TakeException: PAN set when SCTLR_EL1.SPAN == 0, DIT kept"),
    Quirk("sdei-signal-unchecked",
          "TF-A b142ede74 (EVENT_SIGNAL state checks)",
          "reference/sdei.md 2.2 EVENT_SIGNAL",
          "SDEI_EVENT_SIGNAL succeeds for a masked target PE or an event not registered and "
          "enabled there",
          "SDEI_EVENT_SIGNAL returns INVALID_PARAMETERS in those cases"),
    Quirk("sdei-bind-overflow",
          "TF-A 4096bd66c (INTERRUPT_BIND past the last free dynamic slot; regression test "
          "tf-a-tests test_sdei_bind_failure)",
          "reference/sdei.md 2.2 INTERRUPT_BIND and 4 test 9",
          "an INTERRUPT_BIND with no free slot of its kind brings the firmware down: the "
          "machine stops with KVM_EXIT_SYSTEM_EVENT (KVM_SYSTEM_EVENT_CRASH) at that call",
          "the bind fails with SDEI_OUT_OF_RESOURCE (-10); the bindings made stay intact"),
    Quirk("stale-vserror-restored",
          "Xen \"xen/arm: Save HCR_EL2 when a guest took the SError\" (Wei Chen)",
          "reference/ras.md section 6 row 16",
          "the saved vCPU state keeps the SError pending that the guest already took "
          "(HCR_EL2.VSE not read back), so a restore delivers it a second time",
          "taking the SError clears the pending state that is saved; a restore delivers nothing"),
    Quirk("ghes-busy-error-lost",
          "QEMU \"target/arm: Retry pushing CPER error if necessary\" (Gavin Shan, "
          "20250214041635.608012-1-gshan@redhat.com)",
          "reference/ras.md section 6 row 8; sandbox/ras/ghes.py",
          "a memory error recorded while the guest has not acknowledged the previous one on the "
          "same GHES source fails (\"OSPM does not acknowledge previous error\", QEMU aborts): "
          "the host API raises OSError(EBUSY) and the error is lost",
          "the error is queued and delivered once the guest writes the read-ack register"),
    Quirk("ghes-address-zero-rejected",
          "QEMU 2e223c5ec114 \"acpi/ghes: don't check if physical_address is not zero\"",
          "reference/ras.md section 6 row 9; sandbox/ras/ghes.py",
          "a memory error at guest physical address 0 is refused (QEMU aborts): the host API "
          "raises OSError(EINVAL) and nothing reaches the guest",
          "the CPER record carries physical address 0 and the notification is delivered"),
)}


def check_quirks(names: "set[str] | frozenset[str] | list[str] | tuple[str, ...]") -> frozenset[str]:
    """Validate quirk names: an unknown one is EINVAL (a typo must not silently do nothing)."""
    out = frozenset(names)
    unknown = sorted(out - QUIRKS.keys())
    if unknown:
        raise kvm_error(EINVAL, f"unknown quirk(s) {', '.join(unknown)}; known: {', '.join(sorted(QUIRKS))}")
    return out
