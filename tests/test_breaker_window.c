/* Tests of the breaker's COUNT and TIME windows (Resilience4j semantics):
 * rates at and around the thresholds, minimum_calls, eviction, slow calls,
 * clearing on state changes, and a model check against a reference window.
 * All on the virtual clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/breaker.h"

#define S (1000000000ull)
#define T0 (1000 * S) /* a whole second: TIME buckets align to seconds */
#define FAIL UV_ECONNRESET

static int setup(void **state) {
  wflo_test_setup(state);
  wflo_test_vclock_install(T0);
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_DEBUG);
  return 0;
}

static int teardown(void **state) {
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_test_events_uninstall();
  wflo_test_vclock_uninstall();
  return wflo_test_teardown(state);
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

static wflo_breaker_t *make_window(wflo_window_t mode, int size, int min,
                                   double rate) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  wflo_breaker_config_init(&c);
  c.window = mode;
  c.window_size = size;
  c.minimum_calls = min;
  c.failure_rate_threshold = rate;
  c.recovery_timeout = 1.0;
  c.success_threshold = 1;
  assert_int_equal(wflo_breaker_new("win", &c, &b), 0);
  return b;
}

/* One admitted call with result rc and a duration in seconds. */
static void rec(wflo_breaker_t *b, int rc, double dur) {
  wflo_breaker_permit_t p;
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(p.state, WFLO_BREAKER_CLOSED);
  assert_int_equal(wflo_breaker_record(b, &p, rc, dur), 0);
}

static void recs(wflo_breaker_t *b, const char *pattern) {
  for (; *pattern; pattern++)
    rec(b,
        *pattern == 'F'   ? FAIL
        : *pattern == 'N' ? WFLO_E_CANCELED
                          : 0,
        -1.0);
}

static json_int_t failures(wflo_breaker_t *b) {
  json_t *j = wflo_breaker_state_json(b);
  json_int_t n;
  assert_non_null(j);
  n = json_integer_value(json_object_get(j, "failure_count"));
  json_decref(j);
  return n;
}

#define assert_st(b, s) assert_int_equal(wflo_breaker_state(b), s)

/* --- failure rates ------------------------------------------------------------ */

static void test_count_rate_at_threshold(void **state) {
  wflo_breaker_t *b;
  (void)state;
  /* 3 of 10 against 0.3: exactly at the threshold opens. */
  b = make_window(WFLO_WINDOW_COUNT, 10, 10, 0.3);
  recs(b, "SSSSSSSFF");
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(failures(b), 2);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_OPEN);
  assert_int_equal(failures(b), 3);
  assert_int_equal(wflo_test_events_count("circuit_breaker_opened"), 1);
  wflo_breaker_put(b);

  /* 2 of 10 is below; the next failure evicts a success: 3 of 10. */
  b = make_window(WFLO_WINDOW_COUNT, 10, 10, 0.3);
  recs(b, "SSSSSSSSFF");
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "S"); /* evicts an S: still 2 of 10 */
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

