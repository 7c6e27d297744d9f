"""The slot area's mapping after each exec (inject.py), under real ptrace: the stub written
over the entry point runs, is taken back, and a failure kills the process, logged."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from appvirt.core.slotlayout import CELL_BASE

from ..conftest import PYTHON, appvirt_cmd

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
slot = next(m[1] for m in maps if m[0].startswith("6fff00000000-"))
cells = any(m[0].startswith("%x-" % CELL_BASE) and m[1] == "rw-p" for m in maps)
print(len(mapped), mapped == on_disk, slot, cells)
"""


@pytest.mark.parametrize("tramp", ["1", "0"])
def test_the_entry_code_is_the_files_again_once_the_area_is_mapped(appvirt, tramp, request):
    """The area is mapped read-only, executable with its trampolines and followed by the
    process's result cells (trampoline.py), or read-only alone without."""
    r = appvirt("run", "--policy", "policies/default.yaml", "--",
                sys.executable, "-c", ENTRY_PAGE_CHECK.replace("CELL_BASE", str(CELL_BASE)),
                env={"APPVIRT_TRAMPOLINES": tramp})
    if tramp == "1":
        request.getfixturevalue("trampolines")          # (skips where there are none)
    assert r.returncode == 0, r.stderr
    size, same, slot, cells = r.stdout.split()
    assert int(size) > 0
    assert (same, slot, cells) == (("True", "r-xs", "True") if tramp == "1"
                                   else ("True", "r--s", "False"))


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
    before it runs a single instruction of its own, and the log and a warning say why."""
    log = tmp_path / "log.jsonl"
    marker = tmp_path / "ran"
    p = subprocess.Popen(appvirt_cmd("run", "--log", str(log), "--", "sh", "-c",
                                     f"echo ready; read x; exec touch {marker}"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
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
    warning = p.stderr.read().splitlines()
    assert len(warning) == 1 and warning[0].startswith(
        "appvirt: warning: a process was killed at its exec, which appvirt could not keep in "
        "the sandbox (/"), warning
    assert "open of the slot area failed: " in warning[0]
    killed = [rec for rec in map(json.loads, log.read_text().splitlines())
              if rec.get("decision") == "killed"]
    assert len(killed) == 1
    assert killed[0]["detail"].startswith("open of the slot area failed: ")


# Runs an appvirt command line in this interpreter, counting the tracer's reads of
# /proc/PID/maps (SlotArena.mapped_in); with WRONG_AREA set, the compiled loop is told
# another file is the slot area (its inode plus one); with NO_THREAD_PIDFDS, pidfd_open of a
# thread (PIDFD_THREAD) fails with EINVAL in the tracer (a seccomp filter of its own), as on
# a kernel before 6.9.
COUNTING_DRIVER = r"""
import ctypes, os, struct, sys
from appvirt import entry
from appvirt.tracer import fastpath, slots
if os.environ.get("NO_THREAD_PIDFDS"):
    libc = ctypes.CDLL(None, use_errno=True)
    ALLOW, EINVAL, PIDFD_THREAD = 0x7FFF0000, 0x00050000 | 22, os.O_EXCL
    insns = [(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, ALLOW),    # x86-64 only
             (0x20, 0, 0, 0), (0x15, 0, 3, 434),                   # pidfd_open: its flags
             (0x20, 0, 0, 24), (0x45, 0, 1, PIDFD_THREAD), (0x06, 0, 0, EINVAL),
             (0x06, 0, 0, ALLOW)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("<HBBI", *i) for i in insns))
    prog = struct.pack("<HxxxxxxQ", len(insns), ctypes.addressof(code))
    assert libc.prctl(38, 1, 0, 0, 0) == 0                  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.c_char_p(prog), 0, 0) == 0   # PR_SET_SECCOMP, FILTER
reads = []
mapped_in = slots.SlotArena.mapped_in
slots.SlotArena.mapped_in = lambda self, pid: (reads.append(pid), mapped_in(self, pid))[1]
if os.environ.get("WRONG_AREA"):
    init = fastpath.FastPath.__init__
    def wrong(self, *args, area_file=(0, 0), **kw):
        init(self, *args, area_file=(area_file[0], area_file[1] + 1), **kw)
    fastpath.FastPath.__init__ = wrong
