"""The `appvirt` executable.

A plain `appvirt run` command line is first offered to a warm server (warm/client.py: one
failed connect when there is none), and a cold one that found none leaves one starting for
the next (warm/autostart.py); it starts its run without loading click (click and the
modules it needs are a tenth of the start-up), and ends it without the interpreter's teardown
(_exit_at_once); every other command line goes to cli.main. Hence the imports here are few
and builtin, and the rest come when a command needs them.

Plain means one click would parse the same way without a word: `run`, then --policy, --app
and --log (each at most once, with a value) and --stats, an optional `--`, and the program
with its arguments. Help, an unknown or repeated option, a --policy or --log naming a
directory and the like go to click, which says what is wrong.
"""

from __future__ import annotations

import atexit
import errno
import gc
import importlib
import os
import stat
import sys
from types import ModuleType

if False:                           # for annotations only: typing costs a warm start 3 ms
    from typing import NoReturn

_VALUED = {"--policy": "policy_file", "--app": "app_name", "--log": "log_file"}
_FILES = ("policy_file", "log_file")        # click.Path(dir_okay=False) in cli_run
_COMPLETION = "_APPVIRT_COMPLETE"           # click's shell completion asks through it
# Set by the C client (bin/appvirt.c) when it has asked the warm server and is becoming this
# executable: not to be asked twice. Removed at once: the program never sees it.
_ASKED = "_APPVIRT_SERVER_ASKED"


def console() -> NoReturn:
    """The `appvirt` executable (and `python -m appvirt`)."""
    args = sys.argv[1:]
    params = plain_run(args)
    asked = os.environ.pop(_ASKED, None) is not None
    if params is not None and not asked:
        from .warm.client import run_warm
        status = run_warm(args)
        if status is not None:
            sys.stderr.flush()
            os._exit(status)
    status, ran = _command(args, params)
    if ran:
        from .homepath import home_dir
        from .warm.autostart import start_after_cold_run
        start_after_cold_run(home_dir(), asked)     # for the runs after this one
        _exit_at_once(status)
    sys.exit(status)


def main(argv: list[str] | None = None) -> int:
    """Run an `appvirt` command line (default: this process's); its exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    return _command(args, plain_run(args))[0]


def _command(args: list[str], params: dict[str, object] | None) -> tuple[int, bool]:
    """The exit status, and whether a plain run (params: plain_run's) went through to its
    end."""
    from .errors import ExitStatus
    if params is None:
        from .cli import main as cli_main
        return cli_main(args), False
    try:
        return int(import_quietly("appvirt.run").run_command(**params)), True
    except (EOFError, KeyboardInterrupt):
        import click            # as click reports them: a new line, then appvirt's word
        click.echo(file=sys.stderr)
        click.echo("appvirt: aborted", err=True)
        return ExitStatus.SIGNAL_BASE + 2, False
    except OSError as e:
        if e.errno != errno.EPIPE:
            return report_failure(e), False
        # Output piped into a reader that went away: silent, status 1, as click has it.
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, sys.stdout.fileno())
        os.dup2(quiet, sys.stderr.fileno())
        return ExitStatus.FAILURE, False
    except Exception as e:  # noqa: BLE001 - one line, not a traceback (see report_failure)
        return report_failure(e), False


def _exit_at_once(status: int) -> NoReturn:
    """Exit without the interpreter's teardown, which frees the run's objects one by one:
    milliseconds, all of them after the program has ended. Only after a run, which has closed
    what it opened (the store, the overlay and its lock, the log): buffered output is flushed
    and exit handlers run here; with another thread alive, or output that cannot be flushed,
    the usual exit (which waits for the thread, or reports the failure)."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(status)
    os._exit(status)


def plain_run(args: list[str]) -> dict[str, object] | None:
    """The parameters of `run` for a plain run command line (see above), else None."""
    if not args or args[0] != "run" or os.environ.get(_COMPLETION):
        return None
    params: dict[str, object] = {"policy_file": None, "app_name": None, "log_file": None,
                                 "stats": False}
    seen = set()
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=")
        if name in seen:
            return None
        seen.add(name)
        if arg == "--stats":
            params["stats"] = True
            i += 1
            continue
        key = _VALUED.get(name)
        if key is None:
            return None
        if not eq:
            if i + 1 == len(args):
                return None
            value = args[i + 1]
        i += 1 if eq else 2
        if key in _FILES and not _click_takes_file(value):
            return None
        params[key] = value
    if i == len(args):
        return None                 # no program: click's usage error
    params["command"] = tuple(args[i:])
    return params


def _click_takes_file(path: str) -> bool:
    """Whether click.Path(dir_okay=False) accepts path without a word."""
    try:
        st = os.stat(path)
    except OSError:
        return True                 # need not exist
    return not stat.S_ISDIR(st.st_mode) and os.access(path, os.R_OK)


def import_quietly(module: str) -> ModuleType:
    """Import a command's module without the cyclic garbage collector.

    An import makes tens of thousands of objects (functions, classes, records) that live until
    exit, and next to no garbage; the collector would walk them over and over while they are
    made, again in every later full collection, and at interpreter exit. So it pauses during
    the import, and gc.freeze() then sets those objects aside for good.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


def report_failure(e: Exception) -> int:
    """Say what went wrong in one line; the exit status. Called while handling e."""
    import click

    from .errors import AppvirtError, ExitStatus
    if isinstance(e, AppvirtError):
        click.echo(f"appvirt: {e.message}", err=True)
        return int(e.exit_status)
    if os.environ.get("APPVIRT_DEBUG"):
        raise e
    click.echo(f"appvirt: internal error: {type(e).__name__}: {e} "
               "(set APPVIRT_DEBUG=1 for a traceback)", err=True)
    return ExitStatus.INTERNAL
