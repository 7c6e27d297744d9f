"""The configuration store inside the sandbox, under real ptrace: the registry tree worked on
with ordinary tools and languages, and /proc/sys. Each test checks what the program saw, what
the store holds afterwards (`appvirt reg`), and that the host did not change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from ..conftest import appvirt_cmd, write_policy

pytestmark = pytest.mark.integration

R = "/run/appvirt/registry"
POLICY = """app: {app}
registry:
  keys:
    app/settings:
      theme: light
      retries: 3
    app/plugins/spell:
      enabled: true
"""


@pytest.fixture
def policy(tmp_path):
    def make(app: str, extra: str = "") -> str:
        return write_policy(tmp_path / f"{app}.yaml", POLICY.format(app=app) + extra)
    return make


@pytest.fixture(autouse=True)
def _host_has_no_registry():
    before = os.path.lexists("/run/appvirt")
    yield
    assert not os.path.lexists(R)
    assert os.path.lexists("/run/appvirt") == before


def sh(appvirt, policy_file: str, script: str):  # type: ignore[no-untyped-def]
    r = appvirt("run", "--policy", policy_file, "--", "sh", "-c", script)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def reg_get(appvirt, app: str, key: str, name: str):  # type: ignore[no-untyped-def]
    r = appvirt("reg", app, "get", key, name, "--json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_keys_are_directories_and_values_files_for_shell_tools(appvirt, policy):
    p = policy("shell")
    out = sh(appvirt, p, f"mkdir -p {R}/app/ui/colours && echo dark > {R}/app/ui/theme && "
                         f"cat {R}/app/ui/theme && ls {R}/app/ui && ls {R} && ls /run/appvirt && "
                         f"echo 42 > {R}/app/ui/size && echo more >> {R}/app/ui/theme && "
                         f"cat {R}/app/ui/theme && stat -c '%n %a %s %h' {R}/app/ui "
                         f"{R}/app/ui/size && cd {R}/app/ui && pwd && ls -a")
    assert out.splitlines() == [
        "dark", "colours", "theme", "app", "registry",
        "dark", "more", f"{R}/app/ui 755 4096 3", f"{R}/app/ui/size 644 3 1",
        f"{R}/app/ui", ".", "..", "colours", "size", "theme"]
    assert reg_get(appvirt, "shell", "app/ui", "theme")["value"] == "dark\nmore"
    size = reg_get(appvirt, "shell", "app/ui", "size")
    assert (size["type"], size["value"]) == ("integer", 42)


def test_rm_and_rm_r_delete_values_and_keys(appvirt, policy):
    p = policy("remove")
    out = sh(appvirt, p, f"cd {R}/app && mkdir -p a/b && touch a/b/v a/w && rm a/w && ls a && "
                         f"rm -r a && ls && rmdir plugins/spell 2>&1; rm -r plugins && ls")
    assert out.splitlines() == [
        "b", "plugins", "settings",
        "rmdir: failed to remove 'plugins/spell': Directory not empty", "settings"]
    r = appvirt("reg", "remove", "ls", "app", "--json")
    assert [k["name"] for k in json.loads(r.stdout)["subkeys"]] == ["settings"]


def test_base_keys_show_and_can_be_deleted_while_the_base_stays(appvirt, policy):
    p = policy("based")
    out = sh(appvirt, p, f"cat {R}/app/settings/theme {R}/app/settings/retries "
                         f"{R}/app/plugins/spell/enabled && rm {R}/app/settings/theme && "
                         f"rm -r {R}/app/plugins && echo 5 > {R}/app/settings/retries && "
                         f"ls {R}/app {R}/app/settings")
    assert out.splitlines() == ["light", "3", "1", f"{R}/app:", "settings", "",
                                f"{R}/app/settings:", "retries"]
    assert reg_get(appvirt, "based", "app/settings", "theme") is None
    assert reg_get(appvirt, "based", "app/settings", "retries")["value"] == 5
    diff = appvirt("reg", "based", "diff", "--json")
    assert diff.returncode == 1                               # changes found
    changes = {(c["change"], c["key"], c["name"]) for c in json.loads(diff.stdout)["changes"]}
    assert ("value removed", "app/settings", "theme") in changes
    assert ("key removed", "app/plugins", None) in changes
    assert ("value changed", "app/settings", "retries") in changes
    # The base is the policy's, unchanged: deleted in the app's view only, and still so on
    # the next run.
    merged = appvirt("reg", "based", "export", "--merged").stdout
    assert "theme" not in merged and "plugins" not in merged
    assert sh(appvirt, p, f"ls {R}/app; cat {R}/app/settings/retries") == "settings\n5\n"


def test_a_python_program_reads_writes_and_renames_values(appvirt, policy, tmp_path):
    p = policy("python")
    prog = tmp_path / "prog.py"
    prog.write_text(f"""
