"""Virtual identities under real ptrace, as root: what the program sees of its ids, that its
changes are consistent afterwards (children, /proc/self/status, capabilities), and that the
real ids never change."""

from __future__ import annotations

import os
import re
import sys

import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration


def _lines(r) -> list[str]:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


def test_a_chosen_user_sees_its_ids_everywhere_and_lacks_root_powers(appvirt, tmp_path, demo):
    policy = write_policy(tmp_path / "p.yaml", "app: ident\nhostname: box\n"
                          "identity: {uid: 1000, gid: 100, groups: [27, 4]}\n")
    out = _lines(appvirt("run", "--policy", policy, "--", demo("identity_probe"),
                         "id", "fork", "setuid:0", "hostname:evil", "setfsuid:1000"))
    assert out == ["ids 1000/1000/1000/1000 gid 100/100/100/100 groups 4,27 caps 0/0",
                   "status 1000/1000/1000/1000 gid 100/100/100/100 groups 4,27 caps 0/0",
                   "child ids 1000/1000/1000/1000 gid 100/100/100/100 groups 4,27 caps 0/0",
                   "status 1000/1000/1000/1000 gid 100/100/100/100 groups 4,27 caps 0/0",
                   "setuid=-1 EPERM", "sethostname=-1 EPERM", "setfsuid=1000"]
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "id; id -un 2>&1; python3 -c 'import os; print(os.getuid(), os.getgroups())'")
    lines = _lines(r)
    assert lines[0].startswith("uid=1000") and "gid=100(users)" in lines[0]
    assert lines[2] == "1000 [4, 27]"
    reg = appvirt("reg", "ident", "get", "machine/identity", "uid")
    assert reg.returncode == 0 and "1000" in reg.stdout


def test_virtual_root_drops_and_regains_privileges_as_the_kernel_allows(appvirt, tmp_path, demo):
    policy = write_policy(tmp_path / "p.yaml", "app: vroot\nidentity: virtual-root\n")
    out = _lines(appvirt("run", "--policy", policy, "--", demo("identity_probe"),
                         "setgroups:10,20", "setresuid:1000,1000,0", "id", "fork",
                         "setuid:0", "id", "setresuid:1000,1000,1000", "setuid:0",
                         "capclear"))
    full = out[2].split()[-1].split("/")[1]              # the permitted set of root
    assert out[:2] == ["setgroups=0", "setresuid=0"]
    assert out[2] == f"ids 1000/1000/0/1000 gid 0/0/0/0 groups 10,20 caps 0/{full}"
    assert out[3] == f"status 1000/1000/0/1000 gid 0/0/0/0 groups 10,20 caps 0/{full}"
    assert out[4].startswith("child ids 1000/1000/0/1000 ")
    assert out[6] == "setuid=0"
    assert out[7] == f"ids 1000/0/0/0 gid 0/0/0/0 groups 10,20 caps {full}/{full}"
    # Every id left 0: the capabilities are gone for good, and so is the way back.
    assert out[9:] == ["setresuid=0", "setuid=-1 EPERM", "capclear=0"]


def test_exec_recomputes_capabilities_and_honours_set_user_id_files(appvirt, tmp_path, demo):
    probe = demo("identity_probe")
    suid = tmp_path / "suid_probe"
    suid.write_bytes(open(probe, "rb").read())
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    policy = write_policy(tmp_path / "p.yaml", "app: vexec\nidentity: {uid: 1000}\n")
    out = _lines(appvirt("run", "--policy", policy, "--", str(suid), "id"))
    # The file is set-user-ID root: the effective id becomes 0, with root's capabilities.
    assert out[0].startswith("ids 1000/0/0/0 gid 1000/1000/1000/1000 ")
    assert not out[0].endswith("caps 0/0")
    out = _lines(appvirt("run", "--policy", policy, "--", probe, "id"))
    assert out[0].endswith("caps 0/0")


