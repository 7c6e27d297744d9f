"""The store as files, without ptrace: write-backs, the registry spool and its mount, /proc/sys
spool files. Real files in tmp_path and a real store; programs are played by this process."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appvirt.errors import GuestErrno
from appvirt.fs.dirents import Dirent
from appvirt.fs.registryfs import RegistryFS
from appvirt.fs.registryspool import RegistrySpool
from appvirt.fs.writeback import WriteBacks, held_for_writing
from appvirt.store import (BaseLayer, RegistryTree, Store, SysctlOverlay, Value, render,
                           value_from_content)
from appvirt.tracer.sysctlfiles import SysctlFiles

MOUNT = b"/run/appvirt/registry"
BASE = BaseLayer.build({"app/settings": {"theme": Value.string("light"),
                                         "retries": Value.integer(3)},
                        "app/base": {"x": Value.integer(1)}})


def err(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestErrno) as info:
        fn(*args, **kwargs)
    return info.value.errno


class Reports(list):
    def __call__(self, path: bytes, detail: str) -> None:
        self.append((path, detail))


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path, base=BASE)
    yield s
    s.close()


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def writebacks(reports: Reports) -> WriteBacks:
    return WriteBacks(1 << 20, reports)


@pytest.fixture
def spool(tmp_path: Path, store: Store, writebacks: WriteBacks, reports: Reports
          ) -> RegistrySpool:
    shown = os.fsencode(tmp_path / "shown")
    return RegistrySpool(RegistryTree(store), MOUNT, shown + MOUNT,
                         os.fsencode(tmp_path / "scratch"), writebacks, reports)


def write(host: bytes, data: bytes, mode: str = "wb") -> None:
    with open(host, mode) as f:
        f.write(data)


def read(host: bytes) -> bytes:
    with open(host, "rb") as f:
        return f.read()


# -- write-backs -------------------------------------------------------------------------------

def test_a_read_lease_tells_whether_a_file_is_open_for_writing(tmp_path: Path) -> None:
    p = os.fsencode(tmp_path / "f")
    write(p, b"x")
    assert not held_for_writing(p)
    with open(p, "rb"):
        assert not held_for_writing(p)
    with open(p, "ab"):
        assert held_for_writing(p)
    assert not held_for_writing(p)
    assert not held_for_writing(p + b"-missing")


def test_sync_folds_changes_and_settles_when_no_writer_is_left(
        tmp_path: Path, writebacks: WriteBacks, reports: Reports) -> None:
    p = os.fsencode(tmp_path / "f")
    write(p, b"")
    folded: list[bytes] = []
    settled: list[bool] = []
    writebacks.watch(p, b"/shown/f", folded.append, lambda: settled.append(True))
    with open(p, "r+b", buffering=0) as f:
        writebacks.sync()
        assert folded == [] and p in writebacks          # unchanged: nothing to fold
        f.write(b"one")
        writebacks.sync()
        assert folded == [b"one"] and p in writebacks and not settled
        writebacks.sync()
        assert folded == [b"one"]                          # same fingerprint: no refold
        f.write(b"two")
    writebacks.sync()
    assert folded == [b"one", b"onetwo"] and settled == [True] and p not in writebacks
    assert not writebacks and reports == []


def test_refused_and_failing_folds_are_reported_never_raised(
        tmp_path: Path, writebacks: WriteBacks, reports: Reports) -> None:
    p, q = os.fsencode(tmp_path / "p"), os.fsencode(tmp_path / "q")
    write(p, b"")
    write(q, b"")

    def refuse(content: bytes) -> None:
        raise GuestErrno(errno.EINVAL, "not an integer")

    def crash(content: bytes) -> None:
        raise RuntimeError("bug")
    writebacks.watch(p, b"/shown/p", refuse)
    writebacks.watch(q, b"/shown/q", crash)
    write(p, b"x")
    write(q, b"y")
    writebacks.close()
    assert reports == [(b"/shown/p", "the store refused what the program wrote "
                                     "(EINVAL: not an integer)"),
                       (b"/shown/q", "internal error folding it: RuntimeError: bug")]
    assert not writebacks


def test_fold_reads_at_most_one_byte_more_than_the_limit(tmp_path: Path,
                                                         reports: Reports) -> None:
    wb = WriteBacks(4, reports)
    p = os.fsencode(tmp_path / "f")
    write(p, b"")
    got: list[bytes] = []
    wb.watch(p, b"/f", got.append)
    write(p, b"0123456789")
    wb.sync()
    assert got == [b"01234"]


# -- the registry spool ------------------------------------------------------------------------

def test_lookup_materializes_keys_and_values_as_the_store_has_them(
        spool: RegistrySpool, store: Store) -> None:
    assert stat.S_ISDIR(spool.lookup(b"").st_mode)
    st_key = spool.lookup(b"/app/settings")
    assert stat.S_ISDIR(st_key.st_mode) and stat.S_IMODE(st_key.st_mode) == 0o755
    st_val = spool.lookup(b"/app/settings/theme")
    entry = store.get_entry("app/settings", "theme")
    assert stat.S_IMODE(st_val.st_mode) == 0o644 and st_val.st_size == len(b"light\n")
    assert st_val.st_mtime_ns == entry.mtime_ns
    assert read(spool.host(b"/app/settings/theme")) == b"light\n"
    assert spool.lookup(b"/app/nothing") is None
    assert spool.lookup(b"/app/settings/th\xffme") is None


def test_a_changed_value_is_a_new_file_and_readers_keep_what_they_opened(
        spool: RegistrySpool, store: Store) -> None:
    spool.lookup(b"/app/settings/theme")
    with open(spool.host(b"/app/settings/theme"), "rb") as reader:
        store.set("app/settings", "theme", Value.string("dark blue"))
        spool.lookup(b"/app/settings/theme")
        assert reader.read() == b"light\n"
    assert read(spool.host(b"/app/settings/theme")) == b"dark blue\n"
    store.delete_value("app/settings", "theme")
    assert spool.lookup(b"/app/settings/theme") is None
    assert not os.path.lexists(spool.host(b"/app/settings/theme"))


def test_sync_dir_holds_exactly_the_keys_entries(spool: RegistrySpool, store: Store) -> None:
    store.set("app/settings/sub", "v", Value.integer(1))
    spool.sync_dir(b"/app/settings")
    host = spool.host(b"/app/settings")
    assert sorted(os.listdir(host)) == [b"retries", b"sub", b"theme"]
    assert os.lstat(host).st_nlink == 3
    assert os.lstat(host).st_mtime_ns == store.key_info("app/settings").mtime_ns
    store.delete_key("app/settings/sub", recursive=True)
    store.delete_value("app/settings", "retries")
    spool.sync_dir(b"/app/settings")
    assert os.listdir(host) == [b"theme"]


def test_a_created_file_is_stored_at_once_and_typed_by_its_first_content(
        spool: RegistrySpool, store: Store, writebacks: WriteBacks) -> None:
    spool.lookup(b"/app/settings")
    host = spool.prepare_create(b"/app/settings/count")
    assert store.lookup("app/settings", "count") is None      # only checked so far
    with open(host, "xb", buffering=0) as f:                  # the kernel's O_CREAT
        spool.created(b"/app/settings/count")
        assert store.get("app/settings", "count") == Value.string("")
        f.write(b"3\n")
        writebacks.sync()
        assert store.get("app/settings", "count") == Value.integer(3)
    writebacks.sync()
    assert not writebacks
    # A later open for writing keeps the type the content fits.
    spool.lookup(b"/app/settings/count")
    write(spool.open_for_write(b"/app/settings/count"), b"007\n")
    writebacks.sync()
    assert store.get("app/settings", "count") == Value.integer(7)
    assert read(host) == b"007\n"
    spool.lookup(b"/app/settings/count")                     # no writer: the rendering
    assert read(host) == b"7\n"


def test_a_file_being_written_is_never_rewritten_under_its_writer(
        spool: RegistrySpool, store: Store, writebacks: WriteBacks) -> None:
    spool.lookup(b"/app/settings/theme")
    host = spool.open_for_write(b"/app/settings/theme")
    with open(host, "wb", buffering=0) as f:
        f.write(b"da")
        spool.lookup(b"/app/settings/theme")      # folds; the file stays as written
        assert read(host) == b"da" and store.get("app/settings", "theme") == Value.string("da")
        f.write(b"rk")
    spool.lookup(b"/app/settings/theme")
    assert store.get("app/settings", "theme") == Value.string("dark")
    assert read(host) == b"dark\n"


def test_content_the_store_refuses_is_reported_and_replaced_by_the_stored_value(
        spool: RegistrySpool, store: Store, reports: Reports) -> None:
    store.set("machine/uts", "hostname", Value.string("box"))
    spool.lookup(b"/machine/uts/hostname")
    write(spool.open_for_write(b"/machine/uts/hostname"), b"\0\1")
    spool.lookup(b"/machine/uts/hostname")
    assert [p for p, _ in reports] == [MOUNT + b"/machine/uts/hostname"]
    assert "EINVAL" in reports[0][1]
    assert read(spool.host(b"/machine/uts/hostname")) == b"box\n"


def test_changes_go_to_the_store_then_to_the_spool(spool: RegistrySpool, store: Store,
                                                    writebacks: WriteBacks) -> None:
    spool.lookup(b"/app")
    spool.mkdir(b"/app/new")
    assert store.exists("app/new") and os.path.isdir(spool.host(b"/app/new"))
    spool.make_value(b"/app/new/empty")
    assert store.get("app/new", "empty") == Value.string("")
    assert err(spool.make_value, b"/app/new/empty") == errno.EEXIST
    # rename carries the watch: what is written under the new name is folded there
    spool.lookup(b"/app/settings/theme")
    host = spool.open_for_write(b"/app/settings/theme")
    with open(host, "wb", buffering=0) as f:
        f.write(b"blue")
        spool.rename(b"/app/settings/theme", b"/app/new/colour", 0)
        f.write(b"!")
    writebacks.sync()
    assert store.get("app/new", "colour") == Value.string("blue!")
    assert store.lookup("app/settings", "theme") is None           # a tombstone on the base
    assert err(spool.rename, b"/app/new/empty", b"/app/new/colour", 1) == errno.EEXIST
    assert err(spool.rename, b"/app/new", b"/app/other", 0) == errno.EXDEV
    spool.truncate(b"/app/new/colour", 2)
    assert store.get("app/new", "colour") == Value.string("bl")
    assert err(spool.truncate, b"/app/new", 0) == errno.EISDIR
    assert err(spool.rmdir, b"/app/new") == errno.ENOTEMPTY
    spool.unlink(b"/app/new/colour")
    spool.unlink(b"/app/new/empty")
    spool.rmdir(b"/app/new")
    assert not store.exists("app/new") and not os.path.lexists(spool.host(b"/app/new"))
    spool.unlink(b"/app/base/x")
    spool.rmdir(b"/app/base")
    assert store.base().view().values[("app/base", "x")] == Value.integer(1)


def test_a_non_regular_file_cannot_become_a_value(spool: RegistrySpool, store: Store,
                                                  reports: Reports) -> None:
    spool.lookup(b"/app/settings")
    host = spool.prepare_create(b"/app/settings/fifo")
    os.mkfifo(host)
    spool.created(b"/app/settings/fifo")
    assert not os.path.lexists(host) and store.lookup("app/settings", "fifo") is None
    assert reports and "regular" in reports[0][1]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.text(max_size=20), content=st.binary(max_size=30))
def test_what_a_program_writes_is_what_the_typing_rule_stores(
        spool: RegistrySpool, store: Store, writebacks: WriteBacks, before: str,
        content: bytes) -> None:
    if "\0" in before:
        before = before.replace("\0", "")
    store.set("app/prop", "v", Value.string(before))
    spool.lookup(b"/app/prop/v")
    assert read(spool.host(b"/app/prop/v")) == render(Value.string(before))
    write(spool.open_for_write(b"/app/prop/v"), content)
    spool.lookup(b"/app/prop/v")
    expected = value_from_content(content, Value.string(before).type)
    assert store.get("app/prop", "v") == expected
    assert read(spool.host(b"/app/prop/v")) == render(expected)


# -- the mount in the program's filesystem --------------------------------------------------------

class FakeOverlay:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *a, **kw: self.calls.append((name, *a))


class HostFS:
    """The overlay's filesystem stand-in: the host as it is, /run without appvirt."""

    def __init__(self, run: bytes) -> None:
        self.run = run
        self.ov = FakeOverlay()
        self.fast: list[bytes] = []

    def _host(self, g: bytes) -> bytes:
        return self.run + g[4:] if g == b"/run" or g.startswith(b"/run/") else g

    def lstat(self, g: bytes) -> os.stat_result | None:
        try:
            return os.lstat(self._host(g))
        except FileNotFoundError:
            return None

    def fast_lookup(self, g: bytes, follow: bool) -> None:
        self.fast.append(g)

    def to_guest(self, host: bytes) -> bytes:
        return host

    def listing(self, host_dir: bytes) -> list[Dirent] | None:
        return [Dirent(b".", 4, 0), Dirent(b"..", 4, 0), Dirent(b"user", 4, 1)] \
            if host_dir == b"/run" else None

    def host_for_read(self, g: bytes) -> bytes:
        return self._host(g)

    def redirected(self, g: bytes) -> bool:
        return False

    def host_name_dir(self, d: bytes) -> bool:
        st = self.lstat(d)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def owned_dir(self, d: bytes) -> bytes:
        return b"/upper" + d              # every directory, as far as this stand-in knows

    def merged_dir(self, d: bytes) -> bytes:
        return b"/upper" + d

    def upper_dir_stat(self, g: bytes) -> tuple:
        return b"/upper" + g, -1, b"", 0, 0, False


