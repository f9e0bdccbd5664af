"""Arm semihosting (HLT #0xF000): what the guest gets back from each call, what the host
captures, exits with a status, a deterministic clock, and the cases that must not work."""

from __future__ import annotations

import errno

import pytest

from sandbox import ExitReason, SystemEventType, Vm
from sandbox.semihosting import TICKS_PER_SECOND, StopReason

from conftest import assert_halted, boot

# Each call: W0 = operation, X1 = its parameter block, result stored at x19 (then x19 += 8).
CALLS = r"""
.macro SH op, arg
    mov w0, #\op
    adr x1, \arg
    hlt #0xf000
    str x0, [x19], #8
.endm
.macro SH0 op
    mov w0, #\op
    mov x1, #0
    hlt #0xf000
    str x0, [x19], #8
.endm
"""
RESULTS = "\n.balign 8\nresults: .skip 512\n"

SYS_OPEN, SYS_CLOSE, SYS_WRITEC, SYS_WRITE0, SYS_WRITE, SYS_READ, SYS_READC = 1, 2, 3, 4, 5, 6, 7
SYS_ISERROR, SYS_ISTTY, SYS_SEEK, SYS_FLEN, SYS_REMOVE, SYS_CLOCK, SYS_TIME = 8, 9, 0xA, 0xC, 0xE, 0x10, 0x11
SYS_ERRNO, SYS_GET_CMDLINE, SYS_HEAPINFO, SYS_EXIT, SYS_EXIT_EXTENDED, SYS_ELAPSED, SYS_TICKFREQ = (
    0x13, 0x15, 0x16, 0x18, 0x20, 0x30, 0x31)
MINUS_ONE = (1 << 64) - 1


def results(run, count: int) -> list[int]:
    raw = run.vm.read_memory(run.sym("results"), 8 * count)
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]


def semihosting_vm(**options: object) -> Vm:
    vm = Vm(semihosting=True)
    for name, value in options.items():
        setattr(vm.semihosting, name, value)
    return vm


def test_console_calls_print_in_order_and_return_what_the_spec_says():
    src = CALLS + f"""
guest_main:
    stp x19, x30, [sp, #-16]!
    adr x19, results
    SH {SYS_WRITE0}, hello
    SH {SYS_WRITEC}, bang
    SH {SYS_OPEN}, open_tt
    adr x2, write_block
    str x0, [x2]                 // the handle SYS_OPEN returned
    SH {SYS_WRITE}, write_block
    SH {SYS_ISTTY}, write_block
    ldp x19, x30, [sp], #16
    ret
.balign 8
hello: .asciz "hello, "
bang: .ascii "!"
tt: .asciz ":tt"
.balign 8
open_tt: .quad tt, 4, 3          // ":tt", mode 4 ("w"): stdout
write_block: .quad 0, line, 6
line: .ascii "world\\n"
""" + RESULTS
    run = boot(src, vm=semihosting_vm())
    assert_halted(run)
    assert run.vm.semihosting.text == "hello, !world\n"
    write0, writec, handle, write, istty = results(run, 5)
    assert handle == 1  # "a nonzero handle" (spec 2.0 SYS_OPEN), the first one
    assert (write, istty) == (0, 1)  # all bytes written; the console is interactive


def test_semihosting_features_file_reads_shfb_and_both_extensions():
    src = CALLS + f"""
guest_main:
    stp x19, x30, [sp, #-16]!
    adr x19, results
    SH {SYS_OPEN}, open_features
    adr x2, handle_block
    str x0, [x2]
    adr x2, read_block
    str x0, [x2]
    adr x2, seek_block
    str x0, [x2]
    adr x2, read_one
    str x0, [x2]
    SH {SYS_FLEN}, handle_block
    SH {SYS_ISTTY}, handle_block
    SH {SYS_READ}, read_block
    SH {SYS_SEEK}, seek_block
    SH {SYS_READ}, read_one
    SH {SYS_CLOSE}, handle_block
    SH {SYS_CLOSE}, handle_block
    SH0 {SYS_ERRNO}
    ldp x19, x30, [sp], #16
    ret
features: .asciz ":semihosting-features"
.balign 8
open_features: .quad features, 0, 21
handle_block: .quad 0
read_block: .quad 0, buffer, 8
seek_block: .quad 0, 4
read_one: .quad 0, byte, 1
buffer: .skip 8
byte: .skip 8
""" + RESULTS
    run = boot(src, vm=semihosting_vm())
    assert_halted(run)
    handle, flen, istty, unread, seek, unread_one, close, close_again, err = results(run, 9)
    assert handle != MINUS_ONE and (flen, istty) == (5, 0)
    assert unread == 3  # 8 asked, 5 exist
    assert run.vm.read_memory(run.sym("buffer"), 5) == b"SHFB\x03"  # EXIT_EXTENDED | STDOUT_STDERR
    assert (seek, unread_one, run.vm.read_memory(run.sym("byte"), 1)) == (0, 0, b"\x03")
    assert (close, close_again, err) == (0, MINUS_ONE, errno.EBADF)


