/* The compiled part of the tracer's wait loop: what its files share (see _fastpath.c). */
#ifndef APPVIRT_FASTPATH_H
#define APPVIRT_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PATH_MAX_ 4096
#define NAME_MAX_ 255
#define RULE_MAX 512                   /* a rule's JSON text, longer ones go to Python */
#define AUDIT_ARCH_X86_64_ 0xC000003E
#define UMASK_EPOCH_SHIFT 12             /* Engine.umasks: epoch << 12 | mask */
#define UMASK_EPOCHS (1u << 20)
#define SYSCALL_TRAP (SIGTRAP | 0x80)
#define AT_FDCWD_ (-100)
#define AT_SYMLINK_NOFOLLOW_ 0x100
#define AT_NO_AUTOMOUNT_ 0x800
#define AT_EMPTY_PATH_ 0x1000
#define AT_SYMLINK_FOLLOW_ 0x400
#define AT_REMOVEDIR_ 0x200
#define O_TMPFILE_BIT 020000000
#define VALID_OPEN_FLAGS 037777703
#define O_PATH_FLAGS (O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC)
#define OPEN_HOW_SIZE 24
#define MAX_RESTARTS 16
#define MAXSYMLINKS_ 40                /* the kernel's, and the resolver's */
#define NR_MAX 512
#define MAX_ARGS 6
#define MAX_DIRS_ (1 << 16)            /* fastpath.MAX_DIRS: decisions remembered */
#define DEVICE_PASSED 3                /* fastpath.DEVICE_PASSED: a name's, see name_entry */
/* The trampolines' layout (trampoline.py, slotlayout.py; a test compares them). */
#define TRAMP_STRIDE 256
#define TRAMP_ENTRY 2                  /* after the syscall instruction a restart runs */
#define TRAMP_DATA 128                 /* rdi, rsi, rdx, r10, return, nr, syscall insn, token */
#define TRAMP_LAST_JUMP 70             /* the restart's jump: rax holds the program's call */
#define CELL_STRIDE 256                /* a slot's cell is as far from its trampoline as */
                                       /* every other's: one code for all (trampoline.py) */

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#define PIDFD_THREAD_ O_EXCL             /* a pidfd of the thread itself (Linux 6.9) */

enum { ANSWERED, FALLBACK };
/* A thread: Python's; served here; running the slot stub; served here, but what it creates or
 * changes is Python's (a virtual identity's ids that are not appvirt's own); running the slot
 * stub past its mmap of the area, whose fd was checked here to be the area's (stub_mmap) */
enum { UNSERVED, SERVED, STUB, READS, STUB_MAPPED };
enum { NEITHER, PLAIN, OWNED, NAMES, NAME, ITSELF, MERGED };  /* a directory (a name) */
enum Change { UNLINK, UNLINKAT, RMDIR, MKDIR, MKDIRAT, FCHMOD, FCHOWN, FCHMODAT, FCHOWNAT,
              CHMOD, CHOWN, LCHOWN, UTIMENSAT, LINK, LINKAT, RENAME, RENAMEAT, RENAMEAT2,
              N_CHANGES };
/* How a record shows an argument: log/records.py's ArgFormat, the same numbers. */
enum ArgFormat { ARG_PATH, ARG_UNSIGNED, ARG_INT, ARG_UINT, ARG_OCTAL, ARG_POINTER, ARG_HEX,
                 ARG_SYMBOLIC, N_ARG_FORMATS };

typedef struct {
    pid_t tid;                       /* 0: free */
    pid_t restarts_of;               /* the thread whose open restarted (ELOOP) `restarts` */
    int restarts;                    /* times in a row: kept by clear_pending */
    unsigned long long nr, args[4];  /* the program's own call, restored at its exit */
    int owned;                       /* a redirected open (owned, or an upper object in a */
                                     /* merged directory): its end is recorded */
    long long seq;                   /* its log record (0: none) */
    PyObject *created;               /* the guest path it creates (NULL: none) */
    uint32_t token;                  /* resumed through its trampoline (no exit stop), its */
                                     /* result in the cell with this token (0: not so) */
    unsigned long long how;          /* its open_how in the slot */
    Py_ssize_t listed;               /* its place in Engine.listed + 1 (0: not there) */
} Pending;

