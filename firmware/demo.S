// demo.S - a guest that takes one of each basic exception and says what it saw.
//
//   sandbox run firmware/demo.S
//
// EL1h: SVC, BRK, an UNDEFINED instruction, a RAS register read (emulated DISR_EL1),
// a load and a store to an address with no RAM or device (synchronous external abort,
// QEMU virt style); then EL0: an SVC, a load from the same address, and the EL0 exit
// (SVC #0xFFFF). The recording vector table logs each one for the host to print.

.include "kernel.S"

.equ NOTHING_HERE, 0x10000000     // no RAM, no device

guest_main:
    svc #0x42
    brk #0x123
    udf #0
    mrs x3, DISR_EL1
    ldr x1, =NOTHING_HERE
    ldr x2, [x1]
    str x2, [x1]
    ldr x0, =el0_task
    ldr x1, =el0_stack_top
    b enter_el0

el0_task:
    svc #0x42
    ldr x1, =NOTHING_HERE
    ldr x2, [x1]
    svc #0xffff
