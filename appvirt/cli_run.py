"""`appvirt run`: start a program in the sandbox."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING
from pathlib import Path

import click

from .errors import ExitStatus
from .handlers import TABLE
from .policy import load_policy
from .state import app_dir, ensure_app_dir
from .store import Store
from .virt.machinepolicy import PowerEvent

if TYPE_CHECKING:
    from .tracer.launcher import RunResult


def default_policy_path() -> Path:
    return Path(__file__).parent / "policy" / "default.yaml"


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
    from .tracer.launcher import run_sandboxed

    policy = load_policy(policy_file or default_policy_path(), remember_valid=True)
    app = ensure_app_dir(app_dir(app_name or policy.app))
    log_path = log_file or policy.log.file or str(app.default_log)
    # The policy's registry section is the store's base layer, remembered for `appvirt reg`;
    # the store also keeps the virtual machine state (the clock a program set, ...).
    restarts = 0
    with Store.open(app, base=policy.registry.base) as store:
        while True:
            result = run_sandboxed(list(command), policy, TABLE, log_path, app, store=store)
            _report(result, stats)
            if result.power is not PowerEvent.RESTART or result.internal_error:
                break
            if restarts == policy.reboot.max_restarts:
                click.echo(f"appvirt: the program restarted its machine again; the policy's "
                           f"limit of {restarts} restarts is reached: powered off", err=True)
                break
            restarts += 1
            click.echo(f"appvirt: the program restarted its machine; starting it again "
                       f"({restarts}/{policy.reboot.max_restarts})", err=True)
    sys.stdout.flush()
    if result.power is not None:
        return ExitStatus.POWERED_OFF
    return result.exit_code if result.exit_code is not None else ExitStatus.INTERNAL


def _report(result: RunResult, stats: bool) -> None:
    if result.log_problem:
        click.echo(f"appvirt: warning: {result.log_problem}; the log is incomplete", err=True)
    if result.internal_error:
        click.echo(f"appvirt: warning: calls were refused after an internal error "
                   f"({result.internal_error})", err=True)
    if stats:
        s = result.stats
        top = ", ".join(f"{n} {c}" for n, c in s.by_syscall.most_common(8))
        click.echo(f"appvirt: {s.total} ptrace stops: {s.seccomp_stops} seccomp, "
                   f"{s.exit_stops} syscall-exit, {s.other_stops} other "
                   f"({s.injections} slot mappings, {s.compiled} answered by the compiled "
                   f"loop); intercepted: {top or 'none'}", err=True)
        if s.compiled_by_syscall:
            done = ", ".join(f"{n} {c}" for n, c in s.compiled_by_syscall.most_common())
            click.echo(f"appvirt: answered by the compiled loop: {done}", err=True)
