// Entry of the bare-metal test guest: a stack, main(), then exit(main()) via semihosting.
// Nothing here depends on the exception level (the sandbox starts at EL1h, QEMU virt too).
    .section .text.start, "ax"
    .global _start
_start:
    ldr     x0, =__stack_top
    mov     sp, x0
    bl      main
    bl      semihosting_exit        // exit status = main's return value
1:  wfi
    b       1b