/* A path operand: as the program passed it, and where it lies (guest and host). */
typedef struct {
    char path[PATH_MAX_];
    Py_ssize_t path_len;
    char guest[PATH_MAX_], host[PATH_MAX_];   /* dir/name; the host one is the upper object */
    Py_ssize_t guest_dir, host_dir;           /* the directories' lengths in them */
    int kind;                                 /* PLAIN, OWNED or NAME */
    char rule[RULE_MAX];                      /* OWNED: the JSON text of the policy rule */
    Py_ssize_t rule_len;                      /* that decides every name in the directory, */
    unsigned long long dotdot;                /* and the view's inode of its parent */
    int dir_there;                            /* find_object: the directory exists */
    int dfd;                                  /* its directory held open (dirfds), or -1 */
    int dfd_errno;                            /* dfd -1: its open's errno (ENOENT ...), or 0 */
    int lower_dfd;                            /* MERGED: the host's directory held open */
    int upper_obj;                            /* MERGED: the name is the upper directory's */
                                              /* (found: it has it; missing: whited out if 0) */
    int passed;                               /* NAME: a host device a passthrough rule */
                                              /* opens for writing too (DEVICE_PASSED) */
    int host_only;                            /* find_object: every step of its walk (each */
                                              /* symlink followed) was the host's own */
                                              /* (PLAIN, NAME), as the host's walk goes */
} Operand;

/* The name of op's object in its host directory. */
static inline const char *name_of(const Operand *op)
{
    return op->host + (op->host_dir > 1 ? op->host_dir : 0) + 1;
}

/* How the records of one syscall are made (records.py's arg_specs, see _fastpath_log.c). */
typedef struct {
    PyObject *key;                   /* bytes: the argument's JSON name and ':' */
    int fmt;                         /* enum ArgFormat */
    int dirfd;                       /* AT_FDCWD is shown by name */
    PyObject *memo, *symbolic;       /* ARG_SYMBOLIC: value -> text (dict), and its maker */
} ArgSpec;

typedef struct {
    PyObject *head;                  /* bytes: "syscall":"...","class":"...", */
    int nargs;
    ArgSpec arg[MAX_ARGS];
} CallSpec;

/* A record being made: a growing buffer. */
typedef struct {
    char *buf;
    size_t len, cap;
    int failed;                      /* out of memory: the record is not written */
} Line;

/* A virtual clock's state (virt/clock.py's VirtualClock, Engine.set_clock). */
typedef struct {
    int known;                       /* set: the time calls are answered here */
    int frozen;
    long long frozen_ns, start_real, start_virtual, start_monotonic, start_boottime;
    double rate;
} VirtualTime;

typedef struct FdCache FdCache;     /* _fastpath_fds.c */
typedef struct Handover Handover;   /* _fastpath_notify.c */

