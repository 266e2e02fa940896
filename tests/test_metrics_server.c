/* Tests of the metrics HTTP listener (src/metrics_server.c) with a raw
 * libuv TCP client on the same loop: status codes, headers, bodies,
 * malformed and oversized requests, connection limits, closing with
 * connections open, bind errors, out of memory. test_metrics_curl.c drives
 * the same listener with libcurl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "internal/loop.h"
#include "internal/metrics.h"

/* --- a raw client ------------------------------------------------------------------ */

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_write_t wreq2; /* a second write by the test itself */
  const char *req;
  size_t req_len;
  size_t extra;      /* bytes of junk sent after req (a body we never read) */
  size_t extra_late; /* junk sent once the response starts arriving */
  char *junk;
  char *resp; /* libc memory */
  size_t len, cap;
  int error; /* first error other than EOF */
  bool eof;
  bool closed;
  char rbuf[65536];
} client_t;

static void client_written(uv_write_t *req, int status);

static void client_on_close(uv_handle_t *h) {
  client_t *c = h->data;
  c->closed = true;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  if (n < 0) {
    if (n == UV_EOF)
      c->eof = true;
    else if (c->error == 0)
      c->error = (int)n;
    uv_close((uv_handle_t *)&c->tcp, client_on_close);
    return;
  }
  if (c->len + (size_t)n + 1 > c->cap) {
    c->cap = (c->len + (size_t)n + 1) * 2;
    c->resp = realloc(c->resp, c->cap);
  }
  if (c->extra_late > 0 && n > 0) {
    /* Keep talking after the server answered, as a client still sending a
     * body does: the server must drain it, not reset the connection. */
    c->junk = malloc(c->extra_late);
    memset(c->junk, 'y', c->extra_late);
    c->wreq2.data = c;
    uv_write(&c->wreq2, s,
             (uv_buf_t[]){uv_buf_init(c->junk, (unsigned)c->extra_late)}, 1,
             client_written);
    c->extra_late = 0;
  }
  memcpy(c->resp + c->len, buf->base, (size_t)n);
  c->len += (size_t)n;
  c->resp[c->len] = '\0';
}

static void client_written(uv_write_t *req, int status) {
  client_t *c = req->data;
  if (status < 0 && c->error == 0 && status != UV_ECANCELED)
    c->error = status;
}

static void client_connected(uv_connect_t *req, int status) {
  client_t *c = req->data;
  uv_buf_t bufs[2];
  unsigned n = 0;
  if (status < 0) {
    c->error = status;
    uv_close((uv_handle_t *)&c->tcp, client_on_close);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  if (c->req_len > 0)
    bufs[n++] = uv_buf_init((char *)c->req, (unsigned)c->req_len);
  if (c->extra > 0) {
    c->junk = malloc(c->extra);
    memset(c->junk, 'x', c->extra);
    bufs[n++] = uv_buf_init(c->junk, (unsigned)c->extra);
  }
  if (n > 0) {
    c->wreq.data = c;
    uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n, client_written);
  }
}

static void client_start(uv_loop_t *loop, client_t *c, int port,
                         const char *req, size_t req_len) {
  struct sockaddr_in addr;
  memset(c, 0, offsetof(client_t, rbuf));
  c->req = req;
  c->req_len = req_len;
  assert_int_equal(uv_ip4_addr("127.0.0.1", port, &addr), 0);
  assert_int_equal(uv_tcp_init(loop, &c->tcp), 0);
  c->tcp.data = c;
  c->creq.data = c;
  assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp,
                                  (const struct sockaddr *)&addr,
                                  client_connected),
                   0);
}

static void client_wait(uv_loop_t *loop, client_t *c) {
  while (!c->closed)
    uv_run(loop, UV_RUN_ONCE);
}

static void client_free(client_t *c) {
  free(c->resp);
  free(c->junk);
  c->resp = c->junk = NULL;
}

/* Runs one request to completion. */
static void http(uv_loop_t *loop, int port, client_t *c, const char *req) {
  client_start(loop, c, port, req, strlen(req));
  client_wait(loop, c);
}

static int status_of(const client_t *c) {
  int st = 0;
  if (c->resp == NULL || sscanf(c->resp, "HTTP/1.1 %d ", &st) != 1)
    return -1;
  return st;
}

