/* Tests of the metrics core and its exposition (src/metrics.c,
 * src/metrics_prom.c): the family table, counters, gauges, histograms,
 * series lifetime, the per-thread label cache, disabling, the Prometheus
 * text format (checked line by line and by promtool), JSON, threads. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "internal/metrics.h"

/* --- helpers --------------------------------------------------------------------- */

static char *exposition(void) {
  char *t = wflo_metrics_prometheus_text(NULL);
  assert_non_null(t);
  return t;
}

/* true when `line` is a whole line of text. */
static bool has_line(const char *text, const char *line) {
  size_t n = strlen(line);
  const char *p = text;
  while ((p = strstr(p, line)) != NULL) {
    if ((p == text || p[-1] == '\n') && p[n] == '\n')
      return true;
    p += 1;
  }
  return false;
}

static void assert_line(const char *text, const char *line) {
  if (!has_line(text, line))
    fail_msg("missing line: %s\n--- exposition ---\n%s", line, text);
}

static size_t count_substr(const char *text, const char *needle) {
  size_t n = 0;
  const char *p = text;
  while ((p = strstr(p, needle)) != NULL) {
    n++;
    p += strlen(needle);
  }
  return n;
}

/* Counter series outlive their holders until a reset: reset, then let the
 * harness check that nothing is left. */
static int teardown(void **state) {
  wflo_metrics_enable(true);
  wflo_metrics_reset();
  return wflo_test_teardown(state);
}

/* --- the family table -------------------------------------------------------------- */

static void test_family_table(void **state) {
  static const struct {
    wflo__metric_id_t id;
    const char *name;
    wflo__metric_type_t type;
    const char *labels;
  } expect[] = {
      {WFLO__M_RETRY_ATTEMPTS, "wflo_retry_attempts_total", WFLO__MT_COUNTER,
       "policy,result"},
      {WFLO__M_RETRY_DELAY, "wflo_retry_delay_seconds", WFLO__MT_HISTOGRAM,
       ""},
      {WFLO__M_BREAKER_STATE, "wflo_circuit_breaker_state", WFLO__MT_GAUGE,
       "name"},
      {WFLO__M_BREAKER_TRANSITIONS, "wflo_circuit_breaker_transitions_total",
       WFLO__MT_COUNTER, "name,from,to"},
      {WFLO__M_BREAKER_CALLS, "wflo_circuit_breaker_calls_total",
       WFLO__MT_COUNTER, "name,outcome"},
      {WFLO__M_LOCK_WAIT, "wflo_lock_wait_seconds", WFLO__MT_HISTOGRAM,
       "resource"},
      {WFLO__M_LOCK_CONTENTION_RATE, "wflo_lock_contention_rate",
       WFLO__MT_GAUGE, "resource"},
      {WFLO__M_LOCK_HOLDERS, "wflo_lock_holders", WFLO__MT_GAUGE, "resource"},
      {WFLO__M_LOCK_TIMEOUTS, "wflo_lock_timeouts_total", WFLO__MT_COUNTER,
       "resource"},
      {WFLO__M_BUDGET_SPENT, "wflo_budget_spent_usd_total", WFLO__MT_COUNTER,
       "workflow"},
      {WFLO__M_BUDGET_REFUSALS, "wflo_budget_refusals_total", WFLO__MT_COUNTER,
       "workflow"},
      {WFLO__M_LLM_TOKENS, "wflo_llm_tokens_total", WFLO__MT_COUNTER,
       "model,kind"},
  };
  size_t i, k;
  (void)state;
  assert_int_equal(WFLO_ARRAY_SIZE(expect), WFLO__M_COUNT);
  for (i = 0; i < WFLO_ARRAY_SIZE(expect); i++) {
    const wflo__metric_family_t *f = wflo__metric_family(expect[i].id);
    char labels[64] = "";
    assert_non_null(f);
    assert_string_equal(f->name, expect[i].name);
    assert_int_equal(f->type, expect[i].type);
    assert_true(f->nlabels <= WFLO__METRIC_MAX_LABELS);
    for (k = 0; k < f->nlabels; k++) {
      if (k > 0)
        strncat(labels, ",", sizeof(labels) - strlen(labels) - 1);
      strncat(labels, f->label_names[k], sizeof(labels) - strlen(labels) - 1);
    }
    assert_string_equal(labels, expect[i].labels);
    assert_true(strlen(f->help) > 10);
    /* Prometheus conventions: counters end in _total, others never. */
    assert_int_equal(f->type == WFLO__MT_COUNTER,
                     strstr(f->name, "_total") ==
                         f->name + strlen(f->name) - 6);
    if (f->type == WFLO__MT_HISTOGRAM) {
      assert_true(f->nbounds > 0);
      for (k = 0; k < f->nbounds; k++) {
        assert_true(isfinite(f->bounds[k]));
        if (k > 0)
          assert_true(f->bounds[k] > f->bounds[k - 1]);
      }
    } else {
      assert_int_equal(f->nbounds, 0);
    }
  }
  assert_true(wflo__metric_family(WFLO__M_BUDGET_SPENT)->divisor == 1e12);
  assert_null(wflo__metric_family(WFLO__M_COUNT));
}

