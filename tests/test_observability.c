/* Observability, end to end (issue 7): every pattern run for real and its
 * metrics read back through wflo_metrics_json() and the Prometheus text
 * (breaker calls, transitions and state; retry attempts and delays; lock
 * waits, holders, contention and timeouts; budget spend and refusals; LLM
 * tokens), the exposition of a live run fed to promtool, every event of
 * DESIGN.md's table with its exact level and fields, the default JSON-lines
 * handler and the exposition with hostile names, the health summary (open
 * breakers, locks, workflows; /healthz), health checks that open a breaker,
 * metrics switched off, threads, and allocation failure. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NS 1000000000ull
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A NULL-terminated list of label name / value pairs. */
#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})

#define CALLS "wflo_circuit_breaker_calls_total"
#define STATE "wflo_circuit_breaker_state"
#define TRANS "wflo_circuit_breaker_transitions_total"
#define ATTEMPTS "wflo_retry_attempts_total"
#define DELAY "wflo_retry_delay_seconds"
#define WAIT "wflo_lock_wait_seconds"
#define RATE "wflo_lock_contention_rate"
#define HOLDERS "wflo_lock_holders"
#define TIMEOUTS "wflo_lock_timeouts_total"
#define SPENT "wflo_budget_spent_usd_total"
#define REFUSALS "wflo_budget_refusals_total"
#define TOKENS "wflo_llm_tokens_total"

/* A name with everything a label value and a JSON string must escape: a
 * quote, a newline, a backslash, and two bytes that are not UTF-8. */
#define HOSTILE "q\"uo\nte\\d\xff\xfe"
/* The same as libwflo writes it: bad bytes become U+FFFD. */
#define HOSTILE_UTF8 "q\"uo\nte\\d\xef\xbf\xbd\xef\xbf\xbd"
/* ... and as a Prometheus label value. */
#define HOSTILE_PROM "q\\\"uo\\nte\\\\d\xef\xbf\xbd\xef\xbf\xbd"

/* --- reading metrics ------------------------------------------------------ */

/* The series of family `fam` in j (wflo_metrics_json()) whose labels are
 * exactly kv, or NULL. */
static json_t *find_series(json_t *j, const char *fam, const char *const *kv) {
  json_t *f = json_object_get(json_object_get(j, "metrics"), fam), *s;
  size_t i, n = 0, k;
  assert_non_null(f);
  while (kv[n] != NULL)
    n += 2;
  json_array_foreach(json_object_get(f, "series"), i, s) {
    json_t *labels = json_object_get(s, "labels");
    bool same = json_object_size(labels) == n / 2;
    for (k = 0; same && k < n; k += 2) {
      const char *v = json_string_value(json_object_get(labels, kv[k]));
      same = v != NULL && strcmp(v, kv[k + 1]) == 0;
    }
    if (same)
      return s;
  }
  return NULL;
}

/* A counter's or gauge's value now; -1 when the series does not exist. */
static double metric(const char *fam, const char *const *kv) {
  json_t *j = wflo_metrics_json(), *s;
  double v;
  assert_non_null(j);
  s = find_series(j, fam, kv);
  v = s == NULL ? -1.0 : json_number_value(json_object_get(s, "value"));
  json_decref(j);
  return v;
}

/* A histogram's count (or -1) and, when sum is not NULL, its sum. */
static json_int_t hist_count(const char *fam, const char *const *kv,
                             double *sum) {
  json_t *j = wflo_metrics_json(), *s;
  json_int_t n;
  assert_non_null(j);
  s = find_series(j, fam, kv);
  n = s == NULL ? -1 : json_integer_value(json_object_get(s, "count"));
  if (sum != NULL)
    *sum = s == NULL ? -1.0 : json_number_value(json_object_get(s, "sum"));
  json_decref(j);
  return n;
}

static char *exposition(void) {
  char *t = wflo_metrics_prometheus_text(NULL);
  assert_non_null(t);
  return t;
}

static bool has_line(const char *text, const char *line) {
  size_t n = strlen(line);
  const char *p = text;
  while ((p = strstr(p, line)) != NULL) {
    if ((p == text || p[-1] == '\n') && p[n] == '\n')
      return true;
    p++;
  }
  return false;
}

static void assert_line(const char *text, const char *line) {
  if (!has_line(text, line))
    fail_msg("missing line: %s\n--- exposition ---\n%s", line, text);
}

/* --- small operations ------------------------------------------------------ */

static int op_ok(void *arg) {
  (void)arg;
  return 0;
}

static int op_result(void *arg) { return *(const int *)arg; }

static int op_ran;
static int op_count(void *arg) {
  (void)arg;
  op_ran++;
  return 0;
}

/* Fails while *arg > 0, counting down. */
static int op_fail_n(void *arg) {
  int *n = arg;
  return (*n)-- > 0 ? UV_EIO : 0;
}

static void run_loop(uv_loop_t *loop) {
  wflo_test_loop_close(loop);
  assert_int_equal(uv_loop_init(loop), 0);
}

static int teardown(void **state) {
  wflo_metrics_enable(true);
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_set_event_handler(NULL, NULL);
  wflo_set_ledger(NULL);
  wflo_pricing_reset();
  return wflo_test_teardown(state);
}

/* --- breaker ---------------------------------------------------------------- */