static const char *body_of(const client_t *c) {
  const char *p = c->resp != NULL ? strstr(c->resp, "\r\n\r\n") : NULL;
  return p != NULL ? p + 4 : NULL;
}

static bool has_header(const client_t *c, const char *h) {
  const char *end = c->resp != NULL ? strstr(c->resp, "\r\n\r\n") : NULL;
  const char *p = c->resp != NULL ? strstr(c->resp, h) : NULL;
  return p != NULL && p < end && p[-1] == '\n' && p[strlen(h)] == '\r';
}

/* Content-Length matches the body received (or, for HEAD, body is empty). */
static void assert_framing(const client_t *c, bool head) {
  const char *cl = strstr(c->resp, "\r\nContent-Length: ");
  size_t n;
  assert_non_null(cl);
  assert_int_equal(sscanf(cl, "\r\nContent-Length: %zu", &n), 1);
  assert_non_null(body_of(c));
  assert_int_equal(strlen(body_of(c)), head ? 0 : n);
}

/* --- fixtures ------------------------------------------------------------------------ */

static void on_server_closed(void *ud) { (*(int *)ud)++; }

static void close_server(uv_loop_t *loop, wflo_metrics_server_t *srv) {
  int closed = 0;
  assert_int_equal(wflo_metrics_server_close(srv, on_server_closed, &closed),
                   0);
  assert_int_equal(closed, 0); /* never inside the call */
  wflo_test_loop_close(loop);
  assert_int_equal(closed, 1);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static int teardown(void **state) {
  wflo_metrics_reset();
  return wflo_test_teardown(state);
}

/* --- tests ------------------------------------------------------------------------------ */

static void test_routes(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  wflo__metric_series_t *s;
  client_t c;
  char *text;
  json_t *j;
  int port;
  (void)state;
  s = wflo__metric_get(WFLO__M_BREAKER_CALLS,
                       (const char *[]){"db \"x\"", "success"});
  wflo__counter_add(s, 41);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  assert_true(port > 0 && port < 65536);

  /* GET /metrics: exactly the exposition. */
  text = wflo_metrics_prometheus_text(NULL);
  http(&loop, port, &c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(c.error, 0);
  assert_int_equal(status_of(&c), 200);
  assert_true(has_header(&c, "Content-Type: text/plain; version=0.0.4; "
                             "charset=utf-8"));
  assert_true(has_header(&c, "Connection: close"));
  assert_framing(&c, false);
  assert_string_equal(body_of(&c), text);
  assert_non_null(strstr(body_of(&c), "wflo_circuit_breaker_calls_total{"
                                      "name=\"db \\\"x\\\"\","
                                      "outcome=\"success\"} 41\n"));
  wflo_metrics_text_free(text);
  client_free(&c);

  /* HEAD: the same status and length, no body. */
  http(&loop, port, &c, "HEAD /metrics HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 200);
  assert_framing(&c, true);
  assert_false(has_header(&c, "Content-Length: 0"));
  client_free(&c);

  /* Query string ignored; HTTP/1.0 and bare LF tolerated. */
  http(&loop, port, &c, "GET /metrics?name[]=1 HTTP/1.0\n\n");
  assert_int_equal(status_of(&c), 200);
  assert_framing(&c, false);
  client_free(&c);

  /* /healthz: JSON, healthy with nothing registered. */
  http(&loop, port, &c, "GET /healthz HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 200);
  assert_true(has_header(&c, "Content-Type: application/json"));
  assert_framing(&c, false);
  j = json_loads(body_of(&c), 0, NULL);
  assert_non_null(j);
  assert_true(json_is_true(json_object_get(j, "healthy")));
  assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
  json_decref(j);
  client_free(&c);

  /* Unknown path: 404 (whatever the method). */
  http(&loop, port, &c, "GET /nope HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 404);
  assert_framing(&c, false);
  client_free(&c);
  http(&loop, port, &c, "GET /metricsx HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 404);
  client_free(&c);
  http(&loop, port, &c, "DELETE / HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 404);
  client_free(&c);

  /* Other methods on our paths: 405 with Allow. The POST body is never
   * read; the lingering close still delivers the response. */
  http(&loop, port, &c,
       "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
       "hello");
  assert_int_equal(status_of(&c), 405);
  assert_true(has_header(&c, "Allow: GET, HEAD"));
  assert_framing(&c, false);
  client_free(&c);
  http(&loop, port, &c, "PUT /healthz HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 405);
  client_free(&c);
  http(&loop, port, &c, "get /metrics HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 405);
  client_free(&c);

  /* Malformed request lines: 400. */
  {
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET metrics HTTP/1.1\r\n\r\n",
        "GET /metrics\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET /metrics HTTP/1.1 extra\r\n\r\n",
        " GET /metrics HTTP/1.1\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n",
        "\r\n\r\n",
        "G(T /metrics HTTP/1.1\r\n\r\n",
    };
    size_t i;
    for (i = 0; i < WFLO_ARRAY_SIZE(bad); i++) {
      http(&loop, port, &c, bad[i]);
      if (status_of(&c) != 400)
        fail_msg("request %zu: expected 400, got %d", i, status_of(&c));
      assert_framing(&c, false);
      client_free(&c);
    }
  }
  close_server(&loop, srv);
  wflo__metric_release(s);
}

static void test_oversized_request(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  client_t c;
  char *req;
  size_t n = WFLO_METRICS_MAX_REQUEST + 100;
  int port;
  (void)state;
  req = malloc(n + 1);
  memcpy(req, "GET /metrics HTTP/1.1\r\nX-Pad: ", 30);
  memset(req + 30, 'a', n - 30);
  req[n] = '\0';
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);

  /* A head that never ends within the limit: 431, then closed. */
  client_start(&loop, &c, port, req, n);
  client_wait(&loop, &c);
  assert_int_equal(status_of(&c), 431);
  assert_framing(&c, false);
  /* A clean FIN, not a reset: the server drained what it did not read
   * before closing (closing with unread input sends RST, which can destroy
   * the response before a client reads it). */
  assert_true(c.eof);
  assert_int_equal(c.error, 0);
  client_free(&c);

  /* The same while the client keeps sending (40 KiB more): the response
   * still arrives intact. */
  client_start(&loop, &c, port, req, n);
  c.extra = 40 * 1024;
  client_wait(&loop, &c);
  assert_int_equal(status_of(&c), 431);
  assert_true(c.eof);
  assert_int_equal(c.error, 0);
  client_free(&c);

  /* A client that keeps sending after the response started: drained, a
   * clean close, no reset. */
  client_start(&loop, &c, port, "POST /metrics HTTP/1.1\r\n\r\n", 27);
  c.extra_late = 32 * 1024;
  client_wait(&loop, &c);
  assert_int_equal(status_of(&c), 405);
  assert_true(c.eof);
  assert_int_equal(c.error, 0);
  client_free(&c);

  /* Exactly at the limit with the terminator inside: served. */
  memcpy(req + WFLO_METRICS_MAX_REQUEST - 4, "\r\n\r\n", 4);
  client_start(&loop, &c, port, req, WFLO_METRICS_MAX_REQUEST);
  client_wait(&loop, &c);
  assert_int_equal(status_of(&c), 200);
  client_free(&c);
  free(req);
  close_server(&loop, srv);
}

static int probe_result;

static void probe(wflo_health_probe_t *p, void *ud) {
  (*(int *)ud)++;
  wflo_health_probe_done(p, probe_result);
}

static void test_healthz_unhealthy(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  wflo_health_check_t *hc;
  wflo_health_check_config_t cfg;
  client_t c;
  json_t *j;
  int port, runs = 0;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  wflo_health_check_config_init(&cfg);
  cfg.name = "db";
  cfg.period = 0.005;
  cfg.probe = probe;
  cfg.user_data = &runs;
  probe_result = UV_ECONNREFUSED;
  assert_int_equal(wflo_health_check_start(&loop, &cfg, &hc), 0);
  while (wflo_health_ok())
    uv_run(&loop, UV_RUN_ONCE);
  assert_true(runs >= 1);
  http(&loop, port, &c, "GET /healthz HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 503);
  assert_framing(&c, false);
  j = json_loads(body_of(&c), 0, NULL);
  assert_non_null(j);
  assert_true(json_is_false(json_object_get(j, "healthy")));
  assert_string_equal(json_string_value(json_object_get(j, "status")),
                      "unhealthy");
  assert_string_equal(
      json_string_value(json_object_get(
          json_array_get(json_object_get(j, "checks"), 0), "last_error")),
      "ECONNREFUSED");
  json_decref(j);
  client_free(&c);
  /* HEAD carries the status too. */
  http(&loop, port, &c, "HEAD /healthz HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 503);
  assert_framing(&c, true);
  client_free(&c);
  /* Recovery. */
  probe_result = 0;
  while (!wflo_health_ok())
    uv_run(&loop, UV_RUN_ONCE);
  http(&loop, port, &c, "GET /healthz HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&c), 200);
  client_free(&c);
  assert_int_equal(wflo_health_check_stop(hc), 0);
  close_server(&loop, srv);
}

static void test_close_with_connections(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  client_t idle, partial;
  int port, closed = 0, i;
  (void)state;
  /* IPv6 when the machine has it. */
  assert_int_equal(uv_loop_init(&loop), 0);
  if (wflo_metrics_serve(&loop, "::1", 0, &srv) == 0) {
    assert_true(wflo_metrics_server_port(srv) > 0);
    assert_int_equal(wflo_metrics_server_close(srv, NULL, NULL), 0);
  } else {
    print_message("note: no IPv6 loopback; ::1 not exercised\n");
  }
  wflo_test_loop_close(&loop);

  /* IPv4, two connections open (one idle, one mid-request). */
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  client_start(&loop, &idle, port, "", 0);
  client_start(&loop, &partial, port, "GET /metr", 9);
  for (i = 0; i < 20; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  assert_false(idle.closed);
  assert_false(partial.closed);
  assert_int_equal(wflo_metrics_server_close(srv, on_server_closed, &closed),
                   0);
  assert_int_equal(wflo_metrics_server_close(srv, NULL, NULL), WFLO_E_STATE);
  wflo_test_loop_close(&loop);
  assert_int_equal(closed, 1);
  /* The clients saw the server go away without a response. */
  assert_true(idle.closed && partial.closed);
  assert_null(idle.resp);
  assert_null(partial.resp);
  client_free(&idle);
  client_free(&partial);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

static void test_request_timeout(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  client_t idle, partial, ok;
  uint64_t t0;
  int port;
  (void)state;
  wflo__metrics_request_timeout_ms = 30;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  t0 = uv_hrtime();
  client_start(&loop, &idle, port, "", 0);
  client_start(&loop, &partial, port, "GET /metrics HTTP/1.1\r\nHost:", 28);
  client_wait(&loop, &idle);
  client_wait(&loop, &partial);
  /* Dropped by the server after the deadline, without a response. */
  assert_true(uv_hrtime() - t0 >= 25 * 1000000ull);
  assert_null(idle.resp);
  assert_null(partial.resp);
  assert_true(idle.eof && partial.eof);
  /* A prompt client is not affected. */
  http(&loop, port, &ok, "GET /metrics HTTP/1.1\r\n\r\n");
  assert_int_equal(status_of(&ok), 200);
  client_free(&idle);
  client_free(&partial);
  client_free(&ok);
  wflo__metrics_request_timeout_ms =
      (uint64_t)(WFLO_METRICS_REQUEST_TIMEOUT * 1000);
  close_server(&loop, srv);
}

static void test_connection_limit(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  client_t *cl = calloc(WFLO_METRICS_MAX_CONNECTIONS + 2, sizeof(*cl));
  int port, i, refused = 0, served = 0;
  (void)state;
  assert_non_null(cl);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  /* Fill every slot with a connection that has not finished its request. */
  for (i = 0; i < WFLO_METRICS_MAX_CONNECTIONS; i++)
    client_start(&loop, &cl[i], port, "GET /", 5);
  for (i = 0; i < 50; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  /* Two more: accepted and dropped at once, no response. */
  for (i = WFLO_METRICS_MAX_CONNECTIONS; i < WFLO_METRICS_MAX_CONNECTIONS + 2;
       i++) {
    client_start(&loop, &cl[i], port, "GET /metrics HTTP/1.1\r\n\r\n", 25);
    client_wait(&loop, &cl[i]);
    assert_null(cl[i].resp);
    refused++;
  }
  assert_int_equal(refused, 2);
  for (i = 0; i < WFLO_METRICS_MAX_CONNECTIONS; i++)
    assert_false(cl[i].closed);
  /* The waiting ones finish their requests and are served. */
  for (i = 0; i < WFLO_METRICS_MAX_CONNECTIONS; i++) {
    cl[i].wreq2.data = &cl[i];
    uv_write(&cl[i].wreq2, (uv_stream_t *)&cl[i].tcp,
             (uv_buf_t[]){uv_buf_init("healthz HTTP/1.1\r\n\r\n", 21)}, 1,
             client_written);
  }
  for (i = 0; i < WFLO_METRICS_MAX_CONNECTIONS; i++) {
    client_wait(&loop, &cl[i]);
    served += status_of(&cl[i]) == 200;
  }
  assert_int_equal(served, WFLO_METRICS_MAX_CONNECTIONS);
  for (i = 0; i < WFLO_METRICS_MAX_CONNECTIONS + 2; i++)
    client_free(&cl[i]);
  free(cl);
  close_server(&loop, srv);
}

static void test_bind_errors_and_args(void **state) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv, *srv2 = NULL;
  int port;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_metrics_serve(NULL, "127.0.0.1", 0, &srv),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_serve(&loop, NULL, 0, &srv), WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, NULL),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_serve(&loop, "localhost", 0, &srv),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", -1, &srv),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 65536, &srv),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_server_close(NULL, NULL, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_metrics_server_port(NULL), WFLO_E_INVAL);
  assert_int_equal(wflo__loop_states_alive(), 0);

  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv), 0);
  port = wflo_metrics_server_port(srv);
  /* The port is taken: the error comes back and nothing stays open once
   * the loop has run. */
  assert_int_equal(wflo_metrics_serve(&loop, "127.0.0.1", port, &srv2),
                   UV_EADDRINUSE);
  assert_null(srv2);
  close_server(&loop, srv);
}

/* --- out of memory ---------------------------------------------------------------------- */

static int oom_scenario(void *ud) {
  uv_loop_t loop;
  wflo_metrics_server_t *srv;
  wflo__metric_series_t *s;
  client_t c;
  int rc, st;
  (void)ud;
  s = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, (const char *[]){"oom"});
  wflo__counter_add(s, 1);
  assert_int_equal(uv_loop_init(&loop), 0);
  rc = wflo_metrics_serve(&loop, "127.0.0.1", 0, &srv);
  if (rc == 0) {
    http(&loop, wflo_metrics_server_port(srv), &c,
         "GET /metrics HTTP/1.1\r\n\r\n");
    st = status_of(&c);
    /* Out of memory: 500, or dropped at accept (no response). */
    if (st != 200) {
      assert_true(st == 500 || (st == -1 && c.resp == NULL));
      rc = WFLO_E_NOMEM;
    } else if (s == NULL) {
      rc = WFLO_E_NOMEM;
    }
    client_free(&c);
    http(&loop, wflo_metrics_server_port(srv), &c,
         "GET /healthz HTTP/1.1\r\n\r\n");
    st = status_of(&c);
    if (st != 200) {
      assert_true(st == 500 || (st == -1 && c.resp == NULL));
      rc = WFLO_E_NOMEM;
    }
    client_free(&c);
    assert_int_equal(wflo_metrics_server_close(srv, NULL, NULL), 0);
  } else {
    assert_int_equal(rc, WFLO_E_NOMEM);
  }
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
  wflo__metric_release(s);
  wflo_metrics_reset();
  return rc;
}

static void test_oom(void **state) {
  (void)state;
  wflo_test_oom_loop(oom_scenario, NULL, 0);
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, wflo_test_setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      TEST(test_routes),
      TEST(test_oversized_request),
      TEST(test_healthz_unhealthy),
      TEST(test_close_with_connections),
      TEST(test_request_timeout),
      TEST(test_connection_limit),
      TEST(test_bind_errors_and_args),
      TEST(test_oom),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