@pytest.fixture
def mounted(tmp_path: Path, spool: RegistrySpool) -> RegistryFS:
    run = os.fsencode(tmp_path / "run")
    os.makedirs(run + b"/user")
    return RegistryFS(HostFS(run), MOUNT, os.fsencode(tmp_path / "shown"), spool)


def test_the_mount_and_its_parents_appear_in_the_view(mounted: RegistryFS) -> None:
    assert mounted.lstat(b"/run").st_ino == os.lstat(mounted.inner.run).st_ino
    assert stat.S_ISDIR(mounted.lstat(b"/run/appvirt").st_mode)      # only appvirt has it
    assert stat.S_ISDIR(mounted.lstat(MOUNT).st_mode)
    assert mounted.lstat(MOUNT + b"/app/settings/theme").st_size == 6
    assert mounted.is_virtual_dir(b"/run/appvirt") and not mounted.is_virtual_dir(b"/run")
    names = [d.name for d in mounted.listing(b"/run")]
    assert names == [b".", b"..", b"user", b"appvirt"]
    # Every other path goes to the overlay (fast lookups too); registry paths are walked.
    assert mounted.fast_lookup(b"/run/user", False) is None
    assert mounted.fast_lookup(MOUNT + b"/app", False) is None
    assert mounted.inner.fast == [b"/run/user"]


