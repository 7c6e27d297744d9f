"""changes() and upper_entries(): what the app did compared with the host."""

from __future__ import annotations

import os

from overlay_helpers import create_file, write_file

from appvirt.overlay import Change, ChangeKind, FileType, Overlay


def by_path(changes: list[Change]) -> dict[bytes, Change]:
    return {c.guest: c for c in changes}


def test_added_modified_deleted(ov: Overlay, lower: bytes) -> None:
    create_file(ov, b"/etc/new", b"12345")
    write_file(ov, b"/etc/hosts", b"longer content here\n", append=False)
    ov.chmod(b"/etc/passwd", 0o600)
    ov.unlink(b"/etc/link")
    ov.unlink(b"/etc/app/sub/deep")
    ov.rmdir(b"/etc/app/sub")
    ov.mkdir(b"/etc/app/sub", 0o755)                    # re-created: opaque, so modified
    ov.mkdir(b"/srv", 0o755)
    ov.copy_up(b"/usr/bin/tool")                         # a copy equal to the host
    ch = by_path(ov.changes())
    assert ch[b"/etc/new"] == Change(b"/etc/new", ChangeKind.ADDED, FileType.FILE, 5)
    hosts = ch[b"/etc/hosts"]
    assert hosts.kind is ChangeKind.MODIFIED and hosts.old_size == 20 and hosts.size == 20
    assert "content" in hosts.details
    assert ch[b"/etc/passwd"].details == ("mode",)
    assert ch[b"/etc/link"].kind is ChangeKind.DELETED and ch[b"/etc/link"].type is \
        FileType.SYMLINK
    sub = ch[b"/etc/app/sub"]
    assert sub.kind is ChangeKind.MODIFIED and sub.opaque and sub.type is FileType.DIR
    assert b"/etc/app/sub/deep" not in ch                # inside the opaque directory
    assert ch[b"/srv"].kind is ChangeKind.ADDED
    assert b"/usr/bin/tool" not in ch and b"/etc" not in ch and b"/usr" not in ch
    entries = by_path(ov.upper_entries())
    assert entries[b"/usr/bin/tool"].kind is ChangeKind.UNCHANGED
    assert entries[b"/etc"].kind is ChangeKind.UNCHANGED
    assert [c.guest for c in ov.changes()] == sorted(ch)


def test_a_touched_file_is_modified_and_a_type_change_says_so(ov: Overlay) -> None:
    ov.utimens(b"/etc/hosts", None, 1)
    ov.unlink(b"/etc/passwd")
    ov.mkdir(b"/etc/passwd", 0o755)
    ch = by_path(ov.changes())
    assert ch[b"/etc/hosts"].details == ("mtime",)
    assert ch[b"/etc/passwd"].details[0] == "type" and ch[b"/etc/passwd"].type is FileType.DIR


def test_a_whiteout_of_something_the_host_no_longer_has_is_no_change(ov: Overlay,
                                                                     lower: bytes) -> None:
    ov.unlink(b"/etc/hosts")
    os.unlink(lower + b"/etc/hosts")
    assert ov.changes() == []
