"""The slot area's mapping after each exec (inject.py), under real ptrace: the stub written
over the entry point runs, is taken back, and a failure kills the process, logged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from ..conftest import appvirt_cmd

pytestmark = pytest.mark.integration

# Run in the sandbox: compare the page holding the first code an exec runs (the ELF
# interpreter's entry, or the program's when it has none), as mapped, with the file's bytes.
ENTRY_PAGE_CHECK = r"""
import struct, sys
from elftools.elf.elffile import ELFFile
auxv = open("/proc/self/auxv", "rb").read()
aux = dict(struct.iter_unpack("<QQ", auxv))
base, entry = aux.get(7, 0), aux[9]                 # AT_BASE, AT_ENTRY
with open("/proc/self/maps") as f:
    maps = [line.split() for line in f]
def file_at(addr):
    return next(m[5] for m in maps if int(m[0].split("-")[0], 16) == addr and len(m) > 5)
if base:
    path = file_at(base)
    with open(path, "rb") as f:
        entry = base + ELFFile(f).header.e_entry
else:
    path, base = "/proc/self/exe", 0
with open(path, "rb") as f:
    elf = ELFFile(f)
    load = next(s for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"
                and s.header.p_vaddr <= entry - base < s.header.p_vaddr + s.header.p_filesz)
    page = max(entry & ~4095, base + load.header.p_vaddr)
    end = min((entry | 4095) + 1, base + load.header.p_vaddr + load.header.p_filesz)
    f.seek(page - base - load.header.p_vaddr + load.header.p_offset)
    on_disk = f.read(end - page)
with open("/proc/self/mem", "rb") as mem:
    mem.seek(page)
    mapped = mem.read(end - page)
slot = any(m[0].startswith("6fff00000000-") and m[1] == "r--s" for m in maps)
print(len(mapped), mapped == on_disk, slot)
"""


def test_the_entry_code_is_the_files_again_once_the_area_is_mapped(appvirt):
    r = appvirt("run", "--policy", "policies/default.yaml", "--",
                sys.executable, "-c", ENTRY_PAGE_CHECK)
    assert r.returncode == 0, r.stderr
    size, same, slot = r.stdout.split()
    assert int(size) > 0
    assert (same, slot) == ("True", "True")


def _static_program() -> str | None:
    """A statically linked program of the system's (no ELF interpreter: the stub goes at
    the program's own entry point), if there is one."""
    from elftools.elf.elffile import ELFFile
    path = shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if path is None:
        return None
    with open(path, "rb") as f:
        if any(s.header.p_type == "PT_INTERP" for s in ELFFile(f).iter_segments()):
            return None
    return path


def test_a_static_program_runs_as_natively(appvirt):
    program = _static_program()
    if program is None:
        pytest.skip("no statically linked ldconfig here")
    native = subprocess.run([program, "-p"], capture_output=True, text=True, timeout=60)
    r = appvirt("run", "--policy", "policies/default.yaml", "--", program, "-p")
    assert r.returncode == native.returncode == 0, r.stderr
    assert r.stdout == native.stdout


def test_a_failed_mapping_kills_the_process_and_says_why(home, ptrace_ok, tmp_path):
    """With the slot keeper gone, the next exec cannot map the area: the process is killed
    before it runs a single instruction of its own, and the log says why."""
    log = tmp_path / "log.jsonl"
    marker = tmp_path / "ran"
    p = subprocess.Popen(appvirt_cmd("run", "--log", str(log), "--", "sh", "-c",
                                     f"echo ready; read x; exec touch {marker}"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline() == "ready\n"
        keepers = [c for c in psutil.Process(p.pid).children()
                   if c.name() == "cat" or "appvirt-slots" in c.name()]
        assert len(keepers) == 1
        keepers[0].send_signal(signal.SIGKILL)
        keepers[0].wait(timeout=10)
        p.stdin.write("\n")
        p.stdin.close()
        assert p.wait(timeout=20) == 128 + signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.path.exists(marker)
    killed = [rec for rec in map(json.loads, log.read_text().splitlines())
              if rec.get("decision") == "killed"]
    assert len(killed) == 1
    assert killed[0]["detail"].startswith("open of the slot area failed: ")
