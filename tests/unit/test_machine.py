"""Machine state handlers without ptrace: host name, reboot, modules."""

from __future__ import annotations

import errno
import os

import pytest

from appvirt.core.action import Deny, Emulate
from appvirt.errors import PolicyError
from appvirt.policy import load_policy_text
from appvirt.store import Store
from appvirt.store.wellknown import UTS_HOSTNAME, UTS_KEY
from appvirt.testing import FakeContext, handle, make_stop
from appvirt.virt.machinepolicy import RebootAction
from appvirt.virt.uts import DOMAINNAME_AT, NODENAME_AT, VirtualUts

NAME_AT = 0x1000
BUF = 0x2000


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path) as s:
        yield s


def _ctx(policy_text: str, store=None, **memory) -> FakeContext:
    policy = load_policy_text(policy_text)
    ctx = FakeContext(policy, memory={NAME_AT: memory.get("name", b"")})
    if policy.uts.virtual:
        ctx.uts = VirtualUts(policy.uts, store)
    return ctx


def test_policy_sections_and_their_defaults():
    p = load_policy_text("{}")
    assert not p.uts.virtual and p.reboot.action is RebootAction.DENY
    p = load_policy_text("hostname: box\nreboot: {action: restart, max_restarts: 2}\n"
                         "modules: virtual\n")
    assert (p.uts.virtual, p.uts.hostname, p.uts.allow_set) == (True, "box", True)
    assert (p.reboot.action, p.reboot.max_restarts) == (RebootAction.RESTART, 2)
    p = load_policy_text("hostname: {domain: lan, set: deny}\n")
    assert (p.uts.hostname, p.uts.domainname, p.uts.allow_set) == (None, "lan", False)


@pytest.mark.parametrize("text, where", [
    ("hostname: " + "x" * 65, "hostname"),
    ("hostname: {name: a, sett: allow}", "hostname"),
    ("reboot: sometimes", "reboot"),
    ("reboot: {action: restart, max_restarts: -1}", "reboot"),
    ("modules: load", "modules"),
])
def test_malformed_machine_sections_are_one_line_errors(text, where):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    assert f"p.yaml:1: {where}" in str(e.value) and "\n" not in str(e.value)


