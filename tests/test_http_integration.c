/* Integration test: guarded LLM calls (examples/support/llm_guarded.c:
 * retry + breaker + lock + budget around the libcurl client) against the
 * fake server (tests/support/fake_llm.c) on its own thread, over 127.0.0.1.
 * Each fault the server can script is checked for what the whole stack does
 * with it: exact attempt and request counts, Retry-After honoured in real
 * time, timeouts and dropped connections retried, 4xx not retried, a
 * sustained outage opening the breaker (later calls never reach the server)
 * and its recovery, malformed answers a clear error with nothing charged,
 * spend equal to the priced usage, budget refusals before any request, the
 * lock bounding requests in flight, cancel and close.
 * Every test ends with uv_loop_close() == 0, no libwflo state on the loop and
 * no libwflo allocation alive; ASan and valgrind check the malloc side. */
/* ctest-labels: threads */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "fake_llm.h"
#include "harness.h"
#include "internal/loop.h"
#include "llm_guarded.h"

#define MODEL "it-model"
#define IN_PER_MTOK 3.0   /* USD per million prompt tokens */
#define OUT_PER_MTOK 15.0 /* USD per million completion tokens */
#define MAX_CALL_USD 0.01 /* reserved by every attempt */
#define BUDGET_USD 1.0
#define STALL_TIMEOUT_MS 200
#define LONG_TIMEOUT_MS 10000

/* What a call's callback saw (copied: the result dies with the callback). */
typedef struct got {
  int calls;
  int in_ctx; /* the callback ran inside the call's context */
  llm_guarded_result_t r;
  char text[256];
  char detail[256];
  int has_text;
  uint64_t done_ns;
} got_t;

/* What the retry's on_retry saw. */
typedef struct retries {
  int n;
  int errs[16];
  double delays[16];
  uint64_t last_ns; /* when the last wait began */
} retries_t;

typedef struct fx {
  uv_loop_t loop;
  fake_llm_t *f;
  llm_guarded_config_t cfg;
  llm_guarded_t *g;
  wflo_workflow_t *wf;
  wflo_context_t *ctx; /* the current execution, NULL once ended */
  retries_t retries;
  int guard_closed;
  wflo_log_level_t saved_level;
  char url[64];
} fx_t;

static long scaled(long ms) {
  const char *m = getenv("WFLO_TEST_TIMEOUT_MULTIPLIER");
  double f = m != NULL ? strtod(m, NULL) : 1.0;
  return f >= 1.0 ? (long)((double)ms * f) : ms;
}

static void on_retry(int attempt, int err, double delay, void *ud) {
  retries_t *t = ud;
  if (t->n < 16) {
    t->errs[t->n] = err;
    t->delays[t->n] = delay;
  }
  t->n++;
  (void)attempt;
  t->last_ns = uv_hrtime();
}

static void on_done(const llm_guarded_result_t *r, void *ud) {
  got_t *g = ud;
  g->calls++;
  g->done_ns = uv_hrtime();
  g->in_ctx = wflo_context_current() != NULL;
  g->r = *r;
  g->has_text = r->text != NULL;
  snprintf(g->text, sizeof(g->text), "%s", r->text != NULL ? r->text : "");
  snprintf(g->detail, sizeof(g->detail), "%s", r->detail);
  g->r.text = g->r.detail = NULL; /* borrowed: gone after the callback */
}

static void set_flag(void *ud) { (*(int *)ud)++; }

static void load_prices(void) {
  char err[256];
  json_t *p = json_pack("{s:{s:{s:f, s:f, s:f}}}", "models", MODEL,
                        "input_per_mtok", IN_PER_MTOK, "output_per_mtok",
                        OUT_PER_MTOK, "max_call_usd", MAX_CALL_USD);
  assert_non_null(p);
  assert_int_equal(wflo_pricing_load_json(p, err, sizeof(err)), 0);
  json_decref(p);
}

/* The cost of a usage, by hand from the loaded prices. */
static double by_hand(uint64_t pt, uint64_t ct) {
  return ((double)pt * IN_PER_MTOK + (double)ct * OUT_PER_MTOK) / 1e6;
}