static void test_breaker_metrics(void **state) {
  wflo_breaker_config_t c;
  wflo_breaker_permit_t permit;
  wflo_breaker_t *b;
  int i, canceled = WFLO_E_CANCELED, failed = UV_EIO;
  char *t;
  (void)state;
  wflo_test_vclock_install(1000 * NS);
  wflo_breaker_config_init(&c);
  c.failure_threshold = 2;
  c.recovery_timeout = 10.0;
  c.success_threshold = 2;
  assert_int_equal(wflo_breaker_new("obs-brk", &c, &b), 0);
  /* Series appear with the first use, not with the object. */
  assert_true(metric(STATE, KV("name", "obs-brk")) < 0);

  for (i = 0; i < 3; i++)
    assert_int_equal(wflo_breaker_call(b, op_ok, NULL), 0);
  assert_true(metric(STATE, KV("name", "obs-brk")) == 0.0);
  assert_int_equal(wflo_breaker_call(b, op_result, &canceled),
                   WFLO_E_CANCELED);
  assert_int_equal(wflo_breaker_call(b, op_result, &failed), UV_EIO);
  assert_int_equal(wflo_breaker_call(b, op_result, &failed), UV_EIO);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_OPEN);
  assert_true(metric(STATE, KV("name", "obs-brk")) == 2.0);
  op_ran = 0;
  assert_int_equal(wflo_breaker_call(b, op_count, NULL), WFLO_E_BREAKER_OPEN);
  assert_int_equal(op_ran, 0);

  wflo_test_vclock_advance(11 * NS);
  assert_int_equal(wflo_breaker_call(b, op_ok, NULL), 0);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_HALF_OPEN);
  assert_true(metric(STATE, KV("name", "obs-brk")) == 1.0);
  assert_int_equal(wflo_breaker_call(b, op_ok, NULL), 0);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
  assert_true(metric(STATE, KV("name", "obs-brk")) == 0.0);
  /* An abandoned permit is a neutral outcome. */
  assert_int_equal(wflo_breaker_acquire(b, &permit), 0);
  wflo_breaker_abandon(&permit);

  assert_true(metric(CALLS, KV("name", "obs-brk", "outcome", "success")) == 5);
  assert_true(metric(CALLS, KV("name", "obs-brk", "outcome", "failure")) == 2);
  assert_true(metric(CALLS, KV("name", "obs-brk", "outcome", "ignored")) == 2);
  assert_true(metric(CALLS, KV("name", "obs-brk", "outcome", "rejected")) ==
              1);
  assert_true(metric(TRANS, KV("name", "obs-brk", "from", "closed", "to",
                               "open")) == 1);
  assert_true(metric(TRANS, KV("name", "obs-brk", "from", "open", "to",
                               "half_open")) == 1);
  assert_true(metric(TRANS, KV("name", "obs-brk", "from", "half_open", "to",
                               "closed")) == 1);

  /* Forced transitions count too; a reset of a closed breaker does not. */
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, 5.0), 0);
  assert_true(metric(STATE, KV("name", "obs-brk")) == 2.0);
  wflo_breaker_reset(b);
  wflo_breaker_reset(b);
  assert_true(metric(STATE, KV("name", "obs-brk")) == 0.0);
  assert_true(metric(TRANS, KV("name", "obs-brk", "from", "closed", "to",
                               "open")) == 2);
  assert_true(metric(TRANS, KV("name", "obs-brk", "from", "open", "to",
                               "closed")) == 1);
  assert_true(metric(TRANS, KV("name", "obs-brk", "from", "closed", "to",
                               "closed")) < 0);

  t = exposition();
  assert_line(t, "wflo_circuit_breaker_state{name=\"obs-brk\"} 0");
  assert_line(t, "wflo_circuit_breaker_calls_total{name=\"obs-brk\","
                 "outcome=\"success\"} 5");
  assert_line(t, "wflo_circuit_breaker_transitions_total{name=\"obs-brk\","
                 "from=\"half_open\",to=\"closed\"} 1");
  wflo_metrics_text_free(t);

  /* The state leaves with the breaker; counts stay. */
  wflo_breaker_put(b);
  assert_true(metric(STATE, KV("name", "obs-brk")) < 0);
  assert_true(metric(CALLS, KV("name", "obs-brk", "outcome", "success")) == 5);
  wflo_test_vclock_uninstall();
}

/* --- retry ------------------------------------------------------------------- */

typedef struct async_job {
  int fails; /* attempts still to fail */
  int done_err;
  int dones;
} async_job_t;

static void async_start(wflo_call_t *call, void *arg) {
  async_job_t *j = arg;
  wflo_call_done(call, j->fails-- > 0 ? UV_ETIMEDOUT : 0);
}

static void async_done(int err, void *arg) {
  async_job_t *j = arg;
  j->done_err = err;
  j->dones++;
}

static void test_retry_metrics(void **state) {
  wflo_retry_policy_t p, d;
  async_job_t job = {2, 1, 0};
  uv_loop_t loop;
  char name[8] = "pa";
  double sum;
  int n, rc;
  (void)state;
  wflo_test_vclock_install(1000 * NS);
  wflo_retry_policy_init(&p);
  p.name = "obs-retry";
  p.base_delay = 0.5;
  p.max_delay = 10.0;
  p.jitter = false;

  n = 2; /* two retries, then a success: delays 0.5 and 1.0 */
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), 0);
  assert_true(metric(ATTEMPTS, KV("policy", "obs-retry", "result", "retry")) ==
              2);
  assert_true(
      metric(ATTEMPTS, KV("policy", "obs-retry", "result", "success")) == 1);
  assert_true(
      metric(ATTEMPTS, KV("policy", "obs-retry", "result", "failure")) == 0);
  assert_int_equal(hist_count(DELAY, KV(NULL), &sum), 2);
  assert_true(sum == 1.5);

  p.max_retries = 1; /* exhausted: one retry, then the failure */
  n = 100;
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), UV_EIO);
  n = WFLO_E_INVAL; /* not retryable: one failure */
  assert_int_equal(wflo_retry_execute(&p, op_result, &n), WFLO_E_INVAL);
  assert_true(metric(ATTEMPTS, KV("policy", "obs-retry", "result", "retry")) ==
              3);
  assert_true(
      metric(ATTEMPTS, KV("policy", "obs-retry", "result", "failure")) == 2);

  n = 1; /* the statement form */
  WFLO_RETRY(&p, rc) { rc = op_fail_n(&n); }
  assert_int_equal(rc, 0);
  assert_true(metric(ATTEMPTS, KV("policy", "obs-retry", "result", "retry")) ==
              4);
  assert_true(
      metric(ATTEMPTS, KV("policy", "obs-retry", "result", "success")) == 2);
  assert_int_equal(hist_count(DELAY, KV(NULL), &sum), 4);
  assert_true(sum == 2.5);

  /* An unnamed policy counts under policy="". */
  wflo_retry_policy_init(&d);
  assert_int_equal(wflo_retry_execute(&d, op_ok, NULL), 0);
  assert_true(metric(ATTEMPTS, KV("policy", "", "result", "success")) == 1);

  /* A name buffer rewritten between calls: counted under its new text. */
  d.name = name;
  assert_int_equal(wflo_retry_execute(&d, op_ok, NULL), 0);
  name[1] = 'b';
  assert_int_equal(wflo_retry_execute(&d, op_ok, NULL), 0);
  assert_int_equal(wflo_retry_execute(&d, op_ok, NULL), 0);
  assert_true(metric(ATTEMPTS, KV("policy", "pa", "result", "success")) == 1);
  assert_true(metric(ATTEMPTS, KV("policy", "pb", "result", "success")) == 2);
  /* ... and after a reset the cached series are not trusted. */
  wflo_metrics_reset();
  assert_int_equal(wflo_retry_execute(&d, op_ok, NULL), 0);
  assert_true(metric(ATTEMPTS, KV("policy", "pb", "result", "success")) == 1);
  wflo_test_vclock_uninstall();

  /* Async: two failed attempts, then a success. */
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_retry_policy_init(&p);
  p.name = "obs-async";
  p.base_delay = 0.001;
  p.jitter = false;
  assert_int_equal(
      wflo_retry_start(&loop, &p, async_start, &job, async_done, NULL), 0);
  wflo_test_loop_close(&loop);
  assert_int_equal(job.dones, 1);
  assert_int_equal(job.done_err, 0);
  assert_true(metric(ATTEMPTS, KV("policy", "obs-async", "result", "retry")) ==
              2);
  assert_true(
      metric(ATTEMPTS, KV("policy", "obs-async", "result", "success")) == 1);
  assert_int_equal(hist_count(DELAY, KV(NULL), NULL), 2);
}

/* --- lock ---------------------------------------------------------------------- */

typedef struct lock_waiter {
  wflo_lock_req_t req;
  int status;
  int calls;
  double holders_seen; /* the holders gauge inside the callback */
} lock_waiter_t;

static void on_lock(wflo_lock_req_t *req, int status) {
  lock_waiter_t *w = req->data;
  w->status = status;
  w->calls++;
  if (status == 0) {
    w->holders_seen = -2; /* read on the main thread below */
    (void)wflo_lock_release(&req->permit);
  }
}

