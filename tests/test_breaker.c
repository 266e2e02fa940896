/* Tests of the circuit breaker's state machine, config, registry, events,
 * JSON state and WFLO_WITH_BREAKER, on the virtual clock. Windows are in
 * test_breaker_window.c, concurrency in test_breaker_stress.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/breaker.h"

#define S (1000000000ull) /* one second in ns */
#define T0 (1000 * S)     /* virtual clock start */
#define FAIL UV_ECONNRESET

/* --- fixtures and helpers --------------------------------------------------- */

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

static int g_runs; /* how many times op() ran */

static int op(void *arg) {
  g_runs++;
  return (int)(intptr_t)arg;
}

/* One call through the breaker that returns rc if it runs. */
static int call(wflo_breaker_t *b, int rc) {
  return wflo_breaker_call(b, op, (void *)(intptr_t)rc);
}

static wflo_breaker_t *make(const wflo_breaker_config_t *c) {
  wflo_breaker_t *b = NULL;
  assert_int_equal(wflo_breaker_new("svc", c, &b), 0);
  assert_non_null(b);
  return b;
}

static json_int_t jint(wflo_breaker_t *b, const char *key) {
  json_t *j = wflo_breaker_state_json(b), *v;
  json_int_t n;
  assert_non_null(j);
  v = json_object_get(j, key);
  assert_true(json_is_integer(v));
  n = json_integer_value(v);
  json_decref(j);
  return n;
}

static double jreal(wflo_breaker_t *b, const char *key) {
  json_t *j = wflo_breaker_state_json(b), *v;
  double d;
  assert_non_null(j);
  v = json_object_get(j, key);
  assert_true(json_is_real(v));
  d = json_real_value(v);
  json_decref(j);
  return d;
}

static void assert_state(wflo_breaker_t *b, wflo_breaker_state_t st) {
  json_t *j = wflo_breaker_state_json(b);
  assert_int_equal(wflo_breaker_state(b), st);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "state")),
                      wflo_breaker_state_name(st));
  json_decref(j);
}

/* Opens a default-mode breaker with `threshold` failures. */
static void trip(wflo_breaker_t *b, int threshold) {
  for (int i = 0; i < threshold; i++)
    assert_int_equal(call(b, FAIL), FAIL);
  assert_state(b, WFLO_BREAKER_OPEN);
}

static const char *ev_str(const char *name, size_t i, const char *key) {
  const wflo_test_event_t *ev = wflo_test_events_get(name, i);
  assert_non_null(ev);
  return json_string_value(json_object_get(ev->fields, key));
}

/* --- configuration ------------------------------------------------------------ */

static void test_defaults(void **state) {
  wflo_breaker_config_t c;
  (void)state;
  memset(&c, 0xab, sizeof(c));
  wflo_breaker_config_init(&c);
  assert_int_equal(c.failure_threshold,
                   WFLO_BREAKER_DEFAULT_FAILURE_THRESHOLD);
  assert_int_equal(c.failure_threshold, 5);
  assert_true(c.recovery_timeout == 60.0);
  assert_true(c.recovery_timeout == WFLO_BREAKER_DEFAULT_RECOVERY_TIMEOUT);
  assert_int_equal(c.success_threshold, 2);
  assert_int_equal(c.success_threshold,
                   WFLO_BREAKER_DEFAULT_SUCCESS_THRESHOLD);
  assert_int_equal(c.half_open_max_calls, 1);
  assert_int_equal(c.half_open_max_calls,
                   WFLO_BREAKER_DEFAULT_HALF_OPEN_MAX_CALLS);
  assert_true(c.half_open_max_wait == 0.0);
  assert_true(c.half_open_max_wait == WFLO_BREAKER_DEFAULT_HALF_OPEN_MAX_WAIT);
  assert_null(c.expected_errors);
  assert_int_equal(c.expected_errors_count, 0);
  assert_null(c.is_failure);
  assert_int_equal(c.window, WFLO_WINDOW_CONSECUTIVE);
  assert_int_equal(c.window, WFLO_BREAKER_DEFAULT_WINDOW);
  assert_int_equal(c.window_size, 100);
  assert_int_equal(c.window_size, WFLO_BREAKER_DEFAULT_WINDOW_SIZE);
  assert_int_equal(c.minimum_calls, 100);
  assert_int_equal(c.minimum_calls, WFLO_BREAKER_DEFAULT_MINIMUM_CALLS);
  assert_true(c.failure_rate_threshold == 0.5);
  assert_true(c.failure_rate_threshold ==
              WFLO_BREAKER_DEFAULT_FAILURE_RATE_THRESHOLD);
  assert_true(c.slow_call_duration == 60.0);
  assert_true(c.slow_call_duration == WFLO_BREAKER_DEFAULT_SLOW_CALL_DURATION);
  assert_true(c.slow_call_rate_threshold == 1.0);
  assert_true(c.slow_call_rate_threshold ==
              WFLO_BREAKER_DEFAULT_SLOW_CALL_RATE_THRESHOLD);
  assert_null(c.user_data);
  for (size_t i = 0; i < WFLO_ARRAY_SIZE(c.reserved); i++)
    assert_null(c.reserved[i]);
  assert_int_equal(wflo_breaker_config_validate(&c, NULL, 0), 0);
  wflo_breaker_config_init(NULL); /* no-op */
  wflo_breaker_config_clear(NULL);
}

/* One bad value per row: the field named in errbuf and the event. */
typedef struct bad_case {
  const char *field;
  void (*apply)(wflo_breaker_config_t *c);
} bad_case_t;

static const int positive_code[] = {-5, 7};

#define BAD(name, field, stmt)                                                \
  static void name(wflo_breaker_config_t *c) { stmt; }
BAD(b_ft0, failure_threshold, c->failure_threshold = 0)
BAD(b_ftneg, failure_threshold, c->failure_threshold = -3)
BAD(b_ftbig, failure_threshold,
    c->failure_threshold = WFLO_BREAKER_THRESHOLD_MAX + 1)
BAD(b_rtnan, recovery_timeout, c->recovery_timeout = NAN)
BAD(b_rtneg, recovery_timeout, c->recovery_timeout = -1.0)
BAD(b_rtinf, recovery_timeout, c->recovery_timeout = INFINITY)
BAD(b_rtbig, recovery_timeout, c->recovery_timeout = 2e9)
BAD(b_st0, success_threshold, c->success_threshold = 0)
BAD(b_stbig, success_threshold,
    c->success_threshold = WFLO_BREAKER_THRESHOLD_MAX + 1)
BAD(b_hm0, half_open_max_calls, c->half_open_max_calls = 0)
BAD(b_hmbig, half_open_max_calls,
    c->half_open_max_calls = WFLO_BREAKER_HALF_OPEN_CALLS_MAX + 1)
BAD(b_hwneg, half_open_max_wait, c->half_open_max_wait = -0.5)
BAD(b_hwnan, half_open_max_wait, c->half_open_max_wait = NAN)
BAD(b_eepos, expected_errors,
    (c->expected_errors = positive_code, c->expected_errors_count = 2))
BAD(b_eenull, expected_errors,
    (c->expected_errors = NULL, c->expected_errors_count = 1))
BAD(b_win, window, c->window = (wflo_window_t)7)
BAD(b_winneg, window, c->window = (wflo_window_t)-1)
BAD(b_ws0, window_size, c->window_size = 0)
BAD(b_wsbig, window_size, c->window_size = WFLO_BREAKER_COUNT_WINDOW_MAX + 1)
BAD(b_wstime, window_size,
    (c->window = WFLO_WINDOW_TIME,
     c->window_size = WFLO_BREAKER_TIME_WINDOW_MAX + 1))
BAD(b_mc0, minimum_calls, c->minimum_calls = 0)
BAD(b_fr0, failure_rate_threshold, c->failure_rate_threshold = 0.0)
BAD(b_frbig, failure_rate_threshold, c->failure_rate_threshold = 1.0001)
BAD(b_frnan, failure_rate_threshold, c->failure_rate_threshold = NAN)
BAD(b_sdneg, slow_call_duration, c->slow_call_duration = -1.0)
BAD(b_sdinf, slow_call_duration, c->slow_call_duration = INFINITY)
BAD(b_sr0, slow_call_rate_threshold, c->slow_call_rate_threshold = 0.0)
BAD(b_srbig, slow_call_rate_threshold, c->slow_call_rate_threshold = 1.5)

