"""`appvirt run` as a click command: its options and help (the work is run.run_command)."""

from __future__ import annotations

import click

from .run import run_command


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False),
              help="Policy file (default: the shipped default policy).")
@click.option("--app", "app_name", help="App name: its state directory (default: the policy's).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False),
              help="Intercept log to append to (default: the app's logs/intercept.jsonl).")
@click.option("--stats", is_flag=True, help="Print ptrace stop counts on stderr at the end.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policy_file: str | None, app_name: str | None, log_file: str | None, stats: bool,
        command: tuple[str, ...]) -> int:
    """Run COMMAND in the sandbox and exit with its status (128+N if killed by signal N)."""
    return run_command(policy_file, app_name, log_file, stats, command)
