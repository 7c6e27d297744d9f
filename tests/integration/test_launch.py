"""The launcher: exit statuses, messages, signals and cleanup, under real ptrace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ..conftest import appvirt_cmd, write_policy

pytestmark = pytest.mark.integration


def test_output_and_exit_status_pass_through(appvirt):
    r = appvirt("run", "--policy", "policies/default.yaml", "--",
                "sh", "-c", "echo hi; exit 3")
    assert r.stdout == "hi\n"
    assert r.returncode == 3


def test_double_dash_may_be_left_out(appvirt):
    r = appvirt("run", "--policy", "policies/default.yaml", "sh", "-c", "echo $0 $1", "a", "b")
    assert (r.returncode, r.stdout) == (0, "a b\n")


def test_killed_by_signal_is_128_plus_n(appvirt):
    r = appvirt("run", "--policy", "policies/default.yaml", "--", "sh", "-c", "kill -9 $$")
    assert r.returncode == 137


@pytest.mark.parametrize("program, status, message", [
    ("/nonexistent", 127, "appvirt: /nonexistent: No such file or directory"),
    ("no-such-command-anywhere", 127, "appvirt: no-such-command-anywhere: command not found"),
    ("/etc/passwd", 126, "appvirt: /etc/passwd: Permission denied"),
    ("/etc", 126, "appvirt: /etc: Is a directory"),
])
def test_unrunnable_program_gives_shell_status(appvirt, program, status, message):
    r = appvirt("run", "--", program)
    assert r.returncode == status
    assert r.stderr.strip() == message


def test_stdin_passes_through(appvirt):
    r = appvirt("run", "--", "cat", input="from stdin\n")
    assert (r.returncode, r.stdout) == (0, "from stdin\n")


def test_program_starts_with_default_signals_and_only_its_standard_fds(home, ptrace_ok):
    """Nothing of the tracer's reaches the program: not an fd it inherited (a pipe passed to
    appvirt), not a signal ignored (Python ignores SIGPIPE and SIGXFSZ; SIGHUP ignored by
    appvirt's own parent, as nohup does), handled or blocked."""
    r9, w9 = os.pipe()

    def parent_ignores_hup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        r = subprocess.run(appvirt_cmd("run", "--", "sh", "-c",
                                       "cat /proc/self/status && exec ls /proc/self/fd"),
                           capture_output=True, text=True, timeout=60, pass_fds=(r9,),
                           preexec_fn=parent_ignores_hup)
    finally:
        os.close(r9)
        os.close(w9)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    assert [status[k] for k in ("SigIgn", "SigBlk", "SigCgt")] == ["0000000000000000"] * 3
    assert [x for x in lines if ":" not in x] == ["0", "1", "2", "3"]     # 3: ls's listing


def test_sigterm_to_appvirt_is_forwarded(home, ptrace_ok):
    p = subprocess.Popen(appvirt_cmd("run", "--", "sh", "-c",
                                     "trap 'echo got TERM; exit 7' TERM; echo ready; "
                                     "while :; do sleep 0.05; done"),
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert out == "got TERM\n"
    assert p.returncode == 7


def test_sigint_to_appvirt_reaches_the_program(home, ptrace_ok):
    p = subprocess.Popen(appvirt_cmd("run", "--", "sleep", "30"), stdout=subprocess.PIPE)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=20)
    assert p.returncode == 128 + signal.SIGINT


def test_group_stop_and_continue(home, ptrace_ok, tmp_path):
    """SIGSTOP stops the program (PTRACE_LISTEN keeps it stopped), SIGCONT resumes it."""
    ticks = tmp_path / "ticks"
    policy = write_policy(tmp_path / "p.yaml",
                          f"files:\n  rules:\n    - {{path: '{tmp_path}', mode: passthrough}}\n")
    p = subprocess.Popen(appvirt_cmd("run", "--policy", policy, "--", "sh", "-c",
                                     f"echo $$; while :; do echo t >> {ticks}; sleep 0.05; done"),
                         stdout=subprocess.PIPE, text=True)
    pid = int(p.stdout.readline())
    time.sleep(0.3)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.5)
    stopped_at = ticks.read_text().count("t")
    time.sleep(0.6)
    assert ticks.read_text().count("t") == stopped_at
    assert psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.6)
    assert ticks.read_text().count("t") > stopped_at
    os.kill(pid, signal.SIGTERM)
    p.wait(timeout=20)
    assert p.returncode == 128 + signal.SIGTERM


def _descendants_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_forks_and_threads_all_logged_and_reaped(appvirt, demo, tmp_path):
    policy = write_policy(tmp_path / "all.yaml", "log: {level: all}\n")
    log = tmp_path / "log.jsonl"
    r = appvirt("run", "--policy", policy, "--log", str(log), "--", demo("forker"))
    assert r.returncode == 0, r.stderr
    seen = [line.split() for line in r.stdout.splitlines()]
    assert sorted(w[0] for w in seen).count("child") == 50
    assert [w[0] for w in seen].count("thread") == 4
    records = [json.loads(line) for line in log.read_text().splitlines()]
    calls = [rec for rec in records if rec["kind"] == "syscall"]
    logged_pids = {rec["pid"] for rec in calls}
    logged_tids = {rec["tid"] for rec in calls}
    for who, _, pid, _, tid in seen:
        assert int(pid) in logged_pids, who
        assert int(tid) in logged_tids, who
    pids = sorted({int(w[2]) for w in seen})
    assert _descendants_alive(pids) == []
    me = psutil.Process()
    assert [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE] == []


