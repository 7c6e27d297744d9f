/* on_terminal FD PROGRAM [ARG...]: run PROGRAM in a new session whose controlling terminal is
 * the pty slave open at FD (closed before the exec). The benchmark's "appvirt (warm on a
 * terminal)" runner starts its client so: a preexec step in Python would make the benchmark
 * fork itself rather than vfork, 2 to 4 ms more on every start of that runner alone. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fputs("usage: on_terminal FD PROGRAM [ARG...]\n", stderr);
        return 2;
    }
    int fd = atoi(argv[1]);
    if (setsid() < 0 || ioctl(fd, TIOCSCTTY, 0) != 0) {
        perror("on_terminal");
        return 125;
    }
    close(fd);
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    return 127;
}
