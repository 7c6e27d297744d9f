"""`appvirt run`: start a program in the sandbox (without click: see entry.py).

Everything a run needs is imported with this module, so that entry.import_quietly makes it
all with the garbage collector paused, and freezes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import ExitStatus
from .handlers import TABLE
from .policy import load_policy
from .state import app_dir, ensure_app_dir
from .store import Store
from .tracer.launcher import RunResult, run_sandboxed
from .virt.machinepolicy import PowerEvent


def default_policy_path() -> Path:
    return Path(__file__).parent / "policy" / "default.yaml"


def run_command(policy_file: str | None, app_name: str | None, log_file: str | None,
                stats: bool, command: tuple[str, ...]) -> int:
    """Run COMMAND in the sandbox; its exit status (128+N if killed by signal N)."""
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
                _warn(f"appvirt: the program restarted its machine again; the policy's "
                      f"limit of {restarts} restarts is reached: powered off")
                break
            restarts += 1
            _warn(f"appvirt: the program restarted its machine; starting it again "
                  f"({restarts}/{policy.reboot.max_restarts})")
    sys.stdout.flush()
    if result.power is not None:
        return ExitStatus.POWERED_OFF
    return result.exit_code if result.exit_code is not None else ExitStatus.INTERNAL


def _warn(message: str) -> None:
    import click
    click.echo(message, err=True)


def _count_line(message: str) -> None:
    """A line of --stats: what click.echo(err=True) writes for plain ASCII text, without
    loading click after every benchmarked run."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _report(result: RunResult, stats: bool) -> None:
    if result.log_problem:
        _warn(f"appvirt: warning: {result.log_problem}; the log is incomplete")
    if result.killed:
        _warn(f"appvirt: warning: a process was killed at its exec, which appvirt could not "
              f"keep in the sandbox ({result.killed})")
    if result.internal_error:
        _warn(f"appvirt: warning: calls were refused after an internal error "
              f"({result.internal_error})")
    if stats:
        s = result.stats
        top = ", ".join(f"{n} {c}" for n, c in s.by_syscall.most_common(8))
        _count_line(f"appvirt: {s.total} ptrace stops: {s.seccomp_stops} seccomp, "
                    f"{s.exit_stops} syscall-exit, {s.other_stops} other "
                    f"({s.injections} slot mappings, {s.compiled} answered by the compiled "
                    f"loop); intercepted: {top or 'none'}")
        done = [f"{n} {c}" for n, c in s.compiled_by_syscall.most_common()]
        if s.compiled_signals:
            done.append(f"signal deliveries {s.compiled_signals}")
        if s.compiled_stubs:
            done.append(f"slot stubs' calls {s.compiled_stubs}")
        if s.trampolines:
            done.append(f"opens with no exit stop (trampolines) {s.trampolines}")
        if s.fd_paths_known:
            done.append(f"fd paths known without a readlink {s.fd_paths_known}")
        if s.notified or s.handed_over:
            done.append(f"calls notified by seccomp (no ptrace stop) {s.notified}, "
                        f"handed to the ptrace handlers {s.handed_over}")
        if done:
            _count_line(f"appvirt: answered by the compiled loop: {', '.join(done)}")
        if s.dirs_compiled or s.dirs_python:
            _count_line(f"appvirt: directories decided: {s.dirs_compiled} by the compiled "
                        f"loop, {s.dirs_python} by Python")
