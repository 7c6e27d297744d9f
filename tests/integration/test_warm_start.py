"""Warm starts (`appvirt server`): a run forked by the server sees what a cold run would see,
its client ends the way the run ended, nothing outlives either of them, and a client whose
context a forked run could not have is refused and starts cold. The client-side tests run
with both clients: the Python one (`python -m appvirt`) and the C one (bin/appvirt.c, which
`pip install` makes the `appvirt` executable, beside the Python one as `appvirt-py`)."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

from appvirt.warm import server as warm_server
from tests import conftest
from tests.conftest import REPO, appvirt_cmd

PR_SET_NO_NEW_PRIVS = 38


def install_c_client(bin_dir: Path, shebang: str | None = None) -> Path:
    """The C client in bin_dir, with the Python executable beside it as pip installs it (its
    first line the interpreter, this one's unless `shebang`); the C client's path."""
    body = (REPO / "bin" / "appvirt").read_text().split("\n", 1)[1]
    return conftest.install_c_client(bin_dir, (shebang or f"#!{sys.executable}\n") + body)


@pytest.fixture(scope="module")
def c_client(tmp_path_factory) -> Path:
    return install_c_client(tmp_path_factory.mktemp("c-client") / "bin")


@pytest.fixture(params=["python", "c"])
def client(request) -> list[str]:
    """How `appvirt` is started: the Python client, or the C client in front of it."""
    if request.param == "python":
        return appvirt_cmd()
    return [str(request.getfixturevalue("c_client"))]


def _status(env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(appvirt_cmd("server", "status"), capture_output=True, text=True,
                          timeout=30, env=env)


STATUS_LINE = re.compile(r"server pid (\d+): (\d+) runs served \((\d+) by a spare\), "
                         r"\d+ running, (\d+) refused(?: \(last: (.*)\))?; (?:spare tracer "
                         r"(ready|copying its pages) \(pid (\d+)\)|no spare tracer)\n")


def _status_line() -> re.Match:
    out = _status().stdout
    m = STATUS_LINE.fullmatch(out)
    assert m, out
    return m


def _counts() -> tuple[int, int, int, str]:
    """(pid, served, refused, last refusal) of the running server."""
    m = _status_line()
    return int(m[1]), int(m[2]), int(m[4]), m[5] or ""


def _served_by_spares() -> int:
    return int(_status_line()[3])


@pytest.fixture
def server(home: Path, ptrace_ok: None):
    yield from _serving()


@pytest.fixture
def server_without_spares(home: Path, ptrace_ok: None):
    """A server that forks a tracer at each run (APPVIRT_SPARE=0), as one does whose spare
    is not ready."""
    yield from _serving({**os.environ, "APPVIRT_SPARE": "0"})


def _serving(env=None):
    r = subprocess.run(appvirt_cmd("server", "start", "--idle", "300"), capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"pid (\d+)", r.stdout)[1])
    proc = psutil.Process(pid)
    try:
        yield proc
    finally:
        try:                    # a failed test's run: the server waits for its runs to end
            for left in proc.children(recursive=True):
                left.kill()
        except psutil.NoSuchProcess:
            pass                                        # it has stopped already
        subprocess.run(appvirt_cmd("server", "stop"), capture_output=True, timeout=30)
        try:
            proc.wait(timeout=15)
        except psutil.TimeoutExpired:
            proc.kill()
            raise AssertionError("the server did not stop") from None
        except psutil.NoSuchProcess:
            pass


def _ready_spare(server: psutil.Process, other_than: int = 0) -> psutil.Process:
    """The server's spare once it is ready (it then takes the name appvirt-spare)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in server.children():
            try:
                if child.name() == "appvirt-spare" and child.pid != other_than:
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)
    raise AssertionError("the server has no ready spare")


