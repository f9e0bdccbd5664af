"""The AArch64 architecture model: pure functions and small value types, no Unicorn, no I/O."""
