/* Makes N getppid() calls (default 1,000,000): a syscall appvirt never intercepts. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000, sum = 0;
    for (long i = 0; i < n; i++) sum += syscall(SYS_getppid);
    printf("%ld calls\n", n);
    return sum == 0 && n > 0;   /* getppid is never 0 here: uses the result */
}