static void test_default_rate_around_half(void **state) {
  wflo_breaker_t *b;
  (void)state;
  /* The defaults: 100 outcomes, 100 minimum, 0.5. */
  b = make_window(WFLO_WINDOW_COUNT, 100, 100, 0.5);
  for (int i = 0; i < 51; i++)
    recs(b, "S");
  for (int i = 0; i < 48; i++)
    recs(b, "F");
  recs(b, "F"); /* 49 of 100 */
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(failures(b), 49);
  recs(b, "F"); /* evicts the oldest S: 50 of 100 */
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

static void test_minimum_calls(void **state) {
  wflo_breaker_t *b;
  (void)state;
  b = make_window(WFLO_WINDOW_COUNT, 10, 5, 0.5);
  recs(b, "FFFF"); /* rate 1.0 but below minimum_calls */
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "S"); /* 4 of 5 */
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* COUNT caps minimum_calls at window_size. */
  b = make_window(WFLO_WINDOW_COUNT, 4, 100, 0.5);
  recs(b, "SSF");
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* TIME does not cap it. */
  b = make_window(WFLO_WINDOW_TIME, 10, 6, 0.5);
  recs(b, "FFFFF");
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

static void test_eviction_and_rate_one(void **state) {
  wflo_breaker_t *b;
  (void)state;
  b = make_window(WFLO_WINDOW_COUNT, 4, 4, 0.75);
  recs(b, "SFFS"); /* 0.5 */
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "S"); /* FFSS */
  assert_int_equal(failures(b), 2);
  recs(b, "F"); /* FSSF: the oldest F left */
  assert_int_equal(failures(b), 2);
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F"); /* SSFF */
  recs(b, "F"); /* SFFF: 0.75 */
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* Rate 1.0: only a window of failures opens it. */
  b = make_window(WFLO_WINDOW_COUNT, 3, 3, 1.0);
  recs(b, "FFSFF");
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* A window of one outcome. */
  b = make_window(WFLO_WINDOW_COUNT, 1, 1, 1.0);
  recs(b, "SSS");
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

static void test_neutral_not_in_window(void **state) {
  wflo_breaker_t *b;
  (void)state;
  b = make_window(WFLO_WINDOW_COUNT, 4, 4, 0.5);
  recs(b, "FNNNNNNNNNF");
  assert_st(b, WFLO_BREAKER_CLOSED); /* 2 outcomes only */
  recs(b, "S");
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "S"); /* FFSS */
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

/* --- slow calls -------------------------------------------------------------------- */

static wflo_breaker_t *make_slow(wflo_window_t mode, int size, double dur,
                                 double rate) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  wflo_breaker_config_init(&c);
  c.window = mode;
  c.window_size = size;
  c.minimum_calls = size;
  c.failure_rate_threshold = 1.0;
  c.slow_call_duration = dur;
  c.slow_call_rate_threshold = rate;
  assert_int_equal(wflo_breaker_new("slow", &c, &b), 0);
  return b;
}

