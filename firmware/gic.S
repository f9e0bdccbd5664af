// gic.S - GICv2 helpers and an interrupt-handling vector table for sandbox guests on the
// virt machine (distributor at 0x08000000, CPU interface at 0x08010000). Include it after
// kernel.S.
//
// gic_init:            distributor and CPU interface on (Group 0), GICC_PMR = 0xf0
// gic_enable(x0 = INTID, x1 = priority): priority, target CPU 0 (SPIs), set-enable
// irq_vectors:         a vector table (install it in VBAR_EL1) whose IRQ and FIQ entries
//                      acknowledge through GICC_IAR, record, call `irq_action` (if the u64
//                      there is non-zero: blr with x0 = the IAR value; it may use x0-x7, x30
//                      and must keep the stack) and end with GICC_EOIR; every other entry
//                      goes to the recording table of vectors.S (exc_vectors).
// irq_log:             u64 count, then 64 records of 64 bytes:
//                      seq, vector offset, IAR value, ELR_EL1, SPSR_EL1, CNTVCT_EL0 at entry
//
// Register use on entry: everything is restored before ERET.

.equ GICD_BASE, 0x08000000
.equ GICC_BASE, 0x08010000
.equ IRQ_LOG_ENTRIES, 64
.equ IRQ_FRAME, 0x70

gic_init:
    ldr x0, =GICD_BASE
    mov w1, #1
    str w1, [x0]                 // GICD_CTLR.EnableGrp0
    ldr x0, =GICC_BASE
    mov w1, #0xf0
    str w1, [x0, #4]             // GICC_PMR
    mov w1, #1
    str w1, [x0]                 // GICC_CTLR.EnableGrp0
    ret

gic_enable:
    ldr x2, =GICD_BASE
    add x3, x2, #0x400           // GICD_IPRIORITYR
    strb w1, [x3, x0]
    cmp x0, #32
    b.lo gic_enable_bit
    add x3, x2, #0x800           // GICD_ITARGETSR: CPU 0
    mov w4, #1
    strb w4, [x3, x0]
gic_enable_bit:
    lsr x3, x0, #5
    add x4, x2, #0x100           // GICD_ISENABLER
    and x5, x0, #31
    mov w6, #1
    lsl w6, w6, w5
    str w6, [x4, x3, lsl #2]
    ret

.macro IRQ_ENTRY offset
    .balign 0x80
    sub sp, sp, #IRQ_FRAME
    stp x0, x1, [sp, #0]
    mov x0, #\offset
    b irq_common
.endm

.macro OTHER_ENTRY offset
    .balign 0x80
    b exc_vectors + \offset
.endm

.balign 2048
irq_vectors:
    OTHER_ENTRY 0x000
    IRQ_ENTRY 0x080
    IRQ_ENTRY 0x100
    OTHER_ENTRY 0x180
    OTHER_ENTRY 0x200
    IRQ_ENTRY 0x280
    IRQ_ENTRY 0x300
    OTHER_ENTRY 0x380
    OTHER_ENTRY 0x400
    IRQ_ENTRY 0x480
    IRQ_ENTRY 0x500
    OTHER_ENTRY 0x580
    OTHER_ENTRY 0x600
    IRQ_ENTRY 0x680
    IRQ_ENTRY 0x700
    OTHER_ENTRY 0x780

irq_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x29, x30, [sp, #64]
    ldr x1, =GICC_BASE
    ldr w29, [x1, #0xc]          // GICC_IAR: acknowledge
    ldr x3, =irq_log
    ldr x4, [x3]
    add x5, x4, #1
    str x5, [x3]
    and x4, x4, #(IRQ_LOG_ENTRIES - 1)
    add x3, x3, #8
    add x3, x3, x4, lsl #6
    stp x5, x0, [x3, #0]         // seq, vector offset
    mrs x4, elr_el1
    stp x29, x4, [x3, #16]       // IAR, ELR
    mrs x4, spsr_el1
    mrs x5, cntvct_el0
    stp x4, x5, [x3, #32]        // SPSR, CNTVCT
    and w4, w29, #0x3ff
    cmp w4, #1020
    b.hs irq_return              // spurious: nothing to end
    ldr x4, =irq_action
    ldr x4, [x4]
    cbz x4, irq_eoi
    mov x0, x29
    blr x4
irq_eoi:
    ldr x1, =GICC_BASE
    str w29, [x1, #0x10]         // GICC_EOIR
irq_return:
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x29, x30, [sp, #64]
    ldp x0, x1, [sp, #0]
    add sp, sp, #IRQ_FRAME
    eret

.ltorg
.balign 8
irq_action:
    .quad 0
irq_log:
    .skip 8 + IRQ_LOG_ENTRIES * 64
