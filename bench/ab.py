#!/usr/bin/env python3
"""Two versions of appvirt on the same workloads, warm, taking turns run by run (paired A/B).

A change worth a few percent is below what two benchmark runs can tell apart on a machine
whose speed moves from one minute to the next (this VM's by up to 1.5x). Here each version
has its own warm-start server, started as bench.py starts one, and the two take turns on
each workload (A then B, then B then A, ...) a short gap apart, so both see the same
machine; the result is the median of the pairs' own ratios (B / A) with their middle half.
Every run's output must be native's.

    python bench/ab.py HEAD~1                  # the commit before, against the working tree
    python bench/ab.py main HEAD -w tar,procs -n 31

A version is a git revision (its committed files) or "." (the working tree, uncommitted and
untracked files included); each is copied to the benchmark's tmpfs, built there and started
as an installed copy would start (bench.installed_appvirt). Workloads are bench.py's. Not
part of the test suite: run it by hand.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/ is not a package)

GAP_SECONDS = 0.15       # between two runs: a warm server's spare is ready again by then


def export(rev: str, dest: Path) -> None:
    """The files of revision rev ("." the working tree as it is) under dest."""
    dest.mkdir(parents=True)
    if rev == ".":
        names = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                               cwd=bench.REPO, check=True, capture_output=True).stdout
        files = [n for n in names.decode().split("\0") if n and (bench.REPO / n).is_file()]
        with open(dest / ".tar", "wb") as out:
            subprocess.run(["tar", "-cf", "-", "--null", "-T", "-"], cwd=bench.REPO,
                           check=True, input="\0".join(files).encode(), stdout=out)
    else:
        with open(dest / ".tar", "wb") as out:
            subprocess.run(["git", "archive", "--format=tar", rev], cwd=bench.REPO,
                           check=True, stdout=out)
    subprocess.run(["tar", "-xf", ".tar"], cwd=dest, check=True)
    (dest / ".tar").unlink()


def build(src: Path) -> None:
    """The compiled fast path in place, and bytecode, as an installed copy has them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=src,
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "appvirt")],
                   check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="version A: a git revision, or . for the working tree")
    ap.add_argument("b", nargs="?", default=".", help="version B (default: the working tree)")
    ap.add_argument("-w", "--workloads", default="tar,procs",
                    help="bench.py's workload names, comma-separated")
    ap.add_argument("-n", "--pairs", type=int, default=21)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error("--pairs: at least one")
    for rev in {args.a, args.b} - {"."}:
        if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          cwd=bench.REPO, capture_output=True).returncode != 0:
            ap.error(f"{rev}: not a revision of this repository")
    unknown = set(args.workloads.split(",")) - set(bench.WORKLOAD_NAMES)
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))} (bench.py's: "
                 f"{', '.join(bench.WORKLOAD_NAMES)})")
    with tempfile.TemporaryDirectory(prefix="appvirt-ab-") as tmp:
        tmpd = Path(tmp)
        fs = bench.mount_tmpfs(tmpd)
        try:
            (tmpd / "tmp").mkdir()
            env = {**os.environ, "TMPDIR": str(tmpd / "tmp"),
                   "APPVIRT_HOME": str(tmpd / "home")}     # (each side has its own)
            sides: dict[str, bench.Runner] = {}
            for label, rev in (("A", args.a), ("B", args.b)):
                src = tmpd / f"src-{label}"
                export(rev, src)
                try:
                    build(src)
                except subprocess.CalledProcessError:
                    raise SystemExit(f"ab: {rev} does not build (setup.py build_ext, with "
                                     f"{sys.executable})") from None
                script = bench.installed_appvirt(tmpd / f"install-{label}", src)
                sides[label] = bench.Runner(
                    label, bench.appvirt(script, src / "policies" / "default.yaml"),
                    env={**bench.DEFAULT, "APPVIRT_HOME": str(tmpd / f"home-{label}")},
                    tree_cpu=False, warm=True)
            rows = []
            with bench.warm_servers(sides, env):
                all_w = bench.workloads(tmpd)
                for name in args.workloads.split(","):
                    rows.append((name, *measure(all_w[name], sides, args.pairs, env,
                                                args.timeout)))
        finally:
            if fs == "tmpfs":
                subprocess.run(["umount", "-l", str(tmpd)], check=False)
    print(f"A = {args.a}, B = {args.b}; {args.pairs} pairs, warm, the default policy; "
          f"{bench.machine()}; {bench.filesystem_line(fs)}\n")
    print("| workload | A median | B median | B / A, median of the pairs (middle half) |")
    print("|---|---|---|---|")
    for name, a, b, (median, q1, q3) in rows:
        print(f"| {name} | {statistics.median(a) * 1e3:.1f} ms | "
              f"{statistics.median(b) * 1e3:.1f} ms | {median:.3f} ({q1:.3f}-{q3:.3f}) |")
    return 0


def measure(w: bench.Workload, sides: dict[str, bench.Runner], pairs: int,
            env: dict[str, str], timeout: float
            ) -> tuple[list[float], list[float], tuple[float, float, float]]:
    """Each side's seconds on w, pairs times, alternating which goes first."""
    native = bench.run_once(list(w.argv), env, timeout).stdout
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(pairs):
        for label in ("A", "B") if i % 2 == 0 else ("B", "A"):
            r = sides[label]
            try:
                run = bench.run_once([*r.prefix, *w.argv], {**env, **r.env}, timeout)
            except bench.NotRun as e:
                raise SystemExit(f"ab: {label} on {w.name}: {e}") from None
            if run.stdout != native:
                raise SystemExit(f"ab: {label} on {w.name}: its output is not native's")
            seconds[label].append(run.seconds)
            time.sleep(GAP_SECONDS)
        print(f"{w.name}: pair {i + 1}/{pairs}", file=sys.stderr)
    return seconds["A"], seconds["B"], bench.paired_ratios(seconds["A"], seconds["B"])


if __name__ == "__main__":
    sys.exit(main())
