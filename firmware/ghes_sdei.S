// ghes_sdei.S - firmware-first errors notified by SDEI (HEST notification type 11), after
// kernel.S, sdei.S and ghes.S.
//
// ghes_sdei_listen(x1 = SDEI event): the GHES sources notified by that event are consumed
// from the recording SDEI handler, as Linux's ghes_sdei_normal_callback() does: registers
// sdei_handler for the event (argument = the event number), enables it, unmasks this PE and
// installs ghes_sdei_hook as sdei_hook. x0 = 0 or the SDEI error.
// ghes_sdei_hook (sdei_hook: x0 = the handler's record, x1 = the event): consumes and
// acknowledges the records of the GHESv2 sources with notification type 11 and vector =
// that event (ghes_consume_vector; ESR logged as 0); x0 = records consumed (< 0x100: the
// handler completes per sdei_policy).

.equ NOTIFY_SDEI, 11

ghes_sdei_listen:
    stp x29, x30, [sp, #-16]!
    ldr x9, =ghes_sdei_hook
    ldr x10, =sdei_hook
    str x9, [x10]
    mov x3, x1
    bl sdei_listen
    ldp x29, x30, [sp], #16
    ret

ghes_sdei_hook:
    mov x4, x1
    mov x0, #NOTIFY_SDEI
    mov x1, #0
    b ghes_consume_vector        // returns to sdei_handler

.ltorg
