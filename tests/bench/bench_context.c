/* Benchmark of the context hot paths: reading the current budget and
 * charging a budget, against baselines measured in the same run.
 *
 * Prints one `name value unit` line per figure, each the median of RUNS runs:
 *   baseline_call     a call to an exported trivial libwflo function
 *                     (wflo_get_log_level)
 *   tls_read          a thread-local load
 *   atomic_add        a seq_cst atomic fetch-add on one word
 *   budget_read       wflo_get_current_budget() with a context entered
 *   budget_charge_1t  wflo_budget_charge() on one thread
 *   budget_charge_2t  wflo_budget_charge() on two threads sharing one
 *                     context (ns per charge as seen by each thread)
 * Targets (issue 5): budget_read <= baseline_call + 2 ns; budget_charge_1t
 * <= 2 * atomic_add. Build Release to measure. The budget is WFLO_BUDGET_MAX
 * and each charge 1e-9 USD, so no charge is ever refused. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <wflo.h>

#define RUNS 7
#define CHARGE_USD 1e-9

static long iters = 20000000;
static wflo_context_t *ctx;
static volatile double sink_d;
static volatile int sink_i;
static _Thread_local volatile int tl_value = 1;
static atomic_uint_fast64_t counter;
static atomic_int charge_errors;

static double now_ns(void) { return (double)uv_hrtime(); }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v) {
  qsort(v, RUNS, sizeof(*v), cmp_double);
  return v[RUNS / 2];
}

/* Each loop stores every result to a volatile sink: the same cheap store
 * in every loop, and no loop-carried arithmetic (a floating-point sum would
 * add its 4-cycle latency to budget_read alone). */
static double run_baseline_call(void) {
  double t = now_ns();
  long i;
  for (i = 0; i < iters; i++)
    sink_i = (int)wflo_get_log_level();
  return (now_ns() - t) / (double)iters;
}

static double run_tls_read(void) {
  double t = now_ns();
  long i;
  for (i = 0; i < iters; i++)
    sink_i = tl_value;
  return (now_ns() - t) / (double)iters;
}

static double run_atomic_add(void) {
  double t = now_ns();
  long i;
  for (i = 0; i < iters; i++)
    atomic_fetch_add(&counter, 1);
  return (now_ns() - t) / (double)iters;
}

static double run_budget_read(void) {
  double t = now_ns();
  long i;
  for (i = 0; i < iters; i++)
    sink_d = wflo_get_current_budget();
  return (now_ns() - t) / (double)iters;
}

static void charge_loop(void *arg) {
  long i;
  int errors = 0;
  (void)arg;
  for (i = 0; i < iters; i++)
    errors += wflo_budget_charge(ctx, CHARGE_USD) != 0;
  atomic_fetch_add(&charge_errors, errors);
}

static double run_charge_1t(void) {
  double t = now_ns();
  charge_loop(NULL);
  return (now_ns() - t) / (double)iters;
}

static double run_charge_2t(void) {
  uv_thread_t a, b;
  double t = now_ns();
  if (uv_thread_create(&a, charge_loop, NULL) != 0 ||
      uv_thread_create(&b, charge_loop, NULL) != 0) {
    fprintf(stderr, "bench_context: cannot start threads\n");
    exit(1);
  }
  uv_thread_join(&a);
  uv_thread_join(&b);
  return (now_ns() - t) / (double)iters;
}

static void measure(const char *name, double (*run)(void)) {
  double v[RUNS];
  int r;
  for (r = 0; r < RUNS; r++)
    v[r] = run();
  printf("%s %.2f ns\n", name, median(v));
}

int main(int argc, char **argv) {
  if (argc > 1)
    iters = strtol(argv[1], NULL, 10);
  if (iters <= 0)
    iters = 1;
  wflo_set_log_level(WFLO_LOG_OFF);
  if (wflo_context_new("bench", "bench", WFLO_BUDGET_MAX, NULL, &ctx) != 0 ||
      wflo_context_enter(ctx) != 0) {
    fprintf(stderr, "bench_context: cannot create a context\n");
    return 1;
  }
  measure("baseline_call", run_baseline_call);
  measure("tls_read", run_tls_read);
  measure("atomic_add", run_atomic_add);
  measure("budget_read", run_budget_read);
  measure("budget_charge_1t", run_charge_1t);
  measure("budget_charge_2t", run_charge_2t);
  if (atomic_load(&charge_errors) != 0)
    fprintf(stderr, "bench_context: %d charges failed\n",
            atomic_load(&charge_errors));
  wflo_context_exit(ctx);
  wflo_context_put(ctx);
  return atomic_load(&charge_errors) != 0;
}
