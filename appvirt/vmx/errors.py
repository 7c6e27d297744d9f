"""Exceptions of the VM-exit simulator.

Bad input (a VMCS file, a guest-state file, a listing, a log) is a host-side failure reported in
one line, like a policy error. A VM-entry failure is *not* an exception: it is a simulated result
(SDM 26.2-26.4), returned as a value by `transitions.vm_entry`.
"""

from __future__ import annotations

from appvirt.errors import AppvirtError, ExitStatus, PolicyError


class VmxConfigError(PolicyError):
    """Raised when a VMCS or guest-state file cannot be read, parsed or validated.

    The message names the file, the line, the key path and what was expected, on one line.
    """

    exit_status = ExitStatus.USAGE


class VmxInputError(AppvirtError):
    """Raised when instruction bytes or a listing cannot be decoded into instructions."""

    exit_status = ExitStatus.USAGE
