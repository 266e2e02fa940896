/* Benchmark of metric updates (issue 7). Prints one `name value ns` line
 * per figure, each the median of RUNS runs, with the atomic-add baseline
 * measured in the same run:
 *   atomic_add                   relaxed fetch-add on one atomic, 1 thread
 *   counter_inc_1t               wflo__counter_add(s, 1), 1 thread
 *   counter_inc_2t               the same series from 2 threads at once
 *                                (ns per increment per thread)
 *   histogram_observe            wflo__histogram_observe, values spread
 *                                over the buckets
 *   breaker_closed               the real breaker's CLOSED path (acquire,
 *                                the operation through a function pointer,
 *                                record success) with metrics switched off
 *   breaker_closed_with_metrics  the same with metrics on: the breaker
 *                                counts the call in
 *                                wflo_circuit_breaker_calls_total
 * The difference of the last two is what metrics add to the CLOSED path
 * (issue 7: at most 3 ns). Build Release to measure.
 * WFLO_STRESS_SCALE scales the iteration counts. */
#include "internal/metrics.h"

#include <stdio.h>
#include <stdlib.h>

#define RUNS 7

static size_t iters = 20000000;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof(*v), cmp_double);
  return v[n / 2];
}

/* --- bodies ---------------------------------------------------------------------- */

static atomic_uint_fast64_t plain_counter;
static wflo__metric_series_t *counter;
static wflo__metric_series_t *histogram;
static wflo_breaker_t *breaker;

static int noop_op(void *arg) {
  WFLO_UNUSED(arg);
  return 0;
}
/* volatile: the compiler must call through it every time. */
static int (*volatile op)(void *) = noop_op;

static double ns_per_op(uint64_t t0, uint64_t t1) {
  return (double)(t1 - t0) / (double)iters;
}

static double run_atomic_add(void) {
  uint64_t t0 = uv_hrtime();
  size_t i;
  for (i = 0; i < iters; i++)
    atomic_fetch_add_explicit(&plain_counter, 1, memory_order_relaxed);
  return ns_per_op(t0, uv_hrtime());
}

static double run_counter(void) {
  uint64_t t0 = uv_hrtime();
  size_t i;
  for (i = 0; i < iters; i++)
    wflo__counter_add(counter, 1);
  return ns_per_op(t0, uv_hrtime());
}

static double run_histogram(void) {
  /* Waits from 50 us to 20 s: most land in the low buckets, as they do. */
  static const double values[8] = {0.00005, 0.0007, 0.003, 0.02,
                                   0.08,    0.4,    3.0,   20.0};
  uint64_t t0 = uv_hrtime();
  size_t i;
  for (i = 0; i < iters; i++)
    wflo__histogram_observe(histogram, values[i & 7]);
  return ns_per_op(t0, uv_hrtime());
}

static double run_breaker(bool with_metrics) {
  wflo_breaker_permit_t p;
  uint64_t t0;
  size_t i;
  int rc = 0;
  wflo_metrics_enable(with_metrics);
  t0 = uv_hrtime();
  for (i = 0; i < iters; i++) {
    if (wflo_breaker_acquire(breaker, &p) == 0)
      rc |= wflo_breaker_record(breaker, &p, op(NULL), -1.0);
  }
  t0 = uv_hrtime() - t0;
  wflo_metrics_enable(true);
  if (rc != 0)
    abort();
  return ns_per_op(0, t0);
}

/* --- two threads ----------------------------------------------------------------- */

typedef struct worker {
  uv_barrier_t *barrier;
  double ns;
} worker_t;

static void counter_worker(void *arg) {
  worker_t *w = arg;
  uv_barrier_wait(w->barrier);
  w->ns = run_counter();
}

static double run_counter_2t(void) {
  uv_barrier_t barrier;
  uv_thread_t t[2];
  worker_t w[2];
  int i;
  uv_barrier_init(&barrier, 2);
  for (i = 0; i < 2; i++) {
    w[i].barrier = &barrier;
    uv_thread_create(&t[i], counter_worker, &w[i]);
  }
  for (i = 0; i < 2; i++)
    uv_thread_join(&t[i]);
  uv_barrier_destroy(&barrier);
  return w[0].ns > w[1].ns ? w[0].ns : w[1].ns;
}

/* --- main ---------------------------------------------------------------------------- */

typedef double (*bench_fn)(void);

static double run_breaker_plain(void) { return run_breaker(false); }
static double run_breaker_metrics(void) { return run_breaker(true); }

int main(void) {
  static const struct {
    const char *name;
    bench_fn fn;
  } benches[] = {
      {"atomic_add", run_atomic_add},
      {"counter_inc_1t", run_counter},
      {"counter_inc_2t", run_counter_2t},
      {"histogram_observe", run_histogram},
      {"breaker_closed", run_breaker_plain},
      {"breaker_closed_with_metrics", run_breaker_metrics},
  };
  double samples[WFLO_ARRAY_SIZE(benches)][RUNS];
  const char *scale = getenv("WFLO_STRESS_SCALE");
  size_t b;
  int r;

  if (scale != NULL && strtod(scale, NULL) > 0)
    iters = (size_t)((double)iters * strtod(scale, NULL));
  if (iters < 1000)
    iters = 1000;
  wflo_set_log_level(WFLO_LOG_OFF);
  counter = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                             (const char *[]){"bench", "success"});
  histogram = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"bench"});
  if (counter == NULL || histogram == NULL ||
      wflo_breaker_new("bench", NULL, &breaker) != 0)
    return 1;
  /* Interleave the benchmarks run by run so a noisy neighbour on a shared
   * machine hurts every figure alike. */
  for (r = 0; r < RUNS; r++)
    for (b = 0; b < WFLO_ARRAY_SIZE(benches); b++)
      samples[b][r] = benches[b].fn();
  for (b = 0; b < WFLO_ARRAY_SIZE(benches); b++)
    printf("%s %.2f ns\n", benches[b].name, median(samples[b], RUNS));
  wflo_breaker_put(breaker);
  wflo__metric_release(counter);
  wflo__metric_release(histogram);
  wflo_metrics_reset();
  return 0;
}
