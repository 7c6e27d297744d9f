"""The read-only slot area (threats #11-#13).

One memfd sized for every slot, mapped read-write in the tracer and sealed
(F_SEAL_FUTURE_WRITE|SHRINK|GROW|SEAL) so that no other mapping of it can ever be writable and
its size never changes. Every tracee maps it PROT_READ|MAP_SHARED at SLOT_BASE; each live thread
owns one slot. A tracee gets the mapping after each exec by opening the memfd through a small
"keeper" process (the tracer itself stays out of reach), mapping it, and closing the fd.

The area ends with the slots' trampolines (trampoline.py, written by the engine). Where the
kernel lets this memfd be mapped executable (a security module may not), tracees map the area
PROT_READ|PROT_EXEC and get their private result cells after it; elsewhere, or with
APPVIRT_TRAMPOLINES=0, they map it PROT_READ alone and the tracer restores registers at the
exit stop of each rewritten open instead.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import signal

from ..core.slotlayout import (AREA_END, AREA_SIZE, CELL_BASE, CELLS_SIZE, SLOT_BASE,
                               SLOT_COUNT, SLOT_SIZE)
from ..errors import EnvironmentUnsupported
from .pathsearch import which

F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_FUTURE_WRITE = 0x1, 0x2, 0x4, 0x10
MAP_FIXED_NOREPLACE = 0x100000
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
# Blocked in the keeper for good (exec keeps the mask): a Ctrl-C, a hangup or a kill of
# appvirt's process group leaves it, and so the area, to the tracer's end.
KEEPER_BLOCKS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                           signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)


def _executable(fd: int) -> bool:
    """Whether the memfd can be mapped executable here, as a tracee's stub will map it (a
    security module's policy may refuse; vm.memfd_noexec is about executing a memfd as a
    program, not about mapping it)."""
    try:
        mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_EXEC).close()
    except OSError:
        return False
    return True


class SlotArena:
    """The memfd, the tracer's writable view of it, and slot ownership by thread."""

    def __init__(self, trampolines: bool | None = None) -> None:
        """trampolines: None, where the kernel allows them (APPVIRT_TRAMPOLINES=0: never)."""
        if trampolines is None:
            trampolines = os.environ.get("APPVIRT_TRAMPOLINES", "1") != "0"
        try:
            self.fd = os.memfd_create("appvirt-slots", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(self.fd, AREA_SIZE)
            self.view = mmap.mmap(self.fd, AREA_SIZE, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            fcntl.fcntl(self.fd, F_ADD_SEALS,
                        F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
        except OSError as e:
            raise EnvironmentUnsupported(f"cannot create the sealed slot area: {e}") from e
        # A read-only open of the same memfd: what tracees map (and the keeper holds).
        self.ro_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        self.trampolines = trampolines and _executable(self.ro_fd)
        self.prot = mmap.PROT_READ | (mmap.PROT_EXEC if self.trampolines else 0)
        st = os.fstat(self.fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self._free = list(range(SLOT_COUNT - 1, -1, -1))
        self._owner: dict[int, int] = {}
        self.keeper_pid = 0
        self._keeper_pipe = -1
        self.keeper_fd = 100

    # -- slots ------------------------------------------------------------------------------
    def slot_of(self, tid: int) -> int:
        """The index of tid's slot, allocating one (IndexError when all are taken)."""
        idx = self._owner.get(tid)
        if idx is None:
            idx = self._owner[tid] = self._free.pop()
        return idx

    def release(self, tid: int) -> None:
        idx = self._owner.pop(tid, None)
        if idx is not None:
            self._free.append(idx)

    def layout(self, tid: int, sizes: list[int]) -> list[int]:
        """Tracee addresses for blobs of these sizes in tid's slot (8-byte aligned)."""
        base = SLOT_BASE + self.slot_of(tid) * SLOT_SIZE
        off, addrs = 0, []
        for size in sizes:
            if off + size > SLOT_SIZE:
                raise ValueError("arguments do not fit in a slot")
            addrs.append(base + off)
            off += (size + 7) & ~7
        return addrs

    def store(self, addr: int, blob: bytes) -> None:
        """Write a blob at a tracee slot address (through the tracer's writable view)."""
        off = addr - SLOT_BASE
        self.view[off:off + len(blob)] = blob

    def put(self, tid: int, blobs: list[bytes]) -> list[int]:
        """Store blobs in tid's slot; return the tracee address of each."""
        addrs = self.layout(tid, [len(b) for b in blobs])
        for addr, blob in zip(addrs, blobs):
            self.store(addr, blob)
        return addrs

    # -- getting the mapping into tracees -----------------------------------------------------
    def start_keeper(self) -> None:
        """Start the keeper: it holds a read-only fd of the memfd at `keeper_fd` for tracees to
        open through /proc/KEEPER/fd/N, and ends with the tracer (EOF on its stdin, a pipe from
        the tracer; a fork keeper also by its death signal). It is cat, spawned (vfork and exec:
        a fork copies the whole tracer's page tables, 1-2 ms) with the signals a terminal or a
        group kill sends blocked for good, and with nothing but its stdin, /dev/null and the
        area open; cat takes ~0.3 MB. Without a cat a fork keeps the area (and the tracer's
        pages, ~13 MB Pss). Returns once the keeper holds the area: a tracee's first exec opens
        it there, and a keeper that a loaded machine had not run yet made that open fail."""
        # The system's cat before any other on PATH.
        cat = which("cat", os.pathsep.join((os.defpath, os.environ.get("PATH", ""))))
        r, w = os.pipe()
        try:
            pid = self._spawn_cat(cat, r) if cat else self._fork_keeper(r)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        self.keeper_pid, self._keeper_pipe = pid, w

    def _spawn_cat(self, cat: str, stdin: int) -> int:
        """cat with the area at keeper_fd (dup2 clears its CLOEXEC); posix_spawn returns
        after the exec."""
        others = [int(fd) for fd in os.listdir("/proc/self/fd")]
        actions = [(os.POSIX_SPAWN_DUP2, self.ro_fd, self.keeper_fd),
                   (os.POSIX_SPAWN_DUP2, stdin, 0),
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),   # cat needs a stdout
                   (os.POSIX_SPAWN_DUP2, 1, 2),
                   *((os.POSIX_SPAWN_CLOSE, fd) for fd in others
                     if fd > 2 and fd != self.keeper_fd)]
        try:                        # "cat": busybox picks its applet by argv[0]
            return os.posix_spawn(cat, ["cat"], {}, file_actions=actions,
                                  setsigmask=KEEPER_BLOCKS)
        except OSError as e:
            raise EnvironmentUnsupported(f"the slot area's keeper ({cat}) did not start: "
                                         f"{e.strerror}") from None

    def _fork_keeper(self, stdin: int) -> int:
        """A fork of the tracer that keeps the area itself, reading its stdin to EOF."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the keeper
            try:
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                _libc.prctl(PR_SET_NAME, b"appvirt-slots", 0, 0, 0)
                signal.pthread_sigmask(signal.SIG_BLOCK, KEEPER_BLOCKS)
                os.dup2(self.ro_fd, self.keeper_fd)
                os.write(ready_w, b"k")
                os.dup2(stdin, 0)
                os.closerange(1, self.keeper_fd)
                os.closerange(self.keeper_fd + 1, 1 << 20)
                while os.read(0, 1):
                    pass
            finally:
                os._exit(0)
        os.close(ready_w)
        try:
            started = os.read(ready_r, 1)
        finally:
            os.close(ready_r)
        if not started:
            os.waitpid(pid, 0)
            raise EnvironmentUnsupported("the slot area's keeper process did not start")
        return pid

    def keeper_path(self) -> bytes:
        return b"/proc/%d/fd/%d" % (self.keeper_pid, self.keeper_fd)

    def map_into_self(self) -> None:
        """Map the area read-only at SLOT_BASE in the calling process (the launcher child),
        and the result cells after it when there are trampolines."""
        addr = _libc.mmap(SLOT_BASE, AREA_SIZE, self.prot, mmap.MAP_SHARED
                          | MAP_FIXED_NOREPLACE, self.ro_fd, 0)
        if addr != SLOT_BASE:
            raise OSError(ctypes.get_errno(), "cannot map the slot area")
        if self.trampolines:
            addr = _libc.mmap(CELL_BASE, CELLS_SIZE, mmap.PROT_READ | mmap.PROT_WRITE,
                              mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                              -1, 0)
            if addr != CELL_BASE:
                raise OSError(ctypes.get_errno(), "cannot map the result cells")

    def mapped_in(self, pid: int) -> bool:
        """Whether pid's address space holds exactly our read-only mapping at SLOT_BASE (and
        the result cells' right after it, with trampolines)."""
        want = f"{SLOT_BASE:x}-{AREA_END:x} r-{'x' if self.trampolines else '-'}s "
        cells = f"{CELL_BASE:x}-{CELL_BASE + CELLS_SIZE:x} rw-p ".encode()
        area = False
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                for line in f:
                    if line.startswith(want.encode()):
                        fields = line.split()
                        major, minor = (int(x, 16) for x in fields[3].split(b":"))
                        area = (int(fields[4]) == self.ino
                                and os.makedev(major, minor) == self.dev)
                        if not area or not self.trampolines:
                            return area
                    elif line.startswith(cells):
                        return area
        except OSError:
            return False
        return False

    def close(self) -> None:
        if self.keeper_pid:
            os.close(self._keeper_pipe)
            try:
                os.kill(self.keeper_pid, signal.SIGKILL)
                os.waitpid(self.keeper_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.keeper_pid = 0