def test_host_files_and_unknown_calls_fail_with_errno_and_bad_pointers_with_efault():
    src = CALLS + f"""
guest_main:
    stp x19, x30, [sp, #-16]!
    adr x19, results
    SH {SYS_OPEN}, open_passwd
    SH0 {SYS_ERRNO}
    SH {SYS_REMOVE}, remove_block
    SH0 {SYS_ERRNO}
    SH0 0x99
    SH0 {SYS_ERRNO}
    SH {SYS_OPEN}, open_tt
    adr x2, bad_write
    str x0, [x2]
    SH {SYS_WRITE}, bad_write
    SH0 {SYS_ERRNO}
    SH {SYS_ISERROR}, minus_one
    SH {SYS_ISERROR}, zero
    ldp x19, x30, [sp], #16
    ret
passwd: .asciz "/etc/passwd"
tt: .asciz ":tt"
.balign 8
open_passwd: .quad passwd, 0, 11
remove_block: .quad passwd, 11
open_tt: .quad tt, 8, 3              // mode 8 ("a"): stderr
bad_write: .quad 0, 0x10000000, 4    // nothing at 0x10000000
minus_one: .quad -1
zero: .quad 0
""" + RESULTS
    run = boot(src, vm=semihosting_vm())
    assert_halted(run)
    got = results(run, 11)
    assert got[:6] == [MINUS_ONE, errno.EACCES, MINUS_ONE, errno.EACCES, MINUS_ONE, errno.ENOSYS]
    assert got[6] != MINUS_ONE and got[7:9] == [MINUS_ONE, errno.EFAULT]
    assert got[9:] == [1, 0]
    assert run.vm.semihosting.text == ""


def test_console_input_command_line_and_heap_info_come_from_the_host():
    src = CALLS + f"""
guest_main:
    stp x19, x30, [sp, #-16]!
    adr x19, results
    SH0 {SYS_READC}
    SH0 {SYS_READC}
    SH {SYS_GET_CMDLINE}, cmdline_block
    SH {SYS_HEAPINFO}, heap_pointer
    SH0 {SYS_TICKFREQ}
    ldp x19, x30, [sp], #16
    ret
.balign 8
cmdline_block: .quad cmdline, 64
heap_pointer: .quad heap_block
heap_block: .skip 32
cmdline: .skip 64
""" + RESULTS
    vm = semihosting_vm(cmdline="demo --fast", heapinfo=(0x40100000, 0x40200000, 0x40400000, 0x40300000))
    vm.semihosting.feed(b"Z")
    run = boot(src, vm=vm)
    assert_halted(run)
    readc, readc_empty, cmdline, heap, freq = results(run, 5)
    assert (readc, readc_empty, cmdline, heap, freq) == (ord("Z"), MINUS_ONE, 0, 0, TICKS_PER_SECOND)
    assert vm.read_memory(run.sym("cmdline"), 12) == b"demo --fast\0"
    assert vm.read_memory(run.sym("cmdline_block") + 8, 8) == (11).to_bytes(8, "little")
    heap_block = vm.read_memory(run.sym("heap_block"), 32)
    assert [int.from_bytes(heap_block[i:i + 8], "little") for i in range(0, 32, 8)] == [
        0x40100000, 0x40200000, 0x40400000, 0x40300000]


@pytest.mark.parametrize("op", [SYS_EXIT, SYS_EXIT_EXTENDED])
def test_application_exit_stops_the_run_with_the_status_as_a_shutdown(op):
    src = f"""
guest_main:
    mov w0, #{op}
    adr x1, block
    hlt #0xf000
    b guest_main                 // never reached: the exit ends the run
.balign 8
block: .quad 0x20026, 3          // ADP_Stopped_ApplicationExit, exit(3)
"""
    run = boot(src, vm=semihosting_vm())
    ex = run.exit
    assert ex.reason is ExitReason.SYSTEM_EVENT and ex.system_event.type is SystemEventType.SHUTDOWN
    assert (ex.semihosting.reason, ex.semihosting.subcode, ex.semihosting.status) == (0x20026, 3, 3)
    assert ex.pc == run.sym("guest_main") + 8  # the HLT
    assert run.vcpu.reg("pc") == ex.pc + 4  # "the debugger may continue": after the call
    assert "semihosting exit, status 3" in ex.describe()


