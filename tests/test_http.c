/* Tests of the HTTP chat client (examples/support/llm_client.c) against the
 * fake LLM server (tests/support/fake_llm.c), on real loops over 127.0.0.1:
 * every fault maps to the documented error, Retry-After and usage are read,
 * nothing is charged for an unreadable answer, callbacks run once and never
 * inside the starting call, and cancel/close leave no handle behind.
 * Only the stall cases rely on a timeout (200 ms); the other requests get a
 * generous one so slow runs (valgrind) pass. WFLO_TEST_TIMEOUT_MULTIPLIER
 * scales both. */
/* ctest-labels: threads */
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
#include "internal/common.h"
#include "internal/loop.h"
#include "llm_client.h"

#define STALL_TIMEOUT_MS 200
#define LONG_TIMEOUT_MS 10000

typedef struct got {
  int calls;
  int in_start; /* set around llm_client_chat: catches a sync callback */
  int sync_calls;
  int order; /* global sequence number at delivery */
  llm_result_t r;
  char text[256];
  char detail[256];
  int chat_rc_inside; /* what llm_client_chat returned inside the callback */
} got_t;

typedef struct fx {
  uv_loop_t loop;
  fake_llm_t *f;
  llm_client_t *c;
  char url[64];
  int client_closed, server_closed;
  int seq;
} fx_t;

static fx_t *g_fx; /* for callbacks that need the fixture */

static void on_result(const llm_result_t *r, void *ud) {
  got_t *g = ud;
  g->calls++;
  if (g->in_start)
    g->sync_calls++;
  g->order = ++g_fx->seq;
  g->r = *r;
  snprintf(g->text, sizeof(g->text), "%s", r->text ? r->text : "");
  snprintf(g->detail, sizeof(g->detail), "%s", r->detail);
  g->r.text = NULL; /* borrowed pointers die with the callback */
  g->r.detail = NULL;
  g->r.response = NULL;
}

static int chat(fx_t *x, const char *prompt, got_t *g, llm_request_t **req) {
  int rc;
  g->in_start = 1;
  rc = llm_client_chat(x->c, prompt, on_result, g, req);
  g->in_start = 0;
  return rc;
}

static void set_closed(void *ud) { (*(int *)ud)++; }

static long scaled(long ms) {
  const char *m = getenv("WFLO_TEST_TIMEOUT_MULTIPLIER");
  double f = m != NULL ? strtod(m, NULL) : 1.0;
  return f >= 1.0 ? (long)((double)ms * f) : ms;
}

static void make_client(fx_t *x, const char *url, long timeout_ms) {
  llm_client_config_t cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.base_url = url;
  cfg.api_key = "sk-test";
  cfg.model = "fake-model";
  cfg.timeout_ms = scaled(timeout_ms);
  cfg.connect_timeout_ms = scaled(LONG_TIMEOUT_MS);
  assert_int_equal(llm_client_new(&x->loop, &cfg, &x->c), 0);
}

static int setup(void **state) {
  fx_t *x = calloc(1, sizeof(*x));
  wflo_test_setup(state);
  assert_non_null(x);
  assert_int_equal(uv_loop_init(&x->loop), 0);
  assert_int_equal(fake_llm_start(&x->loop, &x->f), 0);
  snprintf(x->url, sizeof(x->url), "http://127.0.0.1:%d/v1/",
           fake_llm_port(x->f));
  make_client(x, x->url, LONG_TIMEOUT_MS);
  g_fx = x;
  *state = x;
  return 0;
}

/* Closes what is still open and checks that nothing stays on the loop. */
static int teardown(void **state) {
  fx_t *x = *state;
  if (x->c != NULL)
    assert_int_equal(llm_client_close(x->c, set_closed, &x->client_closed), 0);
  if (x->f != NULL)
    fake_llm_close(x->f, set_closed, &x->server_closed);
  assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
  if (x->c != NULL)
    assert_int_equal(x->client_closed, 1);
  if (x->f != NULL)
    assert_int_equal(x->server_closed, 1);
  wflo_test_loop_close(&x->loop); /* asserts uv_loop_close() == 0 */
  assert_int_equal(wflo__loop_states_alive(), 0);
  free(x);
  g_fx = NULL;
  return wflo_test_teardown(state);
}