static const bad_case_t bad_cases[] = {
    {"failure_threshold", b_ft0},
    {"failure_threshold", b_ftneg},
    {"failure_threshold", b_ftbig},
    {"recovery_timeout", b_rtnan},
    {"recovery_timeout", b_rtneg},
    {"recovery_timeout", b_rtinf},
    {"recovery_timeout", b_rtbig},
    {"success_threshold", b_st0},
    {"success_threshold", b_stbig},
    {"half_open_max_calls", b_hm0},
    {"half_open_max_calls", b_hmbig},
    {"half_open_max_wait", b_hwneg},
    {"half_open_max_wait", b_hwnan},
    {"expected_errors", b_eepos},
    {"expected_errors", b_eenull},
    {"window", b_win},
    {"window", b_winneg},
    {"window_size", b_ws0},
    {"window_size", b_wsbig},
    {"window_size", b_wstime},
    {"minimum_calls", b_mc0},
    {"failure_rate_threshold", b_fr0},
    {"failure_rate_threshold", b_frbig},
    {"failure_rate_threshold", b_frnan},
    {"slow_call_duration", b_sdneg},
    {"slow_call_duration", b_sdinf},
    {"slow_call_rate_threshold", b_sr0},
    {"slow_call_rate_threshold", b_srbig},
};

static void test_bad_configs(void **state) {
  (void)state;
  for (size_t i = 0; i < WFLO_ARRAY_SIZE(bad_cases); i++) {
    wflo_breaker_config_t c;
    wflo_breaker_t *b = (wflo_breaker_t *)&c;
    char err[128], want[64];
    const wflo_test_event_t *ev;

    wflo_breaker_config_init(&c);
    bad_cases[i].apply(&c);
    wflo_test_events_clear();
    assert_int_equal(wflo_breaker_config_validate(&c, err, sizeof(err)),
                     WFLO_E_INVAL);
    snprintf(want, sizeof(want), "breaker.%s: ", bad_cases[i].field);
    if (strncmp(err, want, strlen(want)) != 0)
      fail_msg("case %zu: errbuf \"%s\", want \"%s...\"", i, err, want);
    ev = wflo_test_events_get("config_invalid", 0);
    assert_non_null(ev);
    assert_string_equal(
        json_string_value(json_object_get(ev->fields, "field")),
        bad_cases[i].field);
    assert_string_equal(json_string_value(json_object_get(ev->fields, "what")),
                        "breaker");
    /* Constructors refuse it and build nothing. */
    assert_int_equal(wflo_breaker_new("x", &c, &b), WFLO_E_INVAL);
    assert_null(b);
    b = (wflo_breaker_t *)&c;
    assert_int_equal(wflo_breaker_get("x", &c, &b), WFLO_E_INVAL);
    assert_null(b);
    assert_int_equal(wflo_test_alloc_live(), 0);
  }
  assert_int_equal(wflo_breaker_config_validate(NULL, NULL, 0), WFLO_E_INVAL);
}

static void test_edge_configs_valid(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.recovery_timeout = 0.0;
  c.half_open_max_wait = WFLO_DURATION_MAX;
  c.failure_rate_threshold = 1.0;
  c.slow_call_rate_threshold = 1e-9;
  c.slow_call_duration = 0.0;
  c.failure_threshold = WFLO_BREAKER_THRESHOLD_MAX;
  c.window = WFLO_WINDOW_TIME;
  c.window_size = WFLO_BREAKER_TIME_WINDOW_MAX;
  c.minimum_calls = 1;
  assert_int_equal(wflo_breaker_config_validate(&c, NULL, 0), 0);
  assert_int_equal(wflo_breaker_new(NULL, &c, &b), 0);
  wflo_breaker_put(b);
  c.window = WFLO_WINDOW_COUNT;
  c.window_size = WFLO_BREAKER_COUNT_WINDOW_MAX;
  c.half_open_max_calls = WFLO_BREAKER_HALF_OPEN_CALLS_MAX;
  assert_int_equal(wflo_breaker_new(NULL, &c, &b), 0);
  wflo_breaker_put(b);
}

static void test_from_json(void **state) {
  wflo_breaker_config_t c;
  char err[128] = "";
  json_t *j = json_pack(
      "{s:i, s:i, s:i, s:i, s:f, s:[s,s,i], s:s, s:i, s:i, s:f, s:i, s:f}",
      "failure_threshold", 7, "recovery_timeout", 30, "success_threshold", 3,
      "half_open_max_calls", 4, "half_open_max_wait", 2.5, "expected_errors",
      "WFLO_E_TIMEOUT", "ETIMEDOUT", -5, "window", "count", "window_size", 50,
      "minimum_calls", 10, "failure_rate_threshold", 0.25,
      "slow_call_duration", 2, "slow_call_rate_threshold", 0.75);
  (void)state;
  assert_non_null(j);
  assert_int_equal(wflo_breaker_config_from_json(j, &c, err, sizeof(err)), 0);
  assert_int_equal(c.failure_threshold, 7);
  assert_true(c.recovery_timeout == 30.0);
  assert_int_equal(c.success_threshold, 3);
  assert_int_equal(c.half_open_max_calls, 4);
  assert_true(c.half_open_max_wait == 2.5);
  assert_int_equal(c.expected_errors_count, 3);
  assert_int_equal(c.expected_errors[0], WFLO_E_TIMEOUT);
  assert_int_equal(c.expected_errors[1], UV_ETIMEDOUT);
  assert_int_equal(c.expected_errors[2], -5);
  assert_int_equal(c.window, WFLO_WINDOW_COUNT);
  assert_int_equal(c.window_size, 50);
  assert_int_equal(c.minimum_calls, 10);
  assert_true(c.failure_rate_threshold == 0.25);
  assert_true(c.slow_call_duration == 2.0);
  assert_true(c.slow_call_rate_threshold == 0.75);
  assert_true(wflo_test_alloc_live() > 0); /* the loaded list */
  wflo_breaker_config_clear(&c);
  assert_int_equal(wflo_test_alloc_live(), 0);
  assert_null(c.expected_errors);
  assert_int_equal(c.failure_threshold, 5);
  json_decref(j);

  /* An empty object is the defaults; "time" and "consecutive" load. */
  j = json_pack("{s:s}", "window", "time");
  assert_int_equal(wflo_breaker_config_from_json(j, &c, NULL, 0), 0);
  assert_int_equal(c.window, WFLO_WINDOW_TIME);
  json_decref(j);
  j = json_pack("{s:s}", "window", "consecutive");
  assert_int_equal(wflo_breaker_config_from_json(j, &c, NULL, 0), 0);
  assert_int_equal(c.window, WFLO_WINDOW_CONSECUTIVE);
  json_decref(j);
  j = json_object();
  assert_int_equal(wflo_breaker_config_from_json(j, &c, NULL, 0), 0);
  assert_int_equal(c.window_size, 100);
  json_decref(j);
}

typedef struct json_case {
  const char *text;
  int rc;
  const char *prefix; /* errbuf starts with it */
} json_case_t;

static const json_case_t json_cases[] = {
    {"{\"nope\": 1}", WFLO_E_PARSE, "breaker.nope: "},
    {"{\"is_failure\": 1}", WFLO_E_PARSE, "breaker.is_failure: "},
    {"{\"user_data\": null}", WFLO_E_PARSE, "breaker.user_data: "},
    {"{\"failure_threshold\": \"5\"}", WFLO_E_PARSE,
     "breaker.failure_threshold: "},
    {"{\"failure_threshold\": 2.5}", WFLO_E_PARSE,
     "breaker.failure_threshold: "},
    {"{\"recovery_timeout\": \"1\"}", WFLO_E_PARSE,
     "breaker.recovery_timeout: "},
    {"{\"window\": 1}", WFLO_E_PARSE, "breaker.window: "},
    {"{\"window\": \"sliding\"}", WFLO_E_INVAL, "breaker.window: "},
    {"{\"expected_errors\": \"ETIMEDOUT\"}", WFLO_E_PARSE,
     "breaker.expected_errors: "},
    {"{\"expected_errors\": [\"NO_SUCH_ERROR\"]}", WFLO_E_INVAL,
     "breaker.expected_errors: "},
    {"{\"expected_errors\": [3]}", WFLO_E_INVAL, "breaker.expected_errors: "},
    {"{\"expected_errors\": [true]}", WFLO_E_PARSE,
     "breaker.expected_errors: "},
    {"{\"failure_threshold\": 0}", WFLO_E_INVAL,
     "breaker.failure_threshold: "},
    {"{\"recovery_timeout\": -1}", WFLO_E_INVAL, "breaker.recovery_timeout: "},
    {"{\"failure_rate_threshold\": 2}", WFLO_E_INVAL,
     "breaker.failure_rate_threshold: "},
    {"{\"window\": \"time\", \"window_size\": 4000}", WFLO_E_INVAL,
     "breaker.window_size: "},
    {"{\"expected_errors\": [-1], \"minimum_calls\": 0}", WFLO_E_INVAL,
     "breaker.minimum_calls: "},
    {"[1]", WFLO_E_PARSE, "breaker: "},
};

