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
changes = st.lists(st.tuples(st.sampled_from(["create", "mkdir", "unlink", "rmdir"]), paths),
                   max_size=6)


@settings(max_examples=150, deadline=None)
@given(changes, st.lists(paths, min_size=1, max_size=10), st.booleans(), st.integers(0, 5))
def test_fast_lookup_agrees_with_the_walk(ops, queries, follow, nrules):
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
        for q in queries:
            fast = _outcome(lambda: resolve(caller, b"/", q, follow=follow, view=fs))
            slow = _outcome(lambda: resolve(caller, b"/", q, follow=follow, view=Walker(fs)))
            assert fast == slow, (q, ops, nrules)
