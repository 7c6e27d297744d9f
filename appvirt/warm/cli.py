"""`appvirt server start|stop|status`: the warm-start server of an appvirt home."""

from __future__ import annotations

import click

from ..errors import ExitStatus
from ..homepath import home_dir
from . import server as warm


@click.group("server")
def server() -> None:
    """Keep a run's imports warm: `appvirt run` lines start in a fork of the server (its spare
    tracer, forked ahead, when ready) instead of a new interpreter. The first such line starts
    one itself (idle 600 s) unless APPVIRT_SERVER is `manual` or `off` (see README, "Warm
    starts")."""


@server.command("start")
@click.option("--idle", type=click.FloatRange(min=0), default=1800.0, show_default=True,
              help="Exit after this many seconds without a request (0: never).")
@click.option("--foreground", is_flag=True,
              help="Serve in this process (for a service manager) instead of in the background.")
def start(idle: float, foreground: bool) -> None:
    """Start the server of this appvirt home (in the background, unless --foreground)."""
    if foreground:
        warm.serve_here(home_dir(), idle)
        return
    pid = warm.start(home_dir(), idle)
    click.echo(f"appvirt: server started (pid {pid})")


@server.command("stop")
def stop() -> int:
    """Stop the server (runs in progress finish)."""
    if warm.ask(home_dir(), ("stop",)) is None:
        click.echo("appvirt: no server runs", err=True)
        return ExitStatus.FAILURE
    click.echo("appvirt: server stopping")
    return ExitStatus.OK


@server.command("status")
def status() -> int:
    """Say whether a server runs, and what it has served and refused (exit 1: none runs)."""
    answer = warm.ask(home_dir(), ("status",))
    if answer is None:
        click.echo("no server runs")
        return ExitStatus.FAILURE
    _, served, refused, last, running, pid, *spare = answer     # (a server before spares:
    by_spare, state, spare_pid = spare if len(spare) == 3 else (None, "", 0)    # no spare)
    click.echo(f"server pid {pid}: {served} runs served"
               + (f" ({by_spare} by a spare)" if by_spare is not None else "")
               + f", {running} running, {refused} refused"
               + (f" (last: {last})" if last else "")
               + (f"; spare tracer {SPARE_STATES[state]} (pid {spare_pid})" if spare_pid
                  else "; no spare tracer" if state else ""))
    return ExitStatus.OK


SPARE_STATES = {"ready": "ready", "copying": "copying its pages"}
