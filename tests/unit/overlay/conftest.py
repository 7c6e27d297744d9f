"""Fixtures of the overlay tests: a lower tree on pyfakefs and overlays over it."""

from __future__ import annotations

import stat
from collections.abc import Iterable

import pytest
from overlay_helpers import LOWER, LOWER_TREE, UPPER, OverlayFactory, make_tree, mode_of
from pyfakefs.fake_filesystem import FakeFilesystem
from pyfakefs.fake_os import FakeOsModule

from appvirt.overlay import Overlay
from appvirt.policy.model import FileMode

@pytest.fixture
def lower(fs: FakeFilesystem, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The lower tree on a fake file system; returns its root."""
    _keep_modes_on_open(monkeypatch)
    make_tree(LOWER, LOWER_TREE)
    return LOWER.encode()


def _keep_modes_on_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyfakefs's os.open chmods an existing file to its mode argument (0o777 & ~umask by
    default), which the kernel never does; undo that, or a mere read would seem to change
    the lower layer."""
    real_open = FakeOsModule.open

    def fake_open(self, path, flags, mode=None, *, dir_fd=None):  # noqa: ANN001, ANN202
        try:
            before = self.filesystem.stat(path, follow_symlinks=True).st_mode
        except OSError:
            before = None
        fd = real_open(self, path, flags, mode, dir_fd=dir_fd)
        if before is not None:
            self.filesystem.chmod(path, stat.S_IMODE(before))
        return fd

    monkeypatch.setattr(FakeOsModule, "open", fake_open)


@pytest.fixture
def make_ov(lower: bytes) -> OverlayFactory:
    """Overlay(upper=/state/upper, lower_root=/lower) with the given (glob, mode) rules."""
    def make(rules: Iterable[tuple[str, FileMode]] = (), **kw: bool) -> Overlay:
        return Overlay(UPPER, mode_of=mode_of(rules), lower_root=lower, **kw)
    return make


@pytest.fixture
def ov(make_ov: OverlayFactory) -> Overlay:
    return make_ov()