def _warm(*args: str, cwd=None, env=None, input=None, preexec_fn=None, timeout: float = 60,
          client: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`appvirt run ARGS` with no controlling terminal (a session of its own), as CI has it."""
    return subprocess.run([*(client or appvirt_cmd()), "run", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, input=input, preexec_fn=preexec_fn,
                          start_new_session=True, timeout=timeout)


@pytest.mark.parametrize("tracer", ["spare", "forked"])
def test_a_warm_run_sees_what_a_cold_one_sees(request, home, ptrace_ok, tmp_path, client,
                                              tracer):
    if tracer == "spare":
        _ready_spare(request.getfixturevalue("server"))
    else:
        request.getfixturevalue("server_without_spares")

    def context():
        os.umask(0o027)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (123, 456))
        os.setpriority(os.PRIO_PROCESS, 0, 7)

    script = ("echo \"$WARM_VAR\"; pwd; umask; ulimit -n; ulimit -Hn; "
              "grep Cpus_allowed_list /proc/self/status; cut -d' ' -f19 /proc/self/stat; "
              "read line; echo \"read $line\"; echo to-stderr >&2; exit 7")
    env = {**os.environ, "WARM_VAR": "a value"}
    results = {}
    for mode in ("warm", "cold"):
        before = _counts()[1]
        r = _warm("--", "sh", "-c", script, cwd=tmp_path, input="a line\n",
                  env={**env, "APPVIRT_SERVER": "on" if mode == "warm" else "off"},
                  preexec_fn=context, client=client)
        assert _counts()[1] == before + (mode == "warm"), mode
        if mode == "warm":
            assert _served_by_spares() == (tracer == "spare")
        results[mode] = (r.returncode, r.stdout, r.stderr)
    assert results["warm"] == results["cold"]
    code, out, err = results["warm"]
    cpu = min(os.sched_getaffinity(0))
    assert code == 7
    assert out.splitlines() == ["a value", str(tmp_path), "0027", "123", "456",
                                f"Cpus_allowed_list:\t{cpu}", "7", "read a line"]
    assert err == "to-stderr\n"


def test_a_warm_run_changes_the_overlay_not_the_host(server, tmp_path):
    target = Path("/etc/appvirt-warm-start-test")
    assert not target.exists()
    etc = hashlib.sha256(b"".join(sorted(p.name.encode() for p in Path("/etc").iterdir())))
    r = _warm("--", "sh", "-c", f"echo made > {target} && cat {target}")
    assert (r.returncode, r.stdout) == (0, "made\n"), r.stderr
    assert _counts()[1] == 1
    assert not target.exists()
    assert hashlib.sha256(b"".join(sorted(p.name.encode() for p in Path("/etc").iterdir()))
                          ).digest() == etc.digest()
    diff = subprocess.run(appvirt_cmd("overlay", "default", "diff"), capture_output=True,
                          text=True, timeout=60)
    assert str(target) in diff.stdout


@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_a_child_acts_only_after_its_creation_is_logged_and_as_its_own_program(
        request, home, ptrace_ok, tmp_path, client, mode):
    """A new process's first stop can come before its parent's fork event (in a warm run
    of the C client, which forks the program, it mostly does): the child must wait for that
    event, which sets what it inherits, or the event would give an exec'd child its
    parent's program back (and its ids, its slot)."""
    if mode == "warm":
        _ready_spare(request.getfixturevalue("server"))
    script = (f"for i in $(seq 30); do touch {tmp_path}/f$i; done; "
              f"touch {tmp_path}/g | cat; rm {tmp_path}/f1")
    r = _warm("--", "sh", "-c", script, client=client,
              env={**os.environ, "APPVIRT_SERVER": "on" if mode == "warm" else "off"})
    assert r.returncode == 0, r.stderr
    if mode == "warm":
        assert _served_by_spares() == 1
    log = home / "apps" / "default" / "logs" / "intercept.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    spawned = {records[0]["pid"]}            # the program's first process, exec'd at once
    program: dict[int, str] = {}
    changes = 0
    for rec in records:
        if rec["kind"] == "spawn":
            spawned.add(rec["child"])
        elif rec["kind"] == "exec":
            assert rec["pid"] in spawned, rec
            program[rec["pid"]] = rec["program"]
        elif rec["kind"] == "syscall":
            assert rec["pid"] in spawned, rec
            assert rec["program"] == program[rec["pid"]], rec
            changes += 1
    assert {Path(p).name for p in program.values()} == {
        "cat", Path("/bin/sh").resolve().name, "rm", "seq", "touch"}
    assert changes == 31 * 2 + 1        # 31 creations and their times, and a removal
    assert not (tmp_path / "g").exists()


def test_the_client_dies_the_way_the_run_ended(server, client):
    r = _warm("--", "sh", "-c", "kill -TERM $$", client=client)
    assert r.returncode == 128 + signal.SIGTERM
    r = _warm("--", "/nonexistent/program", client=client)
    assert r.returncode == 127 and r.stderr == "appvirt: /nonexistent/program: No such file " \
        "or directory\n"
    assert _counts()[1:3] == (2, 0)


def _spawn_warm(*command: str, client: list[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*(client or appvirt_cmd()), "run", "--", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _sleeping_run(server: psutil.Process, client: list[str] | None = None
                  ) -> tuple[subprocess.Popen[str], psutil.Process, list[psutil.Process]]:
    """A warm run of `sleep 60`: its client, its tracer (the server's child), and the
    processes of the run: the tracer's children (its slot keeper; the program, when the
    tracer forked it) and the program (the C client's child: it forks the program)."""
    p = _spawn_warm("sh", "-c", "echo ready; exec sleep 60", client=client)
    assert p.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tracers = server.children()
        if len(tracers) == 1:
            run = {*tracers[0].children(), *psutil.Process(p.pid).children()}
            if any(c.name() == "sleep" for c in run):
                return p, tracers[0], sorted(run, key=lambda c: c.pid)
        time.sleep(0.05)
    raise AssertionError("the server forked no tracer running sleep")


def test_a_ready_spare_becomes_the_next_runs_tracer_and_another_follows(server, client):
    spare = _ready_spare(server)
    # It copied the pages it shared with the server: most of its memory is its own.
    assert spare.memory_full_info().uss > server.memory_full_info().uss / 2
    p, tracer, program = _sleeping_run(server, client)
    try:
        assert tracer.pid == spare.pid and _served_by_spares() == 1
        assert tracer.name() == server.name()       # a tracer's name again
        assert [c.pid for c in server.children()] == [tracer.pid]   # none during a run
    finally:
        p.kill()
        p.wait(timeout=10)
    assert not psutil.wait_procs([tracer, *program], timeout=15)[1]
    _ready_spare(server, other_than=spare.pid)      # the next, once the run has ended


def test_a_killed_spare_is_replaced_and_the_servers_stop_ends_its_spare(server):
    spare = _ready_spare(server)
    spare.kill()
    spare = _ready_spare(server, other_than=spare.pid)
    r = _warm("--", "sh", "-c", "echo served")
    assert (r.returncode, r.stdout, r.stderr) == (0, "served\n", "")
    assert _counts()[1] == 1 and _served_by_spares() == 1
    spare = _ready_spare(server)
    assert _status_line().group(6, 7) == ("ready", str(spare.pid))
    subprocess.run(appvirt_cmd("server", "stop"), capture_output=True, timeout=30)
    server.wait(timeout=15)
    assert not spare.is_running()


def test_a_server_without_spares_has_no_child_between_runs(server_without_spares):
    r = _warm("--", "sh", "-c", "echo served")
    assert (r.returncode, r.stdout) == (0, "served\n"), r.stderr
    time.sleep(0.5)
    assert server_without_spares.children() == []
    assert _served_by_spares() == 0 and _status_line()[6] is None     # "no spare tracer"


def test_signals_to_the_client_reach_the_program(server, client):
    p = _spawn_warm("sh", "-c", "trap 'echo got TERM; exit 42' TERM; echo ready; "
                    "while :; do sleep 0.05; done", client=client)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 42
    assert p.stdout.read() == "got TERM\n"


def test_a_killed_client_takes_its_run_with_it(server, client):
    p, tracer, program = _sleeping_run(server, client)
    p.kill()
    p.wait(timeout=10)
    gone, alive = psutil.wait_procs([tracer, *program], timeout=15)
    assert not alive


def test_a_killed_tracer_is_reported_as_its_death(server, client):
    p, tracer, program = _sleeping_run(server, client)
    tracer.kill()
    assert p.wait(timeout=20) == -signal.SIGKILL       # what a killed cold appvirt gives
    gone, alive = psutil.wait_procs(program, timeout=15)
    assert not alive


def test_a_client_with_a_terminal_is_served_by_the_c_client_alone(server, client):
    """The C client forks the program itself (a run-here), which so keeps the terminal; the
    Python client does not ask. Either way the program is on the terminal. With no_new_privs
    either client is refused and starts cold."""
    master, slave = os.openpty()

    def with_terminal():
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    r = subprocess.run([*client, "run", "--", "sh", "-c", "tty; echo ok"],
                       stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       start_new_session=True, preexec_fn=with_terminal, timeout=60)
    terminal = os.ttyname(slave)
    os.close(master)
    os.close(slave)
    assert (r.returncode, r.stdout) == (0, f"{terminal}\nok\n"), r.stderr
    served = int(client != appvirt_cmd())
    assert _counts()[1:] == (served, 0, "")     # the Python client knew not to ask

    def no_new_privs():
        assert ctypes.CDLL(None).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0

    r = _warm("--", "sh", "-c", "echo ok", preexec_fn=no_new_privs, client=client)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    _, served, refused, last = _counts()
    assert (served, refused) == (int(client != appvirt_cmd()), 1)
    assert last.startswith("a different NoNewPrivs")


def test_changed_code_is_refused_and_stops_the_server(server):
    assert _warm("--", "true").returncode == 0 and _counts()[1] == 1
    module = Path(warm_server.__file__).with_name("__init__.py")
    st = module.stat()
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        r = _warm("--", "sh", "-c", "echo cold")
        assert (r.returncode, r.stdout) == (0, "cold\n"), r.stderr
        server.wait(timeout=15)
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _status().returncode == 1


def test_start_stop_status_and_idle_exit(home, ptrace_ok):
    assert _status().returncode == 1
    r = subprocess.run(appvirt_cmd("server", "start", "--idle", "0.5"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    proc = psutil.Process(int(re.search(r"pid (\d+)", r.stdout)[1]))
    try:
        again = subprocess.run(appvirt_cmd("server", "start"), capture_output=True, text=True,
                               timeout=60)
        assert again.returncode == 2 and "already runs" in again.stderr
        proc.wait(timeout=20)                       # idle for half a second: it exits
    finally:
        if proc.is_running():
            proc.kill()
    assert _status().returncode == 1
    assert not (home / "run" / "server.sock").exists()
    stop = subprocess.run(appvirt_cmd("server", "stop"), capture_output=True, text=True,
                          timeout=30)
    assert stop.returncode == 1 and stop.stderr == "appvirt: no server runs\n"


def test_concurrent_clients_each_get_their_own_run(server, tmp_path):
    procs = [subprocess.Popen(appvirt_cmd("run", "--app", f"app{i}", "--", "sh", "-c",
                                          f"echo {i} > /tmp/warm-{i}; cat /tmp/warm-{i}; "
                                          f"exit {i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for i in range(8)]
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
    assert results == [(i, f"{i}\n", "") for i in range(8)]
    assert _counts()[1:3] == (8, 0)
    assert not any(Path(f"/tmp/warm-{i}").exists() for i in range(8))


def _wait_for_server(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _status().returncode != 0:
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.05)


def test_a_foreground_server_serves_until_sigterm(home, ptrace_ok):
    """`start --foreground`, as a service manager runs it: SIGTERM ends it, socket gone."""
    proc = subprocess.Popen(appvirt_cmd("server", "start", "--foreground", "--idle", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_server()
        r = _warm("--", "sh", "-c", "echo served")
        assert (r.returncode, r.stdout) == (0, "served\n"), r.stderr
        assert _counts()[0] == proc.pid and _counts()[1] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read() == proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (home / "run" / "server.sock").exists()
    assert _status().returncode == 1


def test_sigterm_stops_a_background_server_after_its_runs(server, home):
    p, _, _ = _sleeping_run(server)
    server.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while (home / "run" / "server.sock").exists():     # no more runs taken...
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.is_running()                          # ...but the one running goes on
    p.kill()
    p.wait(timeout=20)
    server.wait(timeout=20)


def test_a_stopped_server_can_be_replaced_at_once(server):
    """`stop; start` works even while the old server's runs go on: stop frees the home."""
    p, _, _ = _sleeping_run(server)
    stop = subprocess.run(appvirt_cmd("server", "stop"), capture_output=True, text=True,
                          timeout=30)
    assert stop.returncode == 0, stop.stderr
    r = subprocess.run(appvirt_cmd("server", "start", "--idle", "60"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    replacement = psutil.Process(int(re.search(r"pid (\d+)", r.stdout)[1]))
    try:
        assert server.is_running() and replacement.pid != server.pid   # its run goes on
        w = _warm("--app", "another", "--", "sh", "-c", "echo served")
        assert (w.returncode, w.stdout) == (0, "served\n"), w.stderr
        assert _counts()[:2] == (replacement.pid, 1)
        p.kill()
        p.wait(timeout=20)
        server.wait(timeout=20)                         # the old one ends with its run
    finally:
        subprocess.run(appvirt_cmd("server", "stop"), capture_output=True, timeout=30)
        replacement.wait(timeout=20)


def test_a_home_longer_than_a_socket_path_is_served(tmp_path, monkeypatch, ptrace_ok, client):
    home = tmp_path / ("a-long-appvirt-home-" * 6)
    monkeypatch.setenv("APPVIRT_HOME", str(home))
    assert len(str(home / "run" / "server.sock")) > 108
    r = subprocess.run(appvirt_cmd("server", "start", "--idle", "60"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        w = _warm("--", "sh", "-c", "echo served", client=client)
        assert (w.returncode, w.stdout) == (0, "served\n"), w.stderr
        assert _counts()[1] == 1
    finally:
        subprocess.run(appvirt_cmd("server", "stop"), capture_output=True, timeout=30)


def test_a_run_of_a_server_started_on_a_terminal_has_no_terminal(home, ptrace_ok):
    """A foreground server on a terminal forks runs for clients without one: the run gets
    none either (it has its own session), as the client's cold run would."""
    master, slave = os.openpty()

    def with_terminal():
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(appvirt_cmd("server", "start", "--foreground", "--idle", "60"),
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=with_terminal)
    try:
        _wait_for_server()
        script = "cat /proc/self/stat | cut -d' ' -f7; (: </dev/tty) 2>/dev/null || echo none"
        warm = _warm("--", "sh", "-c", script)
        cold = _warm("--", "sh", "-c", script, env={**os.environ, "APPVIRT_SERVER": "off"})
        assert _counts()[1] == 1
        assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout) == (0, "0\nnone\n")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(master)
        os.close(slave)


def test_a_tracer_that_dies_with_no_server_left_is_reported_in_one_line(server, client):
    p, tracer, _ = _sleeping_run(server, client)
    server.kill()                     # the run goes on without its server...
    server.wait(timeout=20)
    assert p.poll() is None
    tracer.kill()                     # ...until its tracer dies, which nobody is left to report
    assert p.wait(timeout=20) == 125
    assert p.stderr.read() == ("appvirt: internal error: the warm server's tracer ended "
                               "without a status\n")


# -- the C client alone ------------------------------------------------------------------------

def test_the_c_client_is_the_python_appvirt_for_everything_it_does_not_hand_over(
        c_client, home, ptrace_ok):
    """No server: every command line is the Python executable's, which it becomes."""
    version = subprocess.run([str(c_client), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert (version.returncode, version.stdout.startswith("appvirt, version")) == (0, True)
    r = _warm("--", "sh", "-c", "echo cold; exit 3", client=[str(c_client)])
    assert (r.returncode, r.stdout, r.stderr) == (3, "cold\n", "")
    status = subprocess.run([str(c_client), "server", "status"], capture_output=True,
                            text=True, timeout=60)
    assert (status.returncode, status.stdout) == (1, "no server runs\n")


def test_the_c_client_of_another_venv_is_refused_and_starts_cold(server, tmp_path):
    """Same interpreter file, another venv (whose packages could be another appvirt): the
    server refuses, and the run starts cold with that venv's interpreter."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    real = Path(os.path.realpath(sys.executable))
    (venv / "bin" / "python").symlink_to(real)
    (venv / "pyvenv.cfg").write_text(f"home = {real.parent}\n")
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    site.mkdir(parents=True)
    (site / "appvirt-dev.pth").write_text(f"{REPO}\n" + "\n".join(
        p for p in sys.path if p.endswith("site-packages")) + "\n")
    client = install_c_client(tmp_path / "bin", f"#!{venv / 'bin' / 'python'}\n")
    r = _warm("--", "sh", "-c", "echo cold", client=[str(client)])
    assert (r.returncode, r.stdout) == (0, "cold\n"), r.stderr
    _, served, refused, last = _counts()
    assert served == 0 and refused >= 1
    assert last.startswith("the client's appvirt or interpreter is another")


def test_a_first_line_the_c_client_does_not_read_leaves_the_asking_to_python(server, tmp_path):
    """An interpreter with an argument is not what pip writes: the Python client asks, once."""
    client = install_c_client(tmp_path / "bin", f"#!{sys.executable} -u\n")
    r = _warm("--", "sh", "-c", "echo served", client=[str(client)])
    assert (r.returncode, r.stdout) == (0, "served\n"), r.stderr
    assert _counts()[1:3] == (1, 0)


def test_the_c_client_without_its_python_executable_says_so(tmp_path):
    client = install_c_client(tmp_path / "bin")
    (tmp_path / "bin" / "appvirt-py").unlink()
    r = subprocess.run([str(client), "--version"], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (125, "")
    assert r.stderr == (f"appvirt: cannot start {tmp_path / 'bin' / 'appvirt-py'}: "
                        "No such file or directory\n")


@pytest.mark.parametrize("request_", [("run", 5, ["run", "--", "true"], {}),
                                      ("run", (), ["run", 7], {}),
                                      ("run", (), ["run", "--", "true"], {"A": "b"})])
def test_a_malformed_run_request_gets_no_run_and_the_server_goes_on(server, home, request_):
    import socket
    from appvirt.warm import wire
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(home / "run" / "server.sock"))
        wire.send(sock, request_, (0, 1, 2))
        sock.settimeout(30)
        assert sock.recv(1) == b""                  # hung up on, with no word
    r = _warm("--", "sh", "-c", "echo served")
    assert (r.returncode, r.stdout) == (0, "served\n"), r.stderr
    assert _counts()[1:3] == (1, 0)


@pytest.mark.parametrize("answer", [("child", 0), ("child", "x"), ("other", 5), None])
def test_a_run_here_client_that_starts_no_program_gets_a_one_line_error(server, home,
                                                                        tmp_path, answer):
    """The tracer asks for the program; a client that answers anything but a child's pid
    (or hangs up) is told why in one line, and nothing runs."""
    import socket
    from appvirt.warm import wire
    marker = tmp_path / "ran"
    err = tmp_path / "stderr"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, open(err, "w") as stderr:
        sock.connect(str(home / "run" / "server.sock"))
        sock.settimeout(30)
        wire.send(sock, ("run-here", warm_server.ORIGIN,
                         ["run", "--", "sh", "-c", f"echo > {marker}"],
                         dict(os.environb)), (0, 1, stderr.fileno()))
        assert wire.receive(sock)[0][0] == "pid"
        (kind, _blob), fds = wire.receive(sock, max_fds=3)
        for fd in fds:
            os.close(fd)
        assert (kind, len(fds)) == ("spawn", 3)
        if answer is None:              # the tracer kills itself with its client (the
            sock.shutdown(socket.SHUT_WR)   # server may say so), or first sees that it
            end = wire.receive(sock)        # answered nothing
            assert end is None or end[0] in (("status", signal.SIGKILL), ("exit", 2))
        else:
            wire.send(sock, answer)
            assert wire.receive(sock)[0] == ("exit", 2)
    if answer is not None:
        assert err.read_text().startswith("appvirt: the client did not start the program")
        assert len(err.read_text().splitlines()) == 1
    assert not marker.exists()


def _default_env(**chosen: str) -> dict[str, str]:
    """This process's environment with APPVIRT_SERVER as a user has it (unset) or chosen."""
    env = {k: v for k, v in os.environ.items() if k != "APPVIRT_SERVER"}
    return {**env, **chosen}


def _started_servers(home: Path) -> list[psutil.Process]:
    """Servers a cold run started for home (warm/autostart.py), by their command lines:
    not their children (a spare, a run's tracer), forks of them with the same line."""
    found = []
    for p in psutil.process_iter(["cmdline", "ppid"]):
        line = p.info["cmdline"] or []
        if "appvirt.warm.autostart" in line and str(home) in line:
            found.append(p)
    pids = {p.pid for p in found}
    return [p for p in found if p.info["ppid"] not in pids]


def _stop_started(home: Path) -> None:
    """SIGTERM, which stops a server as `appvirt server stop` does, and also one that has
    not come up yet (a failed test's)."""
    for p in _started_servers(home):
        p.terminate()
        try:
            p.wait(timeout=15)
        except psutil.TimeoutExpired:
            p.kill()
            raise AssertionError("the started server did not stop") from None


def test_a_cold_run_without_a_terminal_leaves_a_server_for_the_next(home, ptrace_ok, client):
    from appvirt.warm.autostart import AUTO_IDLE
    env = _default_env()
    read_end, write_end = os.pipe()
    try:
        r = subprocess.run([*client, "run", "--", "sh", "-c", "echo cold"], env=env,
                           capture_output=True, text=True, start_new_session=True,
                           pass_fds=(write_end,), timeout=60)
        os.close(write_end)
        write_end = -1
        assert (r.returncode, r.stdout, r.stderr) == (0, "cold\n", "")
        started = _started_servers(home)
        assert len(started) == 1
        proc = started[0]
        # Nothing of the client's but its environment: no fd (a reader of the client's
        # pipe sees its end), no session, no cwd.
        ready, _, _ = select.select([read_end], [], [], 20)
        assert ready and os.read(read_end, 1) == b""
        assert os.getsid(proc.pid) == proc.pid
        assert [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in (0, 1, 2)] == \
            [os.devnull] * 3
        assert proc.cmdline()[-1] == repr(AUTO_IDLE)
        _wait_for_server()
        assert _counts()[0] == proc.pid and proc.cwd() == "/"
        r = subprocess.run([*client, "run", "--", "sh", "-c", "echo warm"], env=env,
                           capture_output=True, text=True, start_new_session=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "warm\n", "")
        assert _counts()[1:3] == (1, 0)                 # served by it
        assert _started_servers(home) == [proc]         # and no second one started
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        _stop_started(home)


def test_the_c_clients_cold_run_on_a_terminal_leaves_a_server_that_serves_the_next(
        home, ptrace_ok, c_client):
    """It can hand over runs with a terminal (run-here), so its cold ones start a server too
    (the Python client's do not: the test below)."""
    try:
        for served in (0, 1):
            master, slave = os.openpty()
            terminal = os.ttyname(slave)
            r = subprocess.run([str(c_client), "run", "--", "tty"], env=_default_env(),
                               stdin=slave, capture_output=True, text=True,
                               start_new_session=True, timeout=60,
                               preexec_fn=lambda: fcntl.ioctl(slave, termios.TIOCSCTTY, 0))
            os.close(master)
            os.close(slave)
            assert (r.returncode, r.stdout, r.stderr) == (0, f"{terminal}\n", "")
            assert len(_started_servers(home)) == 1
            _wait_for_server()
            assert _counts()[1] == served
    finally:
        _stop_started(home)


def test_no_server_is_left_by_manual_off_a_terminal_or_a_sandboxed_run(home, ptrace_ok):
    try:
        for setting in ("manual", "off"):
            r = _warm("--", "true", env=_default_env(APPVIRT_SERVER=setting))
            assert r.returncode == 0, r.stderr
            assert _started_servers(home) == [], setting
        master, slave = os.openpty()

        def with_terminal():
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        r = subprocess.run(appvirt_cmd("run", "--", "true"), env=_default_env(), stdin=slave,
                           capture_output=True, start_new_session=True,
                           preexec_fn=with_terminal, timeout=60)
        os.close(master)
        os.close(slave)
        assert r.returncode == 0 and _started_servers(home) == [], r.stderr

        def no_new_privs():
            assert ctypes.CDLL(None).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0

        r = _warm("--", "true", env=_default_env(), preexec_fn=no_new_privs)
        assert r.returncode == 0 and _started_servers(home) == [], r.stderr
        assert _status().returncode == 1
    finally:
        _stop_started(home)


def test_cold_runs_at_once_leave_one_server(home, ptrace_ok):
    """Each may start one (none holds the lock yet); all but one find it held and exit."""
    env = _default_env()
    try:
        runs = [subprocess.Popen(appvirt_cmd("run", "--app", f"app{i}", "--", "true"),
                                 env=env, stdin=subprocess.DEVNULL, start_new_session=True)
                for i in range(4)]                  # (one run at a time per app)
        assert [p.wait(timeout=60) for p in runs] == [0] * 4
        deadline = time.monotonic() + 60
        while len(started := _started_servers(home)) != 1 or _status().returncode != 0:
            assert time.monotonic() < deadline, f"{len(started)} servers started"
            time.sleep(0.1)
        time.sleep(1)                                   # and it stays one
        assert _started_servers(home) == started
        assert _counts()[0] == started[0].pid
    finally:
        _stop_started(home)