/* --- values ----------------------------------------------------------------------- */

static void test_counter_gauge_histogram(void **state) {
  wflo__metric_series_t *c, *c2, *g, *h;
  char *t;
  (void)state;
  c = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"db", "success"});
  c2 = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                        (const char *[]){"db", "success"});
  assert_non_null(c);
  assert_ptr_equal(c, c2); /* same labels, same series */
  g = wflo__metric_get(WFLO__M_BREAKER_STATE, (const char *[]){"db"});
  h = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"gpu"});
  wflo__counter_add(c, 3);
  wflo__counter_add(c2, 4);
  wflo__gauge_set(g, 2);
  wflo__gauge_add(g, -0.5);
  /* bounds 0.0001 .. 30: exact bound goes into its own bucket (le). */
  wflo__histogram_observe(h, 0.001);
  wflo__histogram_observe(h, 0.00005);
  wflo__histogram_observe(h, 0.5);
  wflo__histogram_observe(h, 1000);
  wflo__histogram_observe(h, NAN); /* ignored */
  assert_int_equal(wflo__metric_read_cell(c, 0), 7);
  assert_true(wflo__metric_read_gauge(g) == 1.5);
  assert_true(wflo__metric_read_sum(h) == 0.001 + 0.00005 + 0.5 + 1000);

  t = exposition();
  assert_line(t, "# HELP wflo_circuit_breaker_calls_total Calls through "
                 "circuit breakers, by outcome (success, failure, ignored, "
                 "rejected).");
  assert_line(t, "# TYPE wflo_circuit_breaker_calls_total counter");
  assert_line(t, "wflo_circuit_breaker_calls_total{name=\"db\","
                 "outcome=\"success\"} 7");
  assert_line(t, "# TYPE wflo_circuit_breaker_state gauge");
  assert_line(t, "wflo_circuit_breaker_state{name=\"db\"} 1.5");
  assert_line(t, "# TYPE wflo_lock_wait_seconds histogram");
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu\","
                 "le=\"0.0001\"} 1");
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu\","
                 "le=\"0.0005\"} 1");
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu\","
                 "le=\"0.001\"} 2");
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu\","
                 "le=\"0.5\"} 3");
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu\","
                 "le=\"30\"} 3");
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu\","
                 "le=\"+Inf\"} 4");
  assert_line(t, "wflo_lock_wait_seconds_sum{resource=\"gpu\"} 1000.50105");
  assert_line(t, "wflo_lock_wait_seconds_count{resource=\"gpu\"} 4");
  /* Families without series are left out. */
  assert_null(strstr(t, "wflo_llm_tokens_total"));
  /* HELP and TYPE once per family, before its samples. */
  assert_int_equal(count_substr(t, "# TYPE wflo_lock_wait_seconds "), 1);
  assert_true(strstr(t, "# TYPE wflo_lock_wait_seconds") <
              strstr(t, "wflo_lock_wait_seconds_bucket"));
  wflo_metrics_text_free(t);
  wflo__metric_release(c);
  wflo__metric_release(c2);
  wflo__metric_release(g);
  wflo__metric_release(h);
}

static void test_usd_and_labels_path(void **state) {
  char *t;
  int i;
  (void)state;
  /* 0.0125 USD in pico-dollars, twice: exact, printed as USD. */
  wflo__counter_add_labels(WFLO__M_BUDGET_SPENT, (const char *[]){"wf"},
                           12500000000ull);
  wflo__counter_add_labels(WFLO__M_BUDGET_SPENT, (const char *[]){"wf"},
                           12500000000ull);
  wflo__counter_add_labels(WFLO__M_BUDGET_SPENT, (const char *[]){NULL}, 1);
  /* More distinct label tuples than cache slots: collisions must still
   * land in the right series. */
  for (i = 0; i < 200; i++) {
    char model[16];
    snprintf(model, sizeof(model), "m%d", i % 40);
    wflo__counter_add_labels(WFLO__M_LLM_TOKENS,
                             (const char *[]){model, "prompt"}, 10);
  }
  wflo__histogram_observe_labels(WFLO__M_RETRY_DELAY, NULL, 2);
  wflo__histogram_observe_labels(WFLO__M_RETRY_DELAY, NULL, 0.25);
  /* A gauge family is refused by the labels path. */
  wflo__counter_add_labels(WFLO__M_BREAKER_STATE, (const char *[]){"x"}, 1);
  wflo__counter_add_labels(WFLO__M_COUNT, NULL, 1);
  t = exposition();
  assert_line(t, "wflo_budget_spent_usd_total{workflow=\"wf\"} 0.025");
  assert_line(t, "wflo_budget_spent_usd_total{workflow=\"\"} 1e-12");
  for (i = 0; i < 40; i++) {
    char line[96];
    snprintf(line, sizeof(line),
             "wflo_llm_tokens_total{model=\"m%d\",kind=\"prompt\"} 50", i);
    assert_line(t, line);
  }
  assert_int_equal(count_substr(t, "wflo_llm_tokens_total{"), 40);
  assert_line(t, "wflo_retry_delay_seconds_bucket{le=\"0.25\"} 1");
  assert_line(t, "wflo_retry_delay_seconds_bucket{le=\"2.5\"} 2");
  assert_line(t, "wflo_retry_delay_seconds_sum 2.25");
  assert_line(t, "wflo_retry_delay_seconds_count 2");
  assert_null(strstr(t, "wflo_circuit_breaker_state"));
  wflo_metrics_text_free(t);

  /* Reset frees these series; the per-thread cache must notice (ASan
   * would report a use after free otherwise) and start again at 0. */
  wflo_metrics_reset();
  assert_int_equal(wflo__mem_outstanding(), 0);
  wflo__counter_add_labels(WFLO__M_BUDGET_SPENT, (const char *[]){"wf"}, 1);
  t = exposition();
  assert_line(t, "wflo_budget_spent_usd_total{workflow=\"wf\"} 1e-12");
  wflo_metrics_text_free(t);
}

