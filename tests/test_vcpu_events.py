"""KVM_GET/SET_VCPU_EVENTS: layout, validation, read-back (seeds 000, 001, 003)."""

import errno
import struct

import pytest

from sandbox import Cap, Vm
from sandbox.events import UPSTREAM_SIZE, WITH_IABT_SIZE, VcpuEvents

from conftest import boot


def einval(vcpu, ev):
    with pytest.raises(OSError) as e:
        vcpu.set_events(ev)
    assert e.value.errno == errno.EINVAL
    return e.value


def test_upstream_layout_is_64_bytes_with_the_uapi_offsets():
    ev = VcpuEvents(serror_pending=1, serror_has_esr=1, ext_dabt_pending=1, serror_esr=0x1234567)
    raw = ev.pack()
    assert len(raw) == UPSTREAM_SIZE == 64
    assert raw[0:3] == b"\x01\x01\x01" and raw[3:8] == b"\0" * 5
    assert struct.unpack_from("<Q", raw, 8)[0] == 0x1234567 and raw[16:] == b"\0" * 48
    assert VcpuEvents.unpack(raw) == ev


def test_seed_003_layout_carries_ext_iabt_pending_and_ext_abt_esr():
    ev = VcpuEvents(ext_iabt_pending=1, serror_esr=5, ext_abt_esr=0x600)
    raw = ev.pack(with_iabt=True)
    assert len(raw) == WITH_IABT_SIZE
    assert raw[3] == 1 and struct.unpack_from("<QQ", raw, 8) == (5, 0x600)
    assert VcpuEvents.unpack(raw, with_iabt=True) == ev


def test_nonzero_pad_or_reserved_is_einval(vcpu):
    einval(vcpu, VcpuEvents(pad=b"\0\0\x01\0\0"))
    einval(vcpu, VcpuEvents(reserved=(0,) * 11 + (1,)))
    raw = bytearray(VcpuEvents(serror_pending=1).pack())
    raw[3] = 1  # byte 3 is pad[0] upstream: where the unmerged ext_iabt_pending would live
    einval(vcpu, bytes(raw))
    assert vcpu.get_events().serror_pending == 0  # nothing was applied


def test_has_esr_without_ras_is_einval_but_ignored_when_nothing_is_pending():
    vm = Vm(ras=False)
    v = vm.create_vcpu()
    assert not vm.check_extension(Cap.ARM_INJECT_SERROR_ESR)
    einval(v, VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=1))
    v.set_events(VcpuEvents(serror_pending=0, serror_has_esr=1, serror_esr=1 << 40))
    assert v.get_events() == VcpuEvents()


def test_esr_bits_above_the_iss_are_einval(vcpu):
    einval(vcpu, VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=1 << 25))
    vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=0x1FFFFFF))
    assert vcpu.get_events().serror_esr == 0x1FFFFFF


def test_get_after_set_reports_pending_and_the_esr(vcpu):
    vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=0x0101D1ED))
    ev = vcpu.get_events()
    assert (ev.serror_pending, ev.serror_has_esr, ev.serror_esr, ev.ext_dabt_pending) == (1, 1, 0x0101D1ED, 0)


def test_without_an_esr_the_sandbox_chooses_kvms_ids_default(vcpu):
    vcpu.set_events(VcpuEvents(serror_pending=1))
    assert vcpu.get_events().serror_esr == 0x01000000


def test_a_pending_serror_cannot_be_cancelled(vcpu):
    vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=7))
    vcpu.set_events(VcpuEvents(serror_pending=0))
    ev = vcpu.get_events()
    assert ev.serror_pending == 1 and ev.serror_esr == 7


def test_a_second_serror_overwrites_the_syndrome_like_kvm(vcpu):
    vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=7))
    vcpu.set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=9))
    assert vcpu.get_events().serror_esr == 9


def test_external_abort_rules(vcpu):
    einval(vcpu, VcpuEvents(ext_dabt_pending=1))  # no MMIO/NISV/SEA exit before
    vm = Vm()
    vm.set_capability(Cap.ARM_INJECT_EXT_IABT, True)
    v = vm.create_vcpu()
    einval(v, VcpuEvents(ext_dabt_pending=1, ext_iabt_pending=1))
    einval(v, VcpuEvents(ext_dabt_pending=1, ext_abt_esr=1 << 25))
    novm = Vm()
    novm.set_capability(Cap.ARM_INJECT_EXT_DABT, False)
    einval(novm.create_vcpu(), VcpuEvents(ext_dabt_pending=1))


def test_set_and_get_while_running_is_ebusy():
    vm = Vm()
    vcpu = vm.create_vcpu()
    seen = []

    class Probe:
        def read(self, offset, size):
            for call in (vcpu.get_events, lambda: vcpu.set_events(VcpuEvents(serror_pending=1))):
                try:
                    call()
                except OSError as e:
                    seen.append(e.errno)
            return 0

        def write(self, offset, size, value):
            pass

    vm.add_device(0xA000000, 0x1000, Probe(), "probe")
    boot("guest_main:\n ldr x1, =0xA000000\n ldr w2, [x1]\n ret\n", vm=vm)
    assert seen == [errno.EBUSY, errno.EBUSY]