static void test_lock_metrics(void **state) {
  wflo_lock_config_t c;
  wflo_lock_permit_t p1, p2;
  lock_waiter_t w = {0};
  uv_loop_t loop;
  wflo_lock_t *l, *anon;
  json_int_t n;
  double sum;
  char *t;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_lock_config_init(&c);
  c.contention_threshold = 0.0; /* any wait is contention */
  assert_int_equal(wflo_lock_new("obs-lock", &c, &l), 0);
  assert_true(metric(HOLDERS, KV("resource", "obs-lock")) == 0);
  assert_true(metric(RATE, KV("resource", "obs-lock")) == 0);

  assert_int_equal(wflo_lock_acquire(l, &p1, NULL, -1), 0);
  assert_true(metric(HOLDERS, KV("resource", "obs-lock")) == 1);
  assert_int_equal(wflo_lock_acquire(l, &p2, NULL, 0), WFLO_E_LOCK_TIMEOUT);
  assert_true(metric(TIMEOUTS, KV("resource", "obs-lock")) == 1);

  /* An async waiter: queued, granted by the release, waits > 0 s. */
  w.req.data = &w;
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &w.req, "waiter", 5.0, on_lock), 0);
  assert_int_equal(wflo_lock_release(&p1), 0);
  assert_true(metric(HOLDERS, KV("resource", "obs-lock")) == 1); /* granted */
  run_loop(&loop);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.status, 0);
  assert_true(metric(HOLDERS, KV("resource", "obs-lock")) == 0);

  /* An async waiter that times out. */
  assert_int_equal(wflo_lock_acquire(l, &p1, NULL, -1), 0);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &w.req, "late", 0.001, on_lock), 0);
  run_loop(&loop);
  assert_int_equal(w.calls, 2);
  assert_int_equal(w.status, WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(wflo_lock_release(&p1), 0);

  /* Three grants: two that did not wait, one that did (contention). */
  n = hist_count(WAIT, KV("resource", "obs-lock"), &sum);
  assert_int_equal(n, 3);
  assert_true(sum > 0.0 && sum < 5.0);
  assert_true(metric(TIMEOUTS, KV("resource", "obs-lock")) == 2);
  assert_true(metric(RATE, KV("resource", "obs-lock")) == 1.0 / 3.0);
  assert_true(metric(HOLDERS, KV("resource", "obs-lock")) == 0);
  t = exposition();
  assert_line(t, "wflo_lock_wait_seconds_count{resource=\"obs-lock\"} 3");
  assert_line(t, "wflo_lock_timeouts_total{resource=\"obs-lock\"} 2");
  assert_line(t, "wflo_lock_holders{resource=\"obs-lock\"} 0");
  wflo_metrics_text_free(t);

  /* A private unnamed lock counts under resource="". */
  assert_int_equal(wflo_lock_new(NULL, NULL, &anon), 0);
  assert_int_equal(wflo_lock_acquire(anon, &p1, NULL, -1), 0);
  assert_true(metric(HOLDERS, KV("resource", "")) == 1);
  assert_int_equal(wflo_lock_release(&p1), 0);
  wflo_lock_put(anon);

  /* The gauges leave with the lock; the counts stay, and the grants that
   * did not wait were moved into the histogram when it went. */
  assert_int_equal(wflo_lock_acquire(l, &p1, NULL, -1), 0);
  assert_int_equal(wflo_lock_release(&p1), 0);
  wflo_lock_put(l);
  assert_true(metric(HOLDERS, KV("resource", "obs-lock")) < 0);
  assert_true(metric(RATE, KV("resource", "obs-lock")) < 0);
  assert_int_equal(hist_count(WAIT, KV("resource", "obs-lock"), NULL), 4);
  assert_true(metric(TIMEOUTS, KV("resource", "obs-lock")) == 2);
  wflo_test_loop_close(&loop);
}

/* --- budget and LLM ------------------------------------------------------------- */

static const char *const prices =
    "{\"models\": {\"obs-model\": {\"input_per_mtok\": 1.0, "
    "\"output_per_mtok\": 2.0, \"max_call_usd\": 0.01}}}";

static void load_prices(void) {
  json_t *j = json_loads(prices, 0, NULL);
  assert_non_null(j);
  assert_int_equal(wflo_pricing_load_json(j, NULL, 0), 0);
  json_decref(j);
}

static int llm_fill(void *arg, wflo_llm_usage_t *u) {
  (void)arg;
  u->prompt_tokens = 1000;
  u->completion_tokens = 500;
  return 0;
}

static int charge_current(void *arg) {
  return wflo_budget_charge(wflo_context_current(), *(const double *)arg);
}

static void test_budget_and_llm_metrics(void **state) {
  wflo_context_t *ctx, *child;
  wflo_budget_resv_t r;
  wflo_workflow_t *wf;
  double amount = 0.2;
  (void)state;
  load_prices();
  assert_int_equal(wflo_context_new(NULL, "obs-wf", 1.0, NULL, &ctx), 0);
  assert_true(metric(SPENT, KV("workflow", "obs-wf")) < 0);
  assert_int_equal(wflo_budget_charge(ctx, 0.25), 0);
  assert_int_equal(wflo_budget_reserve(ctx, 0.5, &r), 0);
  assert_int_equal(wflo_budget_commit(&r, 0.3), 0);
  assert_true(metric(SPENT, KV("workflow", "obs-wf")) == 0.55);
  assert_int_equal(wflo_budget_charge(ctx, 0.9), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_budget_reserve(ctx, 0.9, &r), WFLO_E_BUDGET_EXCEEDED);
  assert_true(metric(REFUSALS, KV("workflow", "obs-wf")) == 2);
  assert_true(metric(SPENT, KV("workflow", "obs-wf")) == 0.55);

  /* A child's spend rolls up into the parent's budget but is counted once,
   * under the committing context's workflow. */
  assert_int_equal(wflo_context_new(NULL, "obs-child", 1.0, ctx, &child), 0);
  assert_int_equal(wflo_budget_charge(child, 0.1), 0);
  assert_true(wflo_budget_spent(ctx) == 0.65);
  assert_true(metric(SPENT, KV("workflow", "obs-child")) == 0.1);
  assert_true(metric(SPENT, KV("workflow", "obs-wf")) == 0.55);

  /* LLM calls: tokens by model and kind; the cost is spend. */
  assert_int_equal(wflo_context_enter(child), 0);
  assert_int_equal(wflo_llm_call("obs-model", llm_fill, NULL), 0);
  assert_int_equal(wflo_context_exit(child), 0);
  assert_true(metric(SPENT, KV("workflow", "obs-child")) == 0.102);
  assert_true(metric(TOKENS, KV("model", "obs-model", "kind", "prompt")) ==
              1000);
  assert_true(metric(TOKENS, KV("model", "obs-model", "kind", "completion")) ==
              500);
  /* With no context nothing is charged, but the tokens were used. */
  assert_int_equal(wflo_llm_call("obs-model", llm_fill, NULL), 0);
  assert_true(metric(TOKENS, KV("model", "obs-model", "kind", "prompt")) ==
              2000);

  /* A workflow's executions charge under its name. */
  assert_int_equal(wflo_workflow_new("obs-flow", 0.5, &wf), 0);
  assert_int_equal(wflo_workflow_execute(wf, charge_current, &amount), 0);
  amount = 0.6;
  assert_int_equal(wflo_workflow_execute(wf, charge_current, &amount),
                   WFLO_E_BUDGET_EXCEEDED);
  assert_true(metric(SPENT, KV("workflow", "obs-flow")) == 0.2);
  assert_true(metric(REFUSALS, KV("workflow", "obs-flow")) == 1);
  wflo_workflow_put(wf);
  wflo_context_put(child);
  wflo_context_put(ctx);
}