static void test_from_json_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < WFLO_ARRAY_SIZE(json_cases); i++) {
    wflo_breaker_config_t c;
    char err[128] = "";
    json_t *j = json_loads(json_cases[i].text, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    memset(&c, 0x5a, sizeof(c));
    if (wflo_breaker_config_from_json(j, &c, err, sizeof(err)) !=
        json_cases[i].rc)
      fail_msg("case %zu (%s): wrong code", i, json_cases[i].text);
    if (strncmp(err, json_cases[i].prefix, strlen(json_cases[i].prefix)))
      fail_msg("case %zu: errbuf \"%s\"", i, err);
    /* Left with the defaults and nothing loaded. */
    assert_int_equal(c.failure_threshold, 5);
    assert_null(c.expected_errors);
    assert_int_equal(c.window, WFLO_WINDOW_CONSECUTIVE);
    assert_int_equal(wflo_test_alloc_live(), 0);
    json_decref(j);
  }
  {
    wflo_breaker_config_t c;
    json_t *j = json_object();
    assert_int_equal(wflo_breaker_config_from_json(NULL, &c, NULL, 0),
                     WFLO_E_INVAL);
    assert_int_equal(wflo_breaker_config_from_json(j, NULL, NULL, 0),
                     WFLO_E_INVAL);
    json_decref(j);
  }
}

/* A list the caller set is not freed by _clear. */
static void test_config_clear_keeps_callers_list(void **state) {
  wflo_breaker_config_t c;
  static const int mine[] = {-1, -2};
  json_t *j = json_pack("{s:[i]}", "expected_errors", -9);
  (void)state;
  assert_int_equal(wflo_breaker_config_from_json(j, &c, NULL, 0), 0);
  json_decref(j);
  c.expected_errors = mine;
  c.expected_errors_count = 2;
  wflo_breaker_config_clear(&c); /* frees the loaded one, not mine */
  assert_int_equal(wflo_test_alloc_live(), 0);
}

/* --- objects and the registry ------------------------------------------------- */

static void test_new_put(void **state) {
  wflo_breaker_t *b = NULL;
  json_t *j;
  (void)state;
  assert_int_equal(wflo_breaker_new("x", NULL, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_new(NULL, NULL, &b), 0); /* unnamed */
  j = wflo_breaker_state_json(b);
  assert_true(json_is_null(json_object_get(j, "name")));
  json_decref(j);
  assert_null(wflo__breaker_name(b));
  /* A private breaker is not in the registry: a get makes another one. */
  wflo_breaker_put(b);
  assert_int_equal(wflo_breaker_new("private", NULL, &b), 0);
  {
    wflo_breaker_t *g;
    assert_int_equal(wflo_breaker_get("private", NULL, &g), 0);
    assert_ptr_not_equal(g, b);
    wflo_breaker_put(g);
  }
  /* The retry module's extra reference. */
  wflo__breaker_ref(b);
  wflo_breaker_put(b);
  assert_string_equal(wflo__breaker_name(b), "private");
  wflo_breaker_put(b);
  wflo_breaker_put(NULL);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_long_and_odd_names(void **state) {
  const char *long_name =
      "a-breaker-name-that-is-longer-than-the-inline-buffer";
  wflo_breaker_t *b, *g;
  json_t *j;
  (void)state;
  assert_int_equal(wflo_breaker_get(long_name, NULL, &b), 0);
  assert_int_equal(wflo_breaker_get(long_name, NULL, &g), 0);
  assert_ptr_equal(b, g);
  assert_string_equal(wflo__breaker_name(b), long_name);
  wflo_breaker_put(g);
  wflo_breaker_put(b);
  /* 23 bytes fit inline, 24 do not. */
  assert_int_equal(wflo_breaker_new("12345678901234567890123", NULL, &b), 0);
  assert_ptr_equal(wflo__breaker_name(b), b->name_buf);
  wflo_breaker_put(b);
  assert_int_equal(wflo_breaker_new("123456789012345678901234", NULL, &b), 0);
  assert_ptr_not_equal(wflo__breaker_name(b), b->name_buf);
  wflo_breaker_put(b);
  /* Invalid UTF-8 in a name is replaced in JSON, never dropped. */
  assert_int_equal(wflo_breaker_new("bad\xff", NULL, &b), 0);
  j = wflo_breaker_state_json(b);
  assert_string_equal(json_string_value(json_object_get(j, "name")),
                      "bad\xef\xbf\xbd");
  json_decref(j);
  wflo_breaker_put(b);
  /* The empty name is a name. */
  assert_int_equal(wflo_breaker_get("", NULL, &b), 0);
  assert_string_equal(wflo__breaker_name(b), "");
  wflo_breaker_put(b);
}

static void test_get_shares_state(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *a, *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 2;
  assert_int_equal(wflo_breaker_get(NULL, &c, &a), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_get("shared", &c, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_get("shared", &c, &a), 0);
  assert_int_equal(wflo_breaker_get("shared", &c, &b), 0);
  assert_ptr_equal(a, b);
  assert_int_equal(call(a, FAIL), FAIL);
  assert_int_equal(jint(b, "failure_count"), 1);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(wflo_breaker_state(a), WFLO_BREAKER_OPEN);
  wflo_breaker_put(a);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
  /* Gone with its last reference: the name starts afresh. */
  assert_int_equal(wflo_breaker_get("shared", &c, &a), 0);
  assert_int_equal(wflo_breaker_state(a), WFLO_BREAKER_CLOSED);
  wflo_breaker_put(a);
  assert_int_equal(wflo_test_events_count("config_conflict"), 0);
}

static bool pred_a(int err, void *ud) {
  (void)ud;
  return err == FAIL;
}

static void test_config_conflict(void **state) {
  wflo_breaker_config_t c, d;
  wflo_breaker_t *a, *b;
  static const int l1[] = {-1, -2, -3}, l2[] = {-3, -1, -2}, l3[] = {-1, -2};
  int ud;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 3;
  c.expected_errors = l1;
  c.expected_errors_count = 3;
  assert_int_equal(wflo_breaker_get("conf", &c, &a), 0);

  /* Same config, the list in another order, max_wait 0 vs the recovery
   * timeout it stands for, and NULL: no conflict. */
  d = c;
  d.expected_errors = l2;
  d.half_open_max_wait = d.recovery_timeout;
  assert_int_equal(wflo_breaker_get("conf", &d, &b), 0);
  wflo_breaker_put(b);
  assert_int_equal(wflo_breaker_get("conf", NULL, &b), 0);
  wflo_breaker_put(b);
  assert_int_equal(wflo_test_events_count("config_conflict"), 0);

  /* Each differing field conflicts; the first config stays. */
  for (int k = 0; k < 8; k++) {
    const wflo_test_event_t *ev;
    d = c;
    switch (k) {
    case 0:
      d.failure_threshold = 4;
      break;
    case 1:
      d.recovery_timeout = 61;
      break;
    case 2:
      d.expected_errors = l3;
      d.expected_errors_count = 2;
      break;
    case 3:
      d.is_failure = pred_a;
      break;
    case 4:
      d.user_data = &ud;
      break;
    case 5:
      d.window = WFLO_WINDOW_COUNT;
      break;
    case 6:
      d.slow_call_duration = 1;
      break;
    case 7:
      d.half_open_max_calls = 2;
      break;
    }
    wflo_test_events_clear();
    assert_int_equal(wflo_breaker_get("conf", &d, &b), 0);
    assert_ptr_equal(a, b);
    assert_int_equal(wflo_test_events_count("config_conflict"), 1);
    ev = wflo_test_events_get("config_conflict", 0);
    assert_int_equal(ev->level, WFLO_LOG_WARN);
    assert_int_equal(json_object_size(ev->fields), 2);
    assert_string_equal(ev_str("config_conflict", 0, "what"), "breaker");
    assert_string_equal(ev_str("config_conflict", 0, "name"), "conf");
    assert_int_equal(jint(b, "failure_threshold"), 3);
    wflo_breaker_put(b);
  }
  /* A bad config is refused even when the name exists. */
  d = c;
  d.failure_threshold = 0;
  assert_int_equal(wflo_breaker_get("conf", &d, &b), WFLO_E_INVAL);
  assert_null(b);
  wflo_breaker_put(a);
}

/* --- the state machine (consecutive mode) ------------------------------------ */

static void test_closed_counts_and_trip(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 3;
  b = make(&c);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(jint(b, "failure_count"), 2);
  /* A success resets the count, a positive result is a success. */
  assert_int_equal(call(b, 7), 7);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(wflo_test_events_count("circuit_breaker_opened"), 0);
  /* The call that trips it returns its own error. */
  g_runs = 0;
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(g_runs, 1);
  assert_state(b, WFLO_BREAKER_OPEN);
  assert_int_equal(jint(b, "failure_count"), 3);
  /* Later calls are refused without running. */
  assert_int_equal(call(b, 0), WFLO_E_BREAKER_OPEN);
  assert_int_equal(call(b, FAIL), WFLO_E_BREAKER_OPEN);
  assert_int_equal(g_runs, 1);
  assert_int_equal(jint(b, "failure_count"), 3);
  assert_int_equal(wflo_test_events_count("circuit_breaker_opened"), 1);
  wflo_breaker_put(b);
}

static void test_open_waits_recovery_timeout(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t p;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 10.0;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(10 * S - 1);
  assert_int_equal(wflo_breaker_acquire(b, &p), WFLO_E_BREAKER_OPEN);
  assert_int_equal(p.state, WFLO_BREAKER_OPEN);
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), WFLO_E_STATE);
  assert_int_equal(wflo_test_events_count("circuit_breaker_half_open"), 0);
  /* Exactly recovery_timeout after opening: the first call moves it to
   * HALF_OPEN and is admitted; no timer was needed. */
  wflo_test_vclock_advance(1);
  assert_state(b, WFLO_BREAKER_OPEN); /* reading the state moves nothing */
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(p.state, WFLO_BREAKER_HALF_OPEN);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(wflo_test_events_count("circuit_breaker_half_open"), 1);
  assert_string_equal(ev_str("circuit_breaker_half_open", 0, "from"), "open");
  assert_string_equal(ev_str("circuit_breaker_half_open", 0, "name"), "svc");
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), 0);
  wflo_breaker_put(b);
}

