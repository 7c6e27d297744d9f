"""Path resolution in the tracer must agree with the kernel's own walk (threat #18)."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from appvirt.errors import GuestErrno
from appvirt.fs.resolver import Caller, resolve

ME = Caller(os.getpid(), os.getpid(), lambda pid: True)


def _r(base, path, follow=True, **kw):
    try:
        return resolve(ME, os.fsencode(base), os.fsencode(path), follow=follow, **kw)
    except GuestErrno as e:
        return errno.errorcode[e.errno]


@pytest.fixture
def tree(fs):
    """A fake filesystem (pyfakefs): directories, and symlinks of every awkward kind."""
    fs.create_dir("/w/a/b")
    fs.create_file("/w/a/b/f", contents="x")
    fs.create_symlink("/w/la", "/w/a")
    fs.create_symlink("/w/a/lb", "b")
    fs.create_symlink("/w/a/b/up", "../../a/b/../b")
    fs.create_symlink("/w/loop1", "loop2")
    fs.create_symlink("/w/loop2", "loop1")
    fs.create_symlink("/w/dangling", "/w/nowhere/x")
    fs.create_symlink("/w/toroot", "/")
    return fs


@pytest.mark.parametrize("path, follow, want", [
    ("la/lb/f", True, "/w/a/b/f"),
    ("la/lb/up/f", True, "/w/a/b/f"),
    ("la/..", True, "/w"),                     # '..' after a symlink: next to its target
    ("la/../a/b", True, "/w/a/b"),
    ("la", False, "/w/la"),                    # final symlink kept when not following
    ("a/b/new", True, "/w/a/b/new"),           # a new name (for creation)
    ("/w/./a//b/", True, "/w/a/b"),
    ("../../../..", True, "/"),
    ("toroot/w/a", True, "/w/a"),
])
def test_walks_like_the_kernel(tree, path, follow, want):
    got = _r("/w", path, follow)
    assert got.path == want.encode()


@pytest.mark.parametrize("path, err", [
    ("loop1", "ELOOP"), ("a/b/f/", "ENOTDIR"), ("a/b/f/x", "ENOTDIR"),
    ("a/nope/x", "ENOENT"), ("", "ENOENT"), ("dangling", "ENOENT"),
    ("x" * 256, "ENAMETOOLONG"),
])
def test_errors_like_the_kernel(tree, path, err):
    assert _r("/w", path) == err


def test_dangling_final_symlink_resolves_to_its_target_for_creation(tree):
    tree.create_dir("/w/nowhere")
    got = _r("/w", "dangling")
    assert got.path == b"/w/nowhere/x" and not got.exists


def test_trailing_slash_is_kept_for_the_kernel(tree):
    got = _r("/w", "a/b/")
    assert got.kernel_path == b"/w/a/b/" and got.path == b"/w/a/b"


def test_openat2_resolve_flags(tree):
    assert _r("/w", "la/b", no_symlinks=True) == "ELOOP"
    assert _r("/w/a", "../la", beneath=True) == "EXDEV"
    assert _r("/w/a", "/etc", beneath=True) == "EXDEV"
    assert _r("/w/a", "/b/f", root=b"/w/a").path == b"/w/a/b/f"
    assert _r("/w/a", "../../../b", root=b"/w/a").path == b"/w/a/b"


def test_proc_self_means_the_caller_not_the_tracer():
    me = Caller(tid=os.getpid(), pid=os.getpid(), is_member=lambda p: True)
    assert resolve(me, b"/", b"/proc/self/status", follow=True).path == \
        b"/proc/%d/status" % os.getpid()
    other = Caller(tid=4194303, pid=4194302, is_member=lambda p: True)   # beyond pid_max
    with pytest.raises(GuestErrno) as e:
        resolve(other, b"/", b"/proc/self/status", follow=True)
    assert e.value.errno == errno.ENOENT and "/proc/4194302" in e.value.detail


def test_proc_self_of_a_real_process():
    got = _r("/", "/proc/thread-self/comm")
    assert got.path == b"/proc/%d/task/%d/comm" % (os.getpid(), os.getpid())


def test_magic_links_follow_only_verified_paths(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    fd = os.open(f, os.O_RDONLY)
    r, w = os.pipe()
    try:
        got = _r("/", f"/proc/self/fd/{fd}")
        assert got.path == os.fsencode(f) and got.magic is None
        pipe = _r("/", f"/proc/self/fd/{r}")
        assert pipe.magic is not None and pipe.kernel_path == b"/proc/%d/fd/%d" % (os.getpid(), r)
        assert _r("/", f"/proc/self/fd/{r}/x") == "ENOTDIR"
        assert _r("/", f"/proc/self/fd/{fd}", no_magiclinks=True) == "ELOOP"
        outsider = Caller(os.getpid(), os.getpid(), lambda pid: False)
        with pytest.raises(GuestErrno) as e:
            resolve(outsider, b"/", b"/proc/1/cwd/etc", follow=True)
        assert e.value.errno == errno.EACCES
    finally:
        for x in (fd, r, w):
            os.close(x)


# --- the property: our walk agrees with the kernel's on random trees of symlinks ------------
_names = st.sampled_from(["a", "b", "c", "d"])
_targets = st.lists(st.sampled_from(["a", "b", "c", "d", "..", ".", "ROOT"]), min_size=1,
                    max_size=4)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dirs=st.lists(st.lists(_names, min_size=1, max_size=3), max_size=6),
       links=st.lists(st.tuples(st.lists(_names, min_size=1, max_size=3), _targets),
                      max_size=6),
       query=st.lists(st.sampled_from(["a", "b", "c", "d", "..", "."]), min_size=1,
                      max_size=6),
       follow=st.booleans())
def test_resolution_matches_the_kernel(tmp_path_factory, dirs, links, query, follow):
    root = tmp_path_factory.mktemp("walk")
    for d in dirs:
        os.makedirs(root.joinpath(*d), exist_ok=True)
    for where, target in links:
        parent = root.joinpath(*where[:-1])
        # Only under root: a parent reached through a link to ".." may be outside it.
        real = os.path.realpath(parent)
        under_root = os.path.commonpath([real, os.path.realpath(root)]) == os.path.realpath(root)
        if under_root and parent.is_dir() and not os.path.lexists(parent / where[-1]):
            t = "/".join(str(root) if c == "ROOT" else c for c in target)
            os.symlink(t, parent / where[-1])
    path = "/".join(query)
    ours = _r(root, path, follow)
    flags = os.O_PATH | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=os.open(root, os.O_PATH))
    except OSError as e:
        if isinstance(ours, str):
            assert ours == errno.errorcode[e.errno]
        else:
            assert not ours.exists and e.errno == errno.ENOENT
        return
    try:
        kernel = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    assert not isinstance(ours, str), ours
    assert ours.path == os.fsencode(kernel)
