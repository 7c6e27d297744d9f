/* How the compiled loop answers a stop: the only code of it that writes a tracee's memory or
 * registers, or resumes it (see _fastpath.c). Every answer is one of:
 *   emulate     the call does not run, the program sees a result (after write_mem of what
 *               the call would have written);
 *   let_run     the kernel runs the call as the program made it;
 * (these two also answer a call notified by seccomp, self->notif: _fastpath_notify.c)
 *   deliver     a signal-delivery stop resumed with its signal;
 *   hold_call + run_held, then give_back at the exit stop: the call runs rewritten (its path
 *               from the thread's slot), and the program gets its own registers back;
 *   hold_call + run_by_trampoline: the same, its registers put back by the slot's trampoline
 *               with no exit stop (finish_trampoline when a signal comes in between).
 */
#include "_fastpath.h"

int write_mem(pid_t tid, unsigned long long addr, const void *data, size_t len)
{
    struct iovec local = {(void *)data, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    return process_vm_writev(tid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* The call does not run: the program sees `result`. */
void emulate(Engine *self, pid_t tid, long result)
{
    if (self->notif != NULL) {
        notif_answer(self, result, 0);
        return;
    }
    ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, orig_rax), (void *)-1L);
    ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, rax), (void *)result);
    ptrace(PTRACE_CONT, tid, 0, 0);
}

void let_run(Engine *self, pid_t tid)
{
    if (self->notif != NULL) {
        notif_answer(self, 0, 1);
        return;
    }
    if (self->n_handovers > 0 && recheck(self, tid, 0)) {
        ptrace(PTRACE_SYSCALL, tid, 0, 0);  /* a handed-over call: see _fastpath_notify.c */
        return;
    }
    ptrace(PTRACE_CONT, tid, 0, 0);
}

void deliver(pid_t tid, int sig)
{
    ptrace(PTRACE_CONT, tid, 0, (void *)(long)sig);
}

/* At a seccomp stop of tid, its call as PTRACE_GET_SYSCALL_INFO gives it, read from its
 * registers (PTRACE_GETREGS), which hold_call then takes from self->regs: one request where
 * an open's stop made two. The filter stops x86-64 calls only (seccomp.py: any other
 * architecture kills), so that is the call's. 1, or 0 when tid is gone. */
int stop_call(Engine *self, pid_t tid, struct __ptrace_syscall_info *info)
{
    self->regs_tid = 0;
    if (ptrace(PTRACE_GETREGS, tid, 0, &self->regs) < 0)
        return 0;
    self->regs_tid = tid;
    const struct user_regs_struct *r = &self->regs;
    memset(info, 0, sizeof *info);
    info->op = PTRACE_SYSCALL_INFO_SECCOMP;
    info->arch = AUDIT_ARCH_X86_64_;
    info->instruction_pointer = r->rip;
    info->stack_pointer = r->rsp;
    info->seccomp.nr = r->orig_rax;
    uint64_t *a = info->seccomp.args;
    a[0] = r->rdi; a[1] = r->rsi; a[2] = r->rdx; a[3] = r->r10; a[4] = r->r8; a[5] = r->r9;
    return 1;
}

/* The program's call (nr, and the four argument registers a rewrite may change) kept in its
 * slot's Pending, to be given back at the exit stop (give_back); *regs the registers to
 * rewrite (those stop_call read at this stop, when it did). NULL: the thread is gone (its
 * exit report follows). */
Pending *hold_call(Engine *self, pid_t tid, int slot, unsigned long long nr,
                   struct user_regs_struct *regs)
{
    Pending *p = &self->pending[slot];
    if (self->regs_tid == tid)
        *regs = self->regs;
    else if (ptrace(PTRACE_GETREGS, tid, 0, regs) < 0)
        return NULL;
    self->regs_tid = 0;
    if (p->token)                    /* a thread gone with its open in flight */
        settle_gone(self, p, p->tid);
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
    int restart = (long long)regs.rax == -ELOOP && !restarted_enough(p, tid)
                  && p->nr == (unsigned long long)self->nr_openat;    /* (not an exec) */
    count_restart(p, tid, restart);
    if (restart) {
        regs.rip -= 2;
        regs.rax = p->nr;
    }
    *result = (long)regs.rax;
    ptrace(PTRACE_SETREGS, tid, 0, &regs);
    return restart;
}

/* -- trampolines (trampoline.py) ------------------------------------------------------- */

/* The held call, rewritten as regs say, resumed with RIP at the slot's trampoline, which puts
 * the program's registers back when the call returns: no exit stop. Its data (the registers
 * hold_call kept, the return address, the call, its syscall instruction, a fresh token) goes
 * into the slot's trampoline through the tracer's view. */
void run_by_trampoline(Engine *self, Pending *p, pid_t tid, int slot,
                       struct user_regs_struct *regs)
{
    unsigned long long *data = tramp_data(self, slot);
    if (!self->tramp_written[slot]) {
        memcpy(tramp_view(self, slot), self->tramp_code, (size_t)self->tramp_len);
        self->tramp_written[slot] = 1;
    }
    if (++self->token == 0)          /* (0: a cell never written) */
        ++self->token;
    data[0] = p->args[0]; data[1] = p->args[1]; data[2] = p->args[2]; data[3] = p->args[3];
    data[4] = regs->rip;
    data[5] = p->nr;
    data[6] = regs->rip - 2;
    data[7] = (unsigned long long)self->token << 32;
    p->token = self->token;
    regs->rip = tramp_at(self, slot) + TRAMP_ENTRY;
    if (ptrace(PTRACE_SETREGS, tid, 0, regs) < 0) {
        settle_gone(self, p, tid);   /* gone: its exit report follows */
        return;
    }
    self->tramp_opens++;
    ptrace(PTRACE_CONT, tid, 0, 0);
}

/* A signal-delivery stop of a thread whose RIP is in p's trampoline (or on the syscall
 * instruction before it): the tracer does the rest of the trampoline's work, so that neither
 * the signal's handler nor a restart of the call runs with the rewritten registers. 1 and
 * *result (-ELOOP: the program's own call runs again), or 0 when RIP is elsewhere. */
int finish_trampoline(Engine *self, Pending *p, pid_t tid, int slot, long *result)
{
    struct user_regs_struct regs;
    unsigned long long at = tramp_at(self, slot);
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0 || regs.rip < at
            || regs.rip > at + TRAMP_LAST_JUMP)
        return 0;
    unsigned long long *data = tramp_data(self, slot);
    unsigned long long off = regs.rip - at;
    long rax = (long)regs.rax;
    int restart = off < TRAMP_ENTRY || off == TRAMP_LAST_JUMP || rax == -ELOOP;
    regs.rdi = p->args[0]; regs.rsi = p->args[1]; regs.rdx = p->args[2]; regs.r10 = p->args[3];
    if ((long long)regs.orig_rax != -1)
        regs.orig_rax = p->nr;       /* a syscall's exit: -ERESTART* re-runs the program's */
    if (restart) {
        regs.rip = data[6];
        regs.rax = p->nr;
        *result = -ELOOP;
    } else {
        regs.rip = data[4];
        *result = rax;
    }
    ptrace(PTRACE_SETREGS, tid, 0, &regs);
    return 1;
}
