"""Firmware-first RAS: CPER records (cper), the HEST (hest), the platform firmware that records
errors into GHESv2 status blocks and notifies the guest (ghes, notify), and what the guest's
consumer in firmware/ghes.S read back (consumer)."""

from .cper import MEMORY_ERROR_SECTION, MemoryErrorType, Severity
from .ghes import FirmwareFirst, MemoryErrorKind, Outcome
from .hest import Notification

__all__ = ["FirmwareFirst", "MEMORY_ERROR_SECTION", "MemoryErrorKind", "MemoryErrorType", "Notification",
           "Outcome", "Severity"]