static void test_half_open_closes_after_successes(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 2;
  c.recovery_timeout = 1.0;
  c.success_threshold = 3;
  b = make(&c);
  trip(b, 2);
  wflo_test_vclock_advance(S);
  assert_int_equal(call(b, 1), 1);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(jint(b, "success_count"), 1);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_int_equal(call(b, 0), 0);
  assert_int_equal(jint(b, "success_count"), 2);
  assert_int_equal(wflo_test_events_count("circuit_breaker_closed"), 0);
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(jint(b, "success_count"), 0);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_int_equal(wflo_test_events_count("circuit_breaker_closed"), 1);
  assert_string_equal(ev_str("circuit_breaker_closed", 0, "from"),
                      "half_open");
  /* Counts start from zero: it takes failure_threshold failures again. */
  assert_int_equal(call(b, FAIL), FAIL);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_state(b, WFLO_BREAKER_OPEN);
  wflo_breaker_put(b);
}

static void test_half_open_failure_reopens(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  const wflo_test_event_t *ev;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 5.0;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(5 * S);
  assert_int_equal(call(b, 0), 0); /* success 1 of 2 */
  wflo_test_vclock_advance(S);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_state(b, WFLO_BREAKER_OPEN);
  assert_int_equal(jint(b, "failure_count"), 1);
  assert_int_equal(wflo_test_events_count("circuit_breaker_opened"), 2);
  ev = wflo_test_events_get("circuit_breaker_opened", 1);
  assert_int_equal(ev->level, WFLO_LOG_ERROR);
  assert_string_equal(ev_str("circuit_breaker_opened", 1, "from"),
                      "half_open");
  assert_int_equal(
      json_integer_value(json_object_get(ev->fields, "failure_count")), 1);
  /* The recovery timeout restarts at the reopening. */
  assert_true(jreal(b, "time_until_half_open") == 5.0);
  wflo_test_vclock_advance(5 * S - 1);
  assert_int_equal(call(b, 0), WFLO_E_BREAKER_OPEN);
  wflo_test_vclock_advance(1);
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  wflo_breaker_put(b);
}

static void test_half_open_max_calls(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t p[4];
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 1.0;
  c.half_open_max_calls = 2;
  c.success_threshold = 5;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  assert_int_equal(wflo_breaker_acquire(b, &p[0]), 0);
  assert_int_equal(wflo_breaker_acquire(b, &p[1]), 0);
  assert_int_equal(p[1].state, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(wflo_breaker_acquire(b, &p[2]), WFLO_E_BREAKER_OPEN);
  assert_int_equal(p[2].state, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(atomic_load(&b->in_use), 2);
  /* A neutral outcome frees its slot and counts nothing. */
  assert_int_equal(wflo_breaker_record(b, &p[0], WFLO_E_CANCELED, -1), 0);
  assert_int_equal(jint(b, "success_count"), 0);
  assert_int_equal(atomic_load(&b->in_use), 1);
  assert_int_equal(wflo_breaker_acquire(b, &p[2]), 0);
  assert_int_equal(wflo_breaker_acquire(b, &p[3]), WFLO_E_BREAKER_OPEN);
  /* A success frees its slot too. */
  assert_int_equal(wflo_breaker_record(b, &p[1], 0, -1), 0);
  assert_int_equal(jint(b, "success_count"), 1);
  assert_int_equal(wflo_breaker_acquire(b, &p[3]), 0);
  assert_int_equal(wflo_breaker_record(b, &p[2], 0, -1), 0);
  assert_int_equal(wflo_breaker_record(b, &p[3], 0, -1), 0);
  assert_int_equal(jint(b, "success_count"), 3);
  assert_int_equal(atomic_load(&b->in_use), 0);
  wflo_breaker_put(b);
}

/* A trial that never reports is reclaimed after half_open_max_wait. */
static void test_half_open_reclaim(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t lost, p;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 1.0;
  c.half_open_max_wait = 5.0;
  c.success_threshold = 2;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  assert_int_equal(wflo_breaker_acquire(b, &lost), 0);
  wflo_test_vclock_advance(5 * S - 1000000); /* 1 ms short */
  assert_int_equal(wflo_breaker_acquire(b, &p), WFLO_E_BREAKER_OPEN);
  wflo_test_vclock_advance(1000000);
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(p.state, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(atomic_load(&b->in_use), 1);
  /* The lost trial reports late: it changes nothing (a failure would have
   * reopened the circuit) and does not free the new trial's slot. */
  assert_int_equal(wflo_breaker_record(b, &lost, FAIL, -1), 0);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(atomic_load(&b->in_use), 1);
  assert_int_equal(wflo_breaker_record(b, &lost, FAIL, -1), WFLO_E_STATE);
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), 0);
  assert_int_equal(jint(b, "success_count"), 1);
  assert_int_equal(atomic_load(&b->in_use), 0);
  wflo_breaker_put(b);

  /* The default wait is the recovery timeout. */
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 2.0;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(2 * S);
  assert_int_equal(wflo_breaker_acquire(b, &lost), 0);
  wflo_test_vclock_advance(2 * S - 1000000);
  assert_int_equal(wflo_breaker_acquire(b, &p), WFLO_E_BREAKER_OPEN);
  wflo_test_vclock_advance(1000000);
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), 0);
  assert_int_equal(wflo_breaker_record(b, &lost, 0, -1), 0);
  assert_int_equal(jint(b, "success_count"), 1);
  wflo_breaker_put(b);
}