static void test_escaping_and_utf8(void **state) {
  wflo__metric_series_t *a, *b;
  char *t;
  (void)state;
  a = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"say \"hi\"\nback\\slash", "failure"});
  /* 0xff is never UTF-8; 0xc3 0x28 is a broken 2-byte sequence; a valid
   * multibyte character passes through. */
  b = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"x\xff"
                                        "y\xc3(z\xc3\xa9",
                                        "ignored"});
  wflo__counter_add(a, 1);
  wflo__counter_add(b, 2);
  t = exposition();
  assert_line(t,
              "wflo_circuit_breaker_calls_total{name=\"say \\\"hi\\\"\\nback"
              "\\\\slash\",outcome=\"failure\"} 1");
  assert_line(t, "wflo_circuit_breaker_calls_total{name=\"x\xef\xbf\xbdy"
                 "\xef\xbf\xbd(z\xc3\xa9\",outcome=\"ignored\"} 2");
  wflo_metrics_text_free(t);
  wflo__metric_release(a);
  wflo__metric_release(b);
}

/* Switches LC_NUMERIC to a locale with a decimal comma: an installed one,
 * or one compiled with localedef into a temporary LOCPATH. */
static char locale_dir[] = "/tmp/wflo_locale_XXXXXX";
static bool locale_dir_made;

static void locale_cleanup(void) {
  char cmd[64];
  setlocale(LC_NUMERIC, "C");
  if (!locale_dir_made)
    return;
  snprintf(cmd, sizeof(cmd), "rm -rf %s", locale_dir);
  if (system(cmd) != 0)
    print_message("note: could not remove %s\n", locale_dir);
  locale_dir_made = false;
}

static bool decimal_comma_locale(void) {
  char *dir = locale_dir;
  char cmd[160];
  if (setlocale(LC_NUMERIC, "de_DE.UTF-8") != NULL)
    return true;
  if (system("command -v localedef >/dev/null 2>&1") != 0 ||
      mkdtemp(dir) == NULL)
    return false;
  locale_dir_made = true;
  snprintf(cmd, sizeof(cmd),
           "localedef -i de_DE -f UTF-8 %s/de_DE.UTF-8 >/dev/null 2>&1; "
           "true",
           dir);
  if (system(cmd) != 0)
    return false;
  setenv("LOCPATH", dir, 1);
  return setlocale(LC_NUMERIC, "de_DE.UTF-8") != NULL;
}