typedef struct {
    PyObject_HEAD
    PyObject *plain;                 /* dict: directory -> what it is (see _fastpath.c) */
    PyObject *learn;                 /* learn(dir): decides a directory not in it */
    PyObject *names, *learn_name;    /* path -> bool or a stat answer, and its learn */
    int owned;                       /* owned directories are served */
    PyObject *made;                  /* list: (guest path, S_IFMT) it changed (note_made) */
    PyObject *dirfds;                /* dict: decided directory -> its O_PATH fd (dir_fd) */
    PyObject *closing;               /* list: fds of forgotten ones, closed between stops */
    FdCache *fds;                    /* the guest paths of fds to upper objects */
    unsigned long long fd_paths_known;   /* ... given without a readlink */
    char upper[PATH_MAX_];           /* the upper layer's root: host paths below it are */
    Py_ssize_t upper_len;            /* the guest paths below "/" (0: none) */
    int nr_access, nr_faccessat, nr_faccessat2;
    int nr_change[N_CHANGES];        /* fastpath.CHANGES, in the order of enum Change */
    Py_buffer area;                  /* the tracer's writable view of the slot area */
    unsigned long long slot_base, slot_size;
    dev_t slot_dev;                  /* the area's file (a memfd): its device and inode, */
    ino_t slot_ino;                  /* ... 0: unknown (stub_mmap checks nothing) */
    int nr_newfstatat, nr_openat, nr_getdents64, nr_openat2, nr_getcwd, nr_execve;
    int nr_stat, nr_lstat, nr_readlink, nr_readlinkat, nr_statfs;
    char stat_ok;                    /* no recorded owners: nothing to patch or forget */
    char exec_native;                /* no exec rules: a host program may run natively */
    char identity;                   /* a virtual identity: execve is Python's (set-id */
                                     /* programs); a thread whose ids are not appvirt's is */
                                     /* served READS (its creations and changes are Python's) */
    char log_reads;                  /* log level all: a read is answered only with its */
                                     /* record (read_record), the other calls are Python's */
    PyObject *dir_rule, *rules;      /* dir_rule(dir): the JSON text of the rule of names in */
                                     /* plain directory dir; rules: its answers (a dict) */
    int clock_virtual;               /* "now" is the policy's clock, not the kernel's */
    VirtualTime clock;               /* ... and its state (_fastpath_clock.c) */
    int nr_clock_gettime, nr_gettimeofday, nr_time;
    int32_t *slot_of;                /* tid -> its slot index + 1; 0: none known */
    int32_t *pid_of;                 /* tid -> its process (for the log) */
    uint32_t *umasks;                /* process -> its umask kept (umask_of), with its epoch */
    uint32_t umask_epoch;            /* ... a kept one is current: forget_umasks ends them */
    int keep_umasks;                 /* no umask call runs: a umask read may be kept */
    uint8_t *eligible;               /* tid -> SERVED: its calls may be answered here; STUB, */
                                     /* STUB_MAPPED: its slot stub's calls are resumed here */
                                     /* (inject.py) */
    Py_ssize_t tids;
    Pending *pending;                /* by slot index */
    Py_ssize_t slots;
    unsigned long long tramp_base;   /* the trampolines, 0: none (exit stops instead) */
    unsigned long long cell_base;    /* the result cells */
    char tramp_code[TRAMP_DATA];     /* a trampoline's code, written to a slot's */
    Py_ssize_t tramp_len;
    uint8_t *tramp_written;          /* ... the first time it has an open (by slot) */
    uint32_t token;                  /* the last open's token */
    int32_t *listed;                 /* slots whose trampoline's open creates a file, not */
    Py_ssize_t n_listed;             /* noted yet: other threads' stops look at their cells */
    unsigned long long tramp_opens;
    unsigned long long answered[NR_MAX], seccomp_stops, exit_stops, signal_stops, stub_stops;
    unsigned long long decided;      /* directories decided here, not by learn */
    pid_t held_pid;                  /* a stop not handed over yet (learn raised) */
    int held_status;
    struct timespec t0;              /* when the current stop was reported */
    struct user_regs_struct regs;    /* the current seccomp stop's registers (stop_call) */
    pid_t regs_tid;                  /* ... whose they are (0: none read at this stop) */
    /* The intercept log (see _fastpath_log.c). */
    int log_fd;                      /* -1: the engine's calls are not logged */
    PyObject *log_ring;              /* a LogRing its records go through (NULL: write(2)) */
    long long seq;                   /* the log's record numbers, shared with Python */
    int log_errno;                   /* the first failed write (0: none) */
    unsigned long long tmp_names;    /* temporary names made in the upper layer */
    PyObject *programs;              /* dict: pid -> its executable (str) */
    PyObject *errnames;              /* dict: errno -> its name (str) */
    PyObject *spec_of;               /* spec_of(nr): how the engine logs calls nr */
    CallSpec *specs[NR_MAX];         /* the calls the engine logs */
    uint8_t spec_asked[NR_MAX];
    Line line;
    /* Seccomp user notification (_fastpath_notify.c). */
    int listener;                    /* the filter's listener, -1: every call is a stop */
    pid_t take_from;                 /* ... to be taken from this process (0: not) */
    int hand;                        /* ... which writes its number there */
    int listener_error;              /* errno of a listener that could not be taken */
    int listener_idle;               /* ... hung up: no thread of the program has the filter */
    unsigned long long mark;         /* the r9 the filter sends to RET_TRACE */
    const struct seccomp_notif *notif;   /* the notification being answered, NULL: a stop */
    int drain;                       /* stops may be waiting: waitpid before the listener */
    struct sigaction old_chld;       /* SIGCHLD's disposition before notify_start */
    int sigfd;                       /* a signalfd of SIGCHLD (blocked in Engine_wait) */
    Handover *handovers;             /* notified calls on their way to the ptrace handlers */
    Py_ssize_t n_handovers, cap_handovers;  /* (a few at most: searched) */
    unsigned long long notified, handed_over, handover_stops;
} Engine;