static int setup(void **state) {
  fx_t *x = calloc(1, sizeof(*x));
  wflo_test_setup(state);
  assert_non_null(x);
  x->saved_level = wflo_get_log_level();
  wflo_set_log_level(WFLO_LOG_OFF); /* retries warn; keep stderr quiet */
  assert_int_equal(uv_loop_init(&x->loop), 0);
  assert_int_equal(fake_llm_start_thread(&x->f), 0);
  load_prices();
  llm_guarded_config_init(&x->cfg);
  x->cfg.provider = "it";
  snprintf(x->url, sizeof(x->url), "http://127.0.0.1:%d/v1",
           fake_llm_port(x->f));
  x->cfg.client.base_url = x->url;
  x->cfg.client.model = MODEL;
  x->cfg.client.api_key = "sk-test";
  x->cfg.client.timeout_ms = scaled(LONG_TIMEOUT_MS);
  x->cfg.client.connect_timeout_ms = scaled(LONG_TIMEOUT_MS);
  /* Short exact waits (no jitter): 1, 2, 4 ms. */
  x->cfg.retry.max_retries = 3;
  x->cfg.retry.base_delay = 0.001;
  x->cfg.retry.max_delay = 1.0;
  x->cfg.retry.jitter = false;
  x->cfg.retry.on_retry = on_retry;
  x->cfg.retry.user_data = &x->retries;
  x->cfg.breaker.failure_threshold = 5;
  x->cfg.breaker.recovery_timeout = 0.1;
  x->cfg.breaker.success_threshold = 1;
  x->cfg.lock.max_concurrent = 2;
  x->cfg.lock.timeout = 5.0;
  assert_int_equal(wflo_workflow_new("http_it", BUDGET_USD, &x->wf), 0);
  assert_int_equal(wflo_workflow_begin(x->wf, &x->ctx), 0);
  *state = x;
  return 0;
}

static void make_guard(fx_t *x) {
  assert_int_equal(llm_guarded_new(&x->loop, &x->cfg, &x->g), 0);
}

static int teardown(void **state) {
  fx_t *x = *state;
  if (x->g != NULL) {
    assert_int_equal(llm_guarded_close(x->g, set_flag, &x->guard_closed), 0);
    assert_int_equal(x->guard_closed, 0); /* never inside the call */
    assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(x->guard_closed, 1);
  }
  if (x->ctx != NULL)
    assert_int_equal(wflo_workflow_end(x->wf, x->ctx, 0), 0);
  wflo_workflow_put(x->wf);
  wflo_pricing_reset();
  fake_llm_close(x->f, NULL, NULL);
  wflo_test_loop_close(&x->loop); /* asserts uv_loop_close() == 0 */
  assert_int_equal(wflo__loop_states_alive(), 0);
  wflo_set_log_level(x->saved_level);
  free(x);
  return wflo_test_teardown(state); /* no libwflo allocation alive */
}

/* Starts one guarded call inside the execution's context. */
static void start(fx_t *x, const char *prompt, got_t *g,
                  llm_guarded_call_t **call) {
  int rc = WFLO_E_STATE;
  memset(g, 0, sizeof(*g));
  WFLO_WITH_CONTEXT(x->ctx) {
    rc = llm_guarded_chat(x->g, prompt, on_done, g, call);
  }
  assert_int_equal(rc, 0);
  assert_int_equal(g->calls, 0); /* never inside the start call */
}

static void run(fx_t *x) {
  assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
}

/* One guarded call, run to its end. */
static void one(fx_t *x, const char *prompt, got_t *g) {
  start(x, prompt, g, NULL);
  run(x);
  assert_int_equal(g->calls, 1);
  assert_true(g->in_ctx);
}

static double spent(const fx_t *x) { return wflo_budget_spent(x->ctx); }

/* libwflo counts pico-dollars: amounts agree to 1e-12 USD. */
#define assert_usd_equal(a, b) assert_true(fabs((a) - (b)) < 1e-12)

static void assert_nothing_charged(const fx_t *x, const got_t *g) {
  assert_true(g->r.prompt_tokens == 0 && g->r.completion_tokens == 0);
  assert_true(g->r.cost_usd == 0.0);
  assert_true(spent(x) == 0.0);
  /* Every reservation was given back. */
  assert_true(wflo_budget_remaining(x->ctx) == BUDGET_USD);
}

static json_t *breaker_state(fx_t *x) {
  json_t *j = wflo_breaker_state_json(llm_guarded_breaker(x->g));
  assert_non_null(j);
  return j;
}

static json_int_t breaker_failures(fx_t *x) {
  json_t *j = breaker_state(x);
  json_int_t n = json_integer_value(json_object_get(j, "failure_count"));
  json_decref(j);
  return n;
}

static json_int_t lock_stat(fx_t *x, const char *key) {
  json_t *j = wflo_lock_stats_json(llm_guarded_lock(x->g));
  json_t *v;
  json_int_t n;
  assert_non_null(j);
  v = json_object_get(j, key);
  n = json_is_array(v) ? (json_int_t)json_array_size(v)
                       : json_integer_value(v);
  json_decref(j);
  return n;
}

static uint64_t requests(fx_t *x, fake_llm_kind_t k) {
  return fake_llm_requests(x->f, k);
}

/* --- success and transient failures --------------------------------------*/

