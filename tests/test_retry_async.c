/* Tests of the async retry (wflo_retry_start, wflo_call_done(_hint),
 * wflo_retry_cancel) on a real libuv loop with millisecond delays: results,
 * reports from inside start and later, no recursion, hints, the overall
 * timeout (libwflo's clock, virtual here), cancel in every phase, done
 * exactly once, late reports, 10k concurrent retries, context re-entry, the
 * policy copy, events, refusals, and allocation failure in wflo_retry_start.
 * Every test ends with uv_loop_close() == 0, no loop state alive and no
 * libwflo memory outstanding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/context.h"
#include "internal/loop.h"
#include "internal/retry.h"

/* --- a job: one async retry and what it saw ------------------------------ */

enum { REPORT_IN_START, REPORT_LATER, REPORT_NEVER };

typedef struct job {
  uv_timer_t io; /* "I/O" completing an attempt later */
  wflo_retry_t *handle;
  wflo_call_t *call; /* the running attempt's call */
  wflo_call_t *prev_call;
  int mode;
  int nerr; /* attempts that fail */
  int err;
  int ok;
  double hint;      /* < 0: none; reported with every failure */
  uint64_t cost_ns; /* virtual time each attempt takes */
  int starts;
  int dones;
  int done_err;
  int cancel_in_done; /* wflo_retry_cancel's result inside done */
  bool cancel_in_done_try;
  wflo_context_t *want_ctx;
  int bad; /* violations, asserted on the main thread */
  uint64_t done_at;
  bool io_open;
} job_t;

static int g_start_depth;
static int g_in_cancel;
static int g_in_retry_start;

static int attempt_result(job_t *j) {
  return j->starts <= j->nerr ? j->err : j->ok;
}

static void report(job_t *j) {
  wflo_call_t *c = j->call;
  j->prev_call = c;
  if (j->hint >= 0 || isnan(j->hint))
    wflo_call_done_hint(c, attempt_result(j), j->hint);
  else
    wflo_call_done(c, attempt_result(j));
}

static void on_io(uv_timer_t *t) { report(t->data); }

static void job_start(wflo_call_t *call, void *arg) {
  job_t *j = arg;
  if (g_start_depth != 0 || g_in_retry_start || g_in_cancel)
    j->bad++; /* start must come from the loop, never nested */
  if (wflo_context_current() != j->want_ctx)
    j->bad++;
  if (!wflo__in_loop_callback())
    j->bad++;
  g_start_depth++;
  j->starts++;
  j->call = call;
  if (j->cost_ns)
    wflo_test_vclock_advance(j->cost_ns);
  if (j->mode == REPORT_IN_START)
    report(j);
  else if (j->mode == REPORT_LATER)
    uv_timer_start(&j->io, on_io, 1, 0);
  g_start_depth--;
}

static void io_closed(uv_handle_t *h) { ((job_t *)h->data)->io_open = false; }

static void job_done(int err, void *arg) {
  job_t *j = arg;
  if (g_start_depth != 0 || g_in_retry_start || g_in_cancel)
    j->bad++;
  if (wflo_context_current() != j->want_ctx)
    j->bad++;
  j->dones++;
  j->done_err = err;
  j->done_at = uv_hrtime();
  if (j->cancel_in_done_try)
    j->cancel_in_done = wflo_retry_cancel(j->handle);
  if (j->io_open)
    uv_close((uv_handle_t *)&j->io, io_closed);
}

static void job_init(job_t *j, uv_loop_t *loop, int mode, int nerr, int err,
                     int ok) {
  memset(j, 0, sizeof(*j));
  j->mode = mode;
  j->nerr = nerr;
  j->err = err;
  j->ok = ok;
  j->hint = -1;
  j->done_err = 12345;
  uv_timer_init(loop, &j->io);
  j->io.data = j;
  j->io_open = true;
}

static int job_go(uv_loop_t *loop, const wflo_retry_policy_t *p, job_t *j) {
  int rc;
  g_in_retry_start++;
  rc = wflo_retry_start(loop, p, job_start, j, job_done, &j->handle);
  g_in_retry_start--;
  /* nothing runs inside wflo_retry_start */
  if (j->starts != 0 || j->dones != 0)
    j->bad++;
  return rc;
}

