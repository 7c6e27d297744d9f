#!/usr/bin/env python3
"""Benchmark appvirt against native runs, strace, PRoot and python-ptrace on the same workloads.

Each runner runs each workload the same number of times, alternating runners within each
repetition; every runner's output must be identical to the first runner's (native). A runner
that fails a workload, times out or prints something else gets "n/a (reason)" in that cell
instead of ending the benchmark. Writes markdown tables (median wall seconds with min-max and
ratios; ptrace stops, cost per stop and CPU use; the tracers' memory with 200 live tracees)
with the date and a description of the machine to bench/results/.

    python bench/bench.py                      # all workloads and the memory measurement
    python bench/bench.py -w find -r 3         # one workload, and the memory measurement
    python bench/bench.py --memory             # the memory measurement only
    python bench/bench.py --no-memory -w make  # one workload only
    python bench/bench.py --on-disk            # files on the disk, not on a tmpfs

The workloads' files, their temporary directories ($TMPDIR) and appvirt's state (its overlay)
are on a tmpfs mounted for the run (as root; else on the disk, and the report says so): on a
disk every runner's time also depends on what earlier runs left there (see FILESYSTEM_NOTE).

Not part of the test suite: timings belong here, never in assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LIVE_TRACEES = 200            # processes kept alive at once for the memory measurement
MEMORY_TARGET_MB = 60         # the bound for appvirt's tracer with that many tracees
MIN_STOPS_FOR_COST = 1000     # below this, a cost per stop is timing noise, not stops


@dataclass(frozen=True)
class Workload:
    name: str
    argv: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Runner:
    name: str
    prefix: tuple[str, ...]
    skip: dict[str, str] = field(default_factory=dict)    # workload name -> why it is not run
    is_tracer: bool = True     # its first process is the tracer (for the memory measurement)
    env: dict[str, str] = field(default_factory=dict)     # added to the benchmark's own
    tree_cpu: bool = True      # the tracer is in its process tree (not a server's child)
    warm: bool = False         # its tracer is a child of the warm-start server
    terminal: bool = False     # run with a controlling terminal (its standard fds as others'):
                               # prefix starts with on_terminal.c and TTY_FD


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float         # user + system of the whole process tree (wait4's rusage)
    stdout: bytes
    stderr: str


@dataclass
class Cell:
    """One runner on one workload over all repetitions."""
    seconds: list[float] = field(default_factory=list)
    cores: list[float] = field(default_factory=list)        # CPU seconds / wall seconds
    stops: list[int] = field(default_factory=list)
    compiled: list[int] = field(default_factory=list)      # of them, answered in C
    notified: list[int] = field(default_factory=list)      # calls notified, not stops
    loop_seconds: list[float] = field(default_factory=list)
    not_run: str | None = None                               # why there are no timings

    def add(self, run: Run, tree_cpu: bool = True) -> None:
        self.seconds.append(run.seconds)
        if tree_cpu:
            self.cores.append(run.cpu_seconds / run.seconds)
        stops = ptrace_stops(run.stderr)
        if stops is not None:
            self.stops.append(stops)
        m = APPVIRT_COMPILED.search(run.stderr)
        if m:
            self.compiled.append(int(m.group(1)))
        m = APPVIRT_NOTIFIED.search(run.stderr) or LIMIT_NOTIFIED.search(run.stderr)
        if m:
            self.notified.append(int(m.group(1)))
        for line in run.stderr.splitlines():
            if line.startswith("loop_ns "):
                self.loop_seconds.append(int(line.split()[1]) / 1e9)


class NotRun(Exception):
    """A runner could not run a workload; the message says why, for the table."""


# -- workloads ------------------------------------------------------------------------------

def _cc(source: Path, out: Path) -> str:
    exe = out / source.stem
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(source)], check=True)
    return str(exe)


PY_MODULES = ("os sys re json csv sqlite3 decimal fractions statistics datetime calendar "
              "collections itertools functools pathlib tempfile shutil subprocess threading "
              "socket email http.client urllib.request xml.etree.ElementTree hashlib hmac "
              "base64 zipfile tarfile argparse logging").split()
GIT_ENV = ("GIT_AUTHOR_DATE=2020-01-01T00:00:00Z GIT_COMMITTER_DATE=2020-01-01T00:00:00Z "
           "GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b "
           "GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent")
C_UNITS, C_FUNCTIONS = 20, 20       # about 1.5 s of `make -j2` on the reference machine


def _tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"d{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes((f"{i} " * (size // 6 + 1)).encode()[:size])


def _c_function(unit: int, n: int) -> str:
    """A function with a loop and a switch: enough for the optimiser to work on."""
    return f"""
