/* hold_procs: keep N processes alive at once, for the benchmark's tracer-memory measurement.
 *
 *   hold_procs N
 *
 * Forks N children that each report they are running and then block until a pipe closes.
 * Once all N are up it prints "ready N" on stdout and waits for its stdin to close (the
 * benchmark reads the tracer's memory meanwhile); then it lets the children go, reaps them
 * and prints "done N".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hold_procs N\n");
        return 2;
    }
    int n = atoi(argv[1]), hold[2], up[2];
    char c;
    if (pipe(hold) != 0 || pipe(up) != 0) {
        perror("pipe");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(hold[1]);
            close(up[0]);
            if (write(up[1], "x", 1) != 1)
                _exit(1);
            while (read(hold[0], &c, 1) > 0)   /* until the parent closes its end */
                ;
            _exit(0);
        }
    }
    close(hold[0]);
    close(up[1]);
    for (int i = 0; i < n; i++)
        if (read(up[0], &c, 1) != 1) {
            fprintf(stderr, "hold_procs: a child died early\n");
            return 1;
        }
    printf("ready %d\n", n);
    fflush(stdout);
    while (read(0, &c, 1) > 0)
        ;
    close(hold[1]);
    int reaped = 0;
    while (wait(NULL) > 0)
        reaped++;
    printf("done %d\n", reaped);
    return reaped == n ? 0 : 1;
}
