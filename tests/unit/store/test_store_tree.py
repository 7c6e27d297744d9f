"""The virtual directory tree and /proc/sys adapters: file semantics and errnos."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest
from hypothesis import given
from store_helpers import values

from appvirt.errors import GuestErrno
from appvirt.store import (FileKind, NodeKind, Limits, RegistryTree, Store, StoreCorrupt, SysctlOverlay,
                           Value, ValueType, render, sysctl_location, sysctl_name,
                           value_from_content)
from appvirt.store.tree import DT_DIR, DT_REG, fake_ino
from appvirt.store.values import INT64_MAX


def err(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestErrno) as info:
        fn(*args, **kwargs)
    return info.value.errno


@pytest.fixture
def tree(based: Store) -> RegistryTree:
    return RegistryTree(based)


# -- rendering and the typing rule ---------------------------------------------------------------

@pytest.mark.parametrize("value,content", [
    (Value.string("dark"), b"dark\n"), (Value.string(""), b"\n"),
    (Value.string("two\nlines"), b"two\nlines\n"), (Value.integer(-42), b"-42\n"),
    (Value.binary(b"\x00\xff"), b"\x00\xff"), (Value.binary(b""), b""),
    (Value.multi(["a", "b"]), b"a\nb\n"), (Value.multi([]), b""), (Value.multi([""]), b"\n"),
])
def test_rendering(value: Value, content: bytes) -> None:
    assert render(value) == content


@given(values)
def test_rendering_reads_back_as_the_same_value_of_the_same_type(value: Value) -> None:
    assert value_from_content(render(value), value.type) == value


@pytest.mark.parametrize("content,value", [
    (b"42\n", Value.integer(42)), (b"-7", Value.integer(-7)), (b"0\n", Value.integer(0)),
    (str(INT64_MAX).encode(), Value.integer(INT64_MAX)),
    (str(INT64_MAX + 1).encode(), Value.string(str(INT64_MAX + 1))),
    (b"007\n", Value.string("007")), (b"+7", Value.string("+7")), (b"-0", Value.string("-0")),
    (b" 7", Value.string(" 7")), (b"dark\n", Value.string("dark")), (b"", Value.string("")),
    (b"a\nb\n", Value.string("a\nb")), (b"x\n\n", Value.string("x\n")),
    (b"caf\xc3\xa9\n", Value.string("café")), (b"\xff\xfe", Value.binary(b"\xff\xfe")),
    (b"a\0b", Value.binary(b"a\0b")),
])
def test_typing_rule_for_new_values(content: bytes, value: Value) -> None:
    assert value_from_content(content) == value


@pytest.mark.parametrize("existing,content,value", [
    (ValueType.STRING, b"42\n", Value.string("42")),
    (ValueType.INTEGER, b" 007 \n", Value.integer(7)),
    (ValueType.INTEGER, b"seven\n", Value.string("seven")),      # does not fit: retyped
    (ValueType.BINARY, b"42\n", Value.binary(b"42\n")),
    (ValueType.MULTI, b"a\nb", Value.multi(["a", "b"])),
    (ValueType.MULTI, b"\xff", Value.binary(b"\xff")),
])
def test_typing_rule_for_existing_values(existing: ValueType, content: bytes,
                                         value: Value) -> None:
    assert value_from_content(content, existing) == value


# -- the tree ------------------------------------------------------------------------------------

def test_stat_and_listing(tree: RegistryTree, based: Store) -> None:
    root = tree.stat(b"")
    assert root.kind is FileKind.DIRECTORY and stat.S_ISDIR(root.mode)
    assert root.nlink == 4   # '.', '..' and the subkeys app and machine
    f = tree.stat(b"app/settings/theme")
    assert f.kind is FileKind.REGULAR and stat.S_IMODE(f.mode) == 0o644
    assert f.size == len(b"dark\n") and f.nlink == 1
    assert f.mtime_ns == based.get_entry("app/settings", "theme").mtime_ns
    assert f.ino == fake_ino("app/settings/theme") == tree.stat(b"/app//settings/./theme").ino
    entries = tree.list_dir(b"app/settings", dots=True)
    assert [(e.name, e.d_type) for e in entries] == [
        (b".", DT_DIR), (b"..", DT_DIR), (b"plugins", DT_DIR), (b"retries", DT_REG),
        (b"theme", DT_REG)]
    assert entries[0].ino == tree.stat(b"app/settings").ino
    assert entries[1].ino == tree.stat(b"app").ino


def test_cat_echo_mkdir_rm(tree: RegistryTree, based: Store) -> None:
    assert tree.read_file(b"app/settings/retries") == b"3\n"
    tree.write_file(b"app/settings/retries", b"5\n")                # echo 5 > retries
    assert based.get("app/settings", "retries") == Value.integer(5)
    tree.write_file(b"app/settings/theme", b"light\n")
    assert based.get("app/settings", "theme") == Value.string("light")
    tree.mkdir(b"app/cache")                                        # mkdir
    tree.write_file(b"app/cache/blob", b"\x00\x01")
    assert based.get("app/cache", "blob") == Value.binary(b"\x00\x01")
    assert tree.read_file(b"app/cache/blob") == b"\x00\x01"
    tree.unlink(b"app/cache/blob")                                  # rm
    tree.rmdir(b"app/cache")                                        # rmdir
    assert not based.exists("app/cache")
    tree.unlink(b"app/settings/plugins/spell/enabled")              # rm -r, bottom-up
    tree.rmdir(b"app/settings/plugins/spell")
    assert [e.name for e in tree.list_dir(b"app/settings/plugins")] == [b"grammar"]
    assert based.base().keys["app/settings/plugins/spell"]          # the base is untouched


def test_well_known_files_keep_their_type(tree: RegistryTree, based: Store) -> None:
    tree.mkdir(b"machine/clock")
    tree.write_file(b"machine/clock/offset_ns", b"3600000000000\n")
    assert based.get("machine/clock", "offset_ns") == Value.integer(3_600_000_000_000)
    assert err(tree.write_file, b"machine/clock/offset_ns", b"soon\n") == errno.EINVAL
    tree.write_file(b"machine/uts/hostname", b"1234\n")             # stays a string
    assert based.get("machine/uts", "hostname") == Value.string("1234")


ERRNO_CASES = [
    ("stat", (b"nope",), errno.ENOENT),
    ("stat", (b"app/settings/theme/x",), errno.ENOTDIR),
    ("list_dir", (b"app/settings/theme",), errno.ENOTDIR),
    ("read_file", (b"app/settings",), errno.EISDIR),
    ("read_file", (b"app/nope",), errno.ENOENT),
    ("write_file", (b"app/settings", b"x"), errno.EISDIR),
    ("write_file", (b"app/nope/x", b"x"), errno.ENOENT),
    ("write_file", (b"app/settings/theme/x", b"x"), errno.ENOTDIR),
    ("write_file", (b"toplevel", b"x"), errno.EACCES),
    ("write_file", (b"app/\xff", b"x"), errno.EINVAL),
    ("write_file", (b"app/a\x01", b"x"), errno.EINVAL),
    ("write_file", (b"app/" + b"n" * 256, b"x"), errno.ENAMETOOLONG),
    ("write_file", (b"app/settings/theme", b"x"), errno.EEXIST, {"exclusive": True}),
    ("write_file", (b"app/settings/new", b"x"), errno.ENOENT, {"create": False}),
    ("mkdir", (b"app/settings",), errno.EEXIST),
    ("mkdir", (b"app/settings/theme",), errno.EEXIST),
    ("mkdir", (b"app/nope/deeper",), errno.ENOENT),
    ("mkdir", (b"",), errno.EEXIST),
    ("unlink", (b"app/settings",), errno.EISDIR),
    ("unlink", (b"app/nope",), errno.ENOENT),
    ("rmdir", (b"app/settings",), errno.ENOTEMPTY),
    ("rmdir", (b"app/settings/theme",), errno.ENOTDIR),
    ("rmdir", (b"",), errno.EBUSY),
    ("rename", (b"app/settings", b"app/other"), errno.EXDEV),
    ("rename", (b"app/settings/theme", b"app/settings/plugins"), errno.EISDIR),
    ("rename", (b"app/nope", b"app/x"), errno.ENOENT),
]


@pytest.mark.parametrize("op,args,code,kwargs", [(*c, {})[:4] for c in ERRNO_CASES])
def test_errnos(tree: RegistryTree, op: str, args: tuple, code: int,  # type: ignore[type-arg]
                kwargs: dict) -> None:  # type: ignore[type-arg]
    assert err(getattr(tree, op), *args, **kwargs) == code


def test_limits_become_errnos(tmp_path: Path) -> None:
    s = Store.open(tmp_path, limits=Limits(max_value_bytes=8, max_values_per_key=1, max_depth=2))
    t = RegistryTree(s)
    t.mkdir(b"a")
    assert err(t.write_file, b"a/v", b"nine byte\n") == errno.EFBIG
    t.write_file(b"a/v", b"1")
    assert err(t.write_file, b"a/w", b"1") == errno.ENOSPC
    t.mkdir(b"a/b")
    assert err(t.mkdir, b"a/b/c") == errno.ENAMETOOLONG
    s.close()


def test_rename_value_replaces_atomically(tree: RegistryTree, based: Store) -> None:
    tree.write_file(b"app/settings/.theme.tmp", b"blue\n")          # write tmp, rename over
    tree.rename(b"app/settings/.theme.tmp", b"app/settings/theme")
    assert based.get("app/settings", "theme") == Value.string("blue")
    assert based.lookup("app/settings", ".theme.tmp") is None


def test_store_failures_are_eio_with_the_cause(tree: RegistryTree, based: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: str) -> None:
        raise StoreCorrupt("disk says no")
    monkeypatch.setattr(based, "node", broken)
    with pytest.raises(GuestErrno) as info:
        tree.read_file(b"app/settings/theme")
    assert info.value.errno == errno.EIO
    assert isinstance(info.value.__cause__, StoreCorrupt)


def test_dotdot_is_resolved_lexically_and_may_not_escape(tree: RegistryTree) -> None:
    assert tree.read_file(b"app/settings/plugins/../theme") == b"dark\n"
    with pytest.raises(ValueError):
        tree.stat(b"../etc")


def test_lookup_and_listing_for_the_spool(tree: RegistryTree, based: Store) -> None:
    assert tree.lookup(b"app/settings").kind is NodeKind.KEY
    node = tree.lookup(b"/app/settings/theme")
    assert node.kind is NodeKind.VALUE and node.entry.value == Value.string("dark")
    assert tree.lookup(b"app/nothing") is None
    assert tree.lookup(b"app/\xff") is None                 # not UTF-8: no such name
    assert err(tree.lookup, b"app/" + b"x" * 300) == errno.ENAMETOOLONG
    listing = tree.listing(b"app/settings")
    assert [k.name for k in listing.subkeys] == ["plugins"]
    assert [v.name for v in listing.values] == ["retries", "theme"]
    assert err(tree.listing, b"app/settings/theme") == errno.ENOTDIR


def test_retype_types_the_content_as_new(tree: RegistryTree, based: Store) -> None:
    tree.write_file(b"app/settings/new", b"")                # created empty: a string
    tree.write_file(b"app/settings/new", b"3\n")
    assert based.get("app/settings", "new") == Value.string("3")
    tree.write_file(b"app/settings/new", b"3\n", retype=True)
    assert based.get("app/settings", "new") == Value.integer(3)
    # Well-known types still hold.
    assert err(tree.write_file, b"machine/uts/hostname", b"\0", retype=True) == errno.EINVAL


@pytest.mark.parametrize("rel,code", [
    (b"app/settings/fresh", None), (b"app/settings/theme", errno.EEXIST),
    (b"app/settings", errno.EISDIR), (b"toplevel", errno.EACCES),
    (b"app/missing/x", errno.ENOENT), (b"app/settings/theme/x", errno.ENOTDIR),
    (b"app/settings/a\tb", errno.EINVAL), (b"app/settings/\xff", errno.EINVAL),
    (b"app/settings/" + b"n" * 256, errno.ENAMETOOLONG)])
def test_check_create_answers_without_changing_anything(tree: RegistryTree, based: Store,
                                                        rel: bytes, code: int | None) -> None:
    before = based.export_text()
    if code is None:
        tree.check_create(rel)
    else:
        assert err(tree.check_create, rel) == code
    assert based.export_text() == before


# -- /proc/sys -----------------------------------------------------------------------------------

@pytest.mark.parametrize("given_as", [
    "/proc/sys/net/ipv4/ip_forward", b"/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward",
    "net/ipv4/ip_forward"])
def test_sysctl_location(given_as) -> None:  # type: ignore[no-untyped-def]
    assert sysctl_location(given_as) == ("machine/sysctl/net/ipv4", "ip_forward")


def test_sysctl_names_with_dots() -> None:
    loc = sysctl_location("net.ipv4.conf.eth0/100.forwarding")
    assert loc == ("machine/sysctl/net/ipv4/conf/eth0.100", "forwarding")
    assert sysctl_location("/proc/sys/net/ipv4/conf/eth0.100/forwarding") == loc
    assert sysctl_name(*loc) == "net.ipv4.conf.eth0/100.forwarding"
    with pytest.raises(ValueError):
        sysctl_location("/etc/passwd")


def test_sysctl_overlay(based: Store) -> None:
    sysctl = SysctlOverlay(based)
    path = b"/proc/sys/net/ipv4/ip_forward"
    assert sysctl.read(path) is None                       # never written: read the host's
    assert sysctl.write(path, b"1\n") == Value.integer(1)  # echo 1 > /proc/sys/...
    assert sysctl.read(path) == b"1\n"
    assert based.get("machine/sysctl/net/ipv4", "ip_forward") == Value.integer(1)
    sysctl.write("net.ipv4.tcp_rmem", b"4096 87380 6291456\n")
    assert sysctl.read("/proc/sys/net/ipv4/tcp_rmem") == b"4096 87380 6291456\n"
    assert sysctl.written() == {"net.ipv4.ip_forward": Value.integer(1),
                                "net.ipv4.tcp_rmem": Value.string("4096 87380 6291456")}
    assert RegistryTree(based).read_file(b"machine/sysctl/net/ipv4/ip_forward") == b"1\n"
    assert sysctl.forget(path) is True
    assert sysctl.read(path) is None
    assert sysctl.forget(path) is False


def test_written_paths_and_the_generation_that_tells_when_to_reread(based: Store,
                                                                     tmp_path: Path) -> None:
    sysctl = SysctlOverlay(based)
    g0 = based.generation()
    assert sysctl.written_paths() == frozenset() and based.generation() == g0   # reads
    sysctl.write("net.ipv4.ip_forward", b"1\n")
    g1 = based.generation()
    assert g1 != g0
    assert sysctl.written_paths() == {b"/proc/sys/net/ipv4/ip_forward"}
    with Store.open(tmp_path) as other:                      # another connection writes
        other.set("machine/sysctl/vm", "swappiness", Value.integer(5))
    assert based.generation() != g1
    assert sysctl.written_paths() == {b"/proc/sys/net/ipv4/ip_forward",
                                      b"/proc/sys/vm/swappiness"}
