/* Retry benchmarks: prints one `name value ns` line per figure, each the
 * median of RUNS runs, with the baseline measured in the same process.
 * Build Release to measure. Events are off (hot paths are measured, not
 * logging). Names are fixed so figures compare across commits:
 *   baseline_call           direct call to a no-op function
 *   retry_success           wflo_retry_execute, first try succeeds
 *   backoff_delay           wflo_backoff_delay, default policy (jitter on)
 *   retry_macro             WFLO_RETRY block, first try succeeds
 *   retry_3fail_zero_delay  3 failures then success, base_delay 0 (whole
 *                           execute per op)
 * WFLO_STRESS_SCALE scales the iteration counts (default 1.0).
 * Metrics are on, as they are by default; WFLO_BENCH_METRICS=off measures
 * the same paths with wflo_metrics_enable(false). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wflo.h>

/* Many short runs: on a shared machine the median of short runs lands in
 * slices nobody preempted, where long runs would average the noise in. */
#define RUNS 31

#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#define BARRIER() __asm__ volatile("" ::: "memory")
#else
#define NOINLINE
#define BARRIER()
#endif

static volatile int sink;
static volatile double dsink;

/* The callee of both the baseline and the retries: kept out of line and
 * opaque so the baseline cannot be folded away. */
static NOINLINE int noop(void *arg) {
  BARRIER();
  (void)arg;
  return 0;
}

static NOINLINE int fail3(void *arg) {
  int *n = arg;
  BARRIER();
  return (*n)++ < 3 ? -1 : 0;
}

static wflo_retry_policy_t pol, pol_zero;

static uint64_t now_ns(void) { return uv_hrtime(); }

static double run_baseline(long iters) {
  uint64_t t0 = now_ns();
  long i;
  int acc = 0;
  for (i = 0; i < iters; i++)
    acc += noop(NULL);
  sink = acc;
  return (double)(now_ns() - t0) / (double)iters;
}

static double run_success(long iters) {
  uint64_t t0 = now_ns();
  long i;
  int acc = 0;
  for (i = 0; i < iters; i++)
    acc += wflo_retry_execute(&pol, noop, NULL);
  sink = acc;
  return (double)(now_ns() - t0) / (double)iters;
}

static double run_backoff(long iters) {
  uint64_t t0 = now_ns();
  long i;
  double acc = 0;
  for (i = 0; i < iters; i++)
    acc += wflo_backoff_delay(&pol, (int)(i & 7), 1.0);
  dsink = acc;
  return (double)(now_ns() - t0) / (double)iters;
}

static double run_macro(long iters) {
  uint64_t t0 = now_ns();
  long i;
  int acc = 0;
  for (i = 0; i < iters; i++) {
    int rc;
    WFLO_RETRY(&pol, rc) { rc = noop(NULL); }
    acc += rc;
  }
  sink = acc;
  return (double)(now_ns() - t0) / (double)iters;
}

static double run_3fail(long iters) {
  uint64_t t0 = now_ns();
  long i;
  int acc = 0;
  for (i = 0; i < iters; i++) {
    int n = 0;
    acc += wflo_retry_execute(&pol_zero, fail3, &n);
  }
  sink = acc;
  return (double)(now_ns() - t0) / (double)iters;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct figure {
  const char *name;
  double (*run)(long iters);
  long div; /* iterations = n / div */
  double v[RUNS];
} figure_t;

static figure_t figures[] = {
    {"baseline_call", run_baseline, 1, {0}},
    {"retry_success", run_success, 1, {0}},
    {"backoff_delay", run_backoff, 1, {0}},
    {"retry_macro", run_macro, 1, {0}},
    {"retry_3fail_zero_delay", run_3fail, 10, {0}},
};
#define NFIG (sizeof(figures) / sizeof(figures[0]))

int main(void) {
  const char *s = getenv("WFLO_STRESS_SCALE");
  double scale = s != NULL ? strtod(s, NULL) : 1.0;
  size_t k;
  long n;
  int r;
  if (!(scale > 0))
    scale = 1.0;
  n = (long)(2000000 * scale);
  if (n < 1000)
    n = 1000;
  wflo_set_log_level(WFLO_LOG_OFF);
  s = getenv("WFLO_BENCH_METRICS");
  if (s != NULL && strcmp(s, "off") == 0)
    wflo_metrics_enable(false);
  wflo_retry_policy_init(&pol);
  wflo_retry_policy_init(&pol_zero);
  pol_zero.base_delay = 0.0;
  for (k = 0; k < NFIG; k++) /* warm-up */
    figures[k].run(n / figures[k].div / 10);
  /* Rounds interleave the figures, so the baseline and the retries see the
   * same machine load; each figure is the median of its RUNS rounds. */
  for (r = 0; r < RUNS; r++)
    for (k = 0; k < NFIG; k++)
      figures[k].v[r] = figures[k].run(n / figures[k].div);
  for (k = 0; k < NFIG; k++) {
    qsort(figures[k].v, RUNS, sizeof(double), cmp);
    printf("%s %.2f ns\n", figures[k].name, figures[k].v[RUNS / 2]);
  }
  return 0;
}