static unsigned long u{unit}_f{n}(unsigned long x)
{{
    unsigned long acc = {unit * 1000 + n}u;
    for (int i = 0; i < {16 + n % 7}; i++) {{
        switch ((x + i) % 5) {{
        case 0: acc = acc * 31 + (x >> (i % 13)); break;
        case 1: acc ^= x * {2 * n + 3}u + i; break;
        case 2: acc += (acc << 7) ^ (x + {unit}u); break;
        case 3: acc = (acc >> 3) | (x << 11); break;
        default: acc -= x / (i + 1); break;
        }}
        x = x * 6364136223846793005u + 1442695040888963407u;
    }}
    return acc;
}}
"""


def _c_project(root: Path) -> None:
    """C_UNITS source files, a main.c calling them all and a Makefile linking `prog`."""
    root.mkdir()
    units = [f"unit{u:02d}" for u in range(C_UNITS)]
    for u, unit in enumerate(units):
        body = "".join(_c_function(u, n) for n in range(C_FUNCTIONS))
        calls = "".join(f"    s = s * 3 + u{u}_f{n}(s + {n}u);\n" for n in range(C_FUNCTIONS))
        (root / f"{unit}.c").write_text(f'#include "units.h"\n{body}\nunsigned long {unit}'
                                        f"(unsigned long s)\n{{\n{calls}    return s;\n}}\n")
    (root / "units.h").write_text("".join(f"unsigned long {u}(unsigned long s);\n"
                                          for u in units))
    calls = "".join(f"    s = {u}(s);\n" for u in units)
    (root / "main.c").write_text(f'#include <stdio.h>\n#include "units.h"\n\nint main(void)\n'
                                 f'{{\n    unsigned long s = 1;\n{calls}'
                                 f'    printf("%016lx\\n", s);\n    return 0;\n}}\n')
    objs = " ".join(f"{u}.o" for u in units + ["main"])
    (root / "Makefile").write_text(f"CFLAGS = -O2\nOBJS = {objs}\n\nprog: $(OBJS)\n"
                                   "\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c units.h\n"
                                   "\t$(CC) $(CFLAGS) -c $<\n")


# The workloads' names, in workloads()'s order: known before any is built (bench/ab.py).
WORKLOAD_NAMES = ("true", "find", "syscalls", "python", "tar", "tarhere", "git", "make",
                  "compute", "threads", "procs")


def workloads(build: Path) -> dict[str, Workload]:
    loop = _cc(REPO / "demo_apps" / "syscall_loop.c", build)
    compute = _cc(BENCH / "compute.c", build)
    threads_io = _cc(BENCH / "threads_io.c", build)
    tar_src = build / "tar-src"
    _tree(tar_src, 2000, 10_000)                         # 20 MB
    tarball = build / "tree.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(tar_src), "."], check=True)
    here = build / "here"
    here.mkdir()
    git_src = build / "git-src"
    _tree(git_src, 1000, 200)
    c_src = build / "c-project"
    _c_project(c_src)
    made = {
        "true": Workload("true", ("true",), "`true`: starting and ending alone"),
        "find": Workload("find", ("find", "/usr/share", "-type", "f"),
                         "`find /usr/share -type f`"),
        "syscalls": Workload("syscalls", (loop, "1000000"),
                             "1,000,000 getppid calls (never intercepted)"),
        # The interpreter itself: a version manager's `python3` on PATH may be a shim (pyenv's
        # runs bash and a few programs before Python), which is not what this measures.
        "python": Workload("python", (os.path.realpath(sys.executable), "-c",
                                      "import " + ", ".join(PY_MODULES)),
                           "Python start-up importing 30 standard modules"),
        "tar": Workload("tar", ("sh", "-c", f"d=$(mktemp -d) && tar -xf {tarball} -C $d && "
                                "find $d -type f | wc -l && rm -rf $d"),
                        "`tar -x` of a 20 MB tree (2,000 files)"),
        # The same into the directory the program works in, which stays: the host's, so
        # appvirt shows it merged from its overlay and the host once a run has written there
        # (a user's project directory), where the temporary directory above is its own.
        "tarhere": Workload("tarhere", ("sh", "-c", f"cd {here} && tar -xf {tarball} && "
                                        "find . -type f | wc -l && rm -rf ./d*"),
                            "`tar -x` of the same into its working directory"),
        "git": Workload("git", ("sh", "-c", f"export {GIT_ENV}; d=$(mktemp -d) && "
                                f"git --git-dir=$d init -q && git --git-dir=$d --work-tree="
                                f"{git_src} add -A && git --git-dir=$d --work-tree={git_src} "
                                "commit -qm x && git --git-dir=$d rev-list --count HEAD && "
                                "rm -rf $d"),
                        "`git add` + `commit` of 1,000 files"),
        # A fresh copy each run: every run compiles everything.
        "make": Workload("make", ("sh", "-c", f"d=$(mktemp -d) && cp -R {c_src}/. $d && "
                                  "make -s -j2 --no-print-directory -C $d && $d/prog && "
                                  "ls $d | grep -c '[.]o$' && rm -rf $d"),
                         f"`make -j2` of a {C_UNITS}-file C project"),
        "compute": Workload("compute", (compute, "600"),
                            "CPU-bound C loop (under 100 system calls)"),
        "threads": Workload("threads", (threads_io, "1000"),
                            "4 threads writing, reading back and removing 1,000 files each"),
        "procs": Workload("procs", ("sh", "-c", "i=0; while [ $i -lt 200 ]; do "
                                    "i=$(expr $i + 1); done; echo $i"),
                          "shell loop starting 200 `expr` processes"),
    }
    assert tuple(made) == WORKLOAD_NAMES
    return made


# -- runners --------------------------------------------------------------------------------

def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("strace", "strace"), ("proot", "proot"))
               if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True,
                       stdout=subprocess.DEVNULL)


def physical_limit(tracer: str, home: Path, policy: Path, notify: bool = True,
                   notify_all: bool = False, answer_threads: int = 0) -> tuple[str, ...]:
    """The C tracer that stops where appvirt stops and does nothing (limit_tracer.c, built
    at `tracer`), with appvirt's filter: its notified calls notify (notify False: every call
    a stop, the floor of a tracer that uses ptrace alone; notify_all: every call it traces
    notifies, the floor of any design that intercepts those calls with seccomp), answered by
    the loop itself on the program's CPU or, with answer_threads, by that many threads on
    any CPU."""
    filt = home / ("limit_filter_all.bin" if notify_all
                   else "limit_filter.bin" if notify else "limit_filter_ptrace.bin")
    subprocess.run([sys.executable, str(BENCH / "limit_filter.py"),
                    *(["--notify-all"] if notify_all else []), str(policy), str(filt)],
                   check=True, env={**os.environ, "APPVIRT_NOTIFY": "1" if notify else "0"})
    threads = ("--answer-threads", str(answer_threads)) if answer_threads else ()
    return (tracer, *threads, str(filt))


def python_ptrace_strace() -> tuple[str, ...]:
    """python-ptrace's strace.py (installed with it next to the interpreter), output dropped."""
    script = Path(sys.executable).parent / "strace.py"
    if not script.exists():
        script = Path(shutil.which("strace.py") or "strace.py")
    return (sys.executable, str(script), "-f", "-o", "/dev/null", "--")


