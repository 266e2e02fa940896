/* Tests of workflows (src/workflow.c), the pricing table (src/pricing.c),
 * tracked LLM calls (src/llm.c) and the ledger (src/ledger.c). */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/context.h"
#include "internal/workflow.h"

/* A model whose costs are easy to check: $1 and $2 per million tokens, so
 * 1000 + 1000 tokens cost $0.003; each call reserves $0.1. */
static const char *const test_prices =
    "{\"models\": {\"test-model\": {\"input_per_mtok\": 1, "
    "\"output_per_mtok\": 2.0, \"max_call_usd\": 0.1}}}";

static void load_prices(const char *text) {
  char err[256] = "";
  json_error_t jerr;
  json_t *j = json_loads(text, 0, &jerr);
  assert_non_null(j);
  assert_int_equal(wflo_pricing_load_json(j, err, sizeof(err)), 0);
  json_decref(j);
}

static int load_prices_rc(const char *text, char *err, size_t len) {
  json_error_t jerr;
  json_t *j = json_loads(text, 0, &jerr);
  int rc;
  assert_non_null(j);
  rc = wflo_pricing_load_json(j, err, len);
  json_decref(j);
  return rc;
}

static wflo_context_t *new_ctx(const char *id, double budget) {
  wflo_context_t *c = NULL;
  assert_int_equal(wflo_context_new(id, "wf", budget, NULL, &c), 0);
  return c;
}

static json_int_t stat_of(json_t *stats, const char *key) {
  json_t *v = json_object_get(stats, key);
  assert_true(json_is_integer(v));
  return json_integer_value(v);
}

/* --- workflows ---------------------------------------------------------------- */

typedef struct exec_probe {
  double charge;
  int result;
  const char *id; /* execution id seen, copied below */
  char ids[4][40];
  int runs;
  bool ok;
  wflo_context_t *outer;
} exec_probe_t;

static int exec_fn(void *arg) {
  exec_probe_t *p = arg;
  wflo_context_t *c = wflo_context_current();
  int rc;
  p->ok = c != NULL && c != p->outer &&
          strcmp(wflo_context_workflow(c), "wf-exec") == 0 &&
          wflo_get_current_budget() == 1.0 && wflo_budget_spent(c) == 0.0 &&
          strncmp(wflo_current_execution_id(), "exec-", 5) == 0;
  if (p->runs < 4)
    snprintf(p->ids[p->runs], sizeof(p->ids[0]), "%s",
             wflo_current_execution_id());
  p->runs++;
  if (p->charge > 0) {
    rc = wflo_budget_charge(c, p->charge);
    if (rc != 0)
      return rc;
  }
  return p->result;
}

static void test_workflow_execute(void **state) {
  wflo_workflow_t *wf;
  exec_probe_t p;
  json_t *stats;
  (void)state;
  memset(&p, 0, sizeof(p));
  assert_int_equal(wflo_workflow_new("wf-exec", 1.0, &wf), 0);

  p.charge = 0.25;
  p.result = 5; /* positive results pass through untouched */
  assert_int_equal(wflo_workflow_execute(wf, exec_fn, &p), 5);
  assert_true(p.ok);
  assert_null(wflo_context_current());

  p.charge = 0.5; /* a fresh context: the budget starts again */
  p.result = UV_EIO;
  assert_int_equal(wflo_workflow_execute(wf, exec_fn, &p), UV_EIO);
  assert_true(p.ok);

  p.charge = 1.5; /* refused */
  p.result = 0;
  assert_int_equal(wflo_workflow_execute(wf, exec_fn, &p),
                   WFLO_E_BUDGET_EXCEEDED);
  assert_true(p.ok);

  p.charge = 0.125;
  p.result = 0;
  assert_int_equal(wflo_workflow_execute(wf, exec_fn, &p), 0);

  assert_int_equal(p.runs, 4);
  assert_string_not_equal(p.ids[0], p.ids[1]);
  assert_string_not_equal(p.ids[1], p.ids[2]);

  stats = wflo_workflow_stats_json(wf);
  assert_non_null(stats);
  assert_int_equal(json_object_size(stats), 5);
  assert_int_equal(stat_of(stats, "executions"), 4);
  assert_int_equal(stat_of(stats, "succeeded"), 2);
  assert_int_equal(stat_of(stats, "failed"), 1);
  assert_int_equal(stat_of(stats, "refused"), 1);
  assert_true(json_is_real(json_object_get(stats, "spent_usd")));
  assert_true(json_real_value(json_object_get(stats, "spent_usd")) == 0.875);
  json_decref(stats);
  wflo_workflow_put(wf);
}

/* A workflow run inside another execution draws on that budget too. */
static void test_workflow_nested(void **state) {
  wflo_workflow_t *wf;
  wflo_context_t *outer = new_ctx("outer", 0.3);
  exec_probe_t p;
  (void)state;
  memset(&p, 0, sizeof(p));
  p.outer = outer;
  assert_int_equal(wflo_workflow_new("wf-exec", 1.0, &wf), 0);
  assert_int_equal(wflo_context_enter(outer), 0);
  p.charge = 0.5; /* fits the workflow's 1.0, not the outer 0.3 */
  assert_int_equal(wflo_workflow_execute(wf, exec_fn, &p),
                   WFLO_E_BUDGET_EXCEEDED);
  assert_true(p.ok);
  p.charge = 0.25;
  assert_int_equal(wflo_workflow_execute(wf, exec_fn, &p), 0);
  assert_ptr_equal(wflo_context_current(), outer);
  assert_true(wflo_budget_spent(outer) == 0.25);
  assert_int_equal(wflo_context_exit(outer), 0);
  wflo_context_put(outer);
  wflo_workflow_put(wf);
}

