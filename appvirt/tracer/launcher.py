"""Start a program suspended under the tracer, and see it through to its exit status.

fork; the child joins its own process group, waits until the tracer has seized it, maps the
slot area, drops core dumps (hard RLIMIT_CORE 0), closes inherited fds above 2, sets
no_new_privs, installs the seccomp filter, and execs. The tracer has PTRACE_O_EXITKILL and is
a child subreaper, so orphans come back to it and nothing outlives it. A warm run's C client
forks the program instead (a run-here), its child doing the same, and is the subreaper
(clientspawn.py).
"""

import ctypes
import errno
import os
import resource
import signal
import stat
from typing import NamedTuple

from ..core.table import SyscallTable
from ..syscalls.files import LISTING_CALLS
from ..errors import EnvironmentUnsupported, ExitStatus, LaunchError
from ..forwarding import forward_signals
from ..log.writer import LogWriter
from ..policy.model import Policy
from . import _ptrace as pt
from . import clientspawn, fastpath, seccomp
from ..fs.overlayfs import OverlayFS
from ..overlay import Overlay
from ..policy.model import FileMode
from ..state import AppDir, appvirt_home
from ..store import Store
from ..virt.clock import StoredClock, VirtualClock
from ..virt.clockstore import load_clock
from ..virt.machinepolicy import ModulesAction, PowerEvent
from ..virt.uts import VirtualUts
from ..store.wellknown import UTS_DOMAINNAME, UTS_HOSTNAME
from .context import TracerContext, read_host_proc_modules
from .machinefiles import MachineFiles
from .loop import Stats, Tracer
from .pathsearch import which
from .placement import Placement
from .slots import SlotArena
from .storefiles import serve_store

PR_SET_CHILD_SUBREAPER = 36
SYS_CLOSE_RANGE = 436           # x86_64; Linux 5.9
LAST_FD = 0xFFFFFFFF            # close_range's "up to the last"
_libc = ctypes.CDLL(None, use_errno=True)


class RunResult(NamedTuple):
    exit_code: int
    stats: Stats
    log_problem: str | None
    internal_error: str | None
    power: PowerEvent | None = None    # the program powered its machine off or restarted it
    killed: str | None = None          # the first process appvirt killed at an exec, and why


def find_program(name: str, env: dict[str, str]) -> str:
    """Find the program as a shell would; raise LaunchError with the shell's 127/126."""
    if "/" in name:
        path = name
    else:
        found = which(name, env.get("PATH", os.defpath))
        if found is None:
            raise LaunchError(f"{name}: command not found", exit_status=ExitStatus.NOT_FOUND)
        path = found
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LaunchError(f"{name}: No such file or directory",
                          exit_status=ExitStatus.NOT_FOUND) from None
    except OSError as e:
        raise LaunchError(f"{name}: {e.strerror}", exit_status=ExitStatus.NOT_EXECUTABLE) from None
    if stat.S_ISDIR(st.st_mode):
        raise LaunchError(f"{name}: Is a directory", exit_status=ExitStatus.NOT_EXECUTABLE)
    if not os.access(path, os.X_OK):
        raise LaunchError(f"{name}: Permission denied", exit_status=ExitStatus.NOT_EXECUTABLE)
    return path


