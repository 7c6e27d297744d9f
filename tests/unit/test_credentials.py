"""The virtual credentials model: hand-written cases, then a differential test that replays
random call sequences on the real kernel (in a forked child, as root) and on the model."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import time
import traceback
from dataclasses import replace
from functools import reduce
from operator import or_
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from appvirt.virt.credentials import (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FS_SET, CAP_LAST_CAP,
                                      CAP_LINUX_IMMUTABLE, CAP_MAC_OVERRIDE, CAP_SETGID,
                                      CAP_SETPCAP, CAP_SETUID, CAP_VALID_MASK, NGROUPS_MAX,
                                      NO_ID, Credentials)

EPERM, EINVAL = -errno.EPERM, -errno.EINVAL
ALL = CAP_VALID_MASK
ROOT = Credentials.root()


def bit(cap: int) -> int:
    return 1 << cap


def ids(c: Credentials) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (c.ruid, c.euid, c.suid, c.fsuid), (c.rgid, c.egid, c.sgid, c.fsgid)


# --- hand-written cases --------------------------------------------------------------------

def test_root_and_user() -> None:
    assert ROOT.cap_effective == ROOT.cap_permitted == ALL and ROOT.cap_inheritable == 0
    assert ROOT.capable(CAP_SETUID) and ROOT.capable(CAP_LAST_CAP)
    u = Credentials.user(1000, 100, [27, 4, 27])
    assert ids(u) == ((1000,) * 4, (100,) * 4) and u.groups == (4, 27, 27)
    assert u.cap_permitted == u.cap_effective == 0 and not u.capable(CAP_SETUID)
    assert Credentials.user(0, 0).cap_effective == ALL


def test_setuid_from_root_drops_everything_for_good() -> None:
    c, r = ROOT.setuid(1000)
    assert r == 0 and ids(c)[0] == (1000,) * 4 and c.cap_permitted == c.cap_effective == 0
    assert c.setuid(0) == (c, EPERM)
    assert ROOT.setuid(NO_ID) == (ROOT, EINVAL) and ROOT.setgid(NO_ID) == (ROOT, EINVAL)
    assert ROOT.setuid(-1) == (ROOT, EINVAL)            # a raw register value, truncated


def test_keep_caps_keeps_permitted_only() -> None:
    c, _ = replace(ROOT, keep_caps=True).setuid(1000)
    assert c.cap_permitted == ALL and c.cap_effective == 0


def test_drop_to_user_and_back_through_saved_uid() -> None:
    c, r = ROOT.setresuid(NO_ID, 1000, NO_ID)           # seteuid(1000)
    assert r == 0 and ids(c)[0] == (0, 1000, 0, 1000)
    assert c.cap_effective == 0 and c.cap_permitted == ALL  # euid left 0: pE cleared
    c, r = c.setresuid(1000, NO_ID, NO_ID)              # now only the saved uid is 0
    assert r == 0 and ids(c)[0] == (1000, 1000, 0, 1000) and c.cap_permitted == ALL
    assert c.setuid(1001)[1] == EPERM
    c, r = c.setuid(0)                                   # unprivileged, but 0 is the saved uid
    assert r == 0 and ids(c)[0] == (1000, 0, 0, 0) and c.cap_effective == ALL  # pE = pP again


def test_setreuid_saved_uid_rule() -> None:
    c, _ = ROOT.setreuid(NO_ID, 1000)       # euid moves off the old real uid: suid follows
    assert ids(c)[0] == (0, 1000, 1000, 1000) and c.cap_permitted == ALL  # ruid still 0
    u = replace(Credentials.user(1000, 1000), suid=1001)
    c, r = u.setreuid(NO_ID, 1001)
    assert r == 0 and ids(c)[0] == (1000, 1001, 1001, 1001)
    c, r = c.setreuid(NO_ID, 1000)          # back to the real uid: saved uid stays
    assert r == 0 and ids(c)[0] == (1000, 1000, 1001, 1000)
    assert u.setreuid(1001, NO_ID)[1] == EPERM          # a new ruid must be the ruid or euid
    c, r = u.setreuid(1000, NO_ID)                       # ruid given: suid = euid, always
    assert r == 0 and ids(c)[0] == (1000, 1000, 1000, 1000)


def test_setres_and_setre_gid() -> None:
    u = Credentials.user(1000, 100)
    assert u.setresgid(NO_ID, NO_ID, NO_ID) == (u, 0)
    assert u.setresgid(100, 5, NO_ID)[1] == EPERM and u.setgid(5)[1] == EPERM
    c, r = ROOT.setresgid(1, 2, 3)
    assert r == 0 and ids(c)[1] == (1, 2, 3, 2)
    c, r = c.setregid(NO_ID, 3)
    assert r == 0 and ids(c)[1] == (1, 3, 3, 3)
    c, r = c.setgid(7)                                    # still CAP_SETGID: all four
    assert ids(c)[1] == (7,) * 4


def test_setfsuid_refuses_silently_and_moves_fs_caps() -> None:
    u = Credentials.user(1000, 1000)
    assert u.setfsuid(0) == (u, 1000) and u.setfsgid(0) == (u, 1000)
    assert ROOT.setfsuid(NO_ID) == (ROOT, 0)             # the usual way to read fsuid
    c, r = ROOT.setfsuid(1000)
    assert r == 0 and c.fsuid == 1000 and c.cap_effective == ALL & ~CAP_FS_SET
    assert not c.capable(CAP_CHOWN) and not c.capable(CAP_LINUX_IMMUTABLE)
    assert not c.capable(CAP_MAC_OVERRIDE) and c.capable(CAP_SETUID)
    c2, r = c.setfsuid(0)
    assert r == 1000 and c2 == ROOT
    # a setres* call moves fsuid back to 0 but does not restore the FS set
    c3, _ = c.setresuid(NO_ID, 0, NO_ID)
    assert c3.fsuid == 0 and c3.cap_effective == ALL & ~CAP_FS_SET
    # but setresuid(-1, -1, -1) is the kernel's no-op shortcut: fsuid stays apart
    assert c.setresuid(NO_ID, NO_ID, NO_ID) == (c, 0) and c.setresgid(-1, -1, -1)[0] == c
    assert c.setreuid(NO_ID, NO_ID)[0].fsuid == 0       # setreuid has no such shortcut


def test_groups() -> None:
    c, r = ROOT.setgroups([5, 3, 3, 0xFFFFFFFE])
    assert r == 0 and c.groups == (3, 3, 5, 0xFFFFFFFE)
    assert c.getgroups(0) == (4, []) and c.getgroups(4) == (4, [3, 3, 5, 0xFFFFFFFE])
    assert c.getgroups(9) == (4, [3, 3, 5, 0xFFFFFFFE])
    assert c.getgroups(3) == (EINVAL, []) and c.getgroups(-1) == (EINVAL, [])
    assert c.getgroups(0xFFFFFFFF) == (EINVAL, []) and ROOT.getgroups(1) == (0, [])
    assert ROOT.setgroups([1, NO_ID])[1] == EINVAL
    assert ROOT.setgroups(range(NGROUPS_MAX + 1))[1] == EINVAL
    assert ROOT.setgroups(range(NGROUPS_MAX))[1] == 0
    u = Credentials.user(1000, 1000)
    assert u.setgroups([])[1] == EPERM and u.setgroups(range(NGROUPS_MAX + 1))[1] == EPERM


def test_capset() -> None:
    c, r = ROOT.capset(bit(CAP_SETUID), bit(CAP_SETUID) | bit(CAP_CHOWN), bit(CAP_LAST_CAP))
    assert r == 0 and (c.cap_effective, c.cap_permitted) == (bit(CAP_SETUID),
                                                             bit(CAP_SETUID) | bit(CAP_CHOWN))
    assert c.capset(0, ALL, 0)[1] == EPERM                       # no new permitted
    assert c.capset(bit(CAP_DAC_OVERRIDE), bit(CAP_CHOWN), 0)[1] == EPERM  # pE within pP'
    # without CAP_SETPCAP, pI' within pI | pP
    assert c.capset(0, 0, bit(CAP_CHOWN) | bit(CAP_LAST_CAP))[1] == 0
    assert c.capset(0, 0, bit(CAP_DAC_OVERRIDE))[1] == EPERM
    c, _ = ROOT.capset(bit(CAP_SETPCAP), bit(CAP_SETPCAP), 0)    # with it, anything in bset
    assert c.capset(0, 0, ALL)[1] == 0
    assert replace(c, cap_bounding=ALL & ~1).capset(0, 0, ALL)[1] == EPERM
    c, r = ROOT.capset(2**64 - 1, 2**64 - 1, 0)                   # bits past the last cap go
    assert r == 0 and c == ROOT


def test_after_exec() -> None:
    assert ROOT.after_exec() == ROOT
    low, _ = replace(ROOT, keep_caps=True, cap_inheritable=1).capset(0, 0, 1)
    assert low.after_exec() == replace(ROOT, cap_inheritable=1)   # ruid 0: back to bset
    c, _ = ROOT.setresuid(0, 1000, 1001)
    e = c.after_exec()
    assert ids(e)[0] == (0, 1000, 1000, 1000)
    assert e.cap_permitted == ALL and e.cap_effective == 0        # real root only
    u = Credentials.user(1000, 1000, [5])
    assert replace(u, keep_caps=True).after_exec() == u
    s = u.after_exec(setuid_owner=0, setgid_group=42)
    assert ids(s) == ((1000, 0, 0, 0), (1000, 42, 42, 42)) and s.cap_effective == ALL
    s = u.after_exec(setuid_owner=1001)
    assert ids(s)[0] == (1000, 1001, 1001, 1001) and s.cap_permitted == 0


# --- the differential test against the kernel ----------------------------------------------

NR = dict(setuid=105, setgid=106, setreuid=113, setregid=114, setresuid=117, setresgid=119,
          setfsuid=122, setfsgid=123, setgroups=116, getgroups=115, capget=125, capset=126,
          getresuid=118, getresgid=120, prctl=157)
PR_SET_KEEPCAPS, PR_GET_SECUREBITS = 8, 27
CAP_V3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _sys(name: str, *args: object) -> int:
    a = [ctypes.c_ulong(x & 2**64 - 1) if isinstance(x, int) else x for x in args]
    r = _libc.syscall(ctypes.c_long(NR[name]), *a)
    return -ctypes.get_errno() if r == -1 else r


def _capset(e: int, p: int, i: int) -> int:
    data = (_CapData * 2)(*(_CapData(e >> k & 0xFFFFFFFF, p >> k & 0xFFFFFFFF, i >> k & 0xFFFFFFFF)
                            for k in (0, 32)))
    return _sys("capset", ctypes.byref(_CapHeader(CAP_V3, 0)), data)


def _snapshot() -> list[int]:
    """What the kernel says now, in the order of _model_snapshot()."""
    u, g = (ctypes.c_uint32 * 3)(), (ctypes.c_uint32 * 3)()
    _sys("getresuid", *(ctypes.byref(u, 4 * k) for k in range(3)))
    _sys("getresgid", *(ctypes.byref(g, 4 * k) for k in range(3)))
    data = (_CapData * 2)()
    _sys("capget", ctypes.byref(_CapHeader(CAP_V3, 0)), data)
    caps = [getattr(data[0], f) | getattr(data[1], f) << 32
            for f in ("effective", "permitted", "inheritable")]
    buf = (ctypes.c_uint32 * 64)()
    n = _sys("getgroups", 64, buf)
    short = _sys("getgroups", max(n - 1, 0), buf)       # a buffer one short of the count
    return [*u, _sys("setfsuid", NO_ID), *g, _sys("setfsgid", NO_ID), *caps, short, *buf[:n]]


def _model_snapshot(c: Credentials) -> list[int]:
    return [c.ruid, c.euid, c.suid, c.fsuid, c.rgid, c.egid, c.sgid, c.fsgid,
            c.cap_effective, c.cap_permitted, c.cap_inheritable,
            c.getgroups(max(len(c.groups) - 1, 0))[0], *c.groups]


def _kernel_op(name: str, args: tuple) -> tuple[int, list[int]]:
    if name == "setgroups":
        return _sys(name, len(args[0]), (ctypes.c_uint32 * max(1, len(args[0])))(*args[0])), []
    if name == "setgroups_big":                 # refused before the (NULL) list is read
        return _sys("setgroups", NGROUPS_MAX + 1, None), []
    if name == "getgroups":
        buf = (ctypes.c_uint32 * 64)()          # more than any list the test sets
        r = _sys(name, args[0], buf)
        return r, (list(buf[:r]) if r > 0 and 0 < args[0] < 2**31 else [])
    if name == "capset":
        return _capset(*args), []
    if name == "keepcaps":
        return _sys("prctl", PR_SET_KEEPCAPS, args[0], 0, 0, 0), []
    return _sys(name, *args), []


def _model_op(c: Credentials, name: str, args: tuple) -> tuple[Credentials, int, list[int]]:
    if name == "getgroups":
        return (c, *c.getgroups(args[0]))
    if name == "setgroups_big":
        return (*c.setgroups(range(NGROUPS_MAX + 1)), [])
    if name == "keepcaps":
        return replace(c, keep_caps=bool(args[0])), 0, []
    return (*getattr(c, name)(*args), [])


def _child(wfd: int, ops: list[tuple[str, tuple]], exec_after: bool) -> None:
    """Runs in the forked child: never returns into pytest."""
    code = 0
    try:
        for op in (("setgroups", ([],)), ("setresgid", (0, 0, 0)), ("setresuid", (0, 0, 0)),
                   ("setfsgid", (0,)), ("setfsuid", (0,)), ("keepcaps", (0,))):
            _kernel_op(*op)
        os.write(wfd, (" ".join(map(str, _snapshot())) + "\n").encode())
        for name, args in ops:
            r, extra = _kernel_op(name, args)
            line = [r, len(extra), *extra, *_snapshot()]
            os.write(wfd, (" ".join(map(str, line)) + "\n").encode())
        if exec_after:
            os.dup2(wfd, 1)
            os.execv("/bin/cat", ["cat", "/proc/self/status"])
    except BaseException:
        code = 1
        os.write(wfd, ("ERROR " + traceback.format_exc()).encode())
    finally:
        os._exit(code)


def _reap(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def run_on_kernel(ops: list[tuple[str, tuple]], exec_after: bool,
                  timeout: float = 10.0) -> str:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(wfd, ops, exec_after)
    os.close(wfd)
    deadline = time.monotonic() + timeout
    out = b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([rfd], [], [], left)[0]:
                if not (chunk := os.read(rfd, 65536)):
                    break
                out += chunk
        else:
            raise TimeoutError(f"kernel child gave no EOF in {timeout}s: {out!r}")
    finally:
        os.close(rfd)
        _reap(pid, deadline + 2)
    return out.decode()


def _host_start() -> Credentials | None:
    """root() with this host's capability sets (the bounding set may lack some), or None when
    the kernel cannot serve as the reference here."""
    if os.geteuid() != 0 or _libc.prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) != 0:
        return None
    if Path("/proc/self/uid_map").read_text().split() != ["0", "0", "4294967295"]:
        return None                              # not the initial user namespace
    st_ = dict(ln.split(":", 1) for ln in Path("/proc/self/status").read_text().splitlines())
    cap = {k: int(st_[k], 16) for k in ("CapEff", "CapPrm", "CapInh", "CapBnd")}
    if cap["CapEff"] & bit(CAP_SETUID) == 0 or cap["CapEff"] & bit(CAP_SETGID) == 0:
        return None
    return replace(ROOT, cap_effective=cap["CapEff"], cap_permitted=cap["CapPrm"],
                   cap_inheritable=cap["CapInh"], cap_bounding=cap["CapBnd"])


HOST_START = _host_start()
needs_root = pytest.mark.skipif(HOST_START is None,
                                reason="needs root in the initial user namespace")

def _or(masks: list[int]) -> int:
    return reduce(or_, masks, 0)


_POOL = (0, 1, 1000, 1001, NO_ID)
# an id from the pool, a random one, or (resolved later) the caller's current real, effective,
# saved or fs id, which is what the permission rules look at
ID = st.integers(0, 4).flatmap(lambda k: st.integers(0, 2**32 - 1) if k == 4 else
                               st.sampled_from("resf") if k >= 2 else st.sampled_from(_POOL))
KEEP = st.just(NO_ID) | st.sampled_from("resf") | ID     # "unchanged" or a current id: often
_MASK_ATOM = st.one_of(
    st.sampled_from([0, ALL, CAP_FS_SET, 2**64 - 1]),
    st.sampled_from([CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_CHOWN, CAP_DAC_OVERRIDE,
                     CAP_LINUX_IMMUTABLE, 24, CAP_MAC_OVERRIDE, CAP_LAST_CAP]).map(bit),
    st.integers(0, 2**64 - 1))
MASK = st.lists(_MASK_ATOM, max_size=3).map(_or)
_ARGS = {
    **{n: st.tuples(ID) for n in ("setuid", "setgid", "setfsuid", "setfsgid")},
    # all "unchanged" on its own too: setre*id(-1, -1) still resets fs, setres*id does not
    **{n: st.just((NO_ID,) * 2) | st.tuples(KEEP, KEEP) for n in ("setreuid", "setregid")},
    **{n: st.just((NO_ID,) * 3) | st.tuples(KEEP, KEEP, KEEP)
       for n in ("setresuid", "setresgid")},
    "setgroups": st.tuples(st.lists(ID, max_size=5)),
    "setgroups_big": st.just(()),
    # a size, or (resolved later) one around the current count
    "getgroups": st.tuples(st.sampled_from([0, 1, 65536, NO_ID, "-1", "+0", "+1"])),
    "capset": st.tuples(MASK, MASK, MASK),
    # (resolved later) drop some of pE, pP, pI, then add some to pI
    "capset_rel": st.tuples(MASK, MASK, MASK, MASK),
    "keepcaps": st.tuples(st.integers(0, 1)),
}
# one_of() would favour the ops with the simplest arguments; pick the name evenly instead,
# the uid calls (with their capability rules) and capset_rel (raising pI with CAP_SETPCAP
# needs a lowered pP first) twice as often
_TWICE = ("setuid", "setreuid", "setresuid", "setfsuid", "capset_rel")
OP = st.sampled_from([*_ARGS, *_TWICE]).flatmap(lambda n: st.tuples(st.just(n), _ARGS[n]))

# A prelude to a mixed state (ids apart, fs ids apart, caps without root, a lowered pP,
# several groups), so that the ops after it meet the interesting rules often; NO_ID first in
# the pool, so that a failure shrinks to no-ops there.
_P = st.sampled_from([NO_ID, 0, 1000, 1001])
_FEW = st.sampled_from([CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_CHOWN, CAP_LINUX_IMMUTABLE])
_SPARSE = st.lists(_FEW.map(bit), max_size=2).map(_or)
PRELUDE = st.tuples(
    st.tuples(st.just("setgroups"),
              st.tuples(st.lists(_P.filter(lambda g: g != NO_ID), max_size=4))),
    st.tuples(st.just("setresgid"), st.tuples(_P, _P, _P)),
    st.tuples(st.just("capset_rel"), st.tuples(_SPARSE, _FEW.map(bit), _SPARSE, _SPARSE)),
    st.tuples(st.just("keepcaps"), st.tuples(st.integers(0, 1))),
    st.tuples(st.just("setresuid"), st.tuples(_P, _P, _P)),
    st.tuples(st.just("setfsgid"), st.tuples(_P)),
    st.tuples(st.just("setfsuid"), st.tuples(_P)),
).map(list)


def _resolve(c: Credentials, name: str, args: tuple) -> tuple[str, tuple]:
    """Turn an op relative to the model's current state into a plain call."""
    if name == "capset_rel":
        de, dp, di, ai = args
        p = c.cap_permitted & ~dp
        return "capset", (p & ~de, p, c.cap_inheritable & ~di | ai)
    if name == "getgroups" and isinstance(args[0], str):
        return name, (max(0, len(c.groups) + int(args[0])),)
    ref = dict(zip("resf", ids(c)[0 if "uid" in name else 1]))

    def fix(a: int | str) -> int:
        return ref[a] if isinstance(a, str) else a
    return name, tuple([fix(x) for x in a] if isinstance(a, list) else fix(a) for a in args)


