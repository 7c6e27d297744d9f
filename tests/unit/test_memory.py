"""Reading tracee memory with the kernel's fault semantics (process_vm_readv on ourselves)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

import pytest

from appvirt.errors import GuestErrno
from appvirt.tracer.memory import PAGE, TraceeMemory


@pytest.fixture
def edge():
    """A page whose successor is unmapped; returns (address just past it, view of it)."""
    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    base = libc.mmap(None, 2 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert libc.munmap(base + PAGE, PAGE) == 0           # a hole: every access faults
    yield base + PAGE, (ctypes.c_char * PAGE).from_address(base)
    libc.munmap(base, PAGE)


@pytest.mark.parametrize("fallback", [False, True])
def test_a_string_ending_at_the_edge_reads_and_one_running_over_faults(edge, fallback):
    end, m = edge
    mem = TraceeMemory()
    mem._use_vm = not fallback          # /proc/PID/mem path as well
    m[PAGE - 6:PAGE] = b"/etc/\0"
    assert mem.read_cstring(os.getpid(), end - 6) == b"/etc/"
    m[PAGE - 6:PAGE] = b"/etc/x"
    with pytest.raises(GuestErrno) as e:
        mem.read_cstring(os.getpid(), end - 6)
    assert e.value.errno == errno.EFAULT


def test_long_strings_span_pages_and_too_long_is_enametoolong():
    mem = TraceeMemory()
    buf = ctypes.create_string_buffer(b"a" * 6000 + b"\0")
    with pytest.raises(GuestErrno) as e:
        mem.read_cstring(os.getpid(), ctypes.addressof(buf))
    assert e.value.errno == errno.ENAMETOOLONG
    buf = ctypes.create_string_buffer(b"b" * 4095 + b"\0")
    assert mem.read_cstring(os.getpid(), ctypes.addressof(buf)) == b"b" * 4095


def test_null_and_wild_pointers_fault():
    mem = TraceeMemory()
    for addr in (0, 1, 0xFFFF_FFFF_FFFF_0000):
        with pytest.raises(GuestErrno) as e:
            mem.read_cstring(os.getpid(), addr)
        assert e.value.errno == errno.EFAULT


def test_writes_respect_page_protection(edge):
    end, m = edge
    mem = TraceeMemory()
    mem.write(os.getpid(), end - 4, b"abcd")
    assert m[PAGE - 4:PAGE] == b"abcd"
    with pytest.raises(GuestErrno):
        mem.write(os.getpid(), end - 2, b"abcd")
