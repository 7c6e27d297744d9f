"""Handlers are decisions: given a stop and a sandbox, the right action (no ptrace)."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from appvirt.core.action import Allow, Decision, Deny, Emulate, Rewrite, SlotData, decision_of
from appvirt.core import sysnums
from appvirt.policy import load_policy_text
from appvirt.testing import AT_FDCWD, FakeContext, handle, make_stop

O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_TRUNC = 0, 1, 0o100, 0o200, 0o1000
O_NOFOLLOW, O_LARGEFILE, O_PATH = 0o400000, 0o100000, 0o10000000
RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS = 4, 2

POLICY = load_policy_text("""
files:
  default: readonly
  rules:
    - {path: /proj, mode: passthrough}
    - {path: /proj/secret, mode: hidden}
""", "test.yaml")


@pytest.fixture
def ctx(fs):
    fs.create_file("/etc/passwd", contents="root:x:0:0")
    fs.create_dir("/proj/sub")
    fs.create_file("/proj/file", contents="data")
    fs.create_file("/proj/secret/key", contents="k")
    fs.create_symlink("/proj/link", "/etc/passwd")
    fs.create_symlink("/proj/tosecret", "secret/key")
    return FakeContext(POLICY, cwd=b"/proj").use_overlay()


def slot_args(action: Rewrite) -> dict[int, object]:
    return {i: (v.data if isinstance(v, SlotData) else v) for i, v in action.args}


def test_open_for_writing_a_readonly_path_is_erofs(ctx):
    a = make_stop("openat", AT_FDCWD, 1, O_WRONLY | O_TRUNC, paths={1: b"/etc/passwd"})
    action = sys_handler(a)(a, ctx)
    assert isinstance(action, Deny) and action.errno == errno.EROFS
    assert action.note.rule == "files.default" and "mode: overlay" in action.note.hint
    assert decision_of(action) is Decision.DENIED


def sys_handler(stop):
    return stop.entry.handler


def test_open_for_reading_goes_to_the_kernel_as_openat2_from_the_slot(ctx):
    s = make_stop("openat", AT_FDCWD, 1, O_RDONLY, paths={1: b"link"})
    action = handle(s, ctx)
    assert isinstance(action, Rewrite) and action.nr == sysnums.nr("openat2")
    args = slot_args(action)
    assert args[0] == AT_FDCWD
    assert args[1] == b"/etc/passwd\0"                    # the symlink resolved
    flags, mode, resolve_flags = struct.unpack("<QQQ", args[2])
    assert flags == O_RDONLY | O_LARGEFILE and mode == 0
    assert resolve_flags == RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
    assert args[3] == 24
    assert decision_of(action) is Decision.ALLOWED


def test_hidden_paths_do_not_exist(ctx):
    for path in (b"/proj/secret/key", b"tosecret", b"secret"):
        s = make_stop("openat", AT_FDCWD, 1, O_RDONLY, paths={1: path})
        action = handle(s, ctx)
        assert isinstance(action, Deny) and action.errno == errno.ENOENT, path
    s = make_stop("mkdir", 1, 0o755, paths={0: b"/proj/secret/new"})
    action = handle(s, ctx)
    # not there because of a rule: the same errno, logged as the rule's denial
    assert isinstance(action, Deny) and action.errno == errno.ENOENT
    assert action.note.rule == "files.rules[1]" and not action.native


def test_creating_in_passthrough_is_allowed_with_the_mode(ctx):
    s = make_stop("open", 1, O_WRONLY | O_CREAT, 0o640, paths={0: b"new.txt"})
    action = handle(s, ctx)
    args = slot_args(action)
    assert args[1] == b"/proj/new.txt\0"
    flags, mode, _ = struct.unpack("<QQQ", args[2])
    assert flags & O_CREAT and mode == 0o640


def test_o_creat_on_an_existing_readonly_file_only_opens_it(ctx):
    s = make_stop("openat", AT_FDCWD, 1, O_RDONLY | O_CREAT, 0o644, paths={1: b"/etc/passwd"})
    action = handle(s, ctx)
    flags, mode, _ = struct.unpack("<QQQ", slot_args(action)[2])
    assert not flags & O_CREAT and mode == 0      # openat2: a mode without O_CREAT is EINVAL
    s = make_stop("openat", AT_FDCWD, 1, O_RDONLY | O_CREAT | O_EXCL, 0, paths={1: b"/etc/passwd"})
    action = handle(s, ctx)
    assert isinstance(action, Deny) and action.errno == errno.EEXIST and action.native


def test_o_nofollow_on_a_symlink_is_eloop_and_o_path_opens_the_link(ctx):
    s = make_stop("openat", AT_FDCWD, 1, O_RDONLY | O_NOFOLLOW, paths={1: b"link"})
    action = handle(s, ctx)
    assert isinstance(action, Deny) and action.errno == errno.ELOOP and action.native
    s = make_stop("openat", AT_FDCWD, 1, O_PATH | O_NOFOLLOW, paths={1: b"link"})
    assert slot_args(handle(s, ctx))[1] == b"/proj/link\0"


def test_missing_path_is_a_native_enoent(ctx):
    s = make_stop("openat", AT_FDCWD, 1, O_RDONLY, paths={1: b"/proj/nope"})
    action = handle(s, ctx)
    assert isinstance(action, Deny) and action.native and decision_of(action) is Decision.ALLOWED


def test_rename_needs_both_sides_writable(ctx, fs):
    s = make_stop("rename", 1, 2, paths={0: b"/proj/file", 1: b"/etc/file"})
    assert handle(s, ctx).errno == errno.EROFS
    s = make_stop("renameat2", AT_FDCWD, 1, AT_FDCWD, 2, 0,
                  paths={1: b"file", 3: b"sub/moved"})
    action = handle(s, ctx)
    # passthrough paths: the tracer renames on the host itself (nothing for the kernel)
    assert isinstance(action, Emulate) and decision_of(action) is Decision.ALLOWED
    assert fs.exists("/proj/sub/moved") and not fs.exists("/proj/file")


def test_hard_link_to_a_readonly_file_is_refused(ctx):
    """Threat #21: a link would give a writable name to a read-only file."""
    s = make_stop("link", 1, 2, paths={0: b"/etc/passwd", 1: b"/proj/alias"})
    assert handle(s, ctx).errno == errno.EROFS