/* Closes the job's own handle when the retry never started. */
static void job_drop(job_t *j) {
  if (j->io_open)
    uv_close((uv_handle_t *)&j->io, io_closed);
}

/* Runs the loop dry and closes it; other libwflo objects may stay alive. */
static void run_and_close_keep(uv_loop_t *loop) {
  wflo_test_loop_close(loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static void run_and_close(uv_loop_t *loop) {
  wflo_test_loop_close(loop); /* runs it dry, uv_loop_close() == 0 */
  assert_int_equal(wflo__loop_states_alive(), 0);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void policy_ms(wflo_retry_policy_t *p, double ms) {
  wflo_retry_policy_init(p);
  p->strategy = WFLO_BACKOFF_FIXED;
  p->base_delay = ms / 1e3;
  p->jitter = false;
}

static int setup(void **state) {
  wflo_test_setup(state);
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_OFF);
  return 0;
}

static int teardown(void **state) {
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  return wflo_test_teardown(state);
}

/* --- results ------------------------------------------------------------- */

static void test_basic(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t a, b, c, d;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  job_init(&a, &loop, REPORT_IN_START, 2, UV_ECONNRESET, 201);
  job_init(&b, &loop, REPORT_LATER, 2, UV_ECONNRESET, 0);
  job_init(&c, &loop, REPORT_LATER, 100, -3, 0);              /* exhausted */
  job_init(&d, &loop, REPORT_IN_START, 100, WFLO_E_NOMEM, 0); /* verdict */
  assert_int_equal(job_go(&loop, &p, &a), 0);
  assert_int_equal(job_go(&loop, &p, &b), 0);
  assert_int_equal(job_go(&loop, &p, &c), 0);
  assert_int_equal(job_go(&loop, &p, &d), 0);
  assert_non_null(a.handle);
  assert_int_equal(wflo__loop_states_alive(), 1);
  run_and_close(&loop);
  assert_int_equal(a.dones, 1);
  assert_int_equal(a.done_err, 201);
  assert_int_equal(a.starts, 3);
  assert_int_equal(b.dones, 1);
  assert_int_equal(b.done_err, 0);
  assert_int_equal(b.starts, 3);
  assert_int_equal(c.dones, 1);
  assert_int_equal(c.done_err, -3);
  assert_int_equal(c.starts, 4);
  assert_int_equal(d.dones, 1);
  assert_int_equal(d.done_err, WFLO_E_NOMEM);
  assert_int_equal(d.starts, 1);
  assert_int_equal(a.bad + b.bad + c.bad + d.bad, 0);
}

/* A long zero-delay chain reported from inside start: each attempt starts
 * from its own loop callback (g_start_depth catches recursion), and the
 * stack does not grow. */
static void test_no_recursion(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t j;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 0);
  p.max_retries = 2000;
  job_init(&j, &loop, REPORT_IN_START, 2000, -1, 0);
  assert_int_equal(job_go(&loop, &p, &j), 0);
  run_and_close(&loop);
  assert_int_equal(j.starts, 2001);
  assert_int_equal(j.dones, 1);
  assert_int_equal(j.done_err, 0);
  assert_int_equal(j.bad, 0);
}

typedef struct delays {
  int n;
  int attempt[16];
  double delay[16];
  int bad;
  wflo_context_t *want_ctx;
} delays_t;

static void on_retry_rec(int attempt, int err, double delay, void *ud) {
  delays_t *d = ud;
  (void)err;
  if (wflo_context_current() != d->want_ctx)
    d->bad++;
  if (d->n < 16) {
    d->attempt[d->n] = attempt;
    d->delay[d->n] = delay;
  }
  d->n++;
}

static void test_delays_and_on_retry(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  delays_t d;
  job_t j;
  uint64_t t0;
  (void)state;
  memset(&d, 0, sizeof(d));
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_retry_policy_init(&p); /* exponential 4, 8, 16 ms */
  p.base_delay = 0.004;
  p.jitter = false;
  p.on_retry = on_retry_rec;
  p.user_data = &d;
  job_init(&j, &loop, REPORT_IN_START, 3, -1, 0);
  t0 = uv_hrtime();
  assert_int_equal(job_go(&loop, &p, &j), 0);
  run_and_close(&loop);
  assert_int_equal(j.done_err, 0);
  assert_int_equal(d.n, 3);
  assert_int_equal(d.attempt[0], 1);
  assert_int_equal(d.attempt[2], 3);
  assert_true(d.delay[0] == 0.004);
  assert_true(d.delay[1] == 0.008);
  assert_true(d.delay[2] == 0.016);
  /* the timers really waited: 28 ms in all (loop time is whole ms, so
   * allow the one ms it may lag behind t0) */
  assert_true(j.done_at - t0 >= 27000000ull);
  assert_int_equal(d.bad + j.bad, 0);
}

static void test_hint(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  delays_t d;
  job_t a, b, c;
  (void)state;
  memset(&d, 0, sizeof(d));
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_retry_policy_init(&p); /* jitter on: hints are used as given */
  p.base_delay = 0.001;
  p.max_delay = 0.005;
  p.on_retry = on_retry_rec;
  p.user_data = &d;
  job_init(&a, &loop, REPORT_LATER, 2, UV_EAGAIN, 0);
  a.hint = 0.002;
  assert_int_equal(job_go(&loop, &p, &a), 0);
  run_and_close(&loop);
  assert_int_equal(a.done_err, 0);
  assert_int_equal(d.n, 2);
  assert_true(d.delay[0] == 0.002);
  assert_true(d.delay[1] == 0.002);

  /* above max_delay: ends with the attempt's error after one attempt */
  memset(&d, 0, sizeof(d));
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_test_events_at(WFLO_LOG_DEBUG);
  job_init(&b, &loop, REPORT_IN_START, 5, UV_EAGAIN, 0);
  b.hint = 0.0051;
  assert_int_equal(job_go(&loop, &p, &b), 0);
  run_and_close(&loop);
  assert_int_equal(b.done_err, UV_EAGAIN);
  assert_int_equal(b.starts, 1);
  assert_int_equal(d.n, 0);
  assert_non_null(wflo_test_event_fields("retry_exhausted", 0));
  wflo_test_events_at(WFLO_LOG_OFF);

  /* NaN and negative hints are ignored: computed delays (jittered 1 ms) */
  memset(&d, 0, sizeof(d));
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&c, &loop, REPORT_IN_START, 1, UV_EAGAIN, 0);
  c.hint = NAN;
  assert_int_equal(job_go(&loop, &p, &c), 0);
  run_and_close(&loop);
  assert_int_equal(c.done_err, 0);
  assert_int_equal(d.n, 1);
  assert_true(d.delay[0] >= 0.0009 && d.delay[0] <= 0.0011);
  assert_int_equal(a.bad + b.bad + c.bad + d.bad, 0);
}

