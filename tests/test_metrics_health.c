/* Tests of the health module (src/health.c): check configs, periodic
 * probes on a real loop (millisecond periods), thresholds, timeouts, late
 * and cross-thread reports, stopping, the JSON summary, out of memory. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "internal/loop.h"

/* --- helpers ------------------------------------------------------------------------ */

/* The JSON object of check `name`, or NULL; *root receives the summary
 * (decref it). */
static json_t *check_json(const char *name, json_t **root) {
  json_t *checks, *c;
  size_t i;
  *root = wflo_health_json();
  assert_non_null(*root);
  checks = json_object_get(*root, "checks");
  assert_true(json_is_array(checks));
  json_array_foreach(checks, i, c) {
    if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
      return c;
  }
  return NULL;
}

static json_int_t check_int(const char *name, const char *key) {
  json_t *root, *c = check_json(name, &root);
  json_int_t v;
  assert_non_null(c);
  v = json_integer_value(json_object_get(c, key));
  json_decref(root);
  return v;
}

static void run_until_runs(uv_loop_t *loop, const char *name, json_int_t n) {
  while (check_int(name, "runs") < n)
    uv_run(loop, UV_RUN_ONCE);
}

static void assert_check(const char *name, const char *state, bool healthy,
                         const char *last_error) {
  json_t *root, *c = check_json(name, &root);
  assert_non_null(c);
  assert_string_equal(json_string_value(json_object_get(c, "state")), state);
  assert_int_equal(json_is_true(json_object_get(c, "healthy")), healthy);
  if (last_error == NULL)
    assert_true(json_is_null(json_object_get(c, "last_error")));
  else
    assert_string_equal(json_string_value(json_object_get(c, "last_error")),
                        last_error);
  json_decref(root);
}

static void on_flag_timer(uv_timer_t *t) { *(bool *)t->data = true; }

/* Runs the loop for about ms milliseconds of real time. */
static void run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t t;
  bool done = false;
  uv_timer_init(loop, &t);
  t.data = &done;
  uv_timer_start(&t, on_flag_timer, ms, 0);
  while (!done)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static int teardown(void **state) {
  wflo_test_events_uninstall();
  return wflo_test_teardown(state);
}

/* --- config --------------------------------------------------------------------------- */

static void test_config_defaults(void **state) {
  wflo_health_check_config_t c;
  size_t i;
  (void)state;
  memset(&c, 0xa5, sizeof(c));
  wflo_health_check_config_init(&c);
  assert_null(c.name);
  assert_true(c.period == WFLO_HEALTH_DEFAULT_PERIOD);
  assert_true(c.period == 10.0);
  assert_true(c.timeout == WFLO_HEALTH_DEFAULT_TIMEOUT);
  assert_true(c.timeout == 5.0);
  assert_int_equal(c.unhealthy_threshold,
                   WFLO_HEALTH_DEFAULT_UNHEALTHY_THRESHOLD);
  assert_int_equal(c.unhealthy_threshold, 1);
  assert_null(c.probe);
  assert_null(c.breaker);
  assert_null(c.user_data);
  for (i = 0; i < 8; i++)
    assert_null(c.reserved[i]);
  wflo_health_check_config_init(NULL);
}

static void noop_probe(wflo_health_probe_t *p, void *ud) {
  (void)ud;
  wflo_health_probe_done(p, 0);
}