/* --- a live run and promtool ------------------------------------------------------ */

/* Runs every pattern once, with hostile names where a name goes into a
 * label, and leaves state behind for the exposition: an open breaker, a
 * held lock. Returns what the caller must put back. */
typedef struct live {
  wflo_breaker_t *brk;
  wflo_lock_t *lock;
  wflo_lock_permit_t held;
  wflo_context_t *ctx;
} live_t;

static void live_run(live_t *lv) {
  wflo_breaker_config_t bc;
  wflo_retry_policy_t p;
  lock_waiter_t w = {0};
  wflo_lock_permit_t tmp;
  uv_loop_t loop;
  int n, failed = UV_EIO;

  wflo_breaker_config_init(&bc);
  bc.failure_threshold = 1;
  assert_int_equal(wflo_breaker_get(HOSTILE, &bc, &lv->brk), 0);
  assert_int_equal(wflo_breaker_call(lv->brk, op_ok, NULL), 0);
  assert_int_equal(wflo_breaker_call(lv->brk, op_result, &failed), UV_EIO);
  assert_int_equal(wflo_breaker_call(lv->brk, op_ok, NULL),
                   WFLO_E_BREAKER_OPEN);

  wflo_retry_policy_init(&p);
  p.name = HOSTILE;
  p.base_delay = 0.0;
  p.max_retries = 2;
  n = 1;
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), 0);

  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_lock_get(HOSTILE, NULL, &lv->lock), 0);
  assert_int_equal(wflo_lock_acquire(lv->lock, &lv->held, "me", -1), 0);
  assert_int_equal(wflo_lock_acquire(lv->lock, &tmp, NULL, 0),
                   WFLO_E_LOCK_TIMEOUT);
  w.req.data = &w;
  assert_int_equal(
      wflo_lock_acquire_async(&loop, lv->lock, &w.req, NULL, 0.001, on_lock),
      0);
  wflo_test_loop_close(&loop);
  assert_int_equal(w.status, WFLO_E_LOCK_TIMEOUT);

  load_prices();
  assert_int_equal(wflo_context_new(NULL, HOSTILE, 1.0, NULL, &lv->ctx), 0);
  assert_int_equal(wflo_budget_charge(lv->ctx, 0.5), 0);
  assert_int_equal(wflo_budget_charge(lv->ctx, 0.75), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_context_enter(lv->ctx), 0);
  assert_int_equal(wflo_llm_call("obs-model", llm_fill, NULL), 0);
  assert_int_equal(wflo_context_exit(lv->ctx), 0);
}

static void live_end(live_t *lv) {
  assert_int_equal(wflo_lock_release(&lv->held), 0);
  wflo_lock_put(lv->lock);
  wflo_breaker_put(lv->brk);
  wflo_context_put(lv->ctx);
}

static bool have_promtool(void) {
  return system("command -v promtool >/dev/null 2>&1") == 0;
}