static int charge_current(void *arg) {
  return wflo_budget_charge(wflo_context_current(), *(double *)arg);
}

static void test_workflow_begin_end(void **state) {
  wflo_workflow_t *wf, *again, *other;
  wflo_context_t *ctx, *keep;
  double usd = 0.2;
  json_t *stats;
  (void)state;
  assert_int_equal(wflo_workflow_new("wf-async", 0.5, &wf), 0);
  assert_int_equal(wflo_workflow_new("wf-other", 0.5, &other), 0);
  assert_int_equal(wflo_workflow_begin(wf, &ctx), 0);
  assert_null(wflo_context_current()); /* begun, not entered */
  assert_string_equal(wflo_context_workflow(ctx), "wf-async");
  assert_true(wflo_budget_remaining(ctx) == 0.5);
  /* the execution keeps its workflow alive and registered */
  wflo_workflow_put(wf);
  assert_int_equal(wflo_workflow_new("wf-async", 0.5, &again), 0);
  assert_ptr_equal(again, wf);
  assert_int_equal(wflo_context_run(ctx, charge_current, &usd), 0);
  assert_int_equal(wflo_context_run(ctx, charge_current, &usd), 0);
  assert_int_equal(wflo_context_run(ctx, charge_current, &usd),
                   WFLO_E_BUDGET_EXCEEDED);
  keep = wflo_context_ref(ctx);
  assert_int_equal(wflo_workflow_end(other, ctx, 0), WFLO_E_INVAL);
  stats = wflo_workflow_stats_json(again);
  assert_int_equal(stat_of(stats, "executions"), 0);
  json_decref(stats);
  assert_int_equal(wflo_workflow_end(again, ctx, WFLO_E_BUDGET_EXCEEDED), 0);
  assert_int_equal(wflo_workflow_end(again, keep, 0), WFLO_E_INVAL); /* 2x */
  stats = wflo_workflow_stats_json(again);
  assert_int_equal(stat_of(stats, "executions"), 1);
  assert_int_equal(stat_of(stats, "refused"), 1);
  assert_true(json_real_value(json_object_get(stats, "spent_usd")) == 0.4);
  json_decref(stats);
  wflo_workflow_put(again);
  wflo_workflow_put(other);
  /* the context outlives its workflow */
  assert_string_equal(wflo_context_workflow(keep), "wf-async");
  assert_true(wflo_budget_spent(keep) == 0.4);
  wflo_context_put(keep);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_workflow_registry(void **state) {
  wflo_workflow_t *a, *b, *c, **list;
  wflo__workflow_stats_t st;
  size_t n;
  exec_probe_t p;
  (void)state;
  memset(&p, 0, sizeof(p));
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_WARN);
  assert_int_equal(wflo_workflow_new("wf-exec", 1.0, &a), 0);
  assert_int_equal(wflo_workflow_new("wf-exec", 1.0, &b), 0);
  assert_ptr_equal(a, b); /* shared by name */
  assert_int_equal(wflo_test_events_count(NULL), 0);
  assert_int_equal(wflo_workflow_new("wf-exec", 2.0, &c), 0);
  assert_ptr_equal(a, c); /* keeps its budget, says so */
  assert_int_equal(wflo_test_events_count("config_conflict"), 1);
  {
    const json_t *f = wflo_test_events_get("config_conflict", 0)->fields;
    assert_string_equal(json_string_value(json_object_get(f, "what")),
                        "workflow");
    assert_string_equal(json_string_value(json_object_get(f, "name")),
                        "wf-exec");
  }
  assert_int_equal(wflo_workflow_execute(c, exec_fn, &p), 0);
  assert_true(p.ok); /* budget 1.0, not 2.0 */

  assert_int_equal(wflo__workflow_list(&list, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(wflo__workflow_name(list[0]), "wf-exec");
  wflo__workflow_stats(list[0], &st);
  assert_true(st.budget_per_execution_usd == 1.0);
  assert_int_equal(st.executions, 1);
  assert_int_equal(st.succeeded, 1);
  assert_int_equal(st.in_flight, 0);
  wflo__workflow_list_free(list, n);

  wflo_workflow_put(a);
  wflo_workflow_put(b);
  wflo_workflow_put(c);
  assert_int_equal(wflo__workflow_list(&list, &n), 0);
  assert_int_equal(n, 0);
  assert_null(list);
  /* gone from the registry: a new one starts from zero */
  assert_int_equal(wflo_workflow_new("wf-exec", 2.0, &a), 0);
  wflo__workflow_stats(a, &st);
  assert_int_equal(st.executions, 0);
  assert_true(st.budget_per_execution_usd == 2.0);
  wflo_workflow_put(a);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
}

static void test_workflow_bad_input(void **state) {
  wflo_workflow_t *wf;
  wflo_context_t *ctx;
  exec_probe_t p;
  (void)state;
  memset(&p, 0, sizeof(p));
  assert_int_equal(wflo_workflow_new(NULL, 1.0, &wf), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_new("x", NAN, &wf), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_new("x", -1.0, &wf), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_new("x", 1e7, &wf), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_new("x", 1.0, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_new("x", WFLO_BUDGET_UNLIMITED, &wf), 0);
  assert_int_equal(wflo_workflow_execute(NULL, exec_fn, &p), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_execute(wf, NULL, &p), WFLO_E_INVAL);
  assert_int_equal(p.runs, 0);
  assert_int_equal(wflo_workflow_begin(NULL, &ctx), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_begin(wf, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_end(NULL, NULL, 0), WFLO_E_INVAL);
  assert_int_equal(wflo_workflow_end(wf, NULL, 0), WFLO_E_INVAL);
  /* a context that is no workflow's execution */
  ctx = new_ctx(NULL, 1.0);
  assert_int_equal(wflo_workflow_end(wf, ctx, 0), WFLO_E_INVAL);
  wflo_context_put(ctx);
  assert_null(wflo_workflow_stats_json(NULL));
  wflo_workflow_put(wf);
  wflo_workflow_put(NULL);
}

typedef struct exec_thread {
  wflo_workflow_t *wf;
  int n;
} exec_thread_t;

static int exec_tiny(void *arg) {
  int *i = arg;
  int rc = wflo_budget_charge(wflo_context_current(), 1e-6);
  if (rc != 0)
    return rc;
  return *i % 3 == 0 ? UV_EIO : 0;
}

static void exec_thread(void *p) {
  exec_thread_t *t = p;
  int i;
  for (i = 0; i < t->n; i++) {
    int rc = wflo_workflow_execute(t->wf, exec_tiny, &i);
    WFLO_TEST_THREAD_CHECK(rc == (i % 3 == 0 ? UV_EIO : 0));
  }
}

/* Concurrent executions count exactly. */
static void test_workflow_concurrent(void **state) {
  uv_thread_t t[3];
  exec_thread_t a;
  wflo__workflow_stats_t st;
  int i, n = wflo_test_scale(3000);
  (void)state;
  assert_int_equal(wflo_workflow_new("wf-mt", 1.0, &a.wf), 0);
  a.n = n;
  for (i = 0; i < 3; i++)
    assert_int_equal(uv_thread_create(&t[i], exec_thread, &a), 0);
  for (i = 0; i < 3; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  wflo_test_assert_thread_checks();
  wflo__workflow_stats(a.wf, &st);
  assert_int_equal(st.executions, 3 * (uint64_t)n);
  assert_int_equal(st.failed, 3 * (uint64_t)((n + 2) / 3));
  assert_int_equal(st.succeeded + st.failed, st.executions);
  assert_int_equal(st.in_flight, 0);
  assert_true(st.spent_usd == (double)(3 * (uint64_t)n) * 1e6 / 1e12);
  wflo_workflow_put(a.wf);
}

/* --- pricing ------------------------------------------------------------------ */

static void test_pricing_builtin(void **state) {
  wflo_llm_usage_t u = {1000, 500, {0}};
  double usd = -1.0;
  (void)state;
  assert_int_equal(wflo_pricing_cost("gpt-4o", &u, &usd), 0);
  assert_true(usd == 0.0075); /* 1000 * $2.50/M + 500 * $10/M */
  usd = -1.0;
  assert_int_equal(wflo_pricing_cost("no-such-model", &u, &usd),
                   WFLO_E_NOT_FOUND);
  assert_true(usd == -1.0); /* never a zero cost */
  assert_int_equal(wflo_pricing_cost(NULL, &u, &usd), WFLO_E_INVAL);
  assert_int_equal(wflo_pricing_cost("gpt-4o", NULL, &usd), WFLO_E_INVAL);
  assert_int_equal(wflo_pricing_cost("gpt-4o", &u, NULL), WFLO_E_INVAL);
  /* the built-in table is not library memory */
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_pricing_load(void **state) {
  wflo_llm_usage_t u = {1000000, 1000000, {0}};
  wflo__price_t p;
  double usd;
  (void)state;
  load_prices("{\"models\": {"
              "\"gpt-4o\": {\"input_per_mtok\": 5, \"output_per_mtok\": 15,"
              " \"max_call_usd\": 1},"
              "\"tiny\": {\"input_per_mtok\": 0.000001,"
              " \"output_per_mtok\": 0.123456, \"max_call_usd\": 0}}}");
  assert_int_equal(wflo_pricing_cost("gpt-4o", &u, &usd), 0);
  assert_true(usd == 20.0); /* overridden */
  /* six decimals are exact: 1 and 123456 pico per token */
  assert_int_equal(wflo__pricing_lookup("tiny", &p), 0);
  assert_int_equal(p.input_pico, 1);
  assert_int_equal(p.output_pico, 123456);
  assert_int_equal(p.max_call_pico, 0);
  assert_int_equal(wflo_pricing_cost("tiny", &u, &usd), 0);
  assert_true(usd == 0.123457);
  /* a second load merges: tiny stays, gpt-4o-mini is overridden */
  load_prices("{\"models\": {\"gpt-4o-mini\": {\"input_per_mtok\": 1,"
              " \"output_per_mtok\": 1, \"max_call_usd\": 0.5}}}");
  assert_int_equal(wflo_pricing_cost("tiny", &u, &usd), 0);
  assert_int_equal(wflo_pricing_cost("gpt-4o-mini", &u, &usd), 0);
  assert_true(usd == 2.0);
  assert_int_equal(wflo_pricing_cost("gpt-4o", &u, &usd), 0);
  assert_true(usd == 20.0);
  /* an empty models object changes nothing */
  load_prices("{\"models\": {}}");
  assert_int_equal(wflo_pricing_cost("tiny", &u, &usd), 0);
  /* reset: the built-in ones are back, the loaded ones gone */
  wflo_pricing_reset();
  assert_int_equal(wflo_pricing_cost("gpt-4o", &u, &usd), 0);
  assert_true(usd == 12.5);
  assert_int_equal(wflo_pricing_cost("tiny", &u, &usd), WFLO_E_NOT_FOUND);
  wflo_pricing_reset(); /* twice is fine */
  /* token counts that would overflow saturate rather than wrap */
  u.prompt_tokens = UINT64_MAX;
  assert_int_equal(wflo_pricing_cost("gpt-4o", &u, &usd), 0);
  assert_true(usd >= 1.8e7);
}

static void test_pricing_errors(void **state) {
  static const struct {
    const char *json;
    int rc;
    const char *msg; /* a part of errbuf */
  } cases[] = {
      {"[]", WFLO_E_PARSE, "expected a JSON object"},
      {"{}", WFLO_E_PARSE, "pricing.models: missing key"},
      {"{\"models\": {}, \"x\": 1}", WFLO_E_PARSE, "pricing.x: unknown key"},
      {"{\"models\": []}", WFLO_E_PARSE, "expected an object"},
      {"{\"models\": {\"m\": 1}}", WFLO_E_PARSE, "pricing.models.m"},
      {"{\"models\": {\"m\": {\"input_per_mtok\": 1, \"output_per_mtok\": 1,"
       " \"max_call_usd\": 1, \"extra\": 1}}}",
       WFLO_E_PARSE, "pricing.models.m.extra: unknown key"},
      {"{\"models\": {\"m\": {\"input_per_mtok\": \"1\", "
       "\"output_per_mtok\": 1, \"max_call_usd\": 1}}}",
       WFLO_E_PARSE, "pricing.models.m.input_per_mtok"},
      {"{\"models\": {\"m\": {\"input_per_mtok\": 1, \"max_call_usd\": 1}}}",
       WFLO_E_PARSE, "pricing.models.m.output_per_mtok: missing key"},
      {"{\"models\": {\"m\": {\"input_per_mtok\": -1, \"output_per_mtok\": 1,"
       " \"max_call_usd\": 1}}}",
       WFLO_E_INVAL, "pricing.models.m.input_per_mtok"},
      {"{\"models\": {\"m\": {\"input_per_mtok\": 1, "
       "\"output_per_mtok\": 0.0000001, \"max_call_usd\": 1}}}",
       WFLO_E_INVAL, "more than 6 decimals"},
      {"{\"models\": {\"m\": {\"input_per_mtok\": 1, \"output_per_mtok\": 1,"
       " \"max_call_usd\": 1000001}}}",
       WFLO_E_INVAL, "pricing.models.m.max_call_usd"},
      {"{\"models\": {\"\": {\"input_per_mtok\": 1, \"output_per_mtok\": 1,"
       " \"max_call_usd\": 1}}}",
       WFLO_E_INVAL, "empty model name"},
      /* all or nothing: the valid model before the bad one is not loaded */
      {"{\"models\": {\"ok\": {\"input_per_mtok\": 1, \"output_per_mtok\": 1,"
       " \"max_call_usd\": 1}, \"m\": {\"input_per_mtok\": 1e7,"
       " \"output_per_mtok\": 1, \"max_call_usd\": 1}}}",
       WFLO_E_INVAL, "pricing.models.m.input_per_mtok"},
  };
  wflo_llm_usage_t u = {1, 1, {0}};
  char err[256];
  double usd;
  size_t i;
  (void)state;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t events = wflo_test_events_count("config_invalid");
    err[0] = '\0';
    assert_int_equal(load_prices_rc(cases[i].json, err, sizeof(err)),
                     cases[i].rc);
    if (strstr(err, cases[i].msg) == NULL)
      fail_msg("case %zu: errbuf \"%s\" lacks \"%s\"", i, err, cases[i].msg);
    /* INVAL also says so as an event; PARSE does not */
    assert_int_equal(wflo_test_events_count("config_invalid"),
                     events + (cases[i].rc == WFLO_E_INVAL));
    assert_int_equal(wflo_pricing_cost("ok", &u, &usd), WFLO_E_NOT_FOUND);
    assert_int_equal(wflo_pricing_cost("m", &u, &usd), WFLO_E_NOT_FOUND);
    assert_int_equal(wflo_test_alloc_live(), 0);
  }
  assert_int_equal(wflo_pricing_load_json(NULL, err, sizeof(err)),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_pricing_load_json(NULL, NULL, 0), WFLO_E_INVAL);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static void test_pricing_file(void **state) {
  char path[256], err[256];
  wflo_llm_usage_t u = {1000, 1000, {0}};
  double usd;
  (void)state;
  snprintf(path, sizeof(path), "/tmp/wflo_test_pricing_%d.json",
           uv_os_getpid());
  write_file(path, test_prices);
  assert_int_equal(wflo_pricing_load_file(path, err, sizeof(err)), 0);
  assert_int_equal(wflo_pricing_cost("test-model", &u, &usd), 0);
  assert_true(usd == 0.003);
  write_file(path, "{\"models\": {");
  assert_int_equal(wflo_pricing_load_file(path, err, sizeof(err)),
                   WFLO_E_PARSE);
  assert_non_null(strstr(err, path));
  remove(path);
  assert_int_equal(wflo_pricing_load_file(path, err, sizeof(err)),
                   WFLO_E_NOT_FOUND);
  assert_int_equal(wflo_pricing_load_file(NULL, err, sizeof(err)),
                   WFLO_E_INVAL);
  /* the earlier load is still there */
  assert_int_equal(wflo_pricing_cost("test-model", &u, &usd), 0);
  wflo_pricing_reset();
}

/* A loaded table is library memory: the allocator cannot change under it. */
static void test_pricing_alive(void **state) {
  (void)state;
  load_prices(test_prices);
  assert_true(wflo_test_alloc_live() > 0);
  assert_int_equal(wflo_set_allocator(NULL), WFLO_E_STATE);
  wflo_pricing_reset();
  wflo_test_restore_alloc();
  wflo_test_setup_alloc();
}

/* --- LLM calls ------------------------------------------------------------------- */

typedef struct llm_probe {
  uint64_t prompt, completion;
  int result;
  int calls;
  bool zeroed; /* *u was zero when fn started */
} llm_probe_t;

static int llm_fn(void *arg, wflo_llm_usage_t *u) {
  llm_probe_t *p = arg;
  p->zeroed = u->prompt_tokens == 0 && u->completion_tokens == 0;
  p->calls++;
  u->prompt_tokens = p->prompt;
  u->completion_tokens = p->completion;
  return p->result;
}

static void test_llm_call(void **state) {
  wflo_context_t *c = new_ctx("llm", 1.0);
  llm_probe_t p = {1000, 1000, 0, 0, false};
  (void)state;
  load_prices(test_prices);
  /* no current context: fn runs, nothing charged */
  assert_int_equal(wflo_llm_call("test-model", llm_fn, &p), 0);
  assert_int_equal(p.calls, 1);
  assert_true(p.zeroed);
  assert_true(wflo_budget_spent(c) == 0.0);

  WFLO_WITH_CONTEXT(c) {
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p), 0);
    assert_int_equal(wflo__budget_spent_pico(c), 3000000000ull);
    /* charged even when fn fails, and fn's error comes back untouched */
    p.result = UV_ECONNRESET;
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p), UV_ECONNRESET);
    assert_int_equal(wflo__budget_spent_pico(c), 6000000000ull);
    p.result = 7;
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p), 7);
    assert_int_equal(p.calls, 4);
    /* unknown model: fn not called */
    assert_int_equal(wflo_llm_call("nope", llm_fn, &p), WFLO_E_NOT_FOUND);
    assert_int_equal(wflo_llm_call(NULL, llm_fn, &p), WFLO_E_INVAL);
    assert_int_equal(wflo_llm_call("test-model", NULL, &p), WFLO_E_INVAL);
    assert_int_equal(p.calls, 4);
    /* a call that uses far more than its reservation takes spend past
     * the budget: recorded, and the call says so */
    p.result = 0;
    p.prompt = 400000;     /* $0.4 */
    p.completion = 300000; /* $0.6 */
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p),
                     WFLO_E_BUDGET_EXCEEDED);
    assert_int_equal(wflo__budget_spent_pico(c), 1009000000000ull);
    /* now refused before the call */
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p),
                     WFLO_E_BUDGET_EXCEEDED);
    assert_int_equal(p.calls, 5);
  }
  wflo_context_put(c);
  wflo_pricing_reset();
}

