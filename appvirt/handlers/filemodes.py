"""The policy decision for one resolved path: which file mode applies and what it allows."""

from __future__ import annotations

import enum
import errno
import os

from ..core.action import Deny, Note
from ..fs.resolver import Resolved
from ..policy.model import FileMode, Policy
from ..virt.procpolicy import ProcView


class Intent(enum.Enum):
    """What a call would do to the path it names."""

    READ = "read"        # look: stat, open for reading, readlink, exec, chdir
    WRITE = "write"      # change an existing object: open for writing, chmod, utime, xattrs
    CREATE = "create"    # make a new name: mkdir, mknod, symlink, link, bind, O_CREAT
    DELETE = "delete"    # remove a name: unlink, rmdir, rename's source


# /proc/PID entries a program may read of a process outside the sandbox (what ps and top
# need); everything else there (mem, environ, fd, maps, ...) is refused (threats #20, #30).
_PROC_PUBLIC = frozenset(b"""stat status cmdline comm statm cgroup cpuset limits wchan
oom_score sessionid loginuid schedstat task""".split())


def proc_pid(path: bytes) -> int | None:
    """The process a /proc/PID[/...] path names, else None."""
    parts = path.split(b"/", 3)
    if len(parts) < 3 or parts[1] != b"proc" or not parts[2].isdigit():
        return None
    return int(parts[2])


def proc_outsider(path: bytes, intent: Intent, is_member) -> bool:
    """Whether path reaches into /proc/PID of a process outside the sandbox beyond reading
    its public entries."""
    parts = path.split(b"/")
    if len(parts) < 3 or parts[1] != b"proc" or not parts[2].isdigit():
        return False
    if is_member(int(parts[2])):
        return False
    if intent is not Intent.READ:
        return True
    rest = parts[3:]
    if len(rest) >= 2 and rest[0] == b"task" and rest[1].isdigit():
        rest = rest[2:]
    return bool(rest) and rest[0] not in _PROC_PUBLIC


def check(policy: Policy, r: Resolved, intent: Intent, is_member) -> tuple[Deny | None, Note]:
    """Decide a resolved path: (None, note) if allowed, else (Deny, note)."""
    if r.magic is not None:
        # An object with no path (pipe, socket, ...): the file modes do not apply to it.
        return None, Note(rule="builtin:fd-object", path=r.path)
    path = r.path
    if policy.processes.proc is ProcView.OWN:
        pid = proc_pid(path)
        if pid is not None and not is_member(pid):
            return Deny(errno.ENOENT), Note(
                rule="processes.proc", path=path,
                hint="the policy shows the sandbox's own processes only (processes.proc: own)")
    if proc_outsider(path, intent, is_member):
        return Deny(errno.EACCES), Note(
            rule="builtin:proc-isolation", path=path,
            hint="processes outside the sandbox cannot be inspected or changed")
    mode, rule = policy.files.mode_for(path)
    note = Note(rule=rule, path=path)
    if mode in (FileMode.PASSTHROUGH, FileMode.OVERLAY, FileMode.PRIVATE):
        return None, note
    if mode is FileMode.HIDDEN:
        err = errno.EACCES if intent is Intent.CREATE else errno.ENOENT
        return Deny(err), Note(rule=rule, path=path, hint=_hint(path, "readonly"))
    if intent is Intent.READ:
        return None, note
    return Deny(errno.EROFS), Note(rule=rule, path=path, hint=_hint(path, "overlay"))


def _hint(path: bytes, mode: str) -> str:
    return (f"to allow it, add a later files rule {{path: '{os.fsdecode(path)}', "
            f"mode: {mode}}}")