static void run(fx_t *x) {
  assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
}

/* Replaces the fixture's client by one with another URL or timeout. */
static void replace_client(fx_t *x, const char *url, long timeout_ms) {
  int closed = 0;
  assert_int_equal(llm_client_close(x->c, set_closed, &closed), 0);
  run(x);
  assert_int_equal(closed, 1);
  make_client(x, url, timeout_ms);
}

/* One request with the next scripted fault; returns its result. */
static void one(fx_t *x, got_t *g) {
  memset(g, 0, sizeof(*g));
  assert_int_equal(chat(x, "ping", g, NULL), 0);
  assert_int_equal(g->calls, 0); /* never inside the start call */
  run(x);
  assert_int_equal(g->calls, 1);
  assert_int_equal(g->sync_calls, 0);
}

static void assert_nothing_charged(const got_t *g) {
  assert_true(g->r.prompt_tokens == 0);
  assert_true(g->r.completion_tokens == 0);
  assert_string_equal(g->text, "");
}

/* --- mapping and parsing, no network ------------------------------------ */

static void test_error_map_table(void **state) {
  (void)state;
  assert_int_equal(llm_map_error(CURLE_OK, 200), 0);
  assert_int_equal(llm_map_error(CURLE_OK, 201), 0);
  assert_int_equal(llm_map_error(CURLE_OK, 429), WFLO_E_RATE_LIMITED);
  assert_int_equal(llm_map_error(CURLE_OK, 500), UV_EAI_AGAIN);
  assert_int_equal(llm_map_error(CURLE_OK, 503), UV_EAI_AGAIN);
  assert_int_equal(llm_map_error(CURLE_OK, 599), UV_EAI_AGAIN);
  assert_int_equal(llm_map_error(CURLE_OK, 408), UV_ETIMEDOUT);
  assert_int_equal(llm_map_error(CURLE_OK, 400), WFLO_E_INVAL);
  assert_int_equal(llm_map_error(CURLE_OK, 401), WFLO_E_INVAL);
  assert_int_equal(llm_map_error(CURLE_OK, 404), WFLO_E_INVAL);
  assert_int_equal(llm_map_error(CURLE_OK, 302), WFLO_E_INVAL);
  assert_int_equal(llm_map_error(CURLE_OPERATION_TIMEDOUT, 0), UV_ETIMEDOUT);
  assert_int_equal(llm_map_error(CURLE_COULDNT_CONNECT, 0), UV_ECONNREFUSED);
  assert_int_equal(llm_map_error(CURLE_GOT_NOTHING, 0), UV_ECONNRESET);
  assert_int_equal(llm_map_error(CURLE_RECV_ERROR, 0), UV_ECONNRESET);
  assert_int_equal(llm_map_error(CURLE_SEND_ERROR, 0), UV_ECONNRESET);
  assert_int_equal(llm_map_error(CURLE_PARTIAL_FILE, 200), UV_ECONNRESET);
  assert_int_equal(llm_map_error(CURLE_COULDNT_RESOLVE_HOST, 0),
                   UV_EAI_NONAME);
  assert_int_equal(llm_map_error(CURLE_UNSUPPORTED_PROTOCOL, 0), WFLO_E_INVAL);
  assert_int_equal(llm_map_error(CURLE_URL_MALFORMAT, 0), WFLO_E_INVAL);
  assert_int_equal(llm_map_error(CURLE_OUT_OF_MEMORY, 0), WFLO_E_NOMEM);
  assert_int_equal(llm_map_error(CURLE_WRITE_ERROR, 200), WFLO_E_PARSE);
  assert_int_equal(llm_map_error(CURLE_SSL_CONNECT_ERROR, 0), UV_EPROTO);
}

/* The table's promise in libwflo's terms: transient failures are retried by
 * the default policy, a 4xx is not. */