/* Trial slots outlive state changes: a trial admitted in one HALF_OPEN that
 * is still running when the next HALF_OPEN starts keeps its slot. */
static void test_slots_survive_transitions(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t a, b2, x;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 1.0;
  c.half_open_max_calls = 2;
  c.half_open_max_wait = 100.0;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  assert_int_equal(wflo_breaker_acquire(b, &a), 0);
  assert_int_equal(wflo_breaker_acquire(b, &b2), 0);
  assert_int_equal(wflo_breaker_record(b, &a, FAIL, -1), 0); /* reopens */
  assert_state(b, WFLO_BREAKER_OPEN);
  wflo_test_vclock_advance(S);
  /* b2 still runs: one slot left in the new HALF_OPEN. */
  assert_int_equal(wflo_breaker_acquire(b, &a), 0);
  assert_int_equal(wflo_breaker_acquire(b, &x), WFLO_E_BREAKER_OPEN);
  /* b2's result is stale (another generation) but frees its slot. */
  assert_int_equal(wflo_breaker_record(b, &b2, FAIL, -1), 0);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(wflo_breaker_acquire(b, &x), 0);
  assert_int_equal(wflo_breaker_record(b, &x, 0, -1), 0);
  assert_int_equal(wflo_breaker_record(b, &a, 0, -1), 0);
  assert_state(b, WFLO_BREAKER_CLOSED);
  wflo_breaker_put(b);
}

static void test_stale_results(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t old, p;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 2;
  c.recovery_timeout = 1.0;
  c.success_threshold = 1;
  b = make(&c);
  assert_int_equal(wflo_breaker_acquire(b, &old), 0);
  trip(b, 2);
  /* A CLOSED-era failure arriving while OPEN changes nothing. */
  assert_int_equal(wflo_breaker_record(b, &old, FAIL, -1), 0);
  assert_int_equal(jint(b, "failure_count"), 2);
  assert_state(b, WFLO_BREAKER_OPEN);
  /* Nor once the circuit has closed again (a new generation). */
  assert_int_equal(wflo_breaker_acquire(b, &old), WFLO_E_BREAKER_OPEN);
  wflo_test_vclock_advance(S);
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(wflo_breaker_acquire(b, &old), 0);
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  wflo_breaker_reset(b);
  assert_int_equal(wflo_breaker_record(b, &old, FAIL, -1), 0);
  assert_int_equal(wflo_breaker_record(b, &p, FAIL, -1), 0);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_state(b, WFLO_BREAKER_CLOSED);
  /* A stale success does not reset a current failure count either. */
  assert_int_equal(wflo_breaker_acquire(b, &old), 0);
  wflo_breaker_reset(b);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(wflo_breaker_record(b, &old, 0, -1), 0);
  assert_int_equal(jint(b, "failure_count"), 1);
  wflo_breaker_put(b);
}

static void test_permit_misuse(void **state) {
  wflo_breaker_t *b = make(NULL), *other = make(NULL);
  wflo_breaker_permit_t p, never;
  (void)state;
  assert_int_equal(wflo_breaker_acquire(NULL, &p), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), WFLO_E_STATE);
  assert_int_equal(wflo_breaker_acquire(b, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(wflo_breaker_record(NULL, &p, 0, -1), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_record(b, NULL, 0, -1), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_record(other, &p, 0, -1), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), 0);
  /* Twice: WFLO_E_STATE, the stale-or-not first one returned 0. */
  assert_int_equal(wflo_breaker_record(b, &p, 0, -1), WFLO_E_STATE);
  assert_int_equal(wflo_breaker_record(b, &p, FAIL, -1), WFLO_E_STATE);
  assert_int_equal(wflo_breaker_record_timed(&p, 0), WFLO_E_STATE);
  assert_int_equal(wflo_breaker_record_timed(NULL, 0), WFLO_E_INVAL);
  /* A permit that was never acquired. */
  memset(&never, 0, sizeof(never));
  assert_int_equal(wflo_breaker_record(b, &never, 0, -1), WFLO_E_STATE);
  /* A second record of a failure changes nothing. */
  assert_int_equal(wflo_breaker_acquire(b, &p), 0);
  assert_int_equal(wflo_breaker_record(b, &p, FAIL, -1), 0);
  assert_int_equal(wflo_breaker_record(b, &p, FAIL, -1), WFLO_E_STATE);
  assert_int_equal(jint(b, "failure_count"), 1);
  /* wflo_breaker_call argument checks. */
  assert_int_equal(wflo_breaker_call(NULL, op, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_call(b, NULL, NULL), WFLO_E_INVAL);
  wflo_breaker_abandon(NULL);
  wflo_breaker_abandon(&p); /* already recorded: nothing */
  assert_int_equal(jint(b, "failure_count"), 1);
  wflo_breaker_put(b);
  wflo_breaker_put(other);
}

/* --- what counts as a failure ------------------------------------------------- */

static const int neutral_codes[] = {WFLO_E_CANCELED, WFLO_E_LOCK_TIMEOUT,
                                    WFLO_E_QUEUE_FULL, WFLO_E_BUDGET_EXCEEDED,
                                    WFLO_E_BREAKER_OPEN};
static const int failure_codes[] = {
    WFLO_E_INVAL,     WFLO_E_NOMEM, WFLO_E_STATE, WFLO_E_TIMEOUT,
    UV_ECONNRESET,    -1,           WFLO_E_PARSE, WFLO_E_RATE_LIMITED,
    WFLO_E_NOT_FOUND, INT_MIN};

static int g_base_fail = FAIL; /* a code the breaker under test counts */

/* Records err on a CLOSED breaker with one failure counted and says what
 * it was: 0 success, 1 failure, 2 neutral. */
static int kind_of(wflo_breaker_t *b, int err) {
  int n;
  wflo_breaker_reset(b);
  assert_int_equal(call(b, g_base_fail), g_base_fail);
  assert_int_equal(jint(b, "failure_count"), 1);
  assert_int_equal(call(b, err), err);
  n = (int)jint(b, "failure_count");
  return n == 0 ? 0 : n == 2 ? 1 : 2;
}

static void test_default_classification(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 100;
  b = make(&c);
  for (size_t i = 0; i < WFLO_ARRAY_SIZE(neutral_codes); i++)
    assert_int_equal(kind_of(b, neutral_codes[i]), 2);
  for (size_t i = 0; i < WFLO_ARRAY_SIZE(failure_codes); i++)
    assert_int_equal(kind_of(b, failure_codes[i]), 1);
  assert_int_equal(kind_of(b, 0), 0);
  assert_int_equal(kind_of(b, 1), 0);
  assert_int_equal(kind_of(b, INT_MAX), 0);
  wflo_breaker_put(b);
}

static void test_expected_errors(void **state) {
  wflo_breaker_config_t c;
  int list[] = {UV_ETIMEDOUT, WFLO_E_CANCELED, -7};
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 100;
  c.expected_errors = list;
  c.expected_errors_count = 3;
  b = make(&c);
  list[0] = -100; /* the breaker keeps its own copy */
  g_base_fail = -7;
  assert_int_equal(kind_of(b, UV_ETIMEDOUT), 1);
  assert_int_equal(kind_of(b, WFLO_E_CANCELED), 1); /* listed: counts */
  assert_int_equal(kind_of(b, -7), 1);
  assert_int_equal(kind_of(b, UV_ECONNRESET), 2); /* unlisted: neutral */
  assert_int_equal(kind_of(b, -100), 2);
  assert_int_equal(kind_of(b, WFLO_E_INVAL), 2);
  assert_int_equal(kind_of(b, 0), 0);
  g_base_fail = FAIL;
  wflo_breaker_put(b);
}

static int g_pred_calls;

/* Failures: FAIL and odd codes. */
static bool pred_odd(int err, void *ud) {
  g_pred_calls++;
  assert_ptr_equal(ud, &g_pred_calls);
  return err == FAIL || (-(long)err) % 2 == 1;
}

static void test_predicate(void **state) {
  wflo_breaker_config_t c;
  static const int list[] = {-2};
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 100;
  c.is_failure = pred_odd;
  c.user_data = &g_pred_calls;
  c.expected_errors = list; /* ignored: the predicate decides */
  c.expected_errors_count = 1;
  b = make(&c);
  g_pred_calls = 0;
  assert_int_equal(kind_of(b, -3), 1);
  assert_int_equal(kind_of(b, -2), 2);
  /* A default-neutral code counts when the predicate says so. */
  assert_int_equal(WFLO_E_CANCELED % 2 != 0, 1);
  assert_int_equal(kind_of(b, WFLO_E_CANCELED), 1);
  assert_int_equal(WFLO_E_BREAKER_OPEN % 2, 0);
  assert_int_equal(kind_of(b, WFLO_E_BREAKER_OPEN), 2);
  assert_int_equal(kind_of(b, -4), 2);
  g_pred_calls = 0;
  assert_int_equal(kind_of(b, 0), 0);
  assert_int_equal(kind_of(b, 5), 0);
  /* Called once per negative result (kind_of's own FAIL included), never
   * for a success. */
  assert_int_equal(g_pred_calls, 2);
  wflo_breaker_put(b);
}

/* Neutral outcomes in HALF_OPEN free the slot and count nothing. */
static void test_neutral_in_half_open(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 1.0;
  c.success_threshold = 1;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  for (size_t i = 0; i < WFLO_ARRAY_SIZE(neutral_codes); i++) {
    assert_int_equal(call(b, neutral_codes[i]), neutral_codes[i]);
    assert_state(b, WFLO_BREAKER_HALF_OPEN);
    assert_int_equal(atomic_load(&b->in_use), 0);
  }
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_CLOSED);
  wflo_breaker_put(b);
}

