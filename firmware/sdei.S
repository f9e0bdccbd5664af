// sdei.S - an SDEI client for sandbox guests (Arm DEN0054C), after kernel.S.
//
// Calls: each wrapper takes the SDEI arguments in x1..x5 as the call does, puts the
// function ID in x0 and makes the call on the conduit in `sdei_conduit` (0 = HVC, the
// default, 1 = SMC); the result comes back in x0. x0-x17 may be clobbered (SMCCC).
//   sdei_version, sdei_event_register(x1 ev, x2 entry, x3 arg, x4 flags, x5 affinity),
//   sdei_event_enable/disable/unregister/status(x1 ev), sdei_event_get_info(x1 ev, x2 info),
//   sdei_event_context(x1 index), sdei_event_routing_set(x1 ev, x2 mode, x3 affinity),
//   sdei_pe_mask, sdei_pe_unmask, sdei_interrupt_bind(x1 intid),
//   sdei_interrupt_release(x1 ev), sdei_event_signal(x1 ev, x2 target MPIDR),
//   sdei_features(x1 feature), sdei_private_reset, sdei_shared_reset.
//   sdei_register_recorder(x1 ev, x3 arg, x4 flags, x5 affinity): register `sdei_handler`.
//   sdei_listen(x1 ev, x3 arg): register `sdei_handler` (RM_ANY), enable, unmask this PE.
//
// sdei_handler, the recording handler: entered as DEN0054C dispatches (x0 event, x1 arg,
// x2 interrupted PC, x3 interrupted PSTATE; EL1h), it records into this CPU's ring
// (indexed by MPIDR_EL1.Aff0) a 256-byte record, read back by sandbox.sdei_client:
//   [0] seq  [1] x0 event  [2] x1 arg  [3] x2 PC  [4] x3 PSTATE  [5] its own PSTATE
//   (NZCV|DAIF|CurrentEL|SPSel|PAN|UAO; Unicorn has no DIT
//   or SSBS register)  [6] MPIDR_EL1  [7] EVENT_STATUS(event) as
//   seen inside  [8] how it completed  [9] SP  [10..27] EVENT_CONTEXT(0..17) when
//   `sdei_flags` bit 0 (READ_CONTEXT) is set, else 0
// then calls the function at `sdei_hook` if non-zero (x0 = the record, x1 = the event;
// x19-x30 must be preserved, x0-x17 are free), then completes per `sdei_policy`:
//   0 COMPLETE (EV_HANDLED)            1 COMPLETE (EV_FAILED)
//   2 COMPLETE_AND_RESUME(interrupted PC, from x2)
//   3 COMPLETE_AND_RESUME(`sdei_resume_address`)
// A hook may return a policy in x0 to override it (x0 >= 0x100: use x0 - 0x100).
// Should the completion fail, its error goes to `sdei_complete_error` and the guest stops.

.equ SDEI_FN_VERSION,           0xC4000020
.equ SDEI_FN_EVENT_REGISTER,    0xC4000021
.equ SDEI_FN_EVENT_ENABLE,      0xC4000022
.equ SDEI_FN_EVENT_DISABLE,     0xC4000023
.equ SDEI_FN_EVENT_CONTEXT,     0xC4000024
.equ SDEI_FN_EVENT_COMPLETE,    0xC4000025
.equ SDEI_FN_EVENT_COMPLETE_AND_RESUME, 0xC4000026
.equ SDEI_FN_EVENT_UNREGISTER,  0xC4000027
.equ SDEI_FN_EVENT_STATUS,      0xC4000028
.equ SDEI_FN_EVENT_GET_INFO,    0xC4000029
.equ SDEI_FN_EVENT_ROUTING_SET, 0xC400002A
.equ SDEI_FN_PE_MASK,           0xC400002B
.equ SDEI_FN_PE_UNMASK,         0xC400002C
.equ SDEI_FN_INTERRUPT_BIND,    0xC400002D
.equ SDEI_FN_INTERRUPT_RELEASE, 0xC400002E
.equ SDEI_FN_EVENT_SIGNAL,      0xC400002F
.equ SDEI_FN_FEATURES,          0xC4000030
.equ SDEI_FN_PRIVATE_RESET,     0xC4000031
.equ SDEI_FN_SHARED_RESET,      0xC4000032

.equ SDEI_RING_ENTRIES, 32
.equ SDEI_RECORD_SHIFT, 8        // 256-byte records
.equ SDEI_RING_BYTES, 16 + (SDEI_RING_ENTRIES << SDEI_RECORD_SHIFT)
.equ SDEI_RING_CPUS, 8

.macro SDEI_FN name, fid
\name:
    ldr x0, =\fid
    b sdei_call
.endm

// x0 = function ID, x1..x5 arguments -> x0
sdei_call:
    ldr x9, =sdei_conduit
    ldr x9, [x9]
    cbnz x9, sdei_call_smc
    hvc #0
    ret
sdei_call_smc:
    smc #0
    ret

