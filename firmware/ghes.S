// ghes.S - a firmware-first (ACPI APEI GHESv2) error consumer for sandbox guests.
//
// Include after kernel.S. The host (sandbox.ras.ghes.FirmwareFirst.publish) writes the
// HEST's address into `ghes_hest_ptr`, as boot firmware hands ACPI tables to the OS.
//
// ghes_consume(x0 = HEST notification type, x1 = ESR of the notification or 0):
//   walks the HEST; for every enabled GHESv2 entry (type 10) with that notification type
//   whose error status block holds a record (BlockStatus != 0): checks that the first
//   section is a memory error section (GUID A5BC1114-6F64-4EDE-B863-3E83ED7C83B1), reads
//   the severity and the physical address, appends an entry to `ghes_log`, clears
//   BlockStatus and acknowledges: read-ack = (read-ack & preserve) | write (as Linux's
//   ghes_clear_estatus() and ghes_ack_error() do). Returns x0 = records consumed.
//   Uses x0-x18 only (AAPCS64 scratch registers).
// ghes_consume_vector(x0 = type, x1 = ESR or 0, x4 = vector): the same, only for the
//   sources whose notification vector is x4 (an SDEI source: its event number).
//
// ghes_hook: an exc_hook for vectors.S. A synchronous external abort (EC 0x24/0x25 with
//   FSC 0x10) serves the SEA sources (notification 8), an SError the SEI sources (9). If a
//   record was consumed it returns: for an SError, 1 (resume at ELR); for an SEA taken at
//   `ghes_acked` (a queued error the host delivered right after our acknowledgement),
//   1 (resume); for any other SEA, the value of `ghes_sea_policy` (default 2: skip the
//   access that consumed the poison, as a kernel fixup would). Nothing consumed: 0.
//   `ghes_install` sets exc_hook = ghes_hook.
//
// ghes_log: u64 count, then GHES_LOG_ENTRIES entries of 64 bytes (sandbox.ras.consumer):
//   +0 source id, +8 notification type, +16 BlockStatus, +24 ErrorSeverity,
//   +32 physical address, +40 flags (bit 0: memory error section GUID matched,
//   bit 1: physical address valid), +48 ESR of the notification, +56 section validation bits.
//
// The tables are only 4-byte aligned (HEST entries are 92 bytes): u64 fields are read as
// two u32 halves.

.equ GHES_LOG_ENTRIES, 32
.equ HEST_TYPE_GHES_V2, 10
.equ NOTIFY_SEA, 8
.equ NOTIFY_SEI, 9

ghes_install:
    ldr x0, =ghes_hook
    ldr x1, =exc_hook
    str x0, [x1]
    ret