/* --- reset and force ------------------------------------------------------------ */

static void test_reset(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 2;
  b = make(&c);
  assert_int_equal(call(b, FAIL), FAIL);
  wflo_breaker_reset(b); /* CLOSED: zeroes the count, no event */
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_int_equal(wflo_test_events_count("circuit_breaker_closed"), 0);
  trip(b, 2);
  wflo_test_vclock_advance(3 * S);
  wflo_breaker_reset(b);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_true(jreal(b, "open_for_seconds") == 0.0);
  assert_int_equal(wflo_test_events_count("circuit_breaker_closed"), 1);
  assert_string_equal(ev_str("circuit_breaker_closed", 0, "from"), "open");
  assert_int_equal(call(b, 0), 0);
  /* From HALF_OPEN too. */
  trip(b, 2);
  wflo_test_vclock_advance(60 * S);
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  wflo_breaker_reset(b);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(jint(b, "success_count"), 0);
  assert_string_equal(ev_str("circuit_breaker_closed", 1, "from"),
                      "half_open");
  wflo_breaker_reset(NULL);
  wflo_breaker_put(b);
}

static void test_force(void **state) {
  wflo_breaker_t *b = make(NULL);
  const wflo_test_event_t *ev;
  (void)state;
  assert_int_equal(wflo_breaker_force(NULL, WFLO_BREAKER_OPEN, 1),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_force(b, (wflo_breaker_state_t)3, 1),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_force(b, (wflo_breaker_state_t)-1, 1),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, -1), WFLO_E_INVAL);
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, NAN),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_test_events_count(NULL), 0);
  /* A peer's "open for 10 s" replaces the 60 s recovery timeout once. */
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, 10.0), 0);
  assert_state(b, WFLO_BREAKER_OPEN);
  assert_int_equal(jint(b, "failure_count"), 0);
  assert_true(jreal(b, "time_until_half_open") == 10.0);
  ev = wflo_test_events_get("circuit_breaker_opened", 0);
  assert_non_null(ev);
  assert_string_equal(ev_str("circuit_breaker_opened", 0, "from"), "closed");
  assert_int_equal(
      json_integer_value(json_object_get(ev->fields, "failure_count")), 0);
  wflo_test_vclock_advance(10 * S - 1);
  assert_int_equal(call(b, 0), WFLO_E_BREAKER_OPEN);
  wflo_test_vclock_advance(1);
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  /* Forcing the state it is in starts it anew (and says so). */
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_HALF_OPEN, -5), 0);
  assert_int_equal(jint(b, "success_count"), 0);
  assert_int_equal(wflo_test_events_count("circuit_breaker_half_open"), 2);
  assert_string_equal(ev_str("circuit_breaker_half_open", 1, "from"),
                      "half_open");
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_CLOSED, NAN), 0);
  assert_state(b, WFLO_BREAKER_CLOSED);
  assert_int_equal(wflo_test_events_count("circuit_breaker_closed"), 1);
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, 0.0), 0);
  assert_int_equal(call(b, 0), 0); /* until 0: the next call probes */
  wflo_breaker_put(b);
}

/* --- JSON state and events ------------------------------------------------------ */

static void check_keys(json_t *j) {
  static const char *const ints[] = {"failure_count", "failure_threshold",
                                     "success_count", "success_threshold"};
  static const char *const reals[] = {"recovery_timeout", "open_for_seconds",
                                      "time_until_half_open"};
  assert_int_equal(json_object_size(j), 9);
  assert_true(json_is_string(json_object_get(j, "name")));
  assert_true(json_is_string(json_object_get(j, "state")));
  for (size_t i = 0; i < 4; i++)
    assert_true(json_is_integer(json_object_get(j, ints[i])));
  for (size_t i = 0; i < 3; i++)
    assert_true(json_is_real(json_object_get(j, reals[i])));
}

static void test_state_json(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  json_t *j;
  (void)state;
  assert_null(wflo_breaker_state_json(NULL));
  wflo_breaker_config_init(&c);
  c.failure_threshold = 3;
  c.success_threshold = 4;
  c.recovery_timeout = 10.0;
  b = make(&c);
  assert_int_equal(call(b, FAIL), FAIL);
  assert_int_equal(call(b, FAIL), FAIL);
  j = wflo_breaker_state_json(b);
  check_keys(j);
  assert_string_equal(json_string_value(json_object_get(j, "name")), "svc");
  assert_string_equal(json_string_value(json_object_get(j, "state")),
                      "closed");
  assert_int_equal(json_integer_value(json_object_get(j, "failure_count")), 2);
  assert_int_equal(json_integer_value(json_object_get(j, "failure_threshold")),
                   3);
  assert_int_equal(json_integer_value(json_object_get(j, "success_count")), 0);
  assert_int_equal(json_integer_value(json_object_get(j, "success_threshold")),
                   4);
  assert_true(json_real_value(json_object_get(j, "recovery_timeout")) == 10.0);
  assert_true(json_real_value(json_object_get(j, "open_for_seconds")) == 0);
  assert_true(json_real_value(json_object_get(j, "time_until_half_open")) ==
              0);
  json_decref(j);

  assert_int_equal(call(b, FAIL), FAIL);
  wflo_test_vclock_advance(3 * S);
  j = wflo_breaker_state_json(b);
  check_keys(j);
  assert_string_equal(json_string_value(json_object_get(j, "state")), "open");
  assert_int_equal(json_integer_value(json_object_get(j, "failure_count")), 3);
  assert_true(json_real_value(json_object_get(j, "open_for_seconds")) == 3.0);
  assert_true(json_real_value(json_object_get(j, "time_until_half_open")) ==
              7.0);
  json_decref(j);

  /* Past the timeout but no call yet: still OPEN, nothing left to wait. */
  wflo_test_vclock_advance(8 * S);
  assert_true(jreal(b, "time_until_half_open") == 0.0);
  assert_true(jreal(b, "open_for_seconds") == 11.0);
  assert_int_equal(call(b, 0), 0);
  wflo_test_vclock_advance(S);
  j = wflo_breaker_state_json(b);
  check_keys(j);
  assert_string_equal(json_string_value(json_object_get(j, "state")),
                      "half_open");
  assert_int_equal(json_integer_value(json_object_get(j, "success_count")), 1);
  assert_int_equal(json_integer_value(json_object_get(j, "failure_count")), 0);
  assert_true(json_real_value(json_object_get(j, "open_for_seconds")) == 12.0);
  assert_true(json_real_value(json_object_get(j, "time_until_half_open")) ==
              0.0);
  json_decref(j);
  wflo_breaker_put(b);
}

