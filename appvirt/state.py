"""Where per-application state lives: one directory per app.

`$APPVIRT_HOME/apps/NAME` when APPVIRT_HOME is set, else `$XDG_DATA_HOME/appvirt/apps/NAME`
(default `~/.local/share/appvirt/apps/NAME`). Each app directory holds the overlay's upper
layer (`upper/`), the configuration store (`store.sqlite`) and the intercept logs (`logs/`).
"""

import os
import re
from pathlib import Path
from typing import NamedTuple

from .errors import StateDirError
from .homepath import home_dir

APP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def appvirt_home(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Return the root of appvirt's state (not created)."""
    return Path(home_dir(environ))


def replace_quietly(path: Path, data: bytes) -> None:
    """Put data at path atomically (a temporary beside it, renamed over it), making its
    directory. For caches: a failure (a read-only home, a full disk) is not raised and
    leaves nothing behind; losing the file costs the next run only time."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def check_app_name(name: str) -> str:
    """Return `name` if it is a valid app name, else raise StateDirError."""
    if not APP_NAME_RE.match(name):
        raise StateDirError(
            f"invalid app name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return name


class AppDir(NamedTuple):
    """The state directory of one application."""

    name: str
    root: Path

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def default_log(self) -> Path:
        return self.logs / "intercept.jsonl"


def app_dir(name: str, home: Path | None = None) -> AppDir:
    """Return the state directory of app `name` (not created)."""
    check_app_name(name)
    return AppDir(name, (home or appvirt_home()) / "apps" / name)


def list_apps(home: Path | None = None) -> list[str]:
    """Return the names of the apps that have a state directory."""
    apps = (home or appvirt_home()) / "apps"
    try:
        return sorted(p.name for p in apps.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def ensure_app_dir(app: AppDir) -> AppDir:
    """Create the app's state directories, or raise StateDirError with a clear reason."""
    try:
        for d in (app.root, app.upper, app.logs):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = app.root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StateDirError(
            f"state directory {app.root} is not usable: {e.strerror or e} "
            "(set APPVIRT_HOME to a writable directory)") from e
    return app
