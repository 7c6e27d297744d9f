"""A decoded syscall stop: a value with no tracer handle and no I/O."""

from typing import NamedTuple

from .table import SyscallEntry


class Stop(NamedTuple):
    """One seccomp stop, as the kernel reported it (PTRACE_GET_SYSCALL_INFO). A named tuple:
    one is made at every stop Python handles."""

    tid: int
    pid: int                                 # thread-group id of the caller
    entry: SyscallEntry
    args: tuple[int, int, int, int, int, int]
    paths: tuple[bytes | None, ...] = ()     # pre-read per entry.path_args (None: NULL pointer)
    ip: int = 0

    @property
    def name(self) -> str:
        return self.entry.name

    def arg(self, i: int) -> int:
        """Argument i as an unsigned 64-bit value."""
        return self.args[i]

    def sarg(self, i: int) -> int:
        """Argument i as a signed 32-bit int (fds, flags declared `int`)."""
        v = self.args[i] & 0xFFFFFFFF
        return v - (1 << 32) if v & 0x80000000 else v

    def path(self, i: int) -> bytes | None:
        """The pre-read path of argument i (KeyError-free: None if not declared or NULL)."""
        try:
            return self.paths[self.entry.path_args.index(i)]
        except ValueError:
            return None