def test_sethostname_is_refused_without_a_hostname_section():
    ctx = _ctx("{}", name=b"evil")
    act = handle(make_stop("sethostname", NAME_AT, 4), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EPERM
    assert not make_stop("uname", BUF).entry.enabled(ctx.policy)     # uname runs natively


def test_sethostname_is_remembered_in_the_store_and_reported_by_uname(store):
    ctx = _ctx("hostname: first", store, name=b"second\0junk")
    assert ctx.uts.hostname == "first"
    act = handle(make_stop("sethostname", NAME_AT, 11), ctx)
    assert isinstance(act, Emulate) and act.result == 0
    assert store.lookup(UTS_KEY, UTS_HOSTNAME).data == "second"
    act = handle(make_stop("uname", BUF), ctx)
    assert isinstance(act, Emulate) and act.writes[0][0] == BUF
    raw = act.writes[0][1]
    assert raw[NODENAME_AT:NODENAME_AT + 7] == b"second\0"
    # what was set wins over the policy's name on the next run
    assert VirtualUts(load_policy_text("hostname: first").uts, store).hostname == "second"
    assert ctx.uts.proc_file(UTS_HOSTNAME) == b"second\n"


@pytest.mark.parametrize("length, err", [(65, errno.EINVAL), (-1, errno.EINVAL)])
def test_sethostname_checks_the_length_like_the_kernel(length, err):
    ctx = _ctx("hostname: a", name=b"x" * 80)
    act = handle(make_stop("sethostname", NAME_AT, length), ctx)
    assert isinstance(act, Deny) and act.errno == err


def test_setting_can_be_denied_and_needs_the_capability_of_a_virtual_identity():
    ctx = _ctx("hostname: {name: a, set: deny}", name=b"b")
    assert handle(make_stop("sethostname", NAME_AT, 1), ctx).errno == errno.EPERM
    ctx = _ctx("hostname: a", name=b"b")
    ctx.caps = frozenset()
    assert handle(make_stop("sethostname", NAME_AT, 1), ctx).errno == errno.EPERM
    assert ctx.uts.hostname == "a"


def test_bad_name_pointer_is_efault():
    ctx = _ctx("hostname: a")
    act = handle(make_stop("setdomainname", 0xdead0000, 3), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EFAULT


def test_uname_keeps_the_kernels_other_fields():
    uts = VirtualUts(load_policy_text("hostname: {name: box, domain: lan}").uts, None)
    raw = b"".join(f.encode().ljust(65, b"\0") for f in os.uname()) + b"(none)".ljust(65, b"\0")
    out = uts.patch_utsname(raw)
    assert out[:65] == raw[:65] and out[130:325] == raw[130:325]
    assert out[DOMAINNAME_AT:DOMAINNAME_AT + 4] == b"lan\0"


def test_reading_a_machine_file_is_redirected_to_its_spool_copy(tmp_path):
    ctx = _ctx("hostname: a")
    spool = tmp_path / "1"
    spool.write_bytes(b"a\n")
    ctx.machine_files[b"/proc/sys/kernel/hostname"] = os.fsencode(spool)
    stop = make_stop("openat", -100, 0x3000, os.O_RDONLY,
                     paths={1: b"/proc/sys/kernel/hostname"})
    act = handle(stop, ctx)
    assert act.decision.value == "emulated"
    assert act.args[1][1].data.rstrip(b"\0") == os.fsencode(spool)
    act.on_exit(stop, 3)
    assert not spool.exists()             # the program's fd keeps the content alive


M1, M2 = 0xFEE1DEAD, 0x28121969


@pytest.mark.parametrize("policy, cmd, event", [
    ("reboot: restart", 0x01234567, "RESTART"),
    ("reboot: restart", 0xA1B2C3D4, "RESTART"),
    ("reboot: restart", 0x4321FEDC, "POWER_OFF"),
    ("reboot: restart", 0xCDEF0123, "POWER_OFF"),
    ("reboot: exit", 0x01234567, "POWER_OFF"),
])
def test_reboot_commands_end_the_machine_as_the_policy_says(policy, cmd, event):
    ctx = _ctx(policy)
    act = handle(make_stop("reboot", M1, M2, cmd), ctx)
    assert isinstance(act, Emulate)
    assert [e.name for e in ctx.power_events] == [event]


@pytest.mark.parametrize("args, err", [
    ((M1, M2, 0x45584543), errno.EINVAL),        # kexec: no image loaded
    ((M1, 1234, 0x01234567), errno.EINVAL),      # bad magic
    ((0xDEAD, M2, 0x01234567), errno.EINVAL),
    ((M1, M2, 0x7777), errno.EINVAL),
])
def test_reboot_validates_like_the_kernel(args, err):
    ctx = _ctx("reboot: exit")
    act = handle(make_stop("reboot", *args), ctx)
    assert isinstance(act, Deny) and act.errno == err and not ctx.power_events


def test_reboot_is_refused_by_default_and_without_cap_sys_boot():
    ctx = _ctx("{}")
    assert handle(make_stop("reboot", M1, M2, 0x01234567), ctx).errno == errno.EPERM
    ctx = _ctx("reboot: exit")
    ctx.caps = frozenset({21})
    assert handle(make_stop("reboot", M1, M2, 0x01234567), ctx).errno == errno.EPERM
    assert not ctx.power_events
    act = handle(make_stop("reboot", M1, M2, 0x89ABCDEF), _ctx("reboot: exit"))
    assert isinstance(act, Emulate)                # Ctrl-Alt-Del setting: nothing to do


@pytest.mark.parametrize("name", sorted(p for p in os.listdir("policies")
                                        if p.endswith(".yaml")))
def test_every_shipped_policy_loads(name):
    from appvirt.policy import load_policy
    assert load_policy(os.path.join("policies", name)).app