static void test_ok_charges_usage(void **state) {
  fx_t *x = *state;
  got_t g;
  double usd;
  wflo_llm_usage_t u = {10, 20, {0}};
  make_guard(x);
  one(x, "hello", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 1);
  assert_int_equal(g.r.http_requests, 1);
  assert_int_equal(g.r.http_status, 200);
  assert_string_equal(g.text, "fake answer to: hello");
  assert_string_equal(g.detail, "");
  assert_true(g.r.prompt_tokens == 10 && g.r.completion_tokens == 20);
  assert_int_equal(wflo_pricing_cost(MODEL, &u, &usd), 0);
  assert_usd_equal(usd, by_hand(10, 20));
  assert_true(g.r.cost_usd == usd);
  assert_usd_equal(spent(x), usd);
  assert_int_equal(x->retries.n, 0);
  assert_true(requests(x, FAKE_LLM_ANY) == 1);
  /* The lock was taken once and is free again. */
  assert_int_equal(lock_stat(x, "total_acquisitions"), 1);
  assert_int_equal(lock_stat(x, "current_holders"), 0);
  assert_int_equal(wflo_breaker_state(llm_guarded_breaker(x->g)),
                   WFLO_BREAKER_CLOSED);
}

static void test_transient_500_retried(void **state) {
  fx_t *x = *state;
  got_t g;
  make_guard(x);
  assert_int_equal(fake_llm_fail_next(x->f, 2, FAKE_LLM_500, -1), 0);
  one(x, "flaky", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 3);
  assert_int_equal(g.r.http_requests, 3);
  assert_true(requests(x, FAKE_LLM_500) == 2);
  assert_true(requests(x, FAKE_LLM_ANY) == 3);
  assert_int_equal(x->retries.n, 2);
  assert_int_equal(x->retries.errs[0], UV_EAI_AGAIN);
  assert_int_equal(x->retries.errs[1], UV_EAI_AGAIN);
  /* The policy's own backoff (no hint): 1 ms, then 2 ms. */
  assert_true(x->retries.delays[0] == 0.001);
  assert_true(x->retries.delays[1] == 0.002);
  /* Only the answer is paid for; the 500s charged nothing. */
  assert_usd_equal(g.r.cost_usd, by_hand(10, 20));
  assert_usd_equal(spent(x), g.r.cost_usd);
  assert_int_equal(breaker_failures(x), 0); /* a success resets the run */
  assert_int_equal(lock_stat(x, "total_acquisitions"), 3);
}

static void test_500_exhausted(void **state) {
  fx_t *x = *state;
  got_t g;
  make_guard(x);
  assert_int_equal(fake_llm_fail_next(x->f, 10, FAKE_LLM_500, -1), 0);
  one(x, "down", &g);
  /* max_retries 3: four attempts, then the last error, unchanged. */
  assert_int_equal(g.r.err, UV_EAI_AGAIN);
  assert_int_equal(g.r.attempts, 4);
  assert_int_equal(g.r.http_requests, 4);
  assert_int_equal(g.r.http_status, 500);
  assert_non_null(strstr(g.detail, "HTTP 500"));
  assert_non_null(strstr(g.detail, "fake server error"));
  assert_false(g.has_text);
  assert_true(requests(x, FAKE_LLM_500) == 4);
  assert_nothing_charged(x, &g);
  /* Below the threshold of 5: still closed, with 4 failures counted. */
  assert_int_equal(breaker_failures(x), 4);
  assert_int_equal(wflo_breaker_state(llm_guarded_breaker(x->g)),
                   WFLO_BREAKER_CLOSED);
}

/* --- Retry-After ----------------------------------------------------------*/

static void test_429_retry_after_honoured(void **state) {
  fx_t *x = *state;
  got_t g;
  double waited_ms;
  make_guard(x);
  /* "retry-after-ms: 100" (and "Retry-After: 1", which the client ignores
   * when the finer header is there). */
  assert_int_equal(fake_llm_fail_next_ms(x->f, 1, FAKE_LLM_429, 100), 0);
  one(x, "busy", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 2);
  assert_true(requests(x, FAKE_LLM_429) == 1);
  assert_int_equal(x->retries.n, 1);
  assert_int_equal(x->retries.errs[0], WFLO_E_RATE_LIMITED);
  /* The hint replaced the policy's 1 ms backoff, without jitter ... */
  assert_true(x->retries.delays[0] == 0.1);
  /* ... and the retry really waited that long before the next attempt
   * (libuv's loop clock has millisecond resolution and is cached per loop
   * iteration: allow 2 ms). */
  waited_ms = (double)(g.done_ns - x->retries.last_ns) / 1e6;
  assert_true(waited_ms >= 98.0);
  assert_usd_equal(spent(x), by_hand(10, 20)); /* the 429 charged nothing */
  assert_int_equal(breaker_failures(x), 0);    /* 429 is neutral */
}

