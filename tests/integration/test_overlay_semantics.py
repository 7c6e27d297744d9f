"""Overlay semantics under real ptrace: links and fds to host files, sockets, listings, and
what the program can learn about where the upper layer really is."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def digest(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode


@pytest.fixture
def host_file(tmp_path) -> Path:
    f = tmp_path / "host.txt"
    f.write_text("original\n")
    f.chmod(0o644)
    return f


def test_a_link_to_a_host_file_never_writes_the_host(appvirt, host_file, tmp_path):
    before = digest(host_file)
    r = appvirt("run", "--", "sh", "-c",
                f"ln {host_file} {tmp_path}/alias && echo appended >> {tmp_path}/alias && "
                f"cat {host_file} {tmp_path}/alias && stat -c %h {host_file}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "original\nappended\noriginal\nappended\n2\n"   # one file, two names
    assert digest(host_file) == before and not (tmp_path / "alias").exists()


def test_changes_through_an_fd_on_a_host_file_land_on_the_copy(appvirt, host_file):
    before = digest(host_file)
    code = (f"import os\nfd = os.open('{host_file}', os.O_RDONLY)\nos.fchmod(fd, 0o600)\n"
            f"os.utime(fd, (0, 0))\nprint(oct(os.stat('{host_file}').st_mode & 0o777), "
            f"os.stat('{host_file}').st_mtime)")
    r = appvirt("run", "--", "python3", "-c", code)
    assert (r.returncode, r.stdout) == (0, "0o600 0.0\n"), r.stderr
    assert digest(host_file) == before


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_a_host_directory_keeps_its_identity_when_the_program_writes_in_it(appvirt, tmp_path,
                                                                           compiled):
    """A host directory the program writes in gets an upper copy, yet stays the same
    directory (st_dev, st_ino) for stat, for an fd on it, in its parent's listing and as the
    cwd, before and after, with the mode the program gave it, in both loops; the host's
    directory is unchanged."""
    top = tmp_path / "top"               # (tmp_path holds appvirt's home: Python lists it)
    d = top / "d"
    (d / "sub").mkdir(parents=True)
    d.chmod(0o755)
    host = d.stat()
    code = ("import ctypes, os, struct\n"
            "def ids():\n"
            "    fd = os.open('d', os.O_RDONLY | os.O_DIRECTORY)\n"
            "    got = [(s.st_dev, s.st_ino) for s in (os.stat('d'), os.lstat('d/'), os.fstat(fd),"
            " os.stat('d/sub/..'), os.stat('/proc/self/cwd/d'))]\n"
            "    os.close(fd)\n"
            "    return got\n"
            "before = ids()\n"
            "open('d/new', 'w').close(); os.chmod('d', 0o700)\n"
            "after = ids()\n"
            "listed = [e.inode() for e in os.scandir('.') if e.name == 'd']\n"
            "os.chdir('d'); cwd = [os.stat(p) for p in ('.', '/proc/self/cwd')]\n"
            "fd = os.open('.', os.O_RDONLY)\n"
            "buf = ctypes.create_string_buffer(144)\n"     # the kernel's cwd itself:
            "ctypes.CDLL(None).syscall(262, -100, b'', buf, 0x1000)\n"  # AT_EMPTY_PATH
            "held = struct.unpack_from('<QQ', buf)\n"
            "print(set(before + after + [(s.st_dev, s.st_ino) for s in cwd] + [held])"
            " == {before[0]},"
            " before[0],"
            " listed == [before[0][1]],"
            " oct(os.stat('.').st_mode & 0o777), sorted(os.listdir(fd)), os.getcwd())\n")
    r = appvirt("run", "--", "sh", "-c", f"cd '{top}' && python3 -c \"{code}\"",
                env={"APPVIRT_FASTPATH": compiled})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"True ({host.st_dev}, {host.st_ino}) True 0o700 ['new', 'sub'] {d}\n"
    assert d.stat().st_mode & 0o777 == 0o755 and sorted(os.listdir(d)) == ["sub"]


def test_unix_sockets_are_made_in_the_overlay(appvirt):
    """A socket file lives in the upper layer; sun_path (108 bytes) must hold its real place,
    so this test keeps both the state directory and the socket's directory short."""
    with tempfile.TemporaryDirectory(prefix="av", dir="/tmp") as home, \
            tempfile.TemporaryDirectory(prefix="sk", dir="/tmp") as where:
        code = ("import socket, os\ns = socket.socket(socket.AF_UNIX)\n"
                f"s.bind('{where}/app.sock')\ns.listen()\n"
                "c = socket.socket(socket.AF_UNIX)\n"
                f"c.connect('{where}/app.sock')\nprint(os.path.exists('{where}/app.sock'))")
        r = appvirt("run", "--", "python3", "-c", code, env={"APPVIRT_HOME": home})
        assert (r.returncode, r.stdout) == (0, "True\n"), r.stderr
        assert os.listdir(where) == []


