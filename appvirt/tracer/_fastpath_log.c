/* The intercept log's records of the calls the engine makes or redirects in owned
 * directories, and at log level all of the reads it answers in plain ones (read_record):
 * the same JSON lines, field for field, that the Python loop writes for them
 * (Tracer.log_call and log_result, log/records.py's argument formats, log/writer.py's one
 * write per line), numbered from the same counter, each written before the call resumes.
 * Python hands the engine what only it knows, once: each logged syscall's spec (its name,
 * class and argument formats, fastpath.record_spec, asked for with the first record), the
 * rule of each owned directory, the program of each process (a dict it keeps), and errno
 * names.
 */
#include "_fastpath.h"

#define MEMO_MAX 4096                /* symbolic texts remembered per argument */

static int reserve(Line *l, size_t more)
{
    if (l->failed)
        return -1;
    if (l->len + more <= l->cap)
        return 0;
    size_t cap = l->cap ? l->cap : 1024;
    while (cap < l->len + more)
        cap *= 2;
    char *buf = PyMem_Realloc(l->buf, cap);
    if (buf == NULL) {
        l->failed = 1;
        return -1;
    }
    l->buf = buf;
    l->cap = cap;
    return 0;
}

static void put(Line *l, const char *s, size_t n)
{
    if (reserve(l, n) == 0) {
        memcpy(l->buf + l->len, s, n);
        l->len += n;
    }
}

static void puts_(Line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Numbers, written by hand: printf's parsing of its format was a tenth of the engine's time
 * on a write-heavy program (seven numbers a record). */
static void put_base(Line *l, unsigned long long v, unsigned base, int min_digits)
{
    static const char digits[] = "0123456789abcdef";
    char buf[24];
    int n = 0;
    do {
        buf[sizeof buf - 1 - n++] = digits[v % base];
        v /= base;
    } while (v != 0 || n < min_digits);
    put(l, buf + sizeof buf - n, (size_t)n);
}

static void put_u64(Line *l, unsigned long long v)
{
    put_base(l, v, 10, 1);
}

static void put_i64(Line *l, long long v)
{
    if (v < 0) {
        put(l, "-", 1);
        put_base(l, 0ULL - (unsigned long long)v, 10, 1);
    } else {
        put_base(l, (unsigned long long)v, 10, 1);
    }
}

/* "0x..." (base 16) or "0o..." (base 8), quoted, as records.py shows them. */
static void put_quoted(Line *l, const char *prefix, unsigned long long v, unsigned base)
{
    put(l, "\"", 1);
    put(l, prefix, 2);
    put_base(l, v, base, 1);
    put(l, "\"", 1);
}

/* A JSON string of bytes as json.dumps(os.fsdecode(b), ensure_ascii=False) gives it once
 * encoded back with surrogateescape: the bytes themselves, with '"', '\' and the control
 * characters escaped. */
static void put_str(Line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (reserve(l, 6 * n + 2) < 0)
        return;
    char *o = l->buf + l->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                memcpy(o, "u00", 3);
                o += 3;
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        }
    }
    *o++ = '"';
    l->len = (size_t)(o - l->buf);
}

/* A str as Python encodes it into the log (UTF-8, surrogateescape); "" for anything else.
 * (The str's own UTF-8, which it keeps, unless it holds surrogates.) */
