// uart.S - print through the PL011 at QEMU virt's address (0x09000000).
//
// uart_putc: x0 = byte.  uart_puts: x0 = address of a NUL-terminated string.
// Both wait for UARTFR.TXFF to clear and clobber x0-x3 only.

.equ UART_BASE, 0x09000000
.equ UART_FR, 0x18
.equ UART_FR_TXFF, 5

uart_putc:
    mov x1, #UART_BASE
uart_putc_wait:
    ldr w2, [x1, #UART_FR]
    tbnz w2, #UART_FR_TXFF, uart_putc_wait
    strb w0, [x1]
    ret

uart_puts:
    mov x3, x0
    mov x1, #UART_BASE
uart_puts_next:
    ldrb w0, [x3], #1
    cbz w0, uart_puts_done
uart_puts_wait:
    ldr w2, [x1, #UART_FR]
    tbnz w2, #UART_FR_TXFF, uart_puts_wait
    strb w0, [x1]
    b uart_puts_next
uart_puts_done:
    ret
