"""The identity section: policy, the handlers of the id family, and /proc/PID/status."""

from __future__ import annotations

import errno
import struct

import pytest

from appvirt.core.action import Allow, Deny, Emulate
from appvirt.errors import PolicyError
from appvirt.handlers import TABLE
from appvirt.handlers.identity import CAP_V1, CAP_V3
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop
from appvirt.virt.identity import VirtualIdentity

U1000 = "identity: {uid: 1000, gid: 100, groups: [27, 4]}\n"


def _ctx(text: str = U1000) -> FakeContext:
    return FakeContext(load_policy_text(text, "p.yaml"))


def test_the_section_forms_and_their_errors():
    root = load_policy_text("identity: virtual-root\n", "p").identity
    assert (root.uid, root.gid, root.groups) == (0, 0, ())
    user = load_policy_text("identity: {uid: 7}\n", "p").identity
    assert (user.uid, user.gid) == (7, 7)                # gid defaults to the uid
    assert load_policy_text("{}", "p").identity is None
    for bad in ("identity: root\n", "identity: {uid: -1}\n", "identity: {uid: 4294967295}\n",
                "identity: {gid: 3}\n", "identity: {uid: 1, groups: [2, 2]}\n"):
        with pytest.raises(PolicyError) as e:
            load_policy_text(bad, "p.yaml")
        assert e.value.line == 1 and e.value.key.startswith("identity"), bad


