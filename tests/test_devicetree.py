"""The device tree is generated from the Vm as it is: parsed back with libfdt it describes
exactly the machine's memory, vCPUs, PSCI conduit, GIC, timer and UART."""

import struct

import libfdt
import pytest

from sandbox.devicetree import generate
from sandbox.hyp.smccc import Conduit
from sandbox.vm import Vm
from sandbox.virt import create_vm


def prop(fdt, path, name):
    return fdt.getprop(fdt.path_offset(path), name)


def cells(raw):
    return list(struct.unpack(f">{len(raw) // 4}I", bytes(raw)))


def strings(raw):
    return bytes(raw).rstrip(b"\0").decode().split("\0")


def test_virt_tree_describes_memory_cpus_psci_chosen():
    vm = create_vm(ram_size=128 << 20, smp=3, psci_conduit=Conduit.SMC)
    fdt = libfdt.Fdt(generate(vm, bootargs="console=ttyAMA0 loglevel=8"))
    assert prop(fdt, "/", "compatible").as_str() == "linux,dummy-virt"
    assert prop(fdt, "/memory@40000000", "device_type").as_str() == "memory"
    assert struct.unpack(">QQ", bytes(prop(fdt, "/memory@40000000", "reg"))) == (0x40000000, 128 << 20)
    regs = [prop(fdt, f"/cpus/cpu@{i}", "reg").as_uint32() for i in range(3)]
    assert regs == [v.mpidr for v in vm.vcpus] == [0, 1, 2]
    assert prop(fdt, "/cpus/cpu@1", "enable-method").as_str() == "psci"
    assert prop(fdt, "/cpus", "#address-cells").as_uint32() == 1
    assert prop(fdt, "/psci", "method").as_str() == "smc"
    assert strings(prop(fdt, "/psci", "compatible"))[:2] == ["arm,psci-1.0", "arm,psci-0.2"]
    assert prop(fdt, "/chosen", "bootargs").as_str() == "console=ttyAMA0 loglevel=8"
    assert prop(fdt, "/chosen", "stdout-path").as_str() == "/pl011@9000000"


def test_virt_tree_describes_gic_timer_and_uart_with_their_interrupts():
    vm = create_vm(smp=2)
    fdt = libfdt.Fdt(generate(vm))
    gic = fdt.path_offset("/intc@8000000")
    assert fdt.getprop(gic, "compatible").as_str() == "arm,cortex-a15-gic"
    assert struct.unpack(">4Q", bytes(fdt.getprop(gic, "reg"))) == (0x08000000, 0x10000, 0x08010000, 0x10000)
    assert fdt.getprop(gic, "#interrupt-cells").as_uint32() == 3
    assert prop(fdt, "/", "interrupt-parent").as_uint32() == fdt.get_phandle(gic)
    # Secure, non-secure physical, virtual, hypervisor PPIs; level-high, wired to both CPUs.
    timer = cells(prop(fdt, "/timer", "interrupts"))
    assert timer == [1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]
    assert 16 + timer[7] == vm.vcpus[0].timer.virt.intid == 27
    assert 16 + timer[4] == vm.vcpus[0].timer.phys.intid == 30
    uart = fdt.path_offset("/pl011@9000000")
    assert strings(fdt.getprop(uart, "compatible")) == ["arm,pl011", "arm,primecell"]
    assert cells(fdt.getprop(uart, "interrupts")) == [0, 1, 4]
    clk = fdt.node_offset_by_phandle(cells(fdt.getprop(uart, "clocks"))[0])
    assert fdt.getprop(clk, "clock-frequency").as_uint32() == 24_000_000


def test_a_plain_vm_gets_no_gic_and_no_timer_nodes():
    vm = Vm(ram_size=32 << 20)
    vm.create_vcpu()
    fdt = libfdt.Fdt(generate(vm))
    for path in ("/intc@8000000", "/timer"):
        with pytest.raises(libfdt.FdtException):
            fdt.path_offset(path)
    assert fdt.getprop(fdt.path_offset("/pl011@9000000"), "reg") is not None
    with pytest.raises(libfdt.FdtException):
        fdt.getprop(fdt.path_offset("/pl011@9000000"), "interrupts")


def test_every_ram_region_and_a_changed_mpidr_show_up():
    vm = create_vm(ram_size=64 << 20)
    vm.add_ram(0x80000000, 16 << 20)
    vm.vcpus[0].set_reg("MPIDR_EL1", 0x100)  # Aff1 = 1
    fdt = libfdt.Fdt(generate(vm))
    assert struct.unpack(">QQ", bytes(prop(fdt, "/memory@80000000", "reg"))) == (0x80000000, 16 << 20)
    assert prop(fdt, "/cpus/cpu@100", "reg").as_uint32() == 0x100


def test_the_guest_finds_the_tree_at_x0():
    from sandbox.boot import boot
    from sandbox.loaders.flat import load_flat
    from sandbox import assemble, ExitReason
    vm = create_vm(ram_size=32 << 20)
    prog = assemble("""
    ldr w1, [x0]             // FDT magic, big-endian in memory
    ldr x2, =seen
    str w1, [x2]
    str x0, [x2, #8]
    ldr x0, =0x84000008      // PSCI SYSTEM_OFF
    hvc #0
.balign 8
seen: .skip 16
""", 0x40080000)
    image = load_flat(vm, prog.code, 0x40080000)
    address = boot(vm, image)
    assert vm.vcpus[0].run().reason is ExitReason.SYSTEM_EVENT
    seen = vm.read_memory(prog["seen"], 16)
    assert seen[:4] == b"\xd0\x0d\xfe\xed"
    assert int.from_bytes(seen[8:], "little") == address == 0x40000000