/* tid's process, as Python told the engine (Engine.enable); tid itself when unknown. */
static inline pid_t process_of(const Engine *self, pid_t tid)
{
    return tid > 0 && tid < self->tids && self->pid_of[tid] > 0 ? self->pid_of[tid] : tid;
}

/* Slot's trampoline (trampoline.py): its address in tracees, its bytes in the tracer's view
 * of the area, and its data there. */
static inline unsigned long long tramp_at(const Engine *self, int slot)
{
    return self->tramp_base + (unsigned long long)slot * TRAMP_STRIDE;
}

static inline char *tramp_view(const Engine *self, int slot)
{
    return (char *)self->area.buf + (tramp_at(self, slot) - self->slot_base);
}

static inline unsigned long long *tramp_data(const Engine *self, int slot)
{
    return (unsigned long long *)(tramp_view(self, slot) + TRAMP_DATA);
}

/* _fastpath_answer.c: the answers, the only writes to a tracee and its resumptions */
int write_mem(pid_t tid, unsigned long long addr, const void *data, size_t len);
void emulate(Engine *self, pid_t tid, long result);
void let_run(Engine *self, pid_t tid);
void deliver(pid_t tid, int sig);
int stop_call(Engine *self, pid_t tid, struct __ptrace_syscall_info *info);
Pending *hold_call(Engine *self, pid_t tid, int slot, unsigned long long nr,
                   struct user_regs_struct *regs);
void run_held(Pending *p, pid_t tid, const struct user_regs_struct *regs);
int give_back(Engine *self, Pending *p, pid_t tid, long *result);
void run_by_trampoline(Engine *self, Pending *p, pid_t tid, int slot,
                       struct user_regs_struct *regs);
int finish_trampoline(Engine *self, Pending *p, pid_t tid, int slot, long *result);

/* _fastpath_notify.c: the calls notified by seccomp */
int notify_start(Engine *self, pid_t take_from, int hand, unsigned long long mark);
void take_listener(Engine *self, int stopped);
void notify_stop(Engine *self);
int notify_wait(Engine *self);
void notify_take(Engine *self);
void notif_answer(Engine *self, long result, int cont);
int handover_stop(Engine *self, pid_t tid, int status, struct __ptrace_syscall_info *info,
                  int *have_info);
void drop_handover(Engine *self, pid_t tid);
int recheck(Engine *self, pid_t tid, int python_exit);
/* _fastpath.c: a notified call answered as its stop would be (ANSWERED), or not */
int answer_notified(Engine *self, pid_t tid, const struct seccomp_notif *req);

/* _fastpath_inflight.c: opens resumed through trampolines, until their results are in */
int settle_own(Engine *self, pid_t tid, int slot, int status,
               struct __ptrace_syscall_info *info, int *have_info);
void settle_others(Engine *self, pid_t tid);
void settle_gone(Engine *self, Pending *p, pid_t tid);
void list_open(Engine *self, Pending *p, int slot);

/* _fastpath_paths.c: the tracee's paths, and where its path operands lie */
Py_ssize_t read_cstring(pid_t tid, unsigned long long addr, char *buf);
long openat2_(const char *path, unsigned long long flags);
Py_ssize_t fd_path(const char *upper, Py_ssize_t upper_len, pid_t tid, long dirfd, char *dir,
                   int *in_upper);
int split_path(Engine *self, const char *upper, Py_ssize_t upper_len, pid_t tid, long dirfd,
               const char *path, Py_ssize_t len, char *dir, Py_ssize_t *dir_len,
               const char **name, int *fails);
int dir_kind(Engine *self, const char *dir, Py_ssize_t len, char *host, Py_ssize_t *host_len,
             Operand *info);
#define UNLESS_OWNED 2               /* find_object's `follow` for a removal, and what */
#define UNLOOKED 2                   /* it returns in an owned directory (see there) */
int find_object(Engine *self, pid_t tid, long dirfd, unsigned long long addr, int follow,
                Operand *op, struct stat *st);