static void test_retryable_by_default(void **state) {
  const int transient[] = {WFLO_E_RATE_LIMITED, UV_EAI_AGAIN,  UV_ETIMEDOUT,
                           UV_ECONNREFUSED,     UV_ECONNRESET, UV_EAI_NONAME,
                           UV_EPROTO,           WFLO_E_PARSE};
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
    assert_false(wflo__err_is_verdict(transient[i]));
  assert_true(wflo__err_is_verdict(llm_map_error(CURLE_OK, 400)));
  assert_true(wflo__err_is_verdict(WFLO_E_CANCELED));
}

static void test_retry_after_parse(void **state) {
  char date[64];
  time_t now = 1700000000, later = now + 30;
  struct tm tm;
  (void)state;
  assert_true(llm_parse_retry_after("120", now) == 120.0);
  assert_true(llm_parse_retry_after(" 5 ", now) == 5.0);
  assert_true(llm_parse_retry_after("0", now) == 0.0);
  assert_true(llm_parse_retry_after("1.5", now) == 1.5);
  assert_true(llm_parse_retry_after("99999999999999", now) == 1e9);
  assert_true(isnan(llm_parse_retry_after("", now)));
  assert_true(isnan(llm_parse_retry_after("-5", now)));
  assert_true(isnan(llm_parse_retry_after("soon", now)));
  assert_true(isnan(llm_parse_retry_after("12abc", now)));
  assert_true(isnan(llm_parse_retry_after(NULL, now)));
  gmtime_r(&later, &tm);
  strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  assert_true(llm_parse_retry_after(date, now) == 30.0);
  assert_true(llm_parse_retry_after(date, now + 100) == 0.0); /* past */
}

static void test_invalid_arguments(void **state) {
  fx_t *x = *state;
  llm_client_config_t cfg;
  llm_client_t *c = NULL;
  got_t g;
  json_t *j;
  memset(&cfg, 0, sizeof(cfg));
  memset(&g, 0, sizeof(g));
  cfg.base_url = x->url;
  cfg.model = "m";
  assert_int_equal(llm_client_new(NULL, &cfg, &c), WFLO_E_INVAL);
  assert_int_equal(llm_client_new(&x->loop, NULL, &c), WFLO_E_INVAL);
  assert_int_equal(llm_client_new(&x->loop, &cfg, NULL), WFLO_E_INVAL);
  cfg.model = "";
  assert_int_equal(llm_client_new(&x->loop, &cfg, &c), WFLO_E_INVAL);
  cfg.model = "m";
  cfg.base_url = NULL;
  assert_int_equal(llm_client_new(&x->loop, &cfg, &c), WFLO_E_INVAL);
  cfg.base_url = x->url;
  cfg.timeout_ms = -1;
  assert_int_equal(llm_client_new(&x->loop, &cfg, &c), WFLO_E_INVAL);
  cfg.timeout_ms = 0;
  cfg.connect_timeout_ms = -1;
  assert_int_equal(llm_client_new(&x->loop, &cfg, &c), WFLO_E_INVAL);
  assert_null(c);
  assert_int_equal(llm_client_chat(NULL, "p", on_result, &g, NULL),
                   WFLO_E_INVAL);
  assert_int_equal(llm_client_chat(x->c, NULL, on_result, &g, NULL),
                   WFLO_E_INVAL);
  assert_int_equal(llm_client_chat(x->c, "p", NULL, &g, NULL), WFLO_E_INVAL);
  assert_int_equal(
      llm_client_chat(x->c, "bad \xff utf-8", on_result, &g, NULL),
      WFLO_E_INVAL);
  j = json_object();
  assert_int_equal(llm_client_chat_messages(x->c, j, on_result, &g, NULL),
                   WFLO_E_INVAL);
  json_decref(j);
  assert_int_equal(llm_request_cancel(NULL), WFLO_E_INVAL);
  assert_int_equal(llm_client_close(NULL, NULL, NULL), WFLO_E_INVAL);
  run(x);
  assert_int_equal(g.calls, 0); /* a refused start never calls back */
  assert_true(fake_llm_requests(x->f, FAKE_LLM_ANY) == 0);
}