def _controlling_tty() -> int | None:
    """An fd of our controlling terminal when we are in its foreground group."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
        except OSError:
            continue
    return None


def _suspend_like_the_program(tty: int, pgid: int) -> None:
    """The program stopped for the terminal: give the terminal back and stop appvirt too, so
    the shell sees a stopped job; on `fg`/`bg` (SIGCONT) resume the program."""
    try:
        os.tcsetpgrp(tty, os.getpgrp())
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGSTOP)
    # Continued by the shell. In the foreground again? Then so is the program.
    try:
        if os.tcgetpgrp(tty) == os.getpgrp():
            os.tcsetpgrp(tty, pgid)
    except OSError:
        pass
    try:
        os.killpg(pgid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _signals_not_default() -> list[int]:
    """The signals whose disposition here is not the default: ignored (Python ignores SIGPIPE
    and SIGXFSZ, and exec keeps an ignored signal so) or handled by Python."""
    return [s for s in range(1, signal.NSIG)
            if s not in (signal.SIGKILL, signal.SIGSTOP)
            and signal.getsignal(s) not in (signal.SIG_DFL, None)]


def _close_all_but(*keep: int) -> None:
    """Close every fd but these: close_range(2) on the ranges between them, else (a kernel
    before Linux 5.9) each fd that /proc/self/fd lists."""
    low = 0
    for fd in sorted(set(keep)) + [LAST_FD + 1]:
        if fd > low and _libc.syscall(SYS_CLOSE_RANGE, low, fd - 1, 0) != 0:
            break
        low = fd + 1
    else:
        return
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass


def _child(path: str, argv: list[str], env: dict[str, str], prog: seccomp.PackedFilter,
           reset: list[int], arena: SlotArena, go: int, report: int, hand: int
           ) -> None:  # pragma: no cover - runs in the forked child
    """Runs in the forked child; never returns. What it needs is made before the fork (the
    packed filter, the signals to reset): a fork of the tracer pays for each page it
    writes. A filter that notifies has a listener, whose number goes to the tracer (hand),
    which takes it at the execve's stop; the exec closes this process's copy."""
    try:
        os.setpgid(0, 0)
        if os.read(go, 1) != b"x":          # the tracer died before seizing us
            os._exit(ExitStatus.INTERNAL)
        os.close(go)
        for sig in reset:                   # the program starts with every default
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        arena.map_into_self()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _close_all_but(0, 1, 2, report, hand)   # (both are CLOEXEC)
        listener = seccomp.install(prog)
        if listener >= 0:
            os.write(hand, b"%d" % listener)
        os.execve(path, argv, env)
    except OSError as e:
        try:
            os.write(report, str(e.errno or 0).encode())
        finally:
            os._exit(ExitStatus.NOT_EXECUTABLE if e.errno in (errno.EACCES, errno.ENOEXEC)
                     else ExitStatus.NOT_FOUND if e.errno == errno.ENOENT
                     else ExitStatus.INTERNAL)
    os._exit(ExitStatus.INTERNAL)


def _fork_child(path: str, argv: list[str], env: dict[str, str], packed: seccomp.PackedFilter,
                arena: SlotArena, go: tuple[int, int], report: tuple[int, int],
                hand: tuple[int, int]) -> int:
    """Fork the program's process (_child) with the pipes' (read, write) ends it needs; its
    pid. Each end is closed on the side that does not use it: the child must see the go
    pipe's end when the tracer dies."""
    reset = _signals_not_default()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        for fd in (go[1], report[0], hand[0]):
            os.close(fd)
        _child(path, argv, env, packed, reset, arena, go[0], report[1], hand[1])
    for fd in (go[0], report[1], hand[1]):
        os.close(fd)
    return pid


def traced_calls(table: SyscallTable, policy: Policy, overlay_empty: bool, overlay_meta: bool
                 ) -> dict[str, tuple]:
    """The calls that stop under the policy over an overlay in this state (for the filter)."""
    traced: dict[str, tuple] = table.traced_for(policy)
    if not overlay_empty:           # earlier changes show even where this policy makes none
        traced.update((n, table.by_name[n].trace_if) for n in LISTING_CALLS)
    if overlay_meta:                # recorded owners and devices show through fstat too
        traced["fstat"] = ()
    return traced


def open_filesystem(policy: Policy, app: AppDir) -> tuple[Overlay, OverlayFS]:
    """The app's overlay as the program's filesystem. Locked for the run when the policy can
    write its upper layer (one run at a time may); a read-only look otherwise."""
    def mode_of(guest: bytes) -> FileMode:
        return policy.files.mode_for(guest)[0]
    home = os.fsencode(appvirt_home())
    writing = {policy.files.default, *(r.mode for r in policy.files.rules)} & {
        FileMode.OVERLAY, FileMode.PRIVATE}
    if writing:
        ov = Overlay.open(app, mode_of=mode_of, hidden_host=(home,))
    else:
        ov = Overlay(app.upper, mode_of=mode_of, hidden_host=(home, os.fsencode(app.root)),
                     recover=False)
    return ov, OverlayFS(ov, policy.files.rules, hidden=(home,))


def _with_stored_rate(policy: Policy, store: Store | None) -> Policy:
    """The policy with the clock's rate the app's store keeps (machine/clock rate_ppm: set with
    `appvirt reg`, or kept by a time set under a rate), at which VirtualClock runs: the filter
    then stops what that rate needs (the monotonic clocks, sleeps and timeouts)."""
    spec = policy.time.spec
    if spec is None or store is None:
        return policy
    rate_ppm = load_clock(store).rate_ppm
    if not rate_ppm or rate_ppm / 1e6 == spec.rate:
        return policy
    return policy._replace(time=policy.time._replace(spec=spec._replace(rate=rate_ppm / 1e6)))


def _virtual_machine(ctx: TracerContext, policy: Policy, store: Store | None, app: AppDir
                     ) -> MachineFiles:
    """Give the context the app's virtual machine state the policy asks for."""
    ctx.store = store
    machine = ctx.machine = MachineFiles(app.root)
    if policy.time.virtual:
        assert policy.time.spec is not None
        ctx.clock = VirtualClock(policy.time.spec, load_clock(store) if store else StoredClock())
    if policy.uts.virtual:
        uts = ctx.uts = VirtualUts(policy.uts, store)
        machine.provide(b"/proc/sys/kernel/hostname", lambda: uts.proc_file(UTS_HOSTNAME))
        machine.provide(b"/proc/sys/kernel/domainname", lambda: uts.proc_file(UTS_DOMAINNAME))
    if ctx.identity is not None:
        assert policy.identity is not None
        identity = ctx.identity
        if store is not None:
            identity.record(store, policy.identity)
        machine.provide_paths(lambda path: identity.status_file(path, ctx.is_member))
    if policy.modules is ModulesAction.VIRTUAL:
        from ..virt.modules import SYS_MODULE, VirtualModules
        tree = ctx.fs.machine = machine.tree((SYS_MODULE,))
        modules = ctx.modules = VirtualModules(store, tree)
        machine.provide(b"/proc/modules",
                        lambda: modules.proc_modules(read_host_proc_modules()))
    return machine


