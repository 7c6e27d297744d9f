"""What a warm start would save: `appvirt run` from a new interpreter against a fork of one
that has already imported everything a run uses.

appvirt's fixed start (0.07-0.1 s a run) is most of its excess on short workloads, and most
of that start is importing Python modules. A server that keeps them imported and forks a
tracer for each run (as Mercurial's chg does for hg) would pay only the fork and the run's own
setup; its client would pay an interpreter's start (or nothing like it, written in C). This
measured the parts of that trade on this machine, alternating, before the design that followed
(`appvirt server`, appvirt/warm/):

  cold     `python -m appvirt run -- PROGRAM`, as every run starts today;
  warm     a fork of this process, which imported the run path, running the same command line;
  client   `python -S -c "import _socket, array"`: the start of a minimal Python client (one
           that hands its fds over: socket.py itself costs 6 ms more, its enums);
  native   PROGRAM itself.

Usage: python bench/warm_start.py [-r REPS] [-o results.md] -- PROGRAM [ARGS...]
(default PROGRAM: true). Run it by hand, never in CI.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _warm_run(argv: list[str]) -> None:
    from appvirt.entry import main
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            status = main(argv)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"warm run failed: {os.waitstatus_to_exitcode(status)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-r", "--reps", type=int, default=21)
    ap.add_argument("-o", "--output", type=Path, help="also write the table here")
    ap.add_argument("program", nargs="*", default=["true"])
    args = ap.parse_args()
    run_argv = ["run", "--", *args.program]
    # Everything a run imports, in this process, before any fork (handlers included: a run
    # imports each at its calls' first stop).
    for module in ("appvirt.run", "appvirt.handlers.execs", "appvirt.handlers.filemodes",
                   "appvirt.handlers.paths"):
        importlib.import_module(module)
    _warm_run(run_argv)                     # once before timing: caches, the app's state
    cold_cmd = [sys.executable, "-m", "appvirt", *run_argv]
    client_cmd = [sys.executable, "-S", "-c", "import _socket, array"]
    modes = {
        "cold": lambda: subprocess.run(cold_cmd, stdout=subprocess.DEVNULL, check=True),
        "warm": lambda: _warm_run(run_argv),
        "client": lambda: subprocess.run(client_cmd, check=True),
        "native": lambda: subprocess.run(args.program, stdout=subprocess.DEVNULL, check=True),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.reps):
        for m, fn in modes.items():
            times[m].append(_timed(fn))
    cold = statistics.median(times["cold"])
    lines = [f"# appvirt's start, cold and warm, {datetime.date.today()}", "",
             f"Machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
             f"{platform.python_version()}. `bench/warm_start.py -r {args.reps} -- "
             f"{' '.join(args.program)}`: median wall ms of {args.reps} alternating runs "
             "(min-max).", "",
             "| mode | ms | × cold |", "|---|---|---|"]
    for m, v in times.items():
        med = statistics.median(v)
        lines.append(f"| {m} | {med * 1000:.1f} ({min(v) * 1000:.1f}-{max(v) * 1000:.1f}) | "
                     f"{med / cold:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