/* --- answers ------------------------------------------------------------ */

static void test_ok_text_and_usage(void **state) {
  fx_t *x = *state;
  got_t g;
  json_t *body;
  char auth[128];
  fake_llm_set_usage(x->f, 123, 45);
  one(x, &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(g.r.http_status, 200);
  assert_true(g.r.prompt_tokens == 123);
  assert_true(g.r.completion_tokens == 45);
  assert_true(isnan(g.r.retry_after_s));
  assert_string_equal(g.text, "fake answer to: ping");
  assert_true(g.r.text_len == strlen("fake answer to: ping"));
  assert_string_equal(g.detail, "");
  /* What went over the wire: the model, the prompt, the key. */
  body = fake_llm_last_request(x->f, auth, sizeof(auth));
  assert_non_null(body);
  assert_string_equal(json_string_value(json_object_get(body, "model")),
                      "fake-model");
  assert_string_equal(
      json_string_value(json_object_get(
          json_array_get(json_object_get(body, "messages"), 0), "content")),
      "ping");
  assert_string_equal(auth, "Bearer sk-test");
  json_decref(body);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_OK) == 1);
}

static void test_messages_conversation(void **state) {
  fx_t *x = *state;
  got_t g;
  json_t *msgs =
      json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                "be brief", "role", "user", "content", "and now?");
  memset(&g, 0, sizeof(g));
  assert_int_equal(llm_client_chat_messages(x->c, msgs, on_result, &g, NULL),
                   0);
  json_decref(msgs); /* serialized at once: the caller may drop it */
  run(x);
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.r.err, 0);
  assert_string_equal(g.text, "fake answer to: and now?");
}

static void test_429_retry_after(void **state) {
  fx_t *x = *state;
  got_t g;
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_429, 7), 0);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_429, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, WFLO_E_RATE_LIMITED);
  assert_int_equal(g.r.http_status, 429);
  assert_true(g.r.retry_after_s == 7.0);
  assert_nothing_charged(&g);
  assert_non_null(strstr(g.detail, "fake rate limit"));
  one(x, &g); /* no header: no hint, not a stale one */
  assert_int_equal(g.r.err, WFLO_E_RATE_LIMITED);
  assert_true(isnan(g.r.retry_after_s));
  one(x, &g); /* the script ran out: healthy again */
  assert_int_equal(g.r.err, 0);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_429) == 2);
}

static void test_500(void **state) {
  fx_t *x = *state;
  got_t g;
  assert_int_equal(fake_llm_fail_next(x->f, 2, FAKE_LLM_500, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, UV_EAI_AGAIN);
  assert_int_equal(g.r.http_status, 500);
  assert_nothing_charged(&g);
  assert_non_null(strstr(g.detail, "fake server error"));
  one(x, &g);
  assert_int_equal(g.r.err, UV_EAI_AGAIN);
  one(x, &g);
  assert_int_equal(g.r.err, 0);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_500) == 2);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_ANY) == 3);
}

static void test_400_not_retryable(void **state) {
  fx_t *x = *state;
  got_t g;
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_400, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, WFLO_E_INVAL);
  assert_int_equal(g.r.http_status, 400);
  assert_true(wflo__err_is_verdict(g.r.err));
  assert_nothing_charged(&g);
}

static void test_malformed_json_charges_nothing(void **state) {
  fx_t *x = *state;
  got_t g;
  fake_llm_set_usage(x->f, 500, 500);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_MALFORMED, -1), 0);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_NO_USAGE, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, WFLO_E_PARSE);
  assert_int_equal(g.r.http_status, 200);
  assert_nothing_charged(&g);
  assert_non_null(strstr(g.detail, "not JSON"));
  one(x, &g);
  assert_int_equal(g.r.err, WFLO_E_PARSE);
  assert_nothing_charged(&g);
  assert_non_null(strstr(g.detail, "usage"));
  one(x, &g);
  assert_int_equal(g.r.err, 0);
  assert_true(g.r.prompt_tokens == 500);
}