def test_any_other_stop_reason_is_a_crash_with_status_1():
    src = """
guest_main:
    mov w0, #0x18
    adr x1, block
    hlt #0xf000
.balign 8
block: .quad 0x20023, 7          // ADP_Stopped_RunTimeErrorUnknown
"""
    ex = boot(src, vm=semihosting_vm()).exit
    assert ex.system_event.type is SystemEventType.CRASH
    assert (ex.semihosting.reason, ex.semihosting.status) == (StopReason.ADP_Stopped_RunTimeErrorUnknown, 1)


LOOPS = 6_000_000  # 2 instructions each: the clock passes 10^7 ticks, one centisecond
CLOCKED = CALLS + f"""
guest_main:
    stp x19, x30, [sp, #-16]!
    adr x19, results
    mov w0, #{SYS_ELAPSED}
    adr x1, first
    hlt #0xf000
    ldr x2, ={LOOPS}
1:  subs x2, x2, #1
    b.ne 1b
    mov w0, #{SYS_ELAPSED}
    adr x1, second
    hlt #0xf000
    SH0 {SYS_CLOCK}
    SH0 {SYS_TIME}
    ldp x19, x30, [sp], #16
    ret
.balign 8
first: .quad 0
second: .quad 0
""" + RESULTS


def test_the_clock_counts_retired_instructions_and_replays_identically():
    seen = []
    for _ in range(2):
        vm = semihosting_vm(epoch=1_700_000_000)
        run = boot(CLOCKED, vm=vm, max_instructions=20_000_000)
        assert_halted(run)
        first = int.from_bytes(vm.read_memory(run.sym("first"), 8), "little")
        second = int.from_bytes(vm.read_memory(run.sym("second"), 8), "little")
        # One tick per instruction: after the first HLT, ldr + the loop + mov, adr, HLT.
        assert second - first == 1 + 2 * LOOPS + 3
        clock, seconds = results(run, 2)
        # SYS_CLOCK's HLT is 3 instructions after the second SYS_ELAPSED's.
        assert clock == (second + 3) // (TICKS_PER_SECOND // 100) == 1
        assert seconds == 1_700_000_000  # the epoch: not a whole second of guest time yet
        seen.append((first, second))
    assert seen[0] == seen[1] and seen[0][0] > 0


def test_without_an_instruction_count_the_clock_is_unknown():
    run = boot(CLOCKED, vm=semihosting_vm())  # no max_instructions: Unicorn does not count
    assert_halted(run)
    assert results(run, 1) == [MINUS_ONE]  # SYS_CLOCK
    assert run.vm.read_memory(run.sym("first"), 16) == bytes(16)  # SYS_ELAPSED wrote nothing


def test_off_by_default_hlt_0xf000_is_undefined_in_the_guest():
    run = boot("guest_main:\n mov w0, #4\n hlt #0xf000\n ret\n")
    assert_halted(run)
    (record,) = run.records
    assert record.esr == 0x02000000 and record.elr == run.sym("guest_main") + 4


def test_calls_from_el0_are_undefined_unless_allowed():
    src = """
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    mov w0, #3
    adr x1, letter
    hlt #0xf000
    svc #0xffff
letter: .ascii "U"
"""
    denied = boot(src, vm=semihosting_vm())
    assert_halted(denied)
    assert [r.esr for r in denied.records] == [0x02000000, 0x5600FFFF]
    assert denied.vm.semihosting.text == ""
    allowed = boot(src, vm=semihosting_vm(allow_el0=True))
    assert [r.esr for r in allowed.records] == [0x5600FFFF]
    assert allowed.vm.semihosting.text == "U"


def test_open_handles_and_output_survive_a_snapshot():
    src = CALLS + f"""
guest_main:
    stp x19, x30, [sp, #-16]!
    adr x19, results
    SH {SYS_OPEN}, open_tt
    adr x2, write_block
    str x0, [x2]
    brk #1                       // the host snapshots here
    SH {SYS_WRITE}, write_block
    ldp x19, x30, [sp], #16
    ret
tt: .asciz ":tt"
.balign 8
open_tt: .quad tt, 4, 3
write_block: .quad 0, text, 3
text: .ascii "ok\\n"
""" + RESULTS
    vm = semihosting_vm()
    run = boot(src, vm=vm, run=False)
    run.vcpu.set_guest_debug(0x10001)  # KVM_GUESTDBG_ENABLE | USE_SW_BP: the BRK exits
    assert run.vcpu.run().reason is ExitReason.DEBUG
    vm.semihosting.output += b"before "
    moved = Vm.restore(vm.snapshot())
    vcpu = moved.vcpus[0]
    vcpu.set_reg("pc", vcpu.reg("pc") + 4)  # over the BRK
    assert vcpu.run().reason is ExitReason.SYSTEM_EVENT
    assert moved.semihosting.text == "before ok\n"
    assert results(type(run)(moved, vcpu, run.program, None), 2)[1] == 0
