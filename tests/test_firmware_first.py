"""Firmware-first RAS: CPER and HEST byte layouts, and the guest consumer in firmware/ghes.S
finding, checking and acknowledging what the host recorded (reference/ras.md section 5)."""

import errno
import struct
import uuid

import pytest

from sandbox import Cap, ExitReason, Vm
from sandbox.ras import FirmwareFirst, MemoryErrorKind, Notification, Outcome, Severity
from sandbox.ras.consumer import consumed_errors
from sandbox.ras.cper import MEMORY_ERROR_SECTION, memory_error_block, parse_status_block
from sandbox.ras.hest import GHES_V2, build_hest, parse_hest

from conftest import assert_halted, boot

REGION = 0x43000000
POISON = 0x42000000


def test_memory_error_record_bytes_match_the_qemu_dump():
    raw = memory_error_block(0x42001000)
    assert len(raw) == 20 + 72 + 80
    status, raw_off, raw_len, data_len, sev = struct.unpack_from("<5I", raw)
    assert (status, raw_off, raw_len, data_len, sev) == (0x11, 0, 0, 0x98, 0)  # UE valid, 1 entry
    # QEMU v22 cover letter dump, as u32 words: a5bc1114 4ede6f64 833e63b8 b1837ced | 0 0x300 ... 0x50
    assert struct.unpack_from("<4I", raw, 20) == (0xA5BC1114, 0x4EDE6F64, 0x833E63B8, 0xB1837CED)
    assert struct.unpack_from("<IHBBI", raw, 36) == (0, 0x300, 0, 0, 0x50)
    assert struct.unpack_from("<QQQ", raw, 92) == (0x4002, 0, 0x42001000)
    block = parse_status_block(raw)
    (entry,) = block.entries
    assert entry.section_type == MEMORY_ERROR_SECTION == uuid.UUID("a5bc1114-6f64-4ede-b863-3e83ed7c83b1")
    assert entry.physical_address == 0x42001000


def test_corrected_errors_set_the_correctable_bit():
    status = struct.unpack_from("<I", memory_error_block(0, Severity.CORRECTED))[0]
    assert status == 0x12


def test_hest_round_trip_and_checksum():
    vm = Vm()
    ff = FirmwareFirst(vm, REGION, [(0, Notification.SEA), (7, Notification.SEI)])
    table = vm.read_memory(REGION, 40 + 2 * GHES_V2.size)
    assert sum(table) & 0xFF == 0 and table[:4] == b"HEST"
    entries = parse_hest(table)
    assert [(e.source_id, e.notification) for e in entries] == [(0, Notification.SEA), (7, Notification.SEI)]
    assert entries == [s.entry for s in ff.sources]
    for e in entries:
        (block,) = struct.unpack("<Q", vm.read_memory(e.error_status_address, 8))
        assert block % 1024 == 0 and REGION < block < REGION + ff.size
        assert vm.read_memory(e.read_ack_address, 8) == struct.pack("<Q", 1)  # QEMU: starts acked
    assert build_hest(entries) == ff.hest


def consumer(address=POISON):
    return f"""
.include "ghes.S"
guest_main:
    stp x29, x30, [sp, #-16]!
    bl ghes_install
    ldr x1, ={address:#x}
consume:
    ldr x2, [x1]
    ldp x29, x30, [sp], #16
    ret
"""


def ff_machine(source_list, quirks=(), ram_at_zero=False, guest=None):
    vm = Vm(quirks=quirks)
    if ram_at_zero:
        vm.add_ram(0, 0x10000)
    vm.enable_cap(Cap.ARM_SEA_TO_USER)
    r = boot(guest or consumer(), vm=vm, run=False)
    ff = FirmwareFirst(vm, REGION, source_list)
    ff.publish(r.sym("ghes_hest_ptr"))
    return r, ff


def log(r):
    return consumed_errors(r.vm, r.sym("ghes_log"))


def test_action_required_error_is_announced_by_sea_and_the_guest_consumes_it():
    r, ff = ff_machine([(0, Notification.SEA)])
    r.vm.poison(POISON)
    ex = r.vcpu.run()
    assert ex.reason is ExitReason.ARM_SEA and ex.arm_sea.gpa == POISON
    assert ff.record_memory_error(ex.arm_sea.gpa) is Outcome.DELIVERED
    r.exit = r.vcpu.run()
    assert_halted(r)
    (rec,) = r.records
    assert (rec.vector, rec.esr, rec.elr) == (0x200, 0x96000410, r.sym("consume"))  # QEMU kvm_inject_arm_sea
    (got,) = log(r)
    assert (got.source_id, got.notification, got.severity, got.physical_address) == (0, 8, 0, POISON)
    assert got.memory_section and got.address_valid and got.esr == 0x96000410 and got.block_status == 0x11
    # The guest cleared BlockStatus and acknowledged.
    block = ff.sources[0].block_address
    assert r.vm.read_memory(block, 4) == bytes(4) and ff.acknowledged(ff.sources[0])


SEI_GUEST = """
.include "ghes.S"
guest_main:
    stp x29, x30, [sp, #-16]!
    bl ghes_install
work:
    nop
    msr daifclr, #4
unmasked:
    nop
    ldp x29, x30, [sp], #16
    ret
"""


