/* memcpy_rate BYTES SECONDS [START_REALTIME_NS]
 * The copy-rate reference of bench/comm.sh: copies one faulted-in buffer of BYTES into
 * another with glibc memcpy, back to back for SECONDS, optionally starting at a wall-clock
 * instant (so two pinned copies run at once). Prints "BYTES GBps" (1e9 bytes copied / s). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: memcpy_rate BYTES SECONDS [START_REALTIME_NS]\n");
    return 2;
  }
  size_t bytes = strtoull(argv[1], NULL, 10);
  double duration = atof(argv[2]);
  char *src = NULL, *dst = NULL;
  if (posix_memalign((void**)&src, 4096, bytes) || posix_memalign((void**)&dst, 4096, bytes)) return 1;
  memset(src, 7, bytes);
  memset(dst, 0, bytes);
  memcpy(dst, src, bytes);
  if (argc > 3) {
    double start = strtoull(argv[3], NULL, 10) * 1e-9;
    while (seconds(CLOCK_REALTIME) < start) {
      struct timespec nap = {0, 100000};
      nanosleep(&nap, NULL);
    }
  }
  long copies = 0;
  double t0 = seconds(CLOCK_MONOTONIC), t;
  do {
    memcpy(dst, src, bytes);
    __asm__ volatile("" ::"r"(dst) : "memory");
    ++copies;
    t = seconds(CLOCK_MONOTONIC);
  } while (t - t0 < duration);
  printf("%zu %.3f\n", bytes, (double)bytes * copies / (t - t0) / 1e9);
  return dst[bytes - 1] == 7 ? 0 : 3;
}
