"""SDEI as the VMM sees it: the KVM_ARM_SDEI_COMMAND set of seed 002 with its state structs
(exact byte layouts), errors as errno, notifiers, and a migration of the SDEI state through
the command set alone."""

import errno
import struct

import pytest

from sandbox import Cap, ExitReason, Vm
from sandbox.hyp import sdei_uapi as U
from sandbox.hyp.filter import FilterAction
from sandbox.hyp.sdei_abi import KVM_SDEI_MAX_EVENTS, KVM_SDEI_MAX_VCPUS
from sandbox.hyp.sdei_events import NOTIFY_COMPLETED, NOTIFY_DELIVERED
from sandbox.snapshot import restore_vcpu_state, vcpu_state

from guest_lib import machine


def err(fn, *args, **kw):
    with pytest.raises(OSError) as e:
        fn(*args, **kw)
    return e.value.errno


def test_state_struct_layouts_are_the_v5_uapi_bytes():
    assert U.SIZES == {"kvm_sdei_cmd": 16, "kvm_sdei_exposed_event_state": 24,
                       "kvm_sdei_registered_event_state": 8408, "kvm_sdei_vcpu_event_state": 16,
                       "kvm_sdei_vcpu_regs_state": 160, "kvm_sdei_vcpu_state": 344}
    raw = U.ExposedEventState(0x400001, type=1, signaled=0, priority=1).pack()
    assert raw == struct.pack("<QBBB5xQ", 0x400001, 1, 0, 1, 0)
    r = U.RegisteredEventState(0x400002, route_mode=1, route_affinity=0x0102)
    r.ep_address[3], r.ep_arg[3], r.ep_arg[511] = 0x40001000, 0xAB, 7
    r.set_bit(r.registered, 3)
    r.set_bit(r.enabled, 70)
    r.set_bit(r.unregister_pending, 511)
    raw = r.pack()
    assert struct.unpack_from("<QB", raw, 0) == (0x400002, 1)
    assert raw[9:16] == bytes(7)  # padding[3] and the implicit 4-byte hole before route_affinity
    assert struct.unpack_from("<Q", raw, 16)[0] == 0x0102
    assert struct.unpack_from("<Q", raw, 24 + 3 * 8)[0] == 0x40001000  # ep_address[3]
    assert struct.unpack_from("<Q", raw, 24 + 4096 + 3 * 8)[0] == 0xAB  # ep_arg[3]
    assert struct.unpack_from("<Q", raw, 24 + 4096 + 511 * 8)[0] == 7  # ep_arg[511]
    assert struct.unpack_from("<Q", raw, 8216)[0] == 1 << 3  # registered[0]
    assert struct.unpack_from("<Q", raw, 8280 + 8)[0] == 1 << 6  # enabled[1]: vCPU 70
    assert struct.unpack_from("<Q", raw, 8344 + 7 * 8)[0] == 1 << 63  # unregister_pending[7]: vCPU 511
    assert U.RegisteredEventState.unpack(raw) == r
    st = U.VcpuState(masked=0, critical_num=0x400020, normal_num=0,
                     critical_regs=U.VcpuRegsState(list(range(18)), 0x4000, 0x3C5),
                     normal_regs=U.VcpuRegsState([7] * 18, 0x5000, 0x0))
    raw = st.pack()
    assert struct.unpack_from("<B7xQQ", raw, 0) == (0, 0x400020, 0)
    assert struct.unpack_from("<18QQQ", raw, 24) == (*range(18), 0x4000, 0x3C5)
    assert struct.unpack_from("<Q", raw, 184 + 18 * 8)[0] == 0x5000
    assert U.VcpuState.unpack(raw) == st
    assert U.VcpuEventState(0x400001, 3).pack() == struct.pack("<QII", 0x400001, 3, 0)
    assert U.KvmSdeiCmd(U.SdeiCmd.INJECT_EVENT, 0, 0x400001).pack() == struct.pack("<IIQ", 12, 0, 0x400001)
    assert len(r.ep_address) == len(r.ep_arg) == KVM_SDEI_MAX_VCPUS == 512


