"""The app's store as files inside the sandbox: the registry tree at the policy's mount
(fs/registryfs.py) and /proc/sys (sysctlfiles.py), set up by the launcher for a run.

Both keep what programs write in spool files of the run and fold it into the store at sync
points (fs/writeback.py): before the tracer serves a registry or /proc/sys path, when a process
ends or execs, and at the end of the run. If appvirt itself is killed (SIGKILL), the sandboxed
processes die with it and what they wrote since the last sync point is lost; everything folded
before is in the store (each fold is one transaction).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..fs.registryfs import RegistryFS
from ..fs.registryspool import RegistrySpool
from ..fs.writeback import WriteBacks
from ..policy.model import FileMode, Policy
from ..store import RegistryTree, Store, SysctlOverlay
from .context import TracerContext
from .machinefiles import MachineFiles
from .sysctlfiles import SysctlFiles

Emit = Callable[[dict[str, Any]], Any]


def serve_store(ctx: TracerContext, policy: Policy, store: Store, machine: MachineFiles,
                emit: Emit) -> None:
    """Mount the registry tree in the context's filesystem and virtualize /proc/sys."""
    def report(path: bytes, detail: str) -> None:
        emit({"kind": "store", "path": os.fsdecode(path), "detail": detail})

    # A rendered string is one byte longer than its value: read that much, and one more.
    writebacks = ctx.writebacks = WriteBacks(store.limits.max_value_bytes + 1, report)
    machine.before_close(writebacks.close)
    spool = machine.spool_path()         # made on first use (machine.spool_dir)
    mount = os.fsencode(policy.registry.mount)
    shown = os.fsencode(spool / "registry")
    registry = RegistrySpool(RegistryTree(store), mount, shown + mount,
                             os.fsencode(spool / "registry-new"), writebacks, report,
                             prepare=machine.spool_dir,
                             hidden=lambda g: policy.files.mode_for(g)[0] is FileMode.HIDDEN)
    ctx.view = ctx.fs = RegistryFS(ctx.fs, mount, shown, registry)
    uts = ctx.uts if policy.uts.virtual and policy.uts.allow_set else None
    ctx.sysctl = SysctlFiles(SysctlOverlay(store), lambda: machine.spool_dir() / "sysctl",
                             writebacks, uts)
    machine.provide_paths(ctx.sysctl.content)
