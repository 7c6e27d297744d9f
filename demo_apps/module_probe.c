/* module_probe: load a kernel module, look for it, unload it, look again.
 *
 *   module_probe MODULE.ko NAME [PARAMS]
 *
 * Prints one line per step: "finit_module=0" (or "=-1 ERRNO"), "listed=yes|no" (NAME in
 * /proc/modules), "delete_module=...", "listed=...". Exits 0 when loading and unloading
 * both succeeded and the listing followed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(const char *what, long rc)
{
    if (rc == 0)
        printf("%s=0\n", what);
    else
        printf("%s=-1 %s\n", what, strerrorname_np(errno));
    return rc == 0;
}

static int listed(const char *name)
{
    char line[512];
    int found = 0;
    size_t n = strlen(name);
    FILE *f = fopen("/proc/modules", "r");
    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL)
            if (strncmp(line, name, n) == 0 && line[n] == ' ')
                found = 1;
        fclose(f);
    }
    printf("listed=%s\n", found ? "yes" : "no");
    return found;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: module_probe MODULE.ko NAME [PARAMS]\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror(argv[1]);
        return 2;
    }
    int loaded = report("finit_module",
                        syscall(SYS_finit_module, fd, argc > 3 ? argv[3] : "", 0));
    close(fd);
    int seen = listed(argv[2]);
    int removed = report("delete_module", syscall(SYS_delete_module, argv[2], O_NONBLOCK));
    int gone = !listed(argv[2]);
    return loaded && seen && removed && gone ? 0 : 1;
}