# python-ptrace's strace.py decodes every call in Python: the 2,000,000 stops of `syscalls`
# would take minutes per run, as strace's and PRoot's do, and a full run must stay short.
PYTHON_PTRACE_SKIPS = {
    "syscalls": "skipped: 2,000,000 stops take minutes per run",
}


def installed_appvirt(home: Path, repo: Path = REPO) -> str:
    """An `appvirt` that starts as an installed copy's does: bin/appvirt.c's client, with the
    project's script beside it as `appvirt-py` (its first line made the venv's interpreter,
    as pip makes it; setup.py), in a venv whose site adds the checkout `repo` and the running
    interpreter's packages as plain paths. A development install (`pip install -e`) instead
    imports setuptools' editable finder at every interpreter start (pathlib, re and more:
    12 ms), which no user's copy pays."""
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "appvirt-bench.pth").write_text(f"{repo}\n{sysconfig.get_paths()['purelib']}\n")
    script = venv / "bin" / "appvirt-py"
    body = (repo / "bin" / "appvirt").read_text().split("\n", 1)[1]
    script.write_text(f"#!{venv / 'bin' / 'python'}\n{body}")
    script.chmod(0o755)
    client = venv / "bin" / "appvirt"
    subprocess.run(["cc", "-O2", "-o", str(client), str(repo / "bin" / "appvirt.c")],
                   check=True)
    return str(client)


def appvirt(script: str, policy: Path) -> tuple[str, ...]:
    return (script, "run", "--stats", "--policy", str(policy), "--")


COLD = {"APPVIRT_SERVER": "off"}        # never a warm start, even with a server running
DEFAULT = {"APPVIRT_SERVER": "auto"}    # the default: what the user's own setting may not be
WARM = "appvirt (warm)"
WARM_TERMINAL = "appvirt (warm on a terminal)"
WARM_NO_SPARE = "appvirt (warm without spares)"
NOTIFY_FLOOR = "interception floor"
NOTIFY_FLOOR_THREADS = "interception floor (2 answering threads)"
TTY_FD = "{tty}"                        # in a terminal runner's prefix: the pty slave's fd
SERVER_ROW = "the warm-start server itself"


