"""File calls: every path-taking system call, listings and the working directory (handlers
in handlers/files.py, execs.py, listing.py and statmeta.py).

Each path argument is resolved in the tracer in the program's view (component by component)
and decided by the policy's file modes. Then opens become openat2 on a host path; calls that
only read are answered by the tracer; calls that change files are made by the tracer through
the overlay; listings and getcwd are served in the program's view.
"""

from __future__ import annotations

from ..core.table import OpClass, Support, SyscallEntry

_FILES = "appvirt.handlers.files"
_EXECS = "appvirt.handlers.execs"
_LISTING = "appvirt.handlers.listing"
DEVICES = "device nodes: recorded stand-ins under identity: (CAP_MKNOD), else EPERM"


def _e(name: str, paths: tuple[int, ...], nullable: tuple[int, ...] = (),
       note: str = "", support: Support = Support.FULL, exit_stop: bool = True
       ) -> SyscallEntry:
    return SyscallEntry(name, OpClass.FILE, _FILES, support, note, paths, nullable,
                        needs_exit=exit_stop)


def _m(name: str, paths: tuple[int, ...], **kw) -> SyscallEntry:
    """An entry answered or made by the tracer: the kernel never runs it (no exit stop)."""
    return _e(name, paths, exit_stop=False, **kw)


def _layered(policy) -> bool:
    """Whether the view can differ from the host's own: modes that make or hide changes,
    virtual modules (listed in /sys/module), or a /proc that lists own processes only. A
    policy of readonly and passthrough paths sees the app's earlier changes too: the launcher
    traces these calls then if there are any."""
    from ..policy.model import FileMode
    from ..virt.machinepolicy import ModulesAction
    from ..virt.procpolicy import ProcView
    modes = {policy.files.default} | {r.mode for r in policy.files.rules}
    return bool(modes & {FileMode.OVERLAY, FileMode.PRIVATE, FileMode.HIDDEN}) \
        or policy.modules is ModulesAction.VIRTUAL or policy.processes.proc is ProcView.OWN


def _records_possible(policy) -> bool:
    return policy.identity is not None


LISTING_CALLS = frozenset({"getdents64", "getdents", "getcwd"})

ENTRIES: tuple[SyscallEntry, ...] = (
    _e("open", (0,)),
    _e("creat", (0,)),
    _e("openat", (1,)),
    _e("openat2", (1,), note="RESOLVE_* flags honoured in the tracer's walk"),
    _m("stat", (0,)),
    _m("lstat", (0,)),
    _m("newfstatat", (1,)),
    _m("statx", (1,)),
    _m("access", (0,)),
    _m("faccessat", (1,)),
    _m("faccessat2", (1,)),
    _m("readlink", (0,)),
    _m("readlinkat", (1,)),
    _m("statfs", (0,)),
    _m("getxattr", (0,)),
    _m("lgetxattr", (0,)),
    _m("listxattr", (0,)),
    _m("llistxattr", (0,)),
    _e("chdir", (0,)),
    _e("getxattrat", (1,)),
    _e("listxattrat", (1,)),
    _e("file_getattr", (1,)),
    _e("inotify_add_watch", (1,)),
    _e("fanotify_mark", (4,), nullable=(4,)),
    _m("mkdir", (0,)),
    _m("mkdirat", (1,)),
    _m("mknod", (0,), note=DEVICES, support=Support.PARTIAL),
    _m("mknodat", (1,), note=DEVICES, support=Support.PARTIAL),
    _m("rmdir", (0,)),
    _m("unlink", (0,)),
    _m("unlinkat", (1,)),
    _m("rename", (0, 1)),
    _m("renameat", (1, 3)),
    _m("renameat2", (1, 3),
       note="RENAME_NOREPLACE and RENAME_EXCHANGE; RENAME_WHITEOUT is EINVAL"),
    _m("link", (0, 1)),
    _m("linkat", (1, 3),
       note="O_TMPFILE files (AT_EMPTY_PATH, /proc/self/fd/N) linked into the overlay"),
    _m("symlink", (0, 1)),
    _m("symlinkat", (0, 2)),
    _m("chmod", (0,)),
    _m("fchmodat", (1,)),
    _m("fchmodat2", (1,)),
    _m("chown", (0,)),
    _m("lchown", (0,)),
    _m("fchownat", (1,)),
    _m("truncate", (0,)),
    _m("utime", (0,)),
    _m("utimes", (0,)),
    _m("futimesat", (1,), nullable=(1,)),
    _m("utimensat", (1,), nullable=(1,),
       note="\"now\" is the virtual clock's when time is virtualized"),
    _m("setxattr", (0,)),
    _m("lsetxattr", (0,)),
    _m("removexattr", (0,)),
    _m("lremovexattr", (0,)),
    _m("fchmod", (), note="lands on the upper copy when the fd refers to a host file"),
    _m("fchown", (), note="lands on the upper copy when the fd refers to a host file"),
    _m("fsetxattr", (), note="lands on the upper copy when the fd refers to a host file"),
    _m("fremovexattr", (), note="lands on the upper copy when the fd refers to a host file"),
    _e("setxattrat", (1,)),
    _e("removexattrat", (1,)),
    _e("file_setattr", (1,)),
    SyscallEntry("umask", OpClass.FILE, _FILES, needs_exit=True, enabled=_layered,
                 note="runs natively; the umasks the tracer keeps for the directories it "
                      "makes are forgotten"),
    SyscallEntry("execve", OpClass.PROCESS, _EXECS, path_args=(0,), needs_exit=True,
                 note="path decided; exec logged with argv; upper-layer programs by host path"),
    SyscallEntry("execveat", OpClass.PROCESS, _EXECS, path_args=(1,), needs_exit=True,
                 note="as execve; fexecve (AT_EMPTY_PATH) runs the fd it was given"),
    # listings and the working directory, when the view is not the host's own
    SyscallEntry("getdents64", OpClass.FILE, _LISTING, needs_exit=True, enabled=_layered,
                 note="merged listings served by the tracer"),
    SyscallEntry("getdents", OpClass.FILE, _LISTING, needs_exit=True, enabled=_layered,
                 note="merged listings served by the tracer"),
    SyscallEntry("getcwd", OpClass.FILE, _LISTING, enabled=_layered,
                 note="answers the program's own path, never the upper layer's"),
)

# Merged after every other class (the table's order is that of `appvirt syscalls`).
OWNER_ENTRIES: tuple[SyscallEntry, ...] = (
    SyscallEntry("fstat", OpClass.FILE, "appvirt.handlers.statmeta", needs_exit=True,
                 enabled=_records_possible,
                 note="traced under identity: (or recorded owners) to show recorded owners"),
)