static void put_pystr(Line *l, PyObject *s)
{
    if (s != NULL && PyUnicode_Check(s)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
        if (utf8 != NULL) {
            put_str(l, utf8, (size_t)n);
            return;
        }
        PyErr_Clear();
    }
    PyObject *b = s != NULL && PyUnicode_Check(s)
                  ? PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape") : NULL;
    if (b == NULL) {
        PyErr_Clear();
        put_str(l, "", 0);
        return;
    }
    put_str(l, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
}

static void put_bytes(Line *l, PyObject *b)
{
    put(l, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
}

/* round(time.time(), 6), as its repr shows it (trailing zeros dropped, one kept). */
static void put_time(Line *l)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long sec = now.tv_sec;
    long us = (now.tv_nsec + 500) / 1000;
    if (us == 1000000) {
        sec++;
        us = 0;
    }
    int digits = 6;
    for (; digits > 1 && us % 10 == 0; digits--)
        us /= 10;
    put_i64(l, sec);
    put(l, ".", 1);
    put_base(l, (unsigned long long)us, 10, digits);
}

/* A non-negative duration in microseconds to one decimal ("%.1f"). */
static void put_tenths(Line *l, double us)
{
    unsigned long long tenths = us > 0 ? (unsigned long long)(us * 10 + 0.5) : 0;
    put_u64(l, tenths / 10);
    put(l, ".", 1);
    put_base(l, tenths % 10, 10, 1);
}

/* The text python-ptrace gives a value (remembered). */
static void put_symbolic(Line *l, const ArgSpec *a, uint64_t v)
{
    PyObject *key = PyLong_FromUnsignedLongLong(v);
    PyObject *text = key ? PyDict_GetItemWithError(a->memo, key) : NULL;     /* borrowed */
    if (text != NULL) {
        put_pystr(l, text);
    } else if (key != NULL && !PyErr_Occurred()) {
        text = PyObject_CallOneArg(a->symbolic, key);
        if (text != NULL && PyDict_GET_SIZE(a->memo) < MEMO_MAX)
            PyDict_SetItem(a->memo, key, text);
        put_pystr(l, text);
        Py_XDECREF(text);
    } else {
        put_pystr(l, NULL);
    }
    PyErr_Clear();                   /* an odd value is shown as "", never fails the call */
    Py_XDECREF(key);
}

static void put_arg(Line *l, const ArgSpec *a, uint64_t v, const char *path)
{
    if (a->fmt == ARG_PATH) {
        if (path == NULL)
            puts_(l, "null");
        else
            put_str(l, path, strlen(path));
        return;
    }
    if (a->dirfd && (v & 0xFFFFFFFFu) == 0xFFFFFF9Cu) {
        puts_(l, "\"AT_FDCWD\"");
        return;
    }
    switch (a->fmt) {
    case ARG_UNSIGNED: put_u64(l, (unsigned long long)v); break;
    case ARG_INT: put_i64(l, (int32_t)(uint32_t)v); break;
    case ARG_UINT: put_u64(l, (uint32_t)v); break;
    case ARG_OCTAL: put_quoted(l, "0o", (unsigned long long)(v & 07777), 8); break;
    case ARG_POINTER:
        if (v == 0)
            puts_(l, "\"NULL\"");
        else
            put_quoted(l, "0x", (unsigned long long)v, 16);
        break;
    case ARG_SYMBOLIC: put_symbolic(l, a, v); break;
    default: put_quoted(l, "0x", (unsigned long long)v, 16); break;
    }
}

/* ,"errno":"ENOENT": the name of errno e, as Python's records give it (none when unknown;
 * errnames: errno -> name, or NULL). */
static void put_errno(PyObject *errnames, Line *l, long e)
{
    if (e <= 0 || e >= 4096 || errnames == NULL)
        return;
    PyObject *key = PyLong_FromLong(e);
    PyObject *name = key ? PyDict_GetItemWithError(errnames, key) : NULL;
    Py_XDECREF(key);
    PyErr_Clear();
    if (name != NULL) {
        puts_(l, ",\"errno\":");
        put_pystr(l, name);
    }
}

/* Tracer.log_call's record of a call the engine made (has_result: emulated) or redirected,
 * or (r->decision) of a read or time call it answered. */
static void put_call(Line *l, long long seq, const CallSpec *spec, int pid, int tid,
                     PyObject *program, const uint64_t *args, const CallRecord *r, double us,
                     PyObject *errnames)
{
    puts_(l, "{\"seq\":");
    put_i64(l, seq);
    puts_(l, ",\"time\":");
    put_time(l);
    puts_(l, ",\"kind\":\"syscall\",\"pid\":");
    put_i64(l, pid);
    puts_(l, ",\"tid\":");
    put_i64(l, tid);
    puts_(l, ",\"program\":");
    put_pystr(l, program);
    puts_(l, ",");
    put_bytes(l, spec->head);
    puts_(l, "\"args\":{");
    for (int i = 0; i < spec->nargs; i++) {
        if (i > 0)
            puts_(l, ",");
        put_bytes(l, spec->arg[i].key);
        put_arg(l, &spec->arg[i], args[i], r->paths[i]);
    }
    puts_(l, "},\"decision\":\"");
    puts_(l, r->decision != NULL ? r->decision : "redirected");
    puts_(l, "\"");
    if (r->rule != NULL && r->rule_len > 0) {
        puts_(l, ",\"rule\":");
        put(l, r->rule, (size_t)r->rule_len);
    }
    if (r->path != NULL) {
        puts_(l, ",\"path\":");
        put_str(l, r->path, strlen(r->path));
    }
    if (r->host_path != NULL) {
        puts_(l, ",\"host_path\":");
        put_str(l, r->host_path, strlen(r->host_path));
    }
    if (r->has_result) {
        puts_(l, ",\"result\":");
        put_i64(l, r->result);
        if (r->result < 0)
            put_errno(errnames, l, -r->result);
    }
    puts_(l, ",\"tracer_us\":");
    put_tenths(l, us);
    puts_(l, "}\n");
}

/* One write of the whole line (LogWriter.write), or the line into the log's ring: a short
 * write is cut off, and the first failure kept for the run's report. */
static void write_line(Engine *self)
{
    Line *l = &self->line;
    if (l->failed) {
        if (self->log_errno == 0)
            self->log_errno = ENOMEM;
        return;
    }
    int failed = self->log_ring != NULL ? ring_put(self->log_ring, l->buf, l->len)
                                        : append_whole(self->log_fd, l->buf, l->len);
    if (failed != 0 && self->log_errno == 0)
        self->log_errno = failed;
}

static int parse_spec(PyObject *t, CallSpec *s);

/* Whether the engine logs calls nr, its spec asked of Python the first time (spec_of(nr):
 * the spec, or None for a call it does not log). */
int logged(Engine *self, int nr)
{
    if (self->log_fd < 0 || nr < 0 || nr >= NR_MAX)
        return 0;
    if (self->specs[nr] != NULL || self->spec_asked[nr])
        return self->specs[nr] != NULL;
    self->spec_asked[nr] = 1;
    PyObject *t = PyObject_CallFunction(self->spec_of, "i", nr);
    CallSpec *s = t != NULL && t != Py_None ? PyMem_Calloc(1, sizeof *s) : NULL;
    if (s != NULL && parse_spec(t, s) == 0)
        self->specs[nr] = s;
    else
        PyMem_Free(s);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(self->spec_of);   /* unlogged, never unanswered: cannot happen */
    Py_XDECREF(t);
    return self->specs[nr] != NULL;
}

static double micros_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e6 + (double)(now.tv_nsec - t0->tv_nsec) / 1e3;
}