static void test_number_format(void **state) {
  static const struct {
    double v;
    const char *s;
  } cases[] = {
      {0, "0"},
      {1, "1"},
      {0.1, "0.1"},
      {1e-12, "1e-12"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {2.5, "2.5"},
      {-3.75, "-3.75"},
      {1e300, "1e+300"},
      {NAN, "NaN"},
      {INFINITY, "+Inf"},
      {-INFINITY, "-Inf"},
      {0.30000000000000004, "0.30000000000000004"},
  };
  char buf[48];
  size_t i;
  (void)state;
  for (i = 0; i < WFLO_ARRAY_SIZE(cases); i++) {
    size_t n = wflo__metric_fmt_double(buf, sizeof(buf), cases[i].v);
    assert_string_equal(buf, cases[i].s);
    assert_int_equal(n, strlen(cases[i].s));
  }
  /* A decimal-comma locale must not leak into the exposition. */
  if (decimal_comma_locale()) {
    assert_string_equal(localeconv()->decimal_point, ",");
    wflo__metric_fmt_double(buf, sizeof(buf), 0.5);
    assert_string_equal(buf, "0.5");
    wflo__metric_fmt_double(buf, sizeof(buf), -1234.0625);
    assert_string_equal(buf, "-1234.0625");
    wflo__metric_fmt_double(buf, sizeof(buf), 2.5e-7);
    assert_string_equal(buf, "2.5e-07");
    locale_cleanup();
  } else {
    locale_cleanup();
    print_message("note: no decimal-comma locale installed; locale case "
                  "not exercised\n");
  }
}

static void test_gauge_special_values(void **state) {
  wflo__metric_series_t *a, *b, *c;
  char *t;
  (void)state;
  a = wflo__metric_get(WFLO__M_LOCK_CONTENTION_RATE, (const char *[]){"a"});
  b = wflo__metric_get(WFLO__M_LOCK_CONTENTION_RATE, (const char *[]){"b"});
  c = wflo__metric_get(WFLO__M_LOCK_CONTENTION_RATE, (const char *[]){"c"});
  wflo__gauge_set(a, NAN);
  wflo__gauge_set(b, INFINITY);
  wflo__gauge_set(c, -INFINITY);
  t = exposition();
  assert_line(t, "wflo_lock_contention_rate{resource=\"a\"} NaN");
  assert_line(t, "wflo_lock_contention_rate{resource=\"b\"} +Inf");
  assert_line(t, "wflo_lock_contention_rate{resource=\"c\"} -Inf");
  wflo_metrics_text_free(t);
  wflo__metric_release(a);
  wflo__metric_release(b);
  wflo__metric_release(c);
}

/* --- lifetime ----------------------------------------------------------------------- */

static void test_series_lifetime(void **state) {
  wflo__metric_series_t *g1, *g2, *c;
  char *t;
  (void)state;
  g1 = wflo__metric_get(WFLO__M_LOCK_HOLDERS, (const char *[]){"r"});
  g2 = wflo__metric_get(WFLO__M_LOCK_HOLDERS, (const char *[]){"r"});
  c = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, (const char *[]){"r"});
  assert_ptr_equal(g1, g2);
  wflo__gauge_set(g1, 3);
  wflo__counter_add(c, 2);
  /* One holder left: the gauge stays. */
  wflo__metric_release(g1);
  t = exposition();
  assert_line(t, "wflo_lock_holders{resource=\"r\"} 3");
  wflo_metrics_text_free(t);
  /* Last holder gone: the gauge leaves; the counter keeps its value. */
  wflo__metric_release(g2);
  wflo__metric_release(c);
  t = exposition();
  assert_null(strstr(t, "wflo_lock_holders"));
  assert_line(t, "wflo_lock_timeouts_total{resource=\"r\"} 2");
  wflo_metrics_text_free(t);
  /* A new holder of the same labels gets a fresh gauge. */
  g1 = wflo__metric_get(WFLO__M_LOCK_HOLDERS, (const char *[]){"r"});
  assert_true(wflo__metric_read_gauge(g1) == 0);
  /* Reset: the held gauge keeps its value, the released counter goes. */
  wflo__gauge_set(g1, 1);
  c = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, (const char *[]){"held"});
  wflo__counter_add(c, 5);
  wflo_metrics_reset();
  t = exposition();
  assert_line(t, "wflo_lock_holders{resource=\"r\"} 1");
  assert_null(strstr(t, "wflo_lock_timeouts_total{resource=\"r\"}"));
  /* held counter: zeroed, still exported, still counting */
  assert_line(t, "wflo_lock_timeouts_total{resource=\"held\"} 0");
  wflo_metrics_text_free(t);
  wflo__counter_add(c, 1);
  assert_int_equal(wflo__metric_read_cell(c, 0), 1);
  /* While series exist the allocator cannot change. */
  assert_int_equal(wflo_set_allocator(NULL), WFLO_E_STATE);
  wflo__metric_release(g1);
  wflo__metric_release(c);
  wflo_metrics_reset();
  assert_int_equal(wflo__mem_outstanding(), 0);
}

static void test_many_series(void **state) {
  wflo__metric_series_t *s[300];
  char name[32];
  int i;
  (void)state;
  for (i = 0; i < 300; i++) {
    snprintf(name, sizeof(name), "breaker-%d", i);
    s[i] = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                            (const char *[]){name, "rejected"});
    assert_non_null(s[i]);
    wflo__counter_add(s[i], (uint64_t)i);
  }
  /* Table growth kept every series findable. */
  for (i = 0; i < 300; i++) {
    wflo__metric_series_t *again;
    snprintf(name, sizeof(name), "breaker-%d", i);
    again = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                             (const char *[]){name, "rejected"});
    assert_ptr_equal(again, s[i]);
    assert_int_equal(wflo__metric_read_cell(again, 0), i);
    wflo__metric_release(again);
  }
  /* ("ab","c") and ("a","bc") are different tuples. */
  wflo__metric_release(s[0]);
  wflo__metric_release(s[1]);
  s[0] = wflo__metric_get(WFLO__M_BREAKER_CALLS, (const char *[]){"ab", "c"});
  s[1] = wflo__metric_get(WFLO__M_BREAKER_CALLS, (const char *[]){"a", "bc"});
  assert_ptr_not_equal(s[0], s[1]);
  for (i = 0; i < 300; i++)
    wflo__metric_release(s[i]);
}

static void test_null_and_bad_id(void **state) {
  (void)state;
  wflo__counter_add(NULL, 1);
  wflo__histogram_observe(NULL, 1);
  wflo__gauge_set(NULL, 1);
  wflo__gauge_add(NULL, 1);
  wflo__metric_release(NULL);
  assert_null(wflo__metric_get(WFLO__M_COUNT, NULL));
  assert_null(wflo__metric_get((wflo__metric_id_t)-1, NULL));
  assert_int_equal(wflo_metrics_write_prometheus(NULL, NULL), WFLO_E_INVAL);
  wflo_metrics_text_free(NULL);
}