@contextlib.contextmanager
def warm_servers(chosen: dict[str, Runner], env: dict[str, str]):
    """The warm-start server of each appvirt home the warm runners use, while they run: their
    pids by home. Each is the one a first run of the runner's settings, without a terminal,
    leaves starting (with the runner's environment: APPVIRT_SPARE=0 reaches the server)."""
    servers: dict[str, int] = {}
    started: list[tuple[str, dict[str, str]]] = []     # (the appvirt script, its env)
    try:
        for r in chosen.values():
            run_env = {**env, **r.env}
            if not r.warm or run_env["APPVIRT_HOME"] in servers:
                continue
            script = r.prefix[r.prefix.index("run") - 1]            # (after on_terminal's)
            subprocess.run([script, "run", "--", "true"], env={**run_env, **DEFAULT},
                           check=True, stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while (status := subprocess.run([script, "server", "status"], env=run_env,
                                            text=True, capture_output=True)).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: the first run at the default settings started "
                                     "no server")
                time.sleep(0.05)
            servers[run_env["APPVIRT_HOME"]] = int(re.search(r"pid (\d+)", status.stdout)[1])
            started.append((script, run_env))
        yield servers
    finally:
        for script, run_env in started:
            subprocess.run([script, "server", "stop"], env=run_env, check=False,
                           stdout=subprocess.DEVNULL)


def runners(home: Path) -> dict[str, Runner]:
    default = REPO / "policies" / "default.yaml"
    script = installed_appvirt(home)
    limit = _cc(BENCH / "limit_tracer.c", home)
    return {r.name: r for r in (
        Runner("native", (), is_tracer=False),
        Runner("seccomp floor", (sys.executable, str(BENCH / "seccomp_floor.py")),
               is_tracer=False),
        Runner("physical limit", physical_limit(limit, home, default)),
        Runner("physical limit (ptrace only)", physical_limit(limit, home, default,
                                                              notify=False)),
        Runner(NOTIFY_FLOOR, physical_limit(limit, home, default, notify_all=True)),
        Runner(NOTIFY_FLOOR_THREADS, physical_limit(limit, home, default, notify_all=True,
                                                    answer_threads=2)),
        Runner("appvirt", appvirt(script, default), env=COLD),
        Runner(WARM, appvirt(script, default), env=DEFAULT, tree_cpu=False, warm=True),
        Runner(WARM_TERMINAL, (_cc(BENCH / "on_terminal.c", home), TTY_FD,
                               *appvirt(script, default)),
               env=DEFAULT, tree_cpu=False, warm=True, terminal=True),
        Runner(WARM_NO_SPARE, appvirt(script, default),
               env={**DEFAULT, "APPVIRT_SPARE": "0",
                    "APPVIRT_HOME": str(home / "home-without-spares")},
               tree_cpu=False, warm=True),
        Runner("appvirt (all virtual)", appvirt(script, BENCH / "all_virtual.yaml"), env=COLD),
        Runner("strace -f", ("strace", "-f", "-o", "/dev/null")),
        Runner("proot", ("proot",)),
        Runner("python-ptrace strace.py", python_ptrace_strace(), PYTHON_PTRACE_SKIPS),
    )}


# -- running --------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of a session."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[3]) == sid and fields[0] != b"Z":
                members.append(int(entry))
    return members


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left of a run: every run starts its own session."""
    for _ in range(100):
        members = session_members(sid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def reset_appvirt_home(env: dict[str, str]) -> None:
    """Every appvirt run starts from a pristine overlay, as a first run of the app would."""
    shutil.rmtree(Path(env["APPVIRT_HOME"]) / "apps", ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:100].replace("|", "/") if lines else "no message"


def run_once(argv: list[str], env: dict[str, str], timeout: float, terminal: bool = False
             ) -> Run:
    reset_appvirt_home(env)
    master, slave = os.openpty() if terminal else (-1, -1)
    if terminal:                        # on_terminal.c starts the session itself
        argv = [str(slave) if a == TTY_FD else a for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                             cwd="/", start_new_session=not terminal,
                             pass_fds=(slave,) if terminal else ())
        if terminal:
            os.close(slave)
        expired = threading.Event()
        timer = threading.Timer(timeout, lambda: (expired.set(), kill_session(p.pid)))
        timer.start()
        _, status, usage = os.wait4(p.pid, 0)       # rusage: the whole tree, tracer included
        dt = time.perf_counter() - t0
        timer.cancel()
        timer.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        kill_session(p.pid)                          # nothing may outlive a run
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read().decode(errors="replace")
    if terminal:
        os.close(master)
    if expired.is_set():
        raise NotRun(f"timed out after {timeout:.0f} s")
    if p.returncode != 0:
        raise NotRun(f"exit status {p.returncode}: {_last_line(stderr)}")
    return Run(dt, usage.ru_utime + usage.ru_stime, stdout, stderr)


APPVIRT_STOPS = re.compile(r"^appvirt: (\d+) ptrace stops", re.M)
LIMIT_STOPS = re.compile(r"^stops (\d+)$", re.M)
APPVIRT_COMPILED = re.compile(r"(\d+) answered by the compiled loop\)")
APPVIRT_NOTIFIED = re.compile(r"calls notified by seccomp \(no ptrace stop\) (\d+)")
LIMIT_NOTIFIED = re.compile(r"^notified (\d+)$", re.M)


def ptrace_stops(stderr: str) -> int | None:
    """The stop count appvirt --stats or limit_tracer printed at the end, if any."""
    m = APPVIRT_STOPS.search(stderr) or LIMIT_STOPS.search(stderr)
    return int(m.group(1)) if m else None


def measure(w: Workload, chosen: dict[str, Runner], reps: int, env: dict[str, str],
            timeout: float) -> dict[str, Cell]:
    cells = {name: Cell(not_run=r.skip.get(w.name)) for name, r in chosen.items()}
    reference: tuple[str, bytes] | None = None       # (runner, stdout) all must match
    for rep in range(reps):
        for name, r in chosen.items():
            cell = cells[name]
            if cell.not_run:
                continue
            try:
                run = run_once([*r.prefix, *w.argv], {**env, **r.env}, timeout, r.terminal)
                if reference is None:
                    reference = (name, run.stdout)
                elif run.stdout != reference[1]:
                    raise NotRun(f"output differs from {reference[0]}")
                cell.add(run, r.tree_cpu)
            except NotRun as e:
                cell.not_run = f"{e}; run {rep + 1} of {reps}" if reps > 1 else str(e)
                print(f"{name} on {w.name}: {e}", file=sys.stderr)
        print(f"{w.name}: repetition {rep + 1}/{reps} done", file=sys.stderr)
    return cells


# -- tracer memory with many live tracees ---------------------------------------------------

@dataclass(frozen=True)
class Memory:
    peak_kib: int              # the tracer's VmHWM, last sampled just before it exited
    live_kib: int              # the tracer's VmRSS while every tracee was alive
    helpers_kib: int           # proportional RSS (Pss) of the tracer's other processes then
    one_tracee_kib: int        # the tracer's VmRSS with a single tracee, for comparison


def _status_kib(pid: int, key: str, file: str = "status") -> int | None:
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _shares_memory(a: int, b: int) -> bool:
    """Whether processes a and b have one address space (kcmp KCMP_VM): appvirt's log writer
    is a CLONE_VM clone of its tracer, whose Pss would count the tracer's pages twice."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(312, a, b, 1, 0, 0) == 0       # SYS_kcmp, KCMP_VM


