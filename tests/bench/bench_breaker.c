/* Circuit breaker benchmarks. Prints one `name value unit` line per figure,
 * each timing the median of RUNS runs, with its baselines measured in the
 * same process: a direct call of the same non-inlined function
 * (baseline_call) and one relaxed atomic increment (atomic_add).
 *
 * Build Release to measure; events are off (no figure measures them).
 * breaker_bytes runs first, in a fresh heap, and is a single measurement
 * (RSS growth is deterministic enough and a second run would reuse freed
 * memory). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal/breaker.h"

#define RUNS 5
#define ITERS 10000000
#define NAMES_1M 1000000
#define LOOKUPS 1000000
#define BYTES_N 100000

static atomic_ulong counter;

/* The guarded operation: not inlined, so every figure pays for one call. */
__attribute__((noinline)) static int op(void *arg) {
  __asm__ volatile("" ::"r"(arg) : "memory");
  return 0;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return v[n / 2];
}

static _Noreturn void die(const char *what, int rc) {
  fprintf(stderr, "bench_breaker: %s: %s\n", what, wflo_strerror(rc));
  exit(1);
}

/* --- single-thread loops ----------------------------------------------------- */

static double run_baseline(void) {
  uint64_t t0 = now_ns();
  for (int i = 0; i < ITERS; i++)
    (void)op(&counter);
  return (double)(now_ns() - t0) / ITERS;
}

static double run_atomic(void) {
  uint64_t t0 = now_ns();
  for (int i = 0; i < ITERS; i++)
    atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
  return (double)(now_ns() - t0) / ITERS;
}

/* acquire + call + record: the guarded CLOSED path. */
static double run_guarded(wflo_breaker_t *b) {
  wflo_breaker_permit_t p;
  uint64_t t0 = now_ns();
  for (int i = 0; i < ITERS; i++) {
    if (wflo_breaker_acquire(b, &p) == 0)
      (void)wflo_breaker_record(b, &p, op(&counter), -1.0);
  }
  return (double)(now_ns() - t0) / ITERS;
}

/* The OPEN fast-fail: acquire refused, nothing run. */
static double run_open(wflo_breaker_t *b) {
  wflo_breaker_permit_t p;
  uint64_t t0 = now_ns();
  for (int i = 0; i < ITERS; i++) {
    if (wflo_breaker_acquire(b, &p) == 0)
      die("open breaker admitted a call", 0);
  }
  return (double)(now_ns() - t0) / ITERS;
}

/* --- two threads on one healthy breaker ----------------------------------- */

typedef struct worker {
  wflo_breaker_t *b;
  double ns;
} worker_t;

static void worker_main(void *arg) {
  worker_t *w = arg;
  w->ns = run_guarded(w->b);
}

static double run_2threads(wflo_breaker_t *b) {
  uv_thread_t t[2];
  worker_t w[2] = {{b, 0}, {b, 0}};
  for (int i = 0; i < 2; i++)
    uv_thread_create(&t[i], worker_main, &w[i]);
  for (int i = 0; i < 2; i++)
    uv_thread_join(&t[i]);
  return (w[0].ns + w[1].ns) / 2;
}

/* --- registry ------------------------------------------------------------- */

/* The names to look up are copied in lookup order first: a caller's name is
 * in its cache, so the figure should not include a miss on our own array. */
static double run_lookups(char (*query)[24], wflo_breaker_t **got) {
  uint64_t t0 = now_ns(), dt;
  for (int i = 0; i < LOOKUPS; i++)
    if (wflo_breaker_get(query[i], NULL, &got[i]) != 0)
      die("lookup", 0);
  dt = now_ns() - t0;
  for (int i = 0; i < LOOKUPS; i++)
    wflo_breaker_put(got[i]);
  return (double)dt / LOOKUPS;
}