static void test_state_names(void **state) {
  (void)state;
  assert_string_equal(wflo_breaker_state_name(WFLO_BREAKER_CLOSED), "closed");
  assert_string_equal(wflo_breaker_state_name(WFLO_BREAKER_OPEN), "open");
  assert_string_equal(wflo_breaker_state_name(WFLO_BREAKER_HALF_OPEN),
                      "half_open");
  assert_string_equal(wflo_breaker_state_name((wflo_breaker_state_t)9),
                      "unknown");
  assert_int_equal(wflo_breaker_state(NULL), WFLO_BREAKER_CLOSED);
}

static void test_event_fields_and_levels(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  const wflo_test_event_t *ev;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 1.0;
  c.success_threshold = 1;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  assert_int_equal(call(b, 0), 0);
  assert_int_equal(wflo_test_events_count(NULL), 3);
  ev = wflo_test_events_get(NULL, 0);
  assert_string_equal(ev->name, "circuit_breaker_opened");
  assert_int_equal(ev->level, WFLO_LOG_ERROR);
  assert_int_equal(json_object_size(ev->fields), 3);
  assert_string_equal(ev_str(NULL, 0, "name"), "svc");
  assert_string_equal(ev_str(NULL, 0, "from"), "closed");
  assert_int_equal(
      json_integer_value(json_object_get(ev->fields, "failure_count")), 1);
  ev = wflo_test_events_get(NULL, 1);
  assert_string_equal(ev->name, "circuit_breaker_half_open");
  assert_int_equal(ev->level, WFLO_LOG_INFO);
  assert_int_equal(json_object_size(ev->fields), 2);
  assert_string_equal(ev_str(NULL, 1, "from"), "open");
  ev = wflo_test_events_get(NULL, 2);
  assert_string_equal(ev->name, "circuit_breaker_closed");
  assert_int_equal(ev->level, WFLO_LOG_INFO);
  assert_int_equal(json_object_size(ev->fields), 2);
  assert_string_equal(ev_str(NULL, 2, "from"), "half_open");
  assert_string_equal(ev_str(NULL, 2, "name"), "svc");

  /* At warn, only the opening reaches the handler. */
  wflo_test_events_clear();
  wflo_set_log_level(WFLO_LOG_WARN);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  assert_int_equal(call(b, 0), 0);
  assert_int_equal(wflo_test_events_count(NULL), 1);
  assert_int_equal(wflo_test_events_count("circuit_breaker_opened"), 1);
  wflo_set_log_level(WFLO_LOG_OFF);
  trip(b, 1);
  assert_int_equal(wflo_test_events_count(NULL), 1);
  wflo_breaker_put(b);

  /* An unnamed breaker's events carry "name": null. */
  wflo_set_log_level(WFLO_LOG_DEBUG);
  wflo_test_events_clear();
  assert_int_equal(wflo_breaker_new(NULL, &c, &b), 0);
  trip(b, 1);
  ev = wflo_test_events_get("circuit_breaker_opened", 0);
  assert_true(json_is_null(json_object_get(ev->fields, "name")));
  wflo_breaker_put(b);
}

/* An event handler may call into the breaker that emitted the event. */
static wflo_breaker_t *g_reentrant;
static int g_reentrant_seen;

static void reentrant_handler(const wflo_event_t *ev, void *ud) {
  json_t *j;
  (void)ud;
  if (strcmp(ev->name, "circuit_breaker_opened") != 0)
    return;
  g_reentrant_seen = wflo_breaker_state(g_reentrant) == WFLO_BREAKER_OPEN;
  j = wflo_breaker_state_json(g_reentrant);
  g_reentrant_seen += j != NULL;
  json_decref(j);
  wflo_breaker_reset(g_reentrant);
}

static void test_event_handler_reenters(void **state) {
  wflo_breaker_config_t c;
  (void)state;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.window = WFLO_WINDOW_COUNT;
  c.window_size = 1;
  c.minimum_calls = 1;
  for (int mode = 0; mode < 2; mode++) {
    c.window = mode ? WFLO_WINDOW_COUNT : WFLO_WINDOW_CONSECUTIVE;
    g_reentrant = make(&c);
    g_reentrant_seen = 0;
    wflo_set_event_handler(reentrant_handler, NULL);
    assert_int_equal(call(g_reentrant, FAIL), FAIL);
    wflo_test_events_install();
    assert_int_equal(g_reentrant_seen, 2);
    assert_state(g_reentrant, WFLO_BREAKER_CLOSED);
    wflo_breaker_put(g_reentrant);
  }
}

/* --- WFLO_WITH_BREAKER ------------------------------------------------------------ */

/* A breaker in HALF_OPEN with one trial slot. */
static wflo_breaker_t *half_open_breaker(void) {
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  c.recovery_timeout = 1.0;
  c.success_threshold = 3;
  b = make(&c);
  trip(b, 1);
  wflo_test_vclock_advance(S);
  assert_int_equal(call(b, 0), 0);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  return b;
}

static int with_return(wflo_breaker_t *b, int *ran) {
  int rc;
  WFLO_WITH_BREAKER(b, rc) {
    *ran = 1;
    return 42; /* leaves the function from inside the block */
  }
  return rc;
}

static void test_with_breaker_exits(void **state) {
  wflo_breaker_t *b;
  int rc = -1, ran, loops;
  (void)state;

  /* Normal end: rc is recorded (a failure here reopens the circuit). */
  b = half_open_breaker();
  ran = 0;
  WFLO_WITH_BREAKER(b, rc) {
    assert_int_equal(rc, 0);
    ran++;
    rc = FAIL;
  }
  assert_int_equal(ran, 1);
  assert_int_equal(rc, FAIL);
  assert_state(b, WFLO_BREAKER_OPEN);
  /* Refused: the body does not run, rc says why. */
  ran = 0;
  WFLO_WITH_BREAKER(b, rc) { ran++; }
  assert_int_equal(ran, 0);
  assert_int_equal(rc, WFLO_E_BREAKER_OPEN);
  wflo_breaker_put(b);

  /* break: a neutral outcome, the slot is free, no count changed. */
  b = half_open_breaker();
  loops = 0;
  for (int i = 0; i < 3; i++) {
    loops++;
    WFLO_WITH_BREAKER(b, rc) {
      rc = FAIL;
      break; /* leaves the macro, not the for loop */
    }
  }
  assert_int_equal(loops, 3);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(jint(b, "success_count"), 1);
  assert_int_equal(atomic_load(&b->in_use), 0);

  /* goto out of the block: neutral. */
  WFLO_WITH_BREAKER(b, rc) {
    rc = FAIL;
    goto out;
  }
  fail_msg("goto did not leave the block");
out:
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(atomic_load(&b->in_use), 0);

  /* return from inside: neutral. */
  ran = 0;
  assert_int_equal(with_return(b, &ran), 42);
  assert_int_equal(ran, 1);
  assert_state(b, WFLO_BREAKER_HALF_OPEN);
  assert_int_equal(atomic_load(&b->in_use), 0);
  assert_int_equal(jint(b, "success_count"), 1);

  /* continue ends the block normally: rc is recorded. */
  WFLO_WITH_BREAKER(b, rc) {
    rc = 0;
    continue;
  }
  assert_int_equal(jint(b, "success_count"), 2);
  assert_int_equal(atomic_load(&b->in_use), 0);

  /* Nested uses on one breaker each record their own outcome. */
  {
    wflo_breaker_t *inner = make(NULL);
    int rc2 = -1;
    WFLO_WITH_BREAKER(b, rc) {
      WFLO_WITH_BREAKER(inner, rc2) { rc2 = FAIL; }
      rc = 0;
    }
    assert_int_equal(rc2, FAIL);
    assert_int_equal(jint(inner, "failure_count"), 1);
    wflo_breaker_put(inner);
  }
  assert_state(b, WFLO_BREAKER_CLOSED); /* the third success */
  wflo_breaker_put(b);

  /* A NULL breaker: the body is skipped with WFLO_E_INVAL. */
  ran = 0;
  b = NULL;
  WFLO_WITH_BREAKER(b, rc) { ran++; }
  assert_int_equal(ran, 0);
  assert_int_equal(rc, WFLO_E_INVAL);
}