_KILLED_WHILE_FORKING = """
import os, signal, time
for _ in range(20):
    forker = os.fork()
    if forker == 0:
        while True:
            child = os.fork()
            if child == 0:
                os._exit(0)
            os.waitpid(child, 0)
    time.sleep(0.05)
    os.kill(forker, signal.SIGKILL)
    os.waitpid(forker, 0)
print("done")
"""


def test_processes_killed_while_they_fork_leave_no_task_waiting(appvirt, tmp_path):
    """A child whose first stop comes before its creator's fork event waits for that event
    (tracer/loop.py); a creator killed in fork never stops for it, and its last children
    must run all the same: the run ends, and nothing it made is left."""
    r = appvirt("run", "--", sys.executable, "-c", _KILLED_WHILE_FORKING, timeout=120)
    assert (r.returncode, r.stdout) == (0, "done\n"), r.stderr
    me = psutil.Process()
    assert [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE] == []


def test_sigkill_to_appvirt_leaves_no_survivor(home, ptrace_ok, demo):
    p = subprocess.Popen(appvirt_cmd("run", "--", demo("tree"), "20"),
                         stdout=subprocess.PIPE, text=True)
    pids = []
    while (line := p.stdout.readline().strip()) != "ready":
        assert line, "tree ended early"
        pids.append(int(line))
    assert len(pids) == 20
    appvirt_children = psutil.Process(p.pid).children(recursive=True)
    p.kill()
    p.wait(timeout=10)
    deadline = time.time() + 10
    while _descendants_alive(pids + [c.pid for c in appvirt_children]) and time.time() < deadline:
        time.sleep(0.1)
    assert _descendants_alive(pids + [c.pid for c in appvirt_children]) == []


def test_untraced_syscalls_cause_no_stop(appvirt, demo):
    """The stop count of the program is the same for 10 and for 1,000,000 getppid calls."""
    def stops(n: str) -> int:
        r = appvirt("run", "--stats", "--", demo("syscall_loop"), n)
        assert r.returncode == 0, r.stderr
        line = next(x for x in r.stderr.splitlines() if "ptrace stops" in x)
        return int(line.split("appvirt: ")[1].split()[0])
    few, many = stops("10"), stops("1000000")
    assert few == many
    assert few < 50


def test_unusable_state_directory(appvirt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = appvirt("run", "--", "true", env={"APPVIRT_HOME": str(blocker / "sub")})
    assert r.returncode == 2
    assert r.stderr.startswith("appvirt: state directory")
    assert len(r.stderr.strip().splitlines()) == 1


def test_ptrace_refused_is_a_clear_error(home, ptrace_ok, tmp_path):
    """Under a seccomp filter that refuses ptrace (as a locked-down container would)."""
    wrapper = tmp_path / "noptrace.py"
    wrapper.write_text(
        "import os, sys\n"
        "from appvirt.tracer import seccomp as s\n"
        "nr = 101  # ptrace\n"
        "prog = [s.Insn(s.LD_W_ABS, 0, 0, 0), s.Insn(s.JMP_JEQ, 0, 1, nr),\n"
        "        s.Insn(s.RET_K, 0, 0, 0x00050000 | 1), s.Insn(s.RET_K, 0, 0, s.RET_ALLOW)]\n"
        "s.install(prog)\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'appvirt', 'run', '--', 'true'])\n")
    r = subprocess.run([os.sys.executable, str(wrapper)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("appvirt: cannot trace the program")
    assert "Traceback" not in r.stderr


def test_no_leftover_processes_after_runs(appvirt):
    r = appvirt("run", "--", "sh", "-c", "sleep 0.2 & sleep 0.1 & wait")
    assert r.returncode == 0
    me = psutil.Process()
    assert [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE] == []


def test_waits_for_background_children_like_strace(appvirt, tmp_path):
    """The main program exits first; appvirt still waits for what it started."""
    out = tmp_path / "done"
    policy = write_policy(tmp_path / "p.yaml",
                          f"files:\n  rules:\n    - {{path: '{tmp_path}', mode: passthrough}}\n")
    t0 = time.time()
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"(sleep 1; echo late > {out}) & exit 4")
    assert r.returncode == 4
    assert time.time() - t0 >= 1.0
    assert out.read_text() == "late\n"


def test_slot_keeper_outlives_sigint_to_appvirts_group(home, ptrace_ok):
    """A SIGINT to appvirt's process group (which holds the slot keeper, not the program)
    leaves the keeper alive: a later exec still maps the slot area through it."""
    p = subprocess.Popen(appvirt_cmd("run", "--", "sh", "-c",
                                     "trap '' INT; echo ready; read x; exec true"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline() == "ready\n"
        keepers = []
        for c in psutil.Process(p.pid).children():
            try:
                if os.readlink(f"/proc/{c.pid}/fd/100").startswith("/memfd:appvirt-slots"):
                    keepers.append(c)
            except OSError:
                pass
        assert len(keepers) == 1 and os.getpgid(keepers[0].pid) == p.pid
        os.killpg(p.pid, signal.SIGINT)
        time.sleep(0.2)
        assert keepers[0].status() != psutil.STATUS_ZOMBIE
        p.stdin.write("\n")
        p.stdin.close()
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
