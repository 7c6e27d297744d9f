"""The compiled fast path under real ptrace: it answers the reads in plain directories, and
what a program sees is the same with it and without it (APPVIRT_FASTPATH=0), before and
after the program changes those directories in its overlay; the host stays untouched."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, appvirt_cmd, write_policy

pytestmark = pytest.mark.integration

# Looks at a directory the way programs do (stat, lstat, listings, opens, a dirfd walk), then
# changes it in the overlay and looks again.
PROGRAM = r"""
import os, sys
top = sys.argv[1]

def look(tag):
    out = []
    for name in sorted(os.listdir(top)):
        p = os.path.join(top, name)
        try:
            st = os.stat(p)
            kind = "dir" if os.path.isdir(p) else "file"
            data = open(p, "rb").read() if kind == "file" else b""
            ino = st.st_ino if tag == "before" else ""     # copies differ between apps
            out.append(f"{name} {kind} {st.st_size} {ino} {st.st_nlink} {data!r}")
        except OSError as e:
            out.append(f"{name} error {e.errno}")
        out.append(f"  lstat {os.lstat(p).st_mode:o}")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for name in ("a.txt", "gone.txt", "new.txt", "sub", "link", "missing"):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            out.append(f"at {name} {st.st_mode:o} {st.st_size}")
        except OSError as e:
            out.append(f"at {name} errno {e.errno}")
        try:
            os.close(os.open(name, os.O_RDONLY, dir_fd=fd))
            out.append(f"open {name} ok")
        except OSError as e:
            out.append(f"open {name} errno {e.errno}")
    os.close(fd)
    print(tag, *out, sep="\n")

look("before")
for change in (lambda: open(os.path.join(top, "new.txt"), "w").write("made in the overlay\n"),
               lambda: os.unlink(os.path.join(top, "gone.txt")),
               lambda: open(os.path.join(top, "a.txt"), "a").write("appended\n"),
               lambda: os.mkdir(os.path.join(top, "sub", "deeper"))):
    try:
        change()
    except OSError as e:
        print("change failed", e.errno)
look("after")
print(sorted(os.listdir(top)))
"""


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(f"{p} {st.st_mode} {st.st_size} {st.st_mtime_ns}".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def host_tree(tmp_path) -> Path:
    top = tmp_path / "tree"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_text("a\n")
    (top / "gone.txt").write_text("to be deleted\n")
    (top / "sub" / "inner.txt").write_text("inner\n")
    (top / "link").symlink_to("a.txt")
    return top


def _lines_until(stream, marker: str) -> str:
    """What a running program printed before its line `marker` (all it printed, if none)."""
    lines = []
    for line in stream:
        if line == marker + "\n":
            break
        lines.append(line)
    return "".join(lines)


def _compiled(stderr: str) -> int:
    return int(re.search(r"(\d+) answered by the compiled loop", stderr).group(1))


def _both_loops(appvirt, program: str, top: Path, app: str):
    """Run a Python program on top with the compiled loop (app APPfast), with it but every
    call a ptrace stop, none notified (APPstops), and without it (APPslow): the finished runs
    with the compiled loop and without it, all three with the same output."""
    fast, stops, slow = (appvirt("run", "--stats", "--app", app + name, "--", PYTHON, "-c",
                                 program, str(top), env=env)
                         for name, env in (("fast", {"APPVIRT_FASTPATH": "1"}),
                                           ("stops", {"APPVIRT_NOTIFY": "0"}),
                                           ("slow", {"APPVIRT_FASTPATH": "0"})))
    for run in (fast, stops, slow):
        assert run.returncode == 0, run.stderr
    assert fast.stdout == stops.stdout == slow.stdout
    return fast, slow


def _in_both_loops(appvirt, program: str, top: Path, app: str) -> tuple[str, str]:
    """_both_loops: the output, and what the compiled loop answered (--stats)."""
    fast, _ = _both_loops(appvirt, program, top, app)
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr)
    assert done, fast.stderr
    return fast.stdout, done.group(1)


def _run(appvirt, top: Path, *, fast: bool, app: str, policy: str | None = None):
    args = ["run", "--stats", "--app", app]
    if policy:
        args += ["--policy", policy]
    r = appvirt(*args, "--", PYTHON, "-c", PROGRAM, str(top),
                env={"APPVIRT_FASTPATH": "1" if fast else "0"})
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    return r


def test_the_program_sees_the_same_with_and_without_the_compiled_loop(appvirt, host_tree):
    before = tree_digest(host_tree)
    fast = _run(appvirt, host_tree, fast=True, app="fast")
    slow = _run(appvirt, host_tree, fast=False, app="slow")
    assert fast.stdout == slow.stdout
    assert _compiled(fast.stderr) > 100 and _compiled(slow.stderr) == 0
    # The second look saw the overlay's changes, not what the fast path saw before them.
    after = fast.stdout.split("after\n")[1]
    assert "new.txt file 20" in after and "gone.txt" not in after.split("at ")[0]
    assert "at gone.txt errno 2" in after and "open new.txt ok" in after
    assert "b'a\\nappended\\n'" in after and "['a.txt', 'link', 'new.txt', 'sub']" in fast.stdout
    assert tree_digest(host_tree) == before


def test_rules_inside_a_directory_are_kept(appvirt, host_tree, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", f"""
files:
  default: overlay
  rules:
    - {{path: "{host_tree}/sub/inner.txt", mode: hidden}}
    - {{path: "{host_tree}/*.txt", mode: readonly}}
""")
    fast = _run(appvirt, host_tree / "sub", fast=True, app="r1", policy=policy)
    slow = _run(appvirt, host_tree / "sub", fast=False, app="r2", policy=policy)
    assert fast.stdout == slow.stdout
    assert "inner.txt" not in fast.stdout.split("at ")[0]


def test_find_matches_native_and_the_python_loop(appvirt, host_tree):
    for i in range(30):
        d = host_tree / f"d{i}" / "e"
        d.mkdir(parents=True)
        (d / "f").write_text(str(i))
        (d / "l").symlink_to("f")
    native = subprocess.run(["find", str(host_tree), "-type", "f"], capture_output=True,
                            text=True, check=True).stdout
    outs = []
    for fast in (True, False):
        r = appvirt("run", "--stats", "--", "find", str(host_tree), "-type", "f",
                    env={"APPVIRT_FASTPATH": "1" if fast else "0"})
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
        if fast:
            assert _compiled(r.stderr) > 60
    assert outs == [native, native]


# Creates, writes, reads and removes names in directories it makes itself (the overlay owns
# them: the compiled loop works there), with the calls' edge cases, by absolute path, through
# a directory fd ("./name") and from the directory as cwd.
WRITER = r"""
import os, sys
top = sys.argv[1]
d = os.path.join(top, "made")
os.mkdir(d)
os.mkdir(os.path.join(d, "sub"))
def attempt(tag, fn):
    try:
        r = fn()
        if isinstance(r, int) and r > 2:
            os.close(r)
            r = "fd"
        print(tag, "ok", r)
    except OSError as e:
        print(tag, "errno", e.errno)
for i in range(20):
    p = os.path.join(d, f"f{i}")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, b"x" * i)
    os.close(fd)