def test_device_nodes_are_refused(ctx, fs):
    s = make_stop("mknod", 1, 0o020644, 0x0103, paths={0: b"/proj/null"})
    assert handle(s, ctx).errno == errno.EPERM
    s = make_stop("mknod", 1, 0o010644, 0, paths={0: b"/proj/fifo"})
    assert isinstance(handle(s, ctx), Emulate)
    assert fs.exists("/proj/fifo")


def test_access_w_ok_on_readonly_is_erofs(ctx):
    s = make_stop("access", 1, 2, paths={0: b"/etc/passwd"})
    assert handle(s, ctx).errno == errno.EROFS
    s = make_stop("access", 1, 4, paths={0: b"/etc/passwd"})
    assert isinstance(handle(s, ctx), Emulate)
    assert ctx.host_calls[-1][:2] == ("faccessat2", (AT_FDCWD, b"/etc/passwd", 4, 0))


def test_read_only_calls_are_answered_by_the_tracer_on_the_checked_path(ctx):
    s = make_stop("newfstatat", AT_FDCWD, 1, 0x5000, 0, paths={1: b"link"})
    action = handle(s, ctx)
    assert isinstance(action, Emulate) and decision_of(action) is Decision.ALLOWED
    assert ctx.host_calls[-1] == ("newfstatat", (AT_FDCWD, b"/etc/passwd", None, 0), {2: 144})
    assert action.writes == ((0x5000, bytes(144)),)
    s = make_stop("lstat", 1, 0x6000, paths={0: b"link"})
    handle(s, ctx)
    assert ctx.host_calls[-1][1] == (AT_FDCWD, b"/proj/link", None, 0x100)   # not followed
    s = make_stop("readlink", 1, 0x7000, 64, paths={0: b"link"})
    ctx.host_result = 11
    action = handle(s, ctx)
    assert action.result == 11 and action.writes == ((0x7000, bytes(11)),)
    s = make_stop("stat", 1, 0x5000, paths={0: b"/proj/secret/key"})
    assert handle(s, ctx).errno == errno.ENOENT           # decided before any call


def test_after_changing_ids_the_kernel_answers_instead_of_the_tracer(ctx):
    ctx.credentials_changed(1000)
    s = make_stop("stat", 1, 0x5000, paths={0: b"link"})
    action = handle(s, ctx)
    assert isinstance(action, Rewrite) and slot_args(action)[0] == b"/etc/passwd\0"
    assert ctx.host_calls == []


def test_the_program_sees_its_original_cpu_mask(ctx):
    ctx.affinity = frozenset({0, 1, 3})
    s = make_stop("sched_getaffinity", 0, 128, 0x9000)
    ctx.host_result = 8
    action = handle(s, ctx)
    assert action.result == 8 and action.writes == ((0x9000, (0b1011).to_bytes(8, "little")),)
    s = make_stop("sched_setaffinity", 0, 8, 0x9000)
    assert isinstance(handle(s, ctx), Allow)
    s = make_stop("sched_getaffinity", 0, 128, 0x9000)
    assert isinstance(handle(s, ctx), Allow)      # its own choice now: the kernel's
    s = make_stop("sched_getaffinity", 4242, 128, 0x9000)
    assert handle(s, ctx).errno == errno.ESRCH


