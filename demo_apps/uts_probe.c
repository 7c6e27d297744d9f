/* uts_probe: what a program sees of its host name, and what setting one does.
 *
 *   uts_probe [NEWNAME [NEWDOMAIN]]
 *
 * Sets the names when given (printing "sethostname=0" or "sethostname=-1 EPERM"), then
 * prints every way of reading them back: uname(2), gethostname(3), getdomainname(3) and
 * /proc/sys/kernel/{hostname,domainname}. Exits 0 when all readers agree.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

static void set(const char *what, int (*fn)(const char *, size_t), const char *name)
{
    int rc = fn(name, strlen(name));
    if (rc == 0)
        printf("%s=0\n", what);
    else
        printf("%s=-1 %s\n", what, strerrorname_np(errno));
}

static void proc(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (f == NULL) {
        snprintf(out, size, "(%s)", strerrorname_np(errno));
        return;
    }
    if (fgets(out, (int)size, f) != NULL)
        out[strcspn(out, "\n")] = 0;
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        set("sethostname", sethostname, argv[1]);
    if (argc > 2)
        set("setdomainname", setdomainname, argv[2]);
    struct utsname u;
    char host[256], domain[256], phost[256], pdomain[256];
    if (uname(&u) != 0 || gethostname(host, sizeof host) != 0
        || getdomainname(domain, sizeof domain) != 0) {
        perror("uts_probe");
        return 2;
    }
    proc("/proc/sys/kernel/hostname", phost, sizeof phost);
    proc("/proc/sys/kernel/domainname", pdomain, sizeof pdomain);
    printf("uname=%s gethostname=%s proc=%s\n", u.nodename, host, phost);
    printf("domain=%s getdomainname=%s proc=%s\n", u.domainname, domain, pdomain);
    return strcmp(u.nodename, host) || strcmp(host, phost) || strcmp(u.domainname, domain)
           || strcmp(domain, pdomain);
}