long long log_call(Engine *self, pid_t tid, int nr, const uint64_t *args, const CallRecord *r)
{
    if (!logged(self, nr))
        return 0;
    int pid = process_of(self, tid);
    PyObject *key = PyLong_FromLong(pid);
    PyObject *program = key ? PyDict_GetItemWithError(self->programs, key) : NULL;
    Py_XDECREF(key);
    PyErr_Clear();
    Line *l = &self->line;
    l->len = 0;
    l->failed = 0;
    long long seq = ++self->seq;
    put_call(l, seq, self->specs[nr], pid, tid, program, args, r, micros_since(&self->t0),
             self->errnames);
    write_line(self);
    return seq;
}

/* Tracer.log_result's record: a logged call's result, at its exit stop. */
void log_result(Engine *self, pid_t tid, long long call, long result)
{
    if (self->log_fd < 0)
        return;
    int pid = process_of(self, tid);
    Line *l = &self->line;
    l->len = 0;
    l->failed = 0;
    puts_(l, "{\"seq\":");
    put_i64(l, ++self->seq);
    puts_(l, ",\"time\":");
    put_time(l);
    puts_(l, ",\"kind\":\"result\",\"call\":");
    put_i64(l, call);
    puts_(l, ",\"pid\":");
    put_i64(l, pid);
    puts_(l, ",\"tid\":");
    put_i64(l, tid);
    puts_(l, ",\"result\":");
    put_i64(l, result);
    if (result < 0)
        put_errno(self->errnames, l, -result);
    puts_(l, "}\n");
    write_line(self);
}

