"""The suite uses the sandbox's own pytest plugin (sandbox.pytest_plugin: fixtures `vm`,
`vcpu`, `boot_guest`, ...); the guest helpers live in sandbox.testing and are re-exported
here for `from conftest import boot, assert_halted, ...`."""

from __future__ import annotations

from sandbox.testing import RAM, GuestRun, assert_halted, boot

__all__ = ["RAM", "GuestRun", "assert_halted", "boot"]

pytest_plugins = ["pytester"]  # tests of the plugin run pytest on a project of their own