def _read_line(p: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline().decode().strip() if ready else ""


def children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is pid."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit()
            and (f := _stat_fields(int(e))) and int(f[1]) == pid and f[0] != b"Z"]


def tracer_memory(prefix: tuple[str, ...], hold_procs: str, env: dict[str, str],
                  timeout: float, tracees: int, server: int | None = None) -> Memory:
    """Run hold_procs under a tracer and sample the tracer's memory (not the tracees'). With
    a warm-start server, the tracer is the server's child, and its client is a helper."""
    reset_appvirt_home(env)
    p = subprocess.Popen([*prefix, hold_procs, str(tracees)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/",
                         start_new_session=True)
    try:
        if _read_line(p, timeout) != f"ready {tracees}":
            raise NotRun(f"{tracees} processes did not start")
        if server is None:
            tracer = p.pid
            # Anything in the session that is neither the tracer nor the program (appvirt's
            # slot keeper) is the tracer's too; Pss, as a helper may share pages with it.
            helpers = [pid for pid in session_members(p.pid) if pid != p.pid]
        else:
            forked = children_of(server)
            if len(forked) != 1:
                raise NotRun(f"the server runs {len(forked)} tracers, not one")
            tracer = forked[0]
            helpers = [p.pid, *children_of(tracer)]
        live = _status_kib(tracer, "VmRSS") or 0
        helpers_kib = sum(_status_kib(pid, "Pss", "smaps_rollup") or 0
                          for pid in helpers
                          if _comm(pid) != "hold_procs" and not _shares_memory(tracer, pid))
        peak = _status_kib(tracer, "VmHWM") or 0
        p.stdin.close()                      # the children go; the tracer follows them out
        deadline = time.monotonic() + timeout
        while (hwm := _status_kib(tracer, "VmHWM")) is not None and time.monotonic() < deadline:
            peak = max(peak, hwm)            # gone once it exits: read it until then
            time.sleep(0.005)
        if p.wait(timeout) != 0 or _read_line(p, 1) != f"done {tracees}":
            raise NotRun("hold_procs did not finish cleanly")
        return Memory(peak, live, helpers_kib, 0)
    except subprocess.TimeoutExpired:
        raise NotRun(f"timed out after {timeout:.0f} s") from None
    finally:
        kill_session(p.pid)
        if p.poll() is None:
            p.wait()


def server_memory(server: int) -> str:
    """The warm-start server's own memory and its ready spare's (warm/spare.py), in MB."""
    rss = (_status_kib(server, "VmRSS") or 0) / 1024
    deadline = time.monotonic() + 10
    while not (spares := [p for p in children_of(server) if _comm(p) == "appvirt-spare"]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    own = sum((_status_kib(p, "Private_Dirty", "smaps_rollup") or 0)
              + (_status_kib(p, "Private_Clean", "smaps_rollup") or 0) for p in spares) / 1024
    return (f"RSS {rss:.1f}, one for every warm run (a warm tracer's RSS counts the pages it "
            f"shares with it); its spare tracer, ready for the next run: {own:.1f} of its own "
            "(Private in smaps_rollup)")


def measure_memory(chosen: dict[str, Runner], build: Path, env: dict[str, str],
                   timeout: float, servers: dict[str, int]) -> dict[str, Memory | str]:
    hold_procs = _cc(BENCH / "hold_procs.c", build)
    results: dict[str, Memory | str] = {}
    for name, r in chosen.items():
        if r.is_tracer and not r.terminal:      # (a terminal's run-here: warm's tracer)
            run_env = {**env, **r.env}
            through = servers[run_env["APPVIRT_HOME"]] if r.warm else None
            try:
                run_once([*r.prefix, "true"], run_env, timeout)   # its caches, as in use
                one = tracer_memory(r.prefix, hold_procs, run_env, timeout, 1, through)
                many = tracer_memory(r.prefix, hold_procs, run_env, timeout, LIVE_TRACEES,
                                     through)
                results[name] = replace(many, one_tracee_kib=one.live_kib)
            except NotRun as e:
                results[name] = f"n/a ({e})"
            print(f"memory: {name} done", file=sys.stderr)
    return results


# -- report ---------------------------------------------------------------------------------

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


def load_average() -> str:
    """The 1-minute load average: how busy the machine was apart from the benchmark."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def _median(cells: dict[str, Cell], name: str) -> float | None:
    cell = cells.get(name)
    return statistics.median(cell.seconds) if cell and cell.seconds else None


def ratio(cell: Cell, ref: Cell | None) -> float | None:
    """cell's time as a multiple of ref's: the median of the repetitions' own ratios, each
    of two runs made one after the other (so the machine's drift over the whole benchmark
    cancels); the ratio of the medians where a runner missed repetitions."""
    if ref is None or ref.not_run or not ref.seconds or not cell.seconds:
        return None
    if len(ref.seconds) == len(cell.seconds):
        return statistics.median(c / r for c, r in zip(cell.seconds, ref.seconds))
    return statistics.median(cell.seconds) / statistics.median(ref.seconds)


def paired_ratios(ref: list[float], other: list[float]) -> tuple[float, float, float]:
    """The median of the pairs' own ratios other/ref and the quartiles around it (runs made
    one after the other: bench's repetitions, ab.py's pairs)."""
    ratios = [o / r for r, o in zip(ref, other)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def ratio_spread(cell: Cell, ref: Cell | None) -> str:
    """The middle half of the repetitions' own ratios of cell to ref, as "(q1-q3)"; "" with
    fewer than four repetitions of each."""
    if ref is None or not ref.seconds or len(ref.seconds) != len(cell.seconds) \
            or len(cell.seconds) < 4:
        return ""
    _, q1, q3 = paired_ratios(ref.seconds, cell.seconds)
    return f" ({q1:.2f}-{q3:.2f})"


def time_table(rows: list[tuple[Workload, dict[str, Cell]]]) -> list[str]:
    lines = ["| workload | runner | seconds | × native | × physical limit (middle half of "
             "the repetitions) | × proot |",
             "|---|---|---|---|---|---|"]
    for w, cells in rows:
        refs = [cells.get(n) for n in ("native", "physical limit", "proot")]
        for name, cell in cells.items():
            if cell.not_run:
                lines.append(f"| {w.note} | {name} | n/a ({cell.not_run}) | | | |")
                continue
            ratios = " | ".join(
                "" if (x := ratio(cell, ref)) is None
                else f"{x:.2f}" + (ratio_spread(cell, ref) if i == 1 and cell is not ref else "")
                for i, ref in enumerate(refs))
            lines.append(f"| {w.note} | {name} | {fmt(cell.seconds)} | {ratios} |")
    return lines


def cost_table(rows: list[tuple[Workload, dict[str, Cell]]]) -> list[str]:
    """Stops and notified calls, the cost of each intercepted call over native, and how many
    cores the run kept busy."""
    lines = ["| workload | runner | ptrace stops | of them answered in C | calls notified "
             "(no stop) | µs per intercepted call over native | CPU use (cores) |",
             "|---|---|---|---|---|---|---|"]
    for w, cells in rows:
        native = _median(cells, "native")
        for name, cell in cells.items():
            if cell.not_run:
                continue
            stops = notified = per_call = ""
            if cell.stops:
                n = statistics.median(cell.stops)
                stops = f"{n:,.0f}"
                if cell.notified:
                    k = statistics.median(cell.notified)
                    notified = f"{k:,.0f}"
                    n += k
                if native is not None and n >= MIN_STOPS_FOR_COST:
                    per_call = f"{(statistics.median(cell.seconds) - native) / n * 1e6:.1f}"
            in_c = f"{statistics.median(cell.compiled):,.0f}" if cell.compiled else ""
            cores = f"{statistics.median(cell.cores):.2f}" if cell.cores else ""
            lines.append(f"| {w.note} | {name} | {stops} | {in_c} | {notified} | {per_call} "
                         f"| {cores} |")
    return lines


def loop_tables(rows: list[tuple[Workload, dict[str, Cell]]]) -> list[str]:
    lines: list[str] = []
    for w, cells in rows:
        timed = {n: c.loop_seconds for n, c in cells.items() if c.loop_seconds}
        if not timed or "native" not in timed:
            continue
        lines += ["", f"Time of the loop itself in `{w.name}` (the program's own clock, "
                  "without start-up):", "", "| runner | seconds | × native |", "|---|---|---|"]
        nat_loop = statistics.median(timed["native"])
        for name, xs in timed.items():
            lines.append(f"| {name} | {fmt(xs)} | {statistics.median(xs) / nat_loop:.2f} |")
    return lines


def memory_table(memory: dict[str, Memory | str]) -> list[str]:
    lines = ["", f"Tracer memory with {LIVE_TRACEES} live tracees (`hold_procs "
             f"{LIVE_TRACEES}`: {LIVE_TRACEES} children blocked on a pipe), in MB; the "
             f"issue's target for appvirt is under {MEMORY_TARGET_MB} MB:", "",
             "| runner | tracer peak RSS (VmHWM) | tracer RSS, all alive | "
             "tracer RSS, 1 tracee | tracer's helper processes (Pss) |", "|---|---|---|---|---|"]
    for name, m in memory.items():
        if isinstance(m, str):
            lines.append(f"| {name} | {m} | | | |")
        else:
            mb = (f"{kib / 1024:.1f}" for kib in (m.peak_kib, m.live_kib, m.one_tracee_kib,
                                                   m.helpers_kib))
            lines.append(f"| {name} | {' | '.join(mb)} |")
    return lines


NOTES = [
    "Notes:",
    "- \"physical limit\" is a C tracer stopping at exactly the calls appvirt's default policy "
    "traces and doing nothing at each stop (bench/limit_tracer.c); the calls appvirt takes as "
    "seccomp notifications notify it too, and it lets each run (\"physical limit (ptrace "
    "only)\": every one of them a stop, appvirt's filter before notifications). Its ratio is "
    "also given for "
    "\"appvirt (all virtual)\" (bench/all_virtual.yaml), which traces more calls. It keeps the "
    "program on one CPU throughout, so on parallel workloads its excess over native is lost "
    "parallelism as much as stops.",
    f"- \"{NOTIFY_FLOOR}\" is the same tracer with every call appvirt's filter traces "
    "notifying (bench/limit_filter.py --notify-all) and let run at once: no ptrace stop but "
    "the processes' events, no work, the program on one CPU, the answers made there; "
    f"\"{NOTIFY_FLOOR_THREADS}\" has two threads of its own answer them, on any CPU "
    "(--answer-threads 2). The faster of the two is the floor of any design that intercepts "
    "these calls with seccomp, whatever its tracer does; a ratio to proot below it is out of "
    "reach of every such design on this machine.",
    "- × native, × physical limit, × proot: the median over the repetitions of each one's "
    "own ratio (the runners take turns within a repetition, so the machine's drift between "
    "repetitions cancels).",
    "- µs per intercepted call = (the runner's median − native's median) / (the runner's "
    "median stops + its median notified calls); given from "
    f"{MIN_STOPS_FOR_COST:,} calls up.",
    "- CPU use = user + system seconds of the whole process tree, tracer included, / wall "
    "seconds: above 1 only where a second core was used. Not given for the warm runners, "
    "whose tracer is a child of the warm-start server, outside its client's tree.",
    "- \"appvirt (warm)\" is `appvirt run` with the default policy and settings, from a "
    "client without a controlling terminal, handed to the warm-start server that the "
    "benchmark's first such run left starting (before the timed runs); \"appvirt (warm on a "
    "terminal)\" the same from a client whose session has a pty as its controlling terminal "
    "(`bench/on_terminal.c`; its standard fds are the other runners'). The installed C "
    "client forks the program for the server's tracer in both (a run-here). The tracer is "
    "the server's spare when it is ready (forked while no run went on, its pages already "
    "copied: `appvirt/warm/spare.py`); \"appvirt (warm without spares)\" is \"appvirt (warm)\" "
    "with a server of its own started with `APPVIRT_SPARE=0`, which forks a tracer at each "
    "request. The runners take turns in the order listed; by default another runner's run "
    "comes between the two that share a server, as between a user's runs (back to back, the "
    "second would find the spare not ready yet). \"appvirt\" and \"appvirt (all virtual)\" "
    "start cold (`APPVIRT_SERVER=off`), as a first run does.",
    "- python-ptrace's strace.py waits for its tracees by polling each of them, sleeping up to "
    "0.5 s between rounds, whenever it follows more than one: with many processes it mostly "
    "sleeps (see its CPU use).",
]


FILESYSTEM_NOTE = (
    "- Why a tmpfs: on this machine's disk (ext4 without a journal) creating a file scans the "
    "inodes freed in the last minutes of its block group (ext4's find_inode_bit/"
    "recently_deleted), so a workload's time depended on which directory earlier runs had "
    "churned: native `tar -x` took 0.1 s in /tmp and 1.2 s in the overlay's directory after "
    "the 4-thread workload had removed 4,000 files there, and the min-max of native rows "
    "spanned 0.2-1.5 s. A tmpfs gives every runner the same cost for the same file "
    "operations.")


def filesystem_line(fs: str) -> str:
    if fs == "tmpfs":
        return ("Files: the workloads' trees, $TMPDIR and appvirt's state on a tmpfs mounted "
                "for the run.")
    return f"Files: on the disk ({fs})."


def mount_tmpfs(where: Path) -> str:
    """Mount a tmpfs at `where`: "tmpfs", or why the disk is used instead."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0700",
                           "appvirt-bench", str(where)], capture_output=True, text=True)
    if done.returncode == 0:
        return "tmpfs"
    why = _last_line(done.stderr)
    print(f"bench: no tmpfs ({why}); the files stay on the disk", file=sys.stderr)
    return f"no tmpfs could be mounted: {why}"


