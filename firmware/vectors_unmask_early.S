// vectors_unmask_early.S - a deliberately FAULTY EL1 vector table, for the fuzzer's
// demonstration (scenarios/fuzz/). Do not use it for anything else.
//
// Every vector forwards to the recording table of vectors.S, except the one for
// synchronous exceptions from EL0 (system calls): it unmasks SErrors first thing, as a
// RAS-aware kernel re-enables SError reporting while it handles a system call - but
// before ELR_EL1 and SPSR_EL1 are saved. An SError taken in that window overwrites
// both, and the system call then returns to the SError's return address with the
// SError's SPSR (EL1h instead of EL0t): the interrupted EL0 context is lost.
//
// Install it with `ldr x1, =unmask_early_vectors; msr vbar_el1, x1; isb` after
// kernel.S's _start has installed exc_vectors (it needs vectors.S, which kernel.S includes).

.macro FORWARD offset
    .balign 0x80
    b exc_vectors + \offset
.endm

.balign 2048
unmask_early_vectors:
    FORWARD 0x000
    FORWARD 0x080
    FORWARD 0x100
    FORWARD 0x180
    FORWARD 0x200
    FORWARD 0x280
    FORWARD 0x300
    FORWARD 0x380
    .balign 0x80                 // +0x400: synchronous, lower EL (AArch64)
    msr daifclr, #4              // THE BUG: SErrors unmasked before ELR/SPSR are saved
    b exc_vectors + 0x400
    FORWARD 0x480
    FORWARD 0x500
    FORWARD 0x580
    FORWARD 0x600
    FORWARD 0x680
    FORWARD 0x700
    FORWARD 0x780