static void test_stall_times_out(void **state) {
  fx_t *x = *state;
  got_t g;
  uint64_t t0, ms;
  replace_client(x, x->url, STALL_TIMEOUT_MS);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_STALL, -1), 0);
  t0 = uv_hrtime();
  one(x, &g);
  ms = (uv_hrtime() - t0) / 1000000u;
  assert_int_equal(g.r.err, UV_ETIMEDOUT);
  assert_int_equal(g.r.http_status, 0);
  assert_nothing_charged(&g);
  /* curl's timeout, not some default: well under LONG_TIMEOUT_MS. */
  assert_true(ms >= STALL_TIMEOUT_MS - 10 &&
              ms < (uint64_t)scaled(STALL_TIMEOUT_MS) + 3000);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_STALL) == 1);
  one(x, &g); /* a fresh connection serves the next one */
  assert_int_equal(g.r.err, 0);
}

static void test_close_fresh_connection(void **state) {
  fx_t *x = *state;
  got_t g;
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_CLOSE, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, UV_ECONNRESET);
  assert_int_equal(g.r.http_status, 0);
  assert_nothing_charged(&g);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_CLOSE) == 1);
}

/* curl resends a request once, on a new connection, when a REUSED
 * keep-alive connection closes before any response byte (the server may
 * have timed it out). So one scripted close on a reused connection is
 * invisible to the caller; two are an error. */
static void test_close_reused_connection(void **state) {
  fx_t *x = *state;
  got_t g;
  one(x, &g);
  assert_int_equal(g.r.err, 0);
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_CLOSE, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, 0);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_CLOSE) == 1);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_ANY) == 3);
  assert_int_equal(fake_llm_fail_next(x->f, 2, FAKE_LLM_CLOSE, -1), 0);
  one(x, &g);
  assert_int_equal(g.r.err, UV_ECONNRESET);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_CLOSE) == 3);
}

static void test_connection_refused(void **state) {
  fx_t *x = *state;
  fake_llm_t *gone;
  char url[64];
  got_t g;
  int closed = 0;
  /* A port that was just listening and is not any more. */
  assert_int_equal(fake_llm_start(&x->loop, &gone), 0);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", fake_llm_port(gone));
  fake_llm_close(gone, set_closed, &closed);
  run(x);
  assert_int_equal(closed, 1);
  replace_client(x, url, LONG_TIMEOUT_MS);
  one(x, &g);
  assert_int_equal(g.r.err, UV_ECONNREFUSED);
  assert_nothing_charged(&g);
}

static void test_bad_url_scheme(void **state) {
  fx_t *x = *state;
  got_t g;
  replace_client(x, "ftp://127.0.0.1:1/v1", LONG_TIMEOUT_MS);
  one(x, &g);
  assert_int_equal(g.r.err, WFLO_E_INVAL);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_ANY) == 0);
}

static void test_oversized_request_rejected(void **state) {
  fx_t *x = *state;
  got_t g;
  size_t n = FAKE_LLM_MAX_REQUEST + 1000;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, 'a', n);
  big[n] = '\0';
  memset(&g, 0, sizeof(g));
  assert_int_equal(chat(x, big, &g, NULL), 0);
  free(big);
  run(x);
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.r.http_status, 413);
  assert_int_equal(g.r.err, WFLO_E_INVAL);
  assert_true(fake_llm_requests(x->f, FAKE_LLM_REJECTED) == 1);
  one(x, &g); /* the server and the client both recover */
  assert_int_equal(g.r.err, 0);
}

/* --- concurrency and connection reuse ----------------------------------- */

