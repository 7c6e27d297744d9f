"""Machine state under real ptrace, as root: host name, reboot, modules.

Each test checks what the program saw, that the virtual state agrees afterwards (and in the
store), and that the host did not change.
"""

from __future__ import annotations

import os

import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration


def _host_names() -> tuple[str, str]:
    with open("/proc/sys/kernel/domainname") as f:
        return os.uname().nodename, f.read().strip()


def test_hostname_set_inside_is_seen_by_every_reader_and_kept(appvirt, tmp_path, demo):
    probe = demo("uts_probe")
    host = _host_names()
    policy = write_policy(tmp_path / "p.yaml", "app: uts\nhostname: {name: box1, domain: lan}\n")
    r = appvirt("run", "--policy", policy, "--", probe)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["uname=box1 gethostname=box1 proc=box1",
                                     "domain=lan getdomainname=lan proc=lan"]
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"hostname newname && {probe} && uname -n && hostname && "
                "python3 -c 'import socket; print(socket.gethostname())'")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["uname=newname gethostname=newname proc=newname",
                                     "domain=lan getdomainname=lan proc=lan",
                                     "newname", "newname", "newname"]
    r = appvirt("run", "--policy", policy, "--", probe, "third", "wan")
    assert r.stdout.splitlines()[:2] == ["sethostname=0", "setdomainname=0"]
    r = appvirt("run", "--policy", policy, "--", "uname", "-n")
    assert r.stdout == "third\n"                           # a later run still sees it
    reg = appvirt("reg", "uts", "get", "machine/uts", "hostname")
    assert reg.returncode == 0 and "third" in reg.stdout
    assert _host_names() == host                           # the host's names never changed


def test_without_a_hostname_section_setting_it_is_refused(appvirt, demo):
    host = _host_names()
    r = appvirt("run", "--", demo("uts_probe"), "evil", "evil")
    assert r.stdout.splitlines()[:2] == ["sethostname=-1 EPERM", "setdomainname=-1 EPERM"]
    assert f"uname={host[0]} " in r.stdout
    r = appvirt("run", "--", "hostname", "evil")
    assert r.returncode != 0
    assert _host_names() == host


def _boots(appvirt, tmp_path, demo, policy_text: str, *args: str):
    policy = write_policy(tmp_path / "p.yaml", "app: power\n" + policy_text)
    counter = tmp_path / "boots"
    r = appvirt("run", "--policy", policy, "--", demo("reboot_probe"), str(counter), *args)
    assert not counter.exists()             # the counter lives in the app's overlay
    return r


def test_reboot_under_restart_starts_the_program_again_with_its_state(appvirt, tmp_path, demo):
    boot_id = open("/proc/sys/kernel/random/boot_id").read()
    r = _boots(appvirt, tmp_path, demo, "reboot: restart\n", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["boot 1", "boot 2", "boot 3", ""]
    assert r.stderr.count("starting it again") == 2
    log = appvirt("log", "power", "--format", "strace").stdout
    assert log.count("+++ machine restart") == 2
    assert open("/proc/sys/kernel/random/boot_id").read() == boot_id   # the host did not


def test_restarts_are_limited_and_halt_powers_off(appvirt, tmp_path, demo):
    r = _boots(appvirt, tmp_path, demo, "reboot: {action: restart, max_restarts: 1}\n", "9")
    assert r.returncode == 124 and r.stdout.split() == ["boot", "1", "boot", "2"]
    assert "limit of 1 restarts" in r.stderr
    r = _boots(appvirt, tmp_path, demo, "reboot: restart\n", "99", "halt")
    assert r.returncode == 124 and r.stdout.split() == ["boot", "3"]


def test_reboot_under_exit_ends_the_tree_and_deny_refuses(appvirt, tmp_path, demo):
    r = _boots(appvirt, tmp_path, demo, "reboot: exit\n", "5")
    assert r.returncode == 124 and r.stdout == "boot 1\n"
    r = _boots(appvirt, tmp_path, demo, "reboot: exit\n", "5", "cad")
    assert r.returncode == 0 and r.stdout == "boot 2\nreboot=0\n"
    r = _boots(appvirt, tmp_path, demo, "", "5")
    assert r.returncode == 1 and r.stdout == "boot 3\nreboot=-1 EPERM\n"


def test_reboot_ends_every_process_of_the_tree(appvirt, tmp_path):
    """A background child must not outlive its machine."""
    policy = write_policy(tmp_path / "p.yaml", "reboot: exit\n")
    marker = tmp_path / "survivor"
    r = appvirt("run", "--policy", policy, "--", "python3", "-c", f"""
import ctypes, os, subprocess, time
open('{tmp_path}/before', 'w').close()
subprocess.Popen(['sh', '-c', 'sleep 2; echo alive > {marker}'], start_new_session=True)
time.sleep(0.2)
ctypes.CDLL(None).reboot(0x4321FEDC)
print('still running')
""")
    assert r.returncode == 124 and "still running" not in r.stdout
    import time
    time.sleep(2.5)
    r = appvirt("overlay", "p", "ls")
    assert r.returncode == 0 and "before" in r.stdout
    assert "survivor" not in r.stdout and not marker.exists()


@pytest.fixture
def demo_ko(tmp_path):
    ko = tmp_path / "appvirt_demo.ko"
    import subprocess
    subprocess.run(["cc", "-c", "-o", str(ko), "demo_apps/demo_module.c"], check=True,
                   timeout=120)
    return str(ko)


def _proc_modules() -> bytes:
    try:
        with open("/proc/modules", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b"(none)"


def test_virtual_modules_load_list_and_unload(appvirt, tmp_path, demo, demo_ko):
    host = _proc_modules()
    policy = write_policy(tmp_path / "p.yaml", "app: mods\nmodules: virtual\n")
    r = appvirt("run", "--policy", policy, "--", demo("module_probe"), demo_ko,
                "appvirt_demo", 'greeting="hello world" n=3')
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["finit_module=0", "listed=yes", "delete_module=0", "listed=no"]
    r = appvirt("run", "--policy", policy, "--", demo("module_probe"), tmp_path / "p.yaml", "x")
    assert r.stdout.split()[:4] == ["finit_module=-1", "ENOEXEC", "listed=no",
                                    "delete_module=-1"]
    assert _proc_modules() == host


def test_without_modules_virtual_loading_is_refused(appvirt, demo, demo_ko):
    host = _proc_modules()
    r = appvirt("run", "--", demo("module_probe"), demo_ko, "appvirt_demo")
    assert r.stdout.split()[:2] == ["finit_module=-1", "EPERM"]
    assert _proc_modules() == host


@pytest.mark.skipif(not os.path.exists("/usr/sbin/insmod"), reason="kmod is not installed")
def test_insmod_lsmod_rmmod_from_kmod(appvirt, tmp_path, demo_ko):
    host = _proc_modules()
    policy = write_policy(tmp_path / "p.yaml", "app: kmod\nmodules: virtual\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"insmod {demo_ko} greeting=hi && lsmod | grep -c '^appvirt_demo '")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "1\n"
    reg = appvirt("reg", "kmod", "get", "machine/modules/appvirt_demo", "params")
    assert reg.returncode == 0 and "greeting=hi" in reg.stdout
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"insmod {demo_ko}; rmmod appvirt_demo && lsmod | grep -c '^appvirt_demo '")
    assert "File exists" in r.stderr                      # still loaded from the first run
    assert r.stdout == "0\n"
    assert appvirt("reg", "kmod", "ls", "machine/modules").stdout.count("appvirt_demo") == 0
    assert _proc_modules() == host
