"""The exception tree and the documented exit statuses of the `appvirt` command.

`AppvirtError` subclasses are host-side failures that end a command with a one-line message;
each names the exit status it maps to. `GuestErrno` is not an error of appvirt: it carries an
errno destined for the sandboxed program.
"""

from __future__ import annotations

import enum
import errno as _errno
import os


class ExitStatus(enum.IntEnum):
    """Exit statuses of `appvirt` itself (a sandboxed program's own status passes through)."""

    OK = 0
    FAILURE = 1          # a command ran and reports a negative answer (e.g. diff found changes)
    USAGE = 2            # bad command line, malformed policy or input, unusable environment
    POWERED_OFF = 124    # the program switched its sandboxed machine off (reboot(2), `reboot:`)
    INTERNAL = 125       # a bug in appvirt: the sandboxed tree was killed, nothing left running
    NOT_EXECUTABLE = 126  # the program exists but cannot be executed
    NOT_FOUND = 127      # the program does not exist
    SIGNAL_BASE = 128    # 128+N: the program was killed by signal N


class AppvirtError(Exception):
    """Base of every failure appvirt reports to its user in one line."""

    exit_status: ExitStatus = ExitStatus.USAGE

    def __init__(self, message: str, *, exit_status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if exit_status is not None:
            self.exit_status = exit_status

    @property
    def message(self) -> str:
        return str(self.args[0])


class PolicyError(AppvirtError):
    """Raised when a policy file cannot be read, parsed or validated."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None,
                 key: str = "") -> None:
        where = file
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.line, self.key = file, line, key


class LaunchError(AppvirtError):
    """Raised when the program cannot be started under the tracer."""


class EnvironmentUnsupported(AppvirtError):
    """Raised when ptrace or seccomp cannot be used here (another tracer, a locked container)."""


class StateDirError(AppvirtError):
    """Raised when the per-application state directory cannot be created or written."""


class LogFormatError(AppvirtError):
    """Raised when an intercept log cannot be read."""


class TraceeGone(Exception):
    """Raised when a tracee vanished (ESRCH) in the middle of handling one of its stops."""

    def __init__(self, tid: int) -> None:
        super().__init__(f"tracee {tid} is gone")
        self.tid = tid


class AppvirtInternalError(AppvirtError):
    """Raised on a broken invariant: the sandbox is torn down and the bug reported."""

    exit_status = ExitStatus.INTERNAL


class GuestErrno(Exception):
    """An errno for the sandboxed program, raised by services and turned into a denial.

    `rule` names the policy rule that caused it (a hidden path); without one it is the answer
    the kernel would have given anyway.
    """

    def __init__(self, err: int, detail: str = "", rule: str = "") -> None:
        super().__init__(f"{_errno.errorcode.get(err, err)}: {detail or os.strerror(err)}")
        self.errno = err
        self.detail = detail
        self.rule = rule
