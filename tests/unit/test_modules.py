"""Virtual kernel modules without ptrace: image checks, the store, /proc/modules, handlers."""

from __future__ import annotations

import errno
import gzip
import io
import lzma
import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from appvirt.core.action import Deny, Emulate
from appvirt.errors import GuestErrno
from appvirt.fs.machinetree import MachineTree
from appvirt.policy import load_policy_text
from appvirt.store import Store
from appvirt.store.wellknown import MODULE_PARAMS, module_key
from appvirt.testing import FakeContext, handle, make_stop
from appvirt.virt.modules import (SYS_MODULE, VirtualModules, read_module, split_params)

PARAMS_AT, IMAGE_AT = 0x1000, 0x10000


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> bytes:
    ko = tmp_path_factory.mktemp("ko") / "appvirt_demo.ko"
    subprocess.run(["cc", "-c", "-o", str(ko), "demo_apps/demo_module.c"], check=True,
                   timeout=120)
    return ko.read_bytes()


def test_the_name_comes_from_modinfo(image):
    m = read_module(io.BytesIO(image))
    assert m.name == "appvirt_demo" and m.size == len(image)
    assert m.info["license"] == "GPL"


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_compressed_files_are_read_when_the_flag_says_so(image, compress):
    assert read_module(io.BytesIO(compress(image)), compressed=True).name == "appvirt_demo"
    with pytest.raises(GuestErrno) as e:
        read_module(io.BytesIO(compress(image)))
    assert e.value.errno == errno.ENOEXEC


def test_an_object_without_struct_module_is_not_a_module(tmp_path):
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    subprocess.run(["cc", "-c", "-o", str(tmp_path / "x.o"), str(src)], check=True, timeout=120)
    with pytest.raises(GuestErrno) as e:
        read_module(open(tmp_path / "x.o", "rb"))
    assert e.value.errno == errno.ENOEXEC


@settings(max_examples=300)
@given(st.binary(max_size=4096), st.booleans())
def test_any_bytes_give_a_module_or_an_errno_never_a_crash(data, compressed):
    try:
        read_module(io.BytesIO(data), compressed)
    except GuestErrno as e:
        assert e.errno in (errno.ENOEXEC, errno.EINVAL, errno.EOPNOTSUPP, errno.EFBIG)


@given(st.lists(st.from_regex(r"[a-z_]{1,8}=[a-z0-9 ]{0,8}", fullmatch=True), max_size=5))
def test_params_split_like_the_kernel(items):
    text = " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}"
                    for k, _, v in (i.partition("=") for i in items))
    assert split_params(text) == tuple(items)


def test_loading_is_kept_in_the_store_and_shown_in_proc_and_sys(tmp_path, image):
    tree = MachineTree(os.fsencode(tmp_path / "tree"), (SYS_MODULE,))
    with Store.open(tmp_path) as store:
        mods = VirtualModules(store, tree)
        mods.load(read_module(io.BytesIO(image)), 'greeting="hi there" n=3', set())
        assert store.lookup(module_key("appvirt_demo"), MODULE_PARAMS).data == (
            "greeting=hi there", "n=3")
        lines = mods.proc_modules(b"ext4 1 0 - Live 0x0\n").splitlines()
        assert lines[0] == b"ext4 1 0 - Live 0x0"
        assert lines[1].startswith(b"appvirt_demo 4096 0 - Live")
        assert tree.added(SYS_MODULE) == [b"appvirt_demo"]
        base = tmp_path / "tree/sys/module/appvirt_demo"
        assert (base / "initstate").read_bytes() == b"live\n"
        assert (base / "parameters/greeting").read_bytes() == b"hi there\n"
        # a later run sees it (the tree is rebuilt from the store)
        tree2 = MachineTree(os.fsencode(tmp_path / "tree2"), (SYS_MODULE,))
        again = VirtualModules(store, tree2)
        assert list(again.loaded()) == ["appvirt_demo"] and tree2.added(SYS_MODULE)
        with pytest.raises(GuestErrno) as e:
            again.load(read_module(io.BytesIO(image)), "", set())
        assert e.value.errno == errno.EEXIST
        again.unload("appvirt_demo", set())
        assert again.loaded() == {} and tree2.added(SYS_MODULE) == []


def test_host_modules_cannot_be_loaded_twice_or_unloaded(image):
    mods = VirtualModules(None)
    with pytest.raises(GuestErrno) as e:
        mods.load(read_module(io.BytesIO(image)), "", {"appvirt_demo"})
    assert e.value.errno == errno.EEXIST
    with pytest.raises(GuestErrno) as e:
        mods.unload("ext4", {"ext4"})
    assert e.value.errno == errno.EPERM
    with pytest.raises(GuestErrno) as e:
        mods.unload("nothere", set())
    assert e.value.errno == errno.ENOENT


def _ctx(text: str, image: bytes, tmp_path) -> FakeContext:
    policy = load_policy_text(text)
    ko = tmp_path / "m.ko"
    ko.write_bytes(image)
    ctx = FakeContext(policy, memory={PARAMS_AT: b"a=1\0", IMAGE_AT: image,
                                      0x3000: b"appvirt_demo\0"}, fds={5: os.fsencode(ko)})
    if text == "modules: virtual":
        ctx.modules = VirtualModules(None)
    return ctx


def test_module_calls_are_refused_by_default(image, tmp_path):
    ctx = _ctx("{}", image, tmp_path)
    for stop in (make_stop("finit_module", 5, PARAMS_AT, 0),
                 make_stop("init_module", IMAGE_AT, len(image), PARAMS_AT),
                 make_stop("delete_module", 0x3000, 0)):
        act = handle(stop, ctx)
        assert isinstance(act, Deny) and act.errno == errno.EPERM


def test_module_calls_under_virtual(image, tmp_path):
    ctx = _ctx("modules: virtual", image, tmp_path)
    assert isinstance(handle(make_stop("finit_module", 5, PARAMS_AT, 0), ctx), Emulate)
    assert ctx.modules.loaded()["appvirt_demo"].params == ("a=1",)
    act = handle(make_stop("init_module", IMAGE_AT, len(image), PARAMS_AT), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EEXIST
    assert isinstance(handle(make_stop("delete_module", 0x3000, 0), ctx), Emulate)
    assert isinstance(handle(make_stop("init_module", IMAGE_AT, len(image), PARAMS_AT), ctx),
                      Emulate)
    assert handle(make_stop("finit_module", 5, PARAMS_AT, 8), ctx).errno == errno.EINVAL
    assert handle(make_stop("finit_module", 9, PARAMS_AT, 0), ctx).errno == errno.EBADF
    act = handle(make_stop("init_module", 0xbad000, 100, PARAMS_AT), ctx)
    assert act.errno == errno.EFAULT
    ctx.caps = frozenset()
    assert handle(make_stop("delete_module", 0x3000, 0), ctx).errno == errno.EPERM