/* --- disabled ----------------------------------------------------------------------- */

static void test_disabled(void **state) {
  wflo__metric_series_t *c, *g, *h;
  char *t;
  json_t *j;
  (void)state;
  c = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, (const char *[]){"r"});
  g = wflo__metric_get(WFLO__M_LOCK_HOLDERS, (const char *[]){"r"});
  h = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"r"});
  wflo__counter_add(c, 1);
  wflo__histogram_observe(h, 1);
  assert_true(wflo_metrics_enabled());
  wflo_metrics_enable(false);
  assert_false(wflo_metrics_enabled());
  wflo__counter_add(c, 100);
  wflo__histogram_observe(h, 0.5);
  wflo__counter_add_labels(WFLO__M_LLM_TOKENS, (const char *[]){"m", "prompt"},
                           7);
  wflo__histogram_observe_labels(WFLO__M_RETRY_DELAY, NULL, 1);
  /* Gauges mirror state and stay current (documented). */
  wflo__gauge_set(g, 4);
  assert_int_equal(wflo__metric_read_cell(c, 0), 1);
  t = exposition();
  assert_line(t, "wflo_lock_timeouts_total{resource=\"r\"} 1");
  assert_line(t, "wflo_lock_wait_seconds_count{resource=\"r\"} 1");
  assert_line(t, "wflo_lock_wait_seconds_sum{resource=\"r\"} 1");
  assert_line(t, "wflo_lock_holders{resource=\"r\"} 4");
  /* the labels path created nothing while disabled */
  assert_null(strstr(t, "wflo_llm_tokens_total"));
  assert_null(strstr(t, "wflo_retry_delay_seconds"));
  wflo_metrics_text_free(t);
  j = wflo_metrics_json();
  assert_true(json_is_false(json_object_get(j, "enabled")));
  json_decref(j);
  wflo_metrics_enable(true);
  wflo__counter_add(c, 1);
  assert_int_equal(wflo__metric_read_cell(c, 0), 2);
  wflo__metric_release(c);
  wflo__metric_release(g);
  wflo__metric_release(h);
}

/* --- writer ------------------------------------------------------------------------- */

typedef struct sink {
  char *buf;
  size_t len, cap;
  int calls;
  int fail_at; /* 1-based call that fails, 0 never */
  size_t max_chunk;
  wflo__metric_series_t *release_on_first;
} sink_t;

static int sink_write(const char *buf, size_t len, void *ud) {
  sink_t *s = ud;
  s->calls++;
  if (len > s->max_chunk)
    s->max_chunk = len;
  if (s->release_on_first != NULL) {
    /* The writer may call into libwflo: drop the last holder of a gauge
     * that the exposition still has to render. */
    wflo__metric_release(s->release_on_first);
    s->release_on_first = NULL;
  }
  if (s->fail_at == s->calls)
    return -42;
  if (s->len + len + 1 > s->cap) {
    s->cap = (s->len + len + 1) * 2;
    s->buf = realloc(s->buf, s->cap);
    assert_non_null(s->buf);
  }
  memcpy(s->buf + s->len, buf, len);
  s->len += len;
  s->buf[s->len] = '\0';
  return 0;
}

static void test_writer_chunks_and_errors(void **state) {
  wflo__metric_series_t *s[200], *g;
  sink_t sink;
  char name[40], *t;
  size_t len;
  int i;
  (void)state;
  for (i = 0; i < 200; i++) {
    snprintf(name, sizeof(name), "a-fairly-long-breaker-name-%d", i);
    s[i] = wflo__metric_get(WFLO__M_BREAKER_TRANSITIONS,
                            (const char *[]){name, "closed", "open"});
    wflo__counter_add(s[i], 1);
  }
  g = wflo__metric_get(WFLO__M_LOCK_HOLDERS, (const char *[]){"zzz"});
  wflo__gauge_set(g, 9);
  t = wflo_metrics_prometheus_text(&len);
  assert_non_null(t);
  assert_int_equal(len, strlen(t));
  assert_true(len > 3 * 4096);

  memset(&sink, 0, sizeof(sink));
  sink.release_on_first = g;
  assert_int_equal(wflo_metrics_write_prometheus(sink_write, &sink), 0);
  assert_true(sink.calls > 3);
  assert_true(sink.max_chunk <= 4096);
  /* Same text, the gauge included: the snapshot kept it alive. */
  assert_string_equal(sink.buf, t);
  assert_line(sink.buf, "wflo_lock_holders{resource=\"zzz\"} 9");
  wflo_metrics_text_free(t);
  free(sink.buf);

  /* The gauge is gone now. */
  t = exposition();
  assert_null(strstr(t, "zzz"));
  wflo_metrics_text_free(t);

  /* A failing writer stops the rendering and its code comes back. */
  memset(&sink, 0, sizeof(sink));
  sink.fail_at = 2;
  assert_int_equal(wflo_metrics_write_prometheus(sink_write, &sink), -42);
  assert_int_equal(sink.calls, 2);
  free(sink.buf);
  for (i = 0; i < 200; i++)
    wflo__metric_release(s[i]);
}