/* Runs `promtool check metrics` on text; its output goes to out. */
static int promtool_check(const char *text, char *out, size_t outlen) {
  char path[] = "/tmp/wflo_obs_XXXXXX", cmd[128];
  int fd = mkstemp(path), status;
  size_t n, len = strlen(text);
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

static void test_live_exposition(void **state) {
  live_t lv;
  char *t, out[4096];
  int status;
  json_t *j, *s;
  (void)state;
  live_run(&lv);
  t = exposition();
  /* Hostile names are escaped as the text format requires, bad bytes are
   * U+FFFD, and the values are what the run did. */
  assert_line(t, "wflo_circuit_breaker_state{name=\"" HOSTILE_PROM "\"} 2");
  assert_line(t, "wflo_circuit_breaker_calls_total{name=\"" HOSTILE_PROM
                 "\",outcome=\"success\"} 1");
  assert_line(t, "wflo_circuit_breaker_calls_total{name=\"" HOSTILE_PROM
                 "\",outcome=\"failure\"} 1");
  assert_line(t, "wflo_circuit_breaker_calls_total{name=\"" HOSTILE_PROM
                 "\",outcome=\"rejected\"} 1");
  assert_line(t, "wflo_circuit_breaker_transitions_total{name=\"" HOSTILE_PROM
                 "\",from=\"closed\",to=\"open\"} 1");
  assert_line(t, "wflo_retry_attempts_total{policy=\"" HOSTILE_PROM
                 "\",result=\"retry\"} 1");
  assert_line(t, "wflo_retry_attempts_total{policy=\"" HOSTILE_PROM
                 "\",result=\"success\"} 1");
  assert_line(t, "wflo_retry_delay_seconds_count 1");
  assert_line(t, "wflo_retry_delay_seconds_bucket{le=\"0.01\"} 1");
  assert_line(t, "wflo_lock_holders{resource=\"" HOSTILE_PROM "\"} 1");
  assert_line(t, "wflo_lock_timeouts_total{resource=\"" HOSTILE_PROM "\"} 2");
  assert_line(t,
              "wflo_lock_wait_seconds_count{resource=\"" HOSTILE_PROM "\"} 1");
  assert_line(t, "wflo_lock_contention_rate{resource=\"" HOSTILE_PROM "\"} 0");
  assert_line(t, "wflo_budget_spent_usd_total{workflow=\"" HOSTILE_PROM
                 "\"} 0.502");
  assert_line(t,
              "wflo_budget_refusals_total{workflow=\"" HOSTILE_PROM "\"} 1");
  assert_line(t, "wflo_llm_tokens_total{model=\"obs-model\","
                 "kind=\"completion\"} 500");
  if (have_promtool()) {
    status = promtool_check(t, out, sizeof(out));
    if (status != 0)
      fail_msg("promtool check metrics failed (%d):\n%s\n--- input ---\n%s",
               status, out, t);
    /* A broken exposition is caught, so the pass above means something. */
    assert_int_not_equal(promtool_check("# TYPE x counter\nx{a=\"q\"u\"} 1\n",
                                        out, sizeof(out)),
                         0);
  } else {
    print_message("SKIP (promtool part): promtool not found (Debian: "
                  "apt-get install prometheus)\n");
  }
  wflo_metrics_text_free(t);

  /* The JSON form carries the names as valid UTF-8. */
  j = wflo_metrics_json();
  assert_non_null(j);
  s = find_series(j, CALLS, KV("name", HOSTILE_UTF8, "outcome", "failure"));
  assert_non_null(s);
  assert_int_equal(json_integer_value(json_object_get(s, "value")), 1);
  json_decref(j);
  live_end(&lv);
}

/* --- events -------------------------------------------------------------------------- */

typedef struct event_spec {
  const char *name;
  wflo_log_level_t level;
  const char *fields[6]; /* NULL-terminated */
} event_spec_t;

/* DESIGN.md's table, verbatim. */
static const event_spec_t design_events[] = {
    {"retry_scheduled",
     WFLO_LOG_WARN,
     {"policy", "attempt", "error", "delay_seconds", NULL}},
    {"retry_succeeded", WFLO_LOG_INFO, {"policy", "attempts", NULL}},
    {"retry_exhausted", WFLO_LOG_ERROR, {"policy", "attempts", "error", NULL}},
    {"circuit_breaker_opened",
     WFLO_LOG_ERROR,
     {"name", "from", "failure_count", NULL}},
    {"circuit_breaker_half_open", WFLO_LOG_INFO, {"name", "from", NULL}},
    {"circuit_breaker_closed", WFLO_LOG_INFO, {"name", "from", NULL}},
    {"resource_contention_detected",
     WFLO_LOG_WARN,
     {"resource_name", "holder", "wait_time_seconds", NULL}},
    {"resource_lock_timeout",
     WFLO_LOG_ERROR,
     {"resource_name", "holder", "wait_time_seconds", NULL}},
    {"budget_exceeded",
     WFLO_LOG_WARN,
     {"execution_id", "workflow", "budget_usd", "spent_usd", "requested_usd"}},
    {"config_invalid", WFLO_LOG_ERROR, {"what", "field", "reason", NULL}},
    {"config_conflict", WFLO_LOG_WARN, {"what", "name", NULL}},
    {"ledger_failed", WFLO_LOG_ERROR, {"execution_id", "error", NULL}},
};

static const event_spec_t *spec_of(const char *name) {
  size_t i;
  for (i = 0; i < ARRAY_SIZE(design_events); i++)
    if (strcmp(design_events[i].name, name) == 0)
      return &design_events[i];
  return NULL;
}

static int failing_ledger(const json_t *entry, void *ud) {
  (void)entry;
  (void)ud;
  return UV_EIO;
}

/* Makes every pattern emit every event of the table at least once. */
static void emit_every_event(void) {
  wflo_breaker_config_t bc, other;
  wflo_retry_policy_t p;
  wflo_lock_config_t lc;
  wflo_ledger_t ledger = {failing_ledger, NULL};
  wflo_lock_permit_t held, tmp;
  lock_waiter_t w = {0};
  wflo_breaker_t *b, *b2;
  wflo_context_t *ctx;
  wflo_lock_t *l;
  uv_loop_t loop;
  int n, failed = UV_EIO;

  /* retry: scheduled + succeeded, then exhausted */
  wflo_retry_policy_init(&p);
  p.name = "ev-retry";
  p.base_delay = 0.0;
  p.max_retries = 1;
  n = 1;
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), 0);
  n = 10;
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), UV_EIO);

  /* breaker: opened, half_open, closed; config_conflict; config_invalid */
  wflo_breaker_config_init(&bc);
  bc.failure_threshold = 1;
  bc.recovery_timeout = 1.0;
  bc.success_threshold = 1;
  assert_int_equal(wflo_breaker_get("ev-brk", &bc, &b), 0);
  assert_int_equal(wflo_breaker_call(b, op_result, &failed), UV_EIO);
  wflo_test_vclock_advance(2 * NS);
  assert_int_equal(wflo_breaker_call(b, op_ok, NULL), 0);
  wflo_breaker_config_init(&other);
  assert_int_equal(wflo_breaker_get("ev-brk", &other, &b2), 0);
  other.failure_threshold = 0;
  assert_int_equal(wflo_breaker_new("bad", &other, &b2), WFLO_E_INVAL);
  wflo_breaker_put(b);
  wflo_breaker_put(b);

  /* lock: timeout (try-acquire), contention (an async wait over 0 s) */
  wflo_lock_config_init(&lc);
  lc.contention_threshold = 0.0;
  assert_int_equal(wflo_lock_new("ev-lock", &lc, &l), 0);
  assert_int_equal(wflo_lock_acquire(l, &held, "holder-1", -1), 0);
  assert_int_equal(wflo_lock_acquire(l, &tmp, "holder-2", 0),
                   WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(uv_loop_init(&loop), 0);
  w.req.data = &w;
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &w.req, "holder-3", 5.0, on_lock), 0);
  /* The wait is measured on the virtual clock: make it visible. */
  wflo_test_vclock_advance(NS / 1000);
  assert_int_equal(wflo_lock_release(&held), 0);
  wflo_test_loop_close(&loop);
  assert_int_equal(w.status, 0);
  wflo_lock_put(l);

  /* budget: exceeded; ledger: failed */
  assert_int_equal(wflo_context_new("ev-exec", "ev-wf", 1.0, NULL, &ctx), 0);
  assert_int_equal(wflo_budget_charge(ctx, 2.0), WFLO_E_BUDGET_EXCEEDED);
  wflo_set_ledger(&ledger);
  assert_int_equal(wflo_budget_charge(ctx, 0.5), 0);
  wflo_set_ledger(NULL);
  wflo_context_put(ctx);
}

static void test_every_design_event(void **state) {
  const wflo_test_event_t *ev;
  size_t i, k, total;
  (void)state;
  wflo_test_vclock_install(1000 * NS);
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_DEBUG);
  emit_every_event();
  wflo_set_log_level(WFLO_LOG_OFF);

  for (i = 0; i < ARRAY_SIZE(design_events); i++)
    if (wflo_test_events_count(design_events[i].name) == 0)
      fail_msg("event %s was never emitted", design_events[i].name);
  total = wflo_test_events_count(NULL);
  for (i = 0; i < total; i++) {
    const event_spec_t *spec;
    size_t nfields = 0;
    ev = wflo_test_events_get(NULL, i);
    assert_non_null(ev);
    spec = spec_of(ev->name);
    if (spec == NULL)
      fail_msg("event %s is not in DESIGN.md's table", ev->name);
    if (ev->level != spec->level)
      fail_msg("event %s at level %s, DESIGN.md says %s", ev->name,
               wflo_log_level_name(ev->level),
               wflo_log_level_name(spec->level));
    for (k = 0; k < 6 && spec->fields[k] != NULL; k++) {
      if (json_object_get(ev->fields, spec->fields[k]) == NULL)
        fail_msg("event %s lacks field %s", ev->name, spec->fields[k]);
      nfields++;
    }
    if (json_object_size(ev->fields) != nfields)
      fail_msg("event %s has %zu fields, DESIGN.md lists %zu", ev->name,
               json_object_size(ev->fields), nfields);
  }

  /* error fields carry wflo_err_name() of the code; spot-check values. */
  ev = wflo_test_events_get("retry_exhausted", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "error")),
                      wflo_err_name(UV_EIO));
  assert_string_equal(json_string_value(json_object_get(ev->fields, "policy")),
                      "ev-retry");
  ev = wflo_test_events_get("ledger_failed", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "error")),
                      wflo_err_name(UV_EIO));
  assert_string_equal(
      json_string_value(json_object_get(ev->fields, "execution_id")),
      "ev-exec");
  ev = wflo_test_events_get("circuit_breaker_opened", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "from")),
                      "closed");
  assert_int_equal(
      json_integer_value(json_object_get(ev->fields, "failure_count")), 1);
  ev = wflo_test_events_get("resource_contention_detected", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "holder-3");
  assert_true(
      json_real_value(json_object_get(ev->fields, "wait_time_seconds")) > 0.0);
  ev = wflo_test_events_get("resource_lock_timeout", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "holder-2");
  ev = wflo_test_events_get("budget_exceeded", 0);
  assert_true(json_real_value(json_object_get(ev->fields, "requested_usd")) ==
              2.0);
  assert_string_equal(
      json_string_value(json_object_get(ev->fields, "workflow")), "ev-wf");
  ev = wflo_test_events_get("config_invalid", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "field")),
                      "failure_threshold");
  wflo_test_events_uninstall();
  wflo_test_vclock_uninstall();
}

