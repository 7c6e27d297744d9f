"""The `appvirt` command line: parsing and error reporting only, no logic.

Subcommands are imported when used, so that `appvirt run` does not pay for the VM-exit
simulator's or the log viewer's imports at every start; a plain `appvirt run` command line
does not come here at all (entry.py).
"""

from __future__ import annotations

import os
import sys

import click

from . import __version__
from .entry import import_quietly, report_failure
from .errors import ExitStatus

# command name -> (module, attribute, one-line help)
COMMANDS = {
    "run": ("appvirt.cli_run", "run", "Run a program in the sandbox."),
    "log": ("appvirt.cli_log", "log_cmd", "Show an app's intercept log."),
    "syscalls": ("appvirt.cli_info", "syscalls_cmd", "List the intercepted system calls."),
    "policy": ("appvirt.cli_info", "policy_group", "Check a policy or show it with defaults."),
    "overlay": ("appvirt.overlay.cli", "overlay", "Inspect and manage an app's file overlay."),
    "reg": ("appvirt.store.cli", "reg", "Read and change an app's configuration store."),
    "vmexit": ("appvirt.vmx.cli", "vmexit", "Simulate the same operations as Intel VMX exits."),
    "server": ("appvirt.warm.cli", "server", "Start, stop or ask the warm-start server."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        cmd = getattr(import_quietly(spec[0]), spec[1])
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
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.OK
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        return report_failure(e)
    return int(rv or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
