"""Network rules: address decoding, matching, policy errors, handler decisions."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, strategies as st

from appvirt.core.action import Allow, Decision, Deny, Emulate, Rewrite, SlotData, decision_of
from appvirt.errors import PolicyError
from appvirt.net.addresses import AddrKind, decode, encode_like
from appvirt.net.rules import Direction, NetAction
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop


def v4(ip: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + \
        socket.inet_aton(ip) + bytes(8)


def v6(ip: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET6) + struct.pack(">H", port) + bytes(4) + \
        socket.inet_pton(socket.AF_INET6, ip) + bytes(4)


def test_decoding():
    a = decode(v4("10.1.2.3", 443))
    assert (a.kind, str(a.ip), a.port, str(a)) == (AddrKind.IP, "10.1.2.3", 443, "10.1.2.3:443")
    m = decode(v6("::ffff:127.0.0.2", 80))             # IPv4-mapped counts as IPv4 (#32)
    assert (m.ip.version, str(m.ip)) == (4, "127.0.0.2")
    assert decode(struct.pack("<H", 1) + b"/run/x.sock\0").path == b"/run/x.sock"
    assert decode(struct.pack("<H", 1) + b"\0abstract").kind is AddrKind.UNIX_ABSTRACT
    assert decode(struct.pack("<H", 1)).kind is AddrKind.UNIX_UNNAMED


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_redirect_encoding_round_trips_for_both_socket_families(ip, port):
    assert decode(encode_like(v4("1.1.1.1", 1), socket.AF_INET, ip, port)).ip == ip
    back = decode(encode_like(v6("::1", 1), socket.AF_INET6, ip, port))
    assert (back.ip, back.port, back.family) == (ip, port, socket.AF_INET6)


POLICY = load_policy_text("""
network:
  preset: none
  rules:
    - {to: [10.0.0.0/8, "2001:db8::/32"], ports: "80, 443, 8000-8999", action: allow}
    - {to: 10.9.0.0/16, action: deny, errno: EACCES}
    - {to: 127.0.0.4, ports: 80, action: redirect, redirect: "127.0.0.5:8080"}
    - {unix: /run/dbus/**, action: deny}
    - {to: any, ports: 1-1023, direction: bind, action: deny}
""", "p.yaml")


@pytest.mark.parametrize("raw, direction, action, rule", [
    (v4("10.1.1.1", 443), Direction.CONNECT, NetAction.ALLOW, "network.rules[0]"),
    (v4("10.1.1.1", 22), Direction.CONNECT, NetAction.DENY, "network.default"),
    (v4("10.9.1.1", 443), Direction.CONNECT, NetAction.DENY, "network.rules[1]"),
    (v6("2001:db8::5", 8080), Direction.CONNECT, NetAction.ALLOW, "network.rules[0]"),
    (v4("127.0.0.9", 5), Direction.CONNECT, NetAction.ALLOW, "network.preset[loopback]"),
    (v6("::1", 5), Direction.CONNECT, NetAction.ALLOW, "network.preset[loopback]"),
    (v4("127.0.0.4", 80), Direction.CONNECT, NetAction.REDIRECT, "network.rules[2]"),
    (v4("127.0.0.1", 80), Direction.BIND, NetAction.DENY, "network.rules[4]"),
    (v4("127.0.0.1", 8080), Direction.BIND, NetAction.ALLOW, "network.preset[loopback]"),
    (struct.pack("<H", 1) + b"/run/dbus/system_bus_socket\0", Direction.CONNECT,
     NetAction.DENY, "network.rules[3]"),
    (struct.pack("<H", 1) + b"/tmp/x\0", Direction.CONNECT, NetAction.ALLOW,
     "network.unix-default"),
])
def test_later_rules_win_and_the_preset_allows_loopback_only(raw, direction, action, rule):
    v = POLICY.network.decide(direction, decode(raw))
    assert (v.action, v.rule_id) == (action, rule)


def test_deny_errnos():
    assert POLICY.network.decide(Direction.CONNECT, decode(v4("10.9.0.1", 1))).errno == \
        errno.EACCES
    assert POLICY.network.decide(Direction.CONNECT, decode(v4("8.8.8.8", 53))).errno == \
        errno.ECONNREFUSED


@pytest.mark.parametrize("text, words", [
    ("network: {rules: [{to: 10.0.0.300, action: deny}]}", "network.rules[0].to"),
    ("network: {rules: [{to: 1.2.3.4, ports: 70000, action: deny}]}", "network.rules[0].ports"),
    ("network: {rules: [{to: 1.2.3.4, ports: '9-3', action: deny}]}", "bad port range"),
    ("network: {rules: [{to: 1.2.3.4, action: redirect}]}", "needs 'redirect"),
    ("network: {rules: [{to: 1.2.3.4, action: redirect, redirect: nope}]}", "address and port"),
    ("network: {rules: [{to: 1.2.3.4, unix: /x, action: deny}]}", "either 'to'"),
    ("network: {preset: closed}", "'closed' is not allowed"),
    ("network: {rules: [{to: 1.2.3.4, action: allow, on: bind}]}", "unknown key"),
])
def test_bad_network_rules(text, words):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text + "\n", "p.yaml")
    assert words in str(e.value) and str(e.value).startswith("p.yaml:1: network")


def _ctx(fs=None) -> FakeContext:
    return FakeContext(POLICY)


def test_connect_handler_denies_redirects_and_copies(fs):
    ctx = FakeContext(POLICY)
    ctx.memory[0x1000] = v4("10.9.1.1", 80)
    s = make_stop("connect", 3, 0x1000, 16)
    action = handle(s, ctx)
    assert isinstance(action, Deny) and action.errno == errno.EACCES
    assert action.note.address == "10.9.1.1:80" and "action: allow" in action.note.hint
    ctx.memory[0x1000] = v4("127.0.0.4", 80)
    action = handle(s, ctx)
    assert isinstance(action, Rewrite) and decision_of(action) is Decision.REDIRECTED
    (arg, blob), (larg, length) = action.args
    assert (arg, larg, length) == (1, 2, 16) and decode(blob.data).port == 8080
    assert ctx.peers[3] == v4("127.0.0.4", 80) and action.note.target == "127.0.0.5:8080"
    ctx.memory[0x1000] = v4("127.0.0.3", 9)
    action = handle(s, ctx)
    assert isinstance(action, Rewrite) and action.args[0][1].data == v4("127.0.0.3", 9)


def test_sendmsg_copies_the_header_with_its_name_into_the_slot(fs):
    ctx = FakeContext(POLICY)
    hdr = struct.pack("<QI4xQQQQI4x", 0x2000, 16, 0x3000, 1, 0, 0, 0)
    ctx.memory[0x1000] = hdr
    ctx.memory[0x2000] = v4("127.0.0.7", 53)
    s = make_stop("sendmsg", 3, 0x1000, 0)
    action = handle(s, ctx)
    (arg, blob), = action.args
    assert arg == 1 and blob.refs == ((0, 1),) and action.extra == (SlotData(v4("127.0.0.7", 53)),)
    name, namelen, iov = struct.unpack_from("<QI4xQ", blob.data)
    assert (name, namelen, iov) == (0, 16, 0x3000)      # name patched in by the tracer
    ctx.memory[0x2000] = v4("8.8.8.8", 53)
    assert handle(s, ctx).errno == errno.ECONNREFUSED


def test_sendmmsg_becomes_one_sendmsg(fs):
    ctx = FakeContext(POLICY)
    ctx.memory[0x1000] = struct.pack("<QI4xQQQQI4x", 0, 0, 0x3000, 1, 0, 0, 0)
    s = make_stop("sendmmsg", 3, 0x1000, 2, 0x40)
    action = handle(s, ctx)
    assert action.nr is not None and dict(action.args)[2] == 0x40
    done = action.on_exit(s, 12)
    assert done.result == 1 and done.writes == ((0x1000 + 56, struct.pack("<I", 12)),)


def test_getpeername_of_a_redirected_socket(fs):
    ctx = FakeContext(POLICY)
    ctx.peers[4] = v4("127.0.0.4", 80)
    ctx.memory[0x5000] = struct.pack("<I", 128)
    s = make_stop("getpeername", 4, 0x4000, 0x5000)
    action = handle(s, ctx)
    assert isinstance(action, Emulate)
    assert action.writes == ((0x4000, v4("127.0.0.4", 80)), (0x5000, struct.pack("<I", 16)))
    assert isinstance(make_stop("getpeername", 5, 1, 2).entry.handler(
        make_stop("getpeername", 5, 1, 2), ctx), Allow)


def test_listen_checks_the_local_address(fs):
    ctx = FakeContext(POLICY)
    ctx.socket_names[3] = v4("0.0.0.0", 80)
    s = make_stop("listen", 3, 5)
    assert handle(s, ctx).errno == errno.EACCES
    ctx.socket_names[3] = v4("127.0.0.1", 45000)
    assert isinstance(handle(s, ctx), Allow)
    assert ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network("127.0.0.0/8")
