"""`appvirt vmexit replay` on a log that a real `appvirt run` wrote."""

from __future__ import annotations

import json

import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration


def test_replay_of_a_real_run(appvirt, tmp_path):
    policy = write_policy(tmp_path / "all.yaml", "log: {level: all}\n")
    log = tmp_path / "run.jsonl"
    r = appvirt("run", "--policy", policy, "--log", str(log), "--",
                "sh", "-c", "ls /etc > /dev/null; cat /etc/hostname > /dev/null; rm /etc/x")
    assert r.returncode == 1          # rm of a missing file on a read-only host fails
    out = appvirt("vmexit", "replay", str(log), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    calls = sum(1 for line in log.read_text().splitlines()
                if json.loads(line)["kind"] in ("syscall", "spawn", "exec"))
    allowed_execs = sum(1 for line in log.read_text().splitlines()
                        if (rec := json.loads(line))["kind"] == "syscall"
                        and rec["syscall"] == "execve" and rec["decision"] == "allowed")
    assert report["totals"]["calls"] == calls - allowed_execs
    classes = {c["class"] for c in report["classes"]}
    assert {"file open/create", "process creation"} <= classes
    assert report["totals"]["tracer_us"] > 0