def test_without_the_section_the_real_ids_show_and_a_real_drop_is_respected(appvirt, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    code = ("import os; print(os.getuid(), os.access(%r, os.R_OK)); os.setresuid(65534, 65534,"
            " 65534); print(os.getuid(), os.access(%r, os.R_OK))") % (str(secret), str(secret))
    r = appvirt("run", "--", sys.executable, "-c", code)
    # After the real drop, access(2) is the kernel's for the new ids, not appvirt's (root's).
    assert _lines(r) == ["0 True", "65534 False"]


def test_an_id_change_that_changes_nothing_keeps_the_tracers_answers(appvirt, tmp_path):
    """GNU make switches between equal real and effective ids: its processes still act with
    the tracer's rights, so the compiled loop keeps answering them; a real drop, and a return
    to the tracer's ids, are followed as they happen."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    code = ("import os; s = %r; ok = lambda: os.access(s, os.R_OK, effective_ids=True); "
            "os.setregid(os.getgid(), os.getegid()); print(ok()); os.setresuid(0, 65534, 0); "
            "print(ok()); os.setresuid(0, 0, 0); print(ok()); "
            "[os.stat('/usr') for i in range(300)]") % str(secret)
    r = appvirt("run", "--stats", "--", sys.executable, "-c", code)
    assert _lines(r) == ["True", "False", "True"]
    done = re.search(r"answered by the compiled loop: .*newfstatat (\d+)", r.stderr)
    assert done and int(done.group(1)) >= 300, r.stderr


def _digest(*paths: str) -> list[bytes]:
    import hashlib
    return [hashlib.sha256(open(p, "rb").read()).digest() for p in paths]


def test_useradd_id_and_userdel_work_inside_and_leave_the_host_alone(appvirt, tmp_path):
    import shutil
    if not shutil.which("useradd"):
        pytest.skip("useradd is not installed")
    db = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow")
    before = _digest(*db)
    policy = write_policy(tmp_path / "p.yaml", "app: users\nidentity: virtual-root\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "groupadd staff2 && useradd -m -G staff2 alice && id alice && "
                "getent passwd alice && stat -c '%U:%G' /home/alice")
    lines = _lines(r)
    assert lines[0].startswith("uid=") and "(alice)" in lines[0] and "(staff2)" in lines[0]
    assert lines[1].startswith("alice:x:") and lines[1].endswith(":/home/alice:/bin/sh")
    assert lines[2] == "alice:alice"
    # A later run still knows alice; then userdel removes her.
    assert _lines(appvirt("run", "--policy", policy, "--", "id", "-un", "alice")) == ["alice"]
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "userdel -r alice 2>/dev/null; id alice")
    assert r.returncode != 0 and "no such user" in r.stderr
    assert _digest(*db) == before and not os.path.exists("/home/alice")


def test_device_nodes_made_by_a_virtual_root_are_stand_ins_that_stat_and_tar_see(
        appvirt, tmp_path):
    where = tmp_path / "devs"
    policy = write_policy(tmp_path / "p.yaml", "app: devnodes\nidentity: virtual-root\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"mkdir {where} && cd {where} && mknod null c 1 3 && mknod sda b 8 0 && "
                "chmod 666 null && stat -c '%F %t:%T %a' null sda && "
                "python3 -c 'import os; print(oct(os.fstat(os.open(\"sda\", 0)).st_mode))' && "
                "head -c 4 sda | wc -c && tar cf ../d.tar null sda && tar tvf ../d.tar")
    lines = _lines(r)
    # Reading the stand-in of a disk reads nothing: it is an empty file, not the disk.
    assert lines[:4] == ["character special file 1:3 666", "block special file 8:0 644",
                         "0o60644", "0"]
    assert lines[4].startswith("crw-rw-rw- root/root") and lines[4].endswith(" null")
    assert lines[5].startswith("brw-r--r-- root/root") and lines[5].endswith(" sda")
    assert not where.exists()                        # only in the overlay
    # Without an identity no device node can be made at all.
    r = appvirt("run", "--", "mknod", str(tmp_path / "x"), "c", "1", "3")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_what_a_chosen_user_creates_is_its_own_and_the_host_is_untouched(appvirt, tmp_path, home):
    work = tmp_path / "work"
    work.mkdir()
    policy = write_policy(tmp_path / "p.yaml", "app: maker\nidentity: {uid: 1000, gid: 100}\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"cd {work} && mkdir sub && : > f && ln -s f l && mkfifo p && "
                "stat -c '%n %u %g' sub f l p")
    assert _lines(r) == [f"{n} 1000 100" for n in ("sub", "f", "l", "p")]
    assert list(work.iterdir()) == []                       # the host directory stays empty
    upper = home / "apps" / "maker" / "upper" / str(work).lstrip("/")
    for name in ("sub", "f", "l", "p"):                     # appvirt is root: really theirs
        st = os.lstat(upper / name)
        assert (st.st_uid, st.st_gid) == (1000, 100), name
    # Below a set-group-ID directory a new file takes the directory's group, as natively.
    policy = write_policy(tmp_path / "p2.yaml", "app: maker\n"
                          "identity: {uid: 1000, gid: 100, groups: [27]}\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"cd {work} && mkdir g && chgrp 27 g && chmod 2775 g && : > g/f && "
                "stat -c '%n %u %g' g g/f")
    assert _lines(r) == ["g 1000 27", "g/f 1000 27"]


def test_under_virtual_root_new_files_stay_roots(appvirt, tmp_path, home):
    work = tmp_path / "work"
    work.mkdir()
    policy = write_policy(tmp_path / "p.yaml", "app: vmaker\nidentity: virtual-root\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"cd {work} && : > f && mkdir d && stat -c '%n %u %g' f d")
    assert _lines(r) == ["f 0 0", "d 0 0"]