def _status(text: str) -> dict[str, str]:
    return dict(ln.split(":\t", 1) for ln in text.splitlines() if ":\t" in ln)


@needs_root
@settings(max_examples=200, deadline=None)
@given(PRELUDE, st.lists(OP, min_size=2, max_size=8), st.booleans())
def test_model_matches_kernel(prelude: list[tuple[str, tuple]], ops: list[tuple[str, tuple]],
                              exec_after: bool) -> None:
    assert HOST_START is not None
    model, expected, resolved = HOST_START, [_model_snapshot(HOST_START)], []
    for name, args in prelude + ops:
        name, args = _resolve(model, name, args)
        model, r, extra = _model_op(model, name, args)
        resolved.append((name, args))
        expected.append([r, len(extra), *extra, *_model_snapshot(model)])
    out = run_on_kernel(resolved, exec_after)
    assert "ERROR" not in out, out
    lines = out.splitlines()
    assert len(lines) >= len(expected), out
    for i, want in enumerate(expected):
        got = [int(x) for x in lines[i].split()]
        assert got == want, f"after {resolved[:i]}:\n kernel {got}\n model  {want}"
    if exec_after:
        e, status = model.after_exec(), _status("\n".join(lines[len(expected):]))
        assert status["Uid"].split() == [str(x) for x in ids(e)[0]], (resolved, status)
        assert status["Gid"].split() == [str(x) for x in ids(e)[1]], (resolved, status)
        assert status["Groups"].split() == [str(x) for x in e.groups], (resolved, status)
        for key, want in (("CapEff", e.cap_effective), ("CapPrm", e.cap_permitted),
                          ("CapInh", e.cap_inheritable)):
            assert int(status[key], 16) == want, (key, resolved, status)