def run_sandboxed(argv: list[str], policy: Policy, table: SyscallTable, log_path: str | None,
                  app: AppDir, env: dict[str, str] | None = None,
                  store: Store | None = None) -> RunResult:
    """Run argv in the sandbox; return its exit code (128+N if killed by signal N)."""
    policy = _with_stored_rate(policy, store)
    env = dict(os.environ if env is None else env)
    path = find_program(argv[0], env)
    seccomp.check_available()
    log = LogWriter(log_path) if log_path else None
    arena = SlotArena()
    arena.start_keeper()
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    hand_r, hand_w = os.pipe2(os.O_CLOEXEC)
    tty = _controlling_tty()
    tracer = Tracer(table, policy, arena, log)
    overlay, fs = open_filesystem(policy, app)
    traced = traced_calls(table, policy, overlay.empty, bool(overlay.meta))
    notified = fastpath.notified(policy, traced)
    packed = seccomp.packed_filter(table, traced, notified)
    tracer.ctx.view = tracer.ctx.fs = fs
    machine = _virtual_machine(tracer.ctx, policy, store, app)
    if store is not None:
        serve_store(tracer.ctx, policy, store, machine, tracer._emit)
    if fastpath.wanted(policy):         # after serve_store: the filesystem is final
        tracer.fast = fastpath.FastPath(tracer.ctx.fs, arena.view, tracer,
                                        trampolines=arena.trampolines,
                                        area_file=(arena.dev, arena.ino))
    placement = Placement(lambda: tracer.tasks.by_tid.keys(), watchdog=tracer.check_stale)
    tracer.ctx.placement = placement
    placement.gather_self()          # the child inherits it: tracer and tracee on one CPU
    spawner = clientspawn.current
    go_w = -1
    if spawner is None:
        go_r, go_w = os.pipe()
        pid = _fork_child(path, argv, env, packed, arena, (go_r, go_w), (rep_r, rep_w),
                          (hand_r, hand_w))
    else:                               # the client forks it (clientspawn.py)
        try:
            pid = spawner.spawn(path, argv, env, packed, arena, rep_w, hand_w)
        except BaseException:
            os.close(hand_r)
            os.close(rep_r)
            arena.close()
            raise
        finally:
            os.close(rep_w)
            os.close(hand_w)
        os.sched_setaffinity(pid, os.sched_getaffinity(0))  # where placement wants it
    if packed.listener and tracer.fast is not None:
        tracer.fast.notify(pid, hand_r)     # hand_r is the engine's now
    else:
        os.close(hand_r)
    if spawner is None:
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
    try:
        pt.seize(pid)
    except Exception as e:
        os.kill(pid, signal.SIGKILL)
        if spawner is None:
            os.waitpid(pid, 0)
        arena.close()
        raise EnvironmentUnsupported(
            f"cannot trace the program: {e} (is appvirt itself being traced, or is ptrace "
            "blocked here?)") from None
    if spawner is not None:
        tracer.on_terminal_stop = spawner.terminal_stop     # the client has the terminal
    elif tty is not None:
        tracer.on_terminal_stop = lambda: _suspend_like_the_program(tty, pid)
    old_handlers = forward_signals(pid)
    ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        if tty is not None:
            try:
                os.tcsetpgrp(tty, pid)     # Ctrl-C and friends go to the program's group
            except OSError:
                tty = None
        if spawner is None:
            os.write(go_w, b"x")
            os.close(go_w)
        else:
            spawner.go()
        placement.start_sampling()
        status = tracer.run(pid)
    finally:
        placement.stop()
        if tracer.fast is not None:
            unnotified = tracer.fast.end_notify()
            if unnotified is not None and tracer.first_error is None:
                tracer.first_error = unnotified
        if tty is not None:
            try:
                os.tcsetpgrp(tty, os.getpgrp())
            except OSError:
                pass
        signal.signal(signal.SIGTTOU, ttou)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        arena.close()
        machine.close()
        overlay.close()
        if log is not None:
            log.close()
    report = os.read(rep_r, 64)
    os.close(rep_r)
    if report:
        err = int(report)
        raise LaunchError(f"{argv[0]}: {os.strerror(err)}",
                          exit_status=ExitStatus.NOT_EXECUTABLE if err in (
                              errno.EACCES, errno.ENOEXEC) else ExitStatus.NOT_FOUND)
    code = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
            else ExitStatus.SIGNAL_BASE + os.WTERMSIG(status))
    return RunResult(code, tracer.stats, log.failed if log else None, tracer.first_error,
                     tracer.power_event, tracer.first_kill)