/* --- the default handler ------------------------------------------------------------ */

static void test_default_handler_json_lines(void **state) {
  char path[] = "/tmp/wflo_obs_events_XXXXXX", line[4096];
  wflo_breaker_config_t bc;
  wflo_retry_policy_t p;
  wflo_lock_permit_t held, tmp;
  wflo_breaker_t *b;
  wflo_context_t *ctx;
  wflo_lock_t *l;
  int fd, saved, n, failed = UV_EIO;
  size_t lines = 0, hostile = 0;
  FILE *f;
  (void)state;
  fd = mkstemp(path);
  assert_true(fd >= 0);
  fflush(stderr);
  saved = dup(2);
  assert_true(saved >= 0);
  assert_true(dup2(fd, 2) >= 0);
  close(fd);

  wflo_set_event_handler(NULL, NULL);
  wflo_set_log_level(WFLO_LOG_DEBUG);
  wflo_breaker_config_init(&bc);
  bc.failure_threshold = 1;
  assert_int_equal(wflo_breaker_new(HOSTILE, &bc, &b), 0);
  assert_int_equal(wflo_breaker_call(b, op_result, &failed), UV_EIO);
  wflo_breaker_reset(b);
  wflo_breaker_put(b);
  wflo_retry_policy_init(&p);
  p.name = HOSTILE;
  p.base_delay = 0.0;
  p.max_retries = 1;
  n = 5;
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), UV_EIO);
  assert_int_equal(wflo_lock_new(HOSTILE, NULL, &l), 0);
  assert_int_equal(wflo_lock_acquire(l, &held, HOSTILE, -1), 0);
  assert_int_equal(wflo_lock_acquire(l, &tmp, HOSTILE, 0),
                   WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(wflo_lock_release(&held), 0);
  wflo_lock_put(l);
  assert_int_equal(wflo_context_new(HOSTILE, HOSTILE, 0.0, NULL, &ctx), 0);
  assert_int_equal(wflo_budget_charge(ctx, 1.0), WFLO_E_BUDGET_EXCEEDED);
  wflo_context_put(ctx);
  wflo_set_log_level(WFLO_LOG_OFF);

  fflush(stderr);
  assert_true(dup2(saved, 2) >= 0);
  close(saved);
  f = fopen(path, "r");
  assert_non_null(f);
  while (fgets(line, sizeof(line), f) != NULL) {
    json_error_t err;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    json_t *v;
    size_t i;
    const char *keys[] = {"name",   "policy",       "resource_name",
                          "holder", "execution_id", "workflow"};
    if (j == NULL)
      fail_msg("line %zu is not JSON (%s): %s", lines + 1, err.text, line);
    assert_true(json_is_object(j));
    assert_non_null(json_string_value(json_object_get(j, "event")));
    assert_non_null(json_string_value(json_object_get(j, "level")));
    assert_true(json_is_number(json_object_get(j, "ts")));
    for (i = 0; i < ARRAY_SIZE(keys); i++) {
      v = json_object_get(j, keys[i]);
      if (v != NULL && json_is_string(v)) {
        assert_string_equal(json_string_value(v), HOSTILE_UTF8);
        hostile++;
      }
    }
    json_decref(j);
    lines++;
  }
  fclose(f);
  unlink(path);
  /* opened, closed; scheduled, exhausted; timeout; budget_exceeded */
  assert_true(lines >= 6);
  assert_true(hostile >= 8);
}

/* --- health ------------------------------------------------------------------------ */

static json_t *health_entry(json_t *root, const char *section, const char *key,
                            const char *name) {
  json_t *e;
  size_t i;
  json_array_foreach(json_object_get(root, section), i, e) {
    const char *n = json_string_value(json_object_get(e, key));
    if (n != NULL && strcmp(n, name) == 0)
      return e;
  }
  return NULL;
}

/* A raw HTTP client on the test's loop. */
typedef struct http_client {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  char resp[8192];
  size_t len;
  bool closed;
} http_client_t;

static void hc_close(uv_handle_t *h) {
  ((http_client_t *)h->data)->closed = true;
}

static void hc_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  http_client_t *c = h->data;
  (void)n;
  *buf =
      uv_buf_init(c->resp + c->len, (unsigned)(sizeof(c->resp) - 1 - c->len));
}

static void hc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  http_client_t *c = s->data;
  (void)buf;
  if (n < 0 || c->len + (size_t)n >= sizeof(c->resp) - 1) {
    uv_close((uv_handle_t *)&c->tcp, hc_close);
    return;
  }
  c->len += (size_t)n;
  c->resp[c->len] = '\0';
}

static void hc_written(uv_write_t *req, int status) {
  (void)req;
  (void)status;
}

static void hc_connected(uv_connect_t *req, int status) {
  static char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  http_client_t *c = req->data;
  uv_buf_t b = uv_buf_init(get, sizeof(get) - 1);
  if (status < 0) {
    uv_close((uv_handle_t *)&c->tcp, hc_close);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, hc_alloc, hc_read);
  uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, hc_written);
}

/* GET /healthz; returns the status code. */
static int healthz(uv_loop_t *loop, int port) {
  http_client_t c;
  struct sockaddr_in addr;
  int code = -1;
  memset(&c, 0, sizeof(c));
  assert_int_equal(uv_ip4_addr("127.0.0.1", port, &addr), 0);
  assert_int_equal(uv_tcp_init(loop, &c.tcp), 0);
  c.tcp.data = &c;
  c.creq.data = &c;
  assert_int_equal(uv_tcp_connect(&c.creq, &c.tcp,
                                  (const struct sockaddr *)&addr,
                                  hc_connected),
                   0);
  while (!c.closed)
    uv_run(loop, UV_RUN_ONCE);
  if (sscanf(c.resp, "HTTP/1.1 %d ", &code) != 1)
    fail_msg("no HTTP status in: %s", c.resp);
  return code;
}

static void on_server_closed(void *ud) { (*(int *)ud)++; }

static int refuse_budget(void *arg) {
  (void)arg;
  return wflo_budget_charge(wflo_context_current(), 1.0);
}

