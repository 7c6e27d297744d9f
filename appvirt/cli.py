"""The `appvirt` command line: parsing and error reporting only, no logic.

Subcommands are imported when used, so that `appvirt run` does not pay for the VM-exit
simulator's or the log viewer's imports at every start.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from types import ModuleType

import click

from . import __version__
from .errors import AppvirtError, ExitStatus

# command name -> (module, attribute, one-line help)
COMMANDS = {
    "run": ("appvirt.cli_run", "run", "Run a program in the sandbox."),
    "log": ("appvirt.cli_log", "log_cmd", "Show an app's intercept log."),
    "syscalls": ("appvirt.cli_info", "syscalls_cmd", "List the intercepted system calls."),
    "policy": ("appvirt.cli_info", "policy_group", "Check a policy or show it with defaults."),
    "overlay": ("appvirt.overlay.cli", "overlay", "Inspect and manage an app's file overlay."),
    "reg": ("appvirt.store.cli", "reg", "Read and change an app's configuration store."),
    "vmexit": ("appvirt.vmx.cli", "vmexit", "Simulate the same operations as Intel VMX exits."),
}


def _import_quietly(module: str) -> ModuleType:
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


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        cmd = getattr(_import_quietly(spec[0]), spec[1])
        cmd.name = name
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, spec[2]) for name, spec in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="appvirt")
def cli() -> None:
    """Run programs in a virtualized sandbox and inspect what they did."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every appvirt failure into one line and a status."""
    try:
        rv = cli.main(args=argv, prog_name="appvirt", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("appvirt: aborted", err=True)
        return ExitStatus.SIGNAL_BASE + 2
    except click.ClickException as e:
        e.show()
        return ExitStatus.USAGE
    except AppvirtError as e:
        click.echo(f"appvirt: {e.message}", err=True)
        return int(e.exit_status)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.OK
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if os.environ.get("APPVIRT_DEBUG"):
            raise
        click.echo(f"appvirt: internal error: {type(e).__name__}: {e} "
                   "(set APPVIRT_DEBUG=1 for a traceback)", err=True)
        return ExitStatus.INTERNAL
    return int(rv or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
