"""Syscall handlers, one module per operation class; ALL_ENTRIES is the single merge point."""

from ..core.table import SyscallTable
from . import files, identity, machine, network, process, statmeta, system, time

ALL_ENTRIES = (files.ENTRIES + process.ENTRIES + system.ENTRIES + network.ENTRIES
               + time.ENTRIES + machine.ENTRIES + identity.ENTRIES + statmeta.ENTRIES)

TABLE = SyscallTable(ALL_ENTRIES)