static void test_429_retry_after_above_max_delay(void **state) {
  fx_t *x = *state;
  got_t g;
  make_guard(x);
  /* 5 s > max_delay (1 s): the retry stops instead of waiting. */
  assert_int_equal(fake_llm_fail_next_ms(x->f, 1, FAKE_LLM_429, 5000), 0);
  one(x, "busy", &g);
  assert_int_equal(g.r.err, WFLO_E_RATE_LIMITED);
  assert_int_equal(g.r.attempts, 1);
  assert_int_equal(g.r.http_status, 429);
  assert_int_equal(x->retries.n, 0);
  assert_true(g.r.elapsed_s < 4.0);
  assert_nothing_charged(x, &g);
}

/* --- transport faults -----------------------------------------------------*/

static void test_stall_past_timeout_retried(void **state) {
  fx_t *x = *state;
  got_t g;
  x->cfg.client.timeout_ms = scaled(STALL_TIMEOUT_MS);
  make_guard(x);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_STALL, -1), 0);
  one(x, "slow", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 2);
  assert_true(requests(x, FAKE_LLM_STALL) == 1);
  assert_true(requests(x, FAKE_LLM_ANY) == 2);
  assert_int_equal(x->retries.n, 1);
  assert_int_equal(x->retries.errs[0], UV_ETIMEDOUT);
  assert_true(g.r.elapsed_s >= STALL_TIMEOUT_MS / 1e3 - 0.01);
  assert_usd_equal(spent(x), by_hand(10, 20));
  /* A timeout is a provider failure; the success after it resets. */
  assert_int_equal(breaker_failures(x), 0);
}

static void test_closed_connection_retried(void **state) {
  fx_t *x = *state;
  got_t g;
  make_guard(x);
  /* The guard's client is new: the first request opens a fresh connection
   * (curl silently resends on a *reused* one that was closed). */
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_CLOSE, -1), 0);
  one(x, "drop", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 2);
  assert_true(requests(x, FAKE_LLM_CLOSE) == 1);
  assert_true(requests(x, FAKE_LLM_ANY) == 2);
  assert_int_equal(x->retries.n, 1);
  assert_int_equal(x->retries.errs[0], UV_ECONNRESET);
  assert_usd_equal(spent(x), by_hand(10, 20));
}

static void test_4xx_not_retried(void **state) {
  fx_t *x = *state;
  got_t g;
  make_guard(x);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_400, -1), 0);
  one(x, "bad", &g);
  assert_int_equal(g.r.err, WFLO_E_INVAL);
  assert_int_equal(g.r.attempts, 1);
  assert_int_equal(g.r.http_status, 400);
  assert_non_null(strstr(g.detail, "fake bad request"));
  assert_int_equal(x->retries.n, 0);
  assert_true(requests(x, FAKE_LLM_ANY) == 1);
  assert_nothing_charged(x, &g);
  assert_int_equal(breaker_failures(x), 0); /* our mistake, not an outage */
}

/* --- the breaker ----------------------------------------------------------*/

static void test_outage_opens_breaker_then_recovers(void **state) {
  fx_t *x = *state;
  wflo_breaker_t *b;
  got_t g;
  uint64_t sent;
  int i;
  x->cfg.breaker.failure_threshold = 3;
  make_guard(x);
  b = llm_guarded_breaker(x->g);
  wflo_set_log_level(WFLO_LOG_INFO);
  wflo_test_events_install();

  /* The outage: every request fails. The third failure opens the circuit;
   * the fourth attempt is refused by it (a verdict: the retry stops). */
  assert_int_equal(fake_llm_fail_next(x->f, 30, FAKE_LLM_500, -1), 0);
  one(x, "outage", &g);
  assert_int_equal(g.r.err, WFLO_E_BREAKER_OPEN);
  assert_int_equal(g.r.attempts, 4);
  assert_int_equal(g.r.http_requests, 3);
  assert_non_null(strstr(g.detail, "breaker"));
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_OPEN);
  assert_int_equal(wflo_test_events_count("circuit_breaker_opened"), 1);
  sent = requests(x, FAKE_LLM_ANY);
  assert_true(sent == 3);

  /* While open, calls fail fast and never reach the server. */
  for (i = 0; i < 3; i++) {
    one(x, "refused", &g);
    assert_int_equal(g.r.err, WFLO_E_BREAKER_OPEN);
    assert_int_equal(g.r.attempts, 1);
    assert_int_equal(g.r.http_requests, 0);
    assert_true(g.r.elapsed_s < 0.5); /* no HTTP timeout (10 s) waited */
  }
  assert_true(requests(x, FAKE_LLM_ANY) == sent);
  assert_true(spent(x) == 0.0);

  /* After recovery_timeout a trial goes through; the outage is still on,
   * so it fails and the circuit opens again. */
  uv_sleep(120);
  one(x, "trial", &g);
  assert_int_equal(g.r.err, WFLO_E_BREAKER_OPEN);
  assert_int_equal(g.r.http_requests, 1);
  assert_true(requests(x, FAKE_LLM_ANY) == sent + 1);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_OPEN);

  /* The outage ends; the next trial succeeds and closes the circuit. */
  fake_llm_clear_faults(x->f);
  uv_sleep(120);
  one(x, "back", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 1);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
  assert_int_equal(wflo_test_events_count("circuit_breaker_half_open"), 2);
  assert_int_equal(wflo_test_events_count("circuit_breaker_closed"), 1);
  assert_usd_equal(spent(x), by_hand(10, 20));
  one(x, "normal", &g);
  assert_int_equal(g.r.err, 0);
  wflo_test_events_uninstall();
}