static void test_health_sections_and_healthz(void **state) {
  wflo_metrics_server_t *srv;
  wflo_lock_permit_t held;
  lock_waiter_t w = {0};
  wflo_breaker_t *b;
  wflo_workflow_t *wf;
  wflo_lock_t *l;
  json_t *root, *e;
  uv_loop_t loop;
  int port, closed = 0;
  double amount = 0.25;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_breaker_get("obs-health", NULL, &b), 0);
  assert_int_equal(wflo_lock_get("obs-health-lock", NULL, &l), 0);
  assert_int_equal(wflo_workflow_new("obs-health-wf", 0.5, &wf), 0);
  assert_int_equal(wflo_workflow_execute(wf, charge_current, &amount), 0);
  assert_int_equal(wflo_workflow_execute(wf, refuse_budget, NULL),
                   WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_lock_acquire(l, &held, NULL, -1), 0);
  w.req.data = &w;
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &w.req, NULL, 60.0, on_lock), 0);
  assert_true(wflo_health_ok());

  root = wflo_health_json();
  assert_non_null(root);
  assert_true(json_is_true(json_object_get(root, "healthy")));
  e = health_entry(root, "breakers", "name", "obs-health");
  assert_non_null(e);
  assert_string_equal(json_string_value(json_object_get(e, "state")),
                      "closed");
  assert_true(json_is_true(json_object_get(e, "healthy")));
  e = health_entry(root, "locks", "resource_name", "obs-health-lock");
  assert_non_null(e);
  assert_int_equal(json_integer_value(json_object_get(e, "current_waiters")),
                   1);
  assert_int_equal(json_integer_value(json_object_get(e, "current_holders")),
                   1);
  assert_true(json_is_number(json_object_get(e, "contention_rate")));
  e = health_entry(root, "workflows", "name", "obs-health-wf");
  assert_non_null(e);
  assert_int_equal(json_integer_value(json_object_get(e, "executions")), 2);
  assert_int_equal(json_integer_value(json_object_get(e, "refused")), 1);
  assert_true(json_real_value(json_object_get(e, "spent_usd")) == 0.25);
  json_decref(root);

  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  assert_true(port > 0);
  assert_int_equal(healthz(&loop, port), 200);

  /* An open breaker makes libwflo unhealthy. */
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, 60.0), 0);
  assert_false(wflo_health_ok());
  root = wflo_health_json();
  assert_non_null(root);
  assert_true(json_is_false(json_object_get(root, "healthy")));
  assert_string_equal(json_string_value(json_object_get(root, "status")),
                      "unhealthy");
  e = health_entry(root, "breakers", "name", "obs-health");
  assert_string_equal(json_string_value(json_object_get(e, "state")), "open");
  assert_true(json_is_false(json_object_get(e, "healthy")));
  json_decref(root);
  assert_int_equal(healthz(&loop, port), 503);

  wflo_breaker_reset(b);
  assert_true(wflo_health_ok());
  assert_int_equal(healthz(&loop, port), 200);

  assert_int_equal(wflo_metrics_server_close(srv, on_server_closed, &closed),
                   0);
  assert_int_equal(wflo_lock_release(&held), 0);
  wflo_test_loop_close(&loop);
  assert_int_equal(closed, 1);
  assert_int_equal(w.status, 0);
  wflo_breaker_put(b);
  wflo_lock_put(l);
  wflo_workflow_put(wf);
  /* Gone from the summary with their last reference. */
  root = wflo_health_json();
  assert_null(health_entry(root, "breakers", "name", "obs-health"));
  assert_null(health_entry(root, "locks", "resource_name", "obs-health-lock"));
  assert_null(health_entry(root, "workflows", "name", "obs-health-wf"));
  json_decref(root);
}

/* --- a health check feeds its breaker ------------------------------------------------ */

static atomic_int probe_result;
static atomic_int probes;

static void probe(wflo_health_probe_t *p, void *ud) {
  (void)ud;
  atomic_fetch_add(&probes, 1);
  wflo_health_probe_done(p, atomic_load(&probe_result));
}

static void on_flag(uv_timer_t *t) { *(bool *)t->data = true; }

/* Runs the loop until b is in state `want`, at most `ms` of real time. */
static bool run_until_state(uv_loop_t *loop, wflo_breaker_t *b,
                            wflo_breaker_state_t want, uint64_t ms) {
  uv_timer_t t;
  bool late = false;
  assert_int_equal(uv_timer_init(loop, &t), 0);
  t.data = &late;
  assert_int_equal(uv_timer_start(&t, on_flag, ms, 0), 0);
  while (!late && wflo_breaker_state(b) != want)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return wflo_breaker_state(b) == want;
}

static void test_health_check_opens_breaker(void **state) {
  wflo_health_check_config_t hc;
  wflo_breaker_config_t bc;
  wflo_health_check_t *check;
  wflo_breaker_t *b;
  uv_loop_t loop;
  json_t *root;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_breaker_config_init(&bc);
  bc.failure_threshold = 3;
  bc.recovery_timeout = 0.05;
  bc.success_threshold = 2;
  assert_int_equal(wflo_breaker_get("obs-dep", &bc, &b), 0);
  wflo_health_check_config_init(&hc);
  hc.name = "obs-dep-check";
  hc.period = 0.002;
  hc.timeout = 1.0;
  hc.probe = probe;
  hc.breaker = b;
  atomic_store(&probe_result, UV_ECONNREFUSED);
  assert_int_equal(wflo_health_check_start(&loop, &hc, &check), 0);

  /* The dependency is down: the probes alone open the circuit... */
  assert_true(run_until_state(&loop, b, WFLO_BREAKER_OPEN, 5000));
  assert_true(atomic_load(&probes) >= 3);
  assert_true(metric(CALLS, KV("name", "obs-dep", "outcome", "failure")) == 3);
  /* ... so a user's call fails fast without reaching the dependency. */
  op_ran = 0;
  assert_int_equal(wflo_breaker_call(b, op_count, NULL), WFLO_E_BREAKER_OPEN);
  assert_int_equal(op_ran, 0);
  root = wflo_health_json();
  assert_non_null(root);
  assert_true(json_is_false(json_object_get(root, "healthy")));
  json_decref(root);

  /* It recovers: probes are the HALF_OPEN trials that close it again. */
  atomic_store(&probe_result, 0);
  assert_true(run_until_state(&loop, b, WFLO_BREAKER_CLOSED, 5000));
  assert_true(metric(TRANS, KV("name", "obs-dep", "from", "half_open", "to",
                               "closed")) >= 1);
  assert_true(wflo_health_ok());

  assert_int_equal(wflo_health_check_stop(check), 0);
  wflo_test_loop_close(&loop);
  /* The check held its own reference on the breaker until it ended. */
  wflo_breaker_put(b);
  root = wflo_health_json();
  assert_null(health_entry(root, "breakers", "name", "obs-dep"));
  json_decref(root);
}

/* --- switched off ------------------------------------------------------------------- */

/* Counters and histograms of j, as text: what a disabled run must not
 * change (gauges mirror state and may). */
static char *counts_text(void) {
  json_t *j = wflo_metrics_json(), *fam, *out = json_object();
  const char *name;
  char *text;
  assert_non_null(j);
  json_object_foreach(json_object_get(j, "metrics"), name, fam) {
    if (strcmp(json_string_value(json_object_get(fam, "type")), "gauge") != 0)
      json_object_set(out, name, json_object_get(fam, "series"));
  }
  text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
  assert_non_null(text);
  json_decref(out);
  json_decref(j);
  return text;
}

/* Fails with the neighbourhood of the first difference (cmocka cuts long
 * messages short). */
static void assert_same_text(const char *a, const char *b) {
  size_t i = 0, from;
  while (a[i] != '\0' && a[i] == b[i])
    i++;
  if (a[i] == b[i])
    return;
  from = i > 200 ? i - 200 : 0;
  fail_msg("texts differ at %zu:\n%.300s\n---\n%.300s", i, a + from, b + from);
}