status = entry.main(sys.argv[1:])
print("maps read", len(reads), file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize("fast", ["1", "0"])
def test_the_compiled_loop_checks_the_areas_file_at_the_stubs_mmap(home, ptrace_ok, tmp_path,
                                                                   fast):
    """The compiled loop checks the fd each slot stub maps (its object is the area's memfd),
    so no exec needs /proc/PID/maps read; the Python loop reads it at each exec."""
    driver = tmp_path / "driver.py"
    driver.write_text(COUNTING_DRIVER)
    r = subprocess.run([sys.executable, str(driver), "run", "--", "sh", "-c",
                        "for i in 1 2 3 4; do /bin/true; done; echo ran"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "APPVIRT_FASTPATH": fast})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    reads = int(re.search(r"maps read (\d+)", r.stderr).group(1))
    assert reads == (0 if fast == "1" else 5), r.stderr        # sh and four /bin/true


# A thread other than the main one execs: the kernel ends the others, and the exec'ing thread
# takes the main thread's tid (the exec event's message is its former one).
THREAD_EXECS = r"""
import os, sys, threading, time
def run():
    os.execv("/bin/sh", ["sh", "-c", "echo from the thread"])
threading.Thread(target=run).start()
time.sleep(30)
print("the main thread went on")
"""


@pytest.mark.parametrize("fast", ["1", "0"])
def test_an_exec_by_a_second_thread_maps_the_area_for_the_main_threads_tid(
        home, ptrace_ok, tmp_path, fast):
    """The exec'ing thread, now with the process's own tid, gets the area (checked at the
    stub's mmap by the compiled loop, else by /proc/PID/maps) and runs as natively."""
    driver = tmp_path / "driver.py"
    driver.write_text(COUNTING_DRIVER)
    native = subprocess.run([PYTHON, "-c", THREAD_EXECS], capture_output=True, text=True,
                            timeout=60)
    r = subprocess.run([sys.executable, str(driver), "run", "--", PYTHON, "-c",
                        THREAD_EXECS], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "APPVIRT_FASTPATH": fast})
    assert r.returncode == native.returncode == 0, r.stderr
    assert r.stdout == native.stdout == "from the thread\n"
    reads = int(re.search(r"maps read (\d+)", r.stderr).group(1))
    assert reads == (0 if fast == "1" else 2), r.stderr        # python, then sh


def test_where_fds_cannot_be_copied_the_area_is_checked_as_before(home, ptrace_ok, tmp_path):
    """On a kernel before 6.9 the engine has no pidfd of a thread to copy its fds with: the
    compiled loop cannot check the fd a stub maps, lets the mmap run, and the tracer reads
    /proc/PID/maps at each exec, as before."""
    driver = tmp_path / "driver.py"
    driver.write_text(COUNTING_DRIVER)
    r = subprocess.run([sys.executable, str(driver), "run", "--", "sh", "-c",
                        "for i in 1 2 3 4; do /bin/true; done; echo ran"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "NO_THREAD_PIDFDS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    assert int(re.search(r"maps read (\d+)", r.stderr).group(1)) == 5, r.stderr


def test_a_stub_mapping_another_file_is_refused_at_its_mmap(home, ptrace_ok, tmp_path):
    """When the fd a stub maps is not the area's file, the compiled loop fails that mmap:
    the process is killed before its own code runs, and the log says which call failed."""
    driver, log, marker = tmp_path / "driver.py", tmp_path / "log.jsonl", tmp_path / "ran"
    driver.write_text(COUNTING_DRIVER)
    r = subprocess.run([sys.executable, str(driver), "run", "--log", str(log), "--", "sh",
                        "-c", f"touch {marker}"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "WRONG_AREA": "1"})
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    assert not marker.exists()
    killed = [rec for rec in map(json.loads, log.read_text().splitlines())
              if rec.get("decision") == "killed"]
    assert [k["detail"] for k in killed] == ["mmap of the slot area failed: EACCES"]


def _elf32(path) -> None:
    """A static 32-bit x86 program that exits with status 3 through int $0x80."""
    import struct
    code = bytes([0xB8, 1, 0, 0, 0, 0xBB, 3, 0, 0, 0, 0xCD, 0x80])   # exit(3)
    base, ehdr, phdr = 0x08048000, 52, 32
    header = b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, base + ehdr + phdr, ehdr, 0, 0, ehdr, phdr, 1, 0, 0, 0)
    size = ehdr + phdr + len(code)
    path.write_bytes(header + struct.pack("<8I", 1, 0, base, base, size, size, 5, 0x1000) + code)
    path.chmod(0o755)


def test_a_32_bit_program_is_killed_at_its_exec_with_a_reason(home, ptrace_ok, tmp_path):
    """The stub and the filter are x86-64 only: a 32-bit program is killed before its first
    instruction (the stub would fault in 32-bit mode for ever), and the log says why."""
    prog, log = tmp_path / "elf32", tmp_path / "log.jsonl"
    _elf32(prog)
    native = subprocess.run([str(prog)], timeout=30)
    if native.returncode != 3:
        pytest.skip("this kernel runs no 32-bit programs")
    r = subprocess.run(appvirt_cmd("run", "--log", str(log), "--", str(prog)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    killed = [rec for rec in map(json.loads, log.read_text().splitlines())
              if rec.get("decision") == "killed"]
    assert len(killed) == 1 and "not an x86-64 program" in killed[0]["detail"]


def test_trampolines_work_where_memfds_may_not_be_run_as_programs(appvirt, demo, trampolines):
    """vm.memfd_noexec=2, a hardened system's setting (here in a PID namespace of the test's
    own, where the setting is that namespace's), forbids running a memfd as a program, not
    mapping it executable: the trampolines are used, the program sees its registers back."""
    script = ("echo 2 > /proc/sys/vm/memfd_noexec && exec "
              + " ".join(appvirt_cmd("run", "--stats", "--", demo("probes"),
                                     "regs_kept=/etc/hostname")))
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                           capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no unshare")
    if "memfd_noexec" in r.stderr or "unshare:" in r.stderr:
        pytest.skip(f"no PID namespace with its own vm.memfd_noexec here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "regs_kept: ok\n"
    assert re.search(r"opens with no exit stop \(trampolines\) [1-9]", r.stderr), r.stderr
    assert " 0 syscall-exit" in r.stderr
    with open("/proc/sys/vm/memfd_noexec") as f:     # (the test's namespace is untouched)
        assert f.read().strip() != "2"
