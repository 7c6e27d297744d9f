/* threads_io: four threads doing small-file I/O at the same time, for the benchmark.
 *
 *   threads_io FILES_PER_THREAD
 *
 * Each thread works in its own directory under a fresh temporary one ($TMPDIR or /tmp): it
 * writes FILES_PER_THREAD files of 4 KiB, then stats and reads each back, checks and hashes its
 * bytes, and removes it. Prints totals that do not depend on timing, so any runner's output can
 * be compared with native.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define THREADS 4
#define FILE_SIZE 4096
#define HASH_ROUNDS 16     /* work between the calls: natively the threads keep 2 CPUs busy */

struct job {
    char dir[4200];
    int thread, files;
    long bytes_checked;
    uint64_t sum;
};

static void fill(unsigned char *buf, int thread, int file)
{
    for (int i = 0; i < FILE_SIZE; i++)
        buf[i] = (unsigned char)(thread * 31 + file * 7 + i);
}

static void fail(const char *what, const char *path)
{
    perror(path);
    fprintf(stderr, "threads_io: %s failed\n", what);
    exit(1);
}

static void *work(void *arg)
{
    struct job *job = arg;
    int thread = job->thread;
    unsigned char want[FILE_SIZE], got[FILE_SIZE];
    char path[4300];
    if (mkdir(job->dir, 0700) != 0)
        fail("mkdir", job->dir);
    for (int f = 0; f < job->files; f++) {
        snprintf(path, sizeof path, "%s/f%05d", job->dir, f);
        fill(want, thread, f);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, want, FILE_SIZE) != FILE_SIZE || close(fd) != 0)
            fail("write", path);
    }
    for (int f = 0; f < job->files; f++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/f%05d", job->dir, f);
        fill(want, thread, f);
        int fd = open(path, O_RDONLY);
        if (fd < 0 || fstat(fd, &st) != 0 || st.st_size != FILE_SIZE
            || read(fd, got, FILE_SIZE) != FILE_SIZE || close(fd) != 0
            || memcmp(want, got, FILE_SIZE) != 0)
            fail("read back", path);
        job->bytes_checked += st.st_size;
        for (int round = 0; round < HASH_ROUNDS; round++)
            for (int i = 0; i < FILE_SIZE; i++)
                job->sum = (job->sum ^ got[i]) * 0x100000001b3u;  /* FNV-1a */
        if (unlink(path) != 0)
            fail("unlink", path);
    }
    if (rmdir(job->dir) != 0)
        fail("rmdir", job->dir);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: threads_io FILES_PER_THREAD\n");
        return 2;
    }
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char base[4096];
    snprintf(base, sizeof base, "%s/threads_io.XXXXXX", tmp);
    if (mkdtemp(base) == NULL)
        fail("mkdtemp", base);
    struct job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) {
        memset(&jobs[t], 0, sizeof jobs[t]);
        jobs[t].thread = t;
        jobs[t].sum = 0xcbf29ce484222325u;
        snprintf(jobs[t].dir, sizeof jobs[t].dir, "%s/t%d", base, t);
        jobs[t].files = atoi(argv[1]);
        if (pthread_create(&threads[t], NULL, work, &jobs[t]) != 0)
            fail("pthread_create", base);
    }
    long bytes = 0;
    uint64_t sum = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        bytes += jobs[t].bytes_checked;
        sum = sum * 1000003 + jobs[t].sum;
    }
    if (rmdir(base) != 0)
        fail("rmdir", base);
    printf("%d threads, %ld bytes checked, sum %016llx\n", THREADS, bytes,
           (unsigned long long)sum);
    return 0;
}
