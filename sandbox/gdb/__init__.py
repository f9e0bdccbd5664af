"""Debugging a guest with gdb: a GDB remote stub on 127.0.0.1 (see server.py)."""

from .server import LOOPBACK, GdbServer, SessionEnd, serve

__all__ = ["LOOPBACK", "GdbServer", "SessionEnd", "serve"]
