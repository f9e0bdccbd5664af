"""A PL011-compatible UART (Arm PrimeCell UART PL011 TRM, DDI0183), enough for guest output.

Transmit only: bytes written to UARTDR are captured (and optionally echoed to a stream);
UARTFR always says "transmit FIFO empty, not full; receive FIFO empty"; the control and
interrupt registers read back what was written; the PrimeCell ID registers identify a
PL011 (r1p5) so drivers that probe them (Linux amba-pl011) accept it. QEMU's virt board
puts it at 0x09000000.
"""

from __future__ import annotations

from typing import TextIO

from ..memmap import UART_BASE, UART_SIZE

PL011_BASE = UART_BASE
PL011_SIZE = UART_SIZE

UARTDR = 0x000
UARTRSR = 0x004
UARTFR = 0x018
UARTILPR = 0x020
UARTIBRD = 0x024
UARTFBRD = 0x028
UARTLCR_H = 0x02C
UARTCR = 0x030
UARTIFLS = 0x034
UARTIMSC = 0x038
UARTRIS = 0x03C
UARTMIS = 0x040
UARTICR = 0x044
UARTDMACR = 0x048

FR_RXFE = 1 << 4  # receive FIFO empty
FR_TXFF = 1 << 5  # transmit FIFO full (never)
FR_TXFE = 1 << 7  # transmit FIFO empty
RIS_TXRIS = 1 << 5  # transmit interrupt: always raised (the FIFO is always empty)

# PrimeCell peripheral and cell ID registers at 0xFE0..0xFFC (PL011 TRM 3.3.14-3.3.15).
_ID = {0xFE0: 0x11, 0xFE4: 0x10, 0xFE8: 0x34, 0xFEC: 0x00, 0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1}


class PL011:
    def __init__(self, echo: TextIO | None = None):
        self.output = bytearray()
        self.echo = echo
        self.regs = {UARTIBRD: 0, UARTFBRD: 0, UARTLCR_H: 0, UARTCR: 0x300, UARTIFLS: 0x12, UARTIMSC: 0,
                     UARTDMACR: 0, UARTILPR: 0}

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def read(self, offset: int, size: int) -> int:
        if offset == UARTDR:
            return 0  # nothing is ever received
        if offset == UARTFR:
            return FR_TXFE | FR_RXFE
        if offset == UARTRIS:
            return RIS_TXRIS
        if offset == UARTMIS:
            return RIS_TXRIS & self.regs[UARTIMSC]
        if offset in _ID:
            return _ID[offset]
        return self.regs.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == UARTDR:
            byte = value & 0xFF
            self.output.append(byte)
            if self.echo is not None:
                self.echo.write(chr(byte))
                self.echo.flush()
        elif offset in self.regs:
            self.regs[offset] = value & 0xFFFF

    def state(self) -> dict[str, object]:
        """What a snapshot keeps of the device."""
        return {"output": self.output.hex(), "regs": {str(k): v for k, v in self.regs.items()}}

    def restore(self, state: dict[str, object]) -> None:
        self.output = bytearray.fromhex(str(state["output"]))
        self.regs = {int(k): int(v) for k, v in dict(state["regs"]).items()}  # type: ignore[arg-type]