static double registry_lookup(void) {
  char(*names)[24] = calloc(NAMES_1M, sizeof(*names));
  wflo_breaker_t **all = calloc(NAMES_1M, sizeof(*all));
  wflo_breaker_t **got = calloc(LOOKUPS, sizeof(*got));
  char(*query)[24] = calloc(LOOKUPS, sizeof(*query));
  double v[RUNS];
  int rc;
  if (names == NULL || all == NULL || got == NULL || query == NULL)
    die("calloc", WFLO_E_NOMEM);
  for (int i = 0; i < NAMES_1M; i++) {
    snprintf(names[i], sizeof(names[i]), "svc-%08d-brk",
             (int)((long long)i * 7919 % NAMES_1M));
    if ((rc = wflo_breaker_get(names[i], NULL, &all[i])) != 0)
      die("register", rc);
  }
  for (int r = 0; r < RUNS; r++) {
    for (int i = 0; i < LOOKUPS; i++) /* drawn outside the timed loop */
      memcpy(query[i], names[wflo__rng_u64() % NAMES_1M], sizeof(query[i]));
    v[r] = run_lookups(query, got);
  }
  for (int i = 0; i < NAMES_1M; i++)
    wflo_breaker_put(all[i]);
  free(names);
  free(all);
  free(got);
  free(query);
  return median(v, RUNS);
}

/* --- memory --------------------------------------------------------------- */

static long rss_bytes(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = 0;
  fclose(f);
  return rss * sysconf(_SC_PAGESIZE);
}

static double breaker_bytes(void) {
  wflo_breaker_t **b = calloc(BYTES_N, sizeof(*b));
  char name[17];
  long before;
  int rc;
  if (b == NULL)
    die("calloc", WFLO_E_NOMEM);
  memset(b, 1, BYTES_N * sizeof(*b)); /* its pages are not the breakers' */
  before = rss_bytes();
  for (int i = 0; i < BYTES_N; i++) {
    snprintf(name, sizeof(name), "breaker-%08d", i); /* 16 characters */
    if ((rc = wflo_breaker_new(name, NULL, &b[i])) != 0)
      die("new", rc);
  }
  double per = (double)(rss_bytes() - before) / BYTES_N;
  for (int i = 0; i < BYTES_N; i++)
    wflo_breaker_put(b[i]);
  free(b);
  return per;
}

/* --- main ----------------------------------------------------------------- */

typedef double (*bench_fn)(wflo_breaker_t *b);

static double med_of(bench_fn f, wflo_breaker_t *b) {
  double v[RUNS];
  for (int r = 0; r < RUNS; r++)
    v[r] = f(b);
  return median(v, RUNS);
}

static double baseline_fn(wflo_breaker_t *b) {
  (void)b;
  return run_baseline();
}

static double atomic_fn(wflo_breaker_t *b) {
  (void)b;
  return run_atomic();
}

int main(void) {
  wflo_breaker_config_t cfg;
  wflo_breaker_t *closed, *open, *window;
  double bytes;
  int rc;

  wflo_set_log_level(WFLO_LOG_OFF);
  bytes = breaker_bytes();

  wflo_breaker_config_init(&cfg);
  if ((rc = wflo_breaker_new("closed", &cfg, &closed)) != 0 ||
      (rc = wflo_breaker_new("open", &cfg, &open)) != 0)
    die("new", rc);
  cfg.window = WFLO_WINDOW_COUNT;
  if ((rc = wflo_breaker_new("window", &cfg, &window)) != 0)
    die("new", rc);
  if ((rc = wflo_breaker_force(open, WFLO_BREAKER_OPEN, 3600.0)) != 0)
    die("force", rc);
  if (sizeof(wflo_breaker_t) + sizeof(uint64_t) > 256) /* one slot */
    die("consecutive-mode breaker above 256 bytes", 0);

  printf("baseline_call %.2f ns\n", med_of(baseline_fn, NULL));
  printf("atomic_add %.2f ns\n", med_of(atomic_fn, NULL));
  printf("breaker_closed %.2f ns\n", med_of(run_guarded, closed));
  printf("breaker_open %.2f ns\n", med_of(run_open, open));
  printf("breaker_closed_count_window %.2f ns\n", med_of(run_guarded, window));
  printf("breaker_closed_2threads %.2f ns\n", med_of(run_2threads, closed));
  printf("registry_lookup_1m %.1f ns\n", registry_lookup());
  printf("breaker_bytes %.1f bytes\n", bytes);
  fprintf(stderr, "(sizeof(wflo_breaker_t) %zu + 8 per trial slot)\n",
          sizeof(wflo_breaker_t));

  wflo_breaker_put(closed);
  wflo_breaker_put(open);
  wflo_breaker_put(window);
  return 0;
}