/* The breaker is taken only once the lock is granted: a call waiting for
 * the lock holds no HALF_OPEN trial slot. Here the only trial slot goes to
 * the call that holds the lock's only permit; the call queued behind it
 * finds the circuit closed when its turn comes. (Taking the breaker first,
 * the queued call would be refused: the slot is taken.) */
static void test_half_open_trial_taken_after_lock(void **state) {
  fx_t *x = *state;
  wflo_breaker_t *b;
  got_t g[2];
  x->cfg.lock.max_concurrent = 1;
  x->cfg.breaker.half_open_max_calls = 1;
  make_guard(x);
  b = llm_guarded_breaker(x->g);
  assert_int_equal(wflo_breaker_force(b, WFLO_BREAKER_HALF_OPEN, 0.0), 0);
  fake_llm_set_latency(x->f, 20);
  start(x, "trial", &g[0], NULL);
  start(x, "queued", &g[1], NULL);
  run(x);
  assert_int_equal(g[0].r.err, 0);
  assert_int_equal(g[1].r.err, 0);
  assert_int_equal(g[1].r.attempts, 1);
  assert_true(requests(x, FAKE_LLM_ANY) == 2);
  assert_int_equal(fake_llm_max_inflight(x->f), 1);
  assert_int_equal(wflo_breaker_state(b), WFLO_BREAKER_CLOSED);
}

/* --- answers we cannot read -----------------------------------------------*/

static void test_malformed_json_clear_error(void **state) {
  fx_t *x = *state;
  got_t g;
  make_guard(x);
  /* Every attempt gets a truncated body. */
  assert_int_equal(fake_llm_fail_next(x->f, 4, FAKE_LLM_MALFORMED, -1), 0);
  one(x, "garbled", &g);
  assert_int_equal(g.r.err, WFLO_E_PARSE);
  assert_int_equal(g.r.attempts, 4);
  assert_int_equal(g.r.http_status, 200);
  assert_non_null(strstr(g.detail, "response is not JSON"));
  assert_false(g.has_text);
  assert_nothing_charged(x, &g);
  assert_int_equal(breaker_failures(x), 0); /* not an outage */

  /* A single broken body is retried and the good answer charged once. */
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_MALFORMED, -1), 0);
  one(x, "garbled once", &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.attempts, 2);
  assert_usd_equal(spent(x), by_hand(10, 20));

  /* A 200 without usage cannot be charged: also WFLO_E_PARSE. */
  assert_int_equal(fake_llm_fail_next(x->f, 4, FAKE_LLM_NO_USAGE, -1), 0);
  one(x, "no usage", &g);
  assert_int_equal(g.r.err, WFLO_E_PARSE);
  assert_non_null(strstr(g.detail, "usage"));
  assert_usd_equal(spent(x), by_hand(10, 20));
}

/* --- money ----------------------------------------------------------------*/