def test_only_the_hosts_own_holders_of_the_tree_show_themselves(mounted: RegistryFS) -> None:
    """The compiled loop may answer the stat of "/" and /run (and a cwd there) from the
    host, whose names it leaves to Python: never the tree's, nor an ancestor only appvirt
    shows, even where the host has a directory at the mount's path."""
    assert mounted.shows_itself(b"/") and mounted.shows_itself(b"/run")
    assert not mounted.shows_itself(b"/run/appvirt")          # only appvirt has it
    os.makedirs(mounted.inner.run + b"/appvirt/registry")    # the host's, hidden by the tree
    assert mounted.shows_itself(b"/run/appvirt")              # the host's now
    assert not mounted.shows_itself(MOUNT) and not mounted.shows_itself(MOUNT + b"/app")
    assert not mounted.host_name_dir(b"/") and not mounted.host_name_dir(b"/run")


def test_the_tree_and_its_holders_are_never_owned_or_merged(mounted: RegistryFS) -> None:
    """The compiled loop answers names in owned and merged directories, and the stat of
    upper directories, from the upper layer and the host: never in the tree, nor in a
    directory that holds it."""
    for d in (b"/", b"/run", b"/run/appvirt", MOUNT, MOUNT + b"/app"):
        assert mounted.owned_dir(d) is None and mounted.merged_dir(d) is None, d
        assert mounted.upper_dir_stat(d) is None, d       # nor is their stat answered in C
    assert mounted.merged_dir(b"/run/user") == b"/upper/run/user"     # the overlay's say
    assert mounted.upper_dir_stat(b"/run/user")[0] == b"/upper/run/user"


