"""The warm server's spare tracer without ptrace: its copy of the pages it shares with its
parent, and the hand-over of a run (warm/spare.py)."""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
import types

import pytest
from hypothesis import given, strategies as st

from appvirt.warm import spare as spare_mod, wire
from appvirt.warm.server import Server
from appvirt.warm.spare import Spare, fork_spare, populate_writable

BUFFER_PAGES = 2048


def _faults_of_writing(buffer: bytearray) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(0, len(buffer), spare_mod.PAGE):
        buffer[i] = 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _in_child(work) -> int:
    """work() in a fork of this process (whose pages it shares with this one); its int."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.write(w, str(work()).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            answer = f.read()
    finally:
        os.waitpid(pid, 0)
    return int(answer)


def test_a_populated_fork_writes_its_parents_pages_without_faulting():
    buffer = bytearray(b"x" * (BUFFER_PAGES * spare_mod.PAGE))     # written: present here
    unpopulated = _in_child(lambda: _faults_of_writing(buffer))
    populated = _in_child(lambda: (populate_writable(), _faults_of_writing(buffer))[1])
    assert unpopulated >= BUFFER_PAGES * 0.9        # one copy on write per page
    assert populated < BUFFER_PAGES * 0.05


@pytest.mark.parametrize("chunk", [spare_mod.PAGEMAP_CHUNK, 3])   # (3: runs cut in parts)
def test_what_is_populated_is_what_the_fork_shared(chunk):
    def shared_left() -> int:
        spare_mod.PAGEMAP_CHUNK = chunk         # (in the fork only)
        asked = populate_writable()
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            left = sum(b - a for start, end in spare_mod.private_writable_mappings()
                       for a, b in spare_mod._shared_runs(pagemap, start, end))
        finally:
            os.close(pagemap)
        return asked if left == 0 else -left

    buffer = bytearray(BUFFER_PAGES * spare_mod.PAGE)
    buffer[::spare_mod.PAGE] = b"\1" * BUFFER_PAGES
    asked = _in_child(shared_left)
    assert asked >= BUFFER_PAGES * spare_mod.PAGE     # the buffer, and nothing left shared
    # Pages this process never touched are not asked for: a fresh mapping of 64 MB.
    import mmap
    untouched = mmap.mmap(-1, 64 << 20)
    try:
        assert _in_child(shared_left) < asked + (32 << 20)
    finally:
        untouched.close()


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, (1 << 64) - 1)),
                max_size=300), st.integers(0, 1 << 20))
def test_the_shared_runs_are_the_present_pages_not_mapped_exclusively(tmp_path_factory,
                                                                       pages, first_page):
    """Against a made-up pagemap: bits 63 (present) and 56 (exclusive) decide, the others
    (the frame number, soft-dirty, ...) do not."""
    path = tmp_path_factory.mktemp("pagemap") / "pagemap"
    others = ~((1 << 63) | (1 << 56)) & ((1 << 64) - 1)
    entries = b"".join(((present << 63) | (exclusive << 56) | (other & others))
                       .to_bytes(8, sys.byteorder) for present, exclusive, other in pages)
    path.write_bytes(bytes(first_page * 8) + entries)
    start = first_page * spare_mod.PAGE
    expected, run = [], None
    for i, (present, exclusive, _) in enumerate([*pages, (False, False, 0)]):
        if present and not exclusive:
            run = run if run is not None else start + i * spare_mod.PAGE
        elif run is not None:
            expected.append((run, start + i * spare_mod.PAGE))
            run = None
    fd = os.open(path, os.O_RDONLY)
    try:
        assert spare_mod._shared_runs(fd, start, start + len(pages) * spare_mod.PAGE) == expected
    finally:
        os.close(fd)


def _run_into(pipe_w: int):
    """A spare's run: writes what it was handed to pipe_w."""
    def run(conn: socket.socket, request: tuple, fds: list[int]):  # pragma: no cover
        kinds = [os.path.samestat(os.fstat(fd), os.fstat(pipe_w)) for fd in fds]
        os.write(pipe_w, repr((request, conn.recv(5), kinds)).encode())
        os._exit(3)
    return run


