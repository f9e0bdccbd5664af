"""ID registers: the host chooses what the guest reads (KVM's writable ID registers):
features may be hidden, never invented; FEAT_RAS follows Vm(ras=...) and switches the RAS
emulation with it; MIDR and MPIDR are the host's to set; all of it is fixed once a vCPU ran."""

import errno

import pytest

from sandbox import ExitReason, Vm
from sandbox.idregs import ISAR0_RNDR, PFR0_RAS, PFR1_RAS_FRAC, field, with_field
from sandbox.kvm import Cap
from sandbox.virt import create_vm

from conftest import boot

READ_IDS = """
guest_main:
    ldr x0, =seen
    mrs x1, id_aa64pfr0_el1
    mrs x2, id_aa64pfr1_el1
    mrs x3, midr_el1
    mrs x4, mpidr_el1
    mrs x5, id_aa64isar0_el1
    stp x1, x2, [x0]
    stp x3, x4, [x0, #16]
    str x5, [x0, #32]
    ret
.balign 8
seen: .skip 40
"""


def seen(run, n=5):
    raw = run.vm.read_memory(run.sym("seen"), 8 * n)
    return [int.from_bytes(raw[8 * i:8 * i + 8], "little") for i in range(n)]


def test_a_ras_vm_shows_feat_rasv1p1_and_a_non_ras_vm_does_not():
    on = boot(READ_IDS, vm=Vm(ras=True))
    off = boot(READ_IDS, vm=Vm(ras=False))
    pfr0_on, pfr1_on = seen(on)[:2]
    pfr0_off, pfr1_off = seen(off)[:2]
    assert (field(pfr0_on, PFR0_RAS), field(pfr1_on, PFR1_RAS_FRAC)) == (1, 1)
    assert (field(pfr0_off, PFR0_RAS), field(pfr1_off, PFR1_RAS_FRAC)) == (0, 0)
    # Everything else is Unicorn's CPU as it is.
    assert pfr0_on & ~(0xF << PFR0_RAS) == pfr0_off == on.vcpu.uc.cpr_read(3, 0, 0, 4, 0)
    # PFR0, PFR1 and ISAR0 trapped (MIDR and MPIDR come from VPIDR_EL2/VMPIDR_EL2); no TID3
    # at all when the view is exactly Unicorn's CPU.
    assert on.vm.id_registers.traps == 3 and off.vm.id_registers.traps == 0


def test_the_host_hides_a_feature_and_the_guest_sees_it_hidden():
    vm = Vm()
    vcpu = vm.create_vcpu()
    isar0 = vcpu.reg("ID_AA64ISAR0_EL1")
    assert field(isar0, ISAR0_RNDR) == 1  # Unicorn's max CPU has FEAT_RNG
    vcpu.set_reg("ID_AA64ISAR0_EL1", with_field(isar0, ISAR0_RNDR, 0))
    run = boot(READ_IDS, vm=vm)
    assert field(seen(run)[4], ISAR0_RNDR) == 0
    assert seen(run)[4] == with_field(isar0, ISAR0_RNDR, 0)


def test_raising_a_field_above_the_cpu_is_refused_with_einval():
    vcpu = Vm().create_vcpu()
    pfr0 = vcpu.reg("ID_AA64PFR0_EL1")
    with pytest.raises(OSError) as e:
        vcpu.set_reg("ID_AA64PFR0_EL1", with_field(pfr0, 24, 1))  # GIC: no system-register CPU interface
    assert e.value.errno == errno.EINVAL and "[27:24]" in str(e.value)
    with pytest.raises(OSError) as e:  # FP is a signed field: 0xF (no FP) is lower than 0
        vcpu.set_reg("ID_AA64PFR0_EL1", with_field(pfr0, 16, 2))
    assert e.value.errno == errno.EINVAL
    vcpu.set_reg("ID_AA64PFR0_EL1", with_field(pfr0, 16, 0xF))  # hiding FP is allowed


def test_id_registers_are_immutable_once_a_vcpu_has_run():
    run = boot(READ_IDS)
    with pytest.raises(OSError) as e:
        run.vcpu.set_reg("MIDR_EL1", 0x410FD070)
    assert e.value.errno == errno.EBUSY


def test_midr_and_mpidr_chosen_by_the_host_are_what_the_guest_reads():
    vm = Vm()
    vcpu = vm.create_vcpu()
    vcpu.set_reg("MIDR_EL1", 0x411FD070)  # Cortex-A57 r1p0
    vcpu.set_reg("MPIDR_EL1", 0x0102)  # Aff1 = 1, Aff0 = 2
    run = boot(READ_IDS, vm=vm)
    assert run.exit.reason is ExitReason.SYSTEM_EVENT
    midr, mpidr = seen(run)[2:4]
    assert midr == 0x411FD070 and mpidr == 0x80000102  # bit 31 is RES1
    assert vcpu.reg("MIDR_EL1") == 0x411FD070


def test_hiding_ras_turns_the_ras_emulation_off():
    vm = Vm(ras=True)
    vcpu = vm.create_vcpu()
    assert vm.check_extension(Cap.ARM_INJECT_SERROR_ESR)
    vcpu.set_reg("ID_AA64PFR0_EL1", with_field(vcpu.reg("ID_AA64PFR0_EL1"), PFR0_RAS, 0))
    assert vm.ras is False and not vm.check_extension(Cap.ARM_INJECT_SERROR_ESR)
    assert field(vcpu.reg("ID_AA64PFR1_EL1"), PFR1_RAS_FRAC) == 0
    run = boot("""
guest_main:
    mrs x1, DISR_EL1          // no FEAT_RAS: UNDEFINED
    ret
""", vm=vm)
    assert [r.ec for r in run.records] == [0]
    # ...and showing it again turns it back on.
    vm2 = Vm(ras=False)
    v2 = vm2.create_vcpu()
    v2.set_reg("ID_AA64PFR0_EL1", with_field(v2.reg("ID_AA64PFR0_EL1"), PFR0_RAS, 1))
    assert vm2.ras and vm2.check_extension(Cap.ARM_INJECT_SERROR_ESR)


def test_the_virt_profile_hides_rndr_for_replay_and_the_view_migrates():
    vm = create_vm(ram_size=32 << 20)
    vcpu = vm.vcpus[0]
    assert field(vcpu.reg("ID_AA64ISAR0_EL1"), ISAR0_RNDR) == 0
    vcpu.set_reg("MIDR_EL1", 0x410FD034)
    moved = Vm.restore(vm.snapshot())
    assert field(moved.vcpus[0].reg("ID_AA64ISAR0_EL1"), ISAR0_RNDR) == 0
    assert moved.vcpus[0].reg("MIDR_EL1") == 0x410FD034
