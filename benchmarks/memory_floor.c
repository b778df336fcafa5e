/* The least a row-wise Adagrad embedding step can cost in memory traffic, in plain C.
 *
 * For each configuration (a flat float table of rows x dim, an accumulator per row, and the
 * ids of a few steps), one step here does only what every sparse step must: read the rows of
 * all its ids (the forward lookup), then for each distinct id, in ascending order, update its
 * accumulator and its row (the fused update). Distinct ids are found before timing, so no
 * sort or hashing is timed: what is left is the memory traffic of touching the rows. Every
 * loop prefetches PREFETCH ids ahead, which XLA's CPU gather and scatter do not, so the times
 * are a floor for any implementation on this machine, not a competitor to it.
 *
 * Table and accumulators are backed by 2 MiB pages (MADV_HUGEPAGE), as recjax/embedding/hugepages.py
 * backs the engine's. memory_floor.py drives it: it runs one step per line read from stdin
 * (a configuration's index and the step's, cycling over the steps in its file), so that the
 * driver can interleave the configurations with the engine's own step in rounds, as
 * benchmarks/embedding.py interleaves its own, and all of them see the same load.
 *
 * usage: memory_floor DIM IDS_PER_STEP ROWS_1 IDS_FILE_1 [ROWS_2 IDS_FILE_2 ...]
 *   IDS_FILE: steps x IDS_PER_STEP int32 row ids, native byte order.
 * prints "ready" and each configuration's distinct ids in step 0, then for each step asked,
 * one line: gather_ms update_ms.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PREFETCH 32
#define HUGE_PAGE (2L << 20)
#define LEARNING_RATE 0.05f

typedef struct {
  long rows, steps, *distinct;   /* distinct[s]: how many distinct ids step s has */
  int32_t *ids, *sorted;     /* [steps][ids_per_step]; sorted: each step's distinct ids */
  float *table, *acc;
} Config;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static void *huge_alloc(size_t bytes) {
  size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
  void *p = aligned_alloc(HUGE_PAGE, rounded);
  if (!p) { perror("aligned_alloc"); exit(1); }
  madvise(p, rounded, MADV_HUGEPAGE);
  return p;
}

static void load(Config *c, const char *path, long n, int dim) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(1); }
  fseek(f, 0, SEEK_END);
  long steps = ftell(f) / (long)sizeof(int32_t) / n;
  rewind(f);
  c->steps = steps;
  c->ids = malloc(steps * n * sizeof(int32_t));
  c->sorted = malloc(steps * n * sizeof(int32_t));
  c->distinct = malloc(steps * sizeof(long));
  if (steps < 1 || fread(c->ids, sizeof(int32_t), steps * n, f) != (size_t)(steps * n)) {
    fprintf(stderr, "%s: cannot read %ld ids\n", path, steps * n);
    exit(1);
  }
  fclose(f);
  for (long s = 0; s < steps; s++) {
    int32_t *ids = c->ids + s * n, *out = c->sorted + s * n;
    for (long i = 0; i < n; i++) {
      if (ids[i] < 0 || ids[i] >= c->rows) {
        fprintf(stderr, "%s: step %ld id %ld is %d, outside [0, %ld)\n", path, s, i, ids[i],
                c->rows);
        exit(1);
      }
    }
    memcpy(out, ids, n * sizeof(int32_t));
    qsort(out, n, sizeof(int32_t), by_value);
    long k = 0;
    for (long i = 0; i < n; i++)
      if (i == 0 || out[i] != out[i - 1]) out[k++] = out[i];
    c->distinct[s] = k;
  }
  /* Every page written once, as init does, so no step pays a first-touch fault. */
  c->table = huge_alloc(c->rows * dim * sizeof(float));
  c->acc = huge_alloc(c->rows * sizeof(float));
  for (long i = 0; i < c->rows * dim; i++) c->table[i] = (float)(i % 977) * 1e-3f;
  for (long i = 0; i < c->rows; i++) c->acc[i] = 0.1f;
}

/* The forward lookup: every id's row, in the batch's order. */
static void gather(const float *table, const int32_t *ids, long n, int dim, float *out) {
  for (long i = 0; i < n; i++) {
    if (i + PREFETCH < n) __builtin_prefetch(table + (long)ids[i + PREFETCH] * dim);
    memcpy(out + i * dim, table + (long)ids[i] * dim, dim * sizeof(float));
  }
}

/* The fused row-wise Adagrad update of each distinct row, with its summed gradient. */
static void update(float *table, float *acc, const int32_t *rows, long k, int dim,
                   const float *grads) {
  for (long i = 0; i < k; i++) {
    if (i + PREFETCH < k) {
      __builtin_prefetch(table + (long)rows[i + PREFETCH] * dim, 1);
      __builtin_prefetch(acc + rows[i + PREFETCH], 1);
    }
    float *row = table + (long)rows[i] * dim;
    const float *g = grads + i * dim;
    float squares = 0;
    for (int d = 0; d < dim; d++) squares += g[d] * g[d];
    float a = acc[rows[i]] + squares / dim;
    acc[rows[i]] = a;
    float scale = LEARNING_RATE / sqrtf(a);
    for (int d = 0; d < dim; d++) row[d] -= scale * g[d];
  }
}

int main(int argc, char **argv) {
  if (argc < 5 || (argc - 3) % 2) {
    fprintf(stderr, "usage: %s DIM IDS_PER_STEP ROWS IDS_FILE [ROWS IDS_FILE ...]\n", argv[0]);
    return 2;
  }
  int dim = atoi(argv[1]);
  long n = atol(argv[2]);
  int count = (argc - 3) / 2;
  Config *configs = calloc(count, sizeof(Config));
  for (int c = 0; c < count; c++) {
    configs[c].rows = atol(argv[3 + 2 * c]);
    load(&configs[c], argv[4 + 2 * c], n, dim);
  }
  float *rows = malloc(n * dim * sizeof(float)), *grads = malloc(n * dim * sizeof(float));
  for (long i = 0; i < n * dim; i++) grads[i] = 1e-3f * (float)(i % 13);
  printf("ready");
  for (int c = 0; c < count; c++) printf(" %ld", configs[c].distinct[0]);
  printf("\n");
  fflush(stdout);
  char line[64];
  double checksum = 0;
  while (fgets(line, sizeof line, stdin)) {      /* one line per step: "CONFIG STEP" */
    int c;
    long s;
    if (sscanf(line, "%d %ld", &c, &s) != 2 || c < 0 || c >= count) {
      fprintf(stderr, "bad request: %s", line);
      return 2;
    }
    Config *cfg = &configs[c];
    s %= cfg->steps;
    double start = now_ms();
    gather(cfg->table, cfg->ids + s * n, n, dim, rows);
    double middle = now_ms();
    update(cfg->table, cfg->acc, cfg->sorted + s * n, cfg->distinct[s], dim, grads);
    double end = now_ms();
    checksum += rows[s * dim];                    /* keeps the gather from being elided */
    printf("%.4f %.4f\n", middle - start, end - middle);
    fflush(stdout);
  }
  fprintf(stderr, "checksum %g\n", checksum);
  return 0;
}