/* The breaker expression is evaluated once. */
static int g_evals;
static wflo_breaker_t *g_eval_b;
static wflo_breaker_t *eval_b(void) {
  g_evals++;
  return g_eval_b;
}

static void test_with_breaker_evaluates_once(void **state) {
  int rc;
  (void)state;
  g_eval_b = make(NULL);
  g_evals = 0;
  WFLO_WITH_BREAKER(eval_b(), rc) { rc = FAIL; }
  assert_int_equal(g_evals, 1);
  assert_int_equal(jint(g_eval_b, "failure_count"), 1);
  wflo_breaker_put(g_eval_b);
}

/* --- with retry ----------------------------------------------------------- */

/* The original design's order, breaker outside retry: the breaker sees one
 * outcome per retried operation. And the other order: a refusal inside the
 * retry is not retried (WFLO_E_BREAKER_OPEN is a libwflo verdict). */
static void test_with_retry(void **state) {
  wflo_retry_policy_t pol;
  wflo_breaker_config_t c;
  wflo_breaker_t *b;
  int rc, n = 0;
  (void)state;
  wflo_retry_policy_init(&pol);
  pol.max_retries = 2;
  pol.base_delay = 0.1;
  pol.jitter = false;
  wflo_breaker_config_init(&c);
  c.failure_threshold = 1;
  b = make(&c);

  WFLO_WITH_BREAKER(b, rc) {
    WFLO_RETRY(&pol, rc) { rc = ++n < 3 ? FAIL : 0; }
  }
  assert_int_equal(rc, 0);
  assert_int_equal(n, 3); /* two failures retried away: not counted */
  assert_state(b, WFLO_BREAKER_CLOSED);
  n = 0;
  WFLO_WITH_BREAKER(b, rc) {
    WFLO_RETRY(&pol, rc) {
      n++;
      rc = FAIL;
    }
  }
  assert_int_equal(rc, FAIL);
  assert_int_equal(n, 3);
  assert_state(b, WFLO_BREAKER_OPEN); /* one exhausted retry, one failure */
  n = 0;
  WFLO_WITH_BREAKER(b, rc) {
    WFLO_RETRY(&pol, rc) { n++; }
  }
  assert_int_equal(rc, WFLO_E_BREAKER_OPEN);
  assert_int_equal(n, 0);

  /* Breaker inside retry: the refusal ends the retry after one attempt. */
  n = 0;
  WFLO_RETRY(&pol, rc) {
    n++;
    WFLO_WITH_BREAKER(b, rc) { rc = 0; }
  }
  assert_int_equal(rc, WFLO_E_BREAKER_OPEN);
  assert_int_equal(n, 1);
  wflo_breaker_put(b);
}

/* --- out of memory -------------------------------------------------------------- */

static int oom_new(void *ud) {
  wflo_breaker_config_t *c = ud;
  wflo_breaker_t *b = NULL;
  int rc = wflo_breaker_new("a-name-too-long-for-the-inline-buffer", c, &b);
  if (rc != 0) {
    assert_null(b);
    return rc;
  }
  wflo_breaker_put(b);
  return 0;
}

static int oom_get(void *ud) {
  wflo_breaker_config_t *c = ud;
  wflo_breaker_t *a = NULL, *b = NULL;
  int rc = wflo_breaker_get("oom-get", c, &a);
  if (rc != 0)
    return rc;
  rc = wflo_breaker_get("oom-get", c, &b); /* existing: allocates nothing */
  assert_int_equal(rc, 0);
  assert_ptr_equal(a, b);
  wflo_breaker_put(b);
  wflo_breaker_put(a);
  return 0;
}

static int oom_from_json(void *ud) {
  wflo_breaker_config_t c;
  int rc = wflo_breaker_config_from_json(ud, &c, NULL, 0);
  if (rc != 0) {
    assert_null(c.expected_errors);
    return rc;
  }
  wflo_breaker_config_clear(&c);
  return 0;
}

static int oom_state_json(void *ud) {
  wflo_breaker_t *b;
  json_t *j;
  int rc = wflo_breaker_new("bad-utf8-\xfe", ud, &b);
  if (rc != 0)
    return rc;
  j = wflo_breaker_state_json(b);
  wflo_breaker_put(b);
  if (j == NULL)
    return WFLO_E_NOMEM;
  json_decref(j);
  return 0;
}

static void test_oom(void **state) {
  wflo_breaker_config_t c;
  static const int list[] = {-1, -2};
  json_t *j;
  (void)state;
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_breaker_config_init(&c);
  c.expected_errors = list;
  c.expected_errors_count = 2;
  for (int w = WFLO_WINDOW_CONSECUTIVE; w <= WFLO_WINDOW_TIME; w++) {
    c.window = (wflo_window_t)w;
    wflo_test_oom_loop(oom_new, &c, 0);
    wflo_test_oom_loop_ex(oom_new, &c, 0, WFLO_TEST_FAIL_AFTER);
    wflo_test_oom_loop(oom_get, &c, 0);
    wflo_test_oom_loop(oom_state_json, &c, 0);
  }
  wflo_test_oom_loop(oom_get, NULL, 0);
  j = json_pack("{s:[s,i,s], s:s}", "expected_errors", "ETIMEDOUT", -3,
                "WFLO_E_TIMEOUT", "window", "count");
  wflo_test_oom_loop(oom_from_json, j, 0);
  json_decref(j);
}

/* jansson's own allocations fail too: the Nth one, for every N. */
static atomic_long g_jfail_at, g_jcount, g_jlive;

static void *jfail_malloc(size_t n) {
  if (atomic_fetch_add(&g_jcount, 1) + 1 == atomic_load(&g_jfail_at))
    return NULL;
  atomic_fetch_add(&g_jlive, 1);
  return malloc(n);
}

static void jfail_free(void *p) {
  if (p != NULL)
    atomic_fetch_sub(&g_jlive, 1);
  free(p);
}

static void test_state_json_jansson_oom(void **state) {
  wflo_breaker_t *b = make(NULL);
  bool failed_once = false;
  (void)state;
  wflo_set_log_level(WFLO_LOG_OFF);
  json_set_alloc_funcs(jfail_malloc, jfail_free);
  for (long n = 1;; n++) {
    json_t *j;
    atomic_store(&g_jcount, 0);
    atomic_store(&g_jlive, 0);
    atomic_store(&g_jfail_at, n);
    j = wflo_breaker_state_json(b);
    if (j == NULL) {
      failed_once = true;
      assert_int_equal(atomic_load(&g_jlive), 0); /* nothing half-built */
      continue;
    }
    json_decref(j);
    assert_int_equal(atomic_load(&g_jlive), 0);
    if (atomic_load(&g_jcount) < n)
      break; /* nothing failed: every N was covered */
  }
  json_set_alloc_funcs(malloc, free);
  assert_true(failed_once);
  wflo_breaker_put(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      TEST(test_defaults),
      TEST(test_bad_configs),
      TEST(test_edge_configs_valid),
      TEST(test_from_json),
      TEST(test_from_json_errors),
      TEST(test_config_clear_keeps_callers_list),
      TEST(test_new_put),
      TEST(test_long_and_odd_names),
      TEST(test_get_shares_state),
      TEST(test_config_conflict),
      TEST(test_closed_counts_and_trip),
      TEST(test_open_waits_recovery_timeout),
      TEST(test_half_open_closes_after_successes),
      TEST(test_half_open_failure_reopens),
      TEST(test_half_open_max_calls),
      TEST(test_half_open_reclaim),
      TEST(test_slots_survive_transitions),
      TEST(test_stale_results),
      TEST(test_permit_misuse),
      TEST(test_default_classification),
      TEST(test_expected_errors),
      TEST(test_predicate),
      TEST(test_neutral_in_half_open),
      TEST(test_reset),
      TEST(test_force),
      TEST(test_state_json),
      TEST(test_state_names),
      TEST(test_event_fields_and_levels),
      TEST(test_event_handler_reenters),
      TEST(test_with_breaker_exits),
      TEST(test_with_breaker_evaluates_once),
      TEST(test_with_retry),
      TEST(test_oom),
      TEST(test_state_json_jansson_oom),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