static void test_empty_exposition(void **state) {
  size_t len = 99;
  char *t;
  json_t *j;
  (void)state;
  t = wflo_metrics_prometheus_text(&len);
  assert_non_null(t);
  assert_int_equal(len, 0);
  assert_string_equal(t, "");
  wflo_metrics_text_free(t);
  /* JSON lists every family even without series. */
  j = wflo_metrics_json();
  assert_non_null(j);
  assert_int_equal(json_object_size(json_object_get(j, "metrics")),
                   WFLO__M_COUNT);
  json_decref(j);
}

/* --- JSON --------------------------------------------------------------------------- */

static void test_json(void **state) {
  wflo__metric_series_t *c, *g, *h;
  json_t *j, *fam, *s, *b;
  char *dump;
  (void)state;
  c = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"bad\xff", "success"});
  g = wflo__metric_get(WFLO__M_BREAKER_STATE, (const char *[]){"db"});
  h = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"gpu"});
  wflo__counter_add(c, 5);
  wflo__gauge_set(g, NAN);
  wflo__histogram_observe(h, 0.002);
  wflo__histogram_observe(h, 50);
  wflo__counter_add_labels(WFLO__M_BUDGET_SPENT, (const char *[]){"wf"},
                           500000000000ull);
  j = wflo_metrics_json();
  assert_non_null(j);
  assert_true(json_is_true(json_object_get(j, "enabled")));

  fam = json_object_get(json_object_get(j, "metrics"),
                        "wflo_circuit_breaker_calls_total");
  assert_string_equal(json_string_value(json_object_get(fam, "type")),
                      "counter");
  assert_int_equal(json_array_size(json_object_get(fam, "labels")), 2);
  s = json_array_get(json_object_get(fam, "series"), 0);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(s, "labels"), "name")),
      "bad\xef\xbf\xbd");
  assert_int_equal(json_integer_value(json_object_get(s, "value")), 5);

  fam = json_object_get(json_object_get(j, "metrics"),
                        "wflo_circuit_breaker_state");
  s = json_array_get(json_object_get(fam, "series"), 0);
  assert_true(json_is_null(json_object_get(s, "value")));

  fam = json_object_get(json_object_get(j, "metrics"),
                        "wflo_budget_spent_usd_total");
  s = json_array_get(json_object_get(fam, "series"), 0);
  assert_true(json_real_value(json_object_get(s, "value")) == 0.5);

  fam =
      json_object_get(json_object_get(j, "metrics"), "wflo_lock_wait_seconds");
  assert_string_equal(json_string_value(json_object_get(fam, "type")),
                      "histogram");
  s = json_array_get(json_object_get(fam, "series"), 0);
  b = json_object_get(s, "buckets");
  assert_int_equal(json_array_size(b), 16);
  assert_true(json_real_value(json_object_get(json_array_get(b, 0), "le")) ==
              0.0001);
  assert_int_equal(
      json_integer_value(json_object_get(json_array_get(b, 3), "count")), 1);
  assert_true(json_is_null(json_object_get(json_array_get(b, 15), "le")));
  assert_int_equal(
      json_integer_value(json_object_get(json_array_get(b, 15), "count")), 2);
  assert_int_equal(json_integer_value(json_object_get(s, "count")), 2);
  assert_true(json_real_value(json_object_get(s, "sum")) == 50.002);
  assert_int_equal(json_array_size(json_object_get(
                       json_object_get(json_object_get(j, "metrics"),
                                       "wflo_llm_tokens_total"),
                       "series")),
                   0);
  dump = json_dumps(j, JSON_COMPACT);
  assert_non_null(dump);
  free(dump);
  json_decref(j);
  wflo__metric_release(c);
  wflo__metric_release(g);
  wflo__metric_release(h);
}

/* --- promtool --------------------------------------------------------------------- */

static bool have_promtool(void) {
  return system("command -v promtool >/dev/null 2>&1") == 0;
}

/* Feeds text to `promtool check metrics`; returns its exit status and
 * copies its output into out. */
static int promtool_check(const char *text, char *out, size_t outlen) {
  char path[] = "/tmp/wflo_metrics_XXXXXX", cmd[128];
  int fd = mkstemp(path), status;
  size_t n = 0, len = strlen(text);
  FILE *p;
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
  snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
  p = popen(cmd, "r");
  assert_non_null(p);
  n = fread(out, 1, outlen - 1, p);
  out[n] = '\0';
  status = pclose(p);
  unlink(path);
  return status;
}

