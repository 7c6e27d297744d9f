"""Raw ptrace(2) requests for the tracer's hot path (the "unsafe" module).

libc's ptrace(2) through ctypes, with the requests the tracer needs (SEIZE, LISTEN and
GET_SYSCALL_INFO among them), keeping each stop's work to as few calls as possible: one
GET_SYSCALL_INFO reads number, arguments and arch at once. It does not use python-ptrace's
binding: importing that costs every start-up a run of ldconfig (ctypes.util.find_library).
"""

import ctypes
import errno
import struct
from typing import NamedTuple

from ..errors import TraceeGone


class PtraceError(Exception):
    """A ptrace request failed for another reason than a vanished tracee."""

    def __init__(self, message: str, errno: int | None = None, pid: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.pid = pid


class user_regs_struct(ctypes.Structure):  # noqa: N801 - the C name, as in <sys/user.h>
    """struct user_regs_struct of x86_64 (PTRACE_GETREGS, PTRACE_SETREGS)."""

    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
        "es", "fs", "gs")]

PTRACE_PEEKTEXT = 1
PTRACE_PEEKUSER = 3
PTRACE_POKETEXT = 4
PTRACE_POKEUSER = 6
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_O_TRACESYSGOOD = 0x01
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

TRACER_OPTIONS = (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK
                  | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_TRACESECCOMP
                  | PTRACE_O_EXITKILL)

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

# ptrace_syscall_info.op
OP_NONE, OP_ENTRY, OP_EXIT, OP_SECCOMP = 0, 1, 2, 3

AUDIT_ARCH_X86_64 = 0xC000003E

# Byte offsets of registers in struct user_regs_struct (x86_64), for PTRACE_POKEUSER.
REG_OFFSET = {name: i * 8 for i, (name, _t) in enumerate(user_regs_struct._fields_)}
ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
OFF_RAX = REG_OFFSET["rax"]
OFF_ORIG_RAX = REG_OFFSET["orig_rax"]
OFF_RIP = REG_OFFSET["rip"]

_libc = ctypes.CDLL(None, use_errno=True)
_raw = _libc.ptrace
_raw.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_raw.restype = ctypes.c_long

_INFO_SIZE = 88
_info_buf = ctypes.create_string_buffer(_INFO_SIZE)
_info_op = (ctypes.c_uint8 * 1).from_buffer(_info_buf)
_info_addr = ctypes.addressof(_info_buf)
_SECCOMP_INFO = struct.Struct("<BxxxIQQQ6QI")   # op, arch, ip, sp, nr, args[6], ret_data
_EXIT_INFO = struct.Struct("<BxxxIQQqB")         # op, arch, ip, sp, rval, is_error
_msg = ctypes.c_ulong()
_msg_addr = ctypes.addressof(_msg)


def _fail(tid: int, request: int) -> None:
    err = ctypes.get_errno()
    if err == errno.ESRCH:
        raise TraceeGone(tid)
    raise PtraceError(f"ptrace({request:#x}, {tid}) failed: {errno.errorcode.get(err, err)}",
                      errno=err, pid=tid)


def request(req: int, tid: int, addr: int = 0, data: int = 0) -> int:
    """Issue one ptrace request; ESRCH becomes TraceeGone, other failures PtraceError."""
    rv = _raw(req, tid, addr, data)
    if rv == -1 and req not in (PTRACE_PEEKUSER, PTRACE_PEEKTEXT):
        _fail(tid, req)
    return rv


def seize(tid: int, options: int = TRACER_OPTIONS) -> None:
    request(PTRACE_SEIZE, tid, 0, options)


def cont(tid: int, sig: int = 0) -> None:
    request(PTRACE_CONT, tid, 0, sig)


def syscall(tid: int, sig: int = 0) -> None:
    request(PTRACE_SYSCALL, tid, 0, sig)


def listen(tid: int) -> None:
    request(PTRACE_LISTEN, tid, 0, 0)


def kill(tid: int) -> None:
    try:
        request(PTRACE_KILL, tid)
    except (TraceeGone, PtraceError):
        pass


def geteventmsg(tid: int) -> int:
    request(PTRACE_GETEVENTMSG, tid, 0, _msg_addr)
    return _msg.value


def poke_user(tid: int, offset: int, value: int) -> None:
    request(PTRACE_POKEUSER, tid, offset, value & 0xFFFFFFFFFFFFFFFF)


def peek_text(tid: int, addr: int) -> int:
    ctypes.set_errno(0)
    rv = _raw(PTRACE_PEEKTEXT, tid, addr, 0)
    if rv == -1 and ctypes.get_errno():
        _fail(tid, PTRACE_PEEKTEXT)
    return rv & 0xFFFFFFFFFFFFFFFF


def poke_text(tid: int, addr: int, word: int) -> None:
    request(PTRACE_POKETEXT, tid, addr, word & 0xFFFFFFFFFFFFFFFF)


def get_regs(tid: int) -> user_regs_struct:
    regs = user_regs_struct()
    request(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    return regs


def copy_regs(regs: user_regs_struct) -> user_regs_struct:
    return user_regs_struct.from_buffer_copy(regs)


def set_regs(tid: int, regs: user_regs_struct) -> None:
    request(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))


class SyscallInfo(NamedTuple):
    """The kernel's own view of a syscall stop (PTRACE_GET_SYSCALL_INFO, Linux >= 5.3).
    A named tuple: built at every stop, and a tuple is four times cheaper to make than a
    frozen dataclass."""

    op: int
    arch: int
    ip: int
    sp: int
    nr: int = -1
    args: tuple[int, ...] = ()
    ret_data: int = 0
    rval: int = 0
    is_error: bool = False


def syscall_info(tid: int) -> SyscallInfo:
    """Read the stop's syscall info; never guess entry/exit by alternation (threat #8)."""
    n = _raw(PTRACE_GET_SYSCALL_INFO, tid, _INFO_SIZE, _info_addr)
    if n == -1:
        _fail(tid, PTRACE_GET_SYSCALL_INFO)
    op = _info_op[0]
    if op == OP_SECCOMP:
        t = _SECCOMP_INFO.unpack_from(_info_buf)
        return SyscallInfo(op, t[1], t[2], t[3], t[4], t[5:11], t[11])
    if op == OP_EXIT:
        op, arch, ip, sp, rval, is_error = _EXIT_INFO.unpack_from(_info_buf)
        return SyscallInfo(op, arch, ip, sp, rval=rval, is_error=bool(is_error))
    if op == OP_ENTRY:
        t = _SECCOMP_INFO.unpack_from(_info_buf)
        return SyscallInfo(op, t[1], t[2], t[3], t[4], t[5:11])
    return SyscallInfo(op, 0, 0, 0)