static void test_spend_equals_sum_of_usage_costs(void **state) {
  fx_t *x = *state;
  static const struct {
    uint64_t pt, ct;
    fake_llm_kind_t fault;
    unsigned faults;
  } steps[] = {
      {100, 50, FAKE_LLM_OK, 0},      {1234, 567, FAKE_LLM_500, 2},
      {7, 0, FAKE_LLM_MALFORMED, 1},  {0, 3, FAKE_LLM_CLOSE, 1},
      {999, 1001, FAKE_LLM_429, 1},   {1, 1, FAKE_LLM_400, 1},
      {250000, 4000, FAKE_LLM_OK, 0},
  };
  got_t g;
  wflo_llm_usage_t u;
  double sum = 0.0, sum_hand = 0.0, sum_reported = 0.0, usd;
  json_t *stats;
  size_t i;
  int ok = 0;
  make_guard(x);
  for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    fake_llm_set_usage(x->f, steps[i].pt, steps[i].ct);
    if (steps[i].faults > 0)
      assert_int_equal(
          fake_llm_fail_next_ms(x->f, steps[i].faults, steps[i].fault, 1), 0);
    one(x, "spend", &g);
    sum_reported += g.r.cost_usd;
    if (g.r.err != 0) { /* only the 400 */
      assert_int_equal(g.r.err, WFLO_E_INVAL);
      assert_true(g.r.cost_usd == 0.0);
      continue;
    }
    ok++;
    assert_true(g.r.prompt_tokens == steps[i].pt);
    assert_true(g.r.completion_tokens == steps[i].ct);
    memset(&u, 0, sizeof(u));
    u.prompt_tokens = g.r.prompt_tokens;
    u.completion_tokens = g.r.completion_tokens;
    assert_int_equal(wflo_pricing_cost(MODEL, &u, &usd), 0);
    sum += usd;
    sum_hand += by_hand(steps[i].pt, steps[i].ct);
  }
  assert_int_equal(ok, 6);
  /* libwflo keeps pico-dollars: the spend is the exact sum of the prices. */
  assert_true(fabs(spent(x) - sum) < 1e-12);
  assert_true(fabs(spent(x) - sum_hand) < 1e-12);
  assert_true(fabs(spent(x) - sum_reported) < 1e-12);
  assert_true(sum > 0.8); /* 250000 prompt tokens alone cost $0.75 */
  /* No reservation is left behind. */
  assert_true(fabs(wflo_budget_remaining(x->ctx) - (BUDGET_USD - sum)) <
              1e-12);

  /* The workflow's stats count the execution's spend when it ends. */
  assert_int_equal(wflo_workflow_end(x->wf, x->ctx, 0), 0);
  x->ctx = NULL;
  stats = wflo_workflow_stats_json(x->wf);
  assert_non_null(stats);
  assert_true(fabs(json_real_value(json_object_get(stats, "spent_usd")) -
                   sum) < 1e-12);
  assert_int_equal(json_integer_value(json_object_get(stats, "succeeded")), 1);
  json_decref(stats);
}

static void test_budget_refused_before_any_request(void **state) {
  fx_t *x = *state;
  wflo_workflow_t *small;
  wflo_context_t *ctx;
  json_t *stats;
  got_t g;
  int rc = WFLO_E_STATE;
  make_guard(x);
  /* $0.005 cannot cover one attempt's $0.01 reservation. */
  assert_int_equal(wflo_workflow_new("http_it_small", 0.005, &small), 0);
  assert_int_equal(wflo_workflow_begin(small, &ctx), 0);
  memset(&g, 0, sizeof(g));
  WFLO_WITH_CONTEXT(ctx) {
    rc = llm_guarded_chat(x->g, "too expensive", on_done, &g, NULL);
  }
  assert_int_equal(rc, 0);
  run(x);
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.r.err, WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(g.r.attempts, 1); /* a verdict: not retried */
  assert_int_equal(g.r.http_requests, 0);
  assert_non_null(strstr(g.detail, "budget"));
  assert_true(requests(x, FAKE_LLM_ANY) == 0); /* nothing was sent */
  assert_int_equal(lock_stat(x, "total_acquisitions"), 0); /* no queueing */
  assert_true(wflo_budget_spent(ctx) == 0.0);
  assert_int_equal(wflo_workflow_end(small, ctx, g.r.err), 0);
  stats = wflo_workflow_stats_json(small);
  assert_int_equal(json_integer_value(json_object_get(stats, "refused")), 1);
  json_decref(stats);
  wflo_workflow_put(small);

  /* The large budget still works with the same guard. */
  one(x, "fine", &g);
  assert_int_equal(g.r.err, 0);
}

/* A budget that covers the reservation but not the actual cost: the
 * answer is paid for and kept, and the call reports the overrun. */
