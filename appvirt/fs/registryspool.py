"""The registry tree as real files in a private spool directory of the run.

The store is the truth; the spool holds what programs are shown, materialized when they touch
it: each node a path walk passes is synced from the store (a key becomes a directory, a value
a file holding its rendering, mode 0755/0644, mtime the last-write time), and opening, listing
or stat'ing a key syncs its entries too. The kernel then serves every call on them natively
(open, read, write, lseek, fstat, getdents, mmap ...), so any program or language works.

Changes go to the store first: mkdir, unlink, rmdir, rename, truncate are made on the store by
the tracer (RegistryTree, with its errnos) and then mirrored here; a file the program creates
is checked against the store before the kernel creates it and stored (empty) at once; what a
program writes to a value's file is folded into the store by WriteBacks (see writeback.py).
A file some process may still be writing is never rewritten under it.

Paths are mount-relative, b"" for the mount itself, else starting with b"/".
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Callable

from ..errors import GuestErrno
from ..store.layers import Node, NodeKind, ValueEntry
from ..store.render import render
from ..store.tree import RegistryTree
from .writeback import WriteBacks

DIR_PERM, FILE_PERM = 0o755, 0o644
RENAME_NOREPLACE = 1

Report = Callable[[bytes, str], None]


class RegistrySpool:
    def __init__(self, tree: RegistryTree, mount: bytes, root: bytes, scratch: bytes,
                 writebacks: WriteBacks, report: Report,
                 prepare: Callable[[], object] | None = None,
                 hidden: Callable[[bytes], bool] = lambda guest: False) -> None:
        """Nothing is made before the first use: `prepare` then runs once (it makes the
        directory holding `root` and `scratch`). `hidden(guest path)`: a policy rule hides
        it (it is not materialized, so listings do not show it either)."""
        self.tree = tree
        self.mount = mount                # for reports: the program's name of the files
        self.root = root.rstrip(b"/")     # the host directory shown at the mount
        self._scratch = scratch           # new files are written here, then renamed in
        self.writebacks = writebacks
        self._report = report
        self._prepare = prepare
        self._ready = False
        self._n = 0
        self._created: set[bytes] = set()   # watched files their writer created
        self._hidden = hidden

    def host(self, rel: bytes) -> bytes:
        return self.root + rel

    def rel(self, host: bytes) -> bytes | None:
        if host == self.root or host.startswith(self.root + b"/"):
            return host[len(self.root):]
        return None

    def ready(self) -> None:
        """Make the spool (and the mount's parents in it) on first use."""
        if not self._ready:
            if self._prepare is not None:
                self._prepare()
            os.makedirs(self.root, mode=DIR_PERM, exist_ok=True)
            os.makedirs(self._scratch, mode=0o700, exist_ok=True)
            self._ready = True

    # -- materializing -----------------------------------------------------------------------

    def lookup(self, rel: bytes) -> os.stat_result | None:
        """Sync the node at rel from the store; its spool lstat, None if there is none."""
        self.ready()
        self.writebacks.sync()
        host = self.host(rel)
        node = None if self._hidden(self.mount + rel) else self.tree.lookup(rel)
        if node is None:
            self._discard(host)
            return None
        self._materialize(host, node)
        return os.lstat(host)

    def sync_dir(self, rel: bytes) -> None:
        """Make the key's directory hold exactly its subkeys and values (for the kernel's
        listing, and for nlink, which counts subdirectories)."""
        if self.lookup(rel) is None:
            return
        host = self.host(rel)
        try:
            listing = self.tree.listing(rel)
        except GuestErrno as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise
        wanted: dict[bytes, Node] = {}
        for k in listing.subkeys:
            wanted[k.name.encode()] = Node(NodeKind.KEY, k.path, key=k)
        for v in listing.values:
            wanted[v.name.encode()] = Node(NodeKind.VALUE, v.name, entry=v)
        guest = self.mount + rel + b"/"
        wanted = {n: node for n, node in wanted.items() if not self._hidden(guest + n)}
        for name in os.listdir(host):
            if name not in wanted:
                self._discard(host + b"/" + name)
        for name, node in wanted.items():
            self._materialize(host + b"/" + name, node)
        # The entries just made moved the directory's mtime: give it the key's again.
        key = listing.key
        st = os.lstat(host)
        if st.st_mtime_ns != key.mtime_ns:
            os.utime(host, ns=(key.mtime_ns, key.mtime_ns))

    def _materialize(self, host: bytes, node: Node) -> None:
        if node.kind is NodeKind.KEY:
            assert node.key is not None
            self._ensure_dir(host, node.key.mtime_ns)
        else:
            assert node.entry is not None
            self._ensure_file(host, node.entry)

    def _ensure_dir(self, host: bytes, mtime_ns: int) -> None:
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is not None and not statmod.S_ISDIR(st.st_mode):
            self._discard(host)
            st = None
        if st is None:
            os.makedirs(host, mode=DIR_PERM)
            os.chmod(host, DIR_PERM)
            os.utime(host, ns=(mtime_ns, mtime_ns))
        elif st.st_mode & 0o7777 != DIR_PERM:
            os.chmod(host, DIR_PERM)

    def _ensure_file(self, host: bytes, entry: ValueEntry) -> None:
        if host in self.writebacks:
            return                       # a program may be writing it: its content wins
        content = render(entry.value)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is not None and statmod.S_ISREG(st.st_mode) and st.st_size == len(content):
            # Written by the tracer with the value's last-write time: unchanged since.
            if st.st_mtime_ns == entry.mtime_ns or _content(host) == content:
                if st.st_mode & 0o7777 != FILE_PERM:
                    os.chmod(host, FILE_PERM)
                if st.st_mtime_ns != entry.mtime_ns:
                    os.utime(host, ns=(entry.mtime_ns, entry.mtime_ns))
                return
        if st is not None and statmod.S_ISDIR(st.st_mode):
            self._discard(host)
        # A new inode renamed in: a reader keeps the content it opened.
        self._n += 1
        tmp = self._scratch + b"/%d" % self._n
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_PERM)
        try:
            _write_all(fd, content)
            os.fchmod(fd, FILE_PERM)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        os.makedirs(os.path.dirname(host), mode=DIR_PERM, exist_ok=True)
        os.rename(tmp, host)

    def _discard(self, host: bytes) -> None:
        """Remove a spool entry the store no longer has."""
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return
        if statmod.S_ISDIR(st.st_mode):
            self.writebacks.forget_below(host)
            self._created = {h for h in self._created if not h.startswith(host + b"/")}
            import shutil     # here: it loads bz2 and lzma, a cost at every start
            shutil.rmtree(host, ignore_errors=True)
        else:
            self.writebacks.forget(host)
            self._created.discard(host)
            try:
                os.unlink(host)
            except FileNotFoundError:
                pass

    # -- files the program writes ------------------------------------------------------------

    def _watch(self, rel: bytes, *, created: bool) -> None:
        """Fold what programs write to rel's file. A file created by the open that writes it
        is typed as a new value on each fold (its empty first value does not fix the type)."""
        host = self.host(rel)
        if created:
            self._created.add(host)
        self.writebacks.watch(host, self.mount + rel,
                              lambda content: self.tree.write_file(rel, content, retype=created),
                              lambda: self._created.discard(host))

    def open_for_write(self, rel: bytes) -> bytes:
        """The spool file a program opens for writing (synced by the walk that found it)."""
        host = self.host(rel)
        if statmod.S_ISREG(os.lstat(host).st_mode) and host not in self.writebacks:
            self._watch(rel, created=False)
        return host

    def prepare_create(self, rel: bytes) -> bytes:
        """Where the kernel creates a new value's file, once the store says it may."""
        self.tree.check_create(rel)
        host = self.host(rel)
        os.makedirs(os.path.dirname(host), mode=DIR_PERM, exist_ok=True)
        return host

    def created(self, rel: bytes) -> None:
        """The kernel created the file: store it now (empty, or what a link brought) and
        watch it. Never raises: it runs after the call succeeded."""
        host = self.host(rel)
        try:
            st = os.lstat(host)
            if not statmod.S_ISREG(st.st_mode):
                os.unlink(host)
                self._report(self.mount + rel, "only regular files can be values: the new "
                                               "name was removed")
                return
            self.tree.write_file(rel, _content(host) or b"", retype=True)
            os.chmod(host, FILE_PERM)      # whatever the creator's umask made of it
        except (GuestErrno, OSError) as e:
            self._report(self.mount + rel, f"cannot store the new value ({e}): it was removed")
            self._discard(host)
            return
        self._watch(rel, created=True)

    # -- changes made by the tracer ----------------------------------------------------------

    def mkdir(self, rel: bytes) -> None:
        self.tree.mkdir(rel)
        node = self.tree.lookup(rel)
        if node is not None:
            self._materialize(self.host(rel), node)

    def make_value(self, rel: bytes) -> None:
        """mknod of a regular file: an empty new value."""
        self.tree.write_file(rel, b"", exclusive=True)
        self.lookup(rel)

    def unlink(self, rel: bytes) -> None:
        self.tree.unlink(rel)
        self._discard(self.host(rel))

    def rmdir(self, rel: bytes) -> None:
        self.tree.rmdir(rel)
        self._discard(self.host(rel))

    def rename(self, src: bytes, dst: bytes, flags: int) -> None:
        if flags & ~RENAME_NOREPLACE:
            raise GuestErrno(errno.EINVAL, "only RENAME_NOREPLACE is supported in the "
                                           "registry tree")
        if flags & RENAME_NOREPLACE and self.tree.lookup(dst) is not None:
            raise GuestErrno(errno.EEXIST, "rename target exists")
        hsrc, hdst = self.host(src), self.host(dst)
        self.writebacks.flush(hsrc)        # what was written so far moves with it
        self.tree.rename(src, dst)
        if hsrc == hdst:
            return
        watched, created = hsrc in self.writebacks, hsrc in self._created
        self._discard(hdst)
        self.writebacks.forget(hsrc)
        self._created.discard(hsrc)
        try:
            os.rename(hsrc, hdst)          # its writers write on under the new name
        except OSError:
            self._discard(hsrc)            # the next walk materializes the target
            return
        if watched:
            self._watch(dst, created=created)

    def truncate(self, rel: bytes, length: int) -> None:
        """truncate(2): cut or extend the file the program sees, and store the result."""
        if length > self.tree.store.limits.max_value_bytes + 1:
            raise GuestErrno(errno.EFBIG, "longer than the largest value")
        node = self.tree.lookup(rel)
        if node is None:
            raise GuestErrno(errno.ENOENT, "no such value")
        if node.kind is NodeKind.KEY:
            raise GuestErrno(errno.EISDIR, "a key is a directory")
        host = self.host(rel)
        os.truncate(host, length)
        self.tree.write_file(rel, _content(host) or b"", create=False)


def _content(host: bytes) -> bytes | None:
    try:
        with open(host, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