def test_spool_paths_are_shown_as_the_programs_paths(mounted: RegistryFS) -> None:
    mounted.lstat(MOUNT + b"/app/settings")
    host = mounted.host_for_read(MOUNT + b"/app/settings")
    assert mounted.to_guest(host) == MOUNT + b"/app/settings"
    assert sorted(os.listdir(host)) == [b"retries", b"theme"]
    assert mounted.merged_nlink(MOUNT + b"/app") is None and mounted.redirected(MOUNT)
    assert err(mounted.readlink, MOUNT + b"/app") == errno.EINVAL


def test_changes_at_the_mount_go_to_the_store_and_the_rest_to_the_overlay(
        mounted: RegistryFS, store: Store) -> None:
    ov = mounted.ov
    mounted.lstat(MOUNT + b"/app")
    ov.mkdir(MOUNT + b"/app/k", 0o700)
    assert store.exists("app/k")
    ov.mkdir(b"/tmp/k", 0o700)
    assert mounted.inner.ov.calls == [("mkdir", b"/tmp/k", 0o700)]
    assert err(ov.rename, MOUNT + b"/app/settings/theme", b"/tmp/theme") == errno.EXDEV
    assert err(ov.link, b"/tmp/a", MOUNT + b"/app/a") == errno.EXDEV
    assert err(ov.symlink, b"x", MOUNT + b"/app/l") == errno.EPERM
    assert err(ov.mknod, MOUNT + b"/app/p", stat.S_IFIFO | 0o600, 0) == errno.EPERM
    assert err(ov.setxattr, MOUNT + b"/app/k", b"user.x", b"1", 0) == errno.EOPNOTSUPP
    ov.chmod(MOUNT + b"/app/k", 0o777)                     # succeeds, changes nothing
    ov.utimens(MOUNT + b"/app/k", 0, 0)
    assert stat.S_IMODE(mounted.lstat(MOUNT + b"/app/k").st_mode) == 0o755
    assert err(ov.rmdir, b"/run/appvirt") == errno.EBUSY
    assert err(ov.mkdir, b"/run/appvirt", 0o755) == errno.EEXIST
    assert err(ov.mkdir, b"/run/appvirt/other", 0o755) == errno.EACCES
    assert err(mounted.host_for_create, b"/run/appvirt/other") == errno.EACCES
    assert err(ov.rmdir, MOUNT) == errno.EBUSY