static void test_promtool(void **state) {
  wflo__metric_series_t *s[16];
  char *t, out[4096];
  int i, n = 0, status;
  (void)state;
  if (!have_promtool()) {
    print_message("SKIP: promtool not found (Debian: apt-get install "
                  "prometheus); the exposition was not validated by a real "
                  "parser\n");
    skip();
  }
  /* A live run: every family, tricky label values, special numbers. */
  s[n++] = wflo__metric_get(WFLO__M_BREAKER_STATE,
                            (const char *[]){"q\"uote\nnl\\bs\xff"});
  s[n++] = wflo__metric_get(WFLO__M_BREAKER_TRANSITIONS,
                            (const char *[]){"db", "closed", "open"});
  s[n++] = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                            (const char *[]){"\xc3\x28\xe2\x82", "rejected"});
  s[n++] = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"gpu \"0\""});
  s[n++] = wflo__metric_get(WFLO__M_LOCK_CONTENTION_RATE,
                            (const char *[]){"gpu \"0\""});
  s[n++] = wflo__metric_get(WFLO__M_LOCK_HOLDERS, (const char *[]){""});
  s[n++] = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, (const char *[]){"}{,="});
  s[n++] =
      wflo__metric_get(WFLO__M_BUDGET_REFUSALS, (const char *[]){"wf\n\n"});
  for (i = 0; i < n; i++)
    assert_non_null(s[i]);
  wflo__gauge_set(s[0], 2);
  wflo__counter_add(s[1], 3);
  wflo__counter_add(s[2], 4);
  for (i = 0; i < 1000; i++)
    wflo__histogram_observe(s[3], i * 0.001);
  wflo__histogram_observe(s[3], INFINITY);
  wflo__gauge_set(s[4], NAN);
  wflo__gauge_set(s[5], -1e-300);
  wflo__counter_add(s[6], UINT64_MAX / 2);
  wflo__counter_add(s[7], 1);
  wflo__counter_add_labels(WFLO__M_RETRY_ATTEMPTS,
                           (const char *[]){"p\\", "retry"}, 2);
  wflo__histogram_observe_labels(WFLO__M_RETRY_DELAY, NULL, 1e-9);
  wflo__counter_add_labels(WFLO__M_BUDGET_SPENT, (const char *[]){"wf"},
                           123456789);
  wflo__counter_add_labels(WFLO__M_LLM_TOKENS,
                           (const char *[]){"gpt-4o", "completion"}, 77);
  t = exposition();
  /* every family present */
  for (i = 0; i < WFLO__M_COUNT; i++) {
    char line[128];
    snprintf(line, sizeof(line), "# TYPE %s ",
             wflo__metric_family((wflo__metric_id_t)i)->name);
    assert_non_null(strstr(t, line));
  }
  status = promtool_check(t, out, sizeof(out));
  if (status != 0)
    fail_msg("promtool check metrics failed (%d):\n%s\n--- input ---\n%s",
             status, out, t);
  assert_line(t, "wflo_lock_wait_seconds_bucket{resource=\"gpu \\\"0\\\"\","
                 "le=\"+Inf\"} 1001");
  assert_line(t, "wflo_lock_wait_seconds_sum{resource=\"gpu \\\"0\\\"\"} "
                 "+Inf");
  assert_line(t, "wflo_lock_timeouts_total{resource=\"}{,=\"} "
                 "9223372036854775807");
  assert_line(t, "wflo_budget_refusals_total{workflow=\"wf\\n\\n\"} 1");
  assert_line(t, "wflo_retry_attempts_total{policy=\"p\\\\\","
                 "result=\"retry\"} 2");
  assert_line(t, "wflo_budget_spent_usd_total{workflow=\"wf\"} "
                 "0.000123456789");
  wflo_metrics_text_free(t);

  /* The checker catches a broken exposition (so a pass means something). */
  status = promtool_check("# TYPE x counter\nx{a=\"say \"hi\"\"} 1\n", out,
                          sizeof(out));
  assert_int_not_equal(status, 0);
  for (i = 0; i < n; i++)
    wflo__metric_release(s[i]);
}

/* --- threads ------------------------------------------------------------------------ */

#define NTHREADS 12

static atomic_int owned_slots;

typedef struct worker {
  wflo__metric_series_t *c, *h;
  uv_barrier_t *start;
  size_t iters;
  int id;
} worker_t;

static void worker(void *arg) {
  worker_t *w = arg;
  size_t i;
  char name[16];
  snprintf(name, sizeof(name), "t%d", w->id % 3);
  /* All at once, so threads that share the atomic shard really race. */
  uv_barrier_wait(w->start);
  for (i = 0; i < w->iters; i++) {
    wflo__counter_add(w->c, 1);
    wflo__histogram_observe(w->h, (i & 1) ? 0.5 : 2.0);
    wflo__counter_add_labels(WFLO__M_LLM_TOKENS,
                             (const char *[]){name, "prompt"}, 2);
  }
}