/* The overall deadline is measured on libwflo's clock (virtual here) while
 * the waits are real 1 ms timers. Each attempt takes 5 virtual ms. */
static void test_timeout(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t a, b;
  (void)state;
  wflo_test_vclock_install(0);
  policy_ms(&p, 1);
  p.max_retries = 10;
  p.timeout = 0.0105; /* attempt 2 ends at 10 ms; 10 + 1 > 10.5 */
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&a, &loop, REPORT_IN_START, 100, -4, 0);
  a.cost_ns = 5000000;
  assert_int_equal(job_go(&loop, &p, &a), 0);
  run_and_close(&loop);
  assert_int_equal(a.done_err, WFLO_E_TIMEOUT);
  assert_int_equal(a.starts, 2);

  /* a wait ending exactly at the deadline is taken */
  wflo_test_vclock_install(0);
  p.timeout = 0.011;
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&b, &loop, REPORT_LATER, 100, -4, 0);
  b.cost_ns = 5000000;
  assert_int_equal(job_go(&loop, &p, &b), 0);
  run_and_close(&loop);
  assert_int_equal(b.done_err, WFLO_E_TIMEOUT);
  assert_int_equal(b.starts, 3);
  wflo_test_vclock_uninstall();
  assert_int_equal(a.bad + b.bad, 0);
}

/* --- cancel -------------------------------------------------------------- */

