"""Companion VM-exit simulator (tracker issue 7).

appvirt intercepts operations at the system-call level in user space; this package shows what
the same classes of operation look like under Intel VMX hardware virtualization: which guest
instructions and events cause VM exits, with which exit reason and qualification, decided by
which VMCS control, and what a KVM-like VMM does with each. The rules follow the Intel SDM as
Bochs implements them; `shared/reference/vmexit-spec.md` is the specification.

It imports nothing from the rest of appvirt except `appvirt.errors`.
"""

from __future__ import annotations

from .errors import VmxConfigError, VmxInputError
from .exits import VmExit
from .reasons import ExitReason
from .simulator import Machine, RunResult
from .vmcs import Vmcs

__all__ = ["ExitReason", "Machine", "RunResult", "Vmcs", "VmExit", "VmxConfigError",
           "VmxInputError"]