/* -- specs ------------------------------------------------------------------------------- */

static void clear_spec(CallSpec *s)
{
    Py_CLEAR(s->head);
    for (int i = 0; i < s->nargs; i++) {
        Py_CLEAR(s->arg[i].key);
        Py_CLEAR(s->arg[i].memo);
        Py_CLEAR(s->arg[i].symbolic);
    }
    s->nargs = 0;
}

static int parse_spec(PyObject *t, CallSpec *s)
{
    /* (head, ((key, format, dirfd, memo, symbolic), ...)) */
    PyObject *head, *args;
    memset(s, 0, sizeof *s);
    if (!PyArg_ParseTuple(t, "SO!", &head, &PyTuple_Type, &args))
        return -1;
    if (PyTuple_GET_SIZE(args) > MAX_ARGS) {
        PyErr_SetString(PyExc_ValueError, "a spec has at most 6 arguments");
        return -1;
    }
    Py_INCREF(head);
    s->head = head;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        ArgSpec *a = &s->arg[i];
        PyObject *key, *memo, *symbolic;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(args, i), "SiiOO", &key, &a->fmt, &a->dirfd,
                              &memo, &symbolic))
            goto fail;
        if (a->fmt < 0 || a->fmt >= N_ARG_FORMATS || (a->fmt == ARG_SYMBOLIC
                && !(PyDict_Check(memo) && PyCallable_Check(symbolic)))) {
            PyErr_SetString(PyExc_ValueError, "an argument's format is unknown, or a symbolic "
                            "one lacks its memo dict and formatter");
            goto fail;
        }
        Py_INCREF(key);
        Py_INCREF(memo);
        Py_INCREF(symbolic);
        a->key = key;
        a->memo = memo;
        a->symbolic = symbolic;
        s->nargs = (int)i + 1;
    }
    return 0;
fail:
    clear_spec(s);
    return -1;
}

void free_specs(Engine *self)
{
    for (int nr = 0; nr < NR_MAX; nr++)
        if (self->specs[nr] != NULL) {
            clear_spec(self->specs[nr]);
            PyMem_Free(self->specs[nr]);
            self->specs[nr] = NULL;
        }
    PyMem_Free(self->line.buf);
    self->line.buf = NULL;
    self->line.cap = self->line.len = 0;
}

/* format_call(spec, seq, pid, tid, program, args, paths, rule, path, host_path, result)
 * -> bytes: a record as the engine writes it, for the tests (result None: no result). */
