/* The metrics listener against a real HTTP client: libcurl's easy API on a
 * worker thread while the main thread runs the loop that serves. The
 * worker only records; the main thread asserts after joining it. (Built
 * only when libcurl is found; test_metrics_server.c covers the same
 * listener with a raw libuv client.) */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <stdlib.h>

#include "harness.h"
#include "internal/loop.h"
#include "internal/metrics.h"

typedef struct reply {
  long code;
  char *body; /* libc memory */
  size_t len;
  char content_type[128];
  curl_off_t content_length;
  CURLcode rc;
} reply_t;

enum { R_METRICS, R_HEAD, R_HEALTH, R_NOPE, R_POST, R_HUGE, R_COUNT };

typedef struct job {
  int port;
  uv_async_t *done;
  reply_t r[R_COUNT];
} job_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  reply_t *r = ud;
  char *nb = realloc(r->body, r->len + size * n + 1);
  if (nb == NULL)
    return 0;
  r->body = nb;
  memcpy(r->body + r->len, p, size * n);
  r->len += size * n;
  r->body[r->len] = '\0';
  return size * n;
}

static void fetch(int port, const char *path, reply_t *r, bool head, bool post,
                  struct curl_slist *headers) {
  char url[128];
  char *ct = NULL;
  CURL *h = curl_easy_init();
  memset(r, 0, sizeof(*r));
  if (h == NULL) {
    r->rc = CURLE_FAILED_INIT;
    return;
  }
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never an environment proxy */
  if (head)
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  if (post)
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "scrape=please");
  if (headers != NULL)
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  r->rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->code);
  curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
  if (ct != NULL)
    snprintf(r->content_type, sizeof(r->content_type), "%s", ct);
  curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &r->content_length);
  curl_easy_cleanup(h);
}

static void client_thread(void *arg) {
  job_t *j = arg;
  struct curl_slist *huge = NULL;
  char *pad = malloc(WFLO_METRICS_MAX_REQUEST + 64);
  if (pad != NULL) {
    memcpy(pad, "X-Pad: ", 7);
    memset(pad + 7, 'a', WFLO_METRICS_MAX_REQUEST + 32);
    pad[WFLO_METRICS_MAX_REQUEST + 39] = '\0';
    huge = curl_slist_append(NULL, pad);
    free(pad);
  }
  fetch(j->port, "/metrics", &j->r[R_METRICS], false, false, NULL);
  fetch(j->port, "/metrics", &j->r[R_HEAD], true, false, NULL);
  fetch(j->port, "/healthz", &j->r[R_HEALTH], false, false, NULL);
  fetch(j->port, "/nope", &j->r[R_NOPE], false, false, NULL);
  fetch(j->port, "/metrics", &j->r[R_POST], false, true, NULL);
  fetch(j->port, "/metrics", &j->r[R_HUGE], false, false, huge);
  curl_slist_free_all(huge);
  uv_async_send(j->done); /* the loop thread closes everything */
}

static int server_closed;

static void on_closed(void *ud) {
  (void)ud;
  server_closed++;
}

static void on_done(uv_async_t *a) {
  wflo_metrics_server_t *srv = a->data;
  WFLO_TEST_THREAD_CHECK(wflo_metrics_server_close(srv, on_closed, NULL) == 0);
  uv_close((uv_handle_t *)a, NULL);
}

static void test_curl(void **state) {
  uv_loop_t loop;
  uv_async_t done;
  uv_thread_t t;
  wflo_metrics_server_t *srv;
  wflo__metric_series_t *s, *h;
  job_t job;
  char *expected;
  json_t *health;
  int i;
  (void)state;
  s = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"api \"v1\"\n\xff", "rejected"});
  h = wflo__metric_get(WFLO__M_RETRY_DELAY, NULL);
  wflo__counter_add(s, 12);
  wflo__histogram_observe(h, 0.3);
  expected = wflo_metrics_prometheus_text(NULL);
  assert_non_null(expected);

  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  assert_int_equal(uv_async_init(&loop, &done, on_done), 0);
  done.data = srv;
  memset(&job, 0, sizeof(job));
  job.port = wflo_metrics_server_port(srv);
  job.done = &done;
  assert_int_equal(uv_thread_create(&t, client_thread, &job), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  wflo_test_assert_thread_checks();
  wflo_test_loop_close(&loop);
  assert_int_equal(server_closed, 1);
  assert_int_equal(wflo__loop_states_alive(), 0);

  for (i = 0; i < R_COUNT; i++)
    if (job.r[i].rc != CURLE_OK)
      fail_msg("request %d: %s", i, curl_easy_strerror(job.r[i].rc));
  assert_int_equal(job.r[R_METRICS].code, 200);
  assert_string_equal(job.r[R_METRICS].content_type,
                      WFLO_METRICS_CONTENT_TYPE);
  assert_string_equal(job.r[R_METRICS].body, expected);
  assert_non_null(strstr(job.r[R_METRICS].body,
                         "wflo_circuit_breaker_calls_total{name=\"api "
                         "\\\"v1\\\"\\n\xef\xbf\xbd\",outcome=\"rejected\"} "
                         "12\n"));
  assert_int_equal(job.r[R_HEAD].code, 200);
  assert_int_equal(job.r[R_HEAD].len, 0);
  assert_int_equal(job.r[R_HEAD].content_length, (curl_off_t)strlen(expected));
  assert_int_equal(job.r[R_HEALTH].code, 200);
  assert_string_equal(job.r[R_HEALTH].content_type, "application/json");
  health = json_loads(job.r[R_HEALTH].body, 0, NULL);
  assert_non_null(health);
  assert_true(json_is_true(json_object_get(health, "healthy")));
  json_decref(health);
  assert_int_equal(job.r[R_NOPE].code, 404);
  assert_int_equal(job.r[R_POST].code, 405);
  assert_int_equal(job.r[R_HUGE].code, 431);
  for (i = 0; i < R_COUNT; i++)
    free(job.r[i].body);
  wflo_metrics_text_free(expected);
  wflo__metric_release(s);
  wflo__metric_release(h);
}

static int teardown(void **state) {
  wflo_metrics_reset();
  return wflo_test_teardown(state);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_curl, wflo_test_setup, teardown),
  };
  int rc;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return 1;
  rc = cmocka_run_group_tests(tests, wflo_test_group_setup,
                              wflo_test_group_teardown);
  curl_global_cleanup();
  return rc;
}
