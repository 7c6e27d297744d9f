/* reboot_probe: a program that restarts its machine until it has booted often enough.
 *
 *   reboot_probe COUNTER_FILE BOOTS [restart|halt|poweroff|cad]
 *
 * Each start adds one to the number in COUNTER_FILE and prints "boot N". While N < BOOTS it
 * calls reboot(2) with the given command (default restart); if reboot returns, it prints
 * "reboot=-1 ERRNO" (or "reboot=0") and exits 1 (0 for cad). At N == BOOTS it exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: reboot_probe COUNTER_FILE BOOTS [restart|halt|poweroff|cad]\n");
        return 2;
    }
    long n = 0;
    FILE *f = fopen(argv[1], "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &n) != 1)
            n = 0;
        fclose(f);
    }
    n++;
    f = fopen(argv[1], "w");
    if (f == NULL || fprintf(f, "%ld\n", n) < 0 || fclose(f) != 0) {
        perror(argv[1]);
        return 2;
    }
    printf("boot %ld\n", n);
    fflush(stdout);
    if (n >= atol(argv[2]))
        return 0;
    const char *what = argc > 3 ? argv[3] : "restart";
    int cmd = strcmp(what, "halt") == 0 ? RB_HALT_SYSTEM
            : strcmp(what, "poweroff") == 0 ? RB_POWER_OFF
            : strcmp(what, "cad") == 0 ? RB_ENABLE_CAD : RB_AUTOBOOT;
    sync();
    int rc = reboot(cmd);
    if (rc == 0)
        printf("reboot=0\n");
    else
        printf("reboot=-1 %s\n", strerrorname_np(errno));
    return cmd == RB_ENABLE_CAD && rc == 0 ? 0 : 1;
}