static void test_threads_exact_sums(void **state) {
  uv_thread_t t[NTHREADS];
  worker_t w[NTHREADS];
  uv_barrier_t start;
  size_t iters = (size_t)wflo_test_scale(100000) & ~(size_t)1, round;
  wflo__metric_series_t *c, *h;
  char *text;
  int i;
  (void)state;
  c = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"shared", "success"});
  h = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"shared"});
  /* Two rounds: the second round's threads reuse the shards the first
   * round's threads gave back at exit, and must add on top. More threads
   * than shards, so some share the atomic one. */
  for (round = 0; round < 2; round++) {
    assert_int_equal(uv_barrier_init(&start, NTHREADS), 0);
    for (i = 0; i < NTHREADS; i++) {
      w[i].start = &start;
      w[i].c = c;
      w[i].h = h;
      w[i].iters = iters;
      w[i].id = i;
      assert_int_equal(uv_thread_create(&t[i], worker, &w[i]), 0);
    }
    for (i = 0; i < NTHREADS; i++)
      assert_int_equal(uv_thread_join(&t[i]), 0);
    uv_barrier_destroy(&start);
  }
  assert_int_equal(wflo__metric_read_cell(c, 0), 2 * NTHREADS * iters);
  /* 0.5 and 2.0 are exact in binary: the sum is exact too. */
  assert_true(wflo__metric_read_sum(h) ==
              2.0 * NTHREADS * (double)(iters / 2) * 2.5);
  text = exposition();
  {
    char line[128];
    for (i = 0; i < 3; i++) {
      snprintf(line, sizeof(line),
               "wflo_llm_tokens_total{model=\"t%d\",kind=\"prompt\"} %zu", i,
               2 * 2 * (NTHREADS / 3) * iters);
      assert_line(text, line);
    }
    snprintf(line, sizeof(line),
             "wflo_lock_wait_seconds_count{resource=\"shared\"} %zu",
             2 * NTHREADS * iters);
    assert_line(text, line);
  }
  wflo_metrics_text_free(text);
  wflo__metric_release(c);
  wflo__metric_release(h);
}

static void slot_worker(void *arg) {
  wflo__counter_add(arg, 1);
  /* Did this thread get a shard of its own? */
  if (wflo__tl_metric_slot & 1u)
    atomic_fetch_add(&owned_slots, 1);
}

/* Threads give their shard back when they exit: a long run of short-lived
 * threads (a thread pool that churns) keeps getting owned shards instead
 * of piling onto the shared one. */
static void test_shards_recycled(void **state) {
  wflo__metric_series_t *c;
  uv_thread_t t;
  int i, n = 100;
  (void)state;
  atomic_store(&owned_slots, 0);
  c = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, (const char *[]){"churn"});
  for (i = 0; i < n; i++) {
    assert_int_equal(uv_thread_create(&t, slot_worker, c), 0);
    assert_int_equal(uv_thread_join(&t), 0);
  }
  assert_int_equal(atomic_load(&owned_slots), n);
  assert_int_equal(wflo__metric_read_cell(c, 0), n);
  wflo__metric_release(c);
}

/* --- out of memory ------------------------------------------------------------------ */

static int oom_write(const char *buf, size_t len, void *ud) {
  (void)buf;
  *(size_t *)ud += len;
  return 0;
}

static int oom_scenario(void *ud) {
  wflo__metric_series_t *c, *g, *h;
  size_t written = 0;
  char *t;
  json_t *j;
  int rc = 0, w;
  (void)ud;
  c = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"oom\xff", "success"});
  g = wflo__metric_get(WFLO__M_BREAKER_STATE, (const char *[]){"oom"});
  h = wflo__metric_get(WFLO__M_LOCK_WAIT, (const char *[]){"oom"});
  if (c == NULL || g == NULL || h == NULL)
    rc = WFLO_E_NOMEM;
  /* Updates on a series that could not be made are no-ops. */
  wflo__counter_add(c, 2);
  wflo__gauge_set(g, 1);
  wflo__histogram_observe(h, 0.5);
  wflo__counter_add_labels(WFLO__M_LLM_TOKENS, (const char *[]){"m", "prompt"},
                           3);
  t = wflo_metrics_prometheus_text(NULL);
  if (t == NULL)
    rc = WFLO_E_NOMEM;
  else if (c != NULL &&
           !has_line(t, "wflo_circuit_breaker_calls_total{name=\"oom\xef\xbf"
                        "\xbd\",outcome=\"success\"} 2"))
    rc = WFLO_E_STATE; /* neither success nor NOMEM: the loop fails */
  wflo_metrics_text_free(t);
  j = wflo_metrics_json();
  if (j == NULL)
    rc = WFLO_E_NOMEM;
  json_decref(j);
  w = wflo_metrics_write_prometheus(oom_write, &written);
  if (w != 0)
    rc = w;
  wflo__metric_release(c);
  wflo__metric_release(g);
  wflo__metric_release(h);
  wflo_metrics_reset();
  return rc;
}

static void test_oom(void **state) {
  (void)state;
  wflo_test_oom_loop(oom_scenario, NULL, 0);
  wflo_test_oom_loop_ex(oom_scenario, NULL, 0, WFLO_TEST_FAIL_AFTER);
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, wflo_test_setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      TEST(test_family_table),
      TEST(test_counter_gauge_histogram),
      TEST(test_usd_and_labels_path),
      TEST(test_escaping_and_utf8),
      TEST(test_number_format),
      TEST(test_gauge_special_values),
      TEST(test_series_lifetime),
      TEST(test_many_series),
      TEST(test_null_and_bad_id),
      TEST(test_disabled),
      TEST(test_writer_chunks_and_errors),
      TEST(test_empty_exposition),
      TEST(test_json),
      TEST(test_promtool),
      TEST(test_threads_exact_sums),
      TEST(test_shards_recycled),
      TEST(test_oom),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