def test_queries_answer_the_virtual_ids():
    ctx = _ctx()
    for name, want in (("getuid", 1000), ("geteuid", 1000), ("getgid", 100), ("getegid", 100)):
        act = handle(make_stop(name), ctx)
        assert isinstance(act, Emulate) and act.result == want, name
    act = handle(make_stop("getresuid", 0x10, 0x20, 0x30), ctx)
    assert act.writes == ((0x10, struct.pack("<I", 1000)), (0x20, struct.pack("<I", 1000)),
                          (0x30, struct.pack("<I", 1000)))
    act = handle(make_stop("getgroups", 0), ctx)
    assert (act.result, act.writes) == (2, ())
    act = handle(make_stop("getgroups", 8, 0x40), ctx)
    assert act.result == 2 and sorted(struct.unpack("<2I", act.writes[0][1])) == [4, 27]
    act = handle(make_stop("getgroups", 1, 0x40), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EINVAL


def test_changes_follow_the_kernels_rules_and_are_remembered():
    ctx = _ctx()
    act = handle(make_stop("setuid", 0), ctx)            # no CAP_SETUID: refused
    assert isinstance(act, Deny) and act.errno == errno.EPERM
    ctx = _ctx("identity: virtual-root\n")
    assert isinstance(handle(make_stop("setresuid", 1000, 1000, 0), ctx), Emulate)
    assert handle(make_stop("geteuid"), ctx).result == 1000
    assert not ctx.capable(1000, 21)                     # effective set cleared
    assert handle(make_stop("setuid", 0), ctx).result == 0   # back through the saved id
    assert handle(make_stop("getuid"), ctx).result == 1000
    assert handle(make_stop("geteuid"), ctx).result == 0 and ctx.capable(1000, 21)
    assert handle(make_stop("setfsuid", 5), ctx).result == 0   # the previous fsuid
    other = handle(make_stop("geteuid", tid=1001, pid=1001), ctx)
    assert other.result == 0                             # another thread's own credentials


def test_setgroups_reads_the_list_and_needs_cap_setgid():
    ctx = _ctx("identity: virtual-root\n")
    ctx.memory[0x100] = struct.pack("<3I", 10, 20, 30)
    assert handle(make_stop("setgroups", 3, 0x100), ctx).result == 0
    assert handle(make_stop("getgroups", 0), ctx).result == 3
    act = handle(make_stop("setgroups", 3, 0x900), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EFAULT
    assert handle(make_stop("setgroups", 65537, 0x100), ctx).errno == errno.EINVAL
    ctx = _ctx()
    assert handle(make_stop("setgroups", 3, 0x100), ctx).errno == errno.EPERM


def test_capget_and_capset_by_version():
    ctx = _ctx("identity: virtual-root\n")
    ctx.memory[0x100] = struct.pack("<Ii", CAP_V3, 0)
    act = handle(make_stop("capget", 0x100, 0x200), ctx)
    eff, prm, inh, eff1, prm1, inh1 = struct.unpack("<6I", act.writes[0][1])
    start = ctx.policy.identity.start()
    assert eff | eff1 << 32 == start.cap_effective and inh == inh1 == 0
    ctx.memory[0x300] = struct.pack("<Ii", CAP_V1, 0)
    act = handle(make_stop("capget", 0x300, 0x200), ctx)
    assert len(act.writes[0][1]) == 12                   # one 32-bit struct
    # An unknown version: the kernel writes its own and fails, except libcap's probe.
    ctx.memory[0x400] = struct.pack("<Ii", 0x1234, 0)
    act = handle(make_stop("capget", 0x400, 0x200), ctx)
    assert act.result == -errno.EINVAL and act.writes == ((0x400, struct.pack("<I", CAP_V3)),)
    assert handle(make_stop("capget", 0x400, 0), ctx).result == 0
    ctx.memory[0x500] = bytes(24)
    assert handle(make_stop("capset", 0x100, 0x500), ctx).result == 0
    assert not ctx.capable(1000, 0)
    ctx.memory[0x600] = b"\xff" * 24                     # no raising what was dropped
    assert handle(make_stop("capset", 0x100, 0x600), ctx).errno == errno.EPERM
    ctx.memory[0x700] = struct.pack("<Ii", CAP_V3, 4242)
    assert handle(make_stop("capset", 0x700, 0x500), ctx).errno == errno.EPERM


def test_without_the_section_queries_run_natively_and_changes_are_watched():
    plain = load_policy_text("{}", "p")
    traced = TABLE.traced_for(plain)
    assert "getuid" not in traced and "capget" not in traced
    assert "setuid" in traced and "capset" in traced
    ctx = FakeContext(plain)
    act = handle(make_stop("setresuid", 5, 5, 5), ctx)
    assert isinstance(act, Allow) and act.on_exit is not None
    act.on_exit(make_stop("setresuid"), -errno.EPERM)
    assert ctx.same_credentials(1000)                    # a failed change changes nothing
    act.on_exit(make_stop("setresuid"), 0)
    assert not ctx.same_credentials(1000)


def test_capabilities_gate_the_machine_calls():
    ctx = _ctx(U1000 + "hostname: box\n")
    ctx.memory[0x100] = b"newname\0"
    act = handle(make_stop("sethostname", 0x100, 7), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EPERM


def test_status_files_show_the_virtual_credentials():
    pol = load_policy_text(U1000, "p").identity
    ident = VirtualIdentity(pol.start())
    real = (b"Name:\tcat\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\n"
            b"CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n"
            b"CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n")
    out = ident.proc_status(real, 1000).split(b"\n")
    assert out[1] == b"Uid:\t1000\t1000\t1000\t1000" and out[2] == b"Gid:\t100\t100\t100\t100"
    assert out[4] == b"Groups:\t4 27 " and out[6] == b"CapPrm:\t0000000000000000"
    assert out[8] == b"CapBnd:\t000001ffffffffff" and out[0] == b"Name:\tcat"
    assert ident.status_file(b"/proc/1/status", lambda pid: False) is None
    assert ident.status_file(b"/proc/1/stat", lambda pid: True) is None


def test_setting_the_clock_needs_cap_sys_time():
    ctx = _ctx(U1000 + "time: '+1d'\n")
    ctx.memory[0x100] = struct.pack("<qq", 2_000_000_000, 0)
    act = handle(make_stop("clock_settime", 0, 0x100), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EPERM
    ctx = _ctx("identity: virtual-root\ntime: '+1d'\n")
    ctx.memory[0x100] = struct.pack("<qq", 2_000_000_000, 0)
    assert isinstance(handle(make_stop("clock_settime", 0, 0x100), ctx), Emulate)
