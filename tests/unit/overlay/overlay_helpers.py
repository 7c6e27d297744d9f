"""Shared helpers of the overlay tests: policies, tree snapshots of the view and of a real
directory, and the tracer's side of creating and writing files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

from appvirt.errors import GuestErrno
from appvirt.overlay import Overlay
from appvirt.globs import Glob
from appvirt.policy.model import FileMode, FilesPolicy, PathRule


# The pyfakefs lower tree of the unit tests (see conftest.py) and where their upper layer is.
LOWER = "/lower"
UPPER = b"/state/upper"
LOWER_TREE: dict[str, bytes | str | None] = {
    "etc/hosts": b"127.0.0.1 localhost\n",
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/app/conf": b"a=1\n",
    "etc/app/sub/deep": b"deep\n",
    "etc/link": "-> hosts",
    "usr/bin/tool": b"#!/bin/sh\necho tool\n",
    "tmp": None,
    "home/user/doc.txt": b"doc\n",
    "home/user/.ssh/id": b"secret key\n",
    "empty": None,
}


OverlayFactory = Callable[..., Overlay]   # the make_ov fixture: make_ov(rules=(), **kw)


def mode_of(rules: Iterable[tuple[str, FileMode]] = (),
            default: FileMode = FileMode.OVERLAY) -> Callable[[bytes], FileMode]:
    """A policy's mode lookup: globs, later rules win (as the tracer will pass it)."""
    files = FilesPolicy(default, tuple(PathRule(Glob.of(p), m, f"test[{i}]")
                                       for i, (p, m) in enumerate(rules)))
    return lambda path: files.mode_for(path)[0]


def make_tree(root: str, spec: dict[str, bytes | str | None]) -> None:
    """Create files (bytes), directories (None) and symlinks ("-> target") under root."""
    for rel, what in spec.items():
        p = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if what is None:
            os.makedirs(p, exist_ok=True)
        elif isinstance(what, str):
            assert what.startswith("-> ")
            os.symlink(what[3:], p)
        else:
            with open(p, "wb") as f:
                f.write(what)


def err_of(fn: Callable[[], object]) -> int:
    """0 if fn succeeds, else the errno it raised (GuestErrno or OSError)."""
    try:
        fn()
    except GuestErrno as e:
        return e.errno
    except OSError as e:
        assert e.errno is not None
        return e.errno
    return 0


def create_file(ov: Overlay, guest: bytes, data: bytes, mode: int = 0o644) -> None:
    """What the tracer does for open(O_CREAT|O_EXCL|O_WRONLY) + write."""
    host = ov.prepare_create(guest)
    fd = os.open(host, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    ov.created(guest)


def write_file(ov: Overlay, guest: bytes, data: bytes, *, append: bool) -> None:
    """What the tracer does for open(O_WRONLY|O_APPEND or O_TRUNC) + write on an existing
    name (resolved: not a symlink)."""
    st = ov.lstat(guest)
    if st is None:
        raise GuestErrno(2, "missing")
    if stat.S_ISDIR(st.st_mode):
        raise GuestErrno(21, "is a directory")
    host = ov.copy_up(guest, truncate=not append)
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(host, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def rm_rf(ov: Overlay, guest: bytes) -> None:
    """rm -rf through the overlay, as a program would do it: children first."""
    st = ov.lstat(guest)
    if st is None:
        raise GuestErrno(2, "missing")
    if stat.S_ISDIR(st.st_mode):
        for de in ov.listdir(guest):
            rm_rf(ov, guest.rstrip(b"/") + b"/" + de.name)
        ov.rmdir(guest)
    else:
        ov.unlink(guest)


def read(ov: Overlay, guest: bytes) -> bytes:
    with open(ov.host_for_read(guest), "rb") as f:
        return f.read()


def ls(host_dir: bytes) -> list[bytes]:
    """Sorted names of a host directory, as bytes (pyfakefs answers str for bytes paths)."""
    return sorted(os.fsencode(n) for n in os.listdir(os.fsdecode(host_dir)))


def names(ov: Overlay, guest_dir: bytes) -> list[bytes]:
    return [d.name for d in ov.listdir(guest_dir)]


Node = tuple  # (type, perm, payload, nlink)


def _node(st: os.stat_result, payload: bytes) -> Node:
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode), b"", 0)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", 0, payload, 0)
    if stat.S_ISREG(st.st_mode):
        return ("file", stat.S_IMODE(st.st_mode), payload, st.st_nlink)
    return ("other", stat.S_IMODE(st.st_mode), b"", st.st_nlink)


def view_tree(ov: Overlay, top: bytes = b"/") -> tuple[dict[bytes, Node], set[frozenset]]:
    """The program's view: every visible path -> node, and the groups of hard links."""
    tree: dict[bytes, Node] = {}
    inodes: dict[tuple[int, int], set[bytes]] = {}
    todo = [top]
    while todo:
        d = todo.pop()
        listing = ov.listdir(d)
        got = [e.name for e in listing]
        assert got == sorted(set(got)), f"listing of {d!r} unsorted or with duplicates"
        for de in listing:
            g = (d.rstrip(b"/") + b"/" + de.name)
            assert not de.name.startswith(b".wh."), f"reserved name visible: {g!r}"
            st = ov.lstat(g)
            assert st is not None, f"{g!r} listed but lstat says absent"
            assert de.d_type == stat.S_IFMT(st.st_mode) >> 12, f"d_type of {g!r}"
            payload = b""
            if stat.S_ISREG(st.st_mode):
                payload = read(ov, g)
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(g)
            elif stat.S_ISLNK(st.st_mode):
                payload = ov.readlink(g)
            tree[g] = _node(st, payload)
            if stat.S_ISDIR(st.st_mode):
                todo.append(g)
    return tree, {frozenset(v) for v in inodes.values()}


def dir_tree(root: str) -> tuple[dict[bytes, Node], set[frozenset]]:
    """The same for a real directory (the model file system)."""
    tree: dict[bytes, Node] = {}
    inodes: dict[tuple[int, int], set[bytes]] = {}
    base = os.fsencode(root)
    todo = [b""]
    while todo:
        rel = todo.pop()
        for name in sorted(os.listdir(base + rel)):
            g = rel + b"/" + name
            p = base + g
            st = os.lstat(p)
            payload = b""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    payload = f.read()
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(g)
            elif stat.S_ISLNK(st.st_mode):
                payload = os.readlink(p)
            tree[g] = _node(st, payload)
            if stat.S_ISDIR(st.st_mode):
                todo.append(g)
    return tree, {frozenset(v) for v in inodes.values()}


def snapshot(root: str) -> dict[bytes, tuple]:
    """Everything about a real tree that must not change: types, modes, owners, content,
    targets, mtimes, xattrs."""
    out: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            payload = b""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    payload = f.read()
            elif stat.S_ISLNK(st.st_mode):
                payload = os.readlink(p)
            try:
                xa = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                  for k in os.listxattr(p, follow_symlinks=False)))
            except OSError:
                xa = ()
            out[p[len(base):]] = (st.st_mode, st.st_uid, st.st_gid, st.st_ino,
                                  st.st_mtime_ns,
                                  payload, xa)
        dirnames.sort()
    return out
