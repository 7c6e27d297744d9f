"""The signals `appvirt run` passes on to what it runs (its program, or a warm run's tracer):
what a user sends appvirt is meant for the program. Builtin modules only: the warm-start
client imports this before anything else."""

import _signal
import os

FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
             _signal.SIGUSR1, _signal.SIGUSR2)


def forward_signals(pid: int) -> dict:
    """Send FORWARDED signals on to pid from now on; the handlers they had, to restore."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except OSError:             # gone: its end is on its way
            pass

    return {sig: _signal.signal(sig, forward) for sig in FORWARDED}
