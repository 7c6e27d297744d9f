"""Fail closed, as root: calls that bypass or defeat interception never reach the kernel."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration

# probe -> what the sandboxed program must see
REFUSED = {
    "reboot": "EPERM", "init_module": "EPERM", "finit_module": "EPERM", "mount": "EPERM",
    "settimeofday": "EPERM", "clock_settime": "EPERM", "io_uring_setup": "ENOSYS",
    "userfaultfd": "ENOSYS", "ptrace": "EPERM", "unshare": "EPERM", "clone_untraced": "EPERM",
    "clone3": "ENOSYS", "seccomp_listener": "EPERM", "personality": "EPERM",
    "rlimit_core": "EPERM", "tiocsti": "EPERM", "unknown_syscall": "ENOSYS",
    "munmap_slots": "EPERM", "map_over_slots": "EPERM", "write_slots": "EIO",
    "mprotect_slots": "EACCES",
}


def _probe(appvirt, demo, *names: str, policy: str = "policies/default.yaml") -> dict[str, str]:
    r = appvirt("run", "--policy", policy, "--", demo("probes"), *names)
    assert r.returncode == 0, r.stderr
    return dict(line.split(": ", 1) for line in r.stdout.splitlines())


def test_dangerous_calls_never_reach_the_kernel(appvirt, demo):
    before = time.time()
    modules = Path("/proc/modules").read_bytes() if Path("/proc/modules").exists() else b""
    seen = _probe(appvirt, demo, *REFUSED)
    assert seen == REFUSED
    assert abs(time.time() - before) < 60          # the host clock was not moved
    if modules:
        assert Path("/proc/modules").read_bytes() == modules


def test_the_same_calls_natively_behave_differently(demo):
    """Shows the probe can tell: natively (as root) these calls are not refused the same way."""
    r = subprocess.run([demo("probes"), "personality", "clone3", "unknown_syscall"],
                       capture_output=True, text=True, timeout=30)
    native = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert native["personality"] == "ok"
    assert native["clone3"] != "ENOSYS"


@pytest.mark.parametrize("probe", ["x32", "int80"])
def test_other_syscall_abis_kill_the_process(appvirt, demo, probe):
    r = appvirt("run", "--", demo("probes"), probe)
    assert r.returncode == 128 + 31          # SIGSYS from SECCOMP_RET_KILL_PROCESS
    assert r.stdout == ""


def test_processes_outside_are_invisible(appvirt, demo):
    outsider = subprocess.Popen(["sleep", "30"])
    try:
        seen = _probe(appvirt, demo, f"kill_outside={outsider.pid}", "kill_all",
                      f"proc_mem_outside={outsider.pid}", f"proc_stat_outside={outsider.pid}")
        assert seen == {"kill_outside": "ESRCH", "kill_all": "ESRCH",
                        "proc_mem_outside": "EACCES", "proc_stat_outside": "ok"}
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


def test_kill_all_reaches_only_members(appvirt, tmp_path):
    """kill(-1) from inside signals the sandbox's own processes, nothing else."""
    outsider = subprocess.Popen(["sh", "-c", "trap 'exit 9' USR1; while :; do sleep 0.1; done"])
    try:
        r = appvirt("run", "--", "sh", "-c",
                    "sh -c 'trap \"echo member got it; exit 0\" USR1; "
                    "while :; do sleep 0.05; done' & sleep 0.5; kill -USR1 -1; wait")
        assert "member got it" in r.stdout
        time.sleep(0.3)
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


def test_bad_pointers_get_efault_and_the_tracer_survives(appvirt, demo):
    seen = _probe(appvirt, demo, "open_null", "open_bad_pointer", "open_page_edge_no_nul",
                  "open_page_edge_nul", "open_too_long", "stat_bad_buffer")
    assert seen == {"open_null": "EFAULT", "open_bad_pointer": "EFAULT",
                    "open_page_edge_no_nul": "EFAULT", "open_page_edge_nul": "ok",
                    "open_too_long": "ENAMETOOLONG", "stat_bad_buffer": "EFAULT"}


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                       if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.mark.slow
@pytest.mark.parametrize("second", ["readonly", "overlay"])
def test_path_flipping_race_never_reaches_the_second_path(appvirt, demo, tmp_path, home, second):
    """Threat #11: one thread flips the path between one the policy lets through to the host
    and one it refuses (readonly) or redirects (overlay), while another opens it for writing,
    100,000 times on two CPUs. The second path must never appear on the host."""
    allowed, other = tmp_path / "a", tmp_path / "b"
    allowed.mkdir()
    other.mkdir()
    policy = write_policy(tmp_path / "p.yaml", f"""app: race
files:
  rules:
    - {{path: '{allowed}', mode: passthrough}}
    - {{path: '{other}', mode: {second}}}
""")
    before = _tree_hash(other)
    assert psutil.cpu_count() >= 2 or pytest.skip("needs two CPUs to race")
    r = appvirt("run", "--policy", policy, "--", demo("toctou"), str(allowed / "f"),
                str(other / "f"), "100000", timeout=300)
    assert r.returncode == 0, r.stderr
    opened, failed = (int(x) for x in r.stdout.split()[1::2])
    assert opened + failed == 100000
    assert not (other / "f").exists()
    assert _tree_hash(other) == before
    upper_copy = home / "apps" / "race" / "upper" / str(other / "f").lstrip("/")
    if second == "readonly":
        assert opened > 0 and failed > 0          # the flipper really raced the opens
    else:
        assert failed == 0 and upper_copy.exists()    # the redirected opens landed there


def test_the_race_probe_wins_without_the_sandbox(demo, tmp_path):
    """Without appvirt the same probe creates both files: the race is real."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    subprocess.run([demo("toctou"), str(tmp_path / "a/f"), str(tmp_path / "b/f"), "20000"],
                   check=True, capture_output=True, timeout=60)
    assert (tmp_path / "a/f").exists() and (tmp_path / "b/f").exists()


def test_readonly_host_is_untouched(appvirt, tmp_path):
    policy = write_policy(tmp_path / "ro.yaml", "files: {default: readonly}\n")
    etc_before = _tree_hash(Path("/etc")) if os.access("/etc", os.R_OK) else {}
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "echo x > /etc/appvirt-probe; rm -f /etc/hostname; chmod 777 /etc/passwd; "
                "mkdir /etc/appvirt-dir; ln -s /x /etc/appvirt-link; touch /etc/passwd; true")
    assert r.returncode == 0
    assert "Read-only file system" in r.stderr
    assert _tree_hash(Path("/etc")) == etc_before
