// sdei_hooks.S - hooks for sdei.S's recording handler (`sdei_hook`), after sdei.S; the
// fuzzing demonstration scenarios/fuzz/sdei-handler.toml uses them.
//
// sdei_tally_hook(x0 = the record, x1 = the event) adds the event number to `sdei_tally`
// with x0-x17 only, which a hook may clobber: COMPLETE restores them from the interrupted
// context (DEN0054C, as reference/sdei.md 3.3 quotes it). Returns x0 = 0 (no policy
// override).
//
// sdei_tally_hook_faulty is the same hook with a classic fault: it keeps the running total
// in x23 and does not save it. COMPLETE restores x0-x17, PC and PSTATE only, so x18-x30
// reach the interrupted code as the handler leaves them (sdei.S: "x19-x30 must be
// preserved"): code interrupted while it keeps a live value in x23 finds it changed.

sdei_tally_hook:
    ldr x9, =sdei_tally
    ldr x10, [x9]
    add x10, x10, x1
    str x10, [x9]
    mov x0, #0
    ret

sdei_tally_hook_faulty:
    ldr x9, =sdei_tally
    ldr x23, [x9]                // x23 belongs to the interrupted code: the fault
    add x23, x23, x1
    str x23, [x9]
    mov x0, #0
    ret

.ltorg
.balign 8
sdei_tally:
    .quad 0
