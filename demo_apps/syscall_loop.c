/* Makes N getppid() calls (default 1,000,000): a syscall appvirt never intercepts.
 * Prints the count on stdout and the loop's own duration on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000, sum = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) sum += syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* the loop's own time, for the benchmark (stderr: stdout is compared across runners) */
    fprintf(stderr, "loop_ns %lld\n",
            (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    printf("%ld calls\n", n);
    return sum == 0 && n > 0;   /* getppid is never 0 here: uses the result */
}