static void test_slow_rate(void **state) {
  wflo_breaker_t *b;
  const wflo_test_event_t *ev;
  (void)state;
  b = make_slow(WFLO_WINDOW_COUNT, 4, 1.0, 0.5);
  rec(b, 0, 2.0);  /* slow */
  rec(b, 0, 1.0);  /* exactly the limit: not slow (strictly longer is) */
  rec(b, 0, -1.0); /* not measured */
  assert_st(b, WFLO_BREAKER_CLOSED);
  rec(b, 0, NAN); /* not measured: 1 slow of 4 */
  assert_st(b, WFLO_BREAKER_CLOSED);
  rec(b, 0, 1.000001); /* evicts the first slow one: 1 of 4 */
  assert_st(b, WFLO_BREAKER_CLOSED);
  rec(b, FAIL, INFINITY); /* a slow failure: 2 slow of 4 */
  assert_st(b, WFLO_BREAKER_OPEN);
  ev = wflo_test_events_get("circuit_breaker_opened", 0);
  assert_non_null(ev);
  assert_int_equal(
      json_integer_value(json_object_get(ev->fields, "failure_count")), 1);
  wflo_breaker_put(b);

  /* The default slow rate 1.0: every call in the window slow. */
  b = make_slow(WFLO_WINDOW_TIME, 3, 60.0, 1.0);
  rec(b, 0, 61);
  rec(b, 0, 61);
  rec(b, 0, 59);
  assert_st(b, WFLO_BREAKER_CLOSED);
  wflo_breaker_put(b);
  b = make_slow(WFLO_WINDOW_TIME, 3, 60.0, 1.0);
  rec(b, 0, 61);
  rec(b, 0, 61);
  rec(b, 1, 1e12);
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

static int slow_op(void *arg) {
  wflo_test_vclock_advance((uint64_t)(uintptr_t)arg);
  return 0;
}

/* wflo_breaker_call and WFLO_WITH_BREAKER measure the call themselves. */
static void test_measured_durations(void **state) {
  wflo_breaker_t *b;
  int rc;
  (void)state;
  b = make_slow(WFLO_WINDOW_COUNT, 2, 1.0, 1.0);
  assert_int_equal(wflo_breaker_call(b, slow_op, (void *)(uintptr_t)(2 * S)),
                   0);
  assert_int_equal(wflo_breaker_call(b, slow_op, (void *)(uintptr_t)(S / 2)),
                   0); /* fast */
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(wflo_breaker_call(b, slow_op, (void *)(uintptr_t)(S + 1)),
                   0); /* 1 s + 1 ns: slow; the window is fast, slow */
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(wflo_breaker_call(b, slow_op, (void *)(uintptr_t)(S + 1)),
                   0); /* slow, slow */
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  wflo_test_vclock_install(T0);
  b = make_slow(WFLO_WINDOW_TIME, 2, 1.0, 1.0);
  /* They end at 1.25 s and 2.5 s: both inside the 2 s window. */
  WFLO_WITH_BREAKER(b, rc) {
    wflo_test_vclock_advance(S + S / 4);
    rc = 0;
  }
  assert_st(b, WFLO_BREAKER_CLOSED);
  WFLO_WITH_BREAKER(b, rc) {
    wflo_test_vclock_advance(S + S / 4);
    rc = 0;
  }
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

/* A clock that counts its reads, to check which paths read time. */
static atomic_int g_reads;
static uint64_t counting_now(void *ud) {
  (void)ud;
  atomic_fetch_add(&g_reads, 1);
  return wflo_test_vclock_now();
}
static void counting_sleep(uint64_t ns, void *ud) {
  (void)ud;
  wflo_test_vclock_advance(ns);
}

static int quick_op(void *arg) {
  (void)arg;
  return 0;
}

static void test_clock_reads(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t p;
  wflo_breaker_t *cons, *count, *time_w;
  int rc;
  (void)state;
  wflo_breaker_config_init(&c);
  c.slow_call_duration = 0.0;
  c.slow_call_rate_threshold = 1e-9;
  assert_int_equal(wflo_breaker_new("c", &c, &cons), 0);
  c.window = WFLO_WINDOW_COUNT;
  assert_int_equal(wflo_breaker_new("n", &c, &count), 0);
  c.window = WFLO_WINDOW_TIME;
  assert_int_equal(wflo_breaker_new("t", &c, &time_w), 0);
  assert_int_equal(wflo_clock_set(counting_now, counting_sleep, NULL), 0);

  /* Consecutive mode, CLOSED: no clock on any path, durations ignored. */
  atomic_store(&g_reads, 0);
  assert_int_equal(wflo_breaker_acquire(cons, &p), 0);
  assert_int_equal(wflo_breaker_record(cons, &p, 0, 100.0), 0);
  assert_int_equal(wflo_breaker_call(cons, quick_op, NULL), 0);
  assert_int_equal(wflo_breaker_call(cons, quick_op, (void *)1), 0);
  WFLO_WITH_BREAKER(cons, rc) { rc = FAIL; }
  WFLO_WITH_BREAKER(cons, rc) { rc = 0; }
  assert_int_equal(atomic_load(&g_reads), 0);
  assert_st(cons, WFLO_BREAKER_CLOSED);

  /* COUNT: acquire + record with a given duration reads no clock;
   * wflo_breaker_call measures (two reads). */
  assert_int_equal(wflo_breaker_acquire(count, &p), 0);
  assert_int_equal(wflo_breaker_record(count, &p, 0, 0.0), 0);
  assert_int_equal(atomic_load(&g_reads), 0);
  assert_int_equal(wflo_breaker_call(count, quick_op, NULL), 0);
  assert_int_equal(atomic_load(&g_reads), 2);

  /* TIME: recording reads the (coarse) clock for its bucket. */
  atomic_store(&g_reads, 0);
  assert_int_equal(wflo_breaker_acquire(time_w, &p), 0);
  assert_int_equal(wflo_breaker_record(time_w, &p, 0, 0.0), 0);
  assert_int_equal(atomic_load(&g_reads), 1);

  wflo_test_vclock_install(wflo_test_vclock_now());
  wflo_breaker_put(cons);
  wflo_breaker_put(count);
  wflo_breaker_put(time_w);
}

/* --- TIME window --------------------------------------------------------------------- */

static void test_time_window_expiry(void **state) {
  wflo_breaker_t *b;
  (void)state;
  /* At 9.999 s the first second still counts: 2 of 4. */
  b = make_window(WFLO_WINDOW_TIME, 10, 4, 0.5);
  recs(b, "FFS");
  wflo_test_vclock_advance(10 * S - 1);
  recs(b, "S");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* At 10 s it has left the window. */
  wflo_test_vclock_install(T0);
  b = make_window(WFLO_WINDOW_TIME, 10, 4, 0.5);
  recs(b, "FFS");
  assert_int_equal(failures(b), 2);
  wflo_test_vclock_advance(5 * S);
  assert_int_equal(failures(b), 2);
  wflo_test_vclock_advance(5 * S);
  assert_int_equal(failures(b), 0); /* the JSON state sees the expiry */
  recs(b, "SSFS");                  /* 1 of 4: the 2 old failures are gone */
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F"); /* 2 of 5 */
  assert_st(b, WFLO_BREAKER_CLOSED);
  recs(b, "F"); /* 3 of 6 */
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* A quiet period longer than the window empties it. */
  wflo_test_vclock_install(T0);
  b = make_window(WFLO_WINDOW_TIME, 10, 4, 0.5);
  recs(b, "FFF");
  wflo_test_vclock_advance(100 * S);
  recs(b, "F");
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(failures(b), 1);
  /* Buckets roll one second at a time. */
  for (int i = 0; i < 9; i++) {
    wflo_test_vclock_advance(S);
    recs(b, "S");
  }
  assert_int_equal(failures(b), 1);
  wflo_test_vclock_advance(S); /* the F's second leaves */
  assert_int_equal(failures(b), 0);
  wflo_breaker_put(b);
}

/* --- state changes ------------------------------------------------------------------- */

static void test_window_cleared_on_state_change(void **state) {
  wflo_breaker_t *b;
  wflo_breaker_permit_t p;
  (void)state;
  b = make_window(WFLO_WINDOW_COUNT, 4, 4, 0.5);
  recs(b, "FFSS");
  assert_st(b, WFLO_BREAKER_OPEN);
  assert_int_equal(failures(b), 2); /* the count that opened it */
  wflo_test_vclock_advance(S);
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(p.state, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), 0); /* CLOSED */
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(failures(b), 0);
  recs(b, "FFF"); /* a fresh window: 3 outcomes, below minimum_calls */
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(failures(b), 3);
  wflo_breaker_reset(b);
  assert_int_equal(failures(b), 0);
  recs(b, "FFF");
  assert_st(b, WFLO_BREAKER_CLOSED);
  /* A stale result does not land in the new window. */
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  wflo_breaker_reset(b);
  assert_int_equal(wflo_breaker_record(b, &p, FAIL, -1), 0);
  assert_int_equal(failures(b), 0);
  wflo_breaker_put(b);
}

static void test_half_open_as_default_mode(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t p[3];
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.window = WFLO_WINDOW_TIME;
  c.window_size = 5;
  c.minimum_calls = 2;
  c.recovery_timeout = 2.0;
  c.success_threshold = 2;
  c.half_open_max_calls = 2;
  assert_int_equal(wflo_breaker_new("ho", &c, &b), 0);
  recs(b, "FF");
  assert_st(b, WFLO_BREAKER_OPEN);
  wflo_test_vclock_advance(2 * S);
  assert_int_equal(wflo_breaker_acquire(b, &p[0]), 0);
  assert_int_equal(wflo_breaker_acquire(b, &p[1]), 0);
  assert_int_equal(wflo_breaker_acquire(b, &p[2]), WFLO_E_BREAKER_OPEN);
  assert_int_equal(wflo_breaker_record(b, &p[0], 0, 99.0), 0);
  assert_st(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(wflo_breaker_record(b, &p[1], FAIL, -1), 0);
  assert_st(b, WFLO_BREAKER_OPEN);
  assert_int_equal(failures(b), 1);
  wflo_test_vclock_advance(2 * S);
  assert_int_equal(wflo_breaker_acquire(b, &p[0]), 0);
  assert_int_equal(wflo_breaker_record(b, &p[0], 0, -1), 0);
  assert_int_equal(wflo_breaker_acquire(b, &p[0]), 0);
  assert_int_equal(wflo_breaker_record(b, &p[0], 0, -1), 0);
  assert_st(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(failures(b), 0);
  wflo_breaker_put(b);
}

/* --- a model check --------------------------------------------------------------------- */

/* Random outcomes and time steps against a reference window kept here the
 * obvious way (a list of (second, outcome) pairs). Rates are set so that the
 * circuit never opens; the JSON failure_count must match at every step. */
static void model_check(wflo_window_t mode, int size) {
  /* COUNT: a window of failures would open it, so the model never makes
   * one; TIME: minimum_calls is never reached. */
  wflo_breaker_t *b = make_window(
      mode, size, mode == WFLO_WINDOW_TIME ? 1000000000 : size, 1.0);
  enum { STEPS = 3000 };
  static uint64_t when[STEPS];
  static char what[STEPS];
  uint64_t x = 0x1234567;
  int n = 0;
  for (int step = 0; step < STEPS; step++) {
    int expect = 0;
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    if (mode == WFLO_WINDOW_TIME && (x >> 60) == 0)
      wflo_test_vclock_advance((x >> 20) % (3 * S));
    what[n] = (x >> 33) % 3 == 0 ? 'F' : (x >> 33) % 7 == 1 ? 'N' : 'S';
    if (mode == WFLO_WINDOW_COUNT && what[n] == 'F') {
      int i = n - 1, run = 0;
      for (; i >= 0 && run < size - 1; i--)
        if (what[i] != 'N' && what[i] != 'F')
          break;
        else
          run += what[i] == 'F';
      if (run >= size - 1)
        what[n] = 'S';
    }
    when[n] = wflo_test_vclock_now() / S;
    recs(b, (char[]){what[n], 0});
    n++;
    if (mode == WFLO_WINDOW_COUNT) {
      for (int i = n - 1, kept = 0; i >= 0 && kept < size; i--) {
        if (what[i] == 'N')
          continue;
        kept++;
        expect += what[i] == 'F';
      }
    } else {
      uint64_t now = wflo_test_vclock_now() / S;
      for (int i = 0; i < n; i++)
        expect += what[i] == 'F' && when[i] + (uint64_t)size > now;
    }
    if (failures(b) != expect)
      fail_msg("step %d: failure_count %lld, expected %d", step,
               (long long)failures(b), expect);
    assert_st(b, WFLO_BREAKER_CLOSED);
  }
  wflo_breaker_put(b);
}

static void test_model_count(void **state) {
  (void)state;
  model_check(WFLO_WINDOW_COUNT, 130); /* spans three 64-bit words */
  model_check(WFLO_WINDOW_COUNT, 64);
  model_check(WFLO_WINDOW_COUNT, 7);
}

static void test_model_time(void **state) {
  (void)state;
  model_check(WFLO_WINDOW_TIME, 5);
  model_check(WFLO_WINDOW_TIME, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      TEST(test_count_rate_at_threshold),
      TEST(test_default_rate_around_half),
      TEST(test_minimum_calls),
      TEST(test_eviction_and_rate_one),
      TEST(test_neutral_not_in_window),
      TEST(test_slow_rate),
      TEST(test_measured_durations),
      TEST(test_clock_reads),
      TEST(test_time_window_expiry),
      TEST(test_window_cleared_on_state_change),
      TEST(test_half_open_as_default_mode),
      TEST(test_model_count),
      TEST(test_model_time),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