ghes_hook:
    stp x29, x30, [sp, #-32]!
    stp x19, x20, [sp, #16]
    mov x19, x2                  // ELR
    mov x20, x1                  // ESR
    and x9, x0, #0x180
    cmp x9, #0x180
    b.eq ghes_hook_serror
    cbnz x9, ghes_hook_none      // IRQ, FIQ
    lsr x9, x20, #26
    cmp x9, #0x24                // DABT_LOW
    b.eq ghes_hook_abort
    cmp x9, #0x25                // DABT_CUR
    b.eq ghes_hook_abort
    cmp x9, #0x20                // IABT_LOW
    b.eq ghes_hook_abort
    cmp x9, #0x21                // IABT_CUR
    b.ne ghes_hook_none
ghes_hook_abort:
    and x9, x20, #0x3f
    cmp x9, #0x10                // synchronous external abort
    b.ne ghes_hook_none
    mov x0, #NOTIFY_SEA
    mov x1, x20
    bl ghes_consume
    cbz x0, ghes_hook_none
    ldr x9, =ghes_acked
    cmp x19, x9
    b.eq ghes_hook_resume
    ldr x9, =ghes_sea_policy
    ldr x0, [x9]
    b ghes_hook_out
ghes_hook_serror:
    mov x0, #NOTIFY_SEI
    mov x1, x20
    bl ghes_consume
    cbz x0, ghes_hook_none
ghes_hook_resume:
    mov x0, #1
    b ghes_hook_out
ghes_hook_none:
    mov x0, #0
ghes_hook_out:
    ldp x19, x20, [sp, #16]
    ldp x29, x30, [sp], #32
    ret

ghes_consume:
    movn x4, #0                  // any notification vector
ghes_consume_vector:             // ... or only the sources whose vector is x4
    mov x2, x0                   // wanted notification type
    mov x3, x1                   // ESR to log
    mov x0, #0                   // records consumed
    ldr x9, =ghes_hest_ptr
    ldr x9, [x9]
    cbz x9, ghes_consume_done
    ldr w10, [x9]                // signature "HEST"
    ldr w11, =0x54534548
    cmp w10, w11
    b.ne ghes_consume_done
    ldr w10, [x9, #36]           // error source count
    add x12, x9, #40             // first entry
ghes_next_source:
    cbz w10, ghes_consume_done
    ldrh w13, [x12]              // entry type
    cmp w13, #HEST_TYPE_GHES_V2
    b.ne ghes_consume_done       // only GHESv2 entries are laid out here
    ldrb w13, [x12, #7]          // enabled
    cbz w13, ghes_skip_source
    ldrb w13, [x12, #32]         // notification structure: type
    cmp w13, w2
    b.ne ghes_skip_source
    cmn x4, #1
    b.eq ghes_vector_ok
    ldr w13, [x12, #40]          // notification structure: vector (the SDEI event number)
    cmp x13, x4
    b.ne ghes_skip_source
ghes_vector_ok:
    ldr w13, [x12, #24]          // error status address (GAS.address, two halves)
    ldr w14, [x12, #28]
    orr x13, x13, x14, lsl #32
    ldr x13, [x13]               // -> the error status block
    ldr w14, [x13]               // BlockStatus
    cbz w14, ghes_skip_source    // nothing recorded here

    // ghes_log entry
    ldr x15, =ghes_log
    ldr x16, [x15]
    add x17, x16, #1
    str x17, [x15]
    and x16, x16, #(GHES_LOG_ENTRIES - 1)
    add x15, x15, #8
    add x15, x15, x16, lsl #6    // 64-byte entries
    ldrh w16, [x12, #2]          // source id
    stp x16, x2, [x15, #0]       // source id, notification type
    ldr w16, [x13, #16]          // ErrorSeverity
    stp x14, x16, [x15, #16]     // BlockStatus, severity
    str x3, [x15, #48]

    // first data entry (block + 20): section type GUID, little-endian words
    mov x8, #0                   // flags
    mov x7, #0                   // physical address
    mov x6, #0                   // section validation bits
    ldr w16, [x13, #20]
    ldr w17, =0xa5bc1114
    cmp w16, w17
    b.ne ghes_log_done
    ldr w16, [x13, #24]
    ldr w17, =0x4ede6f64
    cmp w16, w17
    b.ne ghes_log_done
    ldr w16, [x13, #28]
    ldr w17, =0x833e63b8
    cmp w16, w17
    b.ne ghes_log_done
    ldr w16, [x13, #32]
    ldr w17, =0xb1837ced
    cmp w16, w17
    b.ne ghes_log_done
    orr x8, x8, #1               // memory error section
    ldr w6, [x13, #92]           // section (block + 20 + 72): validation bits
    ldr w16, [x13, #96]
    orr x6, x6, x16, lsl #32
    tbz x6, #1, ghes_log_done    // physical address valid?
    orr x8, x8, #2
    ldr w7, [x13, #108]          // physical address at section + 16
    ldr w16, [x13, #112]
    orr x7, x7, x16, lsl #32
ghes_log_done:
    stp x7, x8, [x15, #32]       // physical address, flags
    str x6, [x15, #56]

    // clear BlockStatus, then acknowledge (read-ack register GAS at entry + 64)
    str wzr, [x13]
    ldr w13, [x12, #68]
    ldr w14, [x12, #72]
    orr x13, x13, x14, lsl #32   // read-ack register address
    ldr w14, [x12, #76]          // preserve
    ldr w15, [x12, #80]
    orr x14, x14, x15, lsl #32
    ldr w15, [x12, #84]          // write
    ldr w16, [x12, #88]
    orr x15, x15, x16, lsl #32
    ldr x16, [x13]
    and x16, x16, x14
    orr x16, x16, x15
    str x16, [x13]               // the acknowledgement
ghes_acked:
    add x0, x0, #1
ghes_skip_source:
    add x12, x12, #92
    sub w10, w10, #1
    b ghes_next_source
ghes_consume_done:
    ret

.ltorg
.balign 8
ghes_hest_ptr:
    .quad 0
ghes_sea_policy:
    .quad 2
ghes_log:
    .quad 0
    .skip 64 * GHES_LOG_ENTRIES
