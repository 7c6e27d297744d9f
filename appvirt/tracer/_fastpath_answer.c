/* How the compiled loop answers a stop: the only code of it that writes a tracee's memory or
 * registers, or resumes it (see _fastpath.c). Every answer is one of:
 *   emulate     the call does not run, the program sees a result (after write_mem of what
 *               the call would have written);
 *   let_run     the kernel runs the call as the program made it;
 *   deliver     a signal-delivery stop resumed with its signal;
 *   hold_call + run_held, then give_back at the exit stop: the call runs rewritten (its path
 *               from the thread's slot), and the program gets its own registers back.
 */
#include "_fastpath.h"

int write_mem(pid_t tid, unsigned long long addr, const void *data, size_t len)
{
    struct iovec local = {(void *)data, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    return process_vm_writev(tid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* The call does not run: the program sees `result`. */
void emulate(pid_t tid, long result)
{
    ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, orig_rax), (void *)-1L);
    ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, rax), (void *)result);
    ptrace(PTRACE_CONT, tid, 0, 0);
}

void let_run(pid_t tid)
{
    ptrace(PTRACE_CONT, tid, 0, 0);
}

void deliver(pid_t tid, int sig)
{
    ptrace(PTRACE_CONT, tid, 0, (void *)(long)sig);
}

/* The program's call (nr, and the four argument registers a rewrite may change) kept in its
 * slot's Pending, to be given back at the exit stop (give_back); *regs the registers to
 * rewrite. NULL: the thread is gone (its exit report follows). */
Pending *hold_call(Engine *self, pid_t tid, int slot, unsigned long long nr,
                   struct user_regs_struct *regs)
{
    Pending *p = &self->pending[slot];
    if (ptrace(PTRACE_GETREGS, tid, 0, regs) < 0)
        return NULL;
    clear_pending(p);
    p->tid = tid;
    p->nr = nr;
    p->args[0] = regs->rdi; p->args[1] = regs->rsi; p->args[2] = regs->rdx;
    p->args[3] = regs->r10;
    return p;
}

/* The held call, rewritten as regs say, run to its exit stop. */
void run_held(Pending *p, pid_t tid, const struct user_regs_struct *regs)
{
    if (ptrace(PTRACE_SETREGS, tid, 0, regs) < 0) {
        clear_pending(p);            /* gone: its exit report follows */
        return;
    }
    ptrace(PTRACE_SYSCALL, tid, 0, 0);
}

/* At the exit stop of p's call: the program's own registers back, the call's result in
 * *result; re-run instead (1) when it failed with ELOOP, a component having become a symlink
 * after the check, an open at most MAX_RESTARTS times. -1: the thread is gone. The thread is
 * not resumed (let_run). */
int give_back(Engine *self, Pending *p, pid_t tid, long *result)
{
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
        return -1;
    regs.rdi = p->args[0]; regs.rsi = p->args[1]; regs.rdx = p->args[2]; regs.r10 = p->args[3];
    regs.orig_rax = p->nr;               /* a -ERESTART* re-runs the program's own call */
    int restart = (long long)regs.rax == -ELOOP && p->restarts < MAX_RESTARTS
                  && p->nr == (unsigned long long)self->nr_openat;    /* (not an exec) */
    if (restart) {
        p->restarts++;
        regs.rip -= 2;
        regs.rax = p->nr;
    } else {
        p->restarts = 0;
    }
    *result = (long)regs.rax;
    ptrace(PTRACE_SETREGS, tid, 0, &regs);
    return restart;
}