import os, stat
R = {R!r} + "/app/py"
os.makedirs(R)
with open(R + "/count", "w") as f:
    f.write("12")
with open(R + "/blob", "wb") as f:
    f.write(bytes([0, 1, 2, 255]))
with open(R + "/.new", "w") as f:              # an atomic save: write, then rename over
    f.write("first line\\nsecond line\\n")
os.replace(R + "/.new", R + "/notes")
print(open(R + "/count").read().strip(), open(R + "/blob", "rb").read().hex())
print(sorted(os.listdir(R)))
st = os.stat(R + "/notes")
print(stat.S_IMODE(st.st_mode) == 0o644, st.st_size)
try:
    os.rename(R, R + "2")
except OSError as e:
    print(e.strerror)
try:
    os.symlink("x", R + "/link")
except OSError as e:
    print(e.strerror)
""")
    r = appvirt("run", "--policy", p, "--", "python3", str(prog))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["12 000102ff", "['blob', 'count', 'notes']",
                                     "True 23", "Invalid cross-device link",
                                     "Operation not permitted"]
    assert reg_get(appvirt, "python", "app/py", "count")["type"] == "integer"
    blob = reg_get(appvirt, "python", "app/py", "blob")
    assert (blob["type"], blob["value"]) == ("binary", "000102ff")
    assert reg_get(appvirt, "python", "app/py", "notes")["value"] == "first line\nsecond line"
    assert reg_get(appvirt, "python", "app/py", ".new") is None


def test_names_the_store_refuses_fail_as_a_kernel_would(appvirt, policy):
    p = policy("refused")
    out = sh(appvirt, p, f"cd {R}; echo x > value-at-root; echo $?; "
                         f"echo x > app/settings/theme/sub; echo $?; "
                         f"mkfifo app/fifo; echo $?; echo x > /run/appvirt/other; echo $?")
    assert out.split() == ["2", "2", "1", "2"]


def test_the_tree_is_writable_under_a_read_only_policy(appvirt, policy):
    """Without overlay modes the kernel lists directories itself (getdents is not traced):
    the spool directories it lists hold exactly the store's entries."""
    p = policy("readonly", "files: {default: readonly}\n")
    out = sh(appvirt, p, f"echo v > {R}/app/settings/new; ls {R}/app/settings; "
                         f"rm {R}/app/settings/theme; ls {R}/app/settings; touch /etc/x; echo $?")
    assert out.split() == ["new", "retries", "theme", "new", "retries", "1"]
    assert reg_get(appvirt, "readonly", "app/settings", "new")["value"] == "v"


def test_a_policy_can_mount_the_tree_elsewhere(appvirt, policy):
    assert not os.path.lexists("/etc/appvirt-test-registry")
    p = policy("elsewhere", "  path: /etc/appvirt-test-registry\n")
    out = sh(appvirt, p, "ls /etc/appvirt-test-registry/app; ls /run/appvirt 2>&1 | wc -l")
    assert out.split() == ["plugins", "settings", "1"]
    assert not os.path.lexists("/etc/appvirt-test-registry")


