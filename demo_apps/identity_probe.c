/* identity_probe: the ids and capabilities a program sees, and what changing them does.
 *
 *   identity_probe [OP...]
 *
 * OPs, run in order, each printing one line:
 *   id                 "ids R/E/S/FS gid R/E/S/FS groups G,G caps EFF/PRM" from the system
 *                      calls, then "status ..." with the same fields from /proc/self/status
 *   setuid:N  setgid:N  setresuid:R,E,S  setfsuid:N  setgroups:G,G,...  capclear
 *                      "NAME=0" or "NAME=-1 ERRNO" (setfsuid prints the previous fsuid);
 *                      raw system calls, so every thread-broadcast of glibc stays out of it
 *   hostname:NAME      sethostname(2), which needs CAP_SYS_ADMIN
 *   fork               the ids as seen by a child process (an "id" in the child)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void result(const char *what, long rc)
{
    if (rc < 0)
        printf("%s=-1 %s\n", what, strerrorname_np(errno));
    else
        printf("%s=%ld\n", what, rc);
}

static void caps(unsigned long long *eff, unsigned long long *prm)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) {
        *eff = *prm = ~0ULL;
        return;
    }
    *eff = d[0].effective | (unsigned long long)d[1].effective << 32;
    *prm = d[0].permitted | (unsigned long long)d[1].permitted << 32;
}

static void print_ids(void)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;
    gid_t groups[64];
    unsigned long long eff, prm;
    syscall(SYS_getresuid, &r, &e, &s);
    syscall(SYS_getresgid, &gr, &ge, &gs);
    long fsu = syscall(SYS_setfsuid, -1), fsg = syscall(SYS_setfsgid, -1);
    int n = (int)syscall(SYS_getgroups, 64, groups);
    caps(&eff, &prm);
    printf("ids %u/%u/%u/%ld gid %u/%u/%u/%ld groups ", r, e, s, fsu, gr, ge, gs, fsg);
    for (int i = 0; i < n; i++)
        printf(i ? ",%u" : "%u", groups[i]);
    printf(" caps %llx/%llx\n", eff, prm);

    FILE *f = fopen("/proc/self/status", "r");
    char line[512], uid[128] = "", gid[128] = "", grp[256] = "", ceff[64] = "", cprm[64] = "";
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *v = strchr(line, '\t');
        if (v == NULL)
            continue;
        v++;
        if (!strncmp(line, "Uid:", 4)) snprintf(uid, sizeof uid, "%s", v);
        if (!strncmp(line, "Gid:", 4)) snprintf(gid, sizeof gid, "%s", v);
        if (!strncmp(line, "Groups:", 7)) snprintf(grp, sizeof grp, "%s", v);
        if (!strncmp(line, "CapEff:", 7)) snprintf(ceff, sizeof ceff, "%s", v);
        if (!strncmp(line, "CapPrm:", 7)) snprintf(cprm, sizeof cprm, "%s", v);
    }
    if (f)
        fclose(f);
    for (char *p = uid; *p; p++) if (*p == '\t') *p = '/';
    for (char *p = gid; *p; p++) if (*p == '\t') *p = '/';
    for (size_t n = strlen(grp); n > 0 && grp[n - 1] == ' '; n--)
        grp[n - 1] = 0;
    for (char *p = grp; *p; p++) if (*p == ' ') *p = ',';
    printf("status %s gid %s groups %s caps %llx/%llx\n", uid, gid, grp,
           strtoull(ceff, NULL, 16), strtoull(cprm, NULL, 16));
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char *op = argv[i], *arg = strchr(op, ':');
        if (arg)
            *arg++ = 0;
        if (!strcmp(op, "id")) {
            print_ids();
        } else if (!strcmp(op, "setuid")) {
            result(op, syscall(SYS_setuid, atoi(arg)));
        } else if (!strcmp(op, "setgid")) {
            result(op, syscall(SYS_setgid, atoi(arg)));
        } else if (!strcmp(op, "setfsuid")) {
            result(op, syscall(SYS_setfsuid, atoi(arg)));
        } else if (!strcmp(op, "setresuid")) {
            int r, e, s;
            sscanf(arg, "%d,%d,%d", &r, &e, &s);
            result(op, syscall(SYS_setresuid, r, e, s));
        } else if (!strcmp(op, "setgroups")) {
            gid_t g[64];
            int n = 0;
            for (char *t = strtok(arg, ","); t && n < 64; t = strtok(NULL, ","))
                g[n++] = (gid_t)atoi(t);
            result(op, syscall(SYS_setgroups, n, g));
        } else if (!strcmp(op, "capclear")) {
            struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
            struct __user_cap_data_struct d[2];
            memset(d, 0, sizeof d);
            result(op, syscall(SYS_capset, &h, d));
        } else if (!strcmp(op, "hostname")) {
            result("sethostname", syscall(SYS_sethostname, arg, strlen(arg)));
        } else if (!strcmp(op, "fork")) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                printf("child ");
                print_ids();
                fflush(stdout);
                _exit(0);
            }
            waitpid(pid, NULL, 0);
        } else {
            fprintf(stderr, "identity_probe: unknown op %s\n", op);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