static void test_disabled(void **state) {
  live_t lv;
  char *before, *after;
  wflo_breaker_t *fresh;
  (void)state;
  live_run(&lv);
  live_end(&lv);
  before = counts_text();
  wflo_metrics_enable(false);
  assert_false(wflo_metrics_enabled());
  live_run(&lv);
  /* A breaker first used while off gets no series either. */
  assert_int_equal(wflo_breaker_new("obs-off", NULL, &fresh), 0);
  assert_int_equal(wflo_breaker_call(fresh, op_ok, NULL), 0);
  assert_true(metric(STATE, KV("name", "obs-off")) < 0);
  after = counts_text();
  assert_same_text(before, after);
  free(after);
  /* Gauges stay current while off (the live run's lock is held). */
  assert_true(metric(HOLDERS, KV("resource", HOSTILE_UTF8)) == 1);
  live_end(&lv);
  wflo_metrics_enable(true);
  assert_int_equal(wflo_breaker_call(fresh, op_ok, NULL), 0);
  assert_true(metric(CALLS, KV("name", "obs-off", "outcome", "success")) == 1);
  wflo_breaker_put(fresh);
  free(before);
}

/* --- threads ------------------------------------------------------------------------- */

#define T_THREADS 4

typedef struct worker {
  wflo_breaker_t *b;
  wflo_lock_t *l;
  wflo_context_t *ctx;
  wflo_retry_policy_t *p;
  int iters;
} worker_t;

static atomic_int worker_errors;
static atomic_bool scraping;

static void worker_main(void *arg) {
  worker_t *w = arg;
  wflo_lock_permit_t permit;
  int i, errors = 0;
  for (i = 0; i < w->iters; i++) {
    errors += wflo_breaker_call(w->b, op_ok, NULL) != 0;
    errors += wflo_retry_execute(w->p, op_ok, NULL) != 0;
    if (wflo_lock_acquire(w->l, &permit, NULL, -1) == 0)
      errors += wflo_lock_release(&permit) != 0;
    else
      errors++;
    errors += wflo_budget_charge(w->ctx, 1e-6) != 0;
  }
  atomic_fetch_add(&worker_errors, errors);
}

static void scraper_main(void *arg) {
  (void)arg;
  while (atomic_load(&scraping)) {
    char *t = wflo_metrics_prometheus_text(NULL);
    json_t *h = wflo_health_json();
    wflo_metrics_text_free(t);
    json_decref(h);
  }
}

static void test_threads_exact(void **state) {
  wflo_lock_config_t lc;
  wflo_retry_policy_t p;
  worker_t w[T_THREADS];
  uv_thread_t t[T_THREADS], scraper;
  wflo_breaker_t *b;
  wflo_lock_t *l;
  wflo_context_t *ctx;
  int i, iters = wflo_test_scale(20000);
  (void)state;
  wflo_lock_config_init(&lc);
  lc.max_concurrent = 2;
  assert_int_equal(wflo_breaker_get("obs-mt", NULL, &b), 0);
  assert_int_equal(wflo_lock_get("obs-mt", &lc, &l), 0);
  assert_int_equal(
      wflo_context_new(NULL, "obs-mt", WFLO_BUDGET_UNLIMITED, NULL, &ctx), 0);
  wflo_retry_policy_init(&p);
  p.name = "obs-mt";
  atomic_store(&worker_errors, 0);
  atomic_store(&scraping, true);
  assert_int_equal(uv_thread_create(&scraper, scraper_main, NULL), 0);
  for (i = 0; i < T_THREADS; i++) {
    w[i] = (worker_t){b, l, ctx, &p, iters};
    assert_int_equal(uv_thread_create(&t[i], worker_main, &w[i]), 0);
  }
  for (i = 0; i < T_THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  atomic_store(&scraping, false);
  assert_int_equal(uv_thread_join(&scraper), 0);
  assert_int_equal(atomic_load(&worker_errors), 0);

  assert_true(metric(CALLS, KV("name", "obs-mt", "outcome", "success")) ==
              (double)T_THREADS * iters);
  assert_true(metric(ATTEMPTS, KV("policy", "obs-mt", "result", "success")) ==
              (double)T_THREADS * iters);
  assert_int_equal(hist_count(WAIT, KV("resource", "obs-mt"), NULL),
                   (json_int_t)T_THREADS * iters);
  assert_true(metric(HOLDERS, KV("resource", "obs-mt")) == 0);
  /* 1e-6 USD = 1e6 pico each: the sum is exact. */
  assert_true(metric(SPENT, KV("workflow", "obs-mt")) ==
              (double)((uint64_t)T_THREADS * (uint64_t)iters * 1000000u) /
                  1e12);
  wflo_context_put(ctx);
  wflo_lock_put(l);
  wflo_breaker_put(b);
}

/* --- out of memory ------------------------------------------------------------------- */

/* Instrumentation never fails a call: metric series that cannot be made
 * are skipped, and nothing leaks. */
static int oom_scenario(void *ud) {
  wflo_breaker_t *b;
  wflo_lock_t *l;
  wflo_context_t *ctx;
  wflo_lock_permit_t permit;
  wflo_retry_policy_t p;
  json_t *j;
  char *t;
  int rc, n = 1;
  (void)ud;
  rc = wflo_breaker_new("oom-brk", NULL, &b);
  if (rc != 0)
    return rc;
  rc = wflo_lock_new("oom-lock", NULL, &l);
  if (rc != 0)
    goto fail_put_breaker;
  rc = wflo_context_new("oom-exec", "oom-wf", 1.0, NULL, &ctx);
  if (rc != 0)
    goto fail_put_lock;
  wflo_retry_policy_init(&p);
  p.name = "oom-retry";
  p.base_delay = 0.0;
  assert_int_equal(wflo_breaker_call(b, op_ok, NULL), 0);
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_OPEN, 1.0), 0);
  assert_int_equal(wflo_retry_execute(&p, op_fail_n, &n), 0);
  assert_int_equal(wflo_lock_acquire(l, &permit, NULL, -1), 0);
  assert_int_equal(wflo_lock_release(&permit), 0);
  assert_int_equal(wflo_budget_charge(ctx, 0.5), 0);
  assert_int_equal(wflo_budget_charge(ctx, 0.75), WFLO_E_BUDGET_EXCEEDED);
  j = wflo_metrics_json();
  json_decref(j);
  j = wflo_health_json();
  json_decref(j);
  t = wflo_metrics_prometheus_text(NULL);
  wflo_metrics_text_free(t);
  wflo_context_put(ctx);
fail_put_lock:
  wflo_lock_put(l);
fail_put_breaker:
  wflo_breaker_put(b);
  return rc;
}

static void test_oom(void **state) {
  (void)state;
  wflo_test_oom_loop(oom_scenario, NULL, 0);
  wflo_test_oom_loop_ex(oom_scenario, NULL, 0, WFLO_TEST_FAIL_AFTER);
}

int main(void) {
#define TEST(f) cmocka_unit_test_setup_teardown(f, wflo_test_setup, teardown)
  const struct CMUnitTest tests[] = {
      TEST(test_breaker_metrics),
      TEST(test_retry_metrics),
      TEST(test_lock_metrics),
      TEST(test_budget_and_llm_metrics),
      TEST(test_live_exposition),
      TEST(test_every_design_event),
      TEST(test_default_handler_json_lines),
      TEST(test_health_sections_and_healthz),
      TEST(test_health_check_opens_breaker),
      TEST(test_disabled),
      TEST(test_threads_exact),
      TEST(test_oom),
  };
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
