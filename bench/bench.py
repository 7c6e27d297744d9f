#!/usr/bin/env python3
"""Benchmark appvirt against native runs, strace and PRoot on the same workloads.

Each runner runs each workload the same number of times, alternating runners within each
repetition; every runner's output must be identical to the native one. Prints a markdown table
(median wall seconds with min-max, ratio to native, ratio to proot) and saves it with the date
and a description of the machine in bench/results/.

    python bench/bench.py                      # all workloads, 5 repetitions
    python bench/bench.py -w find -r 3         # one workload

Not part of the test suite: timings belong here, never in assertions.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Workload:
    name: str
    argv: tuple[str, ...]
    note: str


def _build(src: str, out: Path) -> str:
    exe = out / Path(src).stem
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(REPO / "demo_apps" / src)],
                   check=True)
    return str(exe)


PY_MODULES = ("os sys re json csv sqlite3 decimal fractions statistics datetime calendar "
              "collections itertools functools pathlib tempfile shutil subprocess threading "
              "socket email http.client urllib.request xml.etree.ElementTree hashlib hmac "
              "base64 zipfile tarfile argparse logging").split()
GIT_ENV = ("GIT_AUTHOR_DATE=2020-01-01T00:00:00Z GIT_COMMITTER_DATE=2020-01-01T00:00:00Z "
           "GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b "
           "GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent")


def _tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"d{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes((f"{i} " * (size // 6 + 1)).encode()[:size])


def workloads(build: Path) -> dict[str, Workload]:
    loop = _build("syscall_loop.c", build)
    tar_src = build / "tar-src"
    _tree(tar_src, 2000, 10_000)                         # 20 MB
    tarball = build / "tree.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(tar_src), "."], check=True)
    git_src = build / "git-src"
    _tree(git_src, 1000, 200)
    return {
        "find": Workload("find", ("find", "/usr/share", "-type", "f"),
                         "`find /usr/share -type f`"),
        "syscalls": Workload("syscalls", (loop, "1000000"),
                             "1,000,000 getppid calls (never intercepted)"),
        "python": Workload("python", ("python3", "-c", "import " + ", ".join(PY_MODULES)),
                           "Python start-up importing 30 standard modules"),
        "tar": Workload("tar", ("sh", "-c", f"d=$(mktemp -d) && tar -xf {tarball} -C $d && "
                                "find $d -type f | wc -l && rm -rf $d"),
                        "`tar -x` of a 20 MB tree (2,000 files)"),
        "git": Workload("git", ("sh", "-c", f"export {GIT_ENV}; d=$(mktemp -d) && "
                                f"git --git-dir=$d init -q && git --git-dir=$d --work-tree="
                                f"{git_src} add -A && git --git-dir=$d --work-tree={git_src} "
                                "commit -qm x && git --git-dir=$d rev-list --count HEAD && "
                                "rm -rf $d"),
                        "`git add` + `commit` of 1,000 files"),
    }


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("strace", "strace"), ("proot", "proot"))
               if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True,
                       stdout=subprocess.DEVNULL)


def physical_limit(home: Path, policy: Path) -> list[str]:
    """Build the C tracer that stops where appvirt stops and does nothing (limit_tracer.c)."""
    exe, filt = home / "limit_tracer", home / "limit_filter.bin"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(REPO / "bench" / "limit_tracer.c")],
                   check=True)
    subprocess.run([sys.executable, str(REPO / "bench" / "limit_filter.py"), str(policy),
                    str(filt)], check=True)
    return [str(exe), str(filt)]


def runners(home: Path) -> dict[str, list[str]]:
    policy = REPO / "policies" / "default.yaml"
    appvirt = [sys.executable, "-m", "appvirt", "run", "--policy", str(policy), "--"]
    return {
        "native": [],
        "seccomp floor": [sys.executable, str(REPO / "bench" / "seccomp_floor.py")],
        "physical limit": physical_limit(home, policy),
        "appvirt": appvirt,
        "strace -f": ["strace", "-f", "-o", "/dev/null"],
        "proot": ["proot"],
    }


def run_once(prefix: list[str], w: Workload, env: dict[str, str]) -> tuple[float, bytes, str]:
    if "appvirt" in prefix:
        # Every run starts from a pristine overlay, as a first run of the app would.
        shutil.rmtree(Path(env["APPVIRT_HOME"]) / "apps", ignore_errors=True)
    t0 = time.perf_counter()
    p = subprocess.run(prefix + list(w.argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, cwd="/")
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{prefix[:1] or ['native']} {w.name} failed: {p.stderr[-500:]!r}")
    return dt, p.stdout, p.stderr.decode(errors="replace")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workloads", default="find,syscalls,python,tar,git")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--runners",
                    default="native,seccomp floor,physical limit,appvirt,strace -f,proot")
    args = ap.parse_args()
    ensure_tools()
    # appvirt starts as an installed copy would: from compiled bytecode, even where the
    # environment says not to write any (PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appvirt")],
                   check=True, env={k: v for k, v in os.environ.items()
                                    if k != "PYTHONDONTWRITEBYTECODE"})
    with tempfile.TemporaryDirectory(prefix="appvirt-bench-") as tmp:
        tmpd = Path(tmp)
        env = {**os.environ, "APPVIRT_HOME": str(tmpd / "home")}
        all_w = workloads(tmpd)
        all_r = runners(tmpd)
        chosen_w = [all_w[n] for n in args.workloads.split(",")]
        chosen_r = {n: all_r[n] for n in args.runners.split(",")}
        rows = []
        for w in chosen_w:
            times: dict[str, list[float]] = {n: [] for n in chosen_r}
            loops: dict[str, list[float]] = {n: [] for n in chosen_r}
            ref: bytes | None = None
            for rep in range(args.reps):
                for name, prefix in chosen_r.items():
                    dt, out, err = run_once(prefix, w, env)
                    if ref is None:
                        ref = out
                    elif out != ref:
                        raise SystemExit(f"{name} output differs from native on {w.name}")
                    times[name].append(dt)
                    for line in err.splitlines():
                        if line.startswith("loop_ns "):
                            loops[name].append(int(line.split()[1]) / 1e9)
                print(f"{w.name}: repetition {rep + 1}/{args.reps} done", file=sys.stderr)
            rows.append((w, times, loops))
    native_key, proot_key = "native", "proot"
    lines = [f"# appvirt benchmark, {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}", "",
             f"Median wall seconds of {args.reps} alternating runs (min-max); every runner's "
             "output identical to native.", "",
             "| workload | runner | seconds | × native | × physical limit | × proot |",
             "|---|---|---|---|---|---|"]
    for w, times, loops in rows:
        nat, lim, pr = (statistics.median(times[k]) if k in times else None
                        for k in (native_key, "physical limit", proot_key))
        for name, xs in times.items():
            m = statistics.median(xs)
            ratios = " | ".join(f"{m / ref:.2f}" if ref else "" for ref in (nat, lim, pr))
            lines.append(f"| {w.note} | {name} | {fmt(xs)} | {ratios} |")
    for w, times, loops in rows:        # loop timings after the main table, not inside it
        if any(loops.values()):
            lines += ["", f"Time of the loop itself in `{w.name}` (the program's own clock, "
                      "without start-up):", "", "| runner | seconds | × native |", "|---|---|---|"]
            nat_loop = statistics.median(loops[native_key])
            for name, xs in loops.items():
                if xs:
                    lines.append(f"| {name} | {fmt(xs)} | {statistics.median(xs) / nat_loop:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
    out.write_text(text)
    print(f"saved {out.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
