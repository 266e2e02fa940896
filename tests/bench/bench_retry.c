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
 * WFLO_STRESS_SCALE scales the iteration counts (default 1.0). */
#include <stdio.h>
#include <stdlib.h>

#include <wflo.h>

#define RUNS 7

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

static double median(double (*f)(long), long iters) {
  double v[RUNS];
  int i;
  f(iters / 10); /* warm-up */
  for (i = 0; i < RUNS; i++)
    v[i] = f(iters);
  qsort(v, RUNS, sizeof(v[0]), cmp);
  return v[RUNS / 2];
}

int main(void) {
  const char *s = getenv("WFLO_STRESS_SCALE");
  double scale = s != NULL ? strtod(s, NULL) : 1.0;
  long n;
  if (!(scale > 0))
    scale = 1.0;
  n = (long)(20000000 * scale);
  if (n < 1000)
    n = 1000;
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_retry_policy_init(&pol);
  wflo_retry_policy_init(&pol_zero);
  pol_zero.base_delay = 0.0;
  printf("baseline_call %.2f ns\n", median(run_baseline, n));
  printf("retry_success %.2f ns\n", median(run_success, n));
  printf("backoff_delay %.2f ns\n", median(run_backoff, n));
  printf("retry_macro %.2f ns\n", median(run_macro, n));
  printf("retry_3fail_zero_delay %.2f ns\n", median(run_3fail, n / 10));
  return 0;
}
