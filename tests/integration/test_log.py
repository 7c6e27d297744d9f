"""The intercept log of real runs: completeness, readers, and a tracer killed mid-run."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest

from ..conftest import appvirt_cmd, write_policy

pytestmark = pytest.mark.integration


def _stats(stderr: str) -> dict[str, int]:
    """The calls intercepted: seccomp stops, and the calls answered from notifications."""
    line = next(x for x in stderr.splitlines() if "ptrace stops" in x)
    words = line.replace(",", "").split()
    notified = re.search(r"notified by seccomp \(no ptrace stop\) (\d+)", stderr)
    return {"seccomp": int(words[words.index("seccomp") - 1])
            + (int(notified.group(1)) if notified else 0)}


def test_level_all_has_one_complete_record_per_intercepted_call(appvirt, tmp_path):
    policy = write_policy(tmp_path / "all.yaml",
                          "log: {level: all}\nfiles: {default: readonly}\n")
    log = tmp_path / "run.jsonl"
    r = appvirt("run", "--stats", "--policy", policy, "--log", str(log), "--",
                "sh", "-c", "cat /etc/hostname >/dev/null; ls / >/dev/null; "
                "echo x > /etc/nope; exit 0")
    assert r.returncode == 0
    lines = log.read_text().splitlines()
    records = [json.loads(x) for x in lines]           # every line parses
    calls = [x for x in records if x["kind"] == "syscall"]
    assert len(calls) == _stats(r.stderr)["seccomp"]
    assert len({x["seq"] for x in records}) == len(records)
    for c in calls:
        assert {"time", "pid", "tid", "program", "syscall", "class", "args",
                "decision", "tracer_us"} <= c.keys()
    denied = [c for c in calls if c["decision"] == "denied"]
    assert denied and denied[0]["errno"] == "EROFS" and denied[0]["path"] == "/etc/nope"
    assert denied[0]["rule"] == "files.default" and "mode: overlay" in denied[0]["hint"]
    results = [x for x in records if x["kind"] == "result"]
    assert results, "calls that ran in the kernel report their result"
    assert {x["kind"] for x in records} >= {"exec", "spawn", "exit"}

    summary = appvirt("log", str(log), "--summary", "--format", "json")
    assert summary.returncode == 0
    data = json.loads(summary.stdout)
    assert sum(sum(d.values()) for d in data["calls"].values()) == len(calls)

    strace = appvirt("log", str(log), "--format", "strace")
    assert strace.returncode == 0
    assert 'openat(AT_FDCWD, "/etc/nope", O_WRONLY|O_CREAT|O_TRUNC' in strace.stdout
    assert "= -1 EROFS (Read-only file system) <denied files.default>" in strace.stdout

    merged = [json.loads(x) for x in appvirt("log", str(log), "--format", "json").stdout.split("\n") if x]
    assert not any(x["kind"] == "result" for x in merged)
    opened = [x for x in merged if x.get("syscall") == "openat" and x["decision"] == "allowed"
              and x.get("path") == "/etc/hostname"]
    assert opened and opened[0]["result"] >= 0


def test_filters(appvirt, tmp_path):
    policy = write_policy(tmp_path / "all.yaml",
                          "log: {level: all}\nfiles: {default: readonly}\n")
    log = tmp_path / "run.jsonl"
    appvirt("run", "--policy", policy, "--log", str(log), "--",
            "sh", "-c", "cat /etc/hostname; echo > /etc/x; true")
    out = appvirt("log", str(log), "--decision", "denied", "--format", "json").stdout
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows and all(x["decision"] == "denied" for x in rows)
    out = appvirt("log", str(log), "--path", "/etc/host*", "--format", "json").stdout
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows and all(x["path"] == "/etc/hostname" for x in rows)
    out = appvirt("log", str(log), "--syscall", "execve", "--class", "process",
                  "--format", "json").stdout
    assert all(json.loads(x)["syscall"] == "execve" for x in out.splitlines())
    table = appvirt("log", str(log))
    assert table.returncode == 0 and "denied" in table.stdout


def test_default_level_records_changes_and_process_events_only(appvirt, tmp_path):
    log = tmp_path / "run.jsonl"
    appvirt("run", "--log", str(log), "--", "sh", "-c", "cat /etc/hostname; echo > /etc/x")
    records = [json.loads(x) for x in log.read_text().splitlines()]
    calls = [x for x in records if x["kind"] == "syscall"]
    assert [(x["syscall"], x["decision"], x.get("path")) for x in calls] == [
        ("openat", "redirected", "/etc/x")]
    assert calls[0]["host_path"].endswith("/apps/default/upper/etc/x")
    assert any(x["kind"] == "exec" for x in records)


def test_log_of_a_killed_tracer_still_parses(home, ptrace_ok, tmp_path, demo):
    policy = write_policy(tmp_path / "all.yaml", "log: {level: all}\n")
    log = tmp_path / "run.jsonl"
    p = subprocess.Popen(appvirt_cmd("run", "--policy", policy, "--log", str(log), "--",
                                     "sh", "-c", "while :; do cat /etc/hostname; done"),
                         stdout=subprocess.DEVNULL)
    time.sleep(2.0)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    data = log.read_bytes()
    assert data.count(b"\n") > 10
    lines = data.split(b"\n")
    for line in lines[:-1]:
        json.loads(line)
    r = subprocess.run(appvirt_cmd("log", str(log), "--summary"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    # Reopening the log (a new run appending) cuts a torn tail, so every line parses.
    subprocess.run(appvirt_cmd("run", "--log", str(log), "--", "true"), timeout=60, check=True)
    for line in log.read_bytes().splitlines():
        json.loads(line)


def test_follow_prints_new_records(home, ptrace_ok, tmp_path):
    log = tmp_path / "run.jsonl"
    subprocess.run(appvirt_cmd("run", "--log", str(log), "--", "true"), check=True, timeout=60)
    f = subprocess.Popen(appvirt_cmd("log", str(log), "--follow", "--format", "strace"),
                         stdout=subprocess.PIPE, text=True)
    try:
        subprocess.run(appvirt_cmd("run", "--log", str(log), "--", "sh", "-c", "echo > /etc/zz"),
                       timeout=60, capture_output=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in f.stdout], daemon=True).start()
        deadline = time.time() + 20
        seen = ""
        while "redirected" not in seen and time.time() < deadline:
            try:
                seen += lines.get(timeout=0.5)
            except queue.Empty:
                pass
        assert '"/etc/zz"' in seen and "<redirected files.default ->" in seen
    finally:
        f.kill()
        f.wait()


def test_missing_log_is_a_clear_error(appvirt, tmp_path):
    r = appvirt("log", str(tmp_path / "none.jsonl"))
    assert r.returncode == 2
    assert r.stderr.startswith("appvirt: no intercept log at")


def test_a_killed_tracer_loses_no_record_of_what_the_program_changed(home, ptrace_ok, tmp_path):
    """Each change's record is handed over before the change resumes; the log's writer
    outlives the tracer (and a kill of its process group) and writes them all."""
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "run.jsonl"
    p = subprocess.Popen(appvirt_cmd("run", "--log", str(log), "--", "sh", "-c",
                                     "i=0; while [ $i -lt 300 ]; do i=$((i+1)); mkdir d$i; "
                                     "done; echo ready; exec sleep 60"),
                         cwd=work, stdout=subprocess.PIPE, start_new_session=True)
    assert p.stdout.readline() == b"ready\n"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert not list(work.iterdir()), "the host was changed"

    def made() -> list[str]:
        records = [json.loads(x) for x in log.read_bytes().splitlines()]
        return [r["path"] for r in records if r.get("syscall") in ("mkdir", "mkdirat")]
    deadline = time.monotonic() + 10
    while len(made()) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert made() == [str(work / f"d{i}") for i in range(1, 301)]
