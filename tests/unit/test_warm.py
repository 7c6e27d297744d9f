"""The warm server's plain logic: its messages, its refusals, its code stamp, and what its
client imports (no ptrace)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from appvirt.homepath import home_dir
from appvirt.state import appvirt_home
from appvirt.warm import codewatch, peer, wire
from appvirt.warm.codewatch import code_stamp

SELF = peer.read_context("self")

messages = st.tuples(st.sampled_from(["run", "status", "pid", "exit"]),
                     st.lists(st.text()), st.dictionaries(st.binary(), st.binary()),
                     st.integers(-2**63, 2**63 - 1))


@given(messages, st.booleans())
def test_a_message_and_its_fds_arrive_whole(message, with_fds):
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        wire.send(a, message, (r, w) if with_fds else ())
        got, fds = wire.receive(b, max_fds=3)
        assert got == message
        assert len(fds) == (2 if with_fds else 0)
        for fd in fds:
            assert os.path.samestat(os.fstat(fd), os.fstat(r))
            os.close(fd)
        a.close()
        assert wire.receive(b, max_fds=3) is None
    finally:
        for s in (a, b):
            s.close()
        os.close(r)
        os.close(w)


def test_a_big_environment_crosses_in_parts():
    a, b = socket.socketpair()
    big = ("run", "origin", ["x"], {b"K%d" % i: b"v" * 1000 for i in range(3000)})
    import threading
    t = threading.Thread(target=wire.send, args=(a, big, (0,)))
    t.start()
    got, fds = wire.receive(b, max_fds=3)
    t.join()
    assert got == big and len(fds) == 1
    os.close(fds[0])
    a.close()
    b.close()


@pytest.mark.parametrize("data, error", [
    ((wire.MAX_MESSAGE + 1).to_bytes(4, "little"), ValueError),
    (b"\x05\x00\x00\x00ab", EOFError),
    (b"\x01\x00\x00\x00N", ValueError),        # marshalled None: not a message
])
def test_a_bad_message_is_an_error_and_leaks_no_fd(data, error):
    a, b = socket.socketpair()
    r, w = os.pipe()
    a.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, sys.byteorder))])
    a.close()
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(error):
        wire.receive(b, max_fds=3)
    assert set(os.listdir("/proc/self/fd")) <= before
    b.close()
    os.close(r)
    os.close(w)


def test_this_process_is_refused_nothing_against_itself():
    assert peer.refusal(SELF, SELF) is None


@pytest.mark.parametrize("change, reason", [
    (dict(tracer_pid=77), "the client is being traced"),
    (dict(tty_nr=34816), "the client has a controlling terminal"),
    (dict(status=(("Uid", "1000\t1000\t1000\t1000"),) + SELF.status[1:]),
     f"a different Uid (1000\t1000\t1000\t1000 against the server's {SELF.status[0][1]})"),
    (dict(namespaces=SELF.namespaces[:3] + ("net:[1]",) + SELF.namespaces[4:]),
     "another net namespace"),
    (dict(files=(b"0::/other\n",) + SELF.files[1:]), "a different cgroup"),
    (dict(files=SELF.files[:3] + (b"500\n",)), "a different oom_score_adj"),
])
def test_what_a_forked_run_could_not_inherit_is_refused(change, reason):
    assert peer.refusal(SELF, SELF._replace(**change)) == reason


def test_a_status_file_and_a_stat_line_are_read_as_the_kernel_writes_them():
    status = peer.parse_status("Name:\tsh\nUmask:\t0027\nNoNewPrivs:\t1\nbroken line\n")
    assert status == {"Name": "sh", "Umask": "0027", "NoNewPrivs": "1"}
    assert peer.tty_of_stat(b"42 (a) b) c) S 1 42 42 34817 42 4194560 0") == 34817
    assert SELF.umask == (lambda m: (os.umask(m), m)[1])(os.umask(0))


def test_only_the_interpreters_variables_must_match():
    env = {b"PYTHONPATH": b"/x", b"LC_ALL": b"C", b"LANG": b"C", b"HOME": b"/h",
           b"LANGUAGES": b"x", b"MYPYTHON": b"y", b"PYTHONDONTWRITEBYTECODE": b"1"}
    assert peer.interpreter_env(env) == {b"PYTHONPATH": b"/x", b"LC_ALL": b"C", b"LANG": b"C"}


def test_the_code_stamp_changes_with_any_code_file(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__pycache__").mkdir()
    for name in ("a.py", "b.so", "c.yaml", "d.json", "notes.txt"):
        (tmp_path / "pkg" / name).write_text("1")
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_text("1")
    stamp = code_stamp(str(tmp_path))
    (tmp_path / "pkg" / "notes.txt").write_text("22")
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_text("22")
    assert code_stamp(str(tmp_path)) == stamp
    for name in ("a.py", "b.so", "c.yaml", "d.json"):
        path = tmp_path / "pkg" / name
        st_ = path.stat()
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1))
        assert code_stamp(str(tmp_path)) != stamp, name
        stamp = code_stamp(str(tmp_path))


@pytest.mark.parametrize("inotify", [True, False])
def test_the_code_watch_sees_each_change_of_code_and_only_those(tmp_path, monkeypatch, inotify):
    """With inotify the stamp is walked only after an event in the package; a directory made
    after the watch began is watched too. Without it (no inotify here), every question walks
    the stamp, with the same answers."""
    if not inotify:
        monkeypatch.setattr(codewatch._libc, "inotify_init1", lambda flags: -1)
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("1")
    walks = []
    real_stamp = codewatch.code_stamp
    monkeypatch.setattr(codewatch, "code_stamp", lambda p: walks.append(p) or real_stamp(p))
    watch = codewatch.CodeWatch(str(tmp_path))
    try:
        assert (watch.fd >= 0) == inotify
        walks.clear()
        assert not watch.changed() and not watch.changed()
        assert len(walks) == (0 if inotify else 2)
        (pkg / "__pycache__" / "a.pyc").write_text("2")      # bytecode: no event
        assert not watch.changed()
        assert len(walks) == (0 if inotify else 3)
        (pkg / "notes.txt").write_text("2")                  # an event, the same stamp
        assert not watch.changed()
        (pkg / "sub").mkdir()                                # an event: now watched too
        assert not watch.changed()
        (pkg / "sub" / "b.py").write_text("3")
        assert watch.changed() and watch.changed()           # it stays changed
    finally:
        watch.close()


@pytest.mark.parametrize("env", [
    {"APPVIRT_HOME": "/a/b"}, {"XDG_DATA_HOME": "/x", "HOME": "/h"}, {"HOME": "/h/"},
    {"HOME": ""}, {}, {"APPVIRT_HOME": "", "HOME": "/h"}])
def test_the_client_finds_the_home_the_run_uses(env):
    assert str(appvirt_home(env)) == os.path.normpath(home_dir(env))


def test_the_client_imports_only_builtin_modules():
    """What every `appvirt run` pays before it knows whether a server runs."""
    code = ("import sys; before = set(sys.modules); import appvirt.entry, appvirt.warm.client; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert {m for m in loaded if not m.startswith("appvirt")} <= {"_socket", "atexit", "gc"}
    assert {"appvirt.errors", "appvirt.state", "appvirt.warm.server"}.isdisjoint(loaded)


def test_a_server_that_cannot_start_says_why_in_one_line(tmp_path, monkeypatch):
    from appvirt.errors import EnvironmentUnsupported
    from appvirt.warm import server

    def unsupported():
        raise EnvironmentUnsupported("seccomp filters are not available here (EINVAL)")

    monkeypatch.setattr(server, "preload", unsupported)
    with pytest.raises(server.ServerError) as failed:
        server.start(str(tmp_path), idle=1)
    assert failed.value.message == ("the server did not start: seccomp filters are not "
                                    "available here (EINVAL)")
    assert not (tmp_path / "run" / "server.sock").exists()
    os.close(server._lock(str(tmp_path)))         # and it left the home's lock free


def test_a_c_client_runs_this_code_only_with_this_interpreter_and_venv(tmp_path):
    from appvirt.warm.client import C_ORIGIN, ORIGIN
    from appvirt.warm.server import runs_this_code
    assert runs_this_code(ORIGIN)
    assert runs_this_code((C_ORIGIN, os.fsencode(sys.executable)))
    other_venv = tmp_path / "venv"
    (other_venv / "bin").mkdir(parents=True)
    (other_venv / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (other_venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for refused in [(C_ORIGIN, os.fsencode(other_venv / "bin" / "python")),  # its packages
                    (C_ORIGIN, b"/bin/sh"), (C_ORIGIN, os.path.basename(sys.executable).encode()),
                    (C_ORIGIN, sys.executable), ("c0", os.fsencode(sys.executable)),
                    (C_ORIGIN,), (), ORIGIN[:2]]:
        assert not runs_this_code(refused), refused


@pytest.mark.parametrize("where", ["bin", "venv", None])
def test_an_interpreters_prefix_is_the_one_site_gives_it(tmp_path, where):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    if where:
        cfg = tmp_path / "venv" / ("bin" if where == "bin" else "") / "pyvenv.cfg"
        cfg.write_text("home = /usr/bin\n")
    from appvirt.warm.server import prefix_of
    expected = str(tmp_path / "venv") if where else sys.base_prefix
    assert prefix_of(str(tmp_path / "venv" / "bin" / "python3")) == expected


def test_a_run_request_of_either_client_is_read_and_anything_else_refused():
    from appvirt.warm.server import _run_request
    env = {b"A": b"1"}
    assert _run_request(("run", ("c1", b"/py"), ["run", b"caf\xc3\xa9", b"\xff"], env)) == \
        (("c1", b"/py"), ["run", "café", "\udcff"], env)
    for bad in [("run", "origin", ["run"], env), ("run", (), ("run",), env),
                ("run", (), ["run", 1], env), ("run", (), ["run"], None),
                ("run", (), ["run"], {"A": b"1"}), ("run", (), ["run"], {b"A": 1})]:
        with pytest.raises(ValueError):
            _run_request(bad)


def test_the_c_clients_word_that_it_asked_is_gone_before_anything_runs():
    """It keeps the Python client from asking again, and the program never sees it."""
    code = ("import os, sys; from appvirt import entry; from appvirt.warm import client; "
            "client.run_warm = lambda args: print('asked'); "
            "entry._command = lambda args, params: (print('cold', os.environ.get("
            "'_APPVIRT_SERVER_ASKED')), (0, False))[1]; "
            "sys.argv = ['appvirt', 'run', '--', 'true']; entry.console()")
    for asked, said in [({"_APPVIRT_SERVER_ASKED": "1"}, "cold None\n"),
                        ({}, "asked\ncold None\n")]:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, **asked}, timeout=60)
        assert (r.returncode, r.stdout) == (0, said), r.stderr


@pytest.mark.parametrize("value, wanted", [(None, True), ("", True), ("auto", True),
                                           ("manual", False), ("off", False),
                                           ("yes", False)])
def test_only_the_default_setting_starts_a_server(value, wanted):
    from appvirt.warm import autostart
    env = {} if value is None else {"APPVIRT_SERVER": value}
    assert autostart.wanted(env) is wanted


STATUS = (b"Name:\tappvirt\nTracerPid:\t0\nNoNewPrivs:\t0\nSeccomp:\t0\n"
          b"Seccomp_filters:\t0\n")


@pytest.mark.parametrize("field, value", [(b"TracerPid", b"4242"), (b"NoNewPrivs", b"1"),
                                          (b"Seccomp", b"2")])
def test_a_traced_or_filtered_process_starts_no_server(field, value):
    """Its server would be traced or filtered too: a tracer waiting for its tracees would
    wait for it, and the server refuses such a client anyway (peer.py)."""
    from appvirt.warm import autostart
    assert not autostart.sandboxed(STATUS)
    changed = STATUS.replace(field + b":\t0", field + b":\t" + value)
    assert changed != STATUS and autostart.sandboxed(changed)
    assert not autostart.sandboxed(STATUS.replace(b"Seccomp_filters:\t0", b"Seccomp_filters:\t1"))
    assert autostart.sandboxed(open("/proc/self/status", "rb").read()) == any(
        peer.parse_status(open("/proc/self/status").read()).get(name, "0") != "0"
        for name in ("TracerPid", "NoNewPrivs", "Seccomp"))


def test_a_held_home_lock_means_a_server_runs_or_starts(tmp_path):
    import fcntl
    from appvirt.warm import autostart, server
    home = str(tmp_path)
    assert not autostart.server_held(home)          # no run directory yet
    lock = server._lock(home)
    try:
        assert autostart.server_held(home)
    finally:
        os.close(lock)
    assert not autostart.server_held(home)
    lock = server._lock(home)                       # the probe left it free to take
    os.close(lock)
    fd = os.open(tmp_path / "run" / "server.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)              # a twin probe's moment: still free to probe
        assert not autostart.server_held(home)
    finally:
        os.close(fd)
