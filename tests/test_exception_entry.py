"""Every exception path the core models, observed by the guest's own vector table.

Expected values were checked on QEMU 7.2 TCG (-M virt,virtualization=on -cpu max) where the
issue says so; the rest follow the Arm ARM rule named in the test."""

from sandbox import ExitReason, Vm

from conftest import assert_halted, boot

UNBACKED = 0x10000000


def qemu_virt() -> Vm:
    """Accesses to nothing abort in the guest, as on QEMU's virt board (the Vm default is
    KVM's: exit to the host)."""
    return Vm(unbacked="abort")


def test_svc_from_el1h_records_vector_200_esr_and_next_pc():
    r = boot("guest_main:\n svc #0x42\n ret\n")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr, rec.spsr) == (0x200, 0x56000042, r.sym("guest_main") + 4, 0x3C5)


def test_svc_from_el0_records_lower_el_vector_and_spsr_zero():
    r = boot("""
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    svc #0x42
    svc #0xffff
""")
    assert_halted(r)
    svc, exit_call = r.records
    # QEMU 7.2: SVC #0x42 from EL0 -> vector 0x400, ESR 0x56000042, ELR = svc+4, SPSR 0
    assert (svc.vector, svc.esr, svc.elr, svc.spsr) == (0x400, 0x56000042, r.sym("task") + 4, 0)
    assert exit_call.esr == 0x5600FFFF


def test_brk_reports_the_brk_itself_and_its_comment():
    r = boot("guest_main:\n brk #0x123\n ret\n")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr) == (0x200, 0xF2000123, r.sym("guest_main"))


def test_undefined_instruction_is_ec_0_with_il():
    r = boot("guest_main:\n udf #7\n ret\n")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.elr, rec.spsr) == (0x200, 0x02000000, r.sym("guest_main"), 0x3C5)


def test_load_from_unbacked_address_at_el1h_is_a_synchronous_external_abort():
    r = boot(f"guest_main:\n ldr x1, ={UNBACKED:#x}\nfault:\n ldr x2, [x1]\n ret\n", vm=qemu_virt())
    assert_halted(r)
    [rec] = r.records
    # QEMU 7.2: vector 0x200, ESR 0x96000010, FAR = the address, ELR = the load, SPSR 0x3c5
    assert (rec.vector, rec.esr, rec.far, rec.elr, rec.spsr) == (0x200, 0x96000010, UNBACKED, r.sym("fault"), 0x3C5)


def test_store_to_unbacked_address_sets_wnr():
    r = boot(f"guest_main:\n ldr x1, ={UNBACKED + 8:#x}\nfault:\n str x2, [x1]\n ret\n", vm=qemu_virt())
    assert_halted(r)
    [rec] = r.records
    assert (rec.esr, rec.far, rec.elr) == (0x96000050, UNBACKED + 8, r.sym("fault"))


def test_load_and_store_at_el0_are_lower_el_aborts():
    r = boot(f"""
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    ldr x1, ={UNBACKED:#x}
load:
    ldrb w2, [x1, #3]
store:
    str w2, [x1]
    svc #0xffff
""", vm=qemu_virt())
    assert_halted(r)
    load, store, _ = r.records
    assert (load.vector, load.esr, load.far, load.elr, load.spsr) == (0x400, 0x92000010, UNBACKED + 3, r.sym("load"), 0)
    assert (store.vector, store.esr, store.far, store.elr) == (0x400, 0x92000050, UNBACKED, r.sym("store"))


def test_instruction_fetch_from_unbacked_address_is_an_instruction_abort():
    r = boot(vm=Vm(storm_threshold=8), source=f"""
guest_main:
    ldr x0, ={UNBACKED:#x}
    adr x30, back
    br x0
back:
    ret
""")
    # The handler returns past the faulting "instruction" (ELR+4), which faults again:
    # the guest never comes back, and the storm guard stops it. The first record is exact.
    first = r.records[0]
    assert (first.vector, first.esr, first.far, first.elr) == (0x200, 0x86000010, UNBACKED, UNBACKED)
    assert r.exit.reason is ExitReason.INTERNAL_ERROR
    assert "exception storm" in r.exit.internal.message


