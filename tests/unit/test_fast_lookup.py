"""The one-call lookup must resolve exactly as the component walk does, whatever the overlay
holds and the rules say: a differential property test on real directories."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings, strategies as st

from appvirt.errors import GuestErrno
from appvirt.fs.overlayfs import OverlayFS
from appvirt.fs.resolver import Caller, resolve
from appvirt.globs import Glob
from appvirt.overlay import Overlay
from appvirt.policy.model import FileMode, FilesPolicy, PathRule

from .overlay.overlay_helpers import create_file, make_tree

TREE = {
    "etc/hosts": b"h\n", "etc/app/conf": b"c\n", "etc/app/sub/deep": b"d\n",
    "etc/link": "-> hosts", "etc/dirlink": "-> app", "etc/abs": "-> /usr/bin",
    "usr/bin/tool": b"t\n", "usr/lib/x/y/z": b"z\n", "home/u/.ssh/id": b"k\n",
    "home/u/doc": b"doc\n", "tmp": None, "loop": "-> loop",
}
NAMES = [b"etc", b"hosts", b"app", b"conf", b"sub", b"deep", b"link", b"dirlink", b"abs",
         b"usr", b"bin", b"tool", b"lib", b"x", b"y", b"z", b"home", b"u", b".ssh", b"id",
         b"doc", b"tmp", b"loop", b"new", b"nope"]
RULES = [("/home/*/.ssh", FileMode.HIDDEN), ("/tmp", FileMode.PRIVATE),
         ("/usr/lib/x", FileMode.PASSTHROUGH), ("/etc/app/sub", FileMode.READONLY),
         ("/home/u/.ssh/id", FileMode.PASSTHROUGH)]


class Walker:
    """The same view without the one-call lookup: the component walk only."""

    def __init__(self, fs: OverlayFS) -> None:
        self.fs = fs

    def __getattr__(self, name: str):
        if name == "fast_lookup":
            raise AttributeError(name)
        return getattr(self.fs, name)


def _outcome(fn):
    try:
        r = fn()
    except GuestErrno as e:
        return ("errno", e.errno)
    st_ = r.st
    return (r.path, None if st_ is None else (st_.st_mode, st_.st_ino, st_.st_size))


paths = st.lists(st.sampled_from(NAMES), min_size=0, max_size=5).map(
    lambda cs: b"/" + b"/".join(cs))
# Queries may hold "." components too ("./d/f" is "d/f"; a final one is the walk's).
queries = st.lists(st.sampled_from(NAMES + [b"."]), min_size=0, max_size=5).map(
    lambda cs: b"/" + b"/".join(cs))
changes = st.lists(st.tuples(st.sampled_from(["create", "mkdir", "unlink", "rmdir"]), paths),
                   max_size=6)


@settings(max_examples=300, deadline=None)
@given(changes, st.lists(queries, min_size=1, max_size=10), st.booleans(), st.integers(0, 5))
def test_fast_lookup_agrees_with_the_walk(ops, asked, follow, nrules):
    with tempfile.TemporaryDirectory() as d:
        lower, upper = os.path.join(d, "lower"), os.path.join(d, "upper")
        make_tree(lower, TREE)
        files = FilesPolicy(FileMode.OVERLAY, tuple(
            PathRule(Glob.of(p), m, f"r{i}") for i, (p, m) in enumerate(RULES[:nrules])))
        ov = Overlay(os.fsencode(upper), mode_of=lambda g: files.mode_for(g)[0],
                     lower_root=os.fsencode(lower))
        fs = OverlayFS(ov, files.rules)
        for op, p in ops:
            try:
                if op == "create":
                    create_file(ov, p, b"new")
                elif op == "mkdir":
                    ov.mkdir(p, 0o755)
                elif op == "unlink":
                    ov.unlink(p)
                else:
                    ov.rmdir(p)
            except (GuestErrno, OSError):
                pass
        caller = Caller(1, 1, lambda pid: False)
        for q in asked:
            fast = _outcome(lambda: resolve(caller, b"/", q, follow=follow, view=fs))
            slow = _outcome(lambda: resolve(caller, b"/", q, follow=follow, view=Walker(fs)))
            assert fast == slow, (q, ops, nrules)


def _views(d: str, rules: list[tuple[str, FileMode]]) -> OverlayFS:
    files = FilesPolicy(FileMode.OVERLAY, tuple(
        PathRule(Glob.of(p), m, f"r{i}") for i, (p, m) in enumerate(rules)))
    ov = Overlay(os.fsencode(os.path.join(d, "upper")), mode_of=lambda g: files.mode_for(g)[0],
                 lower_root=os.fsencode(os.path.join(d, "lower")))
    return OverlayFS(ov, files.rules)


def _agree(fs: OverlayFS, queries: list[bytes]) -> None:
    caller = Caller(1, 1, lambda pid: False)
    for q in queries:
        for follow in (False, True):
            fast = _outcome(lambda: resolve(caller, b"/", q, follow=follow, view=fs))
            slow = _outcome(lambda: resolve(caller, b"/", q, follow=follow, view=Walker(fs)))
            assert fast == slow, q


def test_a_recreated_directory_hides_the_hosts_names():
    """Emptied, removed and made again, a host directory is opaque: the host's names in it
    are gone from the view though the host still has them."""
    with tempfile.TemporaryDirectory() as d:
        make_tree(os.path.join(d, "lower"), TREE)
        fs = _views(d, [])
        fs.ov.unlink(b"/etc/app/sub/deep")
        fs.ov.rmdir(b"/etc/app/sub")
        fs.ov.mkdir(b"/etc/app/sub", 0o755)
        create_file(fs.ov, b"/etc/app/sub/new", b"n")
        fs.ov.mkdir(b"/etc/app/sub/newdir", 0o755)
        _agree(fs, [b"/etc/app/sub/deep", b"/etc/app/sub/new", b"/etc/app/sub/newdir",
                    b"/etc/app/sub/newdir/x", b"/etc/app/sub/deep/x", b"/etc/app/conf"])
        assert resolve(Caller(1, 1, lambda pid: False), b"/", b"/etc/app/sub/deep",
                       follow=True, view=fs).st is None


def test_upper_objects_under_a_rule_that_now_passes_through():
    """Upper-layer objects left from a run with other rules: where a path now passes through
    to the host, the view shows the host's object, not the upper one."""
    with tempfile.TemporaryDirectory() as d:
        make_tree(os.path.join(d, "lower"), TREE)
        before = _views(d, [])
        create_file(before.ov, b"/usr/lib/x/new", b"n")
        create_file(before.ov, b"/usr/lib/x/y/new", b"n")
        before.ov.mkdir(b"/usr/lib/x/made", 0o755)
        create_file(before.ov, b"/usr/lib/x/made/f", b"f")
        after = _views(d, [("/usr/lib/x", FileMode.PASSTHROUGH),
                           ("/usr/lib/x/made", FileMode.OVERLAY)])
        _agree(after, [b"/usr/lib/x/new", b"/usr/lib/x/y/new", b"/usr/lib/x/y/z",
                       b"/usr/lib/x/made", b"/usr/lib/x/made/f", b"/usr/lib/x"])