static void test_config_validation(void **state) {
  static const struct {
    const char *field;
    const char *msg;
  } cases[] = {
      {"name", "health_check.name: is required"},
      {"period0", "health_check.period: must be greater than 0"},
      {"periodnan", "health_check.period: must be a number, not NaN"},
      {"periodinf", "health_check.period: must be finite"},
      {"timeout", "health_check.timeout: must not be negative"},
      {"threshold", "health_check.unhealthy_threshold: must be at least 1"},
      {"probe", "health_check.probe: is required"},
  };
  wflo_health_check_config_t c;
  char err[128];
  size_t i;
  const wflo_test_event_t *ev;
  (void)state;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  for (i = 0; i < WFLO_ARRAY_SIZE(cases); i++) {
    wflo_health_check_config_init(&c);
    c.name = "db";
    c.probe = noop_probe;
    assert_int_equal(wflo_health_check_config_validate(&c, NULL, 0), 0);
    if (strcmp(cases[i].field, "name") == 0)
      c.name = NULL;
    else if (strcmp(cases[i].field, "period0") == 0)
      c.period = 0;
    else if (strcmp(cases[i].field, "periodnan") == 0)
      c.period = NAN;
    else if (strcmp(cases[i].field, "periodinf") == 0)
      c.period = INFINITY;
    else if (strcmp(cases[i].field, "timeout") == 0)
      c.timeout = -1;
    else if (strcmp(cases[i].field, "threshold") == 0)
      c.unhealthy_threshold = 0;
    else
      c.probe = NULL;
    assert_int_equal(wflo_health_check_config_validate(&c, err, sizeof(err)),
                     WFLO_E_INVAL);
    assert_string_equal(err, cases[i].msg);
  }
  assert_int_equal(wflo_test_events_count("config_invalid"),
                   WFLO_ARRAY_SIZE(cases));
  ev = wflo_test_events_get("config_invalid", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "what")),
                      "health_check");
  assert_string_equal(json_string_value(json_object_get(ev->fields, "field")),
                      "name");
  assert_int_equal(wflo_health_check_config_validate(NULL, NULL, 0),
                   WFLO_E_INVAL);
  wflo_set_log_level(WFLO_LOG_WARN);
}

static void test_config_from_json(void **state) {
  wflo_health_check_config_t c;
  json_t *j;
  char err[128];
  (void)state;
  wflo_set_log_level(WFLO_LOG_OFF); /* config_invalid events expected */
  j = json_loads("{\"name\": \"db\", \"period\": 2, \"timeout\": 0.5, "
                 "\"unhealthy_threshold\": 3}",
                 0, NULL);
  assert_int_equal(wflo_health_check_config_from_json(j, &c, err, sizeof(err)),
                   0);
  json_decref(j);
  assert_string_equal(c.name, "db");
  assert_true(c.period == 2.0);
  assert_true(c.timeout == 0.5);
  assert_int_equal(c.unhealthy_threshold, 3);
  assert_true(wflo_test_alloc_live() > 0); /* the name is library memory */
  wflo_health_check_config_clear(&c);
  assert_null(c.name);
  assert_int_equal(wflo_test_alloc_live(), 0);

  j = json_loads("{\"name\": \"db\", \"nope\": 1}", 0, NULL);
  assert_int_equal(wflo_health_check_config_from_json(j, &c, err, sizeof(err)),
                   WFLO_E_PARSE);
  json_decref(j);
  assert_null(c.name);
  j = json_loads("{\"period\": \"fast\"}", 0, NULL);
  assert_int_equal(wflo_health_check_config_from_json(j, &c, NULL, 0),
                   WFLO_E_PARSE);
  json_decref(j);
  j = json_loads("{\"name\": \"db\", \"period\": 0}", 0, NULL);
  assert_int_equal(wflo_health_check_config_from_json(j, &c, err, sizeof(err)),
                   WFLO_E_INVAL);
  json_decref(j);
  assert_string_equal(err, "health_check.period: must be greater than 0");
  /* Failure leaves the defaults and frees what was loaded. */
  assert_null(c.name);
  assert_true(c.period == WFLO_HEALTH_DEFAULT_PERIOD);
  assert_int_equal(wflo_test_alloc_live(), 0);
  assert_int_equal(wflo_health_check_config_from_json(NULL, NULL, NULL, 0),
                   WFLO_E_INVAL);
  wflo_set_log_level(WFLO_LOG_WARN);
}

/* --- running checks ------------------------------------------------------------------- */

