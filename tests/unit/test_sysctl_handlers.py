"""Opens of /proc/sys for writing never reach the host: a spool file, or a refusal."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from appvirt.core import sysnums
from appvirt.core.action import Decision, Deny, Rewrite, SlotData, decision_of
from appvirt.fs.writeback import WriteBacks
from appvirt.policy import load_policy_text
from appvirt.testing import AT_FDCWD, FakeContext, handle, make_stop
from appvirt.tracer.sysctlfiles import SysctlFiles

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC = 0, 1, 2, 0o100, 0o200, 0o1000
O_TMPFILE = 0o20200000
PASSTHROUGH = load_policy_text("files:\n  rules:\n    - {path: /proc/sys, mode: passthrough}\n",
                               "p.yaml")


class NoStore:
    """SysctlOverlay's stand-in: opens only need a place for the spool file."""


@pytest.fixture
def ctx(fs):
    fs.create_file("/proc/sys/vm/swappiness", contents="60\n", st_mode=0o100644)
    fs.create_file("/proc/sys/fs/dentry-state", contents="1 2\n", st_mode=0o100444)
    fs.create_dir("/spool")
    c = FakeContext(PASSTHROUGH).use_overlay()
    c.sysctl_spool = SysctlFiles(NoStore(), lambda: Path("/spool"),  # type: ignore[arg-type]
                                 WriteBacks(1 << 20, lambda p, d: None))
    return c


def _open(ctx: FakeContext, path: bytes, flags: int):  # type: ignore[no-untyped-def]
    return handle(make_stop("openat", AT_FDCWD, 1, flags, 0o666, paths={1: path}), ctx)


@pytest.mark.parametrize("flags", [O_WRONLY, O_RDWR, O_WRONLY | O_CREAT | O_TRUNC,
                                   O_RDONLY | O_TRUNC])
def test_writing_a_sysctl_opens_a_spool_file_whatever_the_file_rules(ctx, flags) -> None:
    action = _open(ctx, b"/proc/sys/vm/../vm/swappiness", flags)
    assert isinstance(action, Rewrite) and action.nr == sysnums.nr("openat2")
    args = {i: (v.data if isinstance(v, SlotData) else v) for i, v in action.args}
    assert args[0] == AT_FDCWD and args[1].startswith(b"/spool/")
    opened, mode, _ = struct.unpack("<QQQ", args[2])
    assert not opened & (O_CREAT | O_EXCL) and mode == 0
    assert action.note.rule == "builtin:sysctl" and action.note.path == b"/proc/sys/vm/swappiness"
    assert decision_of(action) is Decision.EMULATED
    assert os.path.exists(args[1][:-1])


def test_reading_a_sysctl_reads_the_hosts_file(ctx) -> None:
    action = _open(ctx, b"/proc/sys/vm/swappiness", O_RDONLY)
    assert isinstance(action, Rewrite)
    assert dict(action.args)[1] == SlotData(b"/proc/sys/vm/swappiness\0")


@pytest.mark.parametrize("path,flags,code", [
    (b"/proc/sys/vm/nope", O_WRONLY | O_CREAT, errno.ENOENT),
    (b"/proc/sys/vm", O_WRONLY, errno.EISDIR),
    (b"/proc/sys/vm", O_TMPFILE | O_RDWR, errno.EACCES),
    (b"/proc/sys/fs/dentry-state", O_WRONLY, errno.EACCES)])
def test_refused_as_the_host_refuses(ctx, path: bytes, flags: int, code: int) -> None:
    action = _open(ctx, path, flags)
    assert isinstance(action, Deny) and action.errno == code and action.native


def test_without_a_store_writes_are_refused(ctx) -> None:
    ctx.sysctl_spool = None
    action = _open(ctx, b"/proc/sys/vm/swappiness", O_WRONLY)
    assert isinstance(action, Deny) and action.errno == errno.EROFS
    assert action.note.rule == "builtin:sysctl" and not action.native


def test_any_failure_is_a_refusal(ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")
    monkeypatch.setattr(ctx.sysctl_spool, "open_for_write", broken)
    action = _open(ctx, b"/proc/sys/vm/swappiness", O_WRONLY)
    assert isinstance(action, Deny) and action.errno == errno.EACCES
    assert "internal error" in action.note.detail




def test_access_for_writing_a_sysctl_is_the_hosts_answer(fs) -> None:
    fs.create_file("/proc/sys/vm/swappiness", st_mode=0o100644)
    fs.create_file("/etc/passwd")
    c = FakeContext(load_policy_text("files: {default: readonly}\n", "p.yaml")).use_overlay()
    W_OK = 2
    ok = handle(make_stop("access", 1, W_OK, paths={0: b"/proc/sys/vm/swappiness"}), c)
    assert not isinstance(ok, Deny) and c.host_calls[0][0] == "faccessat2"
    for path in (b"/etc/passwd", b"/proc/sys/../../etc/passwd"):
        refused = handle(make_stop("access", 1, W_OK, paths={0: path}), c)
        assert isinstance(refused, Deny) and refused.errno == errno.EROFS