static void cancel_cb(uv_timer_t *t) {
  job_t *j = t->data;
  g_in_cancel++;
  if (wflo_retry_cancel(j->handle) != 0)
    j->bad++;
  if (wflo_retry_cancel(j->handle) != 0) /* again: still fine */
    j->bad++;
  g_in_cancel--;
  uv_close((uv_handle_t *)t, NULL);
}

static uv_timer_t g_cancel_timer;

/* Arms the cancel from inside the first attempt (which fails at once), so it
 * lands while the 10 s wait is pending. */
static void delay_start(wflo_call_t *call, void *arg) {
  job_start(call, arg);
  g_cancel_timer.data = arg;
  uv_timer_start(&g_cancel_timer, cancel_cb, 5, 0);
}

static void test_cancel_during_delay(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t j;
  uint64_t t0;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 10000); /* a 10 s wait that must not be waited out */
  job_init(&j, &loop, REPORT_IN_START, 5, -1, 0);
  uv_timer_init(&loop, &g_cancel_timer);
  t0 = uv_hrtime();
  assert_int_equal(
      wflo_retry_start(&loop, &p, delay_start, &j, job_done, &j.handle), 0);
  run_and_close(&loop);
  assert_int_equal(j.dones, 1);
  assert_int_equal(j.done_err, WFLO_E_CANCELED);
  assert_int_equal(j.starts, 1);
  assert_true(j.done_at - t0 < 2000000000ull);
  assert_int_equal(j.bad, 0);
}

static void test_cancel_before_first_attempt(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t j;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  job_init(&j, &loop, REPORT_IN_START, 0, -1, 0);
  assert_int_equal(job_go(&loop, &p, &j), 0);
  g_in_cancel++;
  assert_int_equal(wflo_retry_cancel(j.handle), 0);
  g_in_cancel--;
  assert_int_equal(j.dones, 0); /* never inside cancel */
  run_and_close(&loop);
  assert_int_equal(j.dones, 1);
  assert_int_equal(j.done_err, WFLO_E_CANCELED);
  assert_int_equal(j.starts, 0);
  assert_int_equal(j.bad, 0);
}

/* Cancel while the attempt runs: the retry waits for the report (here a
 * success, which cancel overrides), then completes with WFLO_E_CANCELED.
 * The late wflo_call_done touches only live memory (ASan/valgrind). */
typedef struct late {
  job_t *j;
  uv_timer_t t1, t2;
  int dones_after_cancel;
} late_t;

static void late_report(uv_timer_t *t) {
  late_t *l = t->data;
  l->dones_after_cancel = l->j->dones;
  wflo_call_done(l->j->call, 0);
  wflo_call_done(l->j->call, 0); /* duplicate: ignored */
  uv_close((uv_handle_t *)t, NULL);
}

static void late_cancel(uv_timer_t *t) {
  late_t *l = t->data;
  g_in_cancel++;
  if (wflo_retry_cancel(l->j->handle) != 0)
    l->j->bad++;
  g_in_cancel--;
  uv_close((uv_handle_t *)t, NULL);
  uv_timer_start(&l->t2, late_report, 3, 0);
}

static late_t g_late;

/* The cancel is armed from inside the attempt, so it surely runs while the
 * attempt is outstanding however slow the machine is. */
static void late_start(wflo_call_t *call, void *arg) {
  job_start(call, arg);
  uv_timer_start(&g_late.t1, late_cancel, 2, 0);
}

static void test_cancel_while_running(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  late_t *l = &g_late;
  job_t j;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  job_init(&j, &loop, REPORT_NEVER, 0, -1, 0);
  l->j = &j;
  l->dones_after_cancel = -1;
  uv_timer_init(&loop, &l->t1);
  uv_timer_init(&loop, &l->t2);
  l->t1.data = l->t2.data = l;
  assert_int_equal(
      wflo_retry_start(&loop, &p, late_start, &j, job_done, &j.handle), 0);
  run_and_close(&loop);
  assert_int_equal(l->dones_after_cancel, 0); /* waited for the report */
  assert_int_equal(j.dones, 1);
  assert_int_equal(j.done_err, WFLO_E_CANCELED);
  assert_int_equal(j.starts, 1);
  assert_int_equal(j.bad, 0);
}

/* Cancel from inside on_retry: no wait is armed, done follows at once. */
typedef struct cancel_ud {
  wflo_retry_t **handle;
  int rc;
} cancel_ud_t;

static void cancel_on_retry(int attempt, int err, double delay, void *ud) {
  cancel_ud_t *c = ud;
  (void)attempt;
  (void)err;
  (void)delay;
  c->rc = wflo_retry_cancel(*c->handle);
}

static bool cancel_in_predicate(int err, void *ud) {
  cancel_ud_t *c = ud;
  (void)err;
  c->rc = wflo_retry_cancel(*c->handle);
  return true;
}

static void test_cancel_in_callbacks(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  cancel_ud_t cu;
  job_t a, b;
  uint64_t t0;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 10000);
  cu.handle = &a.handle;
  cu.rc = 1;
  p.on_retry = cancel_on_retry;
  p.user_data = &cu;
  job_init(&a, &loop, REPORT_IN_START, 5, -1, 0);
  t0 = uv_hrtime();
  assert_int_equal(job_go(&loop, &p, &a), 0);
  run_and_close(&loop);
  assert_int_equal(cu.rc, 0);
  assert_int_equal(a.done_err, WFLO_E_CANCELED);
  assert_true(uv_hrtime() - t0 < 2000000000ull);

  /* from the predicate (no on_retry): no 10 s wait either */
  assert_int_equal(uv_loop_init(&loop), 0);
  p.on_retry = NULL;
  p.is_retryable = cancel_in_predicate;
  cu.rc = 1;
  job_init(&a, &loop, REPORT_LATER, 5, -1, 0);
  t0 = uv_hrtime();
  assert_int_equal(job_go(&loop, &p, &a), 0);
  run_and_close(&loop);
  assert_int_equal(cu.rc, 0);
  assert_int_equal(a.dones, 1);
  assert_int_equal(a.done_err, WFLO_E_CANCELED);
  assert_int_equal(a.starts, 1);
  assert_true(uv_hrtime() - t0 < 2000000000ull);
  p.is_retryable = NULL;

  /* inside done: WFLO_E_STATE, safely */
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  job_init(&b, &loop, REPORT_LATER, 1, -1, 0);
  b.cancel_in_done_try = true;
  assert_int_equal(job_go(&loop, &p, &b), 0);
  run_and_close(&loop);
  assert_int_equal(b.done_err, 0);
  assert_int_equal(b.cancel_in_done, WFLO_E_STATE);
  assert_int_equal(wflo_retry_cancel(NULL), WFLO_E_INVAL);
  assert_int_equal(a.bad + b.bad, 0);
}

/* A report for the previous attempt arriving while the next runs is not
 * taken as the new attempt's result. */
static void stale_report(uv_timer_t *t) {
  job_t *j = t->data;
  if (j->starts == 2) {
    wflo_call_done(j->prev_call, 0); /* stale: attempt 1 already reported */
    uv_timer_start(&j->io, stale_report, 2, 0);
    j->starts = 102; /* marker: stale report sent */
    return;
  }
  j->prev_call = j->call;
  wflo_call_done(j->call, -1);
}

static void stale_start(wflo_call_t *call, void *arg) {
  job_t *j = arg;
  j->starts++;
  j->call = call;
  if (j->starts == 1) {
    j->prev_call = call;
    wflo_call_done(call, -1);
  } else {
    uv_timer_start(&j->io, stale_report, 1, 0);
  }
}

static void test_duplicate_reports_ignored(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t j;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  p.max_retries = 1;
  job_init(&j, &loop, REPORT_NEVER, 0, -1, 0);
  assert_int_equal(
      wflo_retry_start(&loop, &p, stale_start, &j, job_done, &j.handle), 0);
  run_and_close(&loop);
  assert_int_equal(j.starts, 102);
  assert_int_equal(j.dones, 1);
  assert_int_equal(j.done_err, -1); /* the stale success was ignored */
  wflo_call_done(NULL, 0);          /* harmless */
  wflo_call_done_hint(NULL, 0, 1);
}

/* --- scale --------------------------------------------------------------- */

static void test_many_concurrent(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  job_t *jobs;
  int i, n = wflo_test_scale(10000), bad = 0;
  (void)state;
  if (n < 100)
    n = 100;
  jobs = calloc((size_t)n, sizeof(*jobs));
  assert_non_null(jobs);
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_retry_policy_init(&p); /* 1 ms, jitter on */
  p.base_delay = 0.001;
  p.name = "many";
  for (i = 0; i < n; i++) {
    job_init(&jobs[i], &loop, i % 2 ? REPORT_LATER : REPORT_IN_START,
             1 + i % 3, UV_ETIMEDOUT, i);
    if (job_go(&loop, &p, &jobs[i]) != 0)
      bad++;
  }
  assert_int_equal(bad, 0);
  assert_int_equal(wflo__loop_states_alive(), 1);
  run_and_close(&loop);
  for (i = 0; i < n; i++) {
    if (jobs[i].dones != 1 || jobs[i].done_err != i ||
        jobs[i].starts != 2 + i % 3 || jobs[i].bad != 0)
      bad++;
  }
  assert_int_equal(bad, 0);
  free(jobs);
}

/* --- context, copy, events ----------------------------------------------- */

static void test_context_reentered(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  wflo_context_t *ctx;
  delays_t d;
  job_t j;
  (void)state;
  memset(&d, 0, sizeof(d));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(
      wflo_context_new("exec-r", "wf", WFLO_BUDGET_UNLIMITED, NULL, &ctx), 0);
  policy_ms(&p, 1);
  p.on_retry = on_retry_rec;
  p.user_data = &d;
  job_init(&j, &loop, REPORT_LATER, 2, -1, 0);
  j.want_ctx = ctx;
  d.want_ctx = ctx;
  assert_int_equal(wflo_context_enter(ctx), 0);
  assert_int_equal(job_go(&loop, &p, &j), 0);
  assert_int_equal(wflo_context_exit(ctx), 0);
  wflo_context_put(ctx); /* the retry holds its own reference */
  assert_null(wflo_context_current());
  run_and_close(&loop); /* also proves the retry dropped its reference */
  assert_null(wflo_context_current());
  assert_int_equal(j.done_err, 0);
  assert_int_equal(d.n, 2);
  assert_int_equal(j.bad + d.bad, 0);
}

/* A policy's breaker guards each async attempt: a refusal ends the retry
 * without calling start, and the retry keeps its own reference on the
 * breaker (the caller drops its own right after starting). */
static void test_breaker_guards_async(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  wflo_breaker_config_t bc;
  wflo_breaker_t *b;
  job_t j;
  (void)state;
  wflo_breaker_config_init(&bc);
  bc.failure_threshold = 2;
  assert_int_equal(wflo_breaker_new("async-guard", &bc, &b), 0);
  policy_ms(&p, 1);
  p.max_retries = 5;
  p.breaker = b;
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&j, &loop, REPORT_LATER, 100, UV_EIO, 0);
  assert_int_equal(job_go(&loop, &p, &j), 0);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
  run_and_close_keep(&loop);
  assert_int_equal(j.dones, 1);
  assert_int_equal(j.done_err, WFLO_E_BREAKER_OPEN);
  assert_int_equal(j.starts, 2); /* the third attempt was refused */
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_OPEN);
  assert_int_equal(j.bad, 0);
  wflo_breaker_put(b);
  assert_int_equal(wflo_test_alloc_live(), 0);

  /* The retry holds the breaker: dropping the caller's reference at once
   * is fine (ASan would see a use after free otherwise). */
  assert_int_equal(wflo_breaker_new("async-guard", &bc, &b), 0);
  p.breaker = b;
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&j, &loop, REPORT_LATER, 1, UV_EIO, 0);
  assert_int_equal(job_go(&loop, &p, &j), 0);
  wflo_breaker_put(b);
  run_and_close(&loop);
  assert_int_equal(j.done_err, 0);
  assert_int_equal(j.starts, 2);
  assert_int_equal(j.bad, 0);
}

static void test_policy_copied(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t *p = malloc(sizeof(*p));
  char *name = malloc(16);
  int *list = malloc(2 * sizeof(int));
  const json_t *ev;
  job_t j;
  (void)state;
  assert_non_null(p);
  assert_non_null(name);
  assert_non_null(list);
  memcpy(name, "copied", 7);
  list[0] = UV_EPIPE;
  list[1] = -99;
  policy_ms(p, 1);
  p->name = name;
  p->retryable_errors = list;
  p->retryable_errors_count = 2;
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_test_events_at(WFLO_LOG_DEBUG);
  job_init(&j, &loop, REPORT_LATER, 2, -99, 0);
  assert_int_equal(job_go(&loop, p, &j), 0);
  /* the caller's policy dies right away */
  memset(name, 'x', 15);
  name[15] = '\0';
  list[1] = -1;
  memset(p, 0xff, sizeof(*p));
  free(name);
  free(list);
  free(p);
  run_and_close(&loop);
  assert_int_equal(j.done_err, 0);
  assert_int_equal(j.starts, 3);
  ev = wflo_test_event_fields("retry_scheduled", 1);
  assert_non_null(ev);
  assert_string_equal(json_string_value(json_object_get(ev, "policy")),
                      "copied");
  ev = wflo_test_event_fields("retry_succeeded", 0);
  assert_non_null(ev);
  assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 3);
  assert_int_equal(j.bad, 0);
}

static void test_events(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  const json_t *ev;
  job_t a, b, c;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  p.name = "async";
  p.max_retries = 1;
  wflo_test_events_at(WFLO_LOG_DEBUG);
  job_init(&a, &loop, REPORT_IN_START, 0, -1, 0); /* first try: none */
  assert_int_equal(job_go(&loop, &p, &a), 0);
  run_and_close(&loop);
  assert_int_equal(wflo_test_events_count(NULL), 0);

  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&b, &loop, REPORT_LATER, 5, UV_EPIPE, 0); /* exhausted */
  assert_int_equal(job_go(&loop, &p, &b), 0);
  run_and_close(&loop);
  assert_int_equal(wflo_test_events_count(NULL), 2);
  ev = wflo_test_event_fields("retry_scheduled", 0);
  assert_non_null(ev);
  assert_int_equal(wflo_test_event_level("retry_scheduled", 0), WFLO_LOG_WARN);
  assert_string_equal(json_string_value(json_object_get(ev, "policy")),
                      "async");
  assert_int_equal(json_integer_value(json_object_get(ev, "attempt")), 1);
  assert_string_equal(json_string_value(json_object_get(ev, "error")),
                      "EPIPE");
  assert_true(json_real_value(json_object_get(ev, "delay_seconds")) == 0.001);
  ev = wflo_test_event_fields("retry_exhausted", 0);
  assert_non_null(ev);
  assert_int_equal(wflo_test_event_level("retry_exhausted", 0),
                   WFLO_LOG_ERROR);
  assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 2);
  assert_string_equal(json_string_value(json_object_get(ev, "error")),
                      "EPIPE");

  wflo_test_events_clear();
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&c, &loop, REPORT_IN_START, 1, UV_EPIPE, 0); /* succeeded */
  assert_int_equal(job_go(&loop, &p, &c), 0);
  run_and_close(&loop);
  ev = wflo_test_event_fields("retry_succeeded", 0);
  assert_non_null(ev);
  assert_int_equal(wflo_test_event_level("retry_succeeded", 0), WFLO_LOG_INFO);
  assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 2);
  assert_int_equal(a.bad + b.bad + c.bad, 0);
}

/* --- refusals ------------------------------------------------------------ */

static void test_start_refused(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  wflo_retry_t *h = (wflo_retry_t *)(uintptr_t)1;
  job_t j;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  job_init(&j, &loop, REPORT_IN_START, 0, -1, 0);
  policy_ms(&p, 1);
  assert_int_equal(wflo_retry_start(NULL, &p, job_start, &j, job_done, &h),
                   WFLO_E_INVAL);
  assert_null(h);
  assert_int_equal(wflo_retry_start(&loop, NULL, job_start, &j, job_done, &h),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_retry_start(&loop, &p, NULL, &j, job_done, &h),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_retry_start(&loop, &p, job_start, &j, NULL, &h),
                   WFLO_E_INVAL);
  p.jitter_factor = 2;
  assert_int_equal(wflo_retry_start(&loop, &p, job_start, &j, job_done, &h),
                   WFLO_E_INVAL);
  p.jitter_factor = 0;
  p.max_delay = -1;
  assert_int_equal(wflo_retry_start(&loop, &p, job_start, &j, job_done, NULL),
                   WFLO_E_INVAL);
  assert_int_equal(wflo__loop_states_alive(), 0);
  job_drop(&j);
  run_and_close(&loop);
  assert_int_equal(j.dones, 0);
  assert_int_equal(j.starts, 0);
}

/* A sync retry inside a loop callback: zero waits are fine, a real wait is
 * refused with WFLO_E_STATE (the loop must not block). */
typedef struct inner {
  int calls;
  int rc_zero, rc_wait, rc_once;
  wflo_retry_report_t rep;
} inner_t;

static int inner_op(void *arg) {
  inner_t *in = arg;
  return ++in->calls % 3 ? -1 : 0;
}

static void sync_in_loop(wflo_call_t *call, void *arg) {
  inner_t *in = arg;
  wflo_retry_policy_t p;
  wflo_retry_policy_init(&p);
  p.base_delay = 0;
  in->rc_zero = wflo_retry_execute(&p, inner_op, in); /* 3 calls */
  p.base_delay = 0.001;
  in->rc_wait = wflo_retry_execute_ex(&p, inner_op, in, &in->rep);
  p.max_retries = 0;
  in->calls = 2;
  in->rc_once = wflo_retry_execute(&p, inner_op, in); /* succeeds */
  wflo_call_done(call, 0);
}

static void inner_done(int err, void *arg) {
  (void)err;
  (void)arg;
}

static void test_sync_inside_loop(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  inner_t in;
  (void)state;
  memset(&in, 0, sizeof(in));
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  assert_int_equal(
      wflo_retry_start(&loop, &p, sync_in_loop, &in, inner_done, NULL), 0);
  run_and_close(&loop);
  assert_int_equal(in.rc_zero, 0);
  assert_int_equal(in.rc_wait, WFLO_E_STATE);
  assert_int_equal(in.rep.attempts, 1);
  assert_int_equal(in.rep.last_error, -1);
  assert_int_equal(in.rc_once, 0);
}

/* --- allocation failure -------------------------------------------------- */

static int g_oom_runs;

static int oom_start(void *ud) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  const int list[] = {UV_ETIMEDOUT, -1};
  job_t j;
  int rc;
  (void)ud;
  g_oom_runs++;
  assert_int_equal(uv_loop_init(&loop), 0);
  policy_ms(&p, 1);
  p.name = "oom";
  p.retryable_errors = list;
  p.retryable_errors_count = 2;
  job_init(&j, &loop, REPORT_IN_START, 1, -1, 0);
  rc = job_go(&loop, &p, &j);
  if (rc != 0) {
    assert_null(j.handle);
    job_drop(&j);
  }
  run_and_close(&loop); /* on failure: nothing ran, nothing left */
  assert_int_equal(j.dones, rc == 0 ? 1 : 0);
  assert_int_equal(j.starts, rc == 0 ? 2 : 0);
  assert_int_equal(j.bad, 0);
  return rc;
}

static void test_start_oom(void **state) {
  (void)state;
  /* retry object, name, list, loop state: 4 allocations, plus the metric
   * series the run counts into, made on first use (the harness frees them
   * after every run): the attempts family's table and its "retry" and
   * "success" series, the delay histogram's table and series. 9
   * allocations, 10 runs (a fresh loop each time, so the loop state is
   * allocated every run). */
  g_oom_runs = 0;
  wflo_test_oom_loop(oom_start, NULL, 0);
  assert_int_equal(g_oom_runs, 10);
  g_oom_runs = 0;
  wflo_test_oom_loop_ex(oom_start, NULL, 0, WFLO_TEST_FAIL_AFTER);
  assert_int_equal(g_oom_runs, 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_recursion, setup, teardown),
      cmocka_unit_test_setup_teardown(test_delays_and_on_retry, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_hint, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_during_delay, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cancel_before_first_attempt, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cancel_while_running, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cancel_in_callbacks, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_duplicate_reports_ignored, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_context_reentered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_breaker_guards_async, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_policy_copied, setup, teardown),
      cmocka_unit_test_setup_teardown(test_events, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_inside_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_oom, setup, teardown),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
