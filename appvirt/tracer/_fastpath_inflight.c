/* Opens resumed through their slot's trampoline (run_by_trampoline, trampoline.py), from the
 * seccomp stop until the tracer has what it owes them: the result record of a logged open and,
 * for a file it creates, the overlay index's note (note_made). The call's end has no stop of
 * its own, so each is settled at the next stop of its thread, from the result its trampoline
 * stored in the process's cell with the open's token (settle_own); at a stop of any other
 * thread once that cell is there, for a creation, which the other threads may see at once
 * (settle_others); when its thread is gone (settle_gone). The cell is the program's memory: the
 * index learns what the upper layer holds (note_made looks), never what the cell claims.
 */
#include "_fastpath.h"

#define ERESTARTSYS_ 512
#define ERESTART_RESTARTBLOCK_ 516

/* The cell of p's open (slot's), read from tid or, gone, its process: 1 and *result when the
 * trampoline stored it, 0 when not (yet, or the process is gone). */
static int read_cell(Engine *self, const Pending *p, pid_t tid, int slot, long *result)
{
    uint64_t cell;
    struct iovec local = {&cell, sizeof cell};
    struct iovec remote = {(void *)(uintptr_t)(self->cell_base
                                               + (unsigned long long)slot * CELL_STRIDE),
                           sizeof cell};
    pid_t from[2] = {tid, tid > 0 && tid < self->tids ? self->pid_of[tid] : 0};
    for (int i = 0; i < 2; i++) {
        if (from[i] <= 0 || process_vm_readv(from[i], &local, 1, &remote, 1, 0) != sizeof cell)
            continue;
        if ((uint32_t)(cell >> 32) != p->token)
            return 0;
        *result = (long)(int32_t)(uint32_t)cell;
        return 1;
    }
    return 0;
}

static void unlist(Engine *self, Pending *p)
{
    if (!p->listed)
        return;
    Py_ssize_t at = p->listed - 1, last = --self->n_listed;
    int moved = self->listed[last];
    self->listed[at] = moved;
    self->pending[moved].listed = at + 1;
    p->listed = 0;
}

/* p's open created a file: other threads' stops look for its cell. */
void list_open(Engine *self, Pending *p, int slot)
{
    self->listed[self->n_listed] = slot;
    p->listed = ++self->n_listed;
}

/* (fd: the open's result, -1 when not known) */
static void note_created(Engine *self, Pending *p, long fd)
{
    if (note_made_at(self, PyBytes_AS_STRING(p->created), KIND_UNKNOWN, p->tid, fd) < 0)
        PyErr_WriteUnraisable(self->made);          /* out of memory: the next load has it */
    Py_CLEAR(p->created);
    unlist(self, p);
}

/* p's open is over, with *result when known: what the exit stop would have done (finish_open),
 * and the slot is free. A restart (ELOOP, or -ERESTART*: the program's own call runs again)
 * has no result; ELOOPs in a row are counted (after MAX_RESTARTS, do_openat resumes the next
 * with an exit stop, where give_back lets the program have the ELOOP). Unknown, a creation is
 * noted as the upper layer now has it. */
static void tramp_done(Engine *self, Pending *p, pid_t tid, int known, long result)
{
    int restart = known && (result == -ELOOP || (result <= -ERESTARTSYS_
                                                 && result >= -ERESTART_RESTARTBLOCK_));
    if (p->created != NULL && !restart && (!known || result >= 0))
        note_created(self, p, known ? result : -1);
    if (p->seq > 0 && known && !restart)
        log_result(self, tid, p->seq, result);
    count_restart(p, tid, known && result == -ELOOP);
    unlist(self, p);
    clear_pending(p);
}

/* A stop of tid, whose slot's open is in flight through its trampoline (status: the stop's;
 * *info filled, *have_info set, at a seccomp stop). ANSWERED when the stop was the kernel
 * restarting the rewritten call from the syscall instruction before the trampoline (no signal
 * to deliver: -ERESTART* and a freezer), which then runs as the tracer checked it: the very
 * path and open_how it put in the slot (the program may jump there itself, but any other
 * operand, a suffix of the path or flags read from elsewhere in the slot, is a call of its
 * own, checked as any); FALLBACK otherwise, the open settled and the stop handled as any. */
int settle_own(Engine *self, pid_t tid, int slot, int status,
               struct __ptrace_syscall_info *info, int *have_info)
{
    Pending *p = &self->pending[slot];
    long result = 0;
    if ((status >> 8) == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) {
        *have_info = stop_call(self, tid, info);
        unsigned long long at = self->slot_base + (unsigned long long)slot * self->slot_size;
        const uint64_t *a = info->seccomp.args;
        if (*have_info && info->op == PTRACE_SYSCALL_INFO_SECCOMP
                && info->instruction_pointer == tramp_at(self, slot) + TRAMP_ENTRY
                && info->seccomp.nr == (unsigned long long)self->nr_openat2
                && (int)a[0] == AT_FDCWD_ && a[1] == at && a[2] == p->how
                && a[3] == OPEN_HOW_SIZE) {
            let_run(self, tid);
            return ANSWERED;
        }
    } else if ((status >> 16) == 0 && WSTOPSIG(status) != SYSCALL_TRAP
               && finish_trampoline(self, p, tid, slot, &result)) {
        tramp_done(self, p, tid, 1, result);
        return FALLBACK;
    }
    /* The cell is read for a record, a file made, or an ELOOP to count: the same call again
     * from the same instruction (a restart, or the next open through the same wrapper). */
    int again = *have_info && info->op == PTRACE_SYSCALL_INFO_SECCOMP
                && info->seccomp.nr == p->nr
                && info->instruction_pointer == tramp_data(self, slot)[4];
    int known = (p->seq > 0 || p->created != NULL || again)
                && read_cell(self, p, tid, slot, &result);
    tramp_done(self, p, tid, known, result);
    return FALLBACK;
}

/* At a stop of tid: the creations of other threads' opens whose cells are in are noted (their
 * result records wait for their own threads' stops). */
void settle_others(Engine *self, pid_t tid)
{
    for (Py_ssize_t i = self->n_listed; i-- > 0;) {
        int slot = self->listed[i];
        Pending *p = &self->pending[slot];
        long result;
        if (p->tid != tid && read_cell(self, p, p->tid, slot, &result))
            note_created(self, p, result);
    }
}

/* p's thread (tid) is gone, or will never stop again in this open: settled from its cell if
 * its process still has it. */
void settle_gone(Engine *self, Pending *p, pid_t tid)
{
    if (!p->token) {
        clear_pending(p);
        return;
    }
    long result = 0;
    int known = (p->seq > 0 || p->created != NULL)
                && read_cell(self, p, tid, (int)(p - self->pending), &result);
    tramp_done(self, p, tid, known, result);
}
