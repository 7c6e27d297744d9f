"""The syscall table's declarations: one module per operation class, merged here.

Each entry says what the seccomp filter, `appvirt syscalls` and the dispatcher need to know of
a call, and which module of appvirt.handlers holds its handler; that module is imported only
when the call first stops (core/table.py).
"""

from . import files, identity, machine, network, process, system, time

ALL_ENTRIES = (files.ENTRIES + process.ENTRIES + system.ENTRIES + network.ENTRIES
               + time.ENTRIES + machine.ENTRIES + identity.ENTRIES + files.OWNER_ENTRIES)
