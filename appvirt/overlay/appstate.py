"""The overlay's files in an app's state directory: the lock and overlay.json.

`overlay.lock` is flocked exclusively by the run (and by `overlay reset|commit`), so two
appvirt processes never change one upper layer at once. `overlay.json` remembers the lower
root the upper layer was made against ("/" in production; a scratch directory in tests), so
that the CLI compares with the right tree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os

from ..errors import StateDirError
from ..state import AppDir, ensure_app_dir

CONFIG_NAME = "overlay.json"
LOCK_NAME = "overlay.lock"
CONFIG_VERSION = 1


class AppLock:
    """An exclusive flock on one app's overlay."""

    __slots__ = ("app", "fd")

    def __init__(self, app: AppDir, fd: int | None) -> None:
        self.app = app
        self.fd = fd

    @classmethod
    def acquire(cls, app: AppDir) -> "AppLock":
        ensure_app_dir(app)
        try:
            fd = os.open(app.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StateDirError(f"cannot open the lock of app {app.name}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirError(
                    f"app {app.name} is in use by another appvirt run") from None
            raise StateDirError(f"cannot lock app {app.name}: {e.strerror}") from e
        return cls(app, fd)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)        # closing drops the flock
            self.fd = None


def read_lower_root(app: AppDir) -> bytes:
    """The lower root recorded for app ("/" when nothing is recorded)."""
    path = app.root / CONFIG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
        root = data["lower_root"]
        if not isinstance(root, str) or not root.startswith("/"):
            raise ValueError("lower_root must be an absolute path")
    except FileNotFoundError:
        return b"/"
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StateDirError(f"{path}: not a valid overlay configuration ({e})") from None
    return os.fsencode(root)


def write_lower_root(app: AppDir, lower_root: bytes) -> None:
    path = app.root / CONFIG_NAME
    tmp = path.with_name(CONFIG_NAME + ".tmp")
    try:
        tmp.write_text(json.dumps({"version": CONFIG_VERSION,
                                   "lower_root": os.fsdecode(lower_root)}) + "\n",
                       encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
    except OSError as e:
        raise StateDirError(f"cannot write {path}: {e.strerror}") from e


def load_lower_root(app: AppDir, wanted: bytes | None) -> bytes:
    """The app's lower root, recording `wanted` (or "/") the first time."""
    if not (app.root / CONFIG_NAME).exists():
        root = os.fsencode(os.path.abspath(os.fsdecode(wanted or b"/")))
        write_lower_root(app, root)
        return root
    root = read_lower_root(app)
    if wanted is not None and os.path.abspath(os.fsdecode(wanted)) != os.fsdecode(root):
        raise StateDirError(
            f"app {app.name}'s overlay was made over {os.fsdecode(root)}, not "
            f"{os.fsdecode(wanted)}; reset it first (appvirt overlay {app.name} reset)")
    return root


def is_in_use(app: AppDir) -> bool:
    """Whether another process holds the app's lock (false if the app has none)."""
    path = app.root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