/* Refused when the reservation does not fit, even though the call itself
 * would have been cheap. */
static void test_llm_refused_before_call(void **state) {
  wflo_context_t *c = new_ctx("llm", 0.12);
  llm_probe_t p = {1000, 1000, 0, 0, false};
  (void)state;
  load_prices(test_prices);
  WFLO_WITH_CONTEXT(c) {
    assert_int_equal(wflo_budget_charge(c, 0.03), 0);
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p),
                     WFLO_E_BUDGET_EXCEEDED);
    assert_int_equal(p.calls, 0);
    assert_true(wflo_budget_spent(c) == 0.03);
  }
  wflo_context_put(c);
  wflo_pricing_reset();
}

static void commit_thread(void *arg) {
  wflo_budget_resv_t *r = arg;
  wflo_llm_usage_t u = {1000, 1000, {0}};
  WFLO_TEST_THREAD_CHECK(wflo_llm_commit(r, "test-model", &u) == 0);
}

static void test_llm_async_pair(void **state) {
  wflo_context_t *c = new_ctx("llm", 1.0);
  wflo_budget_resv_t r;
  wflo_llm_usage_t u = {1000, 1000, {0}};
  uv_thread_t t;
  (void)state;
  load_prices(test_prices);
  /* no context: held but empty */
  assert_int_equal(wflo_llm_reserve("test-model", &r), 0);
  assert_true(r.usd == 0.0);
  assert_int_equal(wflo_llm_commit(&r, "test-model", &u), 0);
  assert_int_equal(wflo_llm_commit(&r, "test-model", &u), WFLO_E_STATE);

  assert_int_equal(wflo_context_enter(c), 0);
  assert_int_equal(wflo_llm_reserve("nope", &r), WFLO_E_NOT_FOUND);
  assert_int_equal(wflo_llm_reserve(NULL, &r), WFLO_E_INVAL);
  assert_int_equal(wflo_llm_reserve("test-model", NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_llm_reserve("test-model", &r), 0);
  assert_true(r.usd == 0.1);
  assert_int_equal(wflo_context_exit(c), 0);
  /* the request completes later, on another thread */
  assert_int_equal(uv_thread_create(&t, commit_thread, &r), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(wflo__budget_spent_pico(c), 3000000000ull);
  assert_int_equal(wflo_llm_commit(&r, "test-model", &u), WFLO_E_STATE);

  /* unknown model or NULL at commit: still held, commit it otherwise */
  WFLO_WITH_CONTEXT(c) {
    assert_int_equal(wflo_llm_reserve("test-model", &r), 0);
  }
  assert_int_equal(wflo_llm_commit(&r, "nope", &u), WFLO_E_NOT_FOUND);
  assert_int_equal(wflo_llm_commit(&r, "test-model", NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_llm_commit(NULL, "test-model", &u), WFLO_E_INVAL);
  assert_int_equal(wflo_budget_commit(&r, 0.001), 0);
  assert_int_equal(wflo__budget_spent_pico(c), 4000000000ull);

  /* refused reservation */
  WFLO_WITH_CONTEXT(c) {
    assert_int_equal(wflo_set_current_budget(0.05), 0);
    assert_int_equal(wflo_llm_reserve("test-model", &r),
                     WFLO_E_BUDGET_EXCEEDED);
  }
  assert_int_equal(wflo_llm_commit(&r, "test-model", &u), WFLO_E_STATE);
  wflo_context_put(c);
  wflo_pricing_reset();
}

/* --- WFLO_TRACK_LLM ---------------------------------------------------------------- */

static int track_and_return(int *after) {
  wflo_llm_usage_t usage;
  int rc;
  WFLO_TRACK_LLM("test-model", usage, rc) {
    usage.prompt_tokens = 1000;
    rc = 3;
    return rc; /* the cleanup commits what usage holds */
  }
  *after = 1;
  return -1;
}

static void test_track_llm(void **state) {
  wflo_context_t *c = new_ctx("track", 1.0);
  wflo_llm_usage_t usage;
  int rc = 99, runs = 0, after = 0, i;
  (void)state;
  load_prices(test_prices);
  memset(&usage, 0xff, sizeof(usage));

  /* no context: the block runs, nothing charged */
  WFLO_TRACK_LLM("test-model", usage, rc) {
    runs++;
    assert_int_equal(rc, 0);
    assert_int_equal(usage.prompt_tokens, 0); /* zeroed */
    usage.prompt_tokens = 5;
  }
  assert_int_equal(runs, 1);
  assert_int_equal(rc, 0);

  assert_int_equal(wflo_context_enter(c), 0);
  WFLO_TRACK_LLM("test-model", usage, rc) {
    runs++;
    usage.prompt_tokens = 1000;
    usage.completion_tokens = 1000;
    rc = UV_EPIPE;
  }
  assert_int_equal(runs, 2);
  assert_int_equal(rc, UV_EPIPE);
  assert_int_equal(wflo__budget_spent_pico(c), 3000000000ull);

  /* return out of the block */
  assert_int_equal(track_and_return(&after), 3);
  assert_int_equal(after, 0);
  assert_int_equal(wflo__budget_spent_pico(c), 4000000000ull);

  /* break leaves the block only; goto too */
  for (i = 0; i < 2; i++) {
    WFLO_TRACK_LLM("test-model", usage, rc) {
      usage.completion_tokens = 500;
      break;
    }
  }
  assert_int_equal(wflo__budget_spent_pico(c), 6000000000ull);
  WFLO_TRACK_LLM("test-model", usage, rc) {
    usage.completion_tokens = 500;
    goto done;
  }
  fail();
done:
  assert_int_equal(wflo__budget_spent_pico(c), 7000000000ull);
  /* unknown model: block skipped */
  WFLO_TRACK_LLM("nope", usage, rc) { runs++; }
  assert_int_equal(rc, WFLO_E_NOT_FOUND);
  assert_int_equal(runs, 2);
  /* past the budget during the call, then refused before it */
  WFLO_TRACK_LLM("test-model", usage, rc) { usage.prompt_tokens = 1000000; }
  assert_int_equal(rc, WFLO_E_BUDGET_EXCEEDED);
  WFLO_TRACK_LLM("test-model", usage, rc) { runs++; }
  assert_int_equal(rc, WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(runs, 2);
  assert_int_equal(wflo_context_exit(c), 0);
  assert_int_equal(wflo__budget_spent_pico(c), 1007000000000ull);
  wflo_context_put(c);
  wflo_pricing_reset();
}

/* --- ledger ------------------------------------------------------------------------- */

typedef struct counting_ledger {
  int records;
  uint64_t sum_pico;
  int fail_with; /* returned when non-zero */
  uv_thread_t expect_thread;
  bool wrong_thread, bad_keys, reenter_failed;
  char last_model[32];
  double last_spent;
  wflo_ledger_t self;
} counting_ledger_t;

static int counting_record(const json_t *entry, void *ud) {
  static const char *const keys[] = {"execution_id", "workflow",  "model",
                                     "usd",          "spent_usd", "unix_time"};
  counting_ledger_t *l = ud;
  uv_thread_t me = uv_thread_self();
  const json_t *model = json_object_get(entry, "model");
  wflo_llm_usage_t u = {1, 1, {0}};
  wflo_workflow_t *wf;
  double usd;
  size_t i;
  if (!uv_thread_equal(&me, &l->expect_thread))
    l->wrong_thread = true;
  if (json_object_size(entry) != 6)
    l->bad_keys = true;
  for (i = 0; i < 6; i++)
    if (json_object_get(entry, keys[i]) == NULL)
      l->bad_keys = true;
  if (!json_is_string(json_object_get(entry, "execution_id")) ||
      !json_is_real(json_object_get(entry, "usd")) ||
      !json_is_real(json_object_get(entry, "spent_usd")) ||
      json_real_value(json_object_get(entry, "unix_time")) < 1.6e9)
    l->bad_keys = true;
  snprintf(l->last_model, sizeof(l->last_model), "%s",
           json_is_string(model) ? json_string_value(model) : "(null)");
  l->records++;
  l->sum_pico +=
      wflo__usd_to_pico(json_real_value(json_object_get(entry, "usd")));
  l->last_spent = json_real_value(json_object_get(entry, "spent_usd"));
  /* No libwflo lock is held here: these would deadlock otherwise. */
  wflo_set_ledger(&l->self);
  if (wflo_pricing_cost("test-model", &u, &usd) != 0 ||
      wflo_workflow_new("in-ledger", 1.0, &wf) != 0)
    l->reenter_failed = true;
  else
    wflo_workflow_put(wf);
  return l->fail_with;
}

static int ledger_exec(void *arg) {
  llm_probe_t *p = arg;
  int rc = wflo_llm_call("test-model", llm_fn, p);
  if (rc != 0)
    return rc;
  return wflo_budget_charge(wflo_context_current(), 0.01);
}

static void test_ledger_counting(void **state) {
  counting_ledger_t l;
  wflo_context_t *c = new_ctx("ledger", 0.5);
  wflo_budget_resv_t r;
  wflo_workflow_t *wf;
  llm_probe_t p = {1000, 1000, 0, 0, false};
  int i;
  (void)state;
  memset(&l, 0, sizeof(l));
  l.expect_thread = uv_thread_self();
  l.self.record = counting_record;
  l.self.ud = &l;
  load_prices(test_prices);
  wflo_set_ledger(&l.self);

  WFLO_WITH_CONTEXT(c) {
    /* three committed calls, one record each */
    for (i = 0; i < 3; i++)
      assert_int_equal(wflo_llm_call("test-model", llm_fn, &p), 0);
    assert_int_equal(l.records, 3);
    assert_string_equal(l.last_model, "test-model");
    assert_true(l.last_spent == 0.009);
    /* a charge: one record, model null */
    assert_int_equal(wflo_budget_charge(c, 0.2), 0);
    assert_int_equal(l.records, 4);
    assert_string_equal(l.last_model, "(null)");
    /* an abandoned reservation: none */
    assert_int_equal(wflo_budget_reserve(c, 0.1, &r), 0);
    assert_int_equal(wflo_budget_commit(&r, 0.0), 0);
    assert_int_equal(l.records, 4);
    /* refused ones: none */
    assert_int_equal(wflo_budget_charge(c, 0.4), WFLO_E_BUDGET_EXCEEDED);
    assert_int_equal(wflo_set_current_budget(0.25), 0);
    assert_int_equal(wflo_llm_call("test-model", llm_fn, &p),
                     WFLO_E_BUDGET_EXCEEDED);
    assert_int_equal(l.records, 4);
    assert_int_equal(p.calls, 3);
  }
  /* the records sum to the context's spend */
  assert_int_equal(l.sum_pico, wflo__budget_spent_pico(c));
  assert_int_equal(l.sum_pico, 209000000000ull);

  /* a workflow's executions: one record per committed call */
  assert_int_equal(wflo_workflow_new("wf-ledger", 1.0, &wf), 0);
  for (i = 0; i < 3; i++)
    assert_int_equal(wflo_workflow_execute(wf, ledger_exec, &p), 0);
  assert_int_equal(l.records, 4 + 6);
  assert_int_equal(l.sum_pico, 209000000000ull + 3 * 13000000000ull);
  wflo_workflow_put(wf);

  assert_false(l.wrong_thread);
  assert_false(l.bad_keys);
  assert_false(l.reenter_failed);

  /* removed: nothing more is recorded */
  wflo_set_ledger(NULL);
  assert_int_equal(wflo_budget_charge(c, 0.01), 0);
  assert_int_equal(l.records, 10);
  wflo_context_put(c);
  wflo_pricing_reset();
}

/* A failing ledger: ledger_failed, and the spend stays recorded. */
static void test_ledger_failed(void **state) {
  counting_ledger_t l;
  wflo_context_t *c = new_ctx("ledger-f", 1.0);
  const wflo_test_event_t *ev;
  (void)state;
  memset(&l, 0, sizeof(l));
  l.expect_thread = uv_thread_self();
  l.self.record = counting_record;
  l.self.ud = &l;
  l.fail_with = UV_EIO;
  wflo_set_ledger(&l.self);
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  assert_int_equal(wflo_budget_charge(c, 0.5), 0);
  assert_true(wflo_budget_spent(c) == 0.5);
  assert_int_equal(wflo_test_events_count(NULL), 1);
  ev = wflo_test_events_get("ledger_failed", 0);
  assert_non_null(ev);
  assert_int_equal(ev->level, WFLO_LOG_ERROR);
  assert_int_equal(json_object_size(ev->fields), 2);
  assert_string_equal(
      json_string_value(json_object_get(ev->fields, "execution_id")),
      "ledger-f");
  assert_string_equal(json_string_value(json_object_get(ev->fields, "error")),
                      "EIO");
  wflo_set_ledger(NULL);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_context_put(c);
}

static void test_ledger_jsonl(void **state) {
  char path[256], line[1024];
  wflo_ledger_t l, none = {NULL, NULL};
  wflo_context_t *c = new_ctx("jsonl", 1.0);
  FILE *f;
  int n = 0;
  double sum = 0;
  (void)state;
  snprintf(path, sizeof(path), "/tmp/wflo_test_ledger_%d.jsonl",
           uv_os_getpid());
  remove(path);
  assert_int_equal(wflo_ledger_jsonl(path, &l), 0);
  wflo_set_ledger(&l);
  assert_int_equal(wflo_ledger_jsonl_close(&l), WFLO_E_STATE);
  assert_int_equal(wflo_budget_charge(c, 0.125), 0);
  assert_int_equal(wflo_budget_charge(c, 0.25), 0);
  assert_int_equal(wflo_budget_charge(c, 0.75), WFLO_E_BUDGET_EXCEEDED);
  wflo_set_ledger(NULL);
  assert_int_equal(wflo_ledger_jsonl_close(&l), 0);
  assert_null(l.record);
  assert_int_equal(wflo_ledger_jsonl_close(&l), WFLO_E_INVAL);
  assert_int_equal(wflo_ledger_jsonl_close(&none), WFLO_E_INVAL);
  assert_int_equal(wflo_ledger_jsonl_close(NULL), WFLO_E_INVAL);

  f = fopen(path, "r");
  assert_non_null(f);
  while (fgets(line, sizeof(line), f) != NULL) {
    json_error_t jerr;
    json_t *j = json_loads(line, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "execution_id")),
                        "jsonl");
    assert_string_equal(json_string_value(json_object_get(j, "workflow")),
                        "wf");
    assert_true(json_is_null(json_object_get(j, "model")));
    sum += json_real_value(json_object_get(j, "usd"));
    n++;
    json_decref(j);
  }
  fclose(f);
  remove(path);
  assert_int_equal(n, 2);
  assert_true(sum == 0.375);

  assert_int_equal(wflo_ledger_jsonl("/nonexistent-dir/x.jsonl", &l),
                   UV_ENOENT);
  assert_int_equal(wflo_ledger_jsonl(NULL, &l), WFLO_E_INVAL);
  assert_int_equal(wflo_ledger_jsonl(path, NULL), WFLO_E_INVAL);
  wflo_context_put(c);
}

/* --- allocation failure ---------------------------------------------------------------- */

static int oom_workflow_new(void *ud) {
  wflo_workflow_t *wf;
  int rc = wflo_workflow_new("oom-wf", 1.0, &wf);
  (void)ud;
  if (rc == 0)
    wflo_workflow_put(wf);
  return rc;
}

static int oom_exec_fn(void *arg) {
  (void)arg;
  return wflo_budget_charge(wflo_context_current(), 0.5);
}

static int oom_workflow_execute(void *ud) {
  wflo_workflow_t *wf;
  int rc = wflo_workflow_new("oom-wf", 1.0, &wf);
  (void)ud;
  if (rc != 0)
    return rc;
  rc = wflo_workflow_execute(wf, oom_exec_fn, NULL);
  wflo_workflow_put(wf);
  return rc;
}

static int oom_pricing_load(void *ud) {
  const json_t *j = ud;
  wflo_llm_usage_t u = {1000, 1000, {0}};
  double usd;
  int rc;
  /* a table already loaded, so the merge copies it */
  rc = load_prices_rc("{\"models\": {\"first\": {\"input_per_mtok\": 1,"
                      " \"output_per_mtok\": 1, \"max_call_usd\": 1}}}",
                      NULL, 0);
  if (rc == 0)
    rc = wflo_pricing_load_json(j, NULL, 0);
  if (rc == 0 && wflo_pricing_cost("test-model", &u, &usd) != 0)
    rc = -1;
  wflo_pricing_reset();
  return rc;
}

static int oom_pricing_file(void *ud) {
  int rc = wflo_pricing_load_file(ud, NULL, 0);
  wflo_pricing_reset();
  return rc;
}

static int oom_ledger(void *ud) {
  wflo_ledger_t l;
  int rc = wflo_ledger_jsonl(ud, &l);
  if (rc == 0)
    rc = wflo_ledger_jsonl_close(&l);
  return rc;
}

static void test_oom(void **state) {
  char path[256];
  json_error_t jerr;
  json_t *j = json_loads(test_prices, 0, &jerr);
  (void)state;
  assert_non_null(j);
  wflo_test_oom_loop(oom_workflow_new, NULL, 0);
  wflo_test_oom_loop(oom_workflow_execute, NULL, 0);
  wflo_test_oom_loop(oom_pricing_load, j, 0);
  wflo_test_oom_loop_ex(oom_pricing_load, j, 0, WFLO_TEST_FAIL_AFTER);
  json_decref(j);
  snprintf(path, sizeof(path), "/tmp/wflo_test_oom_%d.json", uv_os_getpid());
  write_file(path, test_prices);
  wflo_test_oom_loop(oom_pricing_file, path, 0);
  remove(path);
  snprintf(path, sizeof(path), "/tmp/wflo_test_oom_%d.jsonl", uv_os_getpid());
  wflo_test_oom_loop(oom_ledger, path, 0);
  remove(path);
}

int main(void) {
#define T(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, wflo_test_setup, wflo_test_teardown)
  const struct CMUnitTest tests[] = {
      T(test_workflow_execute),
      T(test_workflow_nested),
      T(test_workflow_begin_end),
      T(test_workflow_registry),
      T(test_workflow_bad_input),
      T(test_workflow_concurrent),
      T(test_pricing_builtin),
      T(test_pricing_load),
      T(test_pricing_errors),
      T(test_pricing_file),
      T(test_pricing_alive),
      T(test_llm_call),
      T(test_llm_refused_before_call),
      T(test_llm_async_pair),
      T(test_track_llm),
      T(test_ledger_counting),
      T(test_ledger_failed),
      T(test_ledger_jsonl),
      T(test_oom),
  };
#undef T
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