static void test_concurrent_and_keepalive(void **state) {
  fx_t *x = *state;
  got_t g[8];
  uint64_t conns;
  int i;
  fake_llm_set_latency(x->f, 20);
  memset(g, 0, sizeof(g));
  for (i = 0; i < 8; i++)
    assert_int_equal(chat(x, "many", &g[i], NULL), 0);
  run(x);
  for (i = 0; i < 8; i++) {
    assert_int_equal(g[i].calls, 1);
    assert_int_equal(g[i].r.err, 0);
  }
  /* They were in flight together, not one after another. */
  assert_true(fake_llm_max_inflight(x->f) >= 2);
  conns = fake_llm_connections(x->f);
  assert_true(conns >= 2 && conns <= 8);
  for (i = 0; i < 4; i++) {
    one(x, &g[0]);
    assert_int_equal(g[0].r.err, 0);
  }
  assert_true(fake_llm_connections(x->f) == conns); /* reused */
  assert_true(fake_llm_requests(x->f, FAKE_LLM_OK) == 12);
}

/* --- cancel and close ---------------------------------------------------*/

static void test_cancel(void **state) {
  fx_t *x = *state;
  got_t a, b;
  llm_request_t *ra, *rb;
  fake_llm_set_latency(x->f, 50);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  assert_int_equal(chat(x, "a", &a, &ra), 0);
  assert_int_equal(chat(x, "b", &b, &rb), 0);
  assert_int_equal(llm_request_cancel(ra), 0);
  assert_int_equal(a.calls, 0); /* later, from the loop */
  assert_int_equal(llm_request_cancel(ra), WFLO_E_STATE);
  run(x);
  assert_int_equal(a.calls, 1);
  assert_int_equal(a.r.err, WFLO_E_CANCELED);
  assert_true(wflo__err_is_verdict(a.r.err));
  assert_nothing_charged(&a);
  assert_int_equal(b.calls, 1); /* the other one is untouched */
  assert_int_equal(b.r.err, 0);
}

static void chat_inside(const llm_result_t *r, void *ud) {
  got_t *g = ud;
  got_t dummy;
  on_result(r, ud);
  memset(&dummy, 0, sizeof(dummy));
  g->chat_rc_inside =
      llm_client_chat(g_fx->c, "late", on_result, &dummy, NULL);
}

static void test_close_cancels_pending(void **state) {
  fx_t *x = *state;
  got_t a, b;
  assert_int_equal(fake_llm_fail_next(x->f, 2, FAKE_LLM_STALL, -1), 0);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  assert_int_equal(llm_client_chat(x->c, "a", chat_inside, &a, NULL), 0);
  assert_int_equal(chat(x, "b", &b, NULL), 0);
  /* Let both reach the server, then close with them in flight. */
  while (fake_llm_requests(x->f, FAKE_LLM_STALL) < 2)
    uv_run(&x->loop, UV_RUN_ONCE);
  assert_int_equal(llm_client_close(x->c, set_closed, &x->client_closed), 0);
  assert_int_equal(llm_client_close(x->c, NULL, NULL), WFLO_E_STATE);
  assert_int_equal(a.calls + b.calls, 0);
  run(x);
  assert_int_equal(a.calls, 1);
  assert_int_equal(b.calls, 1);
  assert_int_equal(a.r.err, WFLO_E_CANCELED);
  assert_int_equal(b.r.err, WFLO_E_CANCELED);
  assert_int_equal(a.chat_rc_inside, WFLO_E_STATE); /* closing: refused */
  assert_int_equal(x->client_closed, 1);            /* after the callbacks */
  x->c = NULL;
}

static void close_inside(const llm_result_t *r, void *ud) {
  on_result(r, ud);
  assert_int_equal(llm_client_close(g_fx->c, set_closed, &g_fx->client_closed),
                   0);
}

static void test_close_from_callback(void **state) {
  fx_t *x = *state;
  got_t a, b;
  /* b stalls at the server; a's answer closes the client from a's
   * callback, which must cancel b. */
  assert_int_equal(fake_llm_fail_next(x->f, 1, FAKE_LLM_STALL, -1), 0);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  assert_int_equal(chat(x, "b", &b, NULL), 0);
  while (fake_llm_requests(x->f, FAKE_LLM_STALL) < 1)
    uv_run(&x->loop, UV_RUN_ONCE);
  assert_int_equal(llm_client_chat(x->c, "a", close_inside, &a, NULL), 0);
  run(x);
  assert_int_equal(a.calls, 1);
  assert_int_equal(a.r.err, 0);
  assert_int_equal(b.calls, 1);
  assert_int_equal(b.r.err, WFLO_E_CANCELED);
  assert_true(b.order > a.order);
  assert_int_equal(x->client_closed, 1);
  x->c = NULL;
}

