/* Prints the year three ways: time(), gettimeofday() and clock_gettime(CLOCK_REALTIME), all
 * normally served by the vDSO; built static by the tests to show it is not a libc trick. */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static int year(time_t t) { struct tm tm; gmtime_r(&t, &tm); return tm.tm_year + 1900; }

int main(void) {
    struct timeval tv;
    struct timespec ts;
    gettimeofday(&tv, NULL);
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("%d %d %d\n", year(time(NULL)), year(tv.tv_sec), year(ts.tv_sec));
    return 0;
}
