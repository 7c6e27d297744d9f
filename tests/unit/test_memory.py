"""Reading tracee memory with the kernel's fault semantics (process_vm_readv on ourselves)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appvirt.errors import GuestErrno
from appvirt.tracer import memory as memory_module
from appvirt.tracer.memory import PAGE, TraceeMemory, code_words


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


@given(st.integers(0, 40), st.binary(min_size=1, max_size=64))
def test_code_words_write_exactly_the_bytes_and_keep_their_neighbours(offset, data):
    base = 0x1000
    model = bytearray(range(256))
    words = code_words(base + offset, data,
                       lambda w: int.from_bytes(model[w - base:w - base + 8], "little"))
    assert all(w % 8 == 0 for w, _ in words)
    expected = bytearray(model)
    expected[offset:offset + len(data)] = data
    for w, value in words:
        model[w - base:w - base + 8] = value.to_bytes(8, "little")
    assert model == expected


def test_code_is_poked_word_by_word_where_proc_mem_refuses(monkeypatch):
    """A kernel booted with proc_mem.force_override=never refuses the write through
    /proc/PID/mem: the words go through PTRACE_POKETEXT instead."""
    model = bytearray(b"\x90" * 64)
    monkeypatch.setattr(memory_module.os, "pwrite",
                        lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "refused")))
    monkeypatch.setattr(memory_module._ptrace, "peek_text",
                        lambda tid, w: int.from_bytes(model[w:w + 8], "little"))

    def poke(tid, w, value):
        model[w:w + 8] = value.to_bytes(8, "little")
    monkeypatch.setattr(memory_module._ptrace, "poke_text", poke)
    mem = TraceeMemory()
    monkeypatch.setattr(mem, "_mem_fd", lambda tid: -1)
    mem.write_code(1, 5, b"\xcc\x0f\x05")
    assert model == b"\x90" * 5 + b"\xcc\x0f\x05" + b"\x90" * 56
