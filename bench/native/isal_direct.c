/*
 * The baseline for bench/native.ts: Intel ISA-L called directly from C, no
 * Node.js in between. Built by the benchmark into bench/build/ when ISA-L is
 * installed (cc bench/native/isal_direct.c -O2 -lisal).
 *
 *   isal_direct encode K M SHARD_BYTES SECONDS   parity for K data shards
 *   isal_direct decode K M SHARD_BYTES SECONDS   rebuild data shards 0 and 1
 *   isal_direct crc32c 0 0 BUFFER_BYTES SECONDS  crc32_iscsi over one buffer
 *
 * Prints one JSON object: {"bytes": ..., "seconds": ..., "ops": ...}, where
 * bytes counts data (K x SHARD_BYTES per stripe, or the buffer). The clock
 * is read once per batch of about 1 MiB of work, as bench/native.ts does. Tables are
 * prepared once, outside the timed loop, as a codec with a table cache does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>

#define MAX_K 32
#define MAX_M 8

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned char *alloc_filled(size_t bytes, unsigned seed) {
  unsigned char *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == NULL) {
    perror("aligned_alloc");
    exit(1);
  }
  for (size_t i = 0; i < bytes; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (unsigned char)(seed >> 16);
  }
  return p;
}

/* Runs op until `seconds` have passed (after one untimed call); prints the figures. */
#define TIMED(op, bytes_per_op, seconds)                                                   \
  do {                                                                                     \
    op;                                                                                    \
    long batch = (long)((1 << 20) / (bytes_per_op));                                       \
    if (batch < 1) batch = 1;                                                              \
    long ops = 0;                                                                          \
    double start = now_seconds(), elapsed;                                                 \
    do {                                                                                   \
      for (long b = 0; b < batch; b++) op;                                                 \
      ops += batch;                                                                        \
      elapsed = now_seconds() - start;                                                     \
    } while (elapsed < (seconds));                                                         \
    printf("{\"bytes\": %.0f, \"seconds\": %.6f, \"ops\": %ld}\n", (double)(bytes_per_op) * ops, elapsed, ops); \
  } while (0)

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s encode|decode|crc32c K M BYTES SECONDS\n", argv[0]);
    return 2;
  }
  const char *what = argv[1];
  int k = atoi(argv[2]), m = atoi(argv[3]), len = atoi(argv[4]);
  double seconds = atof(argv[5]);
  if (len <= 0 || seconds <= 0) return 2;

  if (strcmp(what, "crc32c") == 0) {
    unsigned char *buf = alloc_filled((size_t)len, 1);
    volatile unsigned int sink = 0;
    TIMED(sink ^= ~crc32_iscsi(buf, len, 0xffffffffu), len, seconds);
    (void)sink;
    return 0;
  }
  if (k < 2 || k > MAX_K || m < 2 || m > MAX_M) return 2;

  unsigned char coding[(MAX_K + MAX_M) * MAX_K];
  unsigned char tables[32 * MAX_K * MAX_M];
  unsigned char *shards[MAX_K + MAX_M];
  gf_gen_cauchy1_matrix(coding, k + m, k);
  for (int i = 0; i < k + m; i++) shards[i] = alloc_filled((size_t)len, (unsigned)i + 7);
  ec_init_tables(k, m, &coding[k * k], tables);
  ec_encode_data(len, k, m, tables, shards, &shards[k]);

  if (strcmp(what, "encode") == 0) {
    TIMED(ec_encode_data(len, k, m, tables, shards, &shards[k]), (double)k * len, seconds);
    return 0;
  }
  if (strcmp(what, "decode") == 0) {
    /* Shards 0 and 1 lost: survivors are 2..k+1 (the first k that remain). */
    unsigned char picked[MAX_K * MAX_K], inverse[MAX_K * MAX_K], rows[2 * MAX_K];
    unsigned char *survivors[MAX_K], *rebuilt[2];
    for (int r = 0; r < k; r++) {
      memcpy(&picked[r * k], &coding[(r + 2) * k], (size_t)k);
      survivors[r] = shards[r + 2];
    }
    if (gf_invert_matrix(picked, inverse, k) != 0) return 3;
    memcpy(rows, inverse, 2 * (size_t)k); /* rows 0 and 1 of the inverse rebuild data shards 0 and 1 */
    ec_init_tables(k, 2, rows, tables);
    rebuilt[0] = alloc_filled((size_t)len, 0);
    rebuilt[1] = alloc_filled((size_t)len, 0);
    TIMED(ec_encode_data(len, k, 2, tables, survivors, rebuilt), (double)k * len, seconds);
    if (memcmp(rebuilt[0], shards[0], (size_t)len) != 0 || memcmp(rebuilt[1], shards[1], (size_t)len) != 0) {
      fprintf(stderr, "decode produced wrong data\n");
      return 4;
    }
    return 0;
  }
  return 2;
}
