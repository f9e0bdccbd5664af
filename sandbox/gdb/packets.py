"""GDB remote serial protocol framing (gdb manual, "Overview" of the remote protocol).

A packet is `$payload#cs` with `cs` the modulo-256 sum of the payload bytes in two hex
digits; the receiver acknowledges with `+` (or `-` to ask for a resend) until both sides
agree on QStartNoAckMode. A lone 0x03 byte outside a packet is an interrupt (Ctrl-C).
Binary data in replies escapes `#`, `$`, `}` and `*` as `}` followed by the byte XOR 0x20.
"""

from __future__ import annotations

import select
import socket

INTERRUPT = "\x03"  # what `receive` returns for a Ctrl-C byte
_ESCAPED = frozenset(b"#$}*")


class Disconnected(Exception):
    """The debugger closed the connection."""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + f"{checksum(payload):02x}".encode()


def escape_binary(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out)


def unescape_binary(data: bytes) -> bytes:
    out, it = bytearray(), iter(data)
    for b in it:
        out.append(next(it, 0) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


class Connection:
    """One debugger connection: whole packets in, whole packets out."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.acks = True
        self._buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(4096)
        if not data:
            raise Disconnected()
        self._buffer += data

    def receive(self) -> str:
        """The next packet's payload (checksum verified, acknowledged), or INTERRUPT."""
        while True:
            buf = self._buffer
            while buf and buf[0] != 0x24:  # '$'
                if buf[0] == 0x03:
                    del buf[0]
                    return INTERRUPT
                del buf[0]  # '+', '-' and noise between packets
            end = buf.find(b"#")
            if buf and end >= 0 and len(buf) >= end + 3:
                payload, sent = bytes(buf[1:end]), bytes(buf[end + 1:end + 3])
                del buf[:end + 3]
                try:
                    good = int(sent, 16) == checksum(payload)
                except ValueError:
                    good = False
                if self.acks:
                    self.sock.sendall(b"+" if good else b"-")
                if good:
                    return payload.decode("latin-1")
                continue
            self._fill()

    def send(self, payload: str | bytes) -> None:
        data = payload.encode("latin-1") if isinstance(payload, str) else payload
        self.sock.sendall(frame(data))
        # The '+' that acknowledges it is skipped by `receive` with the other noise.

    def interrupted(self) -> bool:
        """Whether the debugger sent Ctrl-C since the last look (never blocks)."""
        while select.select([self.sock], [], [], 0)[0]:
            self._fill()
            if 0x03 in self._buffer:
                self._buffer.remove(0x03)
                return True
        return False