def test_version_exposure_limits_and_errors():
    vm = Vm()
    v = vm.create_vcpu()
    cmd, _ = vm.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_VERSION).pack())
    assert cmd.version == vm.sdei.get_version() == 0x00010001
    assert [e.num for e in vm.sdei.get_exposed_events()] == [0]  # event 0 is always there
    assert err(vm.sdei.expose, 0x80400000) == errno.EINVAL  # bit 31
    assert err(vm.sdei.expose, 0x12) == errno.EINVAL  # not a KVM-visible number (bits [23:22] = 0b01)
    assert err(vm.sdei.set_exposed_events, [U.ExposedEventState(0x400001, type=2)]) == errno.EINVAL
    assert err(vm.sdei.expose, 0, shared=True) == errno.EINVAL  # event 0 is private
    raw = bytearray(U.ExposedEventState(0x400001).pack())
    raw[16] = 1
    assert err(vm.sdei.set_exposed_events, bytes(raw)) == errno.EINVAL  # a notifier has no byte form
    for i in range(KVM_SDEI_MAX_EVENTS - 1):
        vm.sdei.expose(0x400100 + i)
    assert err(vm.sdei.expose, 0x400001) == errno.ERANGE
    vm.sdei.expose(0x400100)  # exposing it again only updates the notifier
    assert err(vm.sdei.expose, 0x400100, critical=True) == errno.EINVAL
    cmd, data = vm.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_EXPOSED_EVENT_COUNT))
    assert cmd.count == KVM_SDEI_MAX_EVENTS
    cmd, data = vm.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_EXPOSED_EVENT, count=2))
    assert [e.num for e in U.unpack_array(U.ExposedEventState, data, 2)] == [0, 0x400100]
    assert err(vm.sdei.command, U.KvmSdeiCmd(U.SdeiCmd.GET_VCPU_STATE)) == errno.EINVAL  # a vCPU command
    assert err(vm.sdei.command, U.KvmSdeiCmd(U.SdeiCmd.GET_VERSION), vcpu=v) == errno.EINVAL
    assert err(vm.sdei.command, U.KvmSdeiCmd(99)) == errno.EINVAL
    other = Vm()
    other.set_capability(Cap.ARM_SDEI, False)
    assert err(other.sdei.get_version) == errno.ENOTTY


def test_registered_and_vcpu_state_errors():
    vm = Vm()
    v0, v1 = vm.create_vcpu(), vm.create_vcpu()
    vm.sdei.expose(0x400010)
    vm.sdei.expose(0x400020, critical=True)
    ep = 0x40001000
    r = U.RegisteredEventState(0x400099)
    r.set_bit(r.registered, 0)
    r.ep_address[0] = ep
    assert err(vm.sdei.set_registered_events, [r]) == errno.ENOENT
    r.num = 0x400010
    r.set_bit(r.enabled, 1)  # enabled on vCPU 1 without being registered there
    assert err(vm.sdei.set_registered_events, [r]) == errno.EINVAL
    r.enabled[0] = 0
    r.set_bit(r.registered, 5)  # no vCPU 5
    assert err(vm.sdei.set_registered_events, [r]) == errno.EINVAL
    r.registered[0] = 1
    r.ep_address[0] = 0x10000  # not guest RAM
    assert err(vm.sdei.set_registered_events, [r]) == errno.EINVAL
    r.ep_address[0] = ep
    vm.sdei.set_registered_events(r.pack())
    assert err(vm.sdei.set_registered_events, [r]) == errno.EEXIST
    assert [x.num for x in vm.sdei.get_registered_events()] == [0x400010]
    assert err(vm.sdei.set_vcpu_events, v0, [U.VcpuEventState(0x400010, 0)]) == errno.EINVAL
    assert err(vm.sdei.set_vcpu_events, v1, [U.VcpuEventState(0x400010, 1)]) == errno.EINVAL  # not there
    assert err(vm.sdei.set_vcpu_events, v0, [U.VcpuEventState(0x400010)] * 129) == errno.ERANGE
    vm.sdei.set_vcpu_events(v0, [U.VcpuEventState(0x400010, 2)])
    assert vm.sdei.get_vcpu_events(v0) == [U.VcpuEventState(0x400010, 2)]
    good = U.VcpuRegsState([0] * 18, 0x40002000, 0x3C5)
    assert err(vm.sdei.set_vcpu_state, v0, U.VcpuState(normal_num=0x400077, normal_regs=good)) == errno.ENOENT
    assert err(vm.sdei.set_vcpu_state, v0, U.VcpuState(critical_num=0x400010, critical_regs=good)) == errno.EINVAL
    assert err(vm.sdei.set_vcpu_state, v0, U.VcpuState(normal_num=0x400010,
                                                        normal_regs=U.VcpuRegsState([0] * 18, 0, 0x3C9))) == errno.EINVAL
    assert err(vm.sdei.set_vcpu_state, v1, U.VcpuState(normal_num=0x400010, normal_regs=good)) == errno.EINVAL
    assert err(vm.sdei.set_vcpu_state, v0, U.VcpuState(masked=2)) == errno.EINVAL
    vm.sdei.set_vcpu_state(v0, U.VcpuState(masked=0, normal_num=0x400010, normal_regs=good))
    assert vm.sdei.get_vcpu_state(v0).normal_num == 0x400010
    assert err(vm.sdei.inject_event, v0, 0x400020) == errno.EPERM  # not registered


def test_commands_refuse_a_running_vcpu():
    m = machine("guest_main:\n ret\n")
    v = m.vm.vcpus[0]
    seen = []

    def observer(e):
        if e.kind == "hypercall":
            try:
                m.vm.sdei.get_vcpu_state(v)
            except OSError as x:
                seen.append(x.errno)
    m.vm.observers.append(observer)
    m.run()
    assert seen and set(seen) == {errno.EBUSY}