PyObject *format_call(PyObject *mod, PyObject *args)
{
    PyObject *spec, *program, *argv, *paths, *rule, *path, *host, *result;
    long long seq;
    int pid, tid;
    if (!PyArg_ParseTuple(args, "OLiiOO!O!OOOO", &spec, &seq, &pid, &tid, &program,
                          &PyTuple_Type, &argv, &PyTuple_Type, &paths, &rule, &path, &host,
                          &result))
        return NULL;
    CallSpec s;
    if (parse_spec(spec, &s) < 0)
        return NULL;
    uint64_t a[MAX_ARGS] = {0};
    CallRecord r = {0};
    for (Py_ssize_t i = 0; i < MAX_ARGS && i < PyTuple_GET_SIZE(argv); i++)
        a[i] = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(argv, i));
    for (Py_ssize_t i = 0; i < MAX_ARGS && i < PyTuple_GET_SIZE(paths); i++) {
        PyObject *p = PyTuple_GET_ITEM(paths, i);
        r.paths[i] = PyBytes_Check(p) ? PyBytes_AS_STRING(p) : NULL;
    }
    if (PyBytes_Check(rule)) {
        r.rule = PyBytes_AS_STRING(rule);
        r.rule_len = PyBytes_GET_SIZE(rule);
    }
    r.path = PyBytes_Check(path) ? PyBytes_AS_STRING(path) : NULL;
    r.host_path = PyBytes_Check(host) ? PyBytes_AS_STRING(host) : NULL;
    if (result != Py_None) {
        r.has_result = 1;
        r.result = PyLong_AsLong(result);
    }
    Line l = {0};
    PyObject *out = NULL;
    if (!PyErr_Occurred()) {
        put_call(&l, seq, &s, pid, tid, program, a, &r, 0.0, NULL);
        out = l.failed ? PyErr_NoMemory() : PyBytes_FromStringAndSize(l.buf, (Py_ssize_t)l.len);
    }
    PyMem_Free(l.buf);
    clear_spec(&s);
    return out;
}

/* The JSON text of the rule that decides the names in plain directory dir (dir_rule's, asked
 * once a directory: the policy does not change during a run): a new reference, or NULL. */
static PyObject *rule_of(Engine *self, const char *dir, Py_ssize_t len)
{
    PyObject *key = PyBytes_FromStringAndSize(dir, len);
    if (key == NULL)
        return NULL;
    PyObject *rule = PyDict_GetItemWithError(self->rules, key);     /* borrowed */
    if (rule != NULL) {
        Py_INCREF(rule);
    } else if (!PyErr_Occurred()) {
        if (PyDict_Size(self->rules) >= MAX_DIRS_)
            PyDict_Clear(self->rules);
        rule = PyObject_CallOneArg(self->dir_rule, key);
        if (rule != NULL && (!PyBytes_Check(rule) || PyBytes_GET_SIZE(rule) >= RULE_MAX
                             || PyDict_SetItem(self->rules, key, rule) < 0))
            Py_CLEAR(rule);
    }
    Py_DECREF(key);
    return rule;
}

/* The record the Python loop writes of a read at log level all (Tracer.log_call): the call
 * allowed, with `fields` (REC_*) of op, a name in a plain directory: the rule that decides
 * the names there, the object's path (its canonical one, the host's), the result the call
 * gets. path_arg: the argument that names it (an fd's own object: op NULL, the path "").
 * The record's number; -1 when the engine has no record for it (the stop is then Python's,
 * nothing written; an exception may be set). */
long long read_record(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                      int path_arg, const Operand *op, int fields, long result)
{
    int nr = (int)in->seccomp.nr;
    if (!logged(self, nr) || self->dir_rule == NULL)
        return -1;
    CallRecord r = {.decision = "allowed", .has_result = !!(fields & REC_RESULT),
                    .result = result};
    PyObject *rule = NULL;
    if (op != NULL && fields & REC_RULE) {
        if ((rule = rule_of(self, op->host, op->host_dir)) == NULL)
            return -1;
        r.rule = PyBytes_AS_STRING(rule);
        r.rule_len = PyBytes_GET_SIZE(rule);
    }
    if (op != NULL && fields & REC_PATH)
        r.path = op->host;
    if (path_arg >= 0)
        r.paths[path_arg] = op != NULL ? op->path : "";
    long long seq = log_call(self, tid, nr, in->seccomp.args, &r);
    Py_XDECREF(rule);
    return seq;
}
