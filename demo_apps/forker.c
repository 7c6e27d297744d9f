/* Forks N children (default 50) and starts 4 threads; every process and thread makes
 * intercepted calls (open, stat) and prints "pid P tid T" for each of them. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void touch_files(const char *who) {
    struct stat st;
    int fd = open("/etc/hostname", O_RDONLY);
    if (fd >= 0) close(fd);
    stat("/etc/passwd", &st);
    printf("%s pid %d tid %ld\n", who, getpid(), (long)syscall(SYS_gettid));
    fflush(stdout);
}

static void *thread_main(void *arg) { (void)arg; touch_files("thread"); return NULL; }

int main(int argc, char **argv) {
    int children = argc > 1 ? atoi(argv[1]) : 50;
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, thread_main, NULL);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) { touch_files("child"); _exit(0); }
    }
    int status, failed = 0;
    while (wait(&status) > 0) failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    touch_files("parent");
    return failed ? 1 : 0;
}