SDEI_FN sdei_version, SDEI_FN_VERSION
SDEI_FN sdei_event_register, SDEI_FN_EVENT_REGISTER
SDEI_FN sdei_event_enable, SDEI_FN_EVENT_ENABLE
SDEI_FN sdei_event_disable, SDEI_FN_EVENT_DISABLE
SDEI_FN sdei_event_context, SDEI_FN_EVENT_CONTEXT
SDEI_FN sdei_event_unregister, SDEI_FN_EVENT_UNREGISTER
SDEI_FN sdei_event_status, SDEI_FN_EVENT_STATUS
SDEI_FN sdei_event_get_info, SDEI_FN_EVENT_GET_INFO
SDEI_FN sdei_event_routing_set, SDEI_FN_EVENT_ROUTING_SET
SDEI_FN sdei_pe_mask, SDEI_FN_PE_MASK
SDEI_FN sdei_pe_unmask, SDEI_FN_PE_UNMASK
SDEI_FN sdei_interrupt_bind, SDEI_FN_INTERRUPT_BIND
SDEI_FN sdei_interrupt_release, SDEI_FN_INTERRUPT_RELEASE
SDEI_FN sdei_event_signal, SDEI_FN_EVENT_SIGNAL
SDEI_FN sdei_features, SDEI_FN_FEATURES
SDEI_FN sdei_private_reset, SDEI_FN_PRIVATE_RESET
SDEI_FN sdei_shared_reset, SDEI_FN_SHARED_RESET

sdei_register_recorder:
    ldr x2, =sdei_handler
    b sdei_event_register

// sdei_listen(x1 = event, x3 = arg): register `sdei_handler` for the event (RM_ANY), enable
// it and unmask this PE. x0 = 0, or the error of the call that failed (nothing after it ran).
sdei_listen:
    stp x29, x30, [sp, #-32]!
    str x1, [sp, #16]
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    cbnz x0, sdei_listen_out
    ldr x1, [sp, #16]
    bl sdei_event_enable
    cbnz x0, sdei_listen_out
    bl sdei_pe_unmask
sdei_listen_out:
    ldp x29, x30, [sp], #32
    ret

// The recording handler (see the top of this file).
sdei_handler:
    sub sp, sp, #64
    stp x29, x30, [sp, #0]
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    mov x21, x0                  // event
    mov x22, x2                  // interrupted PC
    // x19 = this CPU's ring, x20 = the record
    mrs x9, mpidr_el1
    and x9, x9, #0xff
    mov x10, #SDEI_RING_BYTES
    mul x9, x9, x10
    ldr x10, =sdei_ring
    add x19, x9, x10
    ldr x9, [x19]
    add x10, x9, #1
    mov x11, #SDEI_RING_ENTRIES
    stp x10, x11, [x19]          // count, capacity
    and x9, x9, #(SDEI_RING_ENTRIES - 1)
    add x20, x19, #16
    add x20, x20, x9, lsl #8     // SDEI_RECORD_SHIFT
    stp x10, x0, [x20, #0]       // seq, event
    stp x1, x2, [x20, #16]       // arg, interrupted PC
    // the handler's own PSTATE, field by field
    mrs x9, nzcv
    mrs x10, daif
    orr x9, x9, x10
    mrs x10, currentel
    orr x9, x9, x10
    mrs x10, spsel
    orr x9, x9, x10
    mrs x10, s3_0_c4_c2_3        // PAN
    orr x9, x9, x10
    mrs x10, s3_0_c4_c2_4        // UAO
    orr x9, x9, x10
    stp x3, x9, [x20, #32]       // interrupted PSTATE, own PSTATE
    mrs x9, mpidr_el1
    str x9, [x20, #48]
    mov x9, sp
    str x9, [x20, #72]
    mov x1, x21
    bl sdei_event_status
    str x0, [x20, #56]
    // EVENT_CONTEXT(0..17) when asked for
    ldr x9, =sdei_flags
    ldr x9, [x9]
    tbz x9, #0, sdei_handler_hook
    mov x21, #0
sdei_handler_ctx:
    mov x1, x21
    bl sdei_event_context
    add x9, x20, #80
    str x0, [x9, x21, lsl #3]
    add x21, x21, #1
    cmp x21, #18
    b.lo sdei_handler_ctx
    ldr x21, [x20, #8]           // the event again
sdei_handler_hook:
    ldr x9, =sdei_policy
    ldr x9, [x9]
    ldr x10, =sdei_hook
    ldr x10, [x10]
    cbz x10, sdei_handler_complete
    mov x0, x20
    mov x1, x21
    blr x10
    cmp x0, #0x100
    b.lo sdei_handler_policy
    sub x9, x0, #0x100
    b sdei_handler_complete
sdei_handler_policy:
    ldr x9, =sdei_policy
    ldr x9, [x9]
sdei_handler_complete:
    str x9, [x20, #64]
    mov x1, x22                  // interrupted PC for policy 2
    cmp x9, #3
    b.ne sdei_handler_restore
    ldr x1, =sdei_resume_address
    ldr x1, [x1]
sdei_handler_restore:
    ldp x29, x30, [sp, #0]
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    add sp, sp, #64
    // The completing call is made inline: x18-x30 must reach it as the interrupted code had
    // them (COMPLETE restores only x0-x17), so no `bl` here.
    ldr x0, =SDEI_FN_EVENT_COMPLETE_AND_RESUME
    cmp x9, #2
    b.hs sdei_handler_call
    mov x1, x9                   // 0 HANDLED, 1 FAILED
    ldr x0, =SDEI_FN_EVENT_COMPLETE
sdei_handler_call:
    ldr x9, =sdei_conduit
    ldr x9, [x9]
    cbnz x9, sdei_handler_smc
    hvc #0                       // does not return when it succeeds
    b sdei_handler_failed
sdei_handler_smc:
    smc #0
sdei_handler_failed:             // the dispatcher refused: note why and stop the guest
    ldr x1, =sdei_complete_error
    str x0, [x1]
    b guest_halt

.ltorg
.balign 8
sdei_conduit:
    .quad 0
sdei_policy:
    .quad 0
sdei_flags:
    .quad 0
sdei_hook:
    .quad 0
sdei_resume_address:
    .quad 0
sdei_complete_error:
    .quad 0
sdei_ring:
    .skip SDEI_RING_BYTES * SDEI_RING_CPUS