def test_the_program_never_sees_the_upper_layer(appvirt, tmp_path, home):
    r = appvirt("run", "--", "sh", "-c",
                f"mkdir -p {tmp_path}/new && cd {tmp_path}/new && pwd && "
                "readlink /proc/self/cwd && exec 3> f && readlink /proc/self/fd/3 && "
                "cp /bin/true mytrue && ./mytrue && readlink /proc/$$/cwd && "
                f"ls {home} 2>&1 | sed 's/.*: //'")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == [f"{tmp_path}/new", f"{tmp_path}/new", f"{tmp_path}/new/f"]
    assert lines[3] == f"{tmp_path}/new"
    assert lines[4] == "No such file or directory"          # appvirt's state is not there
    assert str(home) not in r.stdout.replace(lines[4], "")


def test_large_merged_listing_and_rewind(appvirt, tmp_path):
    """A directory with 5,000 host entries and 5,000 new ones lists each once; rewinddir and
    seekdir/telldir work (the position lives in the fd's own offset)."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(5000):
        (big / f"h{i:05d}").touch()
    perl = (f"perl -e 'opendir(D, \"{big}\") or die; my @a = readdir(D); my $pos = telldir(D);"
            " rewinddir(D); my @b = readdir(D); seekdir(D, 0); my @c = readdir(D);"
            " print scalar(@a), \" \", scalar(@b), \" \", scalar(@c), \"\\n\"'")
    r = appvirt("run", "--", "sh", "-c",
                f"cd {big} && for i in $(seq 0 4999); do : > n$i; done && rm h00001 && "
                f"ls | wc -l && ls | sort | uniq -d | wc -l && {perl}")
    assert r.returncode == 0, r.stderr
    total = 5000 + 5000 - 1
    assert r.stdout.split() == [str(total), "0", *[str(total + 2)] * 3]
    assert len(os.listdir(big)) == 5000                      # the host directory as it was


def test_nameless_files_are_linked_into_the_overlay(appvirt, tmp_path, host_file):
    """O_TMPFILE + linkat (by AT_EMPTY_PATH or by /proc/self/fd/N) and linkat of an fd of a
    host file: the new names exist for the program, never on the host."""
    before = digest(host_file)
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open('{tmp_path}', os.O_TMPFILE | os.O_WRONLY, 0o600)
os.write(fd, b'tmp')
a = libc.linkat(-100, f'/proc/self/fd/{{fd}}'.encode(), -100, b'{tmp_path}/by-proc', 0x400)
fd2 = os.open('{tmp_path}', os.O_TMPFILE | os.O_WRONLY, 0o600)
b = libc.linkat(fd2, b'', -100, b'{tmp_path}/by-fd', 0x1000)
hf = os.open('{host_file}', os.O_RDONLY)
c = libc.linkat(hf, b'', -100, b'{tmp_path}/host-alias', 0x1000)
with open('{tmp_path}/host-alias', 'a') as f:
    f.write('more')
print(a, b, c, open('{tmp_path}/by-proc').read(), sorted(os.listdir('{tmp_path}')))
"""
    r = appvirt("run", "--", "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("0 0 0 tmp ['by-fd', 'by-proc', 'host-alias', 'host.txt']\n")
    assert sorted(os.listdir(tmp_path)) == ["appvirt-home", "host.txt"]
    assert digest(host_file) == before


def test_o_creat_on_an_existing_host_file_just_opens_it(appvirt, host_file):
    """open(O_RDONLY|O_CREAT, 0644) of an existing file reads it (openat2 wants no mode
    without O_CREAT, so appvirt must drop both)."""
    r = appvirt("run", "--", "python3", "-c",
                f"import os; fd = os.open('{host_file}', os.O_RDONLY | os.O_CREAT, 0o644); "
                "print(os.read(fd, 100).decode())")
    assert r.returncode == 0, r.stderr
    assert r.stdout == open(host_file).read() + "\n"
