"""Read-only programs print exactly what they print natively (the differential test)."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.integration

COMMANDS = [
    "ls -la /etc /usr/bin/env",
    "stat -c '%n %s %a %U %G %F %Y' /etc/passwd /etc /usr/bin/sh /dev/null /nonexistent",
    "readlink -f /usr/bin/sh /proc/self/exe /dev/stdin",
    "find /usr/share/doc -maxdepth 2 | sort | head -200",
    "test -r /etc/passwd && echo readable; test -x /usr/bin/env && echo executable",
    "python3 -c 'import os, sys; print(sorted(os.listdir(\"/etc\"))[:20], os.stat(\"/etc\").st_mode,"
    " os.path.realpath(\"/usr/bin/python3\"), os.access(\"/etc/passwd\", os.R_OK), "
    "os.statvfs(\"/\").f_bsize, len(os.sched_getaffinity(0)))'",
    "nproc; cat /proc/self/status | grep -c Pid",
    "cd /usr/share && ls -d doc ../share/doc && pwd",
    "du -s /usr/share/doc/python3* | sort",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_same_output_as_native(appvirt, command):
    native = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    sandboxed = appvirt("run", "--", "sh", "-c", command)
    assert sandboxed.stdout == native.stdout
    assert sandboxed.returncode == native.returncode
    assert sandboxed.stderr == native.stderr