def test_fd_metadata_writes_follow_the_file_mode(ctx):
    ctx.fds[5] = b"/etc/passwd"
    ctx.fds[6] = b"/proj/file"
    s = make_stop("fchmod", 5, 0o777)
    assert handle(s, ctx).errno == errno.EROFS
    s = make_stop("fchmod", 6, 0o600)
    assert isinstance(handle(s, ctx), Emulate)          # made by the tracer, by path
    assert os.stat("/proj/file").st_mode & 0o777 == 0o600


def test_empty_path_with_at_empty_path_means_the_fd(ctx):
    ctx.fds[5] = b"/etc/passwd"
    s = make_stop("fchownat", 5, 1, 0, 0, 0x1000, paths={1: b""})
    assert handle(s, ctx).errno == errno.EROFS
    s = make_stop("newfstatat", 5, 1, 2, 0x1000, paths={1: b""})
    assert isinstance(handle(s, ctx), Allow)


def test_exec_keeps_the_programs_own_path_bytes(ctx):
    s = make_stop("execve", 1, 2, 3, paths={0: b"link"})
    action = handle(s, ctx)
    assert slot_args(action) == {0: b"link\0"}
    s = make_stop("execve", 1, 2, 3, paths={0: b"/proj/secret/key"})
    assert handle(s, ctx).errno == errno.ENOENT


def test_outside_proc_entries_are_refused(ctx, fs):
    fs.create_file("/proc/4242/mem")
    fs.create_file("/proc/4242/stat")
    fs.create_file("/proc/1000/mem")
    for path, want in ((b"/proc/4242/mem", errno.EACCES), (b"/proc/4242/stat", None),
                       (b"/proc/1000/mem", None)):
        s = make_stop("openat", AT_FDCWD, 1, O_RDONLY, paths={1: path})
        action = handle(s, ctx)
        assert (action.errno if isinstance(action, Deny) else None) == want, path


def test_signals_reach_members_only(ctx):
    ctx.members = {1000, os.getpid()}
    s = make_stop("kill", 4242, 15)
    assert handle(s, ctx).errno == errno.ESRCH
    s = make_stop("kill", os.getpid(), 0)
    assert isinstance(handle(s, ctx), Allow)
    s = make_stop("kill", -1, 0)               # kill(-1): members but the caller, emulated
    action = handle(s, ctx)
    assert isinstance(action, Emulate) and action.result == 0
    ctx.groups[77] = ([os.getpid()], True)      # a group with outsiders in it
    s = make_stop("kill", -77, 0)
    assert isinstance(handle(s, ctx), Emulate)
    ctx.groups[78] = ([], True)
    assert make_stop("kill", -78, 0).entry.handler(make_stop("kill", -78, 0), ctx).errno \
        == errno.ESRCH


def test_core_limit_cannot_be_raised(ctx):
    ctx.memory[0x5000] = struct.pack("<QQ", 2**64 - 1, 2**64 - 1)
    ctx.memory[0x6000] = struct.pack("<QQ", 0, 0)
    s = make_stop("setrlimit", 4, 0x5000)
    assert handle(s, ctx).errno == errno.EPERM
    s = make_stop("setrlimit", 4, 0x6000)
    assert slot_args(handle(s, ctx)) == {1: bytes(16)}


def test_mapping_over_the_slot_area_is_refused(ctx):
    base = 0x6FFF00000000
    s = make_stop("mmap", base + 0x1000, 4096, 3, 0x32, -1, 0)
    assert handle(s, ctx).errno == errno.EPERM
    s = make_stop("mmap", base + 0x1000, 4096, 3, 0x22, -1, 0)   # a hint, not MAP_FIXED
    assert isinstance(handle(s, ctx), Allow)
    s = make_stop("munmap", base - 4096, 8192)
    assert handle(s, ctx).errno == errno.EPERM
    s = make_stop("munmap", base - 8192, 8192)
    assert isinstance(handle(s, ctx), Allow)


def test_unix_socket_paths_follow_the_file_modes(ctx):
    addr = struct.pack("<H", 1) + b"/proj/secret/sock\0"
    ctx.memory[0x7000] = addr
    s = make_stop("connect", 3, 0x7000, len(addr))
    assert handle(s, ctx).errno == errno.ENOENT
    bind_addr = struct.pack("<H", 1) + b"/etc/sock\0"
    ctx.memory[0x8000] = bind_addr
    s = make_stop("bind", 3, 0x8000, len(bind_addr))
    assert handle(s, ctx).errno == errno.EROFS
    abstract = struct.pack("<H", 1) + b"\0name"
    ctx.memory[0x9000] = abstract
    s = make_stop("connect", 3, 0x9000, len(abstract))
    assert slot_args(handle(s, ctx)) == {1: abstract, 2: len(abstract)}


def test_refused_calls_are_refused_without_looking(ctx):
    for name, err in (("reboot", errno.EPERM), ("init_module", errno.EPERM),
                      ("io_uring_setup", errno.ENOSYS), ("ptrace", errno.EPERM)):
        s = make_stop(name, 0)
        action = handle(s, ctx)
        assert isinstance(action, Deny) and action.errno == err and not action.native