typedef struct script {
  const int *results; /* per run; the last one repeats */
  int n;
  int started;
  wflo_health_check_t *self;
  bool stop_inside;
  wflo_health_probe_t *held; /* a probe left unreported */
  bool hold;
} script_t;

static void script_probe(wflo_health_probe_t *p, void *ud) {
  script_t *s = ud;
  int i = s->started < s->n ? s->started : s->n - 1;
  s->started++;
  if (s->stop_inside)
    s->stop_inside = wflo_health_check_stop(s->self) != 0; /* false: ok */
  if (s->hold) {
    s->held = p;
    return;
  }
  wflo_health_probe_done(p, s->results[i]);
}

static wflo_health_check_t *start(uv_loop_t *loop, const char *name,
                                  double period, double timeout,
                                  uint32_t threshold, script_t *s) {
  wflo_health_check_config_t c;
  wflo_health_check_t *h = NULL;
  wflo_health_check_config_init(&c);
  c.name = name;
  c.period = period;
  c.timeout = timeout;
  c.unhealthy_threshold = threshold;
  c.probe = script_probe;
  c.user_data = s;
  assert_int_equal(wflo_health_check_start(loop, &c, &h), 0);
  s->self = h;
  return h;
}

static void test_passing_check(void **state) {
  static const int ok[] = {0};
  script_t s = {ok, 1, 0, NULL, false, NULL, false};
  uv_loop_t loop;
  wflo_health_check_t *h;
  json_t *root, *c;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  h = start(&loop, "cache \"primary\"", 0.002, 1.0, 1, &s);
  /* Listed at once, pending until the first report; never run inside
   * start. */
  assert_int_equal(s.started, 0);
  assert_check("cache \"primary\"", "pending", true, NULL);
  assert_true(wflo_health_ok());
  run_until_runs(&loop, "cache \"primary\"", 3);
  assert_check("cache \"primary\"", "passing", true, "OK");
  c = check_json("cache \"primary\"", &root);
  assert_int_equal(json_integer_value(json_object_get(c, "failures")), 0);
  assert_int_equal(
      json_integer_value(json_object_get(c, "consecutive_failures")), 0);
  assert_true(json_real_value(json_object_get(c, "period")) == 0.002);
  assert_true(json_real_value(json_object_get(c, "timeout")) == 1.0);
  assert_int_equal(
      json_integer_value(json_object_get(c, "unhealthy_threshold")), 1);
  assert_true(json_real_value(json_object_get(c, "last_duration_seconds")) >=
              0);
  assert_true(
      json_real_value(json_object_get(c, "seconds_since_last_result")) >= 0);
  assert_int_equal(json_object_size(c), 12);
  assert_true(json_is_true(json_object_get(root, "healthy")));
  assert_string_equal(json_string_value(json_object_get(root, "status")),
                      "ok");
  json_decref(root);
  assert_int_equal(wflo_health_check_stop(h), 0);
  /* Gone from the summary at once. */
  assert_null(check_json("cache \"primary\"", &root));
  json_decref(root);
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static void test_threshold(void **state) {
  static const int seq[] = {UV_ECONNREFUSED, UV_ETIMEDOUT, 0, -5, 0};
  script_t s = {seq, 5, 0, NULL, false, NULL, false};
  uv_loop_t loop;
  wflo_health_check_t *h;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  h = start(&loop, "db", 0.002, 0, 2, &s);
  run_until_runs(&loop, "db", 1);
  /* One failure under a threshold of two: failing but healthy. */
  assert_check("db", "failing", true, "ECONNREFUSED");
  assert_true(wflo_health_ok());
  run_until_runs(&loop, "db", 2);
  assert_check("db", "failing", false, "ETIMEDOUT");
  assert_false(wflo_health_ok());
  assert_int_equal(check_int("db", "consecutive_failures"), 2);
  run_until_runs(&loop, "db", 3);
  assert_check("db", "passing", true, "OK");
  assert_true(wflo_health_ok());
  run_until_runs(&loop, "db", 4);
  assert_check("db", "failing", true, "EIO");
  assert_int_equal(check_int("db", "failures"), 3);
  assert_int_equal(wflo_health_check_stop(h), 0);
  assert_true(wflo_health_ok()); /* a stopped check decides nothing */
  wflo_test_loop_close(&loop);
}

/* Reports from another thread, a millisecond later. */
typedef struct async_probe {
  uv_thread_t threads[64];
  int nthreads;
  wflo_health_probe_t *p;
  int result;
} async_probe_t;

static void report_later(void *arg) {
  async_probe_t *a = arg;
  wflo_health_probe_t *p = a->p;
  uv_sleep(1);
  wflo_health_probe_done(p, a->result);
}

static void thread_probe(wflo_health_probe_t *p, void *ud) {
  async_probe_t *a = ud;
  WFLO_TEST_THREAD_CHECK(a->nthreads < 64);
  if (a->nthreads >= 64) {
    wflo_health_probe_done(p, 0);
    return;
  }
  a->p = p;
  WFLO_TEST_THREAD_CHECK(
      uv_thread_create(&a->threads[a->nthreads++], report_later, a) == 0);
}

static void test_report_from_thread(void **state) {
  async_probe_t a;
  uv_loop_t loop;
  wflo_health_check_config_t c;
  wflo_health_check_t *h;
  int i;
  (void)state;
  memset(&a, 0, sizeof(a));
  a.result = UV_EHOSTUNREACH;
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_health_check_config_init(&c);
  c.name = "remote";
  c.period = 0.003;
  c.probe = thread_probe;
  c.user_data = &a;
  assert_int_equal(wflo_health_check_start(&loop, &c, &h), 0);
  run_until_runs(&loop, "remote", 3);
  assert_check("remote", "failing", false, "EHOSTUNREACH");
  assert_int_equal(wflo_health_check_stop(h), 0);
  wflo_test_loop_close(&loop); /* waits for an outstanding report */
  for (i = 0; i < a.nthreads; i++)
    assert_int_equal(uv_thread_join(&a.threads[i]), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static void test_timeout_and_late_report(void **state) {
  static const int ok[] = {0};
  script_t s = {ok, 1, 0, NULL, false, NULL, true};
  uv_loop_t loop;
  wflo_health_check_t *h;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  h = start(&loop, "slow", 0.02, 0.004, 2, &s);
  run_until_runs(&loop, "slow", 1);
  assert_check("slow", "failing", true, "WFLO_E_TIMEOUT");
  assert_int_equal(s.started, 1);
  /* Next tick: still outstanding, counts as down again, no new probe. */
  run_until_runs(&loop, "slow", 2);
  assert_check("slow", "failing", false, "WFLO_E_TIMEOUT");
  assert_int_equal(s.started, 1);
  /* The late report is ignored... */
  s.hold = false;
  wflo_health_probe_done(s.held, 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_check("slow", "failing", false, "WFLO_E_TIMEOUT");
  assert_int_equal(check_int("slow", "runs"), 2);
  /* ...and frees the way for the next probe, which passes. */
  run_until_runs(&loop, "slow", 3);
  assert_int_equal(s.started, 2);
  assert_check("slow", "passing", true, "OK");
  assert_int_equal(wflo_health_check_stop(h), 0);
  wflo_test_loop_close(&loop);
}

static void test_no_timeout_waits(void **state) {
  static const int ok[] = {0};
  script_t s = {ok, 1, 0, NULL, false, NULL, true};
  uv_loop_t loop;
  wflo_health_check_t *h;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  h = start(&loop, "patient", 0.002, 0, 1, &s);
  /* 30 ms of ticks with the probe outstanding: nothing recorded, no
   * second probe. */
  run_for(&loop, 30);
  assert_int_equal(s.started, 1);
  assert_int_equal(check_int("patient", "runs"), 0);
  assert_check("patient", "pending", true, NULL);
  /* Stop with the probe outstanding: out of the summary now, freed at the
   * report. */
  assert_int_equal(wflo_health_check_stop(h), 0);
  assert_int_equal(wflo_health_check_stop(h), WFLO_E_STATE);
  {
    json_t *root;
    assert_null(check_json("patient", &root));
    json_decref(root);
  }
  assert_true(wflo_test_alloc_live() > 0);
  wflo_health_probe_done(s.held, 0);
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static void test_stop_inside_probe(void **state) {
  static const int ok[] = {0};
  script_t s = {ok, 1, 0, NULL, true, NULL, false};
  uv_loop_t loop;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  (void)start(&loop, "once", 0.001, 0, 1, &s);
  wflo_test_loop_close(&loop); /* ends: the check stopped itself */
  assert_int_equal(s.started, 1);
  assert_false(s.stop_inside); /* the stop succeeded */
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static void test_args(void **state) {
  wflo_health_check_config_t c;
  wflo_health_check_t *h = NULL;
  uv_loop_t loop;
  (void)state;
  wflo_set_log_level(WFLO_LOG_OFF); /* config_invalid events expected */
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_health_check_config_init(&c);
  c.name = "x";
  c.probe = noop_probe;
  assert_int_equal(wflo_health_check_start(NULL, &c, &h), WFLO_E_INVAL);
  assert_int_equal(wflo_health_check_start(&loop, NULL, &h), WFLO_E_INVAL);
  assert_int_equal(wflo_health_check_start(&loop, &c, NULL), WFLO_E_INVAL);
  c.period = -1;
  assert_int_equal(wflo_health_check_start(&loop, &c, &h), WFLO_E_INVAL);
  assert_null(h);
  assert_int_equal(wflo_health_check_stop(NULL), WFLO_E_INVAL);
  wflo_health_probe_done(NULL, 0);
  wflo_set_log_level(WFLO_LOG_WARN);
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

/* --- out of memory ------------------------------------------------------------------ */

static void oom_deadline(uv_timer_t *t) { *(bool *)t->data = true; }

static int oom_scenario(void *ud) {
  static const int ok[] = {-1};
  script_t s = {ok, 1, 0, NULL, false, NULL, false};
  wflo_health_check_config_t c;
  wflo_health_check_t *h;
  uv_loop_t loop;
  uv_timer_t t;
  bool expired = false;
  json_t *j;
  int rc;
  (void)ud;
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_health_check_config_init(&c);
  c.name = "oom\xff"; /* JSON output needs a repaired copy */
  c.period = 0.001;
  c.probe = script_probe;
  c.user_data = &s;
  rc = wflo_health_check_start(&loop, &c, &h);
  if (rc == 0) {
    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, oom_deadline, 200, 0);
    /* A probe that could not be allocated is skipped: wait for one. */
    while (s.started == 0 && !expired)
      uv_run(&loop, UV_RUN_ONCE);
    while (wflo_health_ok() && !expired)
      uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    j = wflo_health_json();
    if (j == NULL)
      rc = WFLO_E_NOMEM;
    json_decref(j);
    if (wflo_health_ok())
      rc = WFLO_E_NOMEM; /* no probe could run */
    assert_int_equal(wflo_health_check_stop(h), 0);
  } else {
    assert_int_equal(rc, WFLO_E_NOMEM);
  }
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
  return rc;
}

static void test_oom(void **state) {
  (void)state;
  wflo_test_oom_loop(oom_scenario, NULL, 0);
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, wflo_test_setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      TEST(test_config_defaults),
      TEST(test_config_validation),
      TEST(test_config_from_json),
      TEST(test_passing_check),
      TEST(test_threshold),
      TEST(test_report_from_thread),
      TEST(test_timeout_and_late_report),
      TEST(test_no_timeout_waits),
      TEST(test_stop_inside_probe),
      TEST(test_args),
      TEST(test_oom),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
