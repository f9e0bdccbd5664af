// kernel.S - a minimal EL1 "kernel" for sandbox guests.
//
// _start: gives each CPU (MPIDR_EL1.Aff0) its own EL1 stack, installs the recording
// vector table (vectors.S) in VBAR_EL1 and calls `guest_main`, which the including
// program defines. When guest_main returns the guest stops (PSCI SYSTEM_OFF).
//
// enter_el0(x0 = entry point, x1 = EL0 stack top): drops to EL0t with DAIF clear.
// The EL0 task takes SVCs into the vector table and ends with `svc #0xffff`.
// el0_stack_top is a ready EL0 stack for CPU 0.

.equ KSTACK_SIZE, 0x1000
.equ KSTACK_CPUS, 8

_start:
    mrs x0, mpidr_el1
    and x0, x0, #0xff
    ldr x1, =kstack_top
    mov x2, #KSTACK_SIZE
    msub x1, x0, x2, x1
    mov sp, x1
    ldr x1, =exc_vectors
    msr vbar_el1, x1
    isb
    bl guest_main
    b guest_halt

enter_el0:
    msr elr_el1, x0
    msr sp_el0, x1
    msr spsr_el1, xzr            // EL0t, D/A/I/F clear
    eret

.include "vectors.S"

.balign 16
kstack_bottom:
    .skip KSTACK_SIZE * KSTACK_CPUS
kstack_top:
el0_stack_bottom:
    .skip 0x1000
el0_stack_top:
