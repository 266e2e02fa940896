/* fake_llm: the fake chat-completions server (see fake_llm.h).
 *
 * One conn_t per accepted connection, with a fixed request buffer of
 * FAKE_LLM_MAX_REQUEST bytes: requests are parsed in place, one at a time
 * (a connection that is answering stops parsing until the answer is
 * written), which is all HTTP/1.1 keep-alive needs. Each conn owns two
 * handles (the socket and a latency timer) and is freed when both close
 * callbacks ran; the server is freed when every handle it counts closed.
 * Script, usage, latency and counters live under one mutex so thread mode's
 * getters and setters are safe from the test's thread. */
#include "fake_llm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SCRIPT_MAX 32

typedef struct step {
  unsigned n;
  fake_llm_kind_t kind;
  int retry_after_s;
  int retry_after_ms; /* negative: no retry-after-ms header */
} step_t;

typedef struct conn {
  uv_tcp_t tcp;
  /* Holds an answer back by the latency; later bounds a lingering close. */
  uv_timer_t delay;
  uv_shutdown_t shutdown;
  struct conn *prev, *next;
  fake_llm_t *f;
  int handles; /* of tcp and delay, not yet closed */
  int closing;
  int busy;        /* answering: parse nothing more until written */
  int stalled;     /* never answer; ignore further bytes */
  int inflight;    /* counted in synced.inflight */
  int close_after; /* "Connection: close" or HTTP/1.0 */
  int sent_continue;
  char *pending; /* answer waiting for the delay timer */
  size_t pending_len;
  size_t len; /* bytes in buf */
  char buf[FAKE_LLM_MAX_REQUEST];
} conn_t;

struct fake_llm_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  conn_t *conns;
  int port;
  int handles; /* every open handle: listener, stop, conns' */
  int closing;
  void (*closed)(void *ud);
  void *closed_ud;
  uint64_t next_id;
  /* thread mode */
  int threaded;
  uv_loop_t own_loop;
  uv_thread_t thread;
  uv_async_t stop;
  uv_sem_t ready;
  int start_rc;
  struct {
    uv_mutex_t mu;
    step_t script[SCRIPT_MAX];
    size_t head, len;
    uint64_t prompt_tokens, completion_tokens;
    unsigned latency_ms;
    uint64_t served[FAKE_LLM_KINDS];
    uint64_t connections;
    unsigned inflight, max_inflight;
    json_t *last_body;
    char last_auth[256];
  } synced;
};

/* A parsed request: pointers into conn->buf, valid until it is consumed. */
typedef struct request {
  const char *method, *target, *body;
  size_t method_len, target_len, body_len, header_len;
  const char *auth;
  size_t auth_len;
  int expect_continue, chunked, bad;
} request_t;

typedef struct wreq {
  uv_write_t req;
  conn_t *c;
  int is_answer;
  char *data; /* malloc'ed; freed once written */
} wreq_t;

static void process(conn_t *c);

/* --- handles and teardown ----------------------------------------------- */

static void server_free(fake_llm_t *f) {
  json_decref(f->synced.last_body);
  uv_mutex_destroy(&f->synced.mu);
  free(f);
}

static void handle_gone(fake_llm_t *f) {
  void (*cb)(void *ud);
  void *ud;
  if (--f->handles > 0 || !f->closing || f->threaded)
    return; /* thread mode: uv_run returns and the closer frees */
  cb = f->closed;
  ud = f->closed_ud;
  server_free(f);
  if (cb != NULL)
    cb(ud);
}

static void server_handle_closed(uv_handle_t *h) { handle_gone(h->data); }

static void inflight_done(conn_t *c) {
  fake_llm_t *f = c->f;
  if (!c->inflight)
    return;
  c->inflight = 0;
  uv_mutex_lock(&f->synced.mu);
  f->synced.inflight--;
  uv_mutex_unlock(&f->synced.mu);
}

static void conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  fake_llm_t *f = c->f;
  if (--c->handles == 0) {
    free(c->pending);
    free(c);
  }
  handle_gone(f);
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->f->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  inflight_done(c);
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->delay, conn_handle_closed);
}

static void start_close(fake_llm_t *f) {
  f->closing = 1;
  uv_close((uv_handle_t *)&f->listener, server_handle_closed);
  while (f->conns != NULL)
    conn_close(f->conns);
  if (f->threaded)
    uv_close((uv_handle_t *)&f->stop, server_handle_closed);
}

/* --- writing ------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

static void on_linger_timeout(uv_timer_t *t) { conn_close(t->data); }

/* Closing right after an answer would reset the connection if the client is
 * still sending (a 413 for a big upload): the RST can destroy the answer
 * before the client reads it. So: send FIN, throw away what still comes,
 * close on the client's EOF or after a second. */
static void linger_close(conn_t *c) {
  c->stalled = 1;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->delay, on_linger_timeout, 1000, 0);
}

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)(void *)req;
  conn_t *c = w->c;
  int is_answer = w->is_answer;
  free(w->data);
  free(w);
  if (!is_answer || c->closing)
    return;
  inflight_done(c);
  c->busy = 0;
  if (status < 0)
    conn_close(c);
  else if (c->close_after)
    linger_close(c);
  else
    process(c); /* a pipelined request may be waiting in buf */
}

/* Sends data (malloc'ed; owned from here on). */
static void send_bytes(conn_t *c, char *data, size_t len, int is_answer) {
  wreq_t *w = malloc(sizeof(*w));
  uv_buf_t b;
  if (w == NULL) {
    free(data);
    conn_close(c);
    return;
  }
  w->c = c;
  w->is_answer = is_answer;
  w->data = data;
  b = uv_buf_init(data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(data);
    free(w);
    conn_close(c);
  }
}

static void on_delay(uv_timer_t *t) {
  conn_t *c = t->data;
  char *data = c->pending;
  c->pending = NULL;
  send_bytes(c, data, c->pending_len, 1);
}

/* Formats and sends one answer; with latency it waits on the conn's timer.
 * While the answer is out, the connection parses nothing more (busy). */
static void answer(conn_t *c, int status, const char *reason,
                   const char *extra, const char *body, unsigned delay_ms) {
  size_t blen = strlen(body);
  int n;
  char *data;
#define HEAD_FMT                                                              \
  "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"                      \
  "Content-Length: %zu\r\nConnection: %s\r\n%s\r\n"
  const char *conn_hdr = c->close_after ? "close" : "keep-alive";
  n = snprintf(NULL, 0, HEAD_FMT, status, reason, blen, conn_hdr, extra);
  if (n < 0 || (data = malloc((size_t)n + blen + 1)) == NULL) {
    conn_close(c);
    return;
  }
  snprintf(data, (size_t)n + 1, HEAD_FMT, status, reason, blen, conn_hdr,
           extra);
#undef HEAD_FMT
  memcpy(data + n, body, blen);
  c->busy = 1;
  if (delay_ms == 0) {
    send_bytes(c, data, (size_t)n + blen, 1);
    return;
  }
  c->pending = data;
  c->pending_len = (size_t)n + blen;
  uv_timer_start(&c->delay, on_delay, delay_ms, 0);
}

/* --- answering a chat request ------------------------------------------- */

static fake_llm_kind_t next_kind(fake_llm_t *f, int *retry_after_s,
                                 int *retry_after_ms) {
  fake_llm_kind_t kind = FAKE_LLM_OK;
  step_t *s;
  *retry_after_s = *retry_after_ms = -1;
  if (f->synced.len > 0) {
    s = &f->synced.script[f->synced.head];
    kind = s->kind;
    *retry_after_s = s->retry_after_s;
    *retry_after_ms = s->retry_after_ms;
    if (--s->n == 0) {
      f->synced.head = (f->synced.head + 1) % SCRIPT_MAX;
      f->synced.len--;
    }
  }
  return kind;
}

static void reject(conn_t *c, int status, const char *reason, int close) {
  fake_llm_t *f = c->f;
  uv_mutex_lock(&f->synced.mu);
  f->synced.served[FAKE_LLM_REJECTED]++;
  uv_mutex_unlock(&f->synced.mu);
  if (close) {
    /* The rest of this request will never be parsed: swallow it (a full
     * buffer would otherwise fail the next read and reset the
     * connection before the client reads our answer). */
    c->close_after = 1;
    c->stalled = 1;
    c->len = 0;
  }
  answer(c, status, reason, "", "{\"error\":{\"message\":\"rejected\"}}", 0);
}

static char *completion_body(fake_llm_t *f, json_t *req, uint64_t pt,
                             uint64_t ct) {
  json_t *msgs = json_object_get(req, "messages"), *resp;
  json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
  const char *prompt = json_string_value(json_object_get(last, "content"));
  char id[48], *text, *out;
  size_t n;
  prompt = prompt != NULL ? prompt : "";
  n = strlen(prompt) + sizeof("fake answer to: ");
  if ((text = malloc(n)) == NULL)
    return NULL;
  snprintf(text, n, "fake answer to: %s", prompt);
  snprintf(id, sizeof(id), "chatcmpl-fake-%llu",
           (unsigned long long)++f->next_id);
  resp = json_pack(
      "{s:s, s:s, s:I, s:O, s:[{s:i, s:{s:s, s:s}, s:s}], s:{s:I, s:I, s:I}}",
      "id", id, "object", "chat.completion", "created", (json_int_t)0, "model",
      json_object_get(req, "model"), "choices", "index", 0, "message", "role",
      "assistant", "content", text, "finish_reason", "stop", "usage",
      "prompt_tokens", (json_int_t)pt, "completion_tokens", (json_int_t)ct,
      "total_tokens", (json_int_t)(pt + ct));
  free(text);
  out = resp != NULL ? json_dumps(resp, JSON_COMPACT) : NULL;
  json_decref(resp);
  return out;
}

static void handle_chat(conn_t *c, const request_t *r) {
  fake_llm_t *f = c->f;
  json_t *req = json_loadb(r->body, r->body_len, 0, NULL);
  fake_llm_kind_t kind;
  int retry_after, retry_after_ms;
  uint64_t pt, ct;
  unsigned delay;
  size_t n;
  char extra[96], *body;
  if (!json_is_string(json_object_get(req, "model")) ||
      json_array_size(json_object_get(req, "messages")) == 0) {
    json_decref(req);
    reject(c, 400, "Bad Request", 0);
    return;
  }
  uv_mutex_lock(&f->synced.mu);
  kind = next_kind(f, &retry_after, &retry_after_ms);
  f->synced.served[kind]++;
  pt = f->synced.prompt_tokens;
  ct = f->synced.completion_tokens;
  delay = f->synced.latency_ms;
  if (++f->synced.inflight > f->synced.max_inflight)
    f->synced.max_inflight = f->synced.inflight;
  json_decref(f->synced.last_body);
  f->synced.last_body = json_incref(req);
  n = r->auth_len < sizeof(f->synced.last_auth) - 1
          ? r->auth_len
          : sizeof(f->synced.last_auth) - 1;
  memcpy(f->synced.last_auth, r->auth != NULL ? r->auth : "", n);
  f->synced.last_auth[n] = '\0';
  uv_mutex_unlock(&f->synced.mu);
  c->inflight = 1;
  switch (kind) {
  case FAKE_LLM_OK:
    if ((body = completion_body(f, req, pt, ct)) == NULL)
      conn_close(c);
    else
      answer(c, 200, "OK", "", body, delay);
    free(body);
    break;
  case FAKE_LLM_500:
    answer(c, 500, "Internal Server Error", "",
           "{\"error\":{\"message\":\"fake server error\","
           "\"type\":\"server_error\"}}",
           delay);
    break;
  case FAKE_LLM_429:
    extra[0] = '\0';
    n = 0;
    if (retry_after >= 0)
      n = (size_t)snprintf(extra, sizeof(extra), "Retry-After: %d\r\n",
                           retry_after);
    if (retry_after_ms >= 0) /* OpenAI's finer-grained header */
      snprintf(extra + n, sizeof(extra) - n, "retry-after-ms: %d\r\n",
               retry_after_ms);
    answer(c, 429, "Too Many Requests", extra,
           "{\"error\":{\"message\":\"fake rate limit\","
           "\"type\":\"rate_limit_error\"}}",
           delay);
    break;
  case FAKE_LLM_400:
    answer(c, 400, "Bad Request", "",
           "{\"error\":{\"message\":\"fake bad request\","
           "\"type\":\"invalid_request_error\"}}",
           delay);
    break;
  case FAKE_LLM_NO_USAGE:
    answer(c, 200, "OK", "",
           "{\"id\":\"chatcmpl-nousage\",\"object\":\"chat.completion\","
           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
           "\"content\":\"no usage here\"},\"finish_reason\":\"stop\"}]}",
           delay);
    break;
  case FAKE_LLM_MALFORMED:
    answer(c, 200, "OK", "", "{\"id\":\"chatcmpl-broken\",\"choices\":[{",
           delay);
    break;
  case FAKE_LLM_STALL:
    c->busy = c->stalled = 1; /* in flight until the client hangs up */
    break;
  case FAKE_LLM_CLOSE:
  default:
    conn_close(c);
    break;
  }
  json_decref(req);
}

/* --- HTTP/1.1 parsing --------------------------------------------------- */

static const char *find_blank_line(const char *p, size_t n) {
  size_t i;
  for (i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0)
      return p + i;
  return NULL;
}

static const char *find_crlf(const char *p, const char *limit) {
  for (; p + 1 < limit; p++)
    if (p[0] == '\r' && p[1] == '\n')
      return p;
  return limit;
}

static int token_is(const char *p, size_t n, const char *s) {
  return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

/* Parses the head ending at end (the blank line). */
static void parse_head(conn_t *c, const char *end, request_t *r) {
  const char *p = c->buf, *eol, *sp1, *sp2, *colon, *v;
  size_t vlen;
  unsigned long long clen = 0;
  char num[24];
  int http10;
  memset(r, 0, sizeof(*r));
  r->header_len = (size_t)(end - c->buf) + 4;
  eol = find_crlf(p, end + 2); /* at worst end itself */
  sp1 = memchr(p, ' ', (size_t)(eol - p));
  sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
  if (sp2 == NULL || eol - sp2 < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    r->bad = 1;
    return;
  }
  r->method = p;
  r->method_len = (size_t)(sp1 - p);
  r->target = sp1 + 1;
  r->target_len = (size_t)(sp2 - sp1 - 1);
  http10 = sp2[8] == '0';
  c->close_after = http10;
  for (p = eol + 2; p < end; p = eol + 2) {
    eol = find_crlf(p, end + 2);
    if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL)
      continue;
    for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
      ;
    vlen = (size_t)(eol - v);
    if (token_is(p, (size_t)(colon - p), "content-length")) {
      if (vlen == 0 || vlen >= sizeof(num) || strspn(v, "0123456789") < vlen) {
        r->bad = 1;
        return;
      }
      memcpy(num, v, vlen);
      num[vlen] = '\0';
      clen = strtoull(num, NULL, 10);
    } else if (token_is(p, (size_t)(colon - p), "connection")) {
      if (token_is(v, vlen, "close"))
        c->close_after = 1;
      else if (token_is(v, vlen, "keep-alive"))
        c->close_after = 0;
    } else if (token_is(p, (size_t)(colon - p), "expect")) {
      r->expect_continue = token_is(v, vlen, "100-continue");
    } else if (token_is(p, (size_t)(colon - p), "transfer-encoding")) {
      r->chunked = 1;
    } else if (token_is(p, (size_t)(colon - p), "authorization")) {
      r->auth = v;
      r->auth_len = vlen;
    }
  }
  if (clen > FAKE_LLM_MAX_REQUEST) {
    r->bad = 2; /* too large */
    return;
  }
  r->body = c->buf + r->header_len;
  r->body_len = (size_t)clen;
}