def test_notifier_is_called_on_delivery_and_completion():
    m = machine("""
guest_main:
    ldr x1, =0x400010
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, =0x400010
    bl sdei_event_enable
    bl sdei_pe_unmask
    ldr x0, =0xC6000000
    hvc #0
    b guest_halt
""")
    calls = []
    m.vm.sdei.expose(0x400010, notifier=lambda vcpu, num, state: calls.append((vcpu.index, num, state)))
    m.vm.set_smccc_filter(0xC6000000, 1, FilterAction.FWD_TO_USER)
    assert m.run().reason is ExitReason.HYPERCALL
    m.vm.sdei.inject_event(m.vm.vcpus[0], 0x400010)
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert calls == [(0, 0x400010, NOTIFY_DELIVERED), (0, 0x400010, NOTIFY_COMPLETED)]


MIGRATE = """
// Event 0 (private) and the shared 0x400030 (RM_PE to CPU 0) with the recording handler;
// the normal handler stops in a forwarded call; the host migrates the Vm there.
guest_main:
    mov x1, #0
    mov x3, #0x10
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    mov x1, #0
    bl sdei_event_enable
    ldr x1, =0x400030
    mov x3, #0x30
    mov x4, #1
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, =0x400030
    bl sdei_event_enable
    bl sdei_pe_unmask
    ldr x9, =hook
    ldr x10, =sdei_hook
    str x9, [x10]
    mov x1, #0
    mov x2, #0
    mov x7, #0x77
    bl sdei_event_signal
    ldr x9, =out
    str x7, [x9]
    b guest_halt
hook:
    ldr x0, =0xC6000000
    hvc #0
    mov x0, #0
    ret
.balign 8
out: .quad 0
"""


def _clone_without_sdei(src: Vm) -> Vm:
    """A fresh Vm with the source's memory and vCPU registers (what a VMM moves with
    KVM_GET/SET_ONE_REG and its RAM copy), but no SDEI state."""
    dst = Vm(ram_size=0, uart=False)
    for r in src.memory.ram:
        dst.add_ram(r.base, r.size)
        dst.write_memory(r.base, src.read_memory(r.base, r.size))
    for v in src.vcpus:
        w = dst.create_vcpu(v.mpidr)
        restore_vcpu_state(w, vcpu_state(v))
        dst.hypervisor.power.set_mp_state(w, src.hypervisor.power.get_mp_state(v))
    dst.eret_sites, dst.gate_sites = set(src.eret_sites), set(src.gate_sites)
    return dst


def _finish(m_vm, program):
    from sandbox.sdei_client import sdei_records
    while True:
        ex = m_vm.run()
        if ex.reason is ExitReason.SYSTEM_EVENT:
            break
        assert ex.reason is ExitReason.HYPERCALL
    return [r.__dict__ for r in sdei_records(m_vm, program)], m_vm.read_memory(program["out"], 8), m_vm.vcpus[0].regs()


def test_migration_through_the_command_set_continues_the_running_handler():
    m = machine(MIGRATE)
    m.vm.sdei.expose(0x400030, shared=True)
    m.vm.set_smccc_filter(0xC6000000, 1, FilterAction.FWD_TO_USER)
    ex = m.run()
    assert ex.reason is ExitReason.HYPERCALL  # inside the handler of event 0
    m.vm.sdei.inject_event(m.vm.vcpus[0], 0x400030)  # a shared event pending as well
    src, v = m.vm, m.vm.vcpus[0]
    dst = _clone_without_sdei(src)
    dst.set_smccc_filter(0xC6000000, 1, FilterAction.FWD_TO_USER)
    w = dst.vcpus[0]
    # the v5 order: exposed events, registered events, vCPU events, vCPU state (all as bytes)
    c, data = src.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_EXPOSED_EVENT_COUNT))
    c, data = src.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_EXPOSED_EVENT, count=c.count))
    dst.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.SET_EXPOSED_EVENT, count=c.count), data)
    c, data = src.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_REGISTERED_EVENT, count=KVM_SDEI_MAX_EVENTS))
    assert c.count == 2
    dst.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.SET_REGISTERED_EVENT, count=c.count), data)
    c, data = src.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_VCPU_EVENT, count=KVM_SDEI_MAX_EVENTS), vcpu=v)
    assert c.count == 1
    dst.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.SET_VCPU_EVENT, count=c.count), data, vcpu=w)
    c, data = src.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.GET_VCPU_STATE), vcpu=v)
    assert U.VcpuState.unpack(data).normal_num == 0
    dst.sdei.command(U.KvmSdeiCmd(U.SdeiCmd.SET_VCPU_STATE), data, vcpu=w)
    assert _finish(dst, m.program) == _finish(src, m.program)  # the same records, memory and registers
    recs = m.records()
    assert [(r.event, r.arg) for r in recs] == [(0, 0x10), (0x400030, 0x30)]
    assert m.word("out") == 0x77  # the interrupted x7, restored by COMPLETE