attempt("excl again", lambda: os.open(os.path.join(d, "f1"), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
attempt("missing", lambda: os.open(os.path.join(d, "nope"), os.O_RDONLY))
attempt("trunc", lambda: os.open(os.path.join(d, "f2"), os.O_WRONLY | os.O_TRUNC))
attempt("append", lambda: os.write(os.open(os.path.join(d, "f3"), os.O_WRONLY | os.O_APPEND), b"yy"))
attempt("creat existing", lambda: os.open(os.path.join(d, "f4"), os.O_RDONLY | os.O_CREAT, 0o600))
for where in (os.path.join(d, "absent"), os.path.join(top, "absent"), "/nonexistent-appvirt",
              os.path.join(d, "absent", "deeper")):     # absent directories: ENOENT
    attempt("create in " + where, lambda: os.open(os.path.join(where, "x"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    attempt("write in " + where, lambda: os.open(os.path.join(where, "y"), os.O_RDWR))
attempt("create in host dir", lambda: os.open(os.path.join(top, "hostdir", "new"), os.O_WRONLY | os.O_CREAT, 0o600))
attempt("create in file", lambda: os.open(os.path.join(d, "f4", "x"), os.O_WRONLY | os.O_CREAT, 0o600))
attempt("dir", lambda: os.open(os.path.join(d, "sub"), os.O_RDONLY | os.O_DIRECTORY))
attempt("not dir", lambda: os.open(os.path.join(d, "f5"), os.O_RDONLY | os.O_DIRECTORY))
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
attempt("at create", lambda: os.open("./sub/g", os.O_RDWR | os.O_CREAT, 0o600, dir_fd=dfd))
attempt("at unlink", lambda: os.unlink("f6", dir_fd=dfd))
attempt("at unlink dir", lambda: os.unlink("sub", dir_fd=dfd))
attempt("at unlink missing", lambda: os.unlink("nope", dir_fd=dfd))
for i in range(3):                       # device nodes, decided name by name in /dev
    attempt("urandom", lambda: str(len(os.read(os.open("/dev/urandom", os.O_RDONLY), 4))))
    attempt("stat null", lambda: oct(os.stat("/dev/null").st_mode))
    attempt("access zero", lambda: os.access("/dev/zero", os.R_OK))
with open(os.path.join(top, "host.txt"), "rb") as f:      # a host file the run reads
    print("host", f.read())
for name, target in (("ln1", "f1"), ("ln2", os.path.join(d, "f2")), ("ln3", "ln1"),
                     ("dangling", "made-by-link"), ("loop", "loop"),
                     ("tohost", os.path.join(top, "host.txt")), ("up", "../made/f9")):
    os.symlink(target, os.path.join(d, name))
for name in ("ln1", "ln2", "ln3", "dangling", "loop", "tohost", "up"):
    p = os.path.join(d, name)
    attempt("stat " + name, lambda: str(os.stat(p).st_size))
    attempt("lstat " + name, lambda: oct(os.lstat(p).st_mode))
    attempt("access " + name, lambda: os.access(p, os.R_OK))
    attempt("read " + name, lambda: str(len(open(p, "rb").read())))
attempt("write via link", lambda: os.write(os.open(os.path.join(d, "ln3"), os.O_WRONLY | os.O_APPEND), b"L"))
attempt("create via link", lambda: os.open(os.path.join(d, "dangling"), os.O_WRONLY | os.O_CREAT, 0o600))
attempt("excl via link", lambda: os.open(os.path.join(d, "ln1"), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
attempt("nofollow", lambda: os.open(os.path.join(d, "ln1"), os.O_RDONLY | os.O_NOFOLLOW))
attempt("write to host via link", lambda: os.write(os.open(os.path.join(d, "tohost"), os.O_WRONLY | os.O_APPEND), b"H"))
fd = os.open(os.path.join(d, "f10"), os.O_WRONLY)
attempt("fchmod", lambda: os.fchmod(fd, 0o604))
attempt("fchown", lambda: os.fchown(fd, 1234, 5678))
attempt("futimens", lambda: os.utime(fd, ns=(1_000_000_123, 2_000_000_456)))
os.close(fd)
attempt("chmod", lambda: os.chmod(os.path.join(d, "f11"), 0o711))
attempt("chmod link", lambda: os.chmod(os.path.join(d, "ln1"), 0o600))
attempt("chmod missing", lambda: os.chmod(os.path.join(d, "nope"), 0o600))
attempt("chown at", lambda: os.chown("f12", 42, 43, dir_fd=dfd))
sub = os.path.join(d, "sub")             # directories, and the path forms tar uses on them
attempt("chmod dir", lambda: os.chmod(sub, 0o751))
attempt("lchown dir", lambda: os.chown(sub, 7, 8, follow_symlinks=False))
attempt("chown file", lambda: os.chown(os.path.join(d, "f9"), 9, 10))
attempt("lchown link", lambda: os.chown(os.path.join(d, "ln1"), 11, 12, follow_symlinks=False))
attempt("utime dir", lambda: os.utime(sub, ns=(3_000_000_789, 4_000_000_012)))
attempt("utime nofollow", lambda: os.utime(os.path.join(d, "f9"), ns=(5, 6), follow_symlinks=False))
attempt("utime at", lambda: os.utime("f11", ns=(7, 8), dir_fd=dfd))
attempt("utime link", lambda: os.utime(os.path.join(d, "ln2"), ns=(9, 10), follow_symlinks=False))
attempt("utime now", lambda: os.utime(os.path.join(d, "f8")))
attempt("chmod at", lambda: os.chmod("f19", 0o604, dir_fd=dfd))
print("f19", oct(os.stat(os.path.join(d, "f19")).st_mode))
for name in ("sub", "f9", "f11"):
    st = os.stat(os.path.join(d, name))
    print(name, oct(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns)
# chmod of /proc/self/fd/N, as glibc's fchmodat(AT_SYMLINK_NOFOLLOW) makes it on an O_PATH fd
pfd = os.open(sub, os.O_PATH | os.O_DIRECTORY)
attempt("chmod proc fd", lambda: os.chmod(f"/proc/self/fd/{pfd}", 0o753))
attempt("chown proc fd", lambda: os.chown(f"/proc/thread-self/fd/{pfd}", 13, 14))
attempt("fchmodat proc fd", lambda: os.chmod(f"/proc/self/fd/{pfd}", 0o755, dir_fd=dfd))
st = os.stat(sub)
print("sub via proc", oct(st.st_mode), st.st_uid, st.st_gid)
lfd = os.open(os.path.join(d, "ln1"), os.O_PATH | os.O_NOFOLLOW)
attempt("chmod proc fd link", lambda: os.chmod(f"/proc/self/fd/{lfd}", 0o600))  # (its mode)
hfd = os.open(os.path.join(top, "hostdir"), os.O_PATH)
attempt("chmod proc fd host", lambda: os.chmod(f"/proc/self/fd/{hfd}", 0o700))
print("hostdir via proc", oct(os.stat(os.path.join(top, "hostdir")).st_mode))
for what, fn in (("chmod", lambda p: os.chmod(p, 0o600)), ("chown", lambda p: os.chown(p, 1, 1)),
                 ("lchown", lambda p: os.chown(p, 1, 1, follow_symlinks=False)),
                 ("utime", lambda p: os.utime(p, ns=(1, 1))), ("rmdir", os.rmdir),
                 ("unlink", os.unlink), ("open", lambda p: os.open(p, os.O_RDWR))):
    attempt(what + " missing name", lambda: fn(os.path.join(d, "nope")))
attempt("mkdir existing file", lambda: os.mkdir(os.path.join(d, "f9")))
import ctypes                            # times the kernel refuses before it looks at the name
libc = ctypes.CDLL(None, use_errno=True)
def utimensat(p, times):
    r = libc.utimensat(-100, p.encode(), times, 0)
    return r if r == 0 else -ctypes.get_errno()
for name in ("nope", "f9"):
    attempt("utime bad pointer " + name, lambda: utimensat(os.path.join(d, name), ctypes.c_void_p(8)))
    attempt("utime bad time " + name, lambda: utimensat(os.path.join(d, name), (ctypes.c_long * 4)(0, 2_000_000_000, 0, 0)))
attempt("mkdir existing link", lambda: os.mkdir(os.path.join(d, "dangling")))
attempt("mkdir", lambda: os.mkdir(os.path.join(d, "newdir"), 0o750))
attempt("mkdir again", lambda: os.mkdir(os.path.join(d, "newdir")))
attempt("mkdirat", lambda: os.mkdir("./newdir/inner", 0o700, dir_fd=dfd))
attempt("create in new dir", lambda: os.open(os.path.join(d, "newdir", "inner", "x"), os.O_WRONLY | os.O_CREAT, 0o600))
attempt("rmdir", lambda: os.rmdir(os.path.join(d, "sub")))
attempt("rmdir at", lambda: os.unlink("newdir/inner/x", dir_fd=dfd))
attempt("rmdir at dir", lambda: os.rmdir("newdir/inner", dir_fd=dfd))
attempt("stat in removed dir", lambda: str(os.stat(os.path.join(d, "newdir", "inner", "x")).st_size))
attempt("rmdir again", lambda: os.rmdir(os.path.join(d, "newdir", "inner")))
attempt("remade", lambda: os.mkdir(os.path.join(d, "newdir", "inner"), 0o711))
attempt("create in remade", lambda: os.open(os.path.join(d, "newdir", "inner", "z"), os.O_WRONLY | os.O_CREAT, 0o600))
attempt("rmdir file", lambda: os.rmdir(os.path.join(d, "newdir", "inner", "z")))
attempt("rmdir link", lambda: os.rmdir(os.path.join(d, "ln1")))
attempt("rmdir at file", lambda: os.rmdir("f5", dir_fd=dfd))
attempt("rmdir full", lambda: os.rmdir(os.path.join(d, "newdir", "inner")))
attempt("empty again", lambda: os.unlink(os.path.join(d, "newdir", "inner", "z")))
attempt("rmdir at empty", lambda: os.rmdir("newdir/inner", dir_fd=dfd))
attempt("create in removed", lambda: os.open(os.path.join(d, "newdir", "inner", "w"), os.O_WRONLY | os.O_CREAT, 0o600))
os.mkdir(os.path.join(d, "newdir", "gone"))
attempt("rmdir empty", lambda: os.rmdir(os.path.join(d, "newdir", "gone")))
attempt("stat removed", lambda: str(os.stat(os.path.join(d, "newdir", "gone")).st_size))
attempt("python's stat", lambda: str(os.stat(os.path.join(d, "newdir", "gone") + "/").st_size))
attempt("python's listing", lambda: str(os.listdir(os.path.join(d, "newdir") + "/.")))
attempt("mkdir slash", lambda: os.mkdir(os.path.join(d, "newdir", "gone") + "/"))
attempt("mkdir slash again", lambda: os.mkdir(os.path.join(d, "newdir", "gone") + "/"))
attempt("mkdir slash file", lambda: os.mkdir(os.path.join(d, "f1") + "/"))
attempt("rmdir slash file", lambda: os.rmdir(os.path.join(d, "f1") + "/"))
attempt("mkdir slashes", lambda: os.mkdir(os.path.join(d, "newdir", "twice") + "//"))  # Python's
os.mkdir(os.path.join(d, "newdir", "gone2"))
attempt("rmdir slash", lambda: os.rmdir(os.path.join(d, "newdir", "gone2") + "/"))
attempt("link", lambda: os.link(os.path.join(d, "f13"), os.path.join(d, "f13.hard")))
attempt("link exists", lambda: os.link(os.path.join(d, "f13"), os.path.join(d, "f14")))
attempt("linkat", lambda: os.link("f14", "newdir/f14.hard", src_dir_fd=dfd, dst_dir_fd=dfd))
attempt("link symlink", lambda: os.link(os.path.join(d, "ln1"), os.path.join(d, "ln1.hard"),
                                        follow_symlinks=False))
attempt("linkat follow", lambda: os.link("ln3", "ln3.target", src_dir_fd=dfd, dst_dir_fd=dfd))
attempt("rename", lambda: os.rename(os.path.join(d, "f15"), os.path.join(d, "f15.moved")))
attempt("rename over", lambda: os.rename(os.path.join(d, "f16"), os.path.join(d, "f17")))
attempt("renameat", lambda: os.rename("f18", "newdir/f18", src_dir_fd=dfd, dst_dir_fd=dfd))
attempt("rename dir", lambda: os.rename(os.path.join(d, "newdir"), os.path.join(d, "newdir2")))
attempt("create in moved dir", lambda: os.open(os.path.join(d, "newdir2", "y"), os.O_WRONLY | os.O_CREAT, 0o600))
attempt("rename missing", lambda: os.rename(os.path.join(d, "nope"), os.path.join(d, "nope2")))
os.mkdir(os.path.join(d, "newdir"))
for name in ("f10", "f11", "f12", "newdir2"):
    st = os.stat(os.path.join(d, name))
    print(name, oct(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns if name == "f10" else "", st.st_mtime_ns if name == "f10" else "")
os.chdir(d)
attempt("cwd create", lambda: os.open("h", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
attempt("cwd unlink", lambda: os.unlink("f7"))
attempt("unlink missing", lambda: os.unlink(os.path.join(d, "f7")))
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    st = os.lstat(p)
    data = open(p, "rb").read() if os.path.isfile(p) else b""
    print(name, oct(st.st_mode), st.st_size, data)
for i in (8, 9, 10, 11, 12, 13, 14, 17, 19):
    os.unlink(os.path.join(d, f"f{i}"))
print(sorted(os.listdir(d)), sorted(os.listdir(os.path.join(d, "sub"))))
"""

_VARYING = ("seq", "call", "time", "tracer_us", "pid", "tid", "child")


def _records(home: Path, app: str) -> list[dict]:
    """The app's log records about the directory, without what differs from run to run."""
    import json
    out = []
    for line in (home / "apps" / app / "logs" / "intercept.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") in ("syscall", "result"):
            rec = {k: v for k, v in rec.items() if k not in _VARYING}
            if "host_path" in rec:
                rec["host_path"] = rec["host_path"].replace(f"/apps/{app}/", "/apps/APP/")
            for k, v in rec.get("args", {}).items():      # addresses differ (ASLR)
                if isinstance(v, str) and v.startswith("0x"):
                    rec["args"][k] = "address"
            out.append(rec)
    return out


def test_changes_in_owned_directories_match_the_python_loop(appvirt, home, tmp_path):
    """Opens, creations and removals the compiled loop makes in a directory the overlay owns:
    the same program output, the same intercept log, the same overlay, and the host
    untouched."""
    top = tmp_path / "top"
    top.mkdir()
    (top / "host.txt").write_text("on the host\n")
    (top / "hostdir").mkdir()               # plain: a creation there goes to the overlay
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, WRITER, top, "w")
    out = fast.stdout
    assert "excl again errno 17" in out and "missing errno 2" in out
    assert "at unlink dir errno 21" in out and "unlink missing errno 2" in out
    assert "f3 0o100640 5 b'xxxyy'" in out and "'f0', 'f1', 'f13.hard', 'f15.moved', 'f2'," in out
    assert "stat ln3 ok 1" in out and "stat loop errno 40" in out and "read tohost ok 12" in out
    assert "excl via link errno 17" in out and "nofollow errno 40" in out
    assert "f10 0o100604 1234 5678 1000000123 2000000456" in out and "f11 0o100711" in out
    assert "f12 0o100640 42 43" in out and "newdir2 0o40750" in out and "rmdir errno 39" in out
    assert "sub 0o40751 7 8 3000000789 4000000012" in out and "f9 0o100640 9 10 5 6" in out
    assert "f11 0o100711 0 0 7 8" in out and "utime link ok" in out and "f19 0o100604" in out
    assert "sub via proc 0o40755 13 14" in out and "hostdir via proc 0o40700" in out
    for what in ("chmod", "chown", "lchown", "utime", "rmdir", "unlink", "open"):
        assert f"{what} missing name errno 2" in out
    assert "mkdir existing file errno 17" in out and "mkdir existing link errno 17" in out
    for name in ("nope", "f9"):
        assert f"utime bad pointer {name} ok -14" in out and f"utime bad time {name} ok -22" in out
    assert "link exists errno 17" in out and "rename missing errno 2" in out
    assert "stat in removed dir errno 2" in out and "rmdir again errno 2" in out
    assert "create in remade ok" in out and "rmdir file errno 20" in out
    assert "rmdir link errno 20" in out and "rmdir at file errno 20" in out
    assert "rmdir full errno 39" in out and "rmdir at empty ok" in out
    assert "create in removed errno 2" in out and "rmdir empty ok" in out
    assert "stat removed errno 2" in out and "mkdir slash ok" in out
    assert "mkdir slash again errno 17" in out and "rmdir slash file errno 20" in out
    assert "rmdir slash ok" in out and "mkdir slash file errno 17" in out
    for where in (f"{top}/made/absent", f"{top}/absent", "/nonexistent-appvirt",
                  f"{top}/made/absent/deeper"):
        assert f"create in {where} errno 2" in out and f"write in {where} errno 2" in out
    assert "create in host dir ok fd" in out and "create in file errno 20" in out
    assert "f13.hard 0o100640 13" in out and "f17 0o100640 16" in out
    assert "ln1.hard 0o120777" in out and "ln3.target 0o100600" in out
    assert "made-by-link 0o100600" in out and "b'on the host\\nH'" in out
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr)
    assert done, fast.stderr
    for call in ("openat", "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "fchmod", "fchown",
                 "fchownat", "chmod", "fchmodat", "chown", "utimensat", "link", "linkat",
                 "rename", "renameat", "access", "getdents64", "newfstatat"):
        assert re.search(rf"\b{call} \d+", done.group(1)), (call, done.group(1))
    assert _records(home, "wfast") == _records(home, "wslow")
    assert _same_tree(home, "wfast", "wslow")
    assert tree_digest(top) == before and not (top / "made").exists()


PROC_FD_CHANGES = """
import os, sys
d = os.path.join(sys.argv[1], "made")
os.makedirs(os.path.join(d, "sub"))
fd = os.open(os.path.join(d, "sub"), os.O_PATH | os.O_DIRECTORY)
for mode in (0o700, 0o750, 0o755):
    os.chmod(f"/proc/self/fd/{fd}", mode)
    print(oct(os.stat(os.path.join(d, "sub")).st_mode))
for uid in (3, 4):
    os.chown(f"/proc/thread-self/fd/{fd}", uid, uid + 1)
    print(os.stat(os.path.join(d, "sub")).st_uid)
for path in (f"/proc/self/fd/0{fd}", "/proc/self/fd/999", f"/proc/self/fd/{fd}/"):
    try:                                 # names /proc does not have, or with a "/": Python's
        os.chmod(path, 0o700)
        print("ok", oct(os.stat(os.path.join(d, "sub")).st_mode))
    except OSError as e:
        print("errno", e.errno)
"""


def test_changes_through_proc_fd_paths_are_made_in_c(appvirt, home, tmp_path):
    """chmod and chown of "/proc/self/fd/N" (glibc's fchmodat with AT_SYMLINK_NOFOLLOW: GNU
    tar's chmod of each directory it extracts) are the compiled loop's, as fchmod(N) is."""
    top = tmp_path / "top"
    top.mkdir()
    out, done = _in_both_loops(appvirt, PROC_FD_CHANGES, top, "procfd")
    assert out.split() == ["0o40700", "0o40750", "0o40755", "3", "4", "errno", "2", "errno", "2",
                           "ok", "0o40700"]
    assert re.search(r"\bchmod 3\b", done) and re.search(r"\bchown 2\b", done), done
    assert _records(home, "procfdfast") == _records(home, "procfdslow")
    assert not (top / "made").exists()


# Fds the tracer keeps the paths of (_fastpath_fds.c) changing what they are behind its back:
# replaced by dup2, renamed, linked, removed, closed and reopened. Each change must reach the
# object the fd is now, as the Python loop (which reads the fd's link each time) makes it.
FD_GUESSES = r"""
import os, sys
d = os.path.join(sys.argv[1], "made")
os.makedirs(os.path.join(d, "dir"))
def mode(name):
    try:
        return oct(os.lstat(os.path.join(d, name)).st_mode)
    except OSError as e:
        return f"errno {e.errno}"
def create(name):
    return os.open(os.path.join(d, name), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
def attempt(tag, fn):
    try:
        fn()
        print(tag, "ok")
    except OSError as e:
        print(tag, "errno", e.errno)
a, b = create("a"), create("b")
for m in (0o601, 0o602):                 # known from its creation, then checked
    os.fchmod(a, m)
os.dup2(b, a)                            # fd a is b now: the tracer does not see dup2
attempt("fchmod after dup2", lambda: os.fchmod(a, 0o603))
print("a", mode("a"), "b", mode("b"))
dfd = os.open(os.path.join(d, "dir"), os.O_RDONLY | os.O_DIRECTORY)
for name in ("x1", "x2", "x3"):          # a candidate, then checked
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
os.rename(os.path.join(d, "dir"), os.path.join(d, "moved"))
os.close(os.open("y", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
attempt("mkdir at moved", lambda: os.mkdir("sub", dir_fd=dfd))
attempt("unlink at moved", lambda: os.unlink("x1", dir_fd=dfd))
print("moved", sorted(os.listdir(os.path.join(d, "moved"))), os.path.exists(os.path.join(d, "dir")))
f = create("f")
os.fchmod(f, 0o610)
os.link(os.path.join(d, "f"), os.path.join(d, "g"))
attempt("fchmod linked", lambda: os.fchmod(f, 0o611))
print("f", mode("f"), "g", mode("g"))
r = create("r")
os.fchmod(r, 0o620)
os.rename(os.path.join(d, "r"), os.path.join(d, "s"))
attempt("fchmod renamed", lambda: os.fchmod(r, 0o621))
print("r", mode("r"), "s", mode("s"))
h = create("h")
os.fchmod(h, 0o630)
os.unlink(os.path.join(d, "h"))
attempt("fchmod removed", lambda: os.fchmod(h, 0o631))
attempt("fchown removed", lambda: os.fchown(h, 5, 6))
print("h", mode("h"))
k = create("k")
os.fchmod(k, 0o640)
os.close(k)
k2 = os.open(os.path.join(d, "b"), os.O_WRONLY)     # the same number, another file
print("same number", k2 == k)
attempt("fchmod reopened", lambda: os.fchmod(k2, 0o641))
print("k", mode("k"), "b", mode("b"))
for fd in (a, b, f, r, h, k2, dfd):
    os.close(fd)
"""


def test_fds_whose_paths_are_kept_follow_what_they_are_now(appvirt, home, tmp_path):
    """The compiled loop keeps the paths of fds to upper objects and checks them by inode
    (_fastpath_fds.c); after dup2, renames, links, removals and reopens of the same numbers,
    every change reaches the object the fd is now, with the Python loop's records."""
    top = tmp_path / "top"
    top.mkdir()
    fast, _ = _both_loops(appvirt, FD_GUESSES, top, "fdg")
    out = fast.stdout
    assert "fchmod after dup2 ok\na 0o100602 b 0o100603" in out
    assert "moved ['sub', 'x2', 'x3', 'y'] False" in out
    assert "f 0o100611 g 0o100611" in out and "r errno 2 s 0o100621" in out
    assert "fchmod removed ok" in out and "h errno 2" in out
    assert "same number True" in out and "k 0o100640 b 0o100641" in out
    known = re.search(r"fd paths known without a readlink (\d+)", fast.stderr)
    assert known and int(known.group(1)) >= 5, fast.stderr
    assert _records(home, "fdgfast") == _records(home, "fdgslow")
    assert _same_tree(home, "fdgfast", "fdgslow")
    assert not (top / "made").exists()

def test_notified_calls_get_what_stops_get_and_keep_the_programs_registers(
        appvirt, home, demo, tmp_path):
    """The calls the compiled loop answers with a result alone come as seccomp notifications
    (the default; fastpath.NOTIFIED_*). From three threads, with a value of the program's in
    r9 (every other call the filter's own mark), while a SIGALRM handler makes stats of its
    own every 200 µs: copy-ups of host files (Python's, handed over from the notification),
    changes of the copies, misses, a directory made, stat'ed and removed twice, a removed
    file's mode changed through its fd (the kernel's to make, after the handlers). Results,
    files, records and upper layer are those of a run where every call is a ptrace stop,
    r9 comes back from every call, and the host is untouched."""
    from appvirt.tracer.fastpath import NOTIFY_MARK
    host = tmp_path / "host"
    host.mkdir()
    for i in range(60):
        (host / f"f{i}").write_text(f"{i}\n")
    before = tree_digest(host)
    runs = {}
    for notify in ("1", "0"):
        runs[notify] = appvirt("run", "--stats", "--app", f"np{notify}", "--",
                               demo("notify_probe"), str(host), str(tmp_path / "scratch"),
                               "60", f"{NOTIFY_MARK:x}", env={"APPVIRT_NOTIFY": notify})
        assert runs[notify].returncode == 0, runs[notify].stderr
    out = runs["1"].stdout
    assert out == runs["0"].stdout
    assert "r9 changed" not in out
    assert out.count(": 120 ok, errnos 80\n") == 3      # 6 calls of 8 succeed, 2 ENOENT
    assert "f0 600" not in out and "f0 640" in out and "f59 643" in out
    counts = re.search(r"notified by seccomp \(no ptrace stop\) (\d+), handed to the ptrace "
                       r"handlers (\d+)", runs["1"].stderr)
    assert counts and int(counts.group(1)) >= 300 and int(counts.group(2)) >= 25, \
        runs["1"].stderr
    assert "notified" not in runs["0"].stderr
    import json

    def records(app: str) -> list[str]:
        out = []
        for r in _records(home, app):
            if r.get("syscall") == "clone3":      # (its arguments are addresses)
                continue
            if r["kind"] == "result" and r["result"] >= 0:
                r["result"] = "fd"                # (the threads' opens race for numbers)
            out.append(json.dumps(r))
        return sorted(out)
    assert records("np1") == records("np0")
    assert len(records("np1")) >= 180
    assert _same_tree(home, "np1", "np0")
    assert tree_digest(host) == before
    assert not (tmp_path / "scratch").exists()


DEVICES = """
import os
def attempt(tag, fn):
    try:
        print(tag, "ok", fn())
    except OSError as e:
        print(tag, "errno", e.errno)
def write_to(p, flags, data=b"x"):
    fd = os.open(p, flags, 0o644)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
creat = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
if os.environ.get("DEVICES") != "none":     # (what the rest of the program costs)
    for i in range(5):                       # a shell's ">/dev/null", ">/dev/zero"
        attempt("null", lambda: write_to("/dev/null", creat))
        attempt("zero", lambda: write_to("/dev/zero", creat))
    attempt("null rdwr", lambda: write_to("/dev/null", os.O_RDWR))
    attempt("full", lambda: write_to("/dev/full", os.O_WRONLY))
    attempt("null excl", lambda: write_to("/dev/null", creat | os.O_EXCL))
    attempt("zero read", lambda: len(os.read(os.open("/dev/zero", os.O_RDONLY), 4)))
    attempt("kmsg write", lambda: write_to("/dev/kmsg", os.O_WRONLY, b""))   # /dev: readonly
    attempt("new in dev", lambda: write_to("/dev/appvirt-new", creat))
"""


def test_passthrough_devices_are_opened_for_writing_in_c(appvirt, home):
    """/dev/null & co. (the base rules pass them through to the host): opens for writing are
    the compiled loop's, with the Python loop's answers and log; a device the /dev rule keeps
    read-only and a new name in /dev stay Python's."""
    runs = {}
    for flag in ("1", "0"):
        runs[flag] = appvirt("run", "--stats", "--app", "dev" + flag, "--", PYTHON, "-c", DEVICES,
                             env={"APPVIRT_FASTPATH": flag})
        assert runs[flag].returncode == 0, runs[flag].stderr
    fast, slow = runs["1"], runs["0"]
    assert fast.stdout == slow.stdout
    assert "null ok 1" in fast.stdout and "full errno 28" in fast.stdout
    assert "null excl errno 17" in fast.stdout and "zero read ok 4" in fast.stdout
    assert "kmsg write errno 30" in fast.stdout and "new in dev errno 30" in fast.stdout
    assert _records(home, "dev1") == _records(home, "dev0")
    base = appvirt("run", "--stats", "--app", "devbase", "--", PYTHON, "-c", DEVICES,
                   env={"APPVIRT_FASTPATH": "1", "DEVICES": "none"})
    assert base.returncode == 0, base.stderr
    # Python's: the two opens /dev keeps read-only, and no more
    assert _python_s(fast.stderr, "openat") - _python_s(base.stderr, "openat") <= 2, \
        (fast.stderr, base.stderr)
    assert not os.path.exists("/dev/appvirt-new")


SLASHED = """
import os, sys
made = os.path.join(sys.argv[1], "made")
os.mkdir(made)
if os.environ.get("SLASHED") != "none":     # (what the rest of the program costs)
    for i in range(5):                       # git makes each directory as "dir/"
        os.mkdir(os.path.join(made, f"d{i}") + "/")
    print(sorted(os.listdir(made)))
    for i in range(5):
        os.rmdir(os.path.join(made, f"d{i}") + "/")
print(sorted(os.listdir(made)))
"""


TRAILING_SLASHES = r"""
import os
def setup():
    for n in os.listdir("."):
        if os.path.islink(n) or os.path.isfile(n):
            os.unlink(n)
        elif os.path.isdir(n):
            os.rmdir(n)
    open("a", "w").close()
    open("f1", "w").close()
    os.mkdir("d1")
    os.symlink("target", "dl")
    os.symlink("d1", "ld")
    os.symlink("f1", "lf")
def opened(n, flags):
    os.close(os.open(n, flags, 0o600))
calls = {"mkdir": lambda n: os.mkdir(n), "mknod": lambda n: os.mknod(n, 0o600 | 0o10000),
         "symlink": lambda n: os.symlink("x", n), "link": lambda n: os.link("a", n),
         "rename": lambda n: os.rename("a", n), "rename dir": lambda n: os.rename("d1", n),
         "rmdir": lambda n: os.rmdir(n), "unlink": lambda n: os.unlink(n),
         "creat": lambda n: opened(n, os.O_WRONLY | os.O_CREAT),
         "excl": lambda n: opened(n, os.O_WRONLY | os.O_CREAT | os.O_EXCL),
         "read": lambda n: opened(n, os.O_RDONLY), "chmod": lambda n: os.chmod(n, 0o700)}
for call, fn in calls.items():
    for name in ("f1/", "d1/", "dl/", "ld/", "lf/", "new/", "a//", "nope/x/"):
        setup()
        try:
            fn(name)
            got = "ok"
        except OSError as e:
            got = e.errno
        print(call, name, got, sorted(os.listdir(".")))
"""


@pytest.mark.parametrize("fast", ["1", "0"])
def test_names_with_a_trailing_slash_are_made_as_natively(appvirt, tmp_path, fast):
    """mkdir, mknod, symlink, link, rename, rmdir, unlink and opens of "name/" fail and
    succeed as the kernel's own calls do, the last name not followed: EEXIST for a name that
    is there, even a file or a dangling symlink (never its target made), ENOENT for a new
    name that is not a directory, ENOTDIR for a rename of a file and an rmdir of "link/"
    (never its target removed), EISDIR for a creation; in both loops, on names the program
    made (owned), as natively."""
    mine = tmp_path / "native"
    mine.mkdir()
    native = subprocess.run([PYTHON, "-c", TRAILING_SLASHES], cwd=mine, capture_output=True,
                            text=True, timeout=60)
    assert native.returncode == 0, native.stderr
    work = tmp_path / "sandboxed"
    work.mkdir()
    before = tree_digest(work)
    r = subprocess.run(appvirt_cmd("run", "--", PYTHON, "-c", TRAILING_SLASHES), cwd=work,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "APPVIRT_FASTPATH": fast})
    assert r.returncode == 0, r.stderr
    assert r.stdout == native.stdout
    assert "mkdir dl/ 17" in r.stdout and "mknod new/ 2" in r.stdout and "rename new/ 20" in r.stdout
    assert "rmdir ld/ 20" in r.stdout and "unlink ld/ 20" in r.stdout and "creat f1/ 21" in r.stdout
    assert tree_digest(work) == before


def test_directories_made_and_removed_by_dir_slash_are_cs(appvirt, home, tmp_path):
    """mkdir and rmdir of "dir/" in a directory the overlay owns are the compiled loop's, as
    those of "dir" are, with the same answers and log as the Python loop's."""
    top = tmp_path / "top"
    top.mkdir()
    fast, _ = _both_loops(appvirt, SLASHED, top, "slash")
    assert fast.stdout.splitlines() == [str([f"d{i}" for i in range(5)]), "[]"]
    assert _records(home, "slashfast") == _records(home, "slashslow")
    base = appvirt("run", "--stats", "--app", "slashbase", "--", PYTHON, "-c", SLASHED,
                   str(top), env={"APPVIRT_FASTPATH": "1", "SLASHED": "none"})
    assert base.returncode == 0, base.stderr
    for call in ("mkdir", "rmdir"):
        assert _python_s(fast.stderr, call) == _python_s(base.stderr, call), \
            (call, fast.stderr, base.stderr)
    assert not (top / "made").exists()


def _same_tree(home: Path, a: str, b: str) -> bool:
    """The two apps' upper layers hold the same names, kinds, modes and contents."""
    def shape(app: str) -> list:
        root = home / "apps" / app / "upper"
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in sorted(dirnames + filenames):
                p = Path(dirpath, name)
                st = p.lstat()
                out.append((str(p.relative_to(root)), st.st_mode, st.st_size,
                            p.read_bytes() if p.is_file() else b""))
        return sorted(out)
    return shape(a) == shape(b)


@pytest.mark.parametrize("fast", ["1", "0"])
def test_registers_come_back_after_a_rewritten_open(appvirt, demo, tmp_path, fast):
    """An open runs as openat2 from the slot, rewritten by the compiled loop (a plain
    directory) or by the Python handlers (a file the run made in the overlay): either way the
    program gets back every register the syscall ABI preserves."""
    made = tmp_path / "made.txt"
    r = appvirt("run", "--", demo("probes"), "regs_kept=/etc/hostname", f"write_file={made}",
                f"regs_kept={made}", env={"APPVIRT_FASTPATH": fast})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["regs_kept: ok", "write_file: ok", "regs_kept: ok"]
    assert not made.exists()                    # made in the overlay, not on the host


def _stops(stderr: str) -> dict[str, int]:
    """The --stats counts this module's tests look at."""
    m = re.search(r"(\d+) seccomp, (\d+) syscall-exit", stderr)
    t = re.search(r"opens with no exit stop \(trampolines\) (\d+)", stderr)
    assert m, stderr
    return {"seccomp": int(m[1]), "exit": int(m[2]), "trampolines": int(t[1]) if t else 0}


def test_registers_come_back_when_signals_come_in_between(appvirt, demo, tmp_path,
                                                          trampolines):
    """2,000 rewritten opens under a 200 us timer: with trampolines, a signal delivered as an
    open returns finds RIP in the trampoline, and the tracer does the trampoline's work before
    the handler runs (no handler sees RIP in the slot area's window, every register comes
    back); a FIFO's open interrupted by a signal is restarted as the program's own call, or
    fails with EINTR without SA_RESTART, in a directory of the overlay (its result logged).
    Without trampolines, each of those opens has its exit stop."""
    fifos = tmp_path / "fifos"
    fifos.mkdir()
    stops = {}
    for tramp in ("1", "0"):
        r = appvirt("run", "--stats", "--", demo("probes"),
                    "regs_kept_under_signals=/etc/hostname", f"fifo_restart={fifos}",
                    f"fifo_eintr={fifos}", env={"APPVIRT_TRAMPOLINES": tramp})
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["regs_kept_under_signals: ok", "fifo_restart: ok hi",
                                         "fifo_eintr: EINTR"]
        stops[tramp] = _stops(r.stderr)
    assert stops["1"]["trampolines"] >= 2000 and stops["0"]["trampolines"] == 0
    assert stops["0"]["exit"] - stops["1"]["exit"] >= 2000
    assert list(fifos.iterdir()) == []          # the FIFOs were the overlay's


@pytest.mark.parametrize("tramp", ["1", "0"])
def test_the_kernels_restart_of_a_rewritten_open_runs_it_as_checked(appvirt, demo, tmp_path,
                                                                      trampolines, tramp):
    """A restart with no signal to deliver puts RIP on the syscall instruction before the
    trampoline, the rewritten openat2 in the registers: the tracer lets it run from the slot
    as it checked it (made by the probe itself; a file an earlier run made in the overlay,
    whose host path is not its guest path, and a host file)."""
    (tmp_path / "work").mkdir()             # (beside appvirt's home, which is Python's)
    made = tmp_path / "work" / "made.txt"
    r = appvirt("run", "--", demo("probes"), f"write_file={made}")
    assert r.stdout == "write_file: ok\n", r.stderr
    r = appvirt("run", "--stats", "--", demo("probes"), f"restart_from_trampoline={made}",
                "restart_from_trampoline=/etc/hostname", f"restart_forged={made}",
                env={"APPVIRT_TRAMPOLINES": tramp})
    assert r.returncode == 0, r.stderr
    if tramp == "1":
        # A made-up "restart", its open_how read from the path's bytes, is the program's own
        # openat2, decided by the handlers (the kernel finds the flags invalid).
        assert r.stdout.splitlines() == ["restart_from_trampoline: ok"] * 2 + [
            "restart_forged: EINVAL"]
        assert re.search(r"intercepted: .*openat2 1\b", r.stderr), r.stderr
    else:
        assert r.stdout.splitlines() == ["restart_from_trampoline: no trampoline"] * 2 + [
            "restart_forged: no trampoline"]
    assert not made.exists()


def test_an_open_restarted_sixteen_times_in_a_row_gets_its_next_result_at_an_exit_stop(
        appvirt, demo, trampolines):
    """ELOOP (a symlink swapped in after the check) re-runs an open, at most 16 times in a
    row (MAX_RESTARTS): a racing process cannot keep a program's open going for ever. The
    probe makes the trampoline see ELOOP 20 times; the 16th re-run open goes through an exit
    stop, where a 17th ELOOP would be the program's (here the kernel's own result: an fd)."""
    r = appvirt("run", "--stats", "--", demo("probes"), "eloop_restarts=/etc/hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "eloop_restarts: 20 opened\n"
    assert _stops(r.stderr)["exit"] == 1


CREATE_THEN_RENAME = r"""
import os, sys, threading
d, failed = sys.argv[1], []
for i in range(100):
    made = threading.Event()
    def create():
        os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        made.set()
    def rename():
        made.wait()
        try:
            os.rename(f"{d}/f{i}", f"{d}/g{i}")
        except OSError as e:
            failed.append((i, e.strerror))
    threads = [threading.Thread(target=rename), threading.Thread(target=create)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print(failed or "ok", sorted(os.listdir(d)) == sorted(["seed"] + [f"g{i}" for i in range(100)]))
"""


def test_a_file_one_thread_made_is_the_indexs_at_another_threads_next_stop(appvirt, tmp_path,
                                                                           trampolines):
    """A thread creates a file in a merged directory (C: an open through its trampoline, with
    no stop after it) and tells another at once, which renames it (Python's, from the
    overlay's index): the index must have the file by then, though the first thread has not
    stopped again, so the other thread's stop notes it from the first one's result cell."""
    work = tmp_path / "work"
    work.mkdir()
    r = appvirt("run", "--", "/bin/sh", "-c", f"echo > {work}/seed")     # merged from now on
    assert r.returncode == 0, r.stderr
    r = appvirt("run", "--stats", "--", PYTHON, "-c", CREATE_THEN_RENAME, str(work))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok True\n"
    assert _stops(r.stderr)["trampolines"] >= 100
    assert list(work.iterdir()) == []


# A child makes a file through its trampoline (no stop after it) and is killed from outside
# before it stops again, while its parent waits in a read: no stop of either notes the file.
KILLED_AFTER_CREATE = r"""
import os, sys, time
d = sys.argv[1]
r, w = os.pipe()
child = os.fork()
if child == 0:
    time.sleep(0.3)                              # (the parent is in its read by then)
    os.close(os.open(f"{d}/made", os.O_CREAT | os.O_WRONLY, 0o644))
    os.write(1, f"{os.getpid()}\n".encode())
    os.read(r, 1)                                # killed here
    os._exit(0)
sys.stdin.readline()
print("child", os.waitpid(child, 0)[1])
try:
    os.rename(f"{d}/made", f"{d}/renamed")       # Python's, from the overlay's index
    print("rename ok", sorted(os.listdir(d)))
except OSError as e:
    print("rename errno", e.errno)
"""


def test_a_file_made_by_a_thread_killed_before_its_next_stop_is_the_indexs(appvirt, tmp_path,
                                                                         trampolines):
    """A process creates a file in a merged directory through its trampoline and is killed
    (SIGKILL, from outside) before it stops again: the engine settles its open when its
    thread is gone (settle_gone), from the cell its process left, so the index has the file
    that Python's rename of it then needs."""
    work = tmp_path / "work"
    work.mkdir()
    r = appvirt("run", "--", "/bin/sh", "-c", f"echo > {work}/seed")     # merged from now on
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen(appvirt_cmd("run", "--stats", "--", PYTHON, "-c", KILLED_AFTER_CREATE,
                                     str(work)),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        child = int(p.stdout.readline())
        os.kill(child, signal.SIGKILL)
        time.sleep(0.5)                          # the tracer has its end before the parent goes on
        out, err = p.communicate("go\n", timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert out == f"child {signal.SIGKILL}\nrename ok ['renamed', 'seed']\n", err
    assert _stops(err)["trampolines"] >= 1
    assert list(work.iterdir()) == []           # the host untouched

TIMES = r"""
import os, sys, time
d = os.path.join(sys.argv[1], "made")
os.mkdir(d)
p = os.path.join(d, "f")
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
os.utime(fd)                                     # futimens(fd, NULL): now, on the run's clock
print("now", time.gmtime(os.stat(p).st_mtime).tm_year)
os.utime(fd, ns=(5_000_000_007, 6_000_000_009))  # given times: no clock involved
print("given", os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns)
os.utime(fd, ns=(7_000_000_000, 8_000_000_000))
os.unlink(p)
"""


def test_times_set_to_now_follow_the_policys_clock(appvirt, tmp_path):
    """futimens(fd, NULL) in an owned directory under a virtual clock is "now" on that clock:
    the compiled loop leaves it to the handlers, and makes the given times itself."""
    policy = write_policy(tmp_path / "t.yaml", "time: '@2030-01-01 00:00:00'\n")
    r = appvirt("run", "--stats", "--policy", policy, "--", PYTHON, "-c", TIMES,
                str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["now 2030", "given 5000000007 6000000009"]
    done = re.search(r"answered by the compiled loop: (.*)", r.stderr).group(1)
    assert "utimensat 2" in done and "unlink 1" in done, done
    assert not (tmp_path / "made").exists()


# Reads directory d of top with readdir, telldir, seekdir and rewinddir, and checks "." and "..".
READDIR = r"""
class Dirent(ctypes.Structure):
    _fields_ = [("ino", ctypes.c_uint64), ("off", ctypes.c_int64), ("reclen", ctypes.c_ushort),
                ("type", ctypes.c_ubyte), ("name", ctypes.c_char * 256)]
libc = ctypes.CDLL(None)
libc.opendir.restype = ctypes.c_void_p
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = libc.telldir.argtypes = libc.rewinddir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.telldir.restype = ctypes.c_long
dirp = libc.opendir(d.encode())
first = [libc.readdir(dirp).contents for _ in range(10)]
dots = {e.name: e.ino for e in first if e.name in (b".", b"..")}
print("dots", dots == {b".": os.stat(d).st_ino, b"..": os.stat(top).st_ino})
mark = libc.telldir(dirp)
after = [libc.readdir(dirp).contents.name for _ in range(5)]
libc.seekdir(dirp, mark)
print("seekdir", [libc.readdir(dirp).contents.name for _ in range(5)] == after)
libc.rewinddir(dirp)
print("rewind", libc.readdir(dirp).contents.name)
"""

LISTER = r"""
import ctypes, os, shutil, sys
top = sys.argv[1]
d = os.path.join(top, "many")
os.mkdir(d)
for i in range(3000):                  # several getdents64 calls of 32 KiB each
    open(os.path.join(d, f"{i:05d}-a-long-name-to-fill-the-buffer-sooner"), "w").close()
os.mkdir(os.path.join(d, "sub"))
os.symlink("sub", os.path.join(d, "ln"))
names = os.listdir(d)
print(len(names), sorted(names)[:2], sorted(names)[-2:])
print(sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in os.scandir(d)
             if not e.name[0].isdigit()))

""" + READDIR + r"""
for name in names[:2000]:
    os.unlink(os.path.join(d, name)) if name[0].isdigit() else None
print(len(os.listdir(d)))
host = os.path.join(top, "host")
shutil.rmtree(host)                    # the host's directory, gone from the view ...
os.mkdir(host)                         # ... and a new one in its place (opaque)
open(os.path.join(host, "x"), "w").close()
print(os.listdir(host))
"""


def test_listings_of_owned_directories_match_the_python_loop(appvirt, tmp_path):
    """Listings of directories the overlay owns, served by the compiled loop: the same names,
    positions (telldir, seekdir, rewinddir across calls), "." and "..", and nothing of the
    overlay's own (an opaque directory's marker), as the Python loop serves them."""
    top = tmp_path / "top"
    (top / "host").mkdir(parents=True)
    (top / "host" / "old.txt").write_text("host\n")
    before = tree_digest(top)
    out, done = _in_both_loops(appvirt, LISTER, top, "ls")
    assert int(re.search(r"getdents64 (\d+)", done).group(1)) >= 12, done
    lines = out.splitlines()
    assert lines[0].startswith("3002 ")
    assert lines[1] == "[('ln', False, True), ('sub', True, False)]"
    assert lines[2:] == ["dots True", "seekdir True", "rewind b'.'", "1002", "['x']"]
    assert tree_digest(top) == before


WALKER = r"""
import os, subprocess, sys
top = sys.argv[1]
def show(tag, p, follow=True, ino=True):    # (each run has its own upper copies' inodes)
    try:
        st = os.stat(p, follow_symlinks=follow)
        print(tag, p, oct(st.st_mode), st.st_ino if ino else "", st.st_nlink)
    except OSError as e:
        print(tag, p, "errno", e.errno)
made = os.path.join(top, "made")
os.makedirs(os.path.join(made, "inner", "deeper"))
for d in ("/", "/usr", "/dev", top, made, os.path.join(made, "inner")):
    os.chdir(d)
    print("cwd", os.getcwd())
    show("stat", ".", ino=not d.startswith(top))
    show("lstat", ".", follow=False, ino=not d.startswith(top))
for p in ("/usr", "/lib", "/lib64", "/nowhere", "/etc/hostname/", top + "/host.txt"):
    show("stat", p)
    show("lstat", p, follow=False)
os.symlink("inner", os.path.join(made, "ln"))
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
def legacy(nr, p):                       # stat(2) and lstat(2) themselves, not newfstatat
    buf = ctypes.create_string_buffer(144)
    rv = libc.syscall(nr, p.encode(), buf)
    nlink, mode = struct.unpack_from("<QI", buf.raw, 16)
    return ("errno", ctypes.get_errno()) if rv else (oct(mode), nlink)
for p in ("/", "//", "/.", "/dev", "/dev/", "/usr", "/usr/", "/usr/.", "/usr/lib/.", "/lib",
          "/lib/", made + "/ln", made + "/ln/", made + "/inner/.", top + "/host.txt",
          top + "/host.txt/", "/nowhere", "/nowhere/"):
    for call in (lambda: os.readlink(p), lambda: os.access(p, os.R_OK),
                 lambda: os.access(p, os.X_OK, follow_symlinks=False),
                 lambda: os.access(p, os.W_OK),
                 lambda: legacy(4, p), lambda: legacy(6, p)):
        try:
            print(p, call())
        except OSError as e:
            print(p, "errno", e.errno)
    show("stat", p, ino=not p.startswith(top))
    show("lstat", p, follow=False, ino=not p.startswith(top))
for prog in ("no-such-program", "/usr/bin/no-such-program", "/nowhere/at/all", "/etc/hostname/x"):
    try:
        subprocess.run([prog])
    except OSError as e:
        print("exec", prog, e.errno)
print(subprocess.run(["sh", "-c", "no-such-program; echo $?"], capture_output=True).stdout)
"""


def test_directories_themselves_cwd_and_missing_programs_match_the_python_loop(appvirt,
                                                                             tmp_path):
    """stat of directories named by themselves ("." and names in directories that are not
    plain, as "/usr"), getcwd, and execve of programs that are not there: the same answers
    from the compiled loop as from the Python loop, symlinks in "/" (merged /usr) included."""
    top = tmp_path / "top"
    top.mkdir()
    (top / "host.txt").write_text("host\n")
    before = tree_digest(top)
    out, done = _in_both_loops(appvirt, WALKER, top, "walk")
    for call in ("getcwd", "execve", "readlink", "stat", "lstat"):
        assert re.search(rf"\b{call} \d+", done), (call, done)
    assert f"cwd {top}/made/inner" in out and "exec no-such-program 2" in out
    assert "exec /etc/hostname/x 20" in out and "b'127\\n'" in out
    assert tree_digest(top) == before and not (top / "made").exists()


PROBES = r"""
import os, sys
top, plain = sys.argv[1], sys.argv[1] + "-plain"        # (the program changes nothing there)
made = os.path.join(top, "made")
os.makedirs(os.path.join(made, "inner"))
os.chdir(os.path.join(top, "sub"))
def show(tag, p, follow=True):
    try:
        st = os.stat(p, follow_symlinks=follow)
        print(tag, p, oct(st.st_mode), st.st_ino if not p.startswith(made) else "")
    except OSError as e:
        print(tag, p, "errno", e.errno)
# gcc's library search: directories named by themselves, through "..", most of them missing
paths = [top + "/nope/.", top + "/nope/", top + "/host.txt/.", top + "/sub/.",
         top + "/sub/..", top + "/sub/../sub/..", top + "/sub/../nope/.", top + "/nope/..",
         top + "/host.txt/..", "/usr/lib/..", "/usr/lib/../../..", "/..", "..", "../..",
         "../sub/../.", "/usr/lib/x86_64-linux-gnu/no-such-12/.",
         "/usr/lib/gcc/../../lib/../lib/.", "/lib/../lib/.", made + "/inner/..",
         made + "/inner/../.", made + "/nope/.", top + "/nope/../host.txt",
         top + "/nope/../sub/.", top + "/host.txt/../sub", top + "/host.txt/../sub/.",
         "/usr/no-such-dir/lib/../lib/.", top + "/sub/nope/../../sub/..",
         plain + "/nope/../d", plain + "/f/../d", plain + "/d/nope/../../d/.",
         plain + "/f/../d/.", plain + "/d/../f", plain + "/d/.."]
uppers = [made, made + "/inner", top, os.path.dirname(top), os.path.dirname(os.path.dirname(top))]
if os.environ.get("PROBES") == "none":  # (what the rest of the program costs)
    paths = uppers = []
# realpath of a directory of the upper layer: each ancestor read as a link (gcc's $TMPDIR)
for p in uppers:
    try:
        print("readlink", p, os.readlink(p))
    except OSError as e:
        print("readlink", p, "errno", e.errno)
for p in paths:
    for i in range(3):
        show("stat", p)
    show("lstat", p, follow=False)
    print("access", p, os.access(p, os.R_OK))
    try:
        print("readlink", p, os.readlink(p))
    except OSError as e:
        print("readlink", p, "errno", e.errno)
    try:
        os.close(os.open(p, os.O_RDONLY))
        print("open", p, "ok")
    except OSError as e:
        print("open", p, "errno", e.errno)
"""


def _python_s(stats: str, call: str) -> int:
    """How many of the calls --stats counts were Python's (0 for one not among the 8 it
    lists by name)."""
    total = re.search(rf"intercepted:.*\b{call} (\d+)", stats)
    done = re.search(rf"compiled loop:.*\b{call} (\d+)", stats)
    return int(total.group(1)) - (int(done.group(1)) if done else 0) if total else 0


def test_directories_named_through_dots_match_the_python_loop(appvirt, home, tmp_path):
    """A directory named by itself through a final "." or ".." (after a directory the view
    shows as itself), one that is not there in a plain directory, and a ".." after a plain
    directory that is not there: the compiled loop's answers, ENOENT and ENOTDIR included,
    are the Python loop's; after a symlink (/lib) they stay Python's. readlink of a directory
    of the upper layer (an ancestor of made) is EINVAL from the compiled loop too."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "host.txt").write_text("host\n")
    (tmp_path / "top-plain" / "d").mkdir(parents=True)
    (tmp_path / "top-plain" / "f").write_text("f\n")
    before = tree_digest(top), tree_digest(tmp_path / "top-plain")
    fast, _ = _both_loops(appvirt, PROBES, top, "dots")
    out = fast.stdout
    assert f"stat {top}/nope/. errno 2" in out and f"stat {top}/host.txt/. errno 20" in out
    assert f"stat {top}/sub/../nope/. errno 2" in out and "stat /usr/lib/../../.. 0o40755" in out
    assert f"stat {top}/nope/../host.txt errno 2" in out and f"access {top}/nope/.. False" in out
    assert f"stat {top}/host.txt/../sub errno 20" in out
    assert re.search(rf"stat {top}/sub/\.\. 0o40\d+ {(top).stat().st_ino}\n", out), out
    # Python's: the calls on /lib/../lib/. (".." after a symlink), and on the directories
    # named by themselves through host.txt and through the merged top (the program made made
    # in it); counted against a run without the probes
    base = appvirt("run", "--stats", "--app", "dotsbase", "--", PYTHON, "-c", PROBES, str(top),
                   env={"APPVIRT_FASTPATH": "1", "PROBES": "none"})
    assert base.returncode == 0, base.stderr
    for call, python_s in (("newfstatat", 20), ("readlink", 5), ("access", 10), ("openat", 29)):
        assert _python_s(fast.stderr, call) - _python_s(base.stderr, call) <= python_s, \
            (call, fast.stderr, base.stderr)
    plain = f"{top}-plain"
    assert f"stat {plain}/nope/../d errno 2" in out and f"stat {plain}/f/../d errno 20" in out
    assert f"stat {plain}/f/../d/. errno 20" in out and f"access {plain}/d/nope/../../d/. False" in out
    assert (tree_digest(top), tree_digest(tmp_path / "top-plain")) == before
    assert not (top / "made").exists()


STATFS = r"""
import ctypes, os, sys
top = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs(os.path.join(top, "made"))               # the overlay's own: its upper directory
for p in ("/usr/share", "/sys/fs", top + "/host.txt", top + "/nope", top + "/host.txt/x",
          top + "/made", "/usr/lib/../share/."):
    buf = ctypes.create_string_buffer(120)
    rc = libc.statfs(p.encode(), buf)
    # type, block size, name length and flags: what does not move while the test runs
    fields = ctypes.cast(buf, ctypes.POINTER(ctypes.c_long))
    print("statfs", p, rc, ctypes.get_errno() if rc else (fields[0], fields[1], fields[8], fields[9]))
print("statfs bad buffer", libc.statfs(b"/usr/share", ctypes.c_void_p(8)), ctypes.get_errno())
"""


def test_statfs_matches_the_python_loop(appvirt, home, tmp_path):
    """statfs of a name the compiled loop finds (a host object, the overlay's upper
    directory, one not there, a bad buffer) is answered in C as the handler mirrors it; a
    directory named by itself stays Python's."""
    top = tmp_path / "top"
    top.mkdir()
    (top / "host.txt").write_text("host\n")
    fast, _ = _both_loops(appvirt, STATFS, top, "statfs")
    out = fast.stdout
    home_fs = os.statvfs(str(home))
    assert f"statfs {top}/nope -1 2" in out and f"statfs {top}/host.txt/x -1 20" in out
    assert "statfs bad buffer -1 14" in out
    assert re.search(rf"statfs {top}/made 0 \(\d+, {home_fs.f_bsize}, {home_fs.f_namemax},", out)
    # C's: /usr/share, /sys/fs, host.txt, nope and the bad buffer; Python's: host.txt/x,
    # made (a directory of the overlay's) and the directory named by itself
    done = re.search(r"compiled loop:.*\bstatfs (\d+)", fast.stderr)
    assert done and int(done.group(1)) >= 5, fast.stderr
    assert not (top / "made").exists()


DOTDOT = r"""
import os, sys
top = sys.argv[1]
made = os.path.join(top, "made")
os.makedirs(os.path.join(made, "inner", "deeper"))
os.symlink("inner/deeper", os.path.join(made, "ln"))          # ln/.. is inner, not made
def show(tag, p, follow=True):
    try:
        st = os.stat(p, follow_symlinks=follow)
        print(tag, p, oct(st.st_mode), st.st_size, st.st_ino if not p.startswith(made) else "")
    except OSError as e:
        print(tag, p, "errno", e.errno)
paths = [top + "/sub/../host.txt", top + "/sub/./../sub/inner.txt", top + "/../" +
         os.path.basename(top) + "/host.txt", "/usr/lib/../bin/sh", "/../usr/bin/../bin/sh",
         "/lib/../bin/sh", "/nowhere/../usr/bin/sh", top + "/host.txt/../host.txt",
         top + "/absent/../host.txt", made + "/inner/../inner/deeper", made + "/ln/../deeper",
         made + "/inner/deeper/../../inner", "/usr/bin/sh/../sh", "/usr/nowhere/../bin/sh"]
for p in paths:
    show("stat", p)
    show("lstat", p, follow=False)
    print("access", p, os.access(p, os.R_OK))
    try:
        with open(p, "rb") as f:
            print("read", p, f.read(8))
    except OSError as e:
        print("read", p, "errno", e.errno)
os.chdir(made + "/inner")
for p in ("../inner/made.txt", "deeper/../made2.txt"):
    with open(p, "w") as f:
        f.write(p)
    os.chmod(p, 0o640)
os.mkdir("../inner/deeper/../sub2")
os.rename("deeper/../made2.txt", "../inner/renamed.txt")
os.unlink("./deeper/../made.txt")
print(sorted(os.listdir(".")), open("renamed.txt").read())
"""


def test_paths_through_dotdot_match_the_python_loop(appvirt, home, tmp_path):
    """".." after a directory the view shows as itself (plain: on the host; owned: made in
    the overlay) is its parent, answered by the compiled loop; after a symlink (/lib, ln), a
    missing name or a file it is Python's: the same output, log and overlay both ways."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "host.txt").write_text("host\n")
    (top / "sub" / "inner.txt").write_text("inner\n")
    before = tree_digest(top)
    out = _both_loops(appvirt, DOTDOT, top, "d")[0].stdout
    assert f"read {top}/sub/../host.txt b'host\\n'" in out
    assert f"stat {top}/host.txt/../host.txt errno 20" in out
    assert f"stat {top}/absent/../host.txt errno 2" in out
    assert "stat /usr/bin/sh/../sh errno 20" in out and "stat /usr/nowhere/../bin/sh errno 2" in out
    # ln/.. is inner (ln's target's parent), where deeper is; "made/deeper" is not there.
    assert re.search(rf"stat {top}/made/ln/\.\./deeper 0o40\d\d\d ", out), out
    assert "['deeper', 'renamed.txt', 'sub2'] deeper/../made2.txt" in out
    assert _records(home, "dfast") == _records(home, "dslow")
    assert _same_tree(home, "dfast", "dslow")
    assert tree_digest(top) == before and not (top / "made").exists()


SIGNALS = r"""
import os, signal, sys, time
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append("usr1"))
signal.signal(signal.SIGCHLD, lambda s, f: got.append("chld"))
for i in range(20):
    os.kill(os.getpid(), signal.SIGUSR1)
children = []
for i in range(5):
    pid = os.fork()
    if pid == 0:
        os._exit(i)
    children.append(pid)
codes = sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children)
pid = os.fork()
if pid == 0:                              # stops itself: a group stop, then continued
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(7)
_, st = os.waitpid(pid, os.WUNTRACED)
stopped = os.WSTOPSIG(st) if os.WIFSTOPPED(st) else None
os.kill(pid, signal.SIGCONT)
_, st = os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:                              # killed by a signal it does not handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    os._exit(0)
_, killed = os.waitpid(pid, 0)
print(got.count("usr1"), "chld" in got, codes, stopped, os.waitstatus_to_exitcode(st),
      os.WTERMSIG(killed))
"""


def test_signals_are_delivered_as_the_python_loop_delivers_them(appvirt, tmp_path):
    """Signal-delivery stops answered by the compiled loop: handled signals, SIGCHLD, a
    group stop and its SIGCONT, a fatal signal; the same program output both ways."""
    out, done = _in_both_loops(appvirt, SIGNALS, tmp_path, "sig")
    assert out.strip() == "20 True [0, 1, 2, 3, 4] 19 7 15", out
    delivered = re.search(r"signal deliveries (\d+)", done)
    assert delivered and int(delivered.group(1)) >= 20, done


NAMES_ITSELF = r"""
import os, sys
os.chdir("/dev")
for i in range(50):
    a, b, c = os.stat("/dev"), os.stat("."), os.stat("/dev/")
    assert (a.st_ino, a.st_nlink, a.st_mode) == (b.st_ino, b.st_nlink, b.st_mode) == \
        (c.st_ino, c.st_nlink, c.st_mode)
    assert os.getcwd() == "/dev"
print(oct(os.stat(".").st_mode), os.access(".", os.R_OK), os.access(".", os.W_OK))
os.chdir("/")              # holds the registry tree: only "/" itself is the host's
for i in range(50):
    a, b = os.stat("/"), os.stat(".")
    assert (a.st_ino, a.st_nlink, a.st_mode) == (b.st_ino, b.st_nlink, b.st_mode)
    assert os.getcwd() == "/"
print(oct(os.stat("/").st_mode), os.access("/", os.R_OK), os.access(".", os.W_OK),
      sorted(os.listdir("/run/appvirt")))
"""


def test_a_name_by_name_directory_itself_is_answered_in_c(appvirt, tmp_path):
    """/dev is decided name by name (rules for some of its names), "/" holds the registry
    tree (its names are Python's); the attributes of both and a cwd there are the host's:
    stat and getcwd answered by the compiled loop, as Python answers them; a write check
    stays Python's (a rule may refuse it)."""
    fast, _ = _both_loops(appvirt, NAMES_ITSELF, tmp_path, "names")
    assert fast.stdout.startswith("0o40"), fast.stdout
    seen, done = (dict((c, int(n)) for c, n in re.findall(r"(\w+) (\d+)", line.split(":")[-1]))
                  for line in fast.stderr.splitlines()
                  if line.startswith("appvirt: ") and "directories decided" not in line)
    left = {c: seen.get(c, 0) - done.get(c, 0) for c in ("newfstatat", "getcwd")}
    assert left["newfstatat"] < 20 and left["getcwd"] < 5, (left, fast.stderr)
    assert "['registry']" in fast.stdout, fast.stdout


OPENDIRS = r"""
import os, sys
top = sys.argv[1]
os.chdir(top)
def opened(p, flags=os.O_RDONLY | os.O_DIRECTORY):
    try:
        fd = os.open(p, flags)
    except OSError as e:
        return e.errno
    try:
        return os.fstat(fd).st_ino == os.stat(p).st_ino, sorted(os.listdir(fd))[:3]
    finally:
        os.close(fd)
for p in ("d/", "d/.", "d//", ".", "/", "/usr/", "ln/", "f/", "missing/", top + "/d/"):
    print(p, opened(p))
print("nofollow", opened("ln/", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
print("a file, no O_DIRECTORY", opened("f/", os.O_RDONLY))
for i in range(100):
    os.close(os.open("d/", os.O_RDONLY | os.O_DIRECTORY))
"""


def test_directories_opened_by_themselves_are_opened_in_c(appvirt, tmp_path):
    """opendir("dir/"), ".", "/" (git opens each directory of its work tree so): the host's
    own directory opened by the compiled loop as Python opens it, what is not a directory
    failing the same way."""
    top = tmp_path / "top"
    (top / "d" / "sub").mkdir(parents=True)
    (top / "f").write_text("f\n")
    (top / "ln").symlink_to("d")
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, OPENDIRS, top, "opendirs")
    native = subprocess.run([PYTHON, "-c", OPENDIRS, str(top)], capture_output=True,
                            text=True, timeout=60)
    assert fast.stdout == native.stdout
    assert "d/ (True, ['sub'])" in fast.stdout and "f/ 20" in fast.stdout
    seen, done = (dict((c, int(n)) for c, n in re.findall(r"(\w+) (\d+)", line.split(":")[-1]))
                  for line in fast.stderr.splitlines()
                  if line.startswith("appvirt: ") and "directories decided" not in line)
    assert seen["openat"] - done["openat"] < 20, fast.stderr      # the 100 "d/" among them
    assert tree_digest(top) == before


MANY_DIRS = r"""
import os, sys
top = sys.argv[1]
for i in range(700):                     # each a directory the engine holds open, for a while
    d = os.path.join(top, f"d{i}")
    os.mkdir(d)
    open(os.path.join(d, "f"), "w").close()
    os.stat(os.path.join(d, "f"))
    os.path.exists(os.path.join(d, "missing"))
for i in range(700):                     # again, after all went at least once
    os.stat(os.path.join(top, f"d{i}", "f"))
print("ready", flush=True)
sys.stdin.readline()
print(sum(os.path.isfile(os.path.join(top, f"d{i}", "f")) for i in range(700)))
"""


def test_the_directories_the_engine_holds_open_are_bounded(home, ptrace_ok, tmp_path):
    """The compiled loop holds each directory it answers names in open; after 1,400 visits
    of 700 directories the tracer holds a bounded number of descriptors, and the program
    saw every name."""
    from tests.conftest import appvirt_cmd
    top = tmp_path / "top"
    top.mkdir()
    p = subprocess.Popen(appvirt_cmd("run", "--app", "many", "--", PYTHON, "-c", MANY_DIRS,
                                     str(top)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n", p.stderr.read()
        held = len(os.listdir(f"/proc/{p.pid}/fd"))
        out, err = p.communicate("go\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert out.split() == ["700"]
    assert 10 < held < 320, held            # DIRFDS_MAX (256) and the tracer's own
    assert list(top.iterdir()) == []        # all of it in the overlay


MERGED = r"""
import os, sys
top = sys.argv[1]
def attempt(tag, fn):
    try:
        r = fn()
        if isinstance(r, int) and r > 2 and tag.startswith("open"):
            os.close(r)
            r = "fd"
        print(tag, "ok", r)
    except OSError as e:
        print(tag, "errno", e.errno)
def read(p):
    with open(p, "rb") as f:
        return f.read()
def look(phase):
    for name in ("a.txt", "b.txt", "gone.txt", "made.txt", "changed.txt", "link", "uplink",
                 "hostdir", "madedir", "nope", "hostdir/in.txt", "madedir/x"):
        p = os.path.join(top, name)
        attempt(f"{phase} read {name}", lambda: read(p))
        attempt(f"{phase} stat {name}", lambda: (oct(os.stat(p).st_mode), os.stat(p).st_size))
        attempt(f"{phase} lstat {name}", lambda: oct(os.lstat(p).st_mode))
        attempt(f"{phase} access {name}", lambda: os.access(p, os.R_OK))
        attempt(f"{phase} readlink {name}", lambda: os.readlink(p))
        attempt(f"{phase} open-dir {name}", lambda: os.open(p, os.O_RDONLY | os.O_DIRECTORY))
look("host")
with open(os.path.join(top, "made.txt"), "w") as f:      # the directory is merged from here
    f.write("made\n")
os.unlink(os.path.join(top, "gone.txt"))                   # a whiteout
with open(os.path.join(top, "changed.txt"), "a") as f:     # a copy-up
    f.write("more\n")
os.symlink("made.txt", os.path.join(top, "uplink"))
os.mkdir(os.path.join(top, "madedir"))
open(os.path.join(top, "madedir", "x"), "w").close()
for i in range(3):
    look(f"merged{i}")
attempt("write host file", lambda: os.write(os.open(os.path.join(top, "b.txt"), os.O_WRONLY | os.O_APPEND), b"w"))
look("after write")
def write(name, flags, data=b"w"):
    fd = os.open(os.path.join(top, name), flags, 0o640)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
W = os.O_WRONLY
for name in ("new1.txt", "new2.txt"):                      # in neither layer: made upper
    attempt("create " + name, lambda: write(name, W | os.O_CREAT | os.O_EXCL, name.encode()))
attempt("append upper", lambda: write("made.txt", W | os.O_APPEND, b"+"))
attempt("excl upper", lambda: write("made.txt", W | os.O_CREAT | os.O_EXCL))
attempt("excl host", lambda: write("a.txt", W | os.O_CREAT | os.O_EXCL))
attempt("creat host", lambda: write("a.txt", W | os.O_CREAT | os.O_APPEND, b"+"))   # copy-up
attempt("create whited out", lambda: write("gone.txt", W | os.O_CREAT | os.O_EXCL, b"again"))
attempt("trunc upper", lambda: write("new2.txt", W | os.O_TRUNC, b"t"))
attempt("create in neither, no creat", lambda: write("absent.txt", W))
look("after creations")
for name in ("new1.txt", "new2.txt", "made.txt", "gone.txt", "a.txt"):
    attempt("final " + name, lambda: (read(os.path.join(top, name)), oct(os.stat(os.path.join(top, name)).st_mode)))
def attrs(p):
    st = os.lstat(p)          # (a symlink's own time is when each run made it)
    return oct(st.st_mode), st.st_uid, st.st_gid, "" if os.path.islink(p) else st.st_mtime_ns
for name in ("made.txt", "new1.txt", "b.txt", "host.txt", "uplink", "nope", "madedir/x"):
    p = os.path.join(top, name)
    attempt("chmod " + name, lambda: os.chmod(p, 0o604))
    attempt("chown " + name, lambda: os.chown(p, 1234, 5678))
    attempt("utime " + name, lambda: os.utime(p, ns=(1000000123, 2000000456)))
    attempt("attrs " + name, lambda: attrs(p))
fd = os.open(os.path.join(top, "new2.txt"), os.O_RDONLY)
attempt("fchmod upper", lambda: os.fchmod(fd, 0o640))
attempt("fchown upper", lambda: os.fchown(fd, 7, 8))
attempt("futimes upper", lambda: os.utime(fd, ns=(5, 6)))
os.close(fd)
attempt("attrs new2.txt", lambda: attrs(os.path.join(top, "new2.txt")))
for name in ("new1.txt", "made.txt", "changed.txt", "a.txt", "uplink", "nope", "madedir", "link",
             "only.txt"):
    attempt("unlink " + name, lambda: os.unlink(os.path.join(top, name)))
for name in ("newdir", "made.txt", "changed.txt", "gone.txt", "hostdir", "madedir"):
    attempt("mkdir " + name, lambda: os.mkdir(os.path.join(top, name), 0o750))
attempt("in newdir", lambda: write("newdir/f", W | os.O_CREAT, b"f"))
look("after changes")
print(sorted(os.listdir(top)))
"""


def test_reads_and_changes_in_a_merged_directory_match_the_python_loop(appvirt, home, tmp_path):
    """A host directory where the program made, removed and changed names is merged from
    the upper layer and the host: reads there (stat, lstat, access, readlink, opens), and
    changes of the upper layer's objects alone (attributes, removals of names the host does
    not have, mkdir of names in neither layer) are answered in C, with the same output, log
    records and overlay as the Python loop, and the host untouched."""
    top = tmp_path / "top"
    top.mkdir()
    for name, text in (("a.txt", "a\n"), ("b.txt", "b\n"), ("gone.txt", "g\n"),
                       ("changed.txt", "c\n"), ("host.txt", "h\n"), ("only.txt", "o\n")):
        (top / name).write_text(text)
    (top / "link").symlink_to("a.txt")
    (top / "hostdir").mkdir()
    (top / "hostdir" / "in.txt").write_text("in\n")
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, MERGED, top, "m")
    out = fast.stdout
    assert "merged0 read made.txt ok b'made\\n'" in out and "merged0 read gone.txt errno 2" in out
    assert "merged0 read changed.txt ok b'c\\nmore\\n'" in out
    assert "merged0 read a.txt ok b'a\\n'" in out and "merged0 readlink uplink ok made.txt" in out
    assert "merged2 read uplink ok b'made\\n'" in out and "merged2 stat madedir/x ok" in out
    assert "after write read b.txt ok b'b\\nw'" in out
    assert "final new1.txt ok (b'new1.txt', '0o100640')" in out and "excl upper errno 17" in out
    assert "final made.txt ok (b'made\\n+'" in out and "final gone.txt ok (b'again'" in out
    assert "final new2.txt ok (b't', " in out and "final a.txt ok (b'a\\n+'" in out
    assert "create in neither, no creat errno 2" in out and "excl host errno 17" in out
    assert "attrs made.txt ok ('0o100604', 1234, 5678, 2000000456)" in out
    assert "attrs b.txt ok ('0o100604', 1234, 5678, 2000000456)" in out
    assert "attrs host.txt ok ('0o100604', 1234, 5678, 2000000456)" in out    # copied up
    assert "unlink only.txt ok" in out and "after changes" in out
    assert "attrs new2.txt ok ('0o100640', 7, 8, 6)" in out and "chmod nope errno 2" in out
    assert "unlink made.txt ok" in out and "unlink changed.txt ok" in out
    assert "unlink nope errno 2" in out and "unlink madedir errno 21" in out
    assert "mkdir gone.txt errno 17" in out and "mkdir hostdir errno 17" in out
    assert "after changes stat made.txt ok ('0o40750'" in out and "mkdir changed.txt ok" in out
    assert "in newdir ok 1" in out and "unlink uplink ok" in out
    assert "after changes read a.txt errno 2" in out and "after changes read link errno 2" in out
    # Every readlink and access of the program is in the directory, merged or not: all in C;
    # so are the changes of upper objects, removals of upper-only names, mkdir in neither.
    asked = re.search(r"intercepted: (.*)", fast.stderr).group(1)
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr).group(1)
    for call, least in (("chmod", 4), ("chown", 4), ("unlink", 4), ("mkdir", 4), ("fchmod", 1)):
        assert int(re.search(rf"\b{call} (\d+)", done).group(1)) >= least, (call, done)
    for call in ("readlink", "access"):
        count = re.compile(rf"\b{call} (\d+)")
        assert count.search(asked).group(1) == count.search(done).group(1), fast.stderr
    assert _records(home, "mfast") == _records(home, "mslow")
    assert _same_tree(home, "mfast", "mslow")
    assert tree_digest(top) == before


UPPER_DIRS = r"""
import os, sys
top = sys.argv[1]
NAMES = ("", "/a", "/a/b", "/a/b/made", "/a/b/made/sub", "/a/b/h1", "/a/b/made2", "/c")
def show(tag):
    for n in NAMES:
        for how, fn in (("stat", os.stat), ("lstat", os.lstat)):
            try:
                st = fn(top + n)
                print(tag, how, n or "/", oct(st.st_mode), st.st_nlink, st.st_uid, st.st_size)
            except OSError as e:
                print(tag, how, n or "/", "errno", e.errno)
    fd = os.open(top + "/a", os.O_RDONLY | os.O_DIRECTORY)
    print(tag, "at b", os.stat("b", dir_fd=fd).st_nlink)
    os.close(fd)
    here = os.getcwd()
    os.chdir(top + "/a")
    print(tag, "relative b", os.stat("b").st_nlink, "dotdot", os.stat("../a").st_nlink)
    os.chdir(here)
show("host")
os.mkdir(top + "/a/b/made")       # top, a and b copied up: upper directories over the host's
show("made")
os.mkdir(top + "/a/b/made/sub")   # in an owned directory: the compiled loop's mkdir
show("sub")
os.mkdir(top + "/a/b/made2")      # in a merged one: Python's
show("made2")
os.rmdir(top + "/a/b/made/sub")
os.rmdir(top + "/a/b/h1")         # the host's: a whiteout
show("removed")
os.unlink(top + "/c/f")
os.rmdir(top + "/c")
os.mkdir(top + "/c")              # opaque over the host's
show("opaque")
print("ready", flush=True)
sys.stdin.readline()              # meanwhile a directory appears in the host's a/b
show("host changed")
"""


def test_stats_of_upper_directories_match_the_python_loop(home, ptrace_ok, tmp_path):
    """A directory of the upper layer under upper-layer directories ($TMPDIR's ancestors
    once the program made something there: git stats /tmp a hundred times a commit) is
    answered in C: the upper directory's stat with the view's link count, which follows
    subdirectories made and removed by either loop, whiteouts, an opaque directory and a
    directory made on the host meanwhile; the same output as the Python loop, the host
    untouched but for the test's own directory."""
    top = tmp_path / "top"
    (top / "a" / "b" / "h1").mkdir(parents=True)
    (top / "c").mkdir()
    (top / "c" / "f").write_text("f\n")
    before = tree_digest(top)
    b_times = (top / "a" / "b").stat()
    runs = {}
    for flag in ("1", "0"):
        p = subprocess.Popen(appvirt_cmd("run", "--stats", "--app", "u" + flag, "--", PYTHON,
                                         "-c", UPPER_DIRS, str(top)),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "APPVIRT_FASTPATH": flag})
        try:
            first = _lines_until(p.stdout, "ready")
            (top / "a" / "b" / "hostnew").mkdir()
            out, err = p.communicate("go\n", timeout=60)
        finally:
            p.kill()
        (top / "a" / "b" / "hostnew").rmdir()
        os.utime(top / "a" / "b", ns=(b_times.st_atime_ns, b_times.st_mtime_ns))
        assert p.returncode == 0, err
        runs[flag] = (first + out, err)
    (fast, fast_err), (slow, _) = runs["1"], runs["0"]
    assert fast == slow
    for tag, b_links in (("host", 3), ("made", 4), ("sub", 4), ("made2", 5), ("removed", 4),
                         ("host changed", 5)):
        assert f"{tag} stat /a/b 0o40755 {b_links} " in fast, (tag, fast)
        assert f"{tag} at b {b_links}\n" in fast and f"{tag} relative b {b_links} " in fast
    assert "sub stat /a/b/made 0o40755 3 " in fast and "removed stat /a/b/made 0o40755 2 " in fast
    assert "opaque stat /c 0o40755 2 " in fast and "removed stat /a/b/h1 errno 2" in fast
    asked = re.search(r"intercepted: .*\bnewfstatat (\d+)", fast_err)
    done = re.search(r"answered by the compiled loop: .*\bnewfstatat (\d+)", fast_err)
    assert asked and done, fast_err
    assert asked.group(1) == done.group(1), fast_err
    assert _same_tree(home, "u1", "u0")
    assert tree_digest(top) == before


OBJECTS = r"""
import os, sys
top = sys.argv[1]
def attempt(tag, fn):
    try:
        print(tag, "ok", fn())
    except OSError as e:
        print(tag, "errno", e.errno)
def create(p, data):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
def look(d):
    return sorted(os.listdir(d)), oct(os.stat(d).st_mode), os.stat(d).st_nlink
for base in ("repo/objects", "hostobjs"):
    if base == "hostobjs":                # made opaque over the host's: the host has aa/
        for dirpath, dirs, files in os.walk(os.path.join(top, base), topdown=False):
            for f in files:
                os.unlink(os.path.join(dirpath, f))
            os.rmdir(dirpath)
    os.makedirs(os.path.join(top, base))
    for i in range(0, 0x30, 3):           # as git writes each object: probe, make, write
        d = os.path.join(top, base, "%02x" % i if i else "aa")
        p = os.path.join(d, "obj")
        attempt(f"{base} probe {i}", lambda: create(p, b"x"))
        attempt(f"{base} stat absent {i}", lambda: os.stat(d))
        attempt(f"{base} mkdir {i}", lambda: os.mkdir(d, 0o750))
        attempt(f"{base} write {i}", lambda: create(p, b"x" * i))
        attempt(f"{base} stat {i}", lambda: (oct(os.stat(p).st_mode), os.stat(p).st_size))
        attempt(f"{base} sub {i}", lambda: os.mkdir(os.path.join(d, "sub")))
        attempt(f"{base} look {i}", lambda: look(d))
        attempt(f"{base} in sub {i}", lambda: create(os.path.join(d, "sub", "f"), b"s"))
    print(base, look(os.path.join(top, base)))
    for i in range(0, 0x30, 9):           # removed, and made again
        d = os.path.join(top, base, "%02x" % i if i else "aa")
        for f in ("sub/f", "obj"):
            os.unlink(os.path.join(d, f))
        os.rmdir(os.path.join(d, "sub"))
        os.rmdir(d)
        attempt(f"{base} gone {i}", lambda: os.stat(os.path.join(d, "obj")))
        attempt(f"{base} again {i}", lambda: (os.mkdir(d), create(os.path.join(d, "new"), b"n")))
        attempt(f"{base} look again {i}", lambda: look(d))
    print(base, look(os.path.join(top, base)))
"""

# A later run: the owned directories are decided first, then the names in the ones made before.
OBJECTS_AGAIN = r"""
import os, sys
top = sys.argv[1]
for base in ("repo/objects", "hostobjs"):
    d = os.path.join(top, base)
    print(base, oct(os.stat(d).st_mode))
    for name in sorted(os.listdir(d)):
        for inner in ("obj", "new", "sub/f"):
            try:
                print(name, inner, os.stat(os.path.join(d, name, inner)).st_size)
            except OSError as e:
                print(name, inner, "errno", e.errno)
"""


def test_directories_made_in_owned_ones_are_decided_in_c(appvirt, home, tmp_path):
    """A directory probed in an owned one before it exists (plain: absent) and the one made
    there are decided by the compiled loop, as FastPath._below_upper decides them (git probes
    and makes objects/XX for its objects), also where the owned directory is opaque over a
    host directory that has the name: the same output, log and overlay as the Python loop,
    the host untouched."""
    top = tmp_path / "top"
    (top / "hostobjs" / "aa").mkdir(parents=True)
    (top / "hostobjs" / "aa" / "obj").write_text("the host's\n")
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, OBJECTS, top, "o")
    out = fast.stdout
    assert "repo/objects probe 3 errno 2" in out and "repo/objects stat absent 3 errno 2" in out
    assert "repo/objects stat 45 ok ('0o100444', 45)" in out
    assert "repo/objects look 6 ok (['obj', 'sub'], '0o40750', 3)" in out
    assert "hostobjs probe 0 errno 2" in out and "hostobjs look 0 ok (['obj', 'sub']" in out
    assert "hostobjs gone 9 errno 2" in out and "hostobjs look again 9 ok (['new']" in out
    decided = re.search(r"directories decided: (\d+) by the compiled loop", fast.stderr)
    assert decided and int(decided.group(1)) >= 60, fast.stderr
    again, _ = _both_loops(appvirt, OBJECTS_AGAIN, top, "o")
    assert "0c sub/f 1" in again.stdout and "09 new 1" in again.stdout
    assert _records(home, "ofast") == _records(home, "oslow")
    assert _same_tree(home, "ofast", "oslow")
    assert tree_digest(top) == before


EXECS = r"""
import os, shutil, subprocess, sys
top, python = sys.argv[1], sys.argv[2]
def run(tag, argv, **kw):
    try:
        r = subprocess.run(argv, capture_output=True, **kw)
        print(tag, r.returncode, r.stdout.strip()[:80])
    except OSError as e:
        print(tag, "errno", e.errno)
AT_EXECFN = "import ctypes; f = ctypes.CDLL(None).getauxval; f.restype = ctypes.c_char_p; print(f(31))"
run("absolute", ["/usr/bin/expr", "1", "+", "2"])
run("relative", ["./expr", "3", "+", "4"], cwd="/usr/bin")
run("env", ["/usr/bin/env"], env={"X": "1"})
run("execfn", ["./" + os.path.basename(python), "-c", AT_EXECFN], cwd=os.path.dirname(python))
run("host symlink", [top + "/hostlink", "5", "+", "6"])
run("host symlink chain", [top + "/hostlink2", "6", "+", "6"])
run("alias", ["/bin/expr", "7", "+", "8"])
run("script", [top + "/script.sh"])
run("not executable", [top + "/plain.txt"])
run("garbage", [top + "/garbage"])
run("directory", [top])
run("missing", [top + "/nope"])
shutil.copy("/usr/bin/expr", top + "/mine")         # a program of the overlay
os.chmod(top + "/mine", 0o755)
run("upper program", [top + "/mine", "9", "+", "1"])
os.symlink("/usr/bin/expr", top + "/uplink")         # the host's, through the overlay's link
run("upper link", [top + "/uplink", "2", "+", "2"])
run("host link to upper link", [sys.argv[3] + "/touplink", "1", "+", "1"])  # (host: dangling)
os.symlink("/usr/bin", top + "/bindir")              # a directory of the host's, likewise
run("upper dir link", [top + "/bindir/expr", "3", "+", "3"])
with open(top + "/upscript", "w") as f:              # a script whose interpreter is the
    f.write("#!" + top + "/mine\n")                  # overlay's: expr prints the script's path
os.chmod(top + "/upscript", 0o755)
run("upper interpreter", [top + "/upscript"])
run("host script, upper interpreter", [sys.argv[3] + "/up.sh"])
run("fifo", [sys.argv[3] + "/fifo"])                  # never read: it would block the tracer
"""


def test_execs_of_host_programs_match_the_python_loop(appvirt, home, tmp_path):
    """execve of a program the host has where the program names it (a regular file, not a
    script, in a plain directory reached without a symlink, or through symlinks each in such
    a directory) runs natively from the compiled loop, which also resumes the calls of the
    stub that maps the slot area into each new program, the path as given reaching the kernel
    (AT_EXECFN), failures (EACCES, ENOEXEC) coming back with the program's registers;
    aliases, scripts, the overlay's programs and links (also a host link to one) stay
    Python's, and a FIFO is never opened to look for "#!" (it would block the tracer). The
    same output, log and overlay as the Python loop."""
    top = tmp_path / "top"
    top.mkdir()
    (top / "hostlink").symlink_to("/usr/bin/expr")
    (top / "hostlink2").symlink_to("hostlink")
    (top / "script.sh").write_text("#!/bin/sh\necho from a script\n")
    (top / "script.sh").chmod(0o755)
    (top / "plain.txt").write_text("not a program\n")
    (top / "garbage").write_text("xx")
    (top / "garbage").chmod(0o755)
    hostbin = tmp_path / "hostbin"                # a plain directory: the program writes none
    hostbin.mkdir()
    (hostbin / "up.sh").write_text(f"#!{top}/mine\n")
    (hostbin / "up.sh").chmod(0o755)
    os.mkfifo(hostbin / "fifo", 0o755)
    (hostbin / "touplink").symlink_to(top / "uplink")
    before = tree_digest(top)
    runs = {}
    for flag in ("1", "0"):
        r = subprocess.run(appvirt_cmd("run", "--stats", "--app", "x" + flag, "--", PYTHON,
                                       "-c", EXECS, str(top), PYTHON, str(hostbin)),
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "APPVIRT_FASTPATH": flag})
        assert r.returncode == 0, r.stderr
        runs[flag] = r
    fast, slow = runs["1"], runs["0"]
    assert fast.stdout == slow.stdout
    out = fast.stdout
    assert "absolute 0 b'3'" in out and "relative 0 b'7'" in out and "env 0 b'X=1'" in out
    assert f"execfn 0 b\"b'./{os.path.basename(PYTHON)}'\"" in out, out
    assert "host symlink 0 b'11'" in out and "alias 0 b'15'" in out
    assert "host symlink chain 0 b'12'" in out and "host link to upper link 0 b'2'" in out
    assert "script 0 b'from a script'" in out and "not executable errno 13" in out
    assert "garbage errno 8" in out and "directory errno 13" in out and "missing errno 2" in out
    assert "upper program 0 b'10'" in out and "upper link 0 b'4'" in out
    assert "upper dir link 0 b'6'" in out and f"upper interpreter 0 b'{top}/upscript'" in out
    assert f"host script, upper interpreter 0 b'{hostbin}/up.sh'" in out
    assert "fifo errno 13" in out
    # absolute, relative, env, execfn, the two host symlinks and subprocess's own: C's
    done = re.search(r"answered by the compiled loop: .*\bexecve (\d+)", fast.stderr)
    assert done and int(done.group(1)) >= 9, fast.stderr
    # Each new program's slot stub makes two calls (openat, mmap), resumed in C.
    stubs = re.search(r"slot stubs' calls (\d+)", fast.stderr)
    assert stubs and int(stubs.group(1)) >= 2 * 12, fast.stderr
    assert "slot stubs' calls" not in slow.stderr
    assert _records(home, "x1") == _records(home, "x0")
    assert _same_tree(home, "x1", "x0")
    assert tree_digest(top) == before


def test_the_programs_first_exec_is_the_compiled_loops(appvirt, home, tmp_path):
    """The program's own execve, the run's first stop, is answered as its later ones are: a
    host program natively from the compiled loop, a script by Python; the same output and
    log as the Python loop."""
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    for program, compiled in (("/usr/bin/true", 1), (str(script), 0)):
        runs = {}
        for flag in ("1", "0"):
            r = appvirt("run", "--stats", "--app", "first" + flag, "--", program,
                        env={"APPVIRT_FASTPATH": flag})
            assert r.returncode == 0, r.stderr
            runs[flag] = r
        assert runs["1"].stdout == runs["0"].stdout
        done = re.search(r"answered by the compiled loop: .*\bexecve (\d+)", runs["1"].stderr)
        assert (int(done.group(1)) if done else 0) == compiled, runs["1"].stderr
        assert _records(home, "first1") == _records(home, "first0")


MERGED_LISTER = r"""
import ctypes, os, sys
top = sys.argv[1]
d = os.path.join(top, "src")                # the host's: 1,500 files, a directory, a link
held = os.open(d, os.O_RDONLY | os.O_DIRECTORY)      # opened while it is still the host's
for i in range(1500):                       # the program's beside them: merged from here
    open(os.path.join(d, f"{i:05d}-an-output-file-beside-its-source.o"), "w").close()
for i in range(0, 1500, 7):                 # some of the host's removed: whiteouts
    os.unlink(os.path.join(d, f"{i:05d}-a-source-file-of-the-host.c"))
os.mkdir(os.path.join(d, "made"))
os.symlink("made", os.path.join(d, "madelink"))
for i in (2, 1490, 1497):                   # copied up: in both layers, listed once
    with open(os.path.join(d, f"{i:05d}-a-source-file-of-the-host.c"), "a") as f:
        f.write("changed")
names = os.listdir(d)                       # the order as served, not sorted
print(len(names), names[:3], names[-3:])
print(sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink(), e.inode() > 0)
             for e in os.scandir(d) if not e.name[0].isdigit()))
print("held", os.listdir(held) == names)    # through the fd of the host's directory

""" + READDIR + r"""
os.rename(os.path.join(d, "00001-an-output-file-beside-its-source.o"), os.path.join(d, "moved"))
print(len(os.listdir(d)), "moved" in os.listdir(d))
"""


def test_listings_of_merged_directories_match_the_python_loop(appvirt, home, tmp_path):
    """Listings of a host directory where the program made, removed and changed names,
    served by the compiled loop: the upper directory's names and the host's it neither has
    nor whites out, in the same order, with the same positions (telldir, seekdir, rewinddir
    across calls), "." and "..", types and inodes, through an fd of the upper directory or
    of the host's opened before, as the Python loop serves them."""
    top = tmp_path / "top"
    src = top / "src"
    src.mkdir(parents=True)
    for i in range(1500):
        (src / f"{i:05d}-a-source-file-of-the-host.c").write_text("")
    (src / "hostdir").mkdir()
    (src / "hostlink").symlink_to("hostdir")
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, MERGED_LISTER, top, "ml")
    out = fast.stdout
    lines = out.splitlines()
    assert lines[0].startswith("2789 ['00000-an-output-file-beside-its-source.o', '00001-a-"), out
    assert "('hostdir', True, False, True)" in lines[1] and "('made', True, False, True)" in lines[1]
    assert lines[2:] == ["held True", "dots True", "seekdir True", "rewind b'.'", "2789 True"]
    done = re.search(r"answered by the compiled loop: .*\bgetdents64 (\d+)", fast.stderr)
    assert done and int(done.group(1)) >= 10, fast.stderr
    assert _records(home, "mlfast") == _records(home, "mlslow")
    assert tree_digest(top) == before


# Walks a host tree the way find does (a directory, then each directory in it), with the
# names a directory may not be plain for: a symlink to a directory, an overlay-reserved name,
# a hidden place, a missing directory, a file used as one; then changes a deep directory and
# walks again.
TREE_WALKER = r"""
import os, sys
top = sys.argv[1]
def walk(tag):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            print(tag, os.path.relpath(p, top), os.lstat(p).st_size)
    for rel in ("d2/e/f", "d2/link/e/f", "d2/link/e", "d2/.wh.dir/f", "d1/e/secret",
                "d1/e/secret/f", "d2/missing/e/f", "d3/e/f/x", "d4/e/new"):
        try:
            st = os.stat(os.path.join(top, rel))
            print(tag, rel, oct(st.st_mode), st.st_size)
        except OSError as e:
            print(tag, rel, "errno", e.errno)
walk("before")
with open(os.path.join(top, "d4", "e", "new"), "w") as f:
    f.write("made in a directory decided plain\n")
os.unlink(os.path.join(top, "d5", "e", "f"))
walk("after")
"""


def test_directories_below_plain_ones_are_decided_in_c(appvirt, home, tmp_path):
    """A directory in a plain one is decided plain by the compiled loop, as FastPath._decide
    decides it from its plain parent (find meets each directory of a tree so), unless it is a
    symlink or has an overlay-reserved name; a hidden place below keeps its rule, and a
    change there makes the decisions go. The same output as the Python loop, the same log and
    overlay, the host untouched."""
    top = tmp_path / "top"
    for i in range(20):
        (top / f"d{i}" / "e").mkdir(parents=True)
        (top / f"d{i}" / "e" / "f").write_text("x" * i)
    (top / "d1" / "e" / "secret").mkdir()
    (top / "d1" / "e" / "secret" / "f").write_text("hidden\n")
    (top / "d2" / "link").symlink_to("../d7")
    (top / "d2" / ".wh.dir").mkdir()
    (top / "d2" / ".wh.dir" / "f").write_text("reserved\n")
    policy = write_policy(tmp_path / "p.yaml", f"""
files:
  default: overlay
  rules:
    - {{path: "{top}/d1/e/secret", mode: hidden}}
""")
    before = tree_digest(top)
    runs = [appvirt("run", "--stats", "--policy", policy, "--app", "bp" + name, "--",
                    PYTHON, "-c", TREE_WALKER, str(top), env={"APPVIRT_FASTPATH": flag})
            for name, flag in (("fast", "1"), ("slow", "0"))]
    fast, slow = runs
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    assert fast.stdout == slow.stdout
    out = fast.stdout
    assert "before d19/e/f 19" in out and "before d2/e/f 0o100644 2" in out
    assert "before d2/link/e/f 0o100644 7" in out and "before d2/.wh.dir/f errno 2" in out
    assert "before d1/e/secret errno 2" in out and "before d1/e/secret/f errno 2" in out
    assert "before d2/missing/e/f errno 2" in out and "before d3/e/f/x errno 20" in out
    assert "after d4/e/new 34" in out and "after d4/e/new 0o100644 34" in out
    assert "before d5/e/f 5" in out and "after d5/e/f" not in out
    decided = re.search(r"directories decided: (\d+) by the compiled loop", fast.stderr)
    assert decided and int(decided.group(1)) >= 40, fast.stderr
    assert _records(home, "bpfast") == _records(home, "bpslow")
    assert _same_tree(home, "bpfast", "bpslow")
    assert tree_digest(top) == before


@pytest.mark.parametrize("name", ["PROGRAM", "WRITER", "TREE_WALKER", "MERGED", "WALKER",
                                  "DOTDOT"])
def test_every_call_logged_matches_the_python_loop(appvirt, home, tmp_path, name):
    """At log level all the compiled loop answers the stats, opens and listings of plain
    directories with their records, and makes its changes in owned and merged directories,
    where each of this file's programs sees the same and the log holds the same records, one
    for one, as with the Python loop; the host is untouched."""
    top = tmp_path / "top"
    for d in ("sub", "hostdir", "d2/.wh.dir", *(f"d{i}/e" for i in range(6))):
        (top / d).mkdir(parents=True, exist_ok=True)
    for f in ("a.txt", "b.txt", "gone.txt", "changed.txt", "host.txt", "only.txt",
              "sub/inner.txt", "hostdir/in.txt", "d2/.wh.dir/f", *(f"d{i}/e/f" for i in range(6))):
        (top / f).write_text(f + "\n")
    (top / "link").symlink_to("a.txt")
    (top / "d2" / "link").symlink_to("../d5")
    policy = write_policy(tmp_path / "all.yaml", "log: {level: all}\nfiles: {default: overlay}\n")
    before = tree_digest(top)
    app = "all" + name.lower().replace("_", "")
    fast, slow = (appvirt("run", "--stats", "--policy", policy, "--app", app + loop, "--",
                          sys.executable, "-c", globals()[name], str(top),
                          env={"APPVIRT_FASTPATH": flag})
                  for loop, flag in (("fast", "1"), ("slow", "0")))
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    assert fast.stdout == slow.stdout
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr)
    assert done, fast.stderr
    for call in ("newfstatat", "openat", "getdents64"):
        assert re.search(rf"\b{call} \d+", done.group(1)), (call, done.group(1))
    # One for one: the processes a program starts run side by side, in either order.
    assert _sorted(_records(home, app + "fast")) == _sorted(_records(home, app + "slow"))
    assert _same_tree(home, app + "fast", app + "slow")
    assert tree_digest(top) == before


def _sorted(records: list[dict]) -> list[str]:
    import json
    return sorted(json.dumps(r, sort_keys=True) for r in records)


# Makes and changes files as a virtual user would (their owners are its own), and reads them
# and the host's back.
AS_USER = r"""
import os, subprocess, sys
top = sys.argv[1]
print(os.getuid(), os.getgid(), os.geteuid())
made = os.path.join(top, "made")
os.mkdir(made)
for i in range(20):
    p = os.path.join(made, f"f{i}")
    with open(p, "w") as f:
        f.write("x" * i)
    st = os.stat(p)
    print(p[len(top):], st.st_uid, st.st_gid, st.st_size, oct(st.st_mode))
os.mkdir(os.path.join(made, "sub"))
st = os.stat(os.path.join(made, "sub"))
print("sub", st.st_uid, st.st_gid, oct(st.st_mode))
try:
    os.chown(os.path.join(made, "f1"), 0, 0)
    print("chown ok")
except OSError as e:
    print("chown errno", e.errno)
for name in sorted(os.listdir(top)):
    p = os.path.join(top, name)
    st = os.lstat(p)
    print(name, st.st_uid, st.st_size, os.access(p, os.R_OK))
print(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip())
"""


@pytest.mark.parametrize("identity", ["virtual-root", "{uid: 1234, gid: 1234}"])
def test_reads_under_an_identity_match_the_python_loop(appvirt, home, tmp_path, identity):
    """Under a virtual identity the compiled loop answers the reads, and leaves execve, and what
    a thread makes and changes while its virtual ids are not appvirt's own, to Python, which
    gives made objects the identity's owner: the same output, log and overlay (owners
    included) as the Python loop, the host untouched."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    for i in range(30):
        (top / f"h{i}").write_text(str(i))
    policy = write_policy(tmp_path / "id.yaml", f"identity: {identity}\n"
                          "files: {default: overlay}\n")
    before = tree_digest(top)
    app = "id" + str(len(identity))
    fast, slow = (appvirt("run", "--stats", "--policy", policy, "--app", app + loop, "--",
                          sys.executable, "-c", AS_USER, str(top),
                          env={"APPVIRT_FASTPATH": flag})
                  for loop, flag in (("fast", "1"), ("slow", "0")))
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    assert fast.stdout == slow.stdout
    uid = "0" if identity == "virtual-root" else "1234"
    assert f"/made/f3 {uid} {uid} 3" in fast.stdout and f"sub {uid} {uid} 0o40755" in fast.stdout
    assert "chown ok" in fast.stdout     # (permission checks are appvirt's own, README)
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr)
    assert done and re.search(r"\bnewfstatat \d+", done.group(1)), fast.stderr
    assert "execve" not in done.group(1)
    # What a virtual root run by root makes is root's natively too: made in C; a virtual
    # user's is Python's, which gives it the user's owner.
    assert ("mkdir" in done.group(1)) == (uid == str(os.geteuid()))
    assert _records(home, app + "fast") == _records(home, app + "slow")
    assert _same_tree(home, app + "fast", app + "slow")
    owners = [{p.name: (p.lstat().st_uid, p.lstat().st_gid)
               for p in (home / "apps" / app / "upper").rglob("*")} for app in
              (app + "fast", app + "slow")]
    assert owners[0] == owners[1]
    assert tree_digest(top) == before


# Reads host directories, changes some of them through Python's handlers (a creation in a
# host directory, a rename of one), and reads again: around each change the decisions go,
# the others stay; a path through a symlink to a changed directory sees the change.
AROUND_CHANGES = r"""
import os, sys
top = sys.argv[1]
def st(p):
    try:
        return os.stat(os.path.join(top, p)).st_size
    except OSError as e:
        return f"errno {e.errno}"
def look(tag):
    print(tag, [(p, st(p)) for p in ("T/a/b/f", "T/z/b/f", "S/f", "S/new", "D/new", "E/f",
                                     "E/sub/f", "S/sub/f", "T/a/b/x/y")])
look("first")
with open(os.path.join(top, "D/new"), "w") as f:
    f.write("new")
look("created")
os.rename(os.path.join(top, "T/a"), os.path.join(top, "T/z"))
look("renamed")
with open(os.path.join(top, "E/f"), "a") as f:
    f.write("more")
os.unlink(os.path.join(top, "D/sub/f"))
look("changed")
"""


def test_decisions_away_from_pythons_changes_stay(appvirt, home, tmp_path):
    """A change Python's handlers make in the overlay forgets the decisions around its path
    (the path, what is below it, every directory above it, and every path through a symlink),
    not all of them: the program sees the same as with the Python loop, before and after
    each change, through symlinks too, and the host is untouched."""
    top = tmp_path / "top"
    for d in ("T/a/b", "D/sub", "E/sub"):
        (top / d).mkdir(parents=True)
    for f, text in (("T/a/b/f", "abc"), ("D/f", "d"), ("D/sub/f", "ds"), ("E/f", "e"),
                    ("E/sub/f", "es")):
        (top / f).write_text(text)
    (top / "S").symlink_to("D")
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, AROUND_CHANGES, top, "around")
    out = fast.stdout
    assert "created [('T/a/b/f', 3), ('T/z/b/f', 'errno 2'), ('S/f', 1), ('S/new', 3)" in out
    assert "renamed [('T/a/b/f', 'errno 2'), ('T/z/b/f', 3)" in out
    assert "('E/f', 5), ('E/sub/f', 2), ('S/sub/f', 'errno 2')" in out
    assert _records(home, "aroundfast") == _records(home, "aroundslow")
    assert tree_digest(top) == before


# Reads the clock every way glibc and the kernel offer, under a frozen virtual clock, then
# sets it and reads the year.
CLOCK_READER = r"""
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
class Timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]
for name, clock in (("CLOCK_REALTIME", 0), ("CLOCK_REALTIME_COARSE", 5), ("CLOCK_TAI", 11)):
    print(name, time.clock_gettime_ns(clock))
tv = Timeval()
print("gettimeofday", libc.syscall(96, ctypes.byref(tv), None), tv.sec, tv.usec)
t = ctypes.c_long()
print("time", libc.syscall(201, ctypes.byref(t)), t.value, libc.syscall(201, None))
print("bad pointer", libc.syscall(228, 0, ctypes.c_void_p(8)), ctypes.get_errno())
ts = Timeval()                                   # (a timespec has the same two longs)
libc.syscall(228, 0, ctypes.byref(ts))
print("fractions", 0 <= ts.usec < 10**9, 0 <= tv.usec < 10**6)
print("odd clock", libc.syscall(228, ctypes.c_long(1 << 32), ctypes.byref(tv)) == 0)
for _ in range(300):
    time.time()
time.clock_settime(time.CLOCK_REALTIME, 2208988800)       # 2040-01-01
print("set", time.gmtime().tm_year)
"""


@pytest.mark.parametrize("clock", ["2030-01-01 00:00:00", "-60y"])
def test_time_calls_of_a_virtual_clock_match_the_python_loop(appvirt, home, tmp_path, clock):
    """Under a virtual clock the compiled loop answers clock_gettime of the realtime clocks,
    gettimeofday and time from the clock's state as VirtualClock computes it (before 1970
    too), and from its new state once the program sets the time; it logs them as the
    handlers do; a bad pointer stays Python's: the same output and records."""
    policy = write_policy(tmp_path / "t.yaml", f"time: '{clock}'\n")
    fast, slow = (appvirt("run", "--stats", "--policy", policy, "--app", "clock" + loop, "--",
                          sys.executable, "-c", CLOCK_READER, env={"APPVIRT_FASTPATH": flag})
                  for loop, flag in (("fast", "1"), ("slow", "0")))
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    out = fast.stdout
    assert "set 2040" in out and "bad pointer -1 14" in out and "fractions True True" in out
    if clock == "-60y":              # a running clock: the readings differ run to run
        assert int(out.split("CLOCK_REALTIME ")[1].split()[0]) < 0
        return
    assert fast.stdout == slow.stdout
    assert "CLOCK_REALTIME 1893456000000000000" in out and "gettimeofday 0 1893456000 0" in out
    assert "time 1893456000 1893456000 1893456000" in out
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr)
    assert done, fast.stderr
    for call, least in (("clock_gettime", 300), ("gettimeofday", 1), ("time", 2)):
        got = re.search(rf"\b{call} (\d+)", done.group(1))
        assert got and int(got.group(1)) >= least, (call, done.group(1))
    assert _records(home, "clockfast") == _records(home, "clockslow")


UMASKS = r"""
import os, sys, threading
d = os.path.join(sys.argv[1], "made")
os.mkdir(d)                                      # an owned directory: mkdir there is C's
def made(name, mode=0o777):
    os.mkdir(os.path.join(d, name), mode)
    print(name, oct(os.stat(os.path.join(d, name)).st_mode & 0o7777))
for name, mask in (("a", 0o077), ("b", 0o022), ("c", 0o000), ("d", 0o027)):
    os.umask(mask)
    made(name)
    made(name + "2", 0o751)
pid = os.fork()
if pid == 0:                                     # the child's umask is its own
    made("child-inherited")
    os.umask(0o007)
    made("child-own")
    os._exit(0)
os.waitpid(pid, 0)
made("parent-after-child")
t = threading.Thread(target=os.umask, args=(0o070,))   # a thread's umask is its process's
t.start()
t.join()
made("after-thread")
os.umask(0o022)
os.mkdir(os.path.join(d, "at"))
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.umask(0o066)
os.mkdir("at2", dir_fd=fd)
print("at2", oct(os.stat("at2", dir_fd=fd).st_mode & 0o7777))
"""


def test_directories_made_get_the_umask_in_force_when_made(appvirt, home, tmp_path):
    """mkdir in an owned directory, made by the compiled loop, applies the program's umask
    of the moment (the engine keeps each process's, and forgets them all at each umask
    call): after each umask call, in a forked child and its parent, after a thread's: the
    modes native rules give, as the Python loop makes them."""
    top = tmp_path / "top"
    top.mkdir()
    fast, slow = _both_loops(appvirt, UMASKS, top, "umask")
    modes = dict(line.split() for line in fast.stdout.splitlines())
    assert modes == {"a": "0o700", "a2": "0o700", "b": "0o755", "b2": "0o751", "c": "0o777",
                     "c2": "0o751", "d": "0o750", "d2": "0o750",
                     "child-inherited": "0o750", "child-own": "0o770",
                     "parent-after-child": "0o750", "after-thread": "0o707", "at2": "0o711"}
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr)
    assert done and re.search(r"\bmkdir(at)? (\d+)", done.group(1)), fast.stderr
    made = [[r for r in _records(home, app) if "/made" in r.get("path", "")]
            for app in ("umaskfast", "umaskslow")]
    assert len(made[0]) >= 16 and made[0] == made[1]
    assert _same_tree(home, "umaskfast", "umaskslow")
    assert not (top / "made").exists()


ABSENT_DIRS = r"""
import os, sys, time
top = sys.argv[1]
fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
calls = (("stat", lambda p: os.stat(p)), ("lstat", lambda p: os.lstat(p)),
         ("open", lambda p: os.close(os.open(p, os.O_RDONLY))),
         ("create", lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))),
         ("at", lambda p: os.stat(os.path.relpath(p, top), dir_fd=fd)),
         ("access", lambda p: os.access(p, os.F_OK) or os.stat(p)))
for rel in ("absent/x", "absent/deeper/x", "file.txt/x", "file.txt/deeper/x", "dir/absent/x",
            "dir/x", "link-to-dir/x"):
    for what, call in calls:
        try:
            call(os.path.join(top, rel))
            print(what, rel, "ok")
        except OSError as e:
            print(what, rel, "errno", e.errno)
if len(sys.argv) > 2:
    found, misses, end = False, 0, time.monotonic() + 30
    while not found and time.monotonic() < end:
        try:
            found = bool(os.stat(os.path.join(top, "later", "x")))
        except FileNotFoundError:
            misses += 1
            if misses == 1:         # the host makes "later" once it reads this line
                print("waiting", flush=True)
            time.sleep(0.005)
    print("later/x", "found" if found else "never found", "after a miss" if misses else "at once")
"""


def test_names_in_absent_directories_fail_as_natively_until_the_host_makes_them(
        appvirt, tmp_path):
    """Opens, creations and stats of names in plain directories that are not there, or are
    files (the compiled loop answers these from the failed open of the directory alone): the
    same errors as natively, and a directory the host makes while the program runs is seen at
    its next look (nothing remembers a directory as absent)."""
    top = tmp_path / "top"
    (top / "dir").mkdir(parents=True)
    (top / "dir" / "x").write_text("x\n")
    (top / "file.txt").write_text("file\n")
    (top / "link-to-dir").symlink_to("dir")
    native = subprocess.run([PYTHON, "-c", ABSENT_DIRS, str(top)], capture_output=True,
                            text=True, timeout=60)
    assert native.returncode == 0, native.stderr
    assert "create absent/x errno 2" in native.stdout      # (so natively nothing was made)
    assert "open file.txt/deeper/x errno 20" in native.stdout
    before = tree_digest(top)
    proc = subprocess.Popen(appvirt_cmd("run", "--stats", "--", PYTHON, "-c", ABSENT_DIRS,
                                        str(top), "then-later"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "APPVIRT_FASTPATH": "1"})
    try:
        assert _lines_until(proc.stdout, "waiting") == native.stdout
        assert tree_digest(top) == before
        (top / "later").mkdir()
        (top / "later" / "x").write_text("made by the host\n")
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert rest == "later/x found after a miss\n"
    done = re.search(r"answered by the compiled loop: (.*)", err)
    assert done and re.search(r"\bopenat \d+", done.group(1)), err
    assert sorted(os.listdir(top)) == ["dir", "file.txt", "later", "link-to-dir"]
    assert (top / "dir" / "x").read_text() == "x\n"


MERGED_CWD = r"""
import os, sys
top = sys.argv[1]
open(os.path.join(top, "made.txt"), "w").close()    # top: the host's and the upper layer's
os.mkdir(os.path.join(top, "made"))                  # the upper layer's alone
os.mkdir(os.path.join(top, "hostdir", "sub"))        # hostdir merged too, sub owned
for d in (top, os.path.join(top, "made"), os.path.join(top, "hostdir"),
          os.path.join(top, "hostdir", "sub"), os.path.join(top, "plain")):
    os.chdir(d)
    seen = {os.getcwd() for i in range(30)}
    print(sorted(seen), sorted(os.listdir(".")))
"""


def test_getcwd_in_merged_directories_is_answered_in_c(appvirt, tmp_path):
    """A working directory the program made something in (its home, $TMPDIR) is merged
    from the upper layer and the host: getcwd there is the compiled loop's, as in plain and
    owned directories (Python's imports ask for it at each import), with the Python loop's
    answers."""
    top = tmp_path / "top"
    (top / "hostdir").mkdir(parents=True)
    (top / "plain").mkdir()
    before = tree_digest(top)
    out, done = _in_both_loops(appvirt, MERGED_CWD, top, "mcwd")
    for d in ("", "/made", "/hostdir", "/hostdir/sub", "/plain"):
        assert f"['{top}{d}']" in out, out
    assert int(re.search(r"\bgetcwd (\d+)", done).group(1)) >= 150, done
    assert tree_digest(top) == before


DIRS_IN_MERGED = r"""
import os, sys
top = sys.argv[1]
os.chdir(top)
open("made.txt", "w").close()                  # top: merged from here on
def attempt(tag, fn):
    try:
        got = fn()
        print(tag, "ok", got if got is not None else "")
    except OSError as e:
        print(tag, "errno", e.errno)
def show(name):
    st = os.lstat(name)
    return oct(st.st_mode), st.st_nlink, st.st_uid, st.st_gid, st.st_mtime_ns
for i in range(5):                             # tar's own: a directory, a file in it, then
    d = f"d{i}"                                # the directory's times, owner and mode by name
    os.mkdir(d, 0o700)
    with open(os.path.join(d, "f"), "w") as f:
        f.write(d)
    os.utime(d, ns=(1_000_000_000 * (i + 1), 2_000_000_000 * (i + 1)), follow_symlinks=False)
    os.chown(d, 1000 + i, 2000 + i, follow_symlinks=False)
    fd = os.open(d, os.O_PATH | os.O_NOFOLLOW)
    os.chmod(f"/proc/self/fd/{fd}", 0o750)
    os.close(fd)
    attempt("stat " + d, lambda: show(d))
    attempt("access " + d, lambda: os.access(d, os.R_OK | os.X_OK))
    attempt("list " + d, lambda: sorted(os.listdir(d)))
os.mkdir("d0/sub")
attempt("stat d0", lambda: show("d0")[:4])     # its link count: its upper directory's
attempt("rmdir d0 full", lambda: os.rmdir("d0"))
attempt("rmdir hostdir", lambda: os.rmdir("hostdir"))       # the host's: a whiteout
os.rmdir("hostdir2/inner")
attempt("rmdir hostdir2", lambda: os.rmdir("hostdir2"))
os.mkdir("hostdir2")                           # opaque over the host's
attempt("chmod hostdir2", lambda: os.chmod("hostdir2", 0o711))
attempt("stat hostdir2", lambda: show("hostdir2")[:2])
for i in range(1, 5):
    os.unlink(f"d{i}/f")
    attempt(f"rmdir d{i}", lambda: os.rmdir(f"d{i}"))
attempt("rmdir d1 again", lambda: os.rmdir("d1"))
print(sorted(os.listdir(".")))
"""


def test_directories_made_in_a_merged_directory_are_cs_as_in_an_owned_one(appvirt, home,
                                                                           tmp_path):
    """Directories a program makes in a directory of the host it works in (tar and
    mkdir -p in the current directory): their attributes set by name, an O_PATH open of
    them, their stat and their removal are the compiled loop's, as in an owned directory,
    with the Python loop's output, records and overlay; a name the host has too (merged
    again, or opaque over the host's) stays Python's."""
    top = tmp_path / "top"
    (top / "hostdir").mkdir(parents=True)
    (top / "hostdir2" / "inner").mkdir(parents=True)
    before = tree_digest(top)
    fast, _ = _both_loops(appvirt, DIRS_IN_MERGED, top, "dm")
    out = fast.stdout
    assert "stat d3 ok ('0o40750', 2, 1003, 2003, 8000000000)" in out, out
    assert "list d4 ok ['f']" in out and "stat d0 ok ('0o40750', 3," in out
    assert "rmdir d0 full errno 39" in out and "rmdir hostdir ok" in out
    assert "rmdir hostdir2 ok" in out and "stat hostdir2 ok ('0o40711', 2)" in out
    assert "rmdir d4 ok" in out and "rmdir d1 again errno 2" in out
    assert "['d0', 'hostdir2', 'made.txt']" in out
    asked = re.search(r"intercepted: (.*)", fast.stderr).group(1)
    done = re.search(r"answered by the compiled loop: (.*)", fast.stderr).group(1)
    for call, least in (("utimensat", 5), ("lchown", 5), ("chmod", 5), ("rmdir", 4)):
        got = re.search(rf"\b{call} (\d+)", done)
        assert got and int(got.group(1)) >= least, (call, asked, done)
    assert _records(home, "dmfast") == _records(home, "dmslow")
    assert _same_tree(home, "dmfast", "dmslow")
    assert tree_digest(top) == before


MANY_DIRS_IN_MERGED = r"""
import os, sys
top, count = sys.argv[1], int(os.environ["DIRS"])
os.chdir(top)
open("made.txt", "w").close()                  # top: merged from here on
for i in range(count):
    os.mkdir(f"d{i}")
    with open(f"d{i}/f", "w") as f:
        f.write(str(i))
print(sum(len(os.listdir(f"d{i}")) for i in range(count)))
"""


def test_directories_made_in_a_merged_directory_are_decided_in_c(appvirt, tmp_path):
    """A directory the compiled loop makes in a merged directory is decided as it is made
    (owned, as FastPath._below_upper decides it), not by Python at its first use: 40 more
    of them, no more decisions by Python."""
    def python_decisions(count: int) -> int:
        top = tmp_path / f"top{count}"
        top.mkdir()
        r = appvirt("run", "--stats", "--app", f"many{count}", "--", PYTHON, "-c",
                    MANY_DIRS_IN_MERGED, str(top), env={"DIRS": str(count)})
        assert r.returncode == 0 and r.stdout == f"{count}\n", r.stderr
        assert sorted(os.listdir(top)) == []
        return int(re.search(r"directories decided: \d+ by the compiled loop, (\d+) by Python",
                             r.stderr).group(1))
    few, many = python_decisions(5), python_decisions(45)
    assert many - few < 10, (few, many)