def _host_sysctls() -> tuple[str, str]:
    with open("/proc/sys/vm/swappiness") as a, open("/proc/sys/net/ipv4/ip_forward") as b:
        return a.read(), b.read()


def test_sysctl_writes_stay_in_the_store_and_never_reach_the_host(appvirt, policy):
    host = _host_sysctls()
    swap = "13" if host[0].strip() != "13" else "14"
    fwd = "1" if host[1].strip() == "0" else "0"
    p = policy("sysctl")
    out = sh(appvirt, p, f"sysctl -w vm.swappiness={swap} && sysctl vm.swappiness && "
                         f"echo {fwd} > /proc/sys/net/ipv4/ip_forward && "
                         f"cat /proc/sys/net/ipv4/ip_forward && sysctl -n net.ipv4.ip_forward && "
                         f"cat {R}/machine/sysctl/vm/swappiness")
    assert out.splitlines() == [f"vm.swappiness = {swap}", f"vm.swappiness = {swap}",
                                fwd, fwd, swap]
    assert _host_sysctls() == host
    assert reg_get(appvirt, "sysctl", "machine/sysctl/vm", "swappiness")["value"] == int(swap)
    # A later run reads what was written; writing it through the registry tree works too.
    out = sh(appvirt, p, f"cat /proc/sys/vm/swappiness; echo 21 > {R}/machine/sysctl/vm/"
                         f"swappiness; sysctl -n vm.swappiness net.ipv4.ip_forward")
    assert out.split() == [swap, "21", fwd]
    assert _host_sysctls() == host
    assert appvirt("reg", "sysctl", "rm", "machine/sysctl").returncode != 0   # not empty
    assert appvirt("reg", "sysctl", "rm", "machine/sysctl", "-r").returncode == 0
    out = sh(appvirt, p, "cat /proc/sys/vm/swappiness")
    assert out == host[0]                                   # the host's again


def test_sysctl_writes_are_refused_as_on_the_host_and_reopens_stay_virtual(appvirt, policy,
                                                                          tmp_path):
    host = _host_sysctls()
    p = policy("sysctl-edge")
    prog = tmp_path / "reopen.py"
    prog.write_text("""
import errno, os
def attempt(path, flags):
    try:
        os.close(os.open(path, flags))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print(attempt("/proc/sys/fs/dentry-state", os.O_WRONLY),
      attempt("/proc/sys/vm/no-such-sysctl", os.O_WRONLY | os.O_CREAT),
      attempt("/proc/sys/vm", os.O_WRONLY),
      os.access("/proc/sys/vm/swappiness", os.W_OK) == (os.geteuid() == 0))
fd = os.open("/proc/sys/vm/swappiness", os.O_RDONLY)     # read-only, then reopened to write
w = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
os.write(w, b"17\\n")
os.close(w)
print(open("/proc/sys/vm/swappiness").read().strip())
""")
    r = appvirt("run", "--policy", p, "--", "python3", str(prog))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["EACCES ENOENT EISDIR True", "17"]
    assert _host_sysctls() == host


def test_values_folded_before_appvirt_is_killed_are_kept(appvirt, policy, home):
    p = policy("killed")
    env = {**os.environ, "APPVIRT_HOME": str(home)}
    proc = subprocess.Popen(appvirt_cmd("run", "--policy", p, "--", "sh", "-c",
                                        f"echo kept > {R}/app/settings/theme; sleep 60"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (reg_get(appvirt, "killed", "app/settings", "theme") or {}).get("value") != "kept":
            assert time.monotonic() < deadline, "the value was not folded by the next exec"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert reg_get(appvirt, "killed", "app/settings", "theme")["value"] == "kept"
    assert sh(appvirt, p, f"cat {R}/app/settings/theme") == "kept\n"
    assert not list((home / "apps" / "killed").glob("spool-*"))   # swept by the next run
