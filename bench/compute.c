/* compute: a CPU-bound program making almost no system calls, for the benchmark.
 *
 *   compute ROUNDS
 *
 * Runs ROUNDS million steps of an integer hash chain (each step depends on the previous one,
 * so the compiler cannot skip or vectorise it) and prints the final value: a tracer that
 * costs nothing between system calls should not slow it down at all.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: compute ROUNDS\n");
        return 2;
    }
    uint64_t steps = strtoull(argv[1], NULL, 10) * 1000000u, x = 0x9e3779b97f4a7c15u;
    for (uint64_t i = 0; i < steps; i++) {
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9u;
        x ^= i;
    }
    printf("%016llx\n", (unsigned long long)x);
    return 0;
}