static int ends_with(const char *p, size_t n, const char *suffix) {
  size_t s = strlen(suffix);
  const char *q = memchr(p, '?', n);
  if (q != NULL)
    n = (size_t)(q - p);
  return n >= s && memcmp(p + n - s, suffix, s) == 0;
}

static void process(conn_t *c) {
  const char *end;
  char *copy;
  request_t r;
  size_t total;
  while (!c->busy && !c->closing) {
    /* strspn in parse_head must stop: keep the buffer terminated (the
     * read buffer leaves one byte free for it). */
    c->buf[c->len] = '\0';
    if ((end = find_blank_line(c->buf, c->len)) == NULL) {
      if (c->len >= FAKE_LLM_MAX_REQUEST - 1)
        reject(c, 431, "Request Header Fields Too Large", 1);
      return;
    }
    parse_head(c, end, &r);
    if (r.bad == 1 || r.chunked) {
      reject(c, 400, "Bad Request", 1);
      return;
    }
    total = r.header_len + r.body_len;
    if (r.bad == 2 || total > FAKE_LLM_MAX_REQUEST - 1) {
      reject(c, 413, "Payload Too Large", 1);
      return;
    }
    if (c->len < total) {
      if (r.expect_continue && !c->sent_continue) {
        c->sent_continue = 1;
        copy = malloc(sizeof("HTTP/1.1 100 Continue\r\n\r\n"));
        if (copy != NULL)
          memcpy(copy, "HTTP/1.1 100 Continue\r\n\r\n",
                 sizeof("HTTP/1.1 100 Continue\r\n\r\n"));
        if (copy == NULL)
          conn_close(c);
        else
          send_bytes(c, copy, sizeof("HTTP/1.1 100 Continue\r\n\r\n") - 1, 0);
      }
      return;
    }
    c->sent_continue = 0;
    if (!ends_with(r.target, r.target_len, "/chat/completions"))
      reject(c, 404, "Not Found", 0);
    else if (!token_is(r.method, r.method_len, "POST"))
      reject(c, 405, "Method Not Allowed", 0);
    else
      handle_chat(c, &r);
    /* The answer was formatted (or copied) already: drop the request. */
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)suggested;
  /* One byte stays free for process()'s terminator. A stalled connection
   * reads into the same space and throws the bytes away. */
  *buf = uv_buf_init(c->buf + c->len,
                     (unsigned)(FAKE_LLM_MAX_REQUEST - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (nread < 0) { /* EOF, reset, or UV_ENOBUFS with a full buffer */
    conn_close(c);
    return;
  }
  if (nread == 0 || c->stalled)
    return;
  c->len += (size_t)nread;
  process(c);
}

static void on_connection(uv_stream_t *server, int status) {
  fake_llm_t *f = server->data;
  conn_t *c;
  if (status < 0 || f->closing || (c = calloc(1, sizeof(*c))) == NULL)
    return;
  c->f = f;
  uv_tcp_init(f->loop, &c->tcp);
  uv_timer_init(f->loop, &c->delay);
  c->tcp.data = c->delay.data = c;
  uv_unref((uv_handle_t *)&c->tcp); /* see "loop mode" in fake_llm.h */
  uv_unref((uv_handle_t *)&c->delay);
  c->handles = 2;
  f->handles += 2;
  c->next = f->conns;
  if (f->conns != NULL)
    f->conns->prev = c;
  f->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  uv_mutex_lock(&f->synced.mu);
  f->synced.connections++;
  uv_mutex_unlock(&f->synced.mu);
}

/* --- starting and stopping ---------------------------------------------- */

static int server_new(fake_llm_t **out) {
  fake_llm_t *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return UV_ENOMEM;
  if (uv_mutex_init(&f->synced.mu) != 0) {
    free(f);
    return UV_ENOMEM;
  }
  f->synced.prompt_tokens = 10;
  f->synced.completion_tokens = 20;
  *out = f;
  return 0;
}

/* Binds 127.0.0.1:0 and listens. On failure the listener is left for
 * start_close() to close with everything else. */
static int listen_on(fake_llm_t *f, uv_loop_t *loop) {
  struct sockaddr_in addr;
  struct sockaddr_storage name;
  int rc, namelen = (int)sizeof(name);
  f->loop = loop;
  uv_tcp_init(loop, &f->listener);
  uv_unref((uv_handle_t *)&f->listener); /* thread mode: stop keeps it */
  f->listener.data = f;
  f->handles++;
  if ((rc = uv_ip4_addr("127.0.0.1", 0, &addr)) != 0 ||
      (rc = uv_tcp_bind(&f->listener, (const struct sockaddr *)&addr, 0)) !=
          0 ||
      (rc = uv_listen((uv_stream_t *)&f->listener, 128, on_connection)) != 0 ||
      (rc = uv_tcp_getsockname(&f->listener, (struct sockaddr *)&name,
                               &namelen)) != 0)
    return rc;
  f->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
  return 0;
}

int fake_llm_start(uv_loop_t *loop, fake_llm_t **out) {
  fake_llm_t *f;
  int rc;
  if (loop == NULL || out == NULL)
    return UV_EINVAL;
  if ((rc = server_new(&f)) != 0)
    return rc;
  if ((rc = listen_on(f, loop)) != 0) {
    start_close(f); /* frees f from the loop, later */
    return rc;
  }
  *out = f;
  return 0;
}

static void on_stop(uv_async_t *a) { start_close(a->data); }

static void thread_main(void *arg) {
  fake_llm_t *f = arg;
  if ((f->start_rc = uv_loop_init(&f->own_loop)) != 0) {
    uv_sem_post(&f->ready);
    return;
  }
  if ((f->start_rc = uv_async_init(&f->own_loop, &f->stop, on_stop)) != 0) {
    uv_loop_close(&f->own_loop);
    uv_sem_post(&f->ready);
    return;
  }
  f->stop.data = f;
  f->handles++;
  if ((f->start_rc = listen_on(f, &f->own_loop)) != 0) {
    start_close(f);
    uv_run(&f->own_loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->own_loop);
    uv_sem_post(&f->ready);
    return;
  }
  uv_sem_post(&f->ready); /* f->port is set: the starter may read it */
  uv_run(&f->own_loop, UV_RUN_DEFAULT);
  uv_loop_close(&f->own_loop);
}

int fake_llm_start_thread(fake_llm_t **out) {
  fake_llm_t *f;
  int rc;
  if (out == NULL)
    return UV_EINVAL;
  if ((rc = server_new(&f)) != 0)
    return rc;
  f->threaded = 1;
  if ((rc = uv_sem_init(&f->ready, 0)) != 0)
    goto fail_free_server;
  if ((rc = uv_thread_create(&f->thread, thread_main, f)) != 0)
    goto fail_destroy_sem;
  uv_sem_wait(&f->ready);
  if ((rc = f->start_rc) != 0) {
    uv_thread_join(&f->thread);
    goto fail_destroy_sem;
  }
  *out = f;
  return 0;

fail_destroy_sem:
  uv_sem_destroy(&f->ready);
fail_free_server:
  server_free(f);
  return rc;
}

void fake_llm_close(fake_llm_t *f, void (*cb)(void *ud), void *ud) {
  if (f == NULL)
    return;
  if (!f->threaded) {
    f->closed = cb;
    f->closed_ud = ud;
    start_close(f);
    return;
  }
  uv_async_send(&f->stop);
  uv_thread_join(&f->thread);
  uv_sem_destroy(&f->ready);
  server_free(f);
  if (cb != NULL)
    cb(ud);
}

/* --- script, settings and counters -------------------------------------- */

int fake_llm_port(const fake_llm_t *f) { return f->port; }

static int script_push(fake_llm_t *f, step_t step) {
  int rc = 0;
  if (step.n == 0 || (int)step.kind < 0 || step.kind >= FAKE_LLM_REJECTED)
    return UV_EINVAL;
  uv_mutex_lock(&f->synced.mu);
  if (f->synced.len == SCRIPT_MAX) {
    rc = UV_ENOBUFS;
  } else {
    f->synced.script[(f->synced.head + f->synced.len) % SCRIPT_MAX] = step;
    f->synced.len++;
  }
  uv_mutex_unlock(&f->synced.mu);
  return rc;
}

int fake_llm_fail_next(fake_llm_t *f, unsigned n, fake_llm_kind_t kind,
                       int retry_after_s) {
  return script_push(f, (step_t){n, kind, retry_after_s, -1});
}

int fake_llm_fail_next_ms(fake_llm_t *f, unsigned n, fake_llm_kind_t kind,
                          int retry_after_ms) {
  /* Retry-After rounded up to whole seconds, as OpenAI sends it beside
   * retry-after-ms: a client that only knows Retry-After waits longer. */
  int secs = retry_after_ms < 0 ? -1 : (retry_after_ms + 999) / 1000;
  return script_push(f, (step_t){n, kind, secs, retry_after_ms});
}

void fake_llm_clear_faults(fake_llm_t *f) {
  uv_mutex_lock(&f->synced.mu);
  f->synced.head = f->synced.len = 0;
  uv_mutex_unlock(&f->synced.mu);
}

void fake_llm_set_usage(fake_llm_t *f, uint64_t prompt_tokens,
                        uint64_t completion_tokens) {
  uv_mutex_lock(&f->synced.mu);
  f->synced.prompt_tokens = prompt_tokens;
  f->synced.completion_tokens = completion_tokens;
  uv_mutex_unlock(&f->synced.mu);
}

void fake_llm_set_latency(fake_llm_t *f, unsigned ms) {
  uv_mutex_lock(&f->synced.mu);
  f->synced.latency_ms = ms;
  uv_mutex_unlock(&f->synced.mu);
}

uint64_t fake_llm_requests(fake_llm_t *f, fake_llm_kind_t kind) {
  uint64_t n = 0;
  int k;
  uv_mutex_lock(&f->synced.mu);
  if (kind == FAKE_LLM_ANY) {
    for (k = 0; k < FAKE_LLM_KINDS; k++)
      n += f->synced.served[k];
  } else if ((int)kind >= 0 && kind < FAKE_LLM_KINDS) {
    n = f->synced.served[kind];
  }
  uv_mutex_unlock(&f->synced.mu);
  return n;
}

uint64_t fake_llm_connections(fake_llm_t *f) {
  uint64_t n;
  uv_mutex_lock(&f->synced.mu);
  n = f->synced.connections;
  uv_mutex_unlock(&f->synced.mu);
  return n;
}

unsigned fake_llm_max_inflight(fake_llm_t *f) {
  unsigned n;
  uv_mutex_lock(&f->synced.mu);
  n = f->synced.max_inflight;
  uv_mutex_unlock(&f->synced.mu);
  return n;
}

json_t *fake_llm_last_request(fake_llm_t *f, char *auth, size_t auth_len) {
  json_t *copy;
  uv_mutex_lock(&f->synced.mu);
  /* A deep copy: the server thread may drop its reference any time. */
  copy = json_deep_copy(f->synced.last_body);
  if (auth != NULL && auth_len > 0)
    snprintf(auth, auth_len, "%s", f->synced.last_auth);
  uv_mutex_unlock(&f->synced.mu);
  return copy;
}