def test_action_optional_error_is_announced_by_an_architected_serror():
    r, ff = ff_machine([(0, Notification.SEA), (1, Notification.SEI)], guest=SEI_GUEST)
    assert r.vcpu.run(max_instructions=1).reason is ExitReason.INSTRUCTION_BUDGET
    assert ff.record_memory_error(POISON, kind=MemoryErrorKind.ACTION_OPTIONAL) is Outcome.DELIVERED
    assert r.vcpu.get_events().serror_pending  # masked: pending until the guest unmasks
    r.exit = r.vcpu.run()
    assert_halted(r)
    (rec,) = r.records
    # ISS: IDS 0, AET UEO (restartable) << 10, DFSC 0x11 (RAS spec DDI0587B 2.4.4)
    assert (rec.vector, rec.esr, rec.elr) == (0x380, 0xBE000811, r.sym("unmasked"))
    (got,) = log(r)
    assert (got.source_id, got.notification, got.physical_address, got.esr) == (1, 9, POISON, 0xBE000811)


def test_a_second_error_before_the_ack_is_queued_and_delivered_after_it():
    r, ff = ff_machine([(0, Notification.SEI)], guest=SEI_GUEST)
    r.vcpu.run(max_instructions=1)
    first = ff.record_memory_error(POISON, kind=MemoryErrorKind.ACTION_OPTIONAL)
    second = ff.record_memory_error(POISON + 0x1000, kind=MemoryErrorKind.ACTION_OPTIONAL)
    assert (first, second) == (Outcome.DELIVERED, Outcome.QUEUED)
    r.exit = r.vcpu.run()
    assert_halted(r)
    assert [e.physical_address for e in log(r)] == [POISON, POISON + 0x1000]
    # The second SError was pended by the ack inside the first handler (A masked there) and
    # taken when that handler returned to `unmasked`.
    assert [(x.vector, x.elr) for x in r.records] == [(0x380, r.sym("unmasked"))] * 2
    assert not ff.sources[0].queue and not ff._ack_hooks


def test_with_quirk_ghes_busy_error_lost_the_second_error_fails_like_qemu_aborted():
    r, ff = ff_machine([(0, Notification.SEI)], quirks=("ghes-busy-error-lost",), guest=SEI_GUEST)
    ff.record_memory_error(POISON, kind=MemoryErrorKind.ACTION_OPTIONAL)
    with pytest.raises(OSError) as e:
        ff.record_memory_error(POISON + 0x1000, kind=MemoryErrorKind.ACTION_OPTIONAL)
    assert e.value.errno == errno.EBUSY and "OSPM does not acknowledge" in str(e.value)
    r.exit = r.vcpu.run()
    assert [x.physical_address for x in log(r)] == [POISON]


def test_a_queued_sea_error_is_taken_right_after_the_ack_and_the_consumer_resumes():
    r, ff = ff_machine([(0, Notification.SEA)])
    r.vm.poison(POISON)
    ex = r.vcpu.run()
    assert ff.record_memory_error(ex.arm_sea.gpa) is Outcome.DELIVERED
    assert ff.record_memory_error(POISON + 0x2000) is Outcome.QUEUED  # e.g. another vCPU's SIGBUS
    r.exit = r.vcpu.run()
    assert_halted(r)
    assert [e.physical_address for e in log(r)] == [POISON, POISON + 0x2000]
    assert [(x.vector, x.elr) for x in r.records] == [(0x200, r.sym("consume")), (0x200, r.sym("ghes_acked"))]


def test_memory_error_at_physical_address_zero():
    r, ff = ff_machine([(0, Notification.SEA)], ram_at_zero=True, guest=consumer(0))
    r.vm.poison(0)
    ex = r.vcpu.run()
    assert ex.reason is ExitReason.ARM_SEA and ex.arm_sea.gpa == 0
    assert ff.record_memory_error(0) is Outcome.DELIVERED
    r.exit = r.vcpu.run()
    assert_halted(r)
    (got,) = log(r)
    assert got.physical_address == 0 and got.address_valid


def test_with_quirk_ghes_address_zero_rejected_address_zero_is_refused():
    r, ff = ff_machine([(0, Notification.SEA)], quirks=("ghes-address-zero-rejected",), ram_at_zero=True)
    with pytest.raises(OSError) as e:
        ff.record_memory_error(0)
    assert e.value.errno == errno.EINVAL
    assert ff.acknowledged(ff.sources[0])  # nothing was written


def test_a_queued_error_survives_a_snapshot_and_is_delivered_after_restore():
    r, ff = ff_machine([(0, Notification.SEI)], guest=SEI_GUEST)
    r.vcpu.run(max_instructions=1)
    ff.record_memory_error(POISON, kind=MemoryErrorKind.ACTION_OPTIONAL)
    ff.record_memory_error(POISON + 0x1000, kind=MemoryErrorKind.ACTION_OPTIONAL)
    moved = Vm.restore(r.vm.snapshot())
    assert [len(s.queue) for s in moved.ghes.sources] == [1]
    assert moved.vcpus[0].run().reason is ExitReason.SYSTEM_EVENT
    assert [e.physical_address for e in consumed_errors(moved, r.sym("ghes_log"))] == [POISON, POISON + 0x1000]


def test_bad_requests_are_einval():
    vm = Vm()
    vm.create_vcpu()
    ff = FirmwareFirst(vm, REGION, [(0, Notification.SEA)])
    for call in (lambda: ff.record_memory_error(0x10),  # not RAM
                 lambda: ff.record_memory_error(POISON, kind=MemoryErrorKind.ACTION_OPTIONAL),  # no async source
                 lambda: ff.record_memory_error(POISON, vcpu=3),
                 lambda: FirmwareFirst(vm, REGION + 1, [(0, Notification.SEA)]),
                 lambda: FirmwareFirst(vm, REGION, [(0, Notification.SEA), (0, Notification.SEI)]),
                 lambda: FirmwareFirst(vm, REGION, [(0, Notification.GSIV)])):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL
