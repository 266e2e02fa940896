/* Tests of the retry module's sync side: defaults, backoff (exact sequences,
 * caps, jitter, decorrelated, overflow), wflo_retry_execute on a virtual
 * clock (call counts, retry decision, on_retry, exhaustion, timeout, hints),
 * WFLO_RETRY (normal end and early exits), validation of every field, JSON
 * loading, events, and allocation failure in wflo_retry_policy_from_json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/retry.h"

/* --- helpers ------------------------------------------------------------- */

#define NS 1000000000ull

/* A flaky operation: fails with errs[i] on call i while i < nerr, then
 * returns ok. Optionally advances the virtual clock by `cost_ns` per call
 * and sets a hint on chosen calls. */
typedef struct op {
  int calls;
  int nerr;
  int errs[64];
  int ok;
  uint64_t cost_ns;
  double hints[64]; /* < -1.5: none; else passed to wflo_retry_hint */
} op_t;

static void op_init(op_t *o, int nerr, int err, int ok) {
  int i;
  memset(o, 0, sizeof(*o));
  o->nerr = nerr;
  o->ok = ok;
  for (i = 0; i < 64; i++) {
    o->errs[i] = err;
    o->hints[i] = -2.0;
  }
}

static int op_run(void *arg) {
  op_t *o = arg;
  int i = o->calls++;
  if (o->cost_ns)
    wflo_test_vclock_advance(o->cost_ns);
  if (i < 64 && o->hints[i] > -1.5)
    wflo_retry_hint(o->hints[i]);
  return i < o->nerr ? o->errs[i < 64 ? i : 63] : o->ok;
}

/* on_retry recorder. */
typedef struct retries {
  int n;
  int attempt[64];
  int err[64];
  double delay[64];
  uint64_t at_ns[64]; /* virtual time when on_retry ran */
} retries_t;

static void record_retry(int attempt, int err, double delay, void *ud) {
  retries_t *r = ud;
  if (r->n < 64) {
    r->attempt[r->n] = attempt;
    r->err[r->n] = err;
    r->delay[r->n] = delay;
    r->at_ns[r->n] = wflo_now_ns();
  }
  r->n++;
}

static void policy_nojitter(wflo_retry_policy_t *p) {
  wflo_retry_policy_init(p);
  p->jitter = false;
}

/* Harness glue: the counting allocator is installed for the whole group;
 * each test gets a fresh virtual clock at 0 and an event recorder with
 * events off until the test raises the level. */
static void vclock_reset(uint64_t t) { wflo_test_vclock_install(t); }

static int setup(void **state) {
  wflo_test_setup(state);
  wflo_test_vclock_install(0);
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_OFF);
  return 0;
}

static int teardown(void **state) {
  wflo_test_vclock_uninstall();
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  return wflo_test_teardown(state); /* no live allocation */
}

/* --- defaults ------------------------------------------------------------ */

static void test_defaults(void **state) {
  wflo_retry_policy_t p;
  size_t i;
  (void)state;
  memset(&p, 0xa5, sizeof(p));
  wflo_retry_policy_init(&p);
  assert_null(p.name);
  assert_int_equal(p.max_retries, WFLO_RETRY_DEFAULT_MAX_RETRIES);
  assert_int_equal(p.max_retries, 3);
  assert_true(p.base_delay == WFLO_RETRY_DEFAULT_BASE_DELAY);
  assert_true(p.base_delay == 1.0);
  assert_true(p.max_delay == WFLO_RETRY_DEFAULT_MAX_DELAY);
  assert_true(p.max_delay == 60.0);
  assert_true(p.multiplier == WFLO_RETRY_DEFAULT_MULTIPLIER);
  assert_true(p.multiplier == 2.0);
  assert_int_equal(p.strategy, WFLO_RETRY_DEFAULT_STRATEGY);
  assert_int_equal(p.strategy, WFLO_BACKOFF_EXPONENTIAL);
  assert_true(p.jitter == WFLO_RETRY_DEFAULT_JITTER);
  assert_true(p.jitter);
  assert_true(p.jitter_factor == WFLO_RETRY_DEFAULT_JITTER_FACTOR);
  assert_true(p.jitter_factor == 0.1);
  assert_true(p.timeout == WFLO_RETRY_DEFAULT_TIMEOUT);
  assert_true(p.timeout == 0.0);
  assert_null(p.retryable_errors);
  assert_int_equal(p.retryable_errors_count, 0);
  assert_null(p.is_retryable);
  assert_null(p.on_retry);
  assert_null(p.breaker);
  assert_null(p.user_data);
  for (i = 0; i < 8; i++)
    assert_null(p.reserved[i]);
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
  wflo_retry_policy_init(NULL); /* no-op */
  wflo_retry_policy_clear(NULL);
}

/* --- backoff ------------------------------------------------------------- */

static void test_exponential_sequence(void **state) {
  wflo_retry_policy_t p;
  const double want[5] = {1, 2, 4, 8, 16};
  int n;
  (void)state;
  policy_nojitter(&p);
  for (n = 0; n < 5; n++)
    assert_true(wflo_backoff_delay(&p, n, 0) == want[n]);
  /* Non-power-of-two multiplier: base * m^n within rounding. */
  p.base_delay = 0.5;
  p.multiplier = 1.5;
  for (n = 0; n < 8; n++)
    assert_float_equal(wflo_backoff_delay(&p, n, 0), 0.5 * pow(1.5, n), 1e-12);
  p.multiplier = 1.0;
  assert_true(wflo_backoff_delay(&p, 30, 0) == 0.5);
}

static void test_linear_sequence(void **state) {
  wflo_retry_policy_t p;
  const double want[4] = {2, 4, 6, 8};
  int n;
  (void)state;
  policy_nojitter(&p);
  p.strategy = WFLO_BACKOFF_LINEAR;
  for (n = 0; n < 4; n++)
    assert_true(wflo_backoff_delay(&p, n, 0) == want[n]);
  p.multiplier = 0.5; /* > 0 is valid for linear */
  assert_true(wflo_backoff_delay(&p, 3, 0) == 2.0);
}

static void test_fixed(void **state) {
  wflo_retry_policy_t p;
  int n;
  (void)state;
  policy_nojitter(&p);
  p.strategy = WFLO_BACKOFF_FIXED;
  p.base_delay = 3;
  p.multiplier = NAN; /* ignored by fixed */
  for (n = 0; n < 10; n++)
    assert_true(wflo_backoff_delay(&p, n, 0) == 3.0);
  assert_true(wflo_backoff_delay(&p, INT_MAX, 0) == 3.0);
}

static void test_max_delay_caps(void **state) {
  wflo_retry_policy_t p;
  const double exp_want[7] = {1, 2, 4, 8, 10, 10, 10};
  int n;
  (void)state;
  policy_nojitter(&p);
  p.max_delay = 10;
  for (n = 0; n < 7; n++)
    assert_true(wflo_backoff_delay(&p, n, 0) == exp_want[n]);
  p.strategy = WFLO_BACKOFF_LINEAR; /* 2, 4, 6, 8, 10, 10 */
  assert_true(wflo_backoff_delay(&p, 3, 0) == 8.0);
  assert_true(wflo_backoff_delay(&p, 4, 0) == 10.0);
  assert_true(wflo_backoff_delay(&p, 5, 0) == 10.0);
  /* base == max: always max */
  p.strategy = WFLO_BACKOFF_EXPONENTIAL;
  p.base_delay = 10;
  assert_true(wflo_backoff_delay(&p, 0, 0) == 10.0);
  assert_true(wflo_backoff_delay(&p, 7, 0) == 10.0);
  /* zero delays */
  p.base_delay = 0;
  p.max_delay = 0;
  assert_true(wflo_backoff_delay(&p, 7, 0) == 0.0);
}

static void test_jitter_bounds(void **state) {
  wflo_retry_policy_t p;
  long i, n = wflo_test_scale(200000);
  double sum = 0, lo = 1e9, hi = -1, d;
  (void)state;
  wflo_rng_seed(1234);
  wflo_retry_policy_init(&p); /* jitter on, factor 0.1 */
  p.strategy = WFLO_BACKOFF_FIXED;
  p.base_delay = 10;
  for (i = 0; i < n; i++) {
    d = wflo_backoff_delay(&p, (int)(i % 5), 0);
    assert_true(d >= 9.0 && d <= 11.0);
    sum += d;
    if (d < lo)
      lo = d;
    if (d > hi)
      hi = d;
  }
  assert_float_equal(sum / (double)n, 10.0, 0.02);
  /* The whole band is used, not a sliver of it. */
  assert_true(lo < 9.05);
  assert_true(hi > 10.95);

  /* At the cap: spread over [max * (1 - f), max], never above max. */
  p.strategy = WFLO_BACKOFF_EXPONENTIAL;
  p.base_delay = 1;
  p.max_delay = 10;
  lo = 1e9;
  hi = -1;
  for (i = 0; i < n / 4; i++) {
    d = wflo_backoff_delay(&p, 20, 0);
    assert_true(d >= 9.0 && d <= 10.0);
    if (d < lo)
      lo = d;
    if (d > hi)
      hi = d;
  }
  assert_true(lo < 9.05);
  assert_true(hi > 9.95);

  /* jitter_factor 0 and jitter off: exact. */
  p.jitter_factor = 0;
  assert_true(wflo_backoff_delay(&p, 2, 0) == 4.0);
  p.jitter_factor = 1.0;
  p.jitter = false;
  assert_true(wflo_backoff_delay(&p, 2, 0) == 4.0);
  /* factor 1: [0, min(2d, max)] */
  p.jitter = true;
  for (i = 0; i < 1000; i++) {
    d = wflo_backoff_delay(&p, 2, 0);
    assert_true(d >= 0.0 && d <= 8.0);
  }
}

static void test_decorrelated(void **state) {
  wflo_retry_policy_t p;
  double prev, d, maxseen = 0;
  int i, n;
  (void)state;
  wflo_rng_seed(99);
  policy_nojitter(&p);
  p.strategy = WFLO_BACKOFF_DECORRELATED;
  p.base_delay = 1;
  p.max_delay = 20;
  p.multiplier = -5; /* ignored by decorrelated */
  for (i = 0; i < 2000; i++) {
    /* first retry: U(base, 3 * base) whatever prev says */
    d = wflo_backoff_delay(&p, 0, 1000);
    assert_true(d >= 1.0 && d <= 3.0);
    /* a chain: each in [base, min(3 * prev, max)] */
    prev = p.base_delay;
    for (n = 0; n < 12; n++) {
      d = wflo_backoff_delay(&p, n, prev);
      assert_true(d >= 1.0);
      assert_true(d <= 3.0 * prev + 1e-12);
      assert_true(d <= 20.0);
      if (d > maxseen)
        maxseen = d;
      prev = d;
    }
  }
  assert_true(maxseen > 15.0); /* the cap is reached */
  /* bad prev: NaN or below base counts as base, above max as max */
  for (i = 0; i < 500; i++) {
    d = wflo_backoff_delay(&p, 3, NAN);
    assert_true(d >= 1.0 && d <= 3.0);
    d = wflo_backoff_delay(&p, 3, -7);
    assert_true(d >= 1.0 && d <= 3.0);
    d = wflo_backoff_delay(&p, 3, INFINITY);
    assert_true(d >= 1.0 && d <= 20.0);
  }
  /* with jitter: still within [base * (1 - f), max] */
  p.jitter = true;
  for (i = 0; i < 2000; i++) {
    d = wflo_backoff_delay(&p, 5, 19);
    assert_true(d >= 0.9 && d <= 20.0);
  }
}

static void test_int_max_finite(void **state) {
  wflo_retry_policy_t p;
  const wflo_backoff_t strategies[4] = {
      WFLO_BACKOFF_EXPONENTIAL, WFLO_BACKOFF_LINEAR, WFLO_BACKOFF_FIXED,
      WFLO_BACKOFF_DECORRELATED};
  const double mults[4] = {1.0000001, 2.0, 1e10, DBL_MAX};
  const double bases[3] = {1e-300, 1.0, 1e9};
  int s, m, b, j;
  double d;
  (void)state;
  for (s = 0; s < 4; s++)
    for (m = 0; m < 4; m++)
      for (b = 0; b < 3; b++)
        for (j = 0; j < 2; j++) {
          wflo_retry_policy_init(&p);
          p.strategy = strategies[s];
          p.multiplier = mults[m];
          p.base_delay = bases[b];
          p.max_delay = 1e9;
          p.jitter = j;
          p.max_retries = INT_MAX;
          assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
          d = wflo_backoff_delay(&p, INT_MAX, 1e9);
          assert_true(isfinite(d));
          assert_true(d >= 0.0 && d <= 1e9);
          d = wflo_backoff_delay(&p, INT_MAX - 1, INFINITY);
          assert_true(isfinite(d) && d <= 1e9);
          /* negative n counts as 0 */
          if (!j && s != WFLO_BACKOFF_DECORRELATED)
            assert_true(wflo_backoff_delay(&p, -5, 0) ==
                        wflo_backoff_delay(&p, 0, 0));
        }
  /* exponential saturates at max */
  policy_nojitter(&p);
  p.max_delay = 60;
  assert_true(wflo_backoff_delay(&p, INT_MAX, 0) == 60.0);
  assert_true(wflo_backoff_delay(&p, 1024, 0) == 60.0);
  assert_true(wflo_backoff_delay(&p, 64, 0) == 60.0);
  p.base_delay = 0;
  assert_true(wflo_backoff_delay(&p, INT_MAX, 0) == 0.0);
  assert_true(isnan(wflo_backoff_delay(NULL, 0, 0)));
}

/* --- execute ------------------------------------------------------------- */

static void test_max_retries_calls(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  op_t o;
  int n;
  (void)state;
  policy_nojitter(&p);
  for (n = 0; n <= 5; n++) {
    p.max_retries = n;
    op_init(&o, 1000, -1, 0);
    assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), -1);
    assert_int_equal(o.calls, n + 1);
    assert_int_equal(rep.attempts, n + 1);
    assert_int_equal(rep.last_error, -1);
  }
  /* success on the last allowed call */
  vclock_reset(0);
  p.max_retries = 3;
  op_init(&o, 3, -1, 7);
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), 7);
  assert_int_equal(o.calls, 4);
  assert_int_equal(rep.attempts, 4);
  assert_int_equal(rep.last_error, 0);
  assert_true(rep.total_delay == 1 + 2 + 4);
  assert_int_equal(wflo_now_ns(), 7 * NS); /* slept on the virtual clock */
  /* first-try success, positive result passed through */
  op_init(&o, 0, -1, 42);
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), 42);
  assert_int_equal(rep.attempts, 1);
  assert_true(rep.total_delay == 0.0);
  assert_int_equal(rep.last_error, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 42);
}

static void test_zero_delay_skips_sleep(void **state) {
  wflo_retry_policy_t p;
  op_t o;
  (void)state;
  wflo_retry_policy_init(&p);
  p.base_delay = 0;
  p.max_retries = 5;
  op_init(&o, 5, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(o.calls, 6);
  assert_int_equal((int)wflo_test_vclock_sleeps(), 0);
  /* and with a non-zero delay, one sleep per retry */
  p.base_delay = 0.001;
  op_init(&o, 2, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal((int)wflo_test_vclock_sleeps(), 2);
}

static void test_non_retryable(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  const int verdicts[] = {WFLO_E_BREAKER_OPEN, WFLO_E_BUDGET_EXCEEDED,
                          WFLO_E_CANCELED,     WFLO_E_INVAL,
                          WFLO_E_NOMEM,        WFLO_E_STATE,
                          WFLO_E_QUEUE_FULL};
  const int retried[] = {WFLO_E_TIMEOUT,
                         WFLO_E_RATE_LIMITED,
                         WFLO_E_LOCK_TIMEOUT,
                         WFLO_E_NOT_FOUND,
                         WFLO_E_PARSE,
                         UV_ECONNRESET,
                         UV_ETIMEDOUT,
                         -1,
                         INT_MIN};
  const int list[] = {UV_ETIMEDOUT, WFLO_E_CANCELED};
  op_t o;
  size_t i;
  (void)state;
  policy_nojitter(&p);
  p.base_delay = 0;
  for (i = 0; i < WFLO_ARRAY_SIZE(verdicts); i++) {
    op_init(&o, 10, verdicts[i], 0);
    assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), verdicts[i]);
    assert_int_equal(o.calls, 1);
    assert_int_equal(rep.attempts, 1);
    assert_int_equal(rep.last_error, verdicts[i]);
  }
  for (i = 0; i < WFLO_ARRAY_SIZE(retried); i++) {
    op_init(&o, 2, retried[i], 0);
    assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
    assert_int_equal(o.calls, 3);
  }
  /* An error list retries exactly the listed codes, library ones too. */
  p.retryable_errors = list;
  p.retryable_errors_count = 2;
  op_init(&o, 2, UV_ECONNRESET, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), UV_ECONNRESET);
  assert_int_equal(o.calls, 1);
  op_init(&o, 2, UV_ETIMEDOUT, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(o.calls, 3);
  op_init(&o, 2, WFLO_E_CANCELED, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(o.calls, 3);
  /* mixed: a retryable error then a non-retryable one stops there */
  op_init(&o, 5, UV_ETIMEDOUT, 0);
  o.errs[1] = -1;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), -1);
  assert_int_equal(o.calls, 2);
}

typedef struct pred {
  int calls;
  int seen[16];
  void *ud;
} pred_t;

static bool only_even(int err, void *ud) {
  pred_t *pr = ud;
  if (pr->calls < 16)
    pr->seen[pr->calls] = err;
  pr->calls++;
  return err % 2 == 0;
}

static void test_predicate(void **state) {
  wflo_retry_policy_t p;
  const int list[] = {-3};
  pred_t pr;
  op_t o;
  (void)state;
  memset(&pr, 0, sizeof(pr));
  policy_nojitter(&p);
  p.base_delay = 0;
  p.is_retryable = only_even;
  p.user_data = &pr;
  /* The predicate wins over the list and over the verdict rule. */
  p.retryable_errors = list;
  p.retryable_errors_count = 1;
  op_init(&o, 2, WFLO_E_INVAL - (WFLO_E_INVAL % 2 != 0), 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(o.calls, 3);
  assert_int_equal(pr.calls, 2);
  op_init(&o, 2, -3, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), -3);
  assert_int_equal(o.calls, 1);
  assert_int_equal(pr.seen[2], -3);
  /* exhausted with a retryable error: max_retries + 1 predicate calls? No:
   * the last failure is checked too, then the count stops it. */
  pr.calls = 0;
  p.max_retries = 2;
  op_init(&o, 10, -4, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), -4);
  assert_int_equal(o.calls, 3);
  assert_int_equal(pr.calls, 3);
}

static void test_on_retry(void **state) {
  wflo_retry_policy_t p;
  retries_t r;
  op_t o;
  int i;
  (void)state;
  memset(&r, 0, sizeof(r));
  policy_nojitter(&p);
  p.max_retries = 5;
  p.on_retry = record_retry;
  p.user_data = &r;
  op_init(&o, 5, -1, 0);
  o.errs[2] = -2;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(r.n, 5);
  {
    const double want[5] = {1, 2, 4, 8, 16};
    uint64_t t = 0;
    for (i = 0; i < 5; i++) {
      assert_int_equal(r.attempt[i], i + 1);
      assert_int_equal(r.err[i], i == 2 ? -2 : -1);
      assert_true(r.delay[i] == want[i]);
      /* before the sleep: the clock has not moved past earlier sleeps */
      assert_int_equal(r.at_ns[i], t);
      t += (uint64_t)want[i] * NS;
    }
  }
  /* not called for a non-retryable error or on exhaustion */
  memset(&r, 0, sizeof(r));
  p.max_retries = 1;
  op_init(&o, 10, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), -1);
  assert_int_equal(r.n, 1);
  op_init(&o, 10, WFLO_E_INVAL, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), WFLO_E_INVAL);
  assert_int_equal(r.n, 1);
}

static void test_exhaustion_last_error(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  op_t o;
  (void)state;
  policy_nojitter(&p);
  op_init(&o, 10, -1, 0);
  o.errs[0] = -11;
  o.errs[1] = -12;
  o.errs[2] = -13;
  o.errs[3] = -14;
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), -14);
  assert_int_equal(o.calls, 4);
  assert_int_equal(rep.attempts, 4);
  assert_int_equal(rep.last_error, -14);
  assert_true(rep.total_delay == 7.0);
  assert_int_equal((int)wflo_test_vclock_sleeps(), 3);
}

static void test_timeout(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  op_t o;
  (void)state;
  policy_nojitter(&p); /* delays 1, 2, 4, 8 */
  p.max_retries = 10;
  p.timeout = 6;
  /* t=0 fail, sleep 1; t=1 fail, sleep 2; t=3 fail; 3 + 4 > 6: stop. */
  op_init(&o, 100, -5, 0);
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep),
                   WFLO_E_TIMEOUT);
  assert_int_equal(o.calls, 3);
  assert_int_equal(rep.attempts, 3);
  assert_int_equal(rep.last_error, -5); /* the operation's error stays */
  assert_true(rep.total_delay == 3.0);
  assert_int_equal(wflo_now_ns(), 3 * NS); /* never slept past 6 */

  /* A sleep ending exactly at the deadline is taken. */
  vclock_reset(0);
  p.timeout = 7;
  op_init(&o, 100, -5, 0);
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep),
                   WFLO_E_TIMEOUT);
  assert_int_equal(o.calls, 4);
  assert_int_equal(wflo_now_ns(), 7 * NS);

  /* Attempts that take time count: 2 s per call, zero delays. */
  vclock_reset(100 * NS);
  p.base_delay = 0;
  p.max_delay = 0;
  p.timeout = 5;
  op_init(&o, 100, -5, 0);
  o.cost_ns = 2 * NS;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), WFLO_E_TIMEOUT);
  assert_int_equal(o.calls, 3); /* ends at 102, 104, 106 > 105 */

  /* A success inside the deadline is a success. */
  vclock_reset(0);
  op_init(&o, 1, -5, 9);
  o.cost_ns = 2 * NS;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 9);

  /* No retries: the timeout never applies. */
  p.max_retries = 0;
  op_init(&o, 1, -5, 9);
  o.cost_ns = 100 * NS;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), -5);
}

/* An operation that runs a nested retry whose only attempt sets a hint and
 * succeeds, then fails itself: the inner hint must not reach the outer
 * retry. */
static int hint_then_ok(void *arg) {
  (void)arg;
  wflo_retry_hint(7);
  return 0;
}

static int nested_then_fail(void *arg) {
  wflo_retry_policy_t inner;
  wflo_retry_policy_init(&inner);
  (*(int *)arg)++;
  return wflo_retry_execute(&inner, hint_then_ok, NULL) == 0 ? -1 : -2;
}

static void test_hint(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  retries_t r;
  op_t o;
  int i;
  (void)state;
  memset(&r, 0, sizeof(r));
  wflo_retry_policy_init(&p); /* jitter on: a hint is used as is */
  p.max_delay = 30;
  p.on_retry = record_retry;
  p.user_data = &r;
  op_init(&o, 3, UV_EAGAIN, 0);
  o.hints[0] = 2.5;
  o.hints[1] = 30; /* == max_delay: honoured */
  o.hints[2] = 0;  /* zero: no sleep */
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), 0);
  assert_int_equal(r.n, 3);
  assert_true(r.delay[0] == 2.5);
  assert_true(r.delay[1] == 30.0);
  assert_true(r.delay[2] == 0.0);
  assert_true(rep.total_delay == 32.5);
  assert_int_equal((int)wflo_test_vclock_sleeps(), 2);

  /* A hint is forgotten at the next attempt: attempt 2 computes its own. */
  memset(&r, 0, sizeof(r));
  p.jitter = false;
  op_init(&o, 2, UV_EAGAIN, 0);
  o.hints[0] = 5;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_true(r.delay[0] == 5.0);
  assert_true(r.delay[1] == 2.0);

  /* Too large: ends at once with the operation's error, no sleep. */
  memset(&r, 0, sizeof(r));
  vclock_reset(0);
  op_init(&o, 5, UV_EAGAIN, 0);
  o.hints[0] = 30.5;
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep), UV_EAGAIN);
  assert_int_equal(o.calls, 1);
  assert_int_equal(r.n, 0);
  assert_int_equal(wflo_now_ns(), 0);
  assert_int_equal(rep.last_error, UV_EAGAIN);
  op_init(&o, 5, UV_EAGAIN, 0);
  o.hints[0] = INFINITY;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), UV_EAGAIN);
  assert_int_equal(o.calls, 1);

  /* Invalid hints are ignored; the last valid one of an attempt wins. */
  memset(&r, 0, sizeof(r));
  op_init(&o, 2, UV_EAGAIN, 0);
  o.hints[0] = NAN;
  o.hints[1] = -1;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_true(r.delay[0] == 1.0);
  assert_true(r.delay[1] == 2.0);

  /* A hint left behind outside any retry is not used by the next one. */
  memset(&r, 0, sizeof(r));
  wflo_retry_hint(9);
  op_init(&o, 1, UV_EAGAIN, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_true(r.delay[0] == 1.0);
  for (i = 0; i < 3; i++)
    wflo_retry_hint(-1); /* harmless */

  /* A nested retry's successful attempt does not leak its hint outward. */
  memset(&r, 0, sizeof(r));
  i = 0;
  p.max_retries = 1;
  assert_int_equal(wflo_retry_execute(&p, nested_then_fail, &i), -1);
  assert_int_equal(i, 2);
  assert_int_equal(r.n, 1);
  assert_true(r.delay[0] == 1.0);
}

static void test_positive_and_edge_args(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  op_t o;
  (void)state;
  wflo_retry_policy_init(&p);
  op_init(&o, 0, -1, 0);
  memset(&rep, 0x5a, sizeof(rep));
  assert_int_equal(wflo_retry_execute_ex(&p, NULL, &o, &rep), WFLO_E_INVAL);
  assert_int_equal(rep.attempts, 0);
  assert_int_equal(rep.last_error, 0);
  assert_true(rep.total_delay == 0.0);
  assert_int_equal(wflo_retry_execute_ex(NULL, op_run, &o, &rep),
                   WFLO_E_INVAL);
  assert_int_equal(o.calls, 0);
  assert_int_equal(wflo_retry_policy_validate(NULL, NULL, 0), WFLO_E_INVAL);
}

/* --- WFLO_RETRY ---------------------------------------------------------- */

static int macro_return_inside(const wflo_retry_policy_t *p, op_t *o) {
  int rc;
  WFLO_RETRY(p, rc) {
    rc = op_run(o);
    if (o->calls == 2)
      return 100 + rc; /* leaves the function from inside the block */
  }
  return rc;
}

static void test_macro(void **state) {
  wflo_retry_policy_t p;
  retries_t r;
  op_t o;
  int rc, blocks;
  (void)state;
  memset(&r, 0, sizeof(r));
  policy_nojitter(&p);
  p.on_retry = record_retry;
  p.user_data = &r;

  /* success after failures, on the virtual clock */
  op_init(&o, 2, -1, 5);
  WFLO_RETRY(&p, rc) { rc = op_run(&o); }
  assert_int_equal(rc, 5);
  assert_int_equal(o.calls, 3);
  assert_int_equal(r.n, 2);
  assert_int_equal(wflo_now_ns(), 3 * NS);

  /* exhaustion keeps the last error */
  op_init(&o, 10, -1, 0);
  o.errs[3] = -9;
  WFLO_RETRY(&p, rc) { rc = op_run(&o); }
  assert_int_equal(rc, -9);
  assert_int_equal(o.calls, 4);

  /* break stops retrying and keeps rc */
  op_init(&o, 10, -1, 0);
  blocks = 0;
  WFLO_RETRY(&p, rc) {
    rc = op_run(&o);
    if (++blocks == 2) {
      rc = -77;
      break;
    }
  }
  assert_int_equal(rc, -77);
  assert_int_equal(o.calls, 2);

  /* return from inside the block */
  op_init(&o, 10, -3, 0);
  assert_int_equal(macro_return_inside(&p, &o), 97);
  assert_int_equal(o.calls, 2);

  /* goto out of the block */
  op_init(&o, 10, -1, 0);
  WFLO_RETRY(&p, rc) {
    rc = op_run(&o);
    goto out;
  }
out:
  assert_int_equal(o.calls, 1);
  assert_int_equal(rc, -1);

  /* continue ends the attempt with rc as its result */
  op_init(&o, 10, -1, 0);
  blocks = 0;
  WFLO_RETRY(&p, rc) {
    rc = ++blocks < 3 ? -1 : 8;
    continue;
  }
  assert_int_equal(rc, 8);
  assert_int_equal(blocks, 3);

  /* non-retryable: once */
  blocks = 0;
  WFLO_RETRY(&p, rc) {
    blocks++;
    rc = WFLO_E_NOMEM;
  }
  assert_int_equal(rc, WFLO_E_NOMEM);
  assert_int_equal(blocks, 1);

  /* invalid policy: the block never runs, rc = WFLO_E_INVAL */
  p.max_retries = -1;
  blocks = 0;
  rc = 1;
  WFLO_RETRY(&p, rc) {
    blocks++;
    rc = 0;
  }
  assert_int_equal(rc, WFLO_E_INVAL);
  assert_int_equal(blocks, 0);
  blocks = 0;
  WFLO_RETRY((const wflo_retry_policy_t *)NULL, rc) { blocks++; }
  assert_int_equal(rc, WFLO_E_INVAL);
  assert_int_equal(blocks, 0);

  /* timeout and the hint work in the block too */
  policy_nojitter(&p);
  p.timeout = 2.5;
  vclock_reset(0);
  blocks = 0;
  WFLO_RETRY(&p, rc) {
    blocks++;
    rc = -1;
  }
  assert_int_equal(rc, WFLO_E_TIMEOUT);
  assert_int_equal(blocks, 2); /* 0 + 1 = 1, 1 + 2 = 3 > 2.5 */
  p.timeout = 0;
  p.max_delay = 10;
  blocks = 0;
  WFLO_RETRY(&p, rc) {
    if (blocks++ == 0)
      wflo_retry_hint(11);
    rc = -6;
  }
  assert_int_equal(rc, -6);
  assert_int_equal(blocks, 1);

  /* nested: an inner retry inside an outer attempt */
  policy_nojitter(&p);
  p.base_delay = 0;
  blocks = 0;
  WFLO_RETRY(&p, rc) {
    int inner;
    WFLO_RETRY(&p, inner) { inner = ++blocks % 2 ? -1 : 0; }
    rc = blocks < 4 ? -2 : inner;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(blocks, 4);
}

/* --- validation ---------------------------------------------------------- */

typedef struct bad {
  const char *field;
  void (*mutate)(wflo_retry_policy_t *p);
} bad_t;

#define BAD(name, field, stmt)                                                \
  static void name(wflo_retry_policy_t *p) { stmt; }
BAD(b_retries, "max_retries", p->max_retries = -1)
BAD(b_retries_min, "max_retries", p->max_retries = INT_MIN)
BAD(b_base_nan, "base_delay", p->base_delay = NAN)
BAD(b_base_inf, "base_delay", p->base_delay = INFINITY)
BAD(b_base_neg, "base_delay", p->base_delay = -1)
BAD(b_base_tiny_neg, "base_delay", p->base_delay = -1e-300)
BAD(b_base_big, "base_delay", (p->base_delay = 2e9, p->max_delay = 2e9))
BAD(b_max_nan, "max_delay", p->max_delay = NAN)
BAD(b_max_inf, "max_delay", p->max_delay = INFINITY)
BAD(b_max_neg, "max_delay", (p->base_delay = 0, p->max_delay = -1))
BAD(b_max_big, "max_delay", p->max_delay = WFLO_DURATION_MAX * 1.5)
BAD(b_max_below, "max_delay", p->max_delay = 0.5)
BAD(b_mult_low, "multiplier", p->multiplier = 0.999)
BAD(b_mult_zero, "multiplier", p->multiplier = 0)
BAD(b_mult_nan, "multiplier", p->multiplier = NAN)
BAD(b_mult_inf, "multiplier", p->multiplier = INFINITY)
BAD(b_lin_zero, "multiplier",
    (p->strategy = WFLO_BACKOFF_LINEAR, p->multiplier = 0))
BAD(b_lin_neg, "multiplier",
    (p->strategy = WFLO_BACKOFF_LINEAR, p->multiplier = -2))
BAD(b_lin_nan, "multiplier",
    (p->strategy = WFLO_BACKOFF_LINEAR, p->multiplier = NAN))
BAD(b_lin_inf, "multiplier",
    (p->strategy = WFLO_BACKOFF_LINEAR, p->multiplier = INFINITY))
BAD(b_strat_hi, "strategy", p->strategy = (wflo_backoff_t)4)
BAD(b_strat_neg, "strategy", p->strategy = (wflo_backoff_t)-1)
BAD(b_jf_neg, "jitter_factor", p->jitter_factor = -0.01)
BAD(b_jf_big, "jitter_factor", p->jitter_factor = 1.01)
BAD(b_jf_nan, "jitter_factor", p->jitter_factor = NAN)
BAD(b_jf_off, "jitter_factor", (p->jitter = false, p->jitter_factor = 2))
BAD(b_to_nan, "timeout", p->timeout = NAN)
BAD(b_to_inf, "timeout", p->timeout = INFINITY)
BAD(b_to_neg, "timeout", p->timeout = -1)
BAD(b_to_big, "timeout", p->timeout = 1e10)

static const int zero_list[] = {UV_EAGAIN, 0};
static const int pos_list[] = {5};
BAD(b_list_zero, "retryable_errors",
    (p->retryable_errors = zero_list, p->retryable_errors_count = 2))
BAD(b_list_pos, "retryable_errors",
    (p->retryable_errors = pos_list, p->retryable_errors_count = 1))
BAD(b_list_null, "retryable_errors",
    (p->retryable_errors = NULL, p->retryable_errors_count = 3))

static const bad_t bads[] = {
    {"max_retries", b_retries},
    {"max_retries", b_retries_min},
    {"base_delay", b_base_nan},
    {"base_delay", b_base_inf},
    {"base_delay", b_base_neg},
    {"base_delay", b_base_tiny_neg},
    {"base_delay", b_base_big},
    {"max_delay", b_max_nan},
    {"max_delay", b_max_inf},
    {"max_delay", b_max_neg},
    {"max_delay", b_max_big},
    {"max_delay", b_max_below},
    {"multiplier", b_mult_low},
    {"multiplier", b_mult_zero},
    {"multiplier", b_mult_nan},
    {"multiplier", b_mult_inf},
    {"multiplier", b_lin_zero},
    {"multiplier", b_lin_neg},
    {"multiplier", b_lin_nan},
    {"multiplier", b_lin_inf},
    {"strategy", b_strat_hi},
    {"strategy", b_strat_neg},
    {"jitter_factor", b_jf_neg},
    {"jitter_factor", b_jf_big},
    {"jitter_factor", b_jf_nan},
    {"jitter_factor", b_jf_off},
    {"timeout", b_to_nan},
    {"timeout", b_to_inf},
    {"timeout", b_to_neg},
    {"timeout", b_to_big},
    {"retryable_errors", b_list_zero},
    {"retryable_errors", b_list_pos},
    {"retryable_errors", b_list_null},
};

/* --- a policy's breaker guards each attempt ------------------------------ */

static wflo_breaker_t *new_breaker(int threshold, double recovery) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  wflo_breaker_config_init(&c);
  c.failure_threshold = threshold;
  c.recovery_timeout = recovery;
  c.success_threshold = 1;
  assert_int_equal(wflo_breaker_new("retry-guard", &c, &b), 0);
  return b;
}

static bool retry_everything(int err, void *ud) {
  (void)ud;
  return err < 0;
}

static void test_breaker_guards_attempts(void **state) {
  wflo_retry_policy_t p;
  wflo_retry_report_t rep;
  wflo_breaker_t *b = new_breaker(2, 60.0);
  op_t o;
  int rc;
  (void)state;
  policy_nojitter(&p);
  p.base_delay = 0;
  p.max_retries = 5;
  p.breaker = b;
  /* The second failure opens the circuit; the third attempt is refused
   * without a call, and a refusal is not retried by default. */
  op_init(&o, 100, UV_EIO, 0);
  assert_int_equal(wflo_retry_execute_ex(&p, op_run, &o, &rep),
                   WFLO_E_BREAKER_OPEN);
  assert_int_equal(o.calls, 2);
  assert_int_equal(rep.attempts, 3);
  assert_int_equal(rep.last_error, WFLO_E_BREAKER_OPEN);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_OPEN);
  /* The statement form: the same, and the block never runs when refused. */
  wflo_breaker_reset(b);
  op_init(&o, 100, UV_EIO, 0);
  WFLO_RETRY(&p, rc) { rc = op_run(&o); }
  assert_int_equal(rc, WFLO_E_BREAKER_OPEN);
  assert_int_equal(o.calls, 2);
  WFLO_RETRY(&p, rc) { rc = op_run(&o); }
  assert_int_equal(rc, WFLO_E_BREAKER_OPEN);
  assert_int_equal(o.calls, 2);
  wflo_breaker_put(b);
}

/* With a policy that retries the refusal and waits longer than the
 * recovery timeout (virtual time), the next attempt is the half-open trial:
 * it succeeds and closes the circuit. */
static void test_breaker_recovers_within_retry(void **state) {
  wflo_retry_policy_t p;
  wflo_breaker_t *b = new_breaker(1, 1.0);
  op_t o;
  int rc;
  (void)state;
  policy_nojitter(&p);
  p.strategy = WFLO_BACKOFF_FIXED;
  p.base_delay = 0.6;
  p.max_retries = 5;
  p.is_retryable = retry_everything;
  p.breaker = b;
  op_init(&o, 1, UV_EIO, 7);
  /* fail (opens), refused at 0.6 s, trial admitted at 1.2 s: success */
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 7);
  assert_int_equal(o.calls, 2);
  assert_int_equal(wflo_test_vclock_sleeps(), 2);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
  /* Same with the statement form. */
  op_init(&o, 1, UV_EIO, 7);
  WFLO_RETRY(&p, rc) { rc = op_run(&o); }
  assert_int_equal(rc, 7);
  assert_int_equal(o.calls, 2);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
  wflo_breaker_put(b);
}

/* Leaving WFLO_RETRY's block early gives a half-open trial slot back. */
static void test_breaker_early_exit_frees_trial(void **state) {
  wflo_retry_policy_t p;
  wflo_breaker_permit_t permit;
  wflo_breaker_t *b = new_breaker(1, 1.0);
  int rc, runs = 0;
  (void)state;
  policy_nojitter(&p);
  p.breaker = b;
  assert_int_equal(wflo_breaker_acquire(b, &permit), 0);
  assert_int_equal(wflo_breaker_record(b, &permit, UV_EIO, -1), 0);
  wflo_test_vclock_advance(2 * NS);
  WFLO_RETRY(&p, rc) {
    runs++;
    assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_HALF_OPEN);
    break; /* the trial's slot must not stay taken */
  }
  assert_int_equal(runs, 1);
  assert_int_equal(wflo_breaker_acquire(b, &permit), 0);
  assert_int_equal(wflo_breaker_record(b, &permit, 0, -1), 0);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
  wflo_breaker_put(b);
}

static void test_bad_configs(void **state) {
  wflo_retry_policy_t p;
  char buf[128], want[64];
  op_t o;
  size_t i;
  int rc;
  (void)state;
  wflo_test_events_at(WFLO_LOG_DEBUG);
  for (i = 0; i < WFLO_ARRAY_SIZE(bads); i++) {
    wflo_retry_policy_init(&p);
    bads[i].mutate(&p);
    snprintf(want, sizeof(want), "retry_policy.%s: ", bads[i].field);
    buf[0] = '\0';
    wflo_test_events_clear();
    assert_int_equal(wflo_retry_policy_validate(&p, buf, sizeof(buf)),
                     WFLO_E_INVAL);
    if (strncmp(buf, want, strlen(want)) != 0)
      fail_msg("case %zu: errbuf '%s', want prefix '%s'", i, buf, want);
    {
      const json_t *ev = wflo_test_event_fields("config_invalid", 0);
      assert_non_null(ev);
      assert_string_equal(json_string_value(json_object_get(ev, "what")),
                          "retry_policy");
      assert_string_equal(json_string_value(json_object_get(ev, "field")),
                          bads[i].field);
      assert_non_null(json_object_get(ev, "reason"));
    }
    /* every entry point refuses before any call */
    op_init(&o, 0, -1, 0);
    assert_int_equal(wflo_retry_execute(&p, op_run, &o), WFLO_E_INVAL);
    assert_int_equal(o.calls, 0);
    assert_true(isnan(wflo_backoff_delay(&p, 0, 0)));
    rc = 0;
    WFLO_RETRY(&p, rc) { rc = op_run(&o); }
    assert_int_equal(rc, WFLO_E_INVAL);
    assert_int_equal(o.calls, 0);
    /* the fast check agrees with validation */
    assert_false(wflo__retry_policy_ok(&p));
  }
  /* Values at the edges are valid. */
  wflo_retry_policy_init(&p);
  p.max_retries = 0;
  p.base_delay = 0;
  p.max_delay = WFLO_DURATION_MAX;
  p.multiplier = 1;
  p.jitter_factor = 1;
  p.timeout = WFLO_DURATION_MAX;
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
  assert_true(wflo__retry_policy_ok(&p));
  p.strategy = WFLO_BACKOFF_FIXED;
  p.multiplier = -INFINITY;
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
  p.strategy = WFLO_BACKOFF_DECORRELATED;
  p.multiplier = NAN;
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
  p.strategy = WFLO_BACKOFF_LINEAR;
  p.multiplier = 1e-300;
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
  p.breaker = (wflo_breaker_t *)(uintptr_t)0x1; /* any pointer */
  p.retryable_errors = pos_list;
  p.retryable_errors_count = 0; /* count 0: no list */
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), 0);
  assert_true(wflo__retry_policy_ok(&p));
  /* errbuf may be NULL or tiny */
  p.max_retries = -1;
  assert_int_equal(wflo_retry_policy_validate(&p, NULL, 0), WFLO_E_INVAL);
  assert_int_equal(wflo_retry_policy_validate(&p, buf, 4), WFLO_E_INVAL);
  assert_int_equal(strlen(buf), 3);
}

/* --- JSON ---------------------------------------------------------------- */

static json_t *parse(const char *s) {
  json_error_t e;
  json_t *j = json_loads(s, 0, &e);
  if (j == NULL)
    fail_msg("bad test JSON: %s", e.text);
  return j;
}

static int load(const char *s, wflo_retry_policy_t *p, char *buf, size_t len) {
  json_t *j = parse(s);
  int rc = wflo_retry_policy_from_json(j, p, buf, len);
  json_decref(j);
  return rc;
}

static void assert_defaults(const wflo_retry_policy_t *p) {
  wflo_retry_policy_t d;
  wflo_retry_policy_init(&d);
  assert_memory_equal(p, &d, sizeof(d));
}

static void test_json(void **state) {
  wflo_retry_policy_t p;
  char buf[160];
  const char *names[4] = {"exponential", "linear", "fixed", "decorrelated"};
  int i;
  (void)state;
  assert_int_equal(
      load("{\"name\": \"llm\", \"max_retries\": 5, \"base_delay\": 0.5,"
           " \"max_delay\": 30, \"multiplier\": 3, \"strategy\": \"linear\","
           " \"jitter\": false, \"jitter_factor\": 0.25, \"timeout\": 120,"
           " \"retryable_errors\": [\"WFLO_E_TIMEOUT\", \"ETIMEDOUT\","
           " \"UV_ECONNRESET\", -7, \"WFLO_E_RATE_LIMITED\"]}",
           &p, buf, sizeof(buf)),
      0);
  assert_string_equal(p.name, "llm");
  assert_int_equal(p.max_retries, 5);
  assert_true(p.base_delay == 0.5);
  assert_true(p.max_delay == 30.0); /* integer accepted for a double */
  assert_true(p.multiplier == 3.0);
  assert_int_equal(p.strategy, WFLO_BACKOFF_LINEAR);
  assert_false(p.jitter);
  assert_true(p.jitter_factor == 0.25);
  assert_true(p.timeout == 120.0);
  assert_int_equal(p.retryable_errors_count, 5);
  assert_int_equal(p.retryable_errors[0], WFLO_E_TIMEOUT);
  assert_int_equal(p.retryable_errors[1], UV_ETIMEDOUT);
  assert_int_equal(p.retryable_errors[2], UV_ECONNRESET);
  assert_int_equal(p.retryable_errors[3], -7);
  assert_int_equal(p.retryable_errors[4], WFLO_E_RATE_LIMITED);
  assert_true(wflo_test_alloc_live() > 0);
  /* a loaded policy works */
  {
    op_t o;
    op_init(&o, 2, UV_ETIMEDOUT, 0);
    p.base_delay = 0;
    assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
    assert_int_equal(o.calls, 3);
  }
  wflo_retry_policy_clear(&p);
  assert_null(p.name);
  assert_null(p.retryable_errors);
  assert_int_equal(p.retryable_errors_count, 0);
  assert_int_equal(wflo_test_alloc_live(), 0);
  wflo_retry_policy_clear(&p); /* twice: harmless */

  for (i = 0; i < 4; i++) {
    char js[64];
    snprintf(js, sizeof(js), "{\"strategy\": \"%s\"}", names[i]);
    assert_int_equal(load(js, &p, NULL, 0), 0);
    assert_int_equal(p.strategy, i);
  }
  /* empty object: the defaults */
  assert_int_equal(load("{}", &p, NULL, 0), 0);
  assert_defaults(&p);
  assert_int_equal(load("{\"retryable_errors\": []}", &p, NULL, 0), 0);
  assert_int_equal(p.retryable_errors_count, 0);
  wflo_retry_policy_clear(&p);

  /* malformed: WFLO_E_PARSE; defaults left, nothing allocated */
  {
    const char *parse_err[] = {
        "{\"retries\": 3}",
        "{\"retryable_errors_count\": 1}",
        "{\"breaker\": null}",
        "{\"on_retry\": null}",
        "{\"user_data\": 1}",
        "{\"name\": \"x\", \"max_retries\": \"3\"}",
        "{\"max_retries\": 2.5}",
        "{\"base_delay\": \"1\"}",
        "{\"timeout\": null}",
        "{\"jitter\": 1}",
        "{\"strategy\": 2}",
        "{\"name\": 5}",
        "{\"retryable_errors\": \"ETIMEDOUT\"}",
        "{\"retryable_errors\": [\"ETIMEDOUT\", true]}",
        "[1, 2]",
    };
    for (i = 0; i < (int)WFLO_ARRAY_SIZE(parse_err); i++) {
      buf[0] = '\0';
      if (load(parse_err[i], &p, buf, sizeof(buf)) != WFLO_E_PARSE)
        fail_msg("%s: not WFLO_E_PARSE", parse_err[i]);
      assert_true(buf[0] != '\0');
      assert_defaults(&p);
      assert_int_equal(wflo_test_alloc_live(), 0);
    }
  }
  assert_int_equal(load("{\"retries\": 3}", &p, buf, sizeof(buf)),
                   WFLO_E_PARSE);
  assert_non_null(strstr(buf, "retries"));

  /* well-formed but invalid: WFLO_E_INVAL naming the field */
  {
    const char *inval[][2] = {
        {"{\"strategy\": \"cubic\"}", "strategy"},
        {"{\"strategy\": \"Exponential\"}", "strategy"},
        {"{\"name\": \"x\", \"max_retries\": -1}", "max_retries"},
        {"{\"max_retries\": 9999999999}", "max_retries"},
        {"{\"base_delay\": -1}", "base_delay"},
        {"{\"max_delay\": 1e12}", "max_delay"},
        {"{\"base_delay\": 5, \"max_delay\": 4}", "max_delay"},
        {"{\"multiplier\": 0.5}", "multiplier"},
        {"{\"jitter_factor\": 2}", "jitter_factor"},
        {"{\"timeout\": -3}", "timeout"},
        {"{\"name\": \"n\", \"retryable_errors\": [\"ENOPE\"]}",
         "retryable_errors"},
        {"{\"retryable_errors\": [0]}", "retryable_errors"},
        {"{\"retryable_errors\": [-1, 3]}", "retryable_errors"},
    };
    for (i = 0; i < (int)WFLO_ARRAY_SIZE(inval); i++) {
      char want[64];
      buf[0] = '\0';
      if (load(inval[i][0], &p, buf, sizeof(buf)) != WFLO_E_INVAL)
        fail_msg("%s: not WFLO_E_INVAL", inval[i][0]);
      snprintf(want, sizeof(want), "retry_policy.%s", inval[i][1]);
      if (strstr(buf, want) == NULL)
        fail_msg("%s: errbuf '%s' lacks '%s'", inval[i][0], buf, want);
      assert_defaults(&p);
      assert_int_equal(wflo_test_alloc_live(), 0);
    }
  }
  assert_int_equal(wflo_retry_policy_from_json(NULL, &p, NULL, 0),
                   WFLO_E_INVAL);
  {
    json_t *j = parse("{}");
    assert_int_equal(wflo_retry_policy_from_json(j, NULL, NULL, 0),
                     WFLO_E_INVAL);
    json_decref(j);
  }
  /* clear leaves fields the caller replaced alone */
  assert_int_equal(load("{\"name\": \"a\"}", &p, NULL, 0), 0);
  p.name = "mine";
  wflo_retry_policy_clear(&p);
  assert_string_equal(p.name, "mine");
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static int g_oom_runs;

static int oom_from_json(void *ud) {
  wflo_retry_policy_t p;
  int rc = wflo_retry_policy_from_json(ud, &p, NULL, 0);
  g_oom_runs++;
  if (rc == 0) {
    assert_string_equal(p.name, "oom");
    assert_int_equal(p.retryable_errors_count, 2);
    wflo_retry_policy_clear(&p);
  } else {
    assert_defaults(&p);
  }
  return rc;
}

static void test_json_oom(void **state) {
  json_t *j = parse("{\"name\": \"oom\", \"retryable_errors\": "
                    "[\"ETIMEDOUT\", -3], \"max_retries\": 2}");
  (void)state;
  /* Fails allocation 1, 2, ... until the call succeeds: every failure must
   * return WFLO_E_NOMEM and leave nothing allocated. Two allocations (name,
   * list), so three runs. */
  g_oom_runs = 0;
  wflo_test_oom_loop(oom_from_json, j, 0);
  assert_int_equal(g_oom_runs, 3);
  g_oom_runs = 0;
  wflo_test_oom_loop_ex(oom_from_json, j, 0, WFLO_TEST_FAIL_AFTER);
  assert_int_equal(g_oom_runs, 3);
  json_decref(j);
}

/* --- events -------------------------------------------------------------- */

static void test_events(void **state) {
  wflo_retry_policy_t p;
  const json_t *ev;
  op_t o;
  (void)state;
  policy_nojitter(&p);
  p.name = "ev";
  wflo_test_events_at(WFLO_LOG_DEBUG);

  /* first-try success: nothing */
  op_init(&o, 0, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(wflo_test_events_count(NULL), 0);

  /* two retries, then success */
  op_init(&o, 2, UV_ECONNRESET, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(wflo_test_events_count(NULL), 3);
  ev = wflo_test_event_fields("retry_scheduled", 0);
  assert_non_null(ev);
  assert_int_equal(wflo_test_event_level("retry_scheduled", 0), WFLO_LOG_WARN);
  assert_string_equal(json_string_value(json_object_get(ev, "policy")), "ev");
  assert_int_equal(json_integer_value(json_object_get(ev, "attempt")), 1);
  assert_string_equal(json_string_value(json_object_get(ev, "error")),
                      "ECONNRESET");
  assert_true(json_is_real(json_object_get(ev, "delay_seconds")));
  assert_true(json_real_value(json_object_get(ev, "delay_seconds")) == 1.0);
  assert_int_equal(json_object_size(ev), 4);
  ev = wflo_test_event_fields("retry_scheduled", 1);
  assert_int_equal(json_integer_value(json_object_get(ev, "attempt")), 2);
  assert_true(json_real_value(json_object_get(ev, "delay_seconds")) == 2.0);
  ev = wflo_test_event_fields("retry_succeeded", 0);
  assert_non_null(ev);
  assert_int_equal(wflo_test_event_level("retry_succeeded", 0), WFLO_LOG_INFO);
  assert_string_equal(json_string_value(json_object_get(ev, "policy")), "ev");
  assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 3);
  assert_int_equal(json_object_size(ev), 2);
  assert_null(wflo_test_event_fields("retry_exhausted", 0));

  /* exhausted; unnamed policy gives policy: null */
  wflo_test_events_clear();
  p.name = NULL;
  p.max_retries = 1;
  op_init(&o, 5, WFLO_E_TIMEOUT, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), WFLO_E_TIMEOUT);
  ev = wflo_test_event_fields("retry_exhausted", 0);
  assert_non_null(ev);
  assert_int_equal(wflo_test_event_level("retry_exhausted", 0),
                   WFLO_LOG_ERROR);
  assert_true(json_is_null(json_object_get(ev, "policy")));
  assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 2);
  assert_string_equal(json_string_value(json_object_get(ev, "error")),
                      "WFLO_E_TIMEOUT");
  assert_int_equal(json_object_size(ev), 3);
  assert_null(wflo_test_event_fields("retry_succeeded", 0));

  /* non-retryable: no event at all */
  wflo_test_events_clear();
  op_init(&o, 5, WFLO_E_BUDGET_EXCEEDED, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_test_events_count(NULL), 0);

  /* the overall timeout: retry_exhausted with WFLO_E_TIMEOUT */
  wflo_test_events_clear();
  p.max_retries = 5;
  p.timeout = 0.5;
  op_init(&o, 5, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), WFLO_E_TIMEOUT);
  ev = wflo_test_event_fields("retry_exhausted", 0);
  assert_non_null(ev);
  assert_string_equal(json_string_value(json_object_get(ev, "error")),
                      "WFLO_E_TIMEOUT");
  assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 1);

  /* a refused hint: retry_exhausted with the operation's error */
  wflo_test_events_clear();
  p.timeout = 0;
  op_init(&o, 5, -1, 0);
  o.hints[0] = 1000;
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), -1);
  ev = wflo_test_event_fields("retry_exhausted", 0);
  assert_non_null(ev);
  assert_string_equal(json_string_value(json_object_get(ev, "error")),
                      wflo_err_name(-1));

  /* below the level nothing reaches the handler */
  wflo_test_events_at(WFLO_LOG_OFF);
  op_init(&o, 2, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(wflo_test_events_count(NULL), 0);
  wflo_test_events_at(WFLO_LOG_ERROR);
  op_init(&o, 2, -1, 0);
  assert_int_equal(wflo_retry_execute(&p, op_run, &o), 0);
  assert_int_equal(wflo_test_events_count(NULL), 0); /* warn + info dropped */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exponential_sequence, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_linear_sequence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fixed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_delay_caps, setup, teardown),
      cmocka_unit_test_setup_teardown(test_jitter_bounds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_decorrelated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_int_max_finite, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_retries_calls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zero_delay_skips_sleep, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_non_retryable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_predicate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_on_retry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exhaustion_last_error, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hint, setup, teardown),
      cmocka_unit_test_setup_teardown(test_positive_and_edge_args, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_macro, setup, teardown),
      cmocka_unit_test_setup_teardown(test_breaker_guards_attempts, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_breaker_recovers_within_retry,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_breaker_early_exit_frees_trial,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_configs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json_oom, setup, teardown),
      cmocka_unit_test_setup_teardown(test_events, setup, teardown),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
