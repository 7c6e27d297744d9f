/* Starts a tree of N processes (default 20: 4 children with 4 grandchildren each) that wait
 * forever; prints each pid, one per line, then "ready" once all of them exist. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int per = argc > 1 ? atoi(argv[1]) / 5 : 4;
    int sync[2];
    char byte;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (pipe(sync) < 0) return 1;
    for (int i = 0; i < per; i++) {
        pid_t c = fork();
        if (c == 0) {
            for (int j = 0; j < 4; j++) {
                pid_t g = fork();
                if (g == 0) { for (;;) pause(); }
                printf("%d\n", g);
            }
            if (write(sync[1], "x", 1) != 1) _exit(1);
            for (;;) pause();
        }
        printf("%d\n", c);
    }
    for (int i = 0; i < per; i++)
        if (read(sync[0], &byte, 1) != 1) return 1;
    printf("ready\n");
    for (;;) pause();
}
