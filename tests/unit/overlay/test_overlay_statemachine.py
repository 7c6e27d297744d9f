"""Random sequences of operations through the overlay and, natively, on a model directory:
after every step the program's view equals the model and the lower tree is untouched."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from overlay_helpers import (create_file, dir_tree, err_of, make_tree, mode_of, rm_rf,
                             snapshot, view_tree, write_file)

from appvirt.overlay import Overlay
from appvirt.overlay.hostio import RENAME_EXCHANGE, RENAME_NOREPLACE, rename_flags
from appvirt.policy.model import FileMode

LOWER = {
    "a/f": b"lower f\n",
    "a/b/g": b"lower g\n",
    "a/b/h": b"",
    "c": b"lower c\n",
    "d": "-> a",
    "e": None,
    "e2/x": b"x",
    "p/secret": b"host secret\n",    # under a private rule: the program never sees it
}
PRIVATE = "/p"
# Paths that exist in the lower tree, new names next to them and inside them, and a few
# random ones: operations collide often.
KNOWN = ["/a", "/a/f", "/a/b", "/a/b/g", "/a/b/h", "/c", "/d", "/e", "/e2", "/e2/x", "/p",
         "/p/secret"]
NEW = ["/n", "/m", "/a/n", "/a/b/n", "/e/n", "/e2/n", "/n/f", "/m/g", "/e/n/f", "/a/n/g",
       "/p/n", "/p/n/f"]
NAMES = ["a", "b", "c", "e", "f", "g", "n", "m"]
likely = st.sampled_from(KNOWN + NEW)
paths = st.one_of(likely, likely, likely, st.lists(
    st.sampled_from(NAMES), min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)))
data = st.binary(max_size=20)
perms = st.sampled_from([0o755, 0o700, 0o750, 0o711, 0o775])


class OverlayMachine(RuleBasedStateMachine):
    """The same operations on the overlay and natively on a copy of the lower tree."""

    @initialize()
    def setup(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="appvirt-ovsm-")
        self.lower = os.path.join(self.tmp, "lower")
        self.model = os.path.join(self.tmp, "model")
        self.upper = os.path.join(self.tmp, "upper")
        make_tree(self.lower, LOWER)
        shutil.copytree(self.lower, self.model, symlinks=True)
        os.unlink(os.path.join(self.model, "p", "secret"))   # private: starts empty
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.pristine = snapshot(self.lower)
        self.ov = self._open()
        self.log: list[str] = []

    def _open(self) -> Overlay:
        return Overlay(os.fsencode(self.upper), mode_of=mode_of([(PRIVATE, FileMode.PRIVATE)]),
                       lower_root=os.fsencode(self.lower))

    def teardown(self) -> None:
        if hasattr(self, "tmp"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- the caller's side: paths reach the overlay resolved
    def m(self, p: str) -> str:
        return self.model + p

    def resolvable(self, *ps: str) -> bool:
        """Whether every proper ancestor of each path is a real directory in the model (the
        resolver handles everything else before the overlay is asked)."""
        for p in ps:
            parts = p.strip("/").split("/")[:-1]
            cur = self.model
            for c in parts:
                cur = os.path.join(cur, c)
                try:
                    if not stat.S_ISDIR(os.lstat(cur).st_mode):
                        return False
                except FileNotFoundError:
                    return False
        return True

    def final_is_symlink(self, p: str) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(self.m(p)).st_mode)
        except FileNotFoundError:
            return False

    def same(self, what: str, native, virtual) -> None:
        if not hasattr(self, "log"):
            return
        self.log.append(what)
        want, got = err_of(native), err_of(virtual)
        assert want == got, (f"{what}: native errno {want} ({os.strerror(want)}), overlay "
                             f"{got} ({os.strerror(got)}); steps: {self.log}")

    # ---- rules
    @rule(p=paths, d=data)
    def create(self, p: str, d: bytes) -> None:
        if not self.resolvable(p):
            return

        def native() -> None:
            fd = os.open(self.m(p), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, d)
            os.close(fd)
        self.same(f"create {p}", native, lambda: create_file(self.ov, p.encode(), d))

    @rule(p=paths, d=data, append=st.booleans())
    def write(self, p: str, d: bytes, append: bool) -> None:
        if not self.resolvable(p) or self.final_is_symlink(p):
            return

        def native() -> None:
            fd = os.open(self.m(p), os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
            os.write(fd, d)
            os.close(fd)
        self.same(f"write {p} append={append}", native,
                  lambda: write_file(self.ov, p.encode(), d, append=append))

    @rule(p=paths, mode=perms)
    def mkdir(self, p: str, mode: int) -> None:
        if self.resolvable(p):
            self.same(f"mkdir {p}", lambda: os.mkdir(self.m(p), mode),
                      lambda: self.ov.mkdir(p.encode(), mode & ~self.umask))

    @rule(p=paths)
    def rmdir(self, p: str) -> None:
        if self.resolvable(p) and p != PRIVATE:      # a private root is busy (a mount point)
            self.same(f"rmdir {p}", lambda: os.rmdir(self.m(p)),
                      lambda: self.ov.rmdir(p.encode()))

    @rule(p=likely)
    def remove_tree(self, p: str) -> None:
        """rm -rf: whole lower directories deleted (then often re-created: opaque)."""
        if not self.resolvable(p) or p == PRIVATE:
            return

        def native() -> None:
            st_ = os.lstat(self.m(p))
            if stat.S_ISDIR(st_.st_mode):
                shutil.rmtree(self.m(p))
            else:
                os.unlink(self.m(p))
        self.same(f"rm -rf {p}", native, lambda: rm_rf(self.ov, p.encode()))

    @rule(p=likely, mode=perms)
    def recreate_dir(self, p: str, mode: int) -> None:
        """rm -rf then mkdir: the new directory must not show the old content (opaque)."""
        self.remove_tree(p)
        self.mkdir(p, mode)

    @rule(p=paths)
    def unlink(self, p: str) -> None:
        if self.resolvable(p):
            self.same(f"unlink {p}", lambda: os.unlink(self.m(p)),
                      lambda: self.ov.unlink(p.encode()))

    @rule(src=paths, dst=paths,
          flags=st.sampled_from([0, 0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, src: str, dst: str, flags: int) -> None:
        if self.resolvable(src, dst) and PRIVATE not in (src, dst):
            self.same(f"rename {src} {dst} flags={flags}",
                      lambda: rename_flags(os.fsencode(self.m(src)), os.fsencode(self.m(dst)),
                                           flags),
                      lambda: self.ov.rename(src.encode(), dst.encode(), flags))

    @rule(src=likely, dst=likely)
    def move(self, src: str, dst: str) -> None:
        """rename(2) again, between the likeliest names (renames matter most)."""
        self.rename(src, dst, 0)

    @rule(src=paths, dst=paths)
    def link(self, src: str, dst: str) -> None:
        if self.resolvable(src, dst):
            self.same(f"link {src} {dst}",
                      lambda: os.link(self.m(src), self.m(dst), follow_symlinks=False),
                      lambda: self.ov.link(src.encode(), dst.encode()))

    @rule(link_to=st.sampled_from(["a", "nowhere", "/c", "../x"]), p=paths)
    def symlink(self, link_to: str, p: str) -> None:
        if self.resolvable(p):
            self.same(f"symlink {link_to} {p}", lambda: os.symlink(link_to, self.m(p)),
                      lambda: self.ov.symlink(link_to.encode(), p.encode()))

    @rule(p=paths, mode=perms)
    def chmod(self, p: str, mode: int) -> None:
        if self.resolvable(p) and not self.final_is_symlink(p):
            self.same(f"chmod {p} {mode:o}", lambda: os.chmod(self.m(p), mode),
                      lambda: self.ov.chmod(p.encode(), mode))

    @rule(p=paths, length=st.integers(0, 12))
    def truncate(self, p: str, length: int) -> None:
        if self.resolvable(p) and not self.final_is_symlink(p):
            self.same(f"truncate {p} {length}", lambda: os.truncate(self.m(p), length),
                      lambda: self.ov.truncate(p.encode(), length))

    @rule()
    def reopen(self) -> None:
        """A second run of the app sees what the first one left."""
        self.log.append("reopen")
        self.ov = self._open()

    # ---- invariants
    @invariant()
    def view_equals_model(self) -> None:
        if not hasattr(self, "ov"):
            return
        got, got_links = view_tree(self.ov)
        want, want_links = dir_tree(self.model)
        differ = [(k, got[k], want[k]) for k in sorted(got) if k in want and got[k] != want[k]]
        assert got == want, (f"view differs from model after {self.log}:\n"
                             f" only in view: {sorted(got.keys() - want.keys())}\n"
                             f" only in model: {sorted(want.keys() - got.keys())}\n"
                             f" different: {differ}")
        assert got_links == want_links, f"hard-link groups differ after {self.log}"

    @invariant()
    def lower_untouched(self) -> None:
        if hasattr(self, "pristine"):
            assert snapshot(self.lower) == self.pristine, f"lower changed after {self.log}"


OverlayMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("APPVIRT_OVSM_EXAMPLES", "150")), stateful_step_count=30,
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestOverlayMachine = pytest.mark.slow(OverlayMachine.TestCase)
