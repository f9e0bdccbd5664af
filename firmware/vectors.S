// vectors.S - a recording EL1 vector table for sandbox guests.
//
// Every exception taken to EL1 is recorded into a per-CPU ring in guest memory
// (indexed by MPIDR_EL1.Aff0) that the host reads back with
// sandbox.firmware.exception_records(): sequence number, vector offset, ESR_EL1,
// FAR_EL1, ELR_EL1, SPSR_EL1, MPIDR_EL1, ISR_EL1 and DISR_EL1.
//
// The handler then returns according to `exc_policy` (a u64 the host may write):
//   0 AUTO   synchronous exceptions return past the faulting instruction (ELR+4),
//            except SVC/HVC/SMC whose ELR already points past it; asynchronous
//            exceptions (IRQ, FIQ, SError) return to ELR
//   1 SKIP   synchronous exceptions always return to ELR+4
//   2 RETRY  return to ELR unchanged
//   3 STOP   stop the guest (PSCI SYSTEM_OFF)
// An SVC #0xFFFF from EL0 stops the guest whatever the policy (the EL0 "exit").
//
// `exc_flags` bit 0 (ESB_ON_ENTRY): execute ESB at the start of every entry and record
// DISR_EL1 (then clear it), as a RAS-aware kernel's entry code does. Only set it on a
// vCPU that has FEAT_RAS: DISR_EL1 is UNDEFINED otherwise.
//
// `exc_hook` (a u64 the program may set to a function address): called after the record
// is written, with x0 = vector offset, x1 = ESR_EL1, x2 = ELR_EL1, x3 = FAR_EL1, under the
// AAPCS64 (it may use x0-x18; x9-x18, ELR_EL1 and SPSR_EL1 are saved around it, so an
// exception taken inside the hook returns correctly). It returns in x0 how to return:
// 0 = as exc_policy says, 1 = to ELR, 2 = to ELR+4, 3 = stop the guest.
// The label `exc_recorded` is reached once the record is complete.
//
// Register use: x0-x8 and x30 are saved on the stack of the exception's SP and
// restored before ERET; nothing else is touched.

.equ RING_ENTRIES, 64
.equ RECORD_SHIFT, 7             // 128-byte records
.equ RING_BYTES, 16 + (RING_ENTRIES << RECORD_SHIFT)
.equ RING_CPUS, 8
.equ EXC_FRAME, 0x60
.equ HOOK_FRAME, 0x70            // x9-x18, vector + ESR, ELR + SPSR

.macro VENTRY offset
    .balign 0x80
    sub sp, sp, #EXC_FRAME
    stp x0, x1, [sp, #0]
    mov x0, #\offset
    b exc_common
.endm

.balign 2048
exc_vectors:
    VENTRY 0x000
    VENTRY 0x080
    VENTRY 0x100
    VENTRY 0x180
    VENTRY 0x200
    VENTRY 0x280
    VENTRY 0x300
    VENTRY 0x380
    VENTRY 0x400
    VENTRY 0x480
    VENTRY 0x500
    VENTRY 0x580
    VENTRY 0x600
    VENTRY 0x680
    VENTRY 0x700
    VENTRY 0x780

exc_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x30, [sp, #64]
    mov x8, #0                   // DISR_EL1 as recorded (0 unless ESB_ON_ENTRY)
    ldr x1, =exc_flags
    ldr x1, [x1]
    tbz x1, #0, exc_no_esb
    esb
    mrs x8, DISR_EL1
    cbz x8, exc_no_esb
    msr DISR_EL1, xzr
exc_no_esb:
    // x1 = this CPU's ring
    mrs x1, mpidr_el1
    and x1, x1, #0xff
    mov x2, #RING_BYTES
    mul x1, x1, x2
    ldr x2, =exc_ring
    add x1, x1, x2
    ldr x2, [x1]                 // records written so far
    add x3, x2, #1
    mov x4, #RING_ENTRIES
    stp x3, x4, [x1]             // count, capacity
    and x2, x2, #(RING_ENTRIES - 1)
    add x4, x1, #16
    add x4, x4, x2, lsl #7     // RECORD_SHIFT (keystone wants a literal shift)
    mrs x5, esr_el1
    mrs x6, far_el1
    mrs x7, elr_el1
    stp x3, x0, [x4, #0]         // seq, vector offset
    stp x5, x6, [x4, #16]        // ESR, FAR
    mrs x2, spsr_el1
    stp x7, x2, [x4, #32]        // ELR, SPSR
    mrs x2, mpidr_el1
    mrs x3, isr_el1
    stp x2, x3, [x4, #48]        // MPIDR, ISR
    str x8, [x4, #64]            // DISR
exc_recorded:
    ldr x2, =exc_hook
    ldr x8, [x2]
    cbz x8, exc_el0_exit_check
    sub sp, sp, #HOOK_FRAME
    stp x9, x10, [sp, #0]
    stp x11, x12, [sp, #16]
    stp x13, x14, [sp, #32]
    stp x15, x16, [sp, #48]
    stp x17, x18, [sp, #64]
    stp x0, x5, [sp, #80]        // vector offset, ESR
    mrs x2, spsr_el1
    stp x7, x2, [sp, #96]        // ELR, SPSR
    mov x1, x5
    mov x2, x7
    mov x3, x6
    blr x8
    mov x8, x0                   // how to return
    ldp x7, x2, [sp, #96]
    msr elr_el1, x7
    msr spsr_el1, x2
    ldp x0, x5, [sp, #80]
    ldp x17, x18, [sp, #64]
    ldp x15, x16, [sp, #48]
    ldp x13, x14, [sp, #32]
    ldp x11, x12, [sp, #16]
    ldp x9, x10, [sp, #0]
    add sp, sp, #HOOK_FRAME
    cbz x8, exc_el0_exit_check
    cmp x8, #1
    b.eq exc_return
    cmp x8, #2
    b.eq exc_skip
    b guest_halt

exc_el0_exit_check:
    // EL0 exit request: SVC #0xFFFF taken from a lower EL
    cmp x0, #0x400
    b.ne exc_policy_check
    mov x2, #0xffff
    movk x2, #0x5600, lsl #16    // ESR of SVC #0xFFFF (EC 0x15, IL=1)
    cmp x5, x2
    b.eq guest_halt

exc_policy_check:
    ldr x2, =exc_policy
    ldr x2, [x2]
    cmp x2, #3
    b.eq guest_halt
    cmp x2, #2
    b.eq exc_return
    and x3, x0, #0x180           // type inside the group: 0 = synchronous
    cbnz x3, exc_return
    cmp x2, #1
    b.eq exc_skip
    lsr x3, x5, #26              // AUTO: SVC/HVC/SMC (EC 0x15..0x17) already point past
    cmp x3, #0x15
    b.lo exc_skip
    cmp x3, #0x17
    b.ls exc_return
exc_skip:
    add x7, x7, #4
    msr elr_el1, x7
exc_return:
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x30, [sp, #64]
    ldp x0, x1, [sp, #0]
    add sp, sp, #EXC_FRAME
    eret

// Stop the guest: PSCI SYSTEM_OFF over HVC (the vCPU exits with SYSTEM_EVENT).
guest_halt:
    mov x0, #0x0008
    movk x0, #0x8400, lsl #16
    hvc #0
    b guest_halt

.ltorg
.balign 8
exc_policy:
    .quad 0
exc_flags:
    .quad 0
exc_hook:
    .quad 0
exc_ring:
    .skip RING_BYTES * RING_CPUS