static void count_handle(uv_handle_t *h, void *arg) {
  (void)h;
  (*(int *)arg)++;
}

static void test_idle_client_does_not_hold_loop(void **state) {
  fx_t *x = *state;
  got_t g;
  int handles = 0;
  one(x, &g); /* leaves a cached keep-alive connection behind */
  /* The client and the server still own open handles (teardown closes
   * them), yet none keeps the loop alive. */
  uv_walk(&x->loop, count_handle, &handles);
  assert_true(handles >= 3);
  assert_int_equal(uv_loop_alive(&x->loop), 0);
}

/* --- server on its own thread -------------------------------------------*/

static void test_server_thread_mode(void **state) {
  fx_t *x = *state;
  fake_llm_t *t;
  char url[64];
  got_t stall, ok[3];
  int i, closed = 0;
  assert_int_equal(fake_llm_start_thread(&t), 0);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", fake_llm_port(t));
  /* Long enough for three answers on new connections under valgrind. */
  replace_client(x, url, 5 * STALL_TIMEOUT_MS);
  fake_llm_set_usage(t, 7, 3);
  assert_int_equal(fake_llm_fail_next(t, 1, FAKE_LLM_STALL, -1), 0);
  memset(&stall, 0, sizeof(stall));
  memset(ok, 0, sizeof(ok));
  assert_int_equal(chat(x, "stall", &stall, NULL), 0);
  /* The server is on another loop: nothing wakes ours when it counts, so
   * poll instead of blocking in UV_RUN_ONCE (which would sleep until
   * curl's timeout). */
  while (fake_llm_requests(t, FAKE_LLM_STALL) < 1) {
    uv_run(&x->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  /* The stalled request does not hold up the others. */
  for (i = 0; i < 3; i++)
    assert_int_equal(chat(x, "ok", &ok[i], NULL), 0);
  run(x);
  for (i = 0; i < 3; i++) {
    assert_int_equal(ok[i].r.err, 0);
    assert_true(ok[i].r.prompt_tokens == 7);
    assert_true(ok[i].order < stall.order);
  }
  assert_int_equal(stall.r.err, UV_ETIMEDOUT);
  assert_true(fake_llm_requests(t, FAKE_LLM_ANY) == 4);
  /* The fixture's server (on x's loop) stays and is closed by teardown. */
  replace_client(x, x->url, LONG_TIMEOUT_MS);
  fake_llm_close(t, set_closed, &closed); /* joins the thread */
  assert_int_equal(closed, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define U(fn)                                                                 \
  cmocka_unit_test_setup_teardown(fn, wflo_test_setup, wflo_test_teardown)
      U(test_error_map_table),
      U(test_retryable_by_default),
      U(test_retry_after_parse),
#undef U
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_invalid_arguments),
      T(test_ok_text_and_usage),
      T(test_messages_conversation),
      T(test_429_retry_after),
      T(test_500),
      T(test_400_not_retryable),
      T(test_malformed_json_charges_nothing),
      T(test_stall_times_out),
      T(test_close_fresh_connection),
      T(test_close_reused_connection),
      T(test_connection_refused),
      T(test_bad_url_scheme),
      T(test_oversized_request_rejected),
      T(test_concurrent_and_keepalive),
      T(test_cancel),
      T(test_close_cancels_pending),
      T(test_close_from_callback),
      T(test_idle_client_does_not_hold_loop),
      T(test_server_thread_mode),
#undef T
  };
  /* The client and the fake server allocate with malloc, not libwflo's
   * allocator; the counting allocator still proves that nothing of
   * libwflo is involved or left behind. Their own leaks are ASan's and
   * valgrind's to find. */
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
