"""The processes section under real ptrace, as root: exec rules, the live-process limit,
/proc showing the sandbox's own processes, and the process tree in the log."""

from __future__ import annotations

import json
import os
import sys

import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration

# Forks children that wait on a pipe until it fails (EAGAIN), starts threads at the limit,
# then releases every child: prints the count of children it made and of threads it ran.
FORKS = r"""
import ctypes, errno, os, threading
r, w = os.pipe()
kids = []
while len(kids) < 20:
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed:", errno.errorcode[e.errno])
        break
    if pid == 0:
        os.close(w); os.read(r, 1); os._exit(0)
    kids.append(pid)
done = []
threads = [threading.Thread(target=done.append, args=(i,)) for i in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
libc = ctypes.CDLL(None, use_errno=True)
raw = libc.syscall(57)                       # fork(2) itself, not glibc's clone
if raw == 0:
    os._exit(0)
print("raw fork:", "ok" if raw > 0 else errno.errorcode[ctypes.get_errno()])
os.close(w)
for pid in kids:
    os.waitpid(pid, 0)
print("children", len(kids), "threads", len(done))
"""


def test_exec_rules_refuse_programs_and_interpreters_with_eacces(appvirt, tmp_path):
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env true\n")
    script.chmod(0o755)
    policy = write_policy(tmp_path / "p.yaml", f"""\
app: execrules
processes:
  exec:
    - {{path: /usr/bin/env, action: deny}}
    - {{path: /usr/bin/c*, action: deny}}
    - {{path: /usr/bin/cat, action: allow}}
""")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"env true; echo env=$?; cmp /dev/null /dev/null; echo cmp=$?; "
                f"echo hi | cat; {script}; echo script=$?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["env=126", "cmp=126", "hi", "script=126"]
    assert r.stderr.count("Permission denied") == 3
    denied = [json.loads(x) for x in appvirt("log", "execrules", "--decision", "denied",
                                             "--format", "json").stdout.splitlines()]
    # (the shell tries each PATH directory: /bin/env is /usr/bin/env again)
    assert {(d["syscall"], d["rule"], d["path"]) for d in denied} == {
        ("execve", "processes.exec[0]", "/usr/bin/env"),
        ("execve", "processes.exec[1]", "/usr/bin/cmp")}
    assert all(d["errno"] == "EACCES" for d in denied)


def test_live_processes_are_limited_with_eagain_and_threads_are_not(appvirt, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "app: maxproc\nprocesses: {max: 4}\n")
    r = appvirt("run", "--policy", policy, "--", sys.executable, "-c", FORKS)
    assert r.returncode == 0, r.stderr
    # The program itself plus three children are four live processes.
    assert r.stdout.splitlines() == ["fork failed: EAGAIN", "raw fork: EAGAIN",
                                     "children 3 threads 4"]
    # Without the section nothing is counted: all twenty children are made.
    r = appvirt("run", "--", sys.executable, "-c", FORKS)
    assert r.stdout.splitlines() == ["raw fork: ok", "children 20 threads 4"], r.stderr


def test_processes_leave_and_free_their_places(appvirt, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "app: maxseq\nprocesses: {max: 2}\n")
    # Each command is one child at a time: fifty of them run, one after the other.
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "i=0; while [ $i -lt 50 ]; do /bin/true || exit 9; i=$((i+1)); done; echo $i")
    assert (r.returncode, r.stdout) == (0, "50\n"), r.stderr


def test_own_proc_lists_and_reaches_only_the_sandbox(appvirt, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "app: ownproc\nprocesses: {proc: own}\n")
    host_pids = {n for n in os.listdir("/proc") if n.isdigit()}
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "ls /proc | grep -c '^[0-9]'; ps -e -o comm= | sort | tr '\\n' ' '; echo; "
                f"cat /proc/1/comm; stat /proc/{os.getpid()}; cat /proc/self/comm")
    lines = r.stdout.splitlines()
    assert lines[0] == "3"                           # sh, ls and grep
    assert lines[1].split() == ["ps", "sh", "sort", "tr"]
    assert lines[2] == "cat"
    assert "/proc/1/comm: No such file or directory" in r.stderr
    assert f"/proc/{os.getpid()}" in r.stderr and "No such file" in r.stderr
    # The default shows every process (outsiders' private entries stay refused).
    r = appvirt("run", "--", "sh", "-c", "ls /proc | grep -c '^[0-9]'; cat /proc/1/comm")
    assert int(r.stdout.splitlines()[0]) >= len(host_pids) // 2
    assert len(r.stdout.splitlines()) == 2


def test_the_log_shows_the_process_tree_with_every_exec(appvirt, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "app: ptree\nlog: {level: all}\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "(echo hi | tr a-z A-Z); exec env LC_ALL=C true")
    assert (r.returncode, r.stdout) == (0, "HI\n"), r.stderr
    tree = json.loads(appvirt("log", "ptree", "--tree", "--format", "json").stdout)
    assert len(tree) == 1
    root = tree[0]
    assert [e["argv"] for e in root["execs"]] == [
        ["sh", "-c", "(echo hi | tr a-z A-Z); exec env LC_ALL=C true"],
        ["env", "LC_ALL=C", "true"], ["true"]]
    assert root["end"] == "status 0"
    (sub,) = root["children"]                        # the ( ) subshell
    assert sub["execs"] == [] and sub["how"] in ("fork", "clone")
    assert sorted(c["execs"][-1]["argv"][0] for c in sub["children"] if c["execs"]) == ["tr"]
    text = appvirt("log", "ptree", "--tree").stdout
    assert "true" in text and "-> status 0" in text
