// irq_actions.S - actions for gic.S's interrupt handler (`irq_action`), after gic.S; the
// fuzzing demonstration scenarios/fuzz/irq-handler.toml uses them.
//
// irq_count_action(x0 = the IAR value) counts the interrupts in `irq_seen` with x0-x7 only,
// which gic.S lets an action use (it saves and restores them around the call).
//
// irq_count_action_faulty does the same through x9, which gic.S does not save: the
// interrupted code finds its x9 changed when the handler returns.

irq_count_action:
    ldr x1, =irq_seen
    ldr x2, [x1]
    add x2, x2, #1
    str x2, [x1]
    ret

irq_count_action_faulty:
    ldr x9, =irq_seen            // x9 belongs to the interrupted code: the fault
    ldr x2, [x9]
    add x2, x2, #1
    str x2, [x9]
    ret

.ltorg
.balign 8
irq_seen:
    .quad 0
