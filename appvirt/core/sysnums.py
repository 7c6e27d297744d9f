"""x86_64 system-call names and numbers.

The table below is python-ptrace's x86_64 table (generated on Linux 5.8; 283 under its current
name, timerfd_create) and the calls Linux added since, up to 6.18, from the kernel's
`arch/x86/entry/syscalls/syscall_64.tbl`. Numbers 512-547, the x32 ABI's own entries, are
left out: only reachable with __X32_SYSCALL_BIT, which the filter kills, they are not native
x86_64 calls.

It is written out here rather than read from python-ptrace at every start: importing
python-ptrace's table loads its whole syscall package and its ptrace binding (which runs
ldconfig), some 12 ms of every `appvirt run`. The table test checks that the two agree on
every number python-ptrace knows, and that the running kernel implements nothing beyond what
this module knows.
"""

from __future__ import annotations

from types import MappingProxyType

# Each line: the number of its first name, then names with consecutive numbers.
_SYSCALL_64 = """
  0: read write open close stat
  5: fstat lstat poll lseek mmap
 10: mprotect munmap brk rt_sigaction rt_sigprocmask
 15: rt_sigreturn ioctl pread64 pwrite64 readv
 20: writev access pipe select sched_yield
 25: mremap msync mincore madvise shmget
 30: shmat shmctl dup dup2 pause
 35: nanosleep getitimer alarm setitimer getpid
 40: sendfile socket connect accept sendto
 45: recvfrom sendmsg recvmsg shutdown bind
 50: listen getsockname getpeername socketpair setsockopt
 55: getsockopt clone fork vfork execve
 60: exit wait4 kill uname semget
 65: semop semctl shmdt msgget msgsnd
 70: msgrcv msgctl fcntl flock fsync
 75: fdatasync truncate ftruncate getdents getcwd
 80: chdir fchdir rename mkdir rmdir
 85: creat link unlink symlink readlink
 90: chmod fchmod chown fchown lchown
 95: umask gettimeofday getrlimit getrusage sysinfo
100: times ptrace getuid syslog getgid
105: setuid setgid geteuid getegid setpgid
110: getppid getpgrp setsid setreuid setregid
115: getgroups setgroups setresuid getresuid setresgid
120: getresgid getpgid setfsuid setfsgid getsid
125: capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo
130: rt_sigsuspend sigaltstack utime mknod uselib
135: personality ustat statfs fstatfs sysfs
140: getpriority setpriority sched_setparam sched_getparam sched_setscheduler
145: sched_getscheduler sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock
150: munlock mlockall munlockall vhangup modify_ldt
155: pivot_root _sysctl prctl arch_prctl adjtimex
160: setrlimit chroot sync acct settimeofday
165: mount umount2 swapon swapoff reboot
170: sethostname setdomainname iopl ioperm create_module
175: init_module delete_module get_kernel_syms query_module quotactl
180: nfsservctl getpmsg putpmsg afs_syscall tuxcall
185: security gettid readahead setxattr lsetxattr
190: fsetxattr getxattr lgetxattr fgetxattr listxattr
195: llistxattr flistxattr removexattr lremovexattr fremovexattr
200: tkill time futex sched_setaffinity sched_getaffinity
205: set_thread_area io_setup io_destroy io_getevents io_submit
210: io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old
215: epoll_wait_old remap_file_pages getdents64 set_tid_address restart_syscall
220: semtimedop fadvise64 timer_create timer_settime timer_gettime
225: timer_getoverrun timer_delete clock_settime clock_gettime clock_getres
230: clock_nanosleep exit_group epoll_wait epoll_ctl tgkill
235: utimes vserver mbind set_mempolicy get_mempolicy
240: mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify
245: mq_getsetattr kexec_load waitid add_key request_key
250: keyctl ioprio_set ioprio_get inotify_init inotify_add_watch
255: inotify_rm_watch migrate_pages openat mkdirat mknodat
260: fchownat futimesat newfstatat unlinkat renameat
265: linkat symlinkat readlinkat fchmodat faccessat
270: pselect6 ppoll unshare set_robust_list get_robust_list
275: splice tee sync_file_range vmsplice move_pages
280: utimensat epoll_pwait signalfd timerfd_create eventfd
285: fallocate timerfd_settime timerfd_gettime accept4 signalfd4
290: eventfd2 epoll_create1 dup3 pipe2 inotify_init1
295: preadv pwritev rt_tgsigqueueinfo perf_event_open recvmmsg
300: fanotify_init fanotify_mark prlimit64 name_to_handle_at open_by_handle_at
305: clock_adjtime syncfs sendmmsg setns getcpu
310: process_vm_readv process_vm_writev kcmp finit_module sched_setattr
315: sched_getattr renameat2 seccomp getrandom memfd_create
320: kexec_file_load bpf execveat userfaultfd membarrier
325: mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect
330: pkey_alloc pkey_free statx io_pgetevents rseq
335: uretprobe uprobe
424: pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree
429: move_mount fsopen fsconfig fsmount fspick
434: pidfd_open clone3 close_range openat2 pidfd_getfd
439: faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd
444: landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret process_mrelease
449: futex_waitv set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack
454: futex_wake futex_wait futex_requeue statmount listmount
459: lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat
464: getxattrat listxattrat removexattrat open_tree_attr file_getattr
469: file_setattr
"""


def _parse(table: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for line in table.strip().splitlines():
        first, _, rest = line.partition(":")
        for number, call in enumerate(rest.split(), int(first)):
            if number in names:
                raise ValueError(f"syscall {number} is listed twice")
            names[number] = call
    return names


NAME_BY_NR: MappingProxyType[int, str] = MappingProxyType(_parse(_SYSCALL_64))
NR_BY_NAME: MappingProxyType[str, int] = MappingProxyType({v: k for k, v in NAME_BY_NR.items()})
MAX_NR = max(NAME_BY_NR)


def nr(name: str) -> int:
    """Return the x86_64 number of syscall `name` (KeyError if unknown)."""
    return NR_BY_NAME[name]


def name(number: int) -> str:
    """Return the name of syscall `number`, or `syscall_<n>` if it is not a known call."""
    return NAME_BY_NR.get(number) or f"syscall_{number}"
