"""Syscall handlers: each module's HANDLERS maps the calls it handles to their handlers.

The table (declared in appvirt.syscalls) names each call's handler module; the dispatcher
imports it at the call's first stop.
"""

from ..core.table import SyscallTable
from ..syscalls import ALL_ENTRIES

TABLE = SyscallTable(ALL_ENTRIES)