int find_path(Engine *self, pid_t tid, long dirfd, int follow, Operand *op,
              struct stat *st);
ssize_t readlink_of(const Operand *op, char *buf, size_t size);
int owned_itself(Engine *self, const Operand *op);
#define KIND_UNKNOWN (-1)             /* note_made: look the object up */
int upper_path(const Engine *self, const char *guest, size_t len, char *host);
int upper_lstat(Engine *self, const char *guest, size_t len, struct stat *st);
int note_made(Engine *self, const char *guest, int kind);
int note_made_at(Engine *self, const char *guest, int kind, pid_t tid, long fd);
int name_entry(Engine *self, const char *path, PyObject **shown);
int forget_name(Engine *self, const char *path, Py_ssize_t len);
void forget_dirs(Engine *self);
void close_forgotten(Engine *self);
int append_name(char *buf, Py_ssize_t dir_len, const char *name, Py_ssize_t nlen);
Py_ssize_t itself_path(Engine *self, pid_t tid, long dirfd, const char *path, Py_ssize_t len,
                       char *guest, int *follow, int *fails);
int directory_itself(Engine *self, pid_t tid, long dirfd, const char *path, Py_ssize_t len,
                     int follow, char *host, int *fails);

/* _fastpath_reads.c: reads, and opens */
int do_newfstatat(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);
int do_openat(Engine *self, pid_t tid, int slot, const struct __ptrace_syscall_info *in);
int do_access(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);
int do_getcwd(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);
int do_readlink(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);
int do_statfs(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);
int do_execve(Engine *self, pid_t tid, int slot, const struct __ptrace_syscall_info *in);
void finish_open(Engine *self, Pending *p, pid_t tid);
void clear_pending(Pending *p);
void count_restart(Pending *p, pid_t tid, int restart);
int restarted_enough(const Pending *p, pid_t tid);

/* _fastpath_fds.c: the guest paths of the program's fds to upper-layer objects */
FdCache *fds_new(void);
void fds_free(FdCache *c);
int program_fd(FdCache *c, pid_t tid, long fd);
int fd_object(FdCache *c, pid_t tid, long fd, struct stat *st);
Py_ssize_t fd_path_of(Engine *self, pid_t tid, long dirfd, char *dir, int *in_upper,
                      int *dup);
void fds_opened(Engine *self, pid_t tid, long fd, const char *guest, const struct stat *st);
void fds_forget_path(Engine *self, const char *guest, Py_ssize_t len);
void fds_forget_all(Engine *self);
void fds_forget_thread(Engine *self, pid_t tid);

/* _fastpath_listing.c: listings */
int do_getdents64(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);

/* _fastpath_clock.c: the time calls of a virtual clock */
int do_time_call(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in);

/* _fastpath_owned.c: changes in owned directories */
int do_change(Engine *self, pid_t tid, int c, const struct __ptrace_syscall_info *in);

/* _fastpath_log.c: the records */
typedef struct {
    const char *decision;            /* NULL: "redirected" */
    const char *paths[MAX_ARGS];     /* the path arguments as read, by argument (NULL: null) */
    const char *rule;                /* JSON text, or NULL */
    Py_ssize_t rule_len;
    const char *path, *host_path;    /* the record's path and host_path (NULL: none) */
    int has_result;
    long result;                     /* a negative one, a failure, with its errno name */
} CallRecord;
long long log_call(Engine *self, pid_t tid, int nr, const uint64_t *args, const CallRecord *r);
void log_result(Engine *self, pid_t tid, long long call, long result);
int logged(Engine *self, int nr);
/* What a read's record holds besides the call (read_record): the rule of the directory, the
 * object's path, the result (a failure with its errno name). */
enum { REC_RULE = 1, REC_PATH = 2, REC_RESULT = 4 };
long long read_record(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                      int path_arg, const Operand *op, int fields, long result);
void free_specs(Engine *self);
PyObject *format_call(PyObject *mod, PyObject *args);

/* _fastpath_ring.c: the log's ring and its writer process */
#define RING_SIZE (1 << 20)              /* bytes (LOG_RING_SIZE) */
extern PyTypeObject LogRingType;
int ring_put(PyObject *ring, const char *buf, size_t len);
int append_whole(int fd, const char *buf, size_t len);

#endif