def _wait_ready(spare: Spare) -> None:
    deadline = time.monotonic() + 30
    while not spare.is_ready():
        assert time.monotonic() < deadline, "the spare never said it was ready"
        time.sleep(0.01)


def test_a_ready_spare_runs_the_request_it_is_handed_with_its_fds():
    r, w = os.pipe()
    spare = fork_spare(lambda: None, _run_into(w))
    try:
        _wait_ready(spare)
        with open(f"/proc/{spare.pid}/comm", "rb") as f:
            assert f.read() == spare_mod.NAME + b"\n"
        ours, theirs = socket.socketpair()
        ours.sendall(b"hello")
        assert spare.hand_over(theirs, ("run", 1, 0o22, ["x"], {}, True), [w, w, w])
        assert spare.channel.fileno() == -1
        os.close(w)
        assert os.read(r, 4096) == repr((("run", 1, 0o22, ["x"], {}, True), b"hello",
                                         [True] * 3)).encode()
        assert os.waitpid(spare.pid, 0)[1] >> 8 == 3
    finally:
        os.close(r)


def test_a_spare_whose_server_closes_its_channel_exits_and_end_reaps_one():
    spare = fork_spare(lambda: None, _run_into(-1))
    _wait_ready(spare)
    spare.channel.close()
    assert os.waitpid(spare.pid, 0)[1] == 0
    busy = fork_spare(lambda: time.sleep(60), _run_into(-1))
    busy.end()
    with pytest.raises(ChildProcessError):
        os.waitpid(busy.pid, os.WNOHANG)


def test_a_spare_handed_nonsense_exits_internal():
    spare = fork_spare(lambda: None, _run_into(-1))
    _wait_ready(spare)
    wire.send(spare.channel, ("run",))          # no connection, no fds
    assert os.waitstatus_to_exitcode(os.waitpid(spare.pid, 0)[1]) == spare_mod.INTERNAL
    spare.channel.close()


def test_the_server_forks_rather_than_wait_for_a_spare_not_ready():
    """A spare still copying is killed (it would slow the run) and the server forks."""
    busy = fork_spare(lambda: time.sleep(60), _run_into(-1))
    server = types.SimpleNamespace(spare=busy)
    a, b = socket.socketpair()
    try:
        assert Server._hand_to_spare(server, a, ("run",), []) is None
        assert server.spare is None
        with pytest.raises(ChildProcessError):
            os.waitpid(busy.pid, os.WNOHANG)
    finally:
        a.close()
        b.close()


def test_the_server_hands_a_run_to_a_ready_spare():
    r, w = os.pipe()
    spare = fork_spare(lambda: None, _run_into(w))
    server = types.SimpleNamespace(spare=spare)
    _wait_ready(spare)
    ours, theirs = socket.socketpair()
    try:
        ours.sendall(b"hello")
        assert Server._hand_to_spare(server, theirs, ("run", 2), [w, w, w]) == spare.pid
        assert server.spare is None
        os.close(w)
        assert os.read(r, 4096).startswith(b"(('run', 2), b'hello'")
        assert os.waitpid(spare.pid, 0)[1] >> 8 == 3
    finally:
        os.close(r)
        ours.close()
        theirs.close()


def test_a_spare_that_died_untold_is_replaced_only_after_a_while():
    """A spare that dies at once (say, each one) must not make the server fork in a loop."""
    dead = fork_spare(lambda: os._exit(1), _run_into(-1))
    server = types.SimpleNamespace(spare=dead, children={}, stopping=False,
                                   spares_wanted=True, next_spare=0.0)
    deadline = time.monotonic() + 30
    while server.spare is not None:
        assert time.monotonic() < deadline, "the dead spare was never reaped"
        Server._reap(server)
        time.sleep(0.01)
    assert dead.channel.fileno() == -1
    assert not Server._spare_due(server)
    server.next_spare = time.monotonic()
    assert Server._spare_due(server)
    server.children = {1: None}                 # a run goes on: no spare now
    assert not Server._spare_due(server)
