"""Reading and writing tracee memory: process_vm_readv/writev, falling back to /proc/PID/mem.

Reads of C strings go a page at a time so that a string ending just before an unmapped page
reads fine while one running into it faults, exactly where the kernel's own copy would fault.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..errors import GuestErrno, TraceeGone
from . import _ptrace

PAGE = 4096
PATH_MAX = 4096

_libc = ctypes.CDLL(None, use_errno=True)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_vm_readv = _libc.process_vm_readv
_vm_writev = _libc.process_vm_writev
for _f in (_vm_readv, _vm_writev):
    _f.argtypes = (ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                   ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong)
    _f.restype = ctypes.c_ssize_t

_buf = ctypes.create_string_buffer(PATH_MAX + PAGE)
_buf_addr = ctypes.addressof(_buf)
_local = _Iovec(_buf_addr, 0)
_remote = _Iovec(0, 0)
_local_ref, _remote_ref = ctypes.byref(_local), ctypes.byref(_remote)


class TraceeMemory:
    """Memory access to tracees; one instance per tracer."""

    def __init__(self) -> None:
        self._use_vm = True
        self._mem_fds: dict[int, int] = {}

    # -- reading -----------------------------------------------------------------------------
    def _read_some(self, tid: int, addr: int, size: int) -> bytes:
        """Read up to `size` bytes (size <= len(_buf)); return what was readable before a fault."""
        if self._use_vm:
            n = self._vm_read(tid, addr, size)
            if n >= 0:
                return ctypes.string_at(_buf_addr, n)
        return self._mem_read(tid, addr, size)

    def _vm_read(self, tid: int, addr: int, size: int) -> int:
        """process_vm_readv into _buf: the count read (0 at a fault), -1 when it cannot be
        used here (then /proc/PID/mem is)."""
        _local.len = size
        _remote.base = addr
        _remote.len = size
        n = _vm_readv(tid, _local_ref, 1, _remote_ref, 1, 0)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err == errno.EFAULT:
            return 0
        if err in (errno.ENOSYS, errno.EPERM):
            self._use_vm = False
            return -1
        if err == errno.ESRCH:
            raise TraceeGone(tid)
        raise OSError(err, os.strerror(err))

    def _mem_read(self, tid: int, addr: int, size: int) -> bytes:
        try:
            return os.pread(self._mem_fd(tid), size, addr)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EFAULT):
                return b""
            raise

    def _mem_fd(self, tid: int) -> int:
        fd = self._mem_fds.get(tid)
        if fd is None:
            fd = self._mem_fds[tid] = os.open(f"/proc/{tid}/mem", os.O_RDWR | os.O_CLOEXEC)
        return fd

    def forget(self, tid: int) -> None:
        """Drop per-tracee state when `tid` exits or execs."""
        fd = self._mem_fds.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def read(self, tid: int, addr: int, size: int) -> bytes:
        """Read exactly `size` bytes or raise GuestErrno(EFAULT)."""
        if addr == 0 and size:
            raise GuestErrno(errno.EFAULT, "NULL pointer")
        out = b""
        while len(out) < size:
            chunk = self._read_some(tid, addr + len(out), min(size - len(out), len(_buf)))
            if not chunk:
                raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}")
            out += chunk
        return out

    def read_cstring(self, tid: int, addr: int, limit: int = PATH_MAX) -> bytes:
        """Read a NUL-terminated string as the kernel's getname() would.

        Raises GuestErrno(EFAULT) for a bad pointer and GuestErrno(ENAMETOOLONG) when no NUL
        occurs within `limit` bytes (PATH_MAX counts the NUL, as in the kernel).
        """
        if addr == 0:
            raise GuestErrno(errno.EFAULT, "NULL path")
        # First read up to the end of addr's page: the common case is one short read.
        first = min(PAGE - (addr % PAGE), limit)
        if self._use_vm:
            n = self._vm_read(tid, addr, first)
            if n >= 0:
                # The hot path: let strlen find the end in place, copy only the string.
                _buf[n] = 0
                text = ctypes.string_at(_buf_addr)
                if len(text) < n:
                    return text
        data = self._read_some(tid, addr, first)
        end = data.find(b"\0")
        if end >= 0:
            return data[:end]
        if len(data) < first:
            raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}")
        out = data
        while len(out) < limit:
            size = min(PAGE, limit - len(out))
            data = self._read_some(tid, addr + len(out), size)
            end = data.find(b"\0")
            if end >= 0:
                return out + data[:end]
            if len(data) < size:
                raise GuestErrno(errno.EFAULT, f"bad address {addr + len(out) + len(data):#x}")
            out += data
        raise GuestErrno(errno.ENAMETOOLONG, "path longer than PATH_MAX")

    # -- writing -----------------------------------------------------------------------------
    def write(self, tid: int, addr: int, data: bytes) -> None:
        """Write `data` at `addr` in the tracee, honouring page protections like the kernel.

        Raises GuestErrno(EFAULT) if any byte cannot be written.
        """
        if not data:
            return
        if self._use_vm:
            src = ctypes.create_string_buffer(data, len(data))
            local = _Iovec(ctypes.addressof(src), len(data))
            remote = _Iovec(addr, len(data))
            n = _vm_writev(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if n == len(data):
                return
            err = ctypes.get_errno() if n < 0 else errno.EFAULT
            if err == errno.EFAULT:
                raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}")
            if err == errno.ESRCH:
                raise TraceeGone(tid)
            if err not in (errno.ENOSYS, errno.EPERM):
                raise OSError(err, os.strerror(err))
            self._use_vm = False
        try:
            if os.pwrite(self._mem_fd(tid), data, addr) != len(data):
                raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}")
        except OSError as e:
            if e.errno in (errno.EIO, errno.EFAULT):
                raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}") from e
            raise

    def write_code(self, tid: int, addr: int, data: bytes) -> None:
        """Write `data` over read-only memory too (code), as a debugger does: through
        /proc/PID/mem, into a private copy of the page, or word by word with PTRACE_POKETEXT
        where the kernel refuses forced writes there (proc_mem.force_override=never).
        Raises GuestErrno(EFAULT) where neither can write."""
        try:
            if os.pwrite(self._mem_fd(tid), data, addr) == len(data):
                return
        except OSError as e:
            if e.errno not in (errno.EIO, errno.EFAULT, errno.EPERM, errno.EACCES):
                raise
        try:
            for word, value in code_words(addr, data, lambda w: _ptrace.peek_text(tid, w)):
                _ptrace.poke_text(tid, word, value)
        except _ptrace.PtraceError as e:
            raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}") from e


def code_words(addr: int, data: bytes, peek) -> list[tuple[int, int]]:
    """The aligned 8-byte words (address, value) that write `data` at `addr`; a word only
    partly covered keeps the rest of what peek(word address) reads there."""
    words = []
    end = addr + len(data)
    for word in range(addr & ~7, end, 8):
        lo, hi = max(addr, word), min(end, word + 8)
        chunk = data[lo - addr:hi - addr]
        if hi - lo < 8:
            old = peek(word).to_bytes(8, "little")
            chunk = old[:lo - word] + chunk + old[hi - word:]
        words.append((word, int.from_bytes(chunk, "little")))
    return words
