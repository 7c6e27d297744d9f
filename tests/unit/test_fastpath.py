"""The compiled fast path's two decisions, without ptrace: which directories are plain (the
view of every name in them is the host's own) and how a path splits into directory and name.

`plain_dir` is checked differentially: wherever it says "plain", the view's component walk
must find exactly the host's object for every name, and the kernel's listing must be right,
whatever the overlay holds and the rules say."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

from hypothesis import example, given, settings, strategies as st

from appvirt.errors import GuestErrno
from appvirt.fs.overlayfs import OverlayFS
from appvirt.fs.resolver import Caller, resolve
from appvirt.globs import Glob
from appvirt.overlay import Overlay
from appvirt.overlay.names import parent
from appvirt.policy.model import FileMode, FilesPolicy, PathRule
from appvirt.tracer import _fastpath     # built by the install (setup.py): CI has a compiler

from .overlay.overlay_helpers import create_file, make_tree

TREE = {
    "etc/hosts": b"h\n", "etc/app/conf": b"c\n", "etc/app/sub/deep": b"d\n",
    "etc/link": "-> hosts", "etc/dirlink": "-> app", "usr/bin/tool": b"t\n",
    "usr/lib/x/y/z": b"z\n", "home/u/.ssh/id": b"k\n", "home/u/doc": b"doc\n", "tmp": None,
}
NAMES = [b"etc", b"hosts", b"app", b"conf", b"sub", b"deep", b"link", b"dirlink", b"usr",
         b"bin", b"tool", b"lib", b"x", b"y", b"z", b"home", b"u", b".ssh", b"id", b"doc",
         b"tmp", b"new", b"nope"]
RULES = [("home/*/.ssh", FileMode.HIDDEN), ("tmp", FileMode.PRIVATE),
         ("usr/lib/x", FileMode.PASSTHROUGH), ("etc/app/sub", FileMode.READONLY),
         ("home/u/doc", FileMode.HIDDEN), ("**/deep", FileMode.HIDDEN)]

rel_paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map(b"/".join)
changes = st.lists(st.tuples(st.sampled_from(["create", "mkdir", "unlink", "rmdir"]),
                             rel_paths), max_size=5)


@contextlib.contextmanager
def _changed_view(rules_table, rules, ops):
    """The test tree (in a temporary directory of the real root: the fast path works on host
    paths the program's view shares) under these rules, changed in the overlay by ops:
    (top, overlay, its OverlayFS)."""
    with tempfile.TemporaryDirectory() as lower, tempfile.TemporaryDirectory() as upper:
        top = os.fsencode(os.path.realpath(lower))
        make_tree(lower, TREE)
        files = FilesPolicy(FileMode.OVERLAY, tuple(
            PathRule(Glob.of(os.fsdecode(top) + "/" + rules_table[i][0]), rules_table[i][1],
                     f"r{i}") for i in sorted(rules)))
        ov = Overlay(os.fsencode(upper), mode_of=lambda g: files.mode_for(g)[0])
        _apply(ov, top, ops)
        yield top, ov, OverlayFS(ov, files.rules)


def _apply(ov, top: bytes, ops) -> None:
    """The changes ops make in the overlay below top (those it refuses are skipped)."""
    for op, rel in ops:
        g = top + b"/" + rel
        try:
            {"create": lambda: create_file(ov, g, b"new"),
             "mkdir": lambda: ov.mkdir(g, 0o755),
             "unlink": lambda: ov.unlink(g), "rmdir": lambda: ov.rmdir(g),
             "copy up": lambda: ov.copy_up(g)}[op]()
        except (GuestErrno, OSError):
            pass


def _host_object(p: bytes):
    """What the fast path answers for p: the object, None (only the name is missing), or the
    errno of a walk that meets a missing directory or a file on the way."""
    try:
        if not stat.S_ISDIR(os.lstat(os.path.dirname(p)).st_mode):
            return ("errno", errno.ENOTDIR)
    except FileNotFoundError:
        return ("errno", errno.ENOENT)
    try:
        st_ = os.lstat(p)
    except FileNotFoundError:
        return None
    return (st_.st_mode, st_.st_ino, st_.st_size)


def _view_object(fs, p: bytes):
    try:
        r = resolve(Caller(1, 1, lambda pid: False), b"/", p, follow=False, view=fs)
    except GuestErrno as e:
        return ("errno", e.errno)
    return None if r.st is None else (r.st.st_mode, r.st.st_ino, r.st.st_size)


@settings(max_examples=120, deadline=None)
@given(changes, st.sets(st.integers(0, len(RULES) - 1)))
def test_a_plain_directory_shows_the_host_for_every_name(ops, rules):
    with _changed_view(RULES, rules, ops) as (top, ov, fs):
        dirs = [top] + [top + b"/" + r for r in (
            b"etc", b"etc/app", b"etc/app/sub", b"etc/nope", b"etc/nope/deeper", b"etc/hosts",
            b"etc/link", b"usr", b"usr/lib", b"usr/lib/x", b"home", b"home/u", b"home/u/.ssh",
            b"tmp", b"new", b"nope", b"nope/deeper", b"home/nope", b"home/u/nope",
            b"home/u/.ssh/nope", b"tmp/nope", b"new/nope", b"new/nope/deeper", b"usr/lib/x/nope",
            b"etc/hosts/nope")]
        decided: dict[bytes, bool] = {}
        for d in dirs:            # parents first, as the tracer decides them
            parent = d[:d.rfind(b"/")]
            decided[d] = fs.plain_dir(d)
            if decided.get(parent):
                # Through a plain parent: the same answer, or plain where d is absent or a
                # file (nothing in it, on the host as in the view).
                hinted = fs.plain_dir(d, parent_plain=True)
                assert hinted >= decided[d], (d, ops, rules)
                decided[d] = hinted
            if not decided[d]:
                continue
            if os.path.isdir(d):
                assert fs.listing(d) is None, (d, ops, rules)
            for name in NAMES:
                p = d + b"/" + name
                assert _view_object(fs, p) == _host_object(p), (p, ops, rules)


class _Walk:
    """The view without its one-lookup shortcut: the resolver's component walk only."""

    def __init__(self, fs: OverlayFS) -> None:
        self.fs = fs

    def __getattr__(self, name: str):
        if name == "fast_lookup":
            raise AttributeError(name)
        return getattr(self.fs, name)


OWNED_OPS = st.lists(st.tuples(
    st.sampled_from(["create", "mkdir", "unlink", "rmdir"]),
    st.lists(st.sampled_from(NAMES[:8] + [b"new", b"made", b"f"]), min_size=1,
             max_size=4).map(b"/".join)), max_size=10)


@settings(max_examples=150, deadline=None)
@given(OWNED_OPS, st.sets(st.integers(0, len(RULES) - 1)))
def test_an_owned_directory_is_its_upper_directory_for_every_name(ops, rules):
    """Wherever owned_dir names an upper directory, the view's walk finds, for every name,
    exactly that directory's object of the name (or nothing)."""
    with _changed_view(RULES, rules, ops) as (top, ov, fs):
        walk = _Walk(fs)
        for d in [top] + [g for g in ov._ix.kinds if g.startswith(top + b"/")]:
            host = fs.owned_dir(d)
            if host is None:
                continue
            assert host == ov.upper(d), d
            for name in NAMES + [b"new", b"made", b"f"]:
                p = d + b"/" + name
                try:
                    st_ = os.lstat(host + b"/" + name)
                    want = (st_.st_mode, st_.st_ino, st_.st_size)
                except FileNotFoundError:
                    want = None
                assert _view_object(walk, p) == want, (p, ops, rules)


@settings(max_examples=100, deadline=None)
@given(OWNED_OPS, st.sets(st.integers(0, len(RULES) - 1)))
@example([], set())
@example([("unlink", b"etc/app/conf"), ("unlink", b"etc/app/sub/deep"), ("rmdir", b"etc/app/sub"),
          ("rmdir", b"etc/app"), ("mkdir", b"etc/app"), ("mkdir", b"etc/app/sub")], set())
def test_a_name_in_an_owned_or_merged_directory_is_decided_as_the_long_way_decides(ops, rules):
    """FastPath decides a directory in an owned or a merged one, where the host has
    nothing, from that one's upper directory alone (git probes every objects/XX before
    making it, then uses it; tar makes its directories in the one it works in): missing
    there and on the host, plain (the view and the host have nothing in it); a directory
    there, owned, as owned_dir and the rules say, its ".." the view's inode of its parent."""
    from appvirt.tracer.fastpath import FastPath
    made = [("mkdir", b"made"), ("create", b"made/f"), ("mkdir", b"made/sub"),
            ("mkdir", b"made/sub/deeper")]
    with _changed_view(RULES, rules, made + ops) as (top, ov, fs):
        fast = FastPath.__new__(FastPath)
        fast.fs, fast._index, fast.plain, fast.error = fs, ov._ix, {}, None
        fast._rule_of = FilesPolicy(FileMode.OVERLAY, tuple(fs._rules)).mode_for
        seen = set()
        for d in [top] + [g for g in ov._ix.kinds if g.startswith(top + b"/")]:
            decided = (fast._owned(d) if fs.owned_dir(d) else False) \
                or (fast._merged(d) if fs.merged_dir(d) else False)
            if not decided:
                continue
            for name in NAMES + [b"new", b"made", b"f", b"sub", b"deeper", b".wh.x"]:
                got = fast._below_upper(d, decided, d + b"/" + name)
                seen.add((d[len(top):], len(decided), name,
                          got if got in (True, None) else "owned"))
                if got is True:
                    p = d + b"/" + name
                    assert ov.lstat(p) is None and not os.path.lexists(p), (p, ops, rules)
                elif got is not None:
                    assert got == fast._owned(d + b"/" + name), (d, name, ops, rules)
        if not ops and not rules:            # the program's own tree: both answers given
            assert {(b"/made", 3, b"sub", "owned"), (b"/made", 3, b"nope", True),
                    (b"/made", 3, b"f", None), (b"/made/sub", 3, b"deeper", "owned"),
                    (b"", 2, b"made", "owned"), (b"", 2, b"nope", True),
                    (b"", 2, b"etc", None)} <= seen, seen


MERGED_OPS = st.lists(st.tuples(
    st.sampled_from(["create", "mkdir", "unlink", "rmdir", "copy up"]),
    st.lists(st.sampled_from(NAMES[:8] + [b"new", b"f"]), min_size=1, max_size=3).map(
        b"/".join)), max_size=10)


@settings(max_examples=150, deadline=None)
@given(MERGED_OPS, st.sets(st.integers(0, len(RULES) - 1)))
@example([("create", b"etc/new"), ("unlink", b"etc/hosts"), ("copy up", b"etc/link")], set())
@example([("unlink", b"etc/app/sub/deep"), ("rmdir", b"etc/app/sub"), ("mkdir", b"etc/app/sub"),
          ("create", b"etc/app/new")], set())            # opaque over the host's: not merged
def test_a_merged_directory_is_its_upper_directory_over_the_hosts(ops, rules):
    """Wherever merged_dir names an upper directory, the view's walk finds, for every name,
    what the compiled loop's lookup there finds (_fastpath_paths.c merged_lookup): that
    directory's object of the name, nothing for a whiteout of it, else the host's."""
    with _changed_view(RULES, rules, ops) as (top, ov, fs):
        walk = _Walk(fs)
        merged = 0
        for d in [top] + [g for g in ov._ix.kinds if g.startswith(top + b"/")]:
            upper = fs.merged_dir(d)
            if upper is None:
                continue
            merged += 1
            assert upper == ov.upper(d) and fs.owned_dir(d) is None, d
            for name in NAMES + [b"new", b"f"]:
                p = d + b"/" + name
                try:
                    st_ = os.lstat(upper + b"/" + name)
                    want = (st_.st_mode, st_.st_ino, st_.st_size)
                except FileNotFoundError:
                    want = None if os.path.lexists(upper + b"/.wh." + name) \
                        else _host_object(p)
                assert _view_object(walk, p) == want, (p, ops, rules)
        if not rules and ops[:1] == [("create", b"etc/new")]:
            assert merged >= 1                 # /etc made merged by the new file


UPPER_DIRS_EXAMPLE = [("mkdir", b"etc/new"), ("unlink", b"etc/app/sub/deep"),
                      ("unlink", b"etc/hosts")]


@settings(max_examples=100, deadline=None)
@given(MERGED_OPS, st.sets(st.integers(0, len(RULES) - 1)))
@example(UPPER_DIRS_EXAMPLE, set())
@example([("unlink", b"etc/app/sub/deep"), ("rmdir", b"etc/app/sub"), ("mkdir", b"etc/app/sub"),
          ("mkdir", b"etc/app/sub/new")], set())            # opaque: its own link count
def test_an_upper_directorys_stat_is_answered_as_the_view_answers_it(ops, rules):
    """Wherever upper_dir_stat gives an answer (the compiled loop's stat of an upper
    directory under upper directories), it is the handler's: the object the view's walk
    finds at that path is that upper directory, the link count is merged_nlink's (-1: the
    upper directory's own), and the host object that count depends on is recorded as it is."""
    with _changed_view(RULES, rules, ops) as (top, ov, fs):
        walk = _Walk(fs)
        answered = set()
        host_dirs = [top + b"/" + r for r in (b"etc", b"etc/app", b"etc/app/sub", b"usr",
                                                b"usr/lib", b"home/u", b"tmp", b"etc/dirlink")]
        for g in sorted(set(ov._ix.kinds) | set(host_dirs)):
            if not (g + b"/").startswith(top + b"/"):
                continue        # top's ancestors ($TMPDIR): other processes change them
            got = fs.upper_dir_stat(g)
            if got is None:
                continue
            answered.add(g[len(top):])
            upper, nlink, lower, ino, ctime, keeps = got
            assert keeps == (fs.kept_identity(g) is not None) and (ino or not keeps), g
            st_ = os.lstat(upper)
            assert upper == ov.upper(g) and stat.S_ISDIR(st_.st_mode), g
            assert _view_object(walk, g) == (st_.st_mode, st_.st_ino, st_.st_size), (g, ops)
            merged = fs.merged_nlink(g)
            assert nlink == (-1 if merged is None else merged), (g, ops, rules)
            if nlink < 0:
                assert (lower, ino, ctime) == (b"", 0, 0)
            else:
                assert lower == ov.lower(g)
                host = os.lstat(lower) if os.path.lexists(lower) else None
                assert (ino, ctime) == ((host.st_ino, host.st_ctime_ns) if host else (0, 0))
            assert fs.upper_dir_stat(g + b"/nope") is None
        if not rules and ops == UPPER_DIRS_EXAMPLE:
            assert {b"", b"/etc", b"/etc/new", b"/etc/app", b"/etc/app/sub"} <= answered
            assert fs.upper_dir_stat(top + b"/etc")[1] == 2 + 2     # app, new (host: app)


def test_the_engine_and_python_bound_the_decisions_alike():
    """The engine decides some directories itself (below owned ones) and stops adding to the
    `plain` dict at the bound where Python clears it."""
    from appvirt.tracer.fastpath import MAX_DIRS
    assert _fastpath.MAX_DIRS == MAX_DIRS


def test_what_is_never_owned(tmp_path):
    lower = tmp_path / "lower"
    (lower / "merged").mkdir(parents=True)
    before = _fs([], str(tmp_path / "upper"))
    top = os.fsencode(lower)
    for d in (b"/made", b"/made/inner", b"/made/ro"):
        before.ov.mkdir(top + d, 0o755)
    create_file(before.ov, top + b"/merged/f", b"x")
    create_file(before.ov, top + b"/made/file", b"x")
    assert before.owned_dir(top + b"/made") == before.ov.upper(top + b"/made")
    before.ov.close()
    # A later run whose policy makes one of them read-only.
    fs = _fs([(os.fsdecode(top) + "/made/ro", FileMode.READONLY)], str(tmp_path / "upper"))
    assert fs.owned_dir(top + b"/made/inner") == fs.ov.upper(top + b"/made/inner")
    assert fs.owned_dir(top + b"/made") is None          # a rule for one of its names
    assert fs.owned_dir(top + b"/made/ro") is None       # not overlay mode
    assert fs.owned_dir(top + b"/merged") is None        # the host's names show in it
    assert fs.owned_dir(top + b"/made/file") is None     # not a directory
    assert fs.owned_dir(top + b"/nothing") is None and fs.owned_dir(top) is None
    assert fs.owned_dir(b"/") is None


def _fs(rules: list[tuple[str, FileMode]], upper: str) -> OverlayFS:
    files = FilesPolicy(FileMode.OVERLAY, tuple(
        PathRule(Glob.of(p), m, f"r{i}") for i, (p, m) in enumerate(rules)))
    ov = Overlay(os.fsencode(upper), mode_of=lambda g: files.mode_for(g)[0])
    return OverlayFS(ov, files.rules, hidden=(os.fsencode(upper),))


def test_what_is_never_plain(tmp_path):
    fs = _fs([("/usr/share/doc/secret", FileMode.HIDDEN), ("/srv/*/cache", FileMode.PRIVATE),
              ("/proc", FileMode.PASSTHROUGH), ("/opt/hole", FileMode.PASSTHROUGH)],
             str(tmp_path / "upper"))
    assert fs.plain_dir(b"/usr/lib")
    assert not fs.plain_dir(b"/usr/share/doc")       # a rule for one of its names
    assert not fs.plain_dir(b"/usr/share")           # ... or below one of them
    assert not fs.plain_dir(b"/srv")                 # a wildcard rule may match below
    assert not fs.plain_dir(b"/proc") and not fs.plain_dir(b"/proc/self")
    assert not fs.plain_dir(b"/opt/hole")            # passthrough: asked of its owner
    assert not fs.plain_dir(os.fsencode(tmp_path))   # holds the hidden upper layer
    assert not fs.plain_dir(os.fsencode(tmp_path / "upper"))
    assert not fs.plain_dir(b"/")
    assert not fs.plain_dir(b"/usr/share/doc/secret/nope")   # absent, but hidden anyway
    assert not fs.plain_dir(b"/srv/x/cache/nope")             # ... or private
    os.symlink("/usr/lib", tmp_path / "lib")
    assert not fs.plain_dir(os.fsencode(tmp_path / "lib"))                 # a symlink
    assert not fs.plain_dir(os.fsencode(tmp_path / "lib"), parent_plain=True)
    assert not fs.plain_dir(os.fsencode(tmp_path / "lib" / "python3"))     # through one


def test_an_absent_directory_is_plain(tmp_path):
    """Absent from the host and the upper layer, with no rule that could place something
    there: every name in it is ENOENT, in the view as on the host."""
    fs = _fs([("/usr/share/doc/secret", FileMode.HIDDEN)], str(tmp_path / "upper"))
    absent = os.fsencode(tmp_path / "no" / "such")
    assert fs.plain_dir(absent) and fs.plain_dir(absent + b"/deeper")
    made = os.fsencode(tmp_path / "made")
    fs.ov.mkdir(made, 0o755)                        # upper only: the view has it
    assert not fs.plain_dir(made)
    assert fs.plain_dir(made + b"/nope")            # ... but not this name in it
    (tmp_path / "file").write_text("x")
    assert not fs.plain_dir(os.fsencode(tmp_path / "file" / "x"))    # ENOTDIR: not decided
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert not fs.plain_dir(os.fsencode(tmp_path / "link" / "nope"))  # crosses a symlink


def test_a_change_in_a_directory_makes_it_and_its_ancestors_not_plain(tmp_path):
    (tmp_path / "lower" / "a" / "b").mkdir(parents=True)
    fs = _fs([], str(tmp_path / "upper"))
    a = os.fsencode(tmp_path / "lower" / "a")
    version = fs.ov._ix.version
    assert fs.plain_dir(a) and fs.plain_dir(a + b"/b")
    create_file(fs.ov, a + b"/b/new", b"x")
    assert fs.ov._ix.version != version              # the tracer forgets what it decided
    assert not fs.plain_dir(a + b"/b") and not fs.plain_dir(a)


def test_split_names_the_directory_the_kernel_would_walk():
    split = _fastpath.split
    assert split(b"/cwd", b"name") == (b"/cwd", b"name")
    assert split(b"/cwd", b"a/b/name") == (b"/cwd/a/b", b"name")
    assert split(b"/", b"name") == (b"/", b"name")
    assert split(b"/cwd", b"/usr/lib/os.py") == (b"/usr/lib", b"os.py")
    assert split(b"/cwd", b"/etc") == (b"/", b"etc")
    # "." before a name changes nothing (tar's "./dir/file").
    assert split(b"/cwd", b"./a/./b/name") == (b"/cwd/a/b", b"name")
    assert split(b"/cwd", b"./name") == (b"/cwd", b"name")
    assert split(b"/cwd", b"/./etc/./hosts") == (b"/etc", b"hosts")
    # Anything else is left to the Python resolver.
    for path in (b"", b".", b"..", b"../x", b"a/../b", b"a/.", b"a//b", b"//a", b"a/",
                 b"/", b".wh.x", b"d/.wh.x", b"x" * 256, b"/" + b"d/" * 2100 + b"x"):
        assert split(b"/cwd", path) is None, path


def test_a_directory_reached_through_symlinks_takes_the_plain_directorys_names(tmp_path):
    """/lib/x86_64-linux-gnu on a merged-/usr system: its names are /usr/lib's, while the
    view's walk of it reaches that plain directory; never when the walk leaves the host's
    view or ends elsewhere."""
    from appvirt.tracer.fastpath import FastPath
    lower = tmp_path / "lower"
    (lower / "usr" / "lib" / "x").mkdir(parents=True)
    (lower / "lib").symlink_to("usr/lib")
    (lower / "abs").symlink_to(lower / "usr" / "lib" / "x")
    (lower / "nowhere").symlink_to("missing")
    (lower / "secret").mkdir()
    (lower / "peek").symlink_to("secret")
    fs = _fs([(str(lower / "secret"), FileMode.HIDDEN)], str(tmp_path / "upper"))
    fast = FastPath.__new__(FastPath)        # its decisions, without an engine
    fast.fs, fast.plain, fast._rule_of, fast.error, fast.made = fs, {}, None, None, []
    fast.decided = 0
    top = os.fsencode(lower)
    assert fast._decide(top + b"/lib/x") == (top + b"/usr/lib/x",)
    assert fast._decide(top + b"/abs") == (top + b"/usr/lib/x",)
    assert fast._decide(top + b"/usr/lib/x") is True
    assert fast._decide(top + b"/nowhere") is False
    assert fast._decide(top + b"/peek") is False          # hidden at the end of the walk
    assert fast.error is None


def test_deciding_marks_the_engine_busy(tmp_path):
    """The tracer's timer must not act in the middle of a stop: while a directory is being
    decided (the engine is inside one), `busy` says so."""
    from appvirt.tracer.fastpath import FastPath
    seen = []

    class Fs:
        def plain_dir(self, d, parent_plain=False):
            seen.append(fast.busy)
            return True
    fast = FastPath.__new__(FastPath)
    fast.fs, fast.plain, fast._rule_of, fast.error, fast.busy = Fs(), {}, None, None, False
    fast.made, fast.decided = [], 0
    assert fast._learn(b"/a/b") is True
    assert seen == [True, True] and fast.busy is False


NAME_RULES = RULES + [("etc/hosts", FileMode.PASSTHROUGH), ("usr/bin/tool", FileMode.READONLY)]


HOST_FILES = st.sampled_from([b"etc/hosts", b"etc/app/conf", b"usr/bin/tool", b"home/u/doc",
                              b"etc/app/sub/deep"])
name_changes = st.lists(st.one_of(
    st.tuples(st.sampled_from(["create", "mkdir", "unlink", "rmdir"]), rel_paths),
    st.tuples(st.just("copy up"), HOST_FILES)), max_size=5)


@settings(max_examples=150, deadline=None)
@given(name_changes, st.sets(st.integers(0, len(NAME_RULES) - 1)))
def test_a_host_name_is_the_hosts_object(ops, rules):
    """Wherever host_name says so, the view's walk finds exactly the host's object there,
    whatever the overlay holds and the rules say (the names of directories with rules for
    some of their names, as /dev's devices, are decided one by one)."""
    with _changed_view(NAME_RULES, rules, ops) as (top, ov, fs):
        walk = _Walk(fs)
        for d in [top + b"/" + r for r in (b"etc", b"etc/app", b"etc/app/sub", b"usr/bin",
                                           b"usr/lib/x/y", b"home/u", b"home/u/.ssh", b"tmp")]:
            for name in NAMES:
                p = d + b"/" + name
                if fs.host_name(p):
                    assert fs.host_name_dir(d), (p, ops, rules)
                    assert _view_object(walk, p) == _host_object(p) != None, (p, ops, rules)


def _as_the_engine(op: str, a: bytes, b: bytes) -> tuple[int, ...]:
    """A change as _fastpath_owned.c makes it on upper objects (it moves no directory and
    removes only empty ones): which operands (0: a, 1: b) it hands to note_made, in order."""
    if op == "create":
        open(a, "xb").close()
    elif op == "mkdir":
        os.mkdir(a)
    elif op == "unlink":
        os.unlink(a)
    elif op == "rmdir":
        os.rmdir(a)
    elif op == "link":
        os.link(a, b)
        return (1,)
    elif os.path.isdir(a):
        raise IsADirectoryError(errno.EISDIR, "a directory")
    else:
        os.rename(a, b)
        return (1, 0)
    return (0,)


def _kind_now(p: bytes) -> int:
    """What note_made finds at an upper path right after the change: S_IFMT, 0 nothing."""
    try:
        return stat.S_IFMT(os.lstat(p).st_mode)
    except FileNotFoundError:
        return 0


ENGINE_OPS = st.lists(st.tuples(
    st.sampled_from(["create", "mkdir", "unlink", "rmdir", "rename", "link"]),
    st.sampled_from([b"a", b"b", b"d", b"d/c", b"d/e"]), st.sampled_from([b"a", b"b", b"d/c"])),
    max_size=8)


@settings(max_examples=150, deadline=None)
@given(ENGINE_OPS)
def test_recording_the_names_the_engine_changed_gives_the_index_a_load_gives(ops):
    """The engine makes its changes in an owned directory on the upper objects themselves
    (_fastpath_owned.c) and hands each name with what it found there right after to
    FastPath.drain: Overlay.record of those, in order, must leave the index as a fresh load
    of the upper layer finds it (a rename onto another link of the same file leaves both)."""
    from appvirt.overlay.index import UpperIndex
    with tempfile.TemporaryDirectory() as lower, tempfile.TemporaryDirectory() as upper:
        top = os.fsencode(os.path.realpath(lower))
        make_tree(lower, TREE)
        ov = Overlay(os.fsencode(upper), mode_of=lambda g: FileMode.OVERLAY)
        made = top + b"/tmp/made"
        ov.mkdir(made, 0o755)
        assert OverlayFS(ov, ()).owned_dir(made) == ov.upper(made)
        noted = []
        for op, a, b in ops:
            ga, gb = made + b"/" + a, made + b"/" + b
            try:
                handed = _as_the_engine(op, ov.upper(ga), ov.upper(gb))
            except OSError:
                continue
            noted += [(g, _kind_now(ov.upper(g))) for g in ((ga, gb)[i] for i in handed)]
        before = ov._ix.version
        ov.record(noted)
        assert ov._ix.version > before or not noted
        loaded = UpperIndex.load(ov.upper_root, recover=False)
        assert dict(ov._ix.kinds) == dict(loaded.kinds), ops
        assert set(ov._ix.whiteouts) == set(loaded.whiteouts) and \
            set(ov._ix.opaque) == set(loaded.opaque)


def _deciding(fs, files) -> "object":
    """A FastPath's deciding half, without an engine."""
    from appvirt.tracer.fastpath import FastPath
    fast = FastPath.__new__(FastPath)
    fast.fs, fast.plain, fast.names, fast.error, fast.made = fs, {}, {}, None, []
    fast._rule_of, fast._index, fast.decided = files.mode_for, fs.ov._ix, 0
    return fast


DIRS = [b"", b"/etc", b"/etc/app", b"/etc/app/sub", b"/etc/dirlink", b"/etc/dirlink/sub",
        b"/usr", b"/usr/bin", b"/usr/lib", b"/usr/lib/x", b"/usr/lib/x/y", b"/home",
        b"/home/u", b"/home/u/.ssh", b"/tmp", b"/tmp/new", b"/nope", b"/etc/app/new"]


@settings(max_examples=150, deadline=None)
@given(changes, name_changes, st.sets(st.integers(0, len(RULES) - 1)))
@example([("mkdir", b"tmp/new")], [("create", b"tmp/new/x")], set())
@example([], [("copy up", b"etc/app/conf")], set())
@example([], [("create", b"etc/app/new")], set())       # etc/dirlink reaches etc/app
def test_decisions_kept_around_a_change_are_what_deciding_again_gives(before, after, rules):
    """After the overlay changes (Python's handlers), FastPath forgets the decisions around
    the changed paths only (_forget_around, from the index's journal): every decision it
    keeps must be the one a fresh decision of that directory gives now."""
    with _changed_view(RULES, rules, before) as (top, ov, fs):
        files = FilesPolicy(FileMode.OVERLAY, tuple(fs._rules))
        fast = _deciding(fs, files)
        dirs = DIRS + [parent(b"/" + rel) for _, rel in before + after]
        for d in dirs:
            fast._decide(top + d if d else top)
        ov._ix.take_changed()
        _apply(ov, top, after)
        changed = ov._ix.take_changed()
        if changed is None:
            return                   # too many or unknown: every decision goes
        fast._forget_around(changed)
        again = _deciding(fs, files)
        for d, kept in fast.plain.items():
            assert again._decide(d) == kept, (d, kept, changed)