def test_exception_from_el1t_uses_the_sp0_group():
    r = boot("""
guest_main:
    msr spsel, #0
    ldr x0, =el0_stack_top
    mov sp, x0
    svc #1
    msr spsel, #1
    ret
""")
    assert_halted(r)
    [rec] = r.records
    assert (rec.vector, rec.esr, rec.spsr) == (0x000, 0x56000001, 0x3C4)


def test_spsr_keeps_flags_and_entry_keeps_nzcv():
    r = boot("""
guest_main:
    mov x0, #0
    cmp x0, #1          // N=1, C=0 (0 - 1 borrows)
    msr daifclr, #0xf
    svc #2
    mrs x5, nzcv
    ldr x6, =saved
    str x5, [x6]
    msr daifset, #0xf
    ret
.balign 8
saved: .quad 0
""")
    assert_halted(r)
    [rec] = r.records
    assert rec.spsr == 0x80000005  # N set, DAIF clear, EL1h
    assert int.from_bytes(r.vm.read_memory(r.sym("saved"), 8), "little") == 0x80000000


def test_pan_is_set_on_entry_when_sctlr_span_is_zero():
    r = boot("""
guest_main:
    mrs x0, sctlr_el1
    bic x0, x0, #(1 << 23)      // SPAN = 0
    msr sctlr_el1, x0
    isb
    svc #3
    mrs x1, s3_0_c4_c2_3        // PAN (keystone lacks the name)
    ldr x2, =seen
    str x1, [x2]
    ret
.balign 8
seen: .quad 0
""")
    assert_halted(r)
    # The vector entered with PSTATE.PAN set; the SVC handler's ERET restored PAN=0, so the
    # record's SPSR shows the interrupted PAN (0) and the guest reads PAN back as 0.
    [rec] = r.records
    assert rec.spsr & (1 << 22) == 0


def test_pc_alignment_fault_reports_the_misaligned_pc_in_far_and_elr():
    r = boot("""
guest_main:
    ldr x0, =target + 2
    br x0
target:
    ret
""")
    rec = r.records[0]
    assert (rec.vector, rec.esr, rec.far, rec.elr) == (0x200, 0x8A000000, r.sym("target") + 2, r.sym("target") + 2)


def test_illegal_exception_return_takes_illegal_state_exception():
    r = boot("""
guest_main:
    mov x0, #0x3c9               // SPSR: EL2h, which EL1 cannot return to
    msr spsr_el1, x0
    adr x0, after
    msr elr_el1, x0
    eret
after:
    nop
    ret
""")
    rec = r.records[0]
    # Illegal return: PSTATE.IL=1 at `after`; its first instruction takes EC 0x0E.
    assert (rec.vector, rec.esr, rec.elr) == (0x200, 0x0E << 26 | 1 << 25, r.sym("after"))
    assert rec.spsr & (1 << 20)  # SPSR.IL records the illegal state


def test_exclusive_load_from_misaligned_address_is_an_alignment_fault():
    r = boot("""
guest_main:
    ldr x1, =buf + 1
fault:
    ldxr x2, [x1]
    ret
.balign 16
buf: .quad 0, 0
""")
    assert_halted(r)
    [rec] = r.records
    assert (rec.esr, rec.far, rec.elr) == (0x96000021, r.sym("buf") + 1, r.sym("fault"))


def test_eret_to_el0_runs_the_task_at_el0():
    r = boot("""
guest_main:
    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
    mrs x0, currentel           // UNDEFINED at EL0
    svc #0xffff
""")
    assert_halted(r)
    undef, _ = r.records
    assert (undef.vector, undef.esr, undef.spsr) == (0x400, 0x02000000, 0)