# -- /proc/sys -----------------------------------------------------------------------------------

@pytest.fixture
def sysctl(tmp_path: Path, store: Store, writebacks: WriteBacks) -> SysctlFiles:
    return SysctlFiles(SysctlOverlay(store), lambda: tmp_path / "sysctl", writebacks)


def _st(mode: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("st,root,code", [
    (None, True, errno.ENOENT), (_st(stat.S_IFDIR | 0o555), True, errno.EISDIR),
    (_st(stat.S_IFREG | 0o444), True, errno.EACCES), (_st(stat.S_IFREG | 0o644), False,
                                                      errno.EACCES)])
def test_an_open_for_writing_is_refused_where_the_host_refuses_it(
        sysctl: SysctlFiles, st: os.stat_result | None, root: bool, code: int) -> None:
    assert err(sysctl.open_for_write, b"/proc/sys/vm/swappiness", st, root) == code


def test_what_is_written_to_a_sysctl_is_read_back_from_the_store(
        sysctl: SysctlFiles, store: Store, writebacks: WriteBacks) -> None:
    path = b"/proc/sys/vm/swappiness"
    assert sysctl.content(path) is None                   # never written: the host's
    host = sysctl.open_for_write(path, _st(stat.S_IFREG | 0o644), True)
    assert read(host) == b""
    write(host, b"13\n")
    assert sysctl.content(path) == b"13\n"                # the read folded it first
    assert store.get("machine/sysctl/vm", "swappiness") == Value.integer(13)
    assert not os.path.exists(host)                       # folded, no writer: gone
    empty = sysctl.open_for_write(path, _st(stat.S_IFREG | 0o644), True)
    writebacks.sync()                                     # an fd that wrote nothing
    assert store.get("machine/sysctl/vm", "swappiness") == Value.integer(13)
    assert not os.path.exists(empty)
    store.set("machine/sysctl/vm", "swappiness", Value.integer(40))   # appvirt reg set
    assert sysctl.content(path) == b"40\n"
    store.set("machine/sysctl/nope", "x", Value.integer(1))           # the host lacks it
    assert sysctl.content(b"/proc/sys/nope/x") is None
    assert sysctl.content(b"/etc/passwd") is None


def test_abandoned_spool_files_are_forgotten(sysctl: SysctlFiles, writebacks: WriteBacks
                                              ) -> None:
    host = sysctl.open_for_write(b"/proc/sys/vm/swappiness", _st(stat.S_IFREG | 0o644), True)
    sysctl.abandon(host)
    assert not os.path.exists(host) and not writebacks


def test_the_host_name_sysctls_are_the_virtual_host_names(tmp_path: Path, store: Store,
                                                          writebacks: WriteBacks) -> None:
    from appvirt.virt.machinepolicy import UtsPolicy
    from appvirt.virt.uts import VirtualUts
    path, st = b"/proc/sys/kernel/hostname", _st(stat.S_IFREG | 0o644)
    without = SysctlFiles(SysctlOverlay(store), lambda: tmp_path / "s1", writebacks)
    assert err(without.open_for_write, path, st, True) == errno.EPERM
    uts = VirtualUts(UtsPolicy(virtual=True, hostname="box"), store)
    with_uts = SysctlFiles(SysctlOverlay(store), lambda: tmp_path / "s2", writebacks, uts)
    write(with_uts.open_for_write(path, st, True), b"newname\nignored")
    writebacks.sync()
    assert uts.hostname == "newname" and store.get_str("machine/uts", "hostname") == "newname"


def test_entries_a_rule_hides_are_not_materialized(tmp_path: Path, store: Store,
                                                   writebacks: WriteBacks) -> None:
    shown = os.fsencode(tmp_path / "shown")
    hide = MOUNT + b"/app/settings/theme"
    spool = RegistrySpool(RegistryTree(store), MOUNT, shown + MOUNT,
                          os.fsencode(tmp_path / "scratch"), writebacks, Reports(),
                          hidden=lambda g: g == hide or g.startswith(hide + b"/"))
    assert spool.lookup(b"/app/settings/theme") is None
    spool.sync_dir(b"/app/settings")
    assert os.listdir(spool.host(b"/app/settings")) == [b"retries"]