static void test_actual_cost_above_budget(void **state) {
  fx_t *x = *state;
  wflo_workflow_t *wf;
  wflo_context_t *ctx;
  got_t g;
  int rc = WFLO_E_STATE;
  make_guard(x);
  fake_llm_set_usage(x->f, 10000, 0); /* $0.03, above the $0.01 reserved */
  assert_int_equal(wflo_workflow_new("http_it_over", 0.02, &wf), 0);
  assert_int_equal(wflo_workflow_begin(wf, &ctx), 0);
  memset(&g, 0, sizeof(g));
  WFLO_WITH_CONTEXT(ctx) {
    rc = llm_guarded_chat(x->g, "long answer", on_done, &g, NULL);
  }
  assert_int_equal(rc, 0);
  run(x);
  assert_int_equal(g.r.err, WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(g.r.attempts, 1);
  assert_true(g.has_text);
  assert_usd_equal(wflo_budget_spent(ctx), 0.03);
  assert_usd_equal(g.r.cost_usd, 0.03);
  assert_int_equal(wflo_workflow_end(wf, ctx, g.r.err), 0);
  wflo_workflow_put(wf);
}

/* --- the lock -------------------------------------------------------------*/

static void test_lock_bounds_requests_in_flight(void **state) {
  fx_t *x = *state;
  got_t g[6];
  int i;
  make_guard(x); /* max_concurrent 2 */
  fake_llm_set_latency(x->f, 30);
  for (i = 0; i < 6; i++)
    start(x, "parallel", &g[i], NULL);
  run(x);
  for (i = 0; i < 6; i++) {
    assert_int_equal(g[i].calls, 1);
    assert_int_equal(g[i].r.err, 0);
  }
  /* Six calls, never more than two at the server. */
  assert_int_equal(fake_llm_max_inflight(x->f), 2);
  assert_int_equal(lock_stat(x, "total_acquisitions"), 6);
  assert_int_equal(lock_stat(x, "current_holders"), 0);
  assert_int_equal(lock_stat(x, "current_waiters"), 0);
  assert_true(fabs(spent(x) - 6 * by_hand(10, 20)) < 1e-12);
}

/* --- cancel and close -----------------------------------------------------*/

/* Runs the loop until the server has seen n requests of kind (it is on
 * another thread: nothing wakes our loop when it counts). */
static void run_until_server_saw(fx_t *x, fake_llm_kind_t kind, uint64_t n) {
  int spins = 0;
  while (requests(x, kind) < n) {
    uv_run(&x->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
    assert_true(++spins < 20000);
  }
}

static void test_cancel(void **state) {
  fx_t *x = *state;
  llm_guarded_call_t *call[3];
  got_t g[3];
  make_guard(x); /* lock: 2 permits */
  assert_int_equal(fake_llm_fail_next(x->f, 2, FAKE_LLM_STALL, -1), 0);
  /* Two requests stall at the server (the lock's two permits); the third
   * call waits for a permit. */
  start(x, "a", &g[0], &call[0]);
  start(x, "b", &g[1], &call[1]);
  start(x, "c", &g[2], &call[2]);
  run_until_server_saw(x, FAKE_LLM_STALL, 2);
  assert_int_equal(lock_stat(x, "current_waiters"), 1);
  assert_int_equal(llm_guarded_cancel(call[2]), 0); /* in the lock queue */
  assert_int_equal(llm_guarded_cancel(call[0]), 0); /* HTTP in flight */
  assert_int_equal(llm_guarded_cancel(call[0]), WFLO_E_STATE);
  assert_int_equal(llm_guarded_cancel(NULL), WFLO_E_INVAL);
  assert_int_equal(g[0].calls + g[2].calls, 0); /* later, from the loop */
  /* Both are delivered from the loop; then b, still stalled, goes too. */
  while (g[0].calls == 0 || g[2].calls == 0)
    uv_run(&x->loop, UV_RUN_ONCE);
  assert_int_equal(g[0].r.err, WFLO_E_CANCELED);
  assert_int_equal(g[2].r.err, WFLO_E_CANCELED);
  assert_int_equal(g[2].r.http_requests, 0);
  assert_string_equal(g[0].detail, "canceled");
  assert_int_equal(llm_guarded_cancel(call[1]), 0);
  run(x);
  assert_int_equal(g[1].r.err, WFLO_E_CANCELED);
  assert_true(requests(x, FAKE_LLM_ANY) == 2);
  assert_true(spent(x) == 0.0);
  assert_true(wflo_budget_remaining(x->ctx) == BUDGET_USD);
  assert_int_equal(breaker_failures(x), 0); /* a cancel is neutral */
  assert_int_equal(lock_stat(x, "current_holders"), 0);
}

static void test_close_cancels_pending_calls(void **state) {
  fx_t *x = *state;
  got_t g[6];
  int i, spins = 0;
  x->cfg.lock.max_concurrent = 3;
  x->cfg.retry.base_delay = 5.0; /* a backoff that outlasts the test */
  x->cfg.retry.max_delay = 10.0;
  make_guard(x);
  assert_int_equal(fake_llm_fail_next(x->f, 2, FAKE_LLM_STALL, -1), 0);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_500, -1), 0);
  assert_int_equal(fake_llm_fail_next(x->f, 9, FAKE_LLM_STALL, -1), 0);
  for (i = 0; i < 5; i++)
    start(x, "pending", &g[i], NULL);
  /* Calls 0 and 1 stall; 2 gets the 500 and backs off, handing its permit
   * to 3, which stalls; 4 waits for a permit. */
  while (x->retries.n == 0 || requests(x, FAKE_LLM_STALL) < 3) {
    uv_run(&x->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
    assert_true(++spins < 20000);
  }
  assert_int_equal(lock_stat(x, "current_waiters"), 1);
  start(x, "not started", &g[5], NULL); /* its first attempt is posted */
  assert_int_equal(llm_guarded_close(x->g, set_flag, &x->guard_closed), 0);
  assert_int_equal(llm_guarded_close(x->g, NULL, NULL), WFLO_E_STATE);
  assert_int_equal(llm_guarded_chat(x->g, "late", on_done, &g[0], NULL),
                   WFLO_E_STATE);
  for (i = 0; i < 6; i++)
    assert_int_equal(g[i].calls, 0); /* later, from the loop */
  run(x);
  x->g = NULL;
  assert_int_equal(x->guard_closed, 1);
  for (i = 0; i < 6; i++) {
    assert_int_equal(g[i].calls, 1);
    assert_int_equal(g[i].r.err, WFLO_E_CANCELED);
  }
  assert_int_equal(g[2].r.attempts, 1); /* canceled in its backoff */
  assert_int_equal(g[4].r.http_requests, 0);
  assert_int_equal(g[5].r.attempts, 0);
  assert_true(requests(x, FAKE_LLM_ANY) == 4);
  assert_true(spent(x) == 0.0);
  assert_true(wflo_budget_remaining(x->ctx) == BUDGET_USD);
}

/* --- out of memory --------------------------------------------------------*/

/* Prices, a workflow execution, a guard, one call, close: every libwflo
 * allocation on the way may fail (pricing table, workflow, context,
 * breaker and lock registry entries, retry, loop state, lock wait). */
static int oom_scenario(void *ud) {
  fx_t *x = ud;
  wflo_workflow_t *wf = NULL;
  wflo_context_t *ctx = NULL;
  json_t *p;
  got_t g;
  int rc, closed = 0;
  memset(&g, 0, sizeof(g));
  p = json_pack("{s:{s:{s:f, s:f, s:f}}}", "models", MODEL, "input_per_mtok",
                IN_PER_MTOK, "output_per_mtok", OUT_PER_MTOK, "max_call_usd",
                MAX_CALL_USD);
  rc = wflo_pricing_load_json(p, NULL, 0);
  json_decref(p);
  if (rc != 0)
    goto reset_prices;
  if ((rc = wflo_workflow_new("http_it_oom", BUDGET_USD, &wf)) != 0 ||
      (rc = wflo_workflow_begin(wf, &ctx)) != 0)
    goto put_workflow;
  if ((rc = llm_guarded_new(&x->loop, &x->cfg, &x->g)) != 0)
    goto end_execution;
  WFLO_WITH_CONTEXT(ctx) {
    rc = llm_guarded_chat(x->g, "oom", on_done, &g, NULL);
  }
  if (rc == 0) {
    run(x);
    assert_int_equal(g.calls, 1);
    rc = g.r.err;
    if (rc == 0)
      assert_usd_equal(wflo_budget_spent(ctx), by_hand(10, 20));
  }
  assert_int_equal(llm_guarded_close(x->g, set_flag, &closed), 0);
  run(x);
  assert_int_equal(closed, 1);
  x->g = NULL;
end_execution:
  if (ctx != NULL)
    assert_int_equal(wflo_workflow_end(wf, ctx, rc), 0);
put_workflow:
  wflo_workflow_put(wf);
reset_prices:
  wflo_pricing_reset();
  run(x); /* lets libwflo's loop state close its handles */
  return rc;
}

static void test_oom(void **state) {
  fx_t *x = *state;
  /* The scenario builds everything itself: drop the fixture's. */
  assert_int_equal(wflo_workflow_end(x->wf, x->ctx, 0), 0);
  x->ctx = NULL;
  wflo_workflow_put(x->wf);
  x->wf = NULL;
  wflo_pricing_reset();
  wflo_test_oom_loop(oom_scenario, x, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_ok_charges_usage),
      T(test_transient_500_retried),
      T(test_500_exhausted),
      T(test_429_retry_after_honoured),
      T(test_429_retry_after_above_max_delay),
      T(test_stall_past_timeout_retried),
      T(test_closed_connection_retried),
      T(test_4xx_not_retried),
      T(test_outage_opens_breaker_then_recovers),
      T(test_half_open_trial_taken_after_lock),
      T(test_malformed_json_clear_error),
      T(test_spend_equals_sum_of_usage_costs),
      T(test_budget_refused_before_any_request),
      T(test_actual_cost_above_budget),
      T(test_lock_bounds_requests_in_flight),
      T(test_cancel),
      T(test_close_cancels_pending_calls),
      T(test_oom),
#undef T
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
