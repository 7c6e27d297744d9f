"""#! scripts: parsing as the kernel does, and the argv the tracer builds for them."""

from __future__ import annotations

import os

from appvirt.core.action import Rewrite
from appvirt.handlers.execs import _shebang
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop


def test_shebang_parsing(tmp_path):
    cases = {b"#!/bin/sh\necho": (b"/bin/sh", None),
             b"#! /usr/bin/env  python3 -u \nx": (b"/usr/bin/env", b"python3 -u"),
             b"#!/bin/sh\t-e\n": (b"/bin/sh", b"-e"),
             b"#!\n": None, b"\x7fELF": None}
    for i, (head, want) in enumerate(cases.items()):
        f = tmp_path / f"s{i}"
        f.write_bytes(head)
        assert _shebang(os.fsencode(f)) == want, head


def test_a_script_whose_interpreter_is_in_the_overlay(fs):
    fs.create_file("/usr/bin/python3", contents="\x7fELF")
    ctx = FakeContext(load_policy_text("{}", "p.yaml"), cwd=b"/w").use_overlay()
    fs.create_dir("/w")
    ctx.fs.ov.mkdir(b"/w/venv", 0o755)
    ctx.fs.ov.mkdir(b"/w/venv/bin", 0o755)
    ctx.fs.ov.symlink(b"/usr/bin/python3", b"/w/venv/bin/python3")
    host = ctx.fs.host_for_create(b"/w/venv/bin/pip")
    with open(host, "wb") as f:
        f.write(b"#!/w/venv/bin/python3\nimport pip\n")
    ctx.fs.created(b"/w/venv/bin/pip")
    ctx.memory[0x1000] = (0x2000).to_bytes(8, "little") + (0x3000).to_bytes(8, "little") \
        + bytes(8)
    action = handle(make_stop("execve", 1, 0x1000, 0x5000, paths={0: b"venv/bin/pip"}), ctx)
    assert isinstance(action, Rewrite) and action.nr is not None
    args = dict(action.args)
    assert args[0].data == b"/usr/bin/python3\0"              # the interpreter's host path
    assert args[2] == 0x5000                                  # envp unchanged
    table = args[1]
    assert [e.data for e in action.extra] == [b"/w/venv/bin/python3\0", b"venv/bin/pip\0"]
    assert table.refs == ((0, 2), (8, 3))                     # argv[0], argv[1] -> strings
    assert table.data[16:24] == (0x3000).to_bytes(8, "little")   # then the program's args
    assert table.data[24:] == bytes(8)
