"""The `appvirt` command line: parsing and error reporting only, no logic."""

from __future__ import annotations

import os
import sys

import click

from . import __version__
from .errors import AppvirtError, ExitStatus


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="appvirt")
def cli() -> None:
    """Run programs in a virtualized sandbox and inspect what they did."""


from .cli_info import policy_group, syscalls_cmd  # noqa: E402
from .cli_log import log_cmd  # noqa: E402
from .cli_run import run  # noqa: E402
from .store.cli import reg  # noqa: E402
from .vmx.cli import vmexit  # noqa: E402

for _command in (run, log_cmd, syscalls_cmd, policy_group, reg, vmexit):
    cli.add_command(_command)


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
