// smp.S - secondary CPUs for sandbox guests, after kernel.S.
//
// cpu_on(x0 = target MPIDR, x1 = function): PSCI CPU_ON (SMC64, over HVC) starting the
// target at `secondary_entry` with the function as context_id; returns the PSCI result.
// secondary_entry: the target's own EL1 stack (by MPIDR_EL1.Aff0, as _start), the
// recording vector table, then `blr` to the function; when it returns, PSCI CPU_OFF.
// cpu_off: PSCI CPU_OFF for the calling CPU.

.equ PSCI_FN_CPU_ON_64, 0xC4000003
.equ PSCI_FN_CPU_OFF, 0x84000002
.equ PSCI_FN_AFFINITY_INFO_64, 0xC4000004

cpu_on:
    mov x3, x1
    mov x1, x0
    ldr x2, =secondary_entry
    ldr x0, =PSCI_FN_CPU_ON_64
    hvc #0
    ret

secondary_entry:
    mov x19, x0
    mrs x0, mpidr_el1
    and x0, x0, #0xff
    ldr x1, =kstack_top
    mov x2, #KSTACK_SIZE
    msub x1, x0, x2, x1
    mov sp, x1
    ldr x1, =exc_vectors
    msr vbar_el1, x1
    isb
    blr x19
cpu_off:
    ldr x0, =PSCI_FN_CPU_OFF
    hvc #0
    b cpu_off

.ltorg