def report(args: argparse.Namespace, rows: list[tuple[Workload, dict[str, Cell]]],
           memory: dict[str, Memory | str] | None, load_before: str, fs: str) -> str:
    lines = [f"# appvirt benchmark, {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}; 1-minute load average {load_before} before the run, "
             f"{load_average()} after it.", "", filesystem_line(fs), ""]
    if rows:
        lines += [f"Median wall seconds of {args.reps} alternating runs (min-max); every "
                  "runner's output identical to native.", "", *time_table(rows), "",
                  "ptrace stops and notified calls (medians), the cost of an intercepted call, "
                  "and CPU use:", "",
                  *cost_table(rows), *loop_tables(rows)]
    if memory is not None:
        lines += memory_table(memory)
    lines += ["", *NOTES, FILESYSTEM_NOTE]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workloads", default=",".join(WORKLOAD_NAMES))
    ap.add_argument("-r", "--reps", type=int, default=5)
    # (the two runners of one server apart, as a user's runs are: back to back, the second
    # would find the server's spare tracer not ready yet)
    ap.add_argument("--runners", default=f"native,seccomp floor,physical limit,{NOTIFY_FLOOR},"
                    f"{NOTIFY_FLOOR_THREADS},{WARM},appvirt,"
                    f"{WARM_TERMINAL},appvirt (all virtual),{WARM_NO_SPARE},strace -f,proot,"
                    "python-ptrace strace.py")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds one run may take before it is killed and reported n/a")
    mem = ap.add_mutually_exclusive_group()
    mem.add_argument("--memory", action="store_true",
                     help="only measure the tracers' memory with many live tracees")
    mem.add_argument("--no-memory", action="store_true", help="skip that measurement")
    ap.add_argument("--on-disk", action="store_true",
                    help="keep the files on the disk instead of a tmpfs mounted for the run")
    args = ap.parse_args()
    unknown = set(args.workloads.split(",")) - set(WORKLOAD_NAMES)
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))} (the workloads: "
                 f"{', '.join(WORKLOAD_NAMES)})")
    load_before = load_average()
    ensure_tools()
    # appvirt starts as an installed copy would: from compiled bytecode, even where the
    # environment says not to write any (PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appvirt")],
                   check=True, env={k: v for k, v in os.environ.items()
                                    if k != "PYTHONDONTWRITEBYTECODE"})
    with tempfile.TemporaryDirectory(prefix="appvirt-bench-") as tmp:
        tmpd = Path(tmp)
        fs = "asked with --on-disk" if args.on_disk else mount_tmpfs(tmpd)
        try:
            (tmpd / "tmp").mkdir()
            env = {**os.environ, "APPVIRT_HOME": str(tmpd / "home"), "TMPDIR": str(tmpd / "tmp")}
            all_r = runners(tmpd)
            chosen_r = {n: all_r[n] for n in args.runners.split(",")}
            rows = []
            with warm_servers(chosen_r, env) as servers:
                if not args.memory:
                    all_w = workloads(tmpd)
                    for name in args.workloads.split(","):
                        rows.append((all_w[name], measure(all_w[name], chosen_r, args.reps,
                                                          env, args.timeout)))
                memory = None if args.no_memory else measure_memory(chosen_r, tmpd, env,
                                                                    args.timeout, servers)
                if env["APPVIRT_HOME"] in servers and memory is not None:
                    memory[SERVER_ROW] = server_memory(servers[env["APPVIRT_HOME"]])
        finally:
            if fs == "tmpfs":
                subprocess.run(["umount", "-l", str(tmpd)], check=False)
    text = report(args, rows, memory, load_before, fs)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
    out.write_text(text)
    print(f"saved {out.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
