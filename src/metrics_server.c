/* A minimal HTTP/1.1 listener for /metrics and /healthz on the caller's
 * loop. One request per connection (Connection: close), a bounded request
 * head, a deadline per connection, and a lingering close so a client that
 * sent a body we did not read still gets our response (closing a socket
 * with unread data makes the kernel send RST, which can destroy the
 * response before the client reads it).
 *
 * Handles are counted: the server is freed from the last close callback,
 * after every connection has closed (STYLE item 7). */
#include "internal/config.h"
#include "internal/list.h"
#include "internal/loop.h"
#include "internal/metrics.h"

#include <stdio.h>

#define BACKLOG 128
/* After the response: how long and how much we keep reading (and
 * discarding) before closing. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (64 * 1024)

uint64_t wflo__metrics_request_timeout_ms =
    (uint64_t)(WFLO_METRICS_REQUEST_TIMEOUT * 1000);

typedef enum conn_state {
  C_READING,    /* reading the request head */
  C_RESPONDING, /* response being written; input discarded */
  C_LINGERING,  /* response sent, write side shut down; draining input */
  C_CLOSING
} conn_state_t;

typedef enum body_kind { B_NONE, B_STATIC, B_TEXT, B_ALLOC } body_kind_t;

typedef struct conn {
  uv_tcp_t tcp;
  wflo__list_t node; /* server's list while not closing */
  wflo_metrics_server_t *srv;
  wflo__timer_t timer;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  conn_state_t state;
  bool peer_eof;
  body_kind_t body_kind;
  char *body;
  size_t body_len;
  size_t body_size; /* B_ALLOC: bytes allocated */
  size_t used;      /* bytes of the request head in buf */
  size_t discarded;
  char head[256];
  char buf[WFLO_METRICS_MAX_REQUEST];
} conn_t;

struct wflo_metrics_server_s {
  uv_tcp_t listener;
  wflo__loop_t *loop;
  wflo__list_t conns;
  size_t nconns;
  int open_handles; /* initialised handles whose close callback is due */
  bool closing;
  void (*close_cb)(void *ud);
  void *close_ud;
  /* Accepts and drops a connection we cannot serve (too many, or no
   * memory): libuv stops watching the listener until we accept. */
  uv_tcp_t reject;
  bool reject_busy;
  bool accept_pending;
};

static void on_connection(uv_stream_t *listener, int status);

/* --- lifecycle -------------------------------------------------------------------- */

static void maybe_free(wflo_metrics_server_t *srv) {
  void (*cb)(void *);
  void *ud;
  if (!srv->closing || srv->open_handles > 0)
    return;
  cb = srv->close_cb;
  ud = srv->close_ud;
  wflo__loop_unref(srv->loop);
  wflo__free(srv, sizeof(*srv));
  if (cb != NULL)
    cb(ud);
}

static void on_listener_close(uv_handle_t *h) {
  wflo_metrics_server_t *srv = h->data;
  srv->open_handles--;
  maybe_free(srv);
}

static void body_release(conn_t *c) {
  if (c->body_kind == B_TEXT)
    wflo_metrics_text_free(c->body);
  else if (c->body_kind == B_ALLOC)
    wflo__free(c->body, c->body_size);
  c->body = NULL;
  c->body_kind = B_NONE;
}

static void on_conn_close(uv_handle_t *h) {
  conn_t *c = h->data;
  wflo_metrics_server_t *srv = c->srv;
  body_release(c); /* pending writes were cancelled before this runs */
  wflo__free(c, sizeof(*c));
  srv->open_handles--;
  maybe_free(srv);
}

static void conn_close(conn_t *c) {
  if (c->state == C_CLOSING)
    return;
  c->state = C_CLOSING;
  wflo__timer_stop(c->srv->loop, &c->timer);
  wflo__list_remove(&c->node);
  c->srv->nconns--;
  uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_conn_timer(wflo__timer_t *t) {
  conn_close(wflo__container_of(t, conn_t, timer));
}

static void on_reject_close(uv_handle_t *h) {
  wflo_metrics_server_t *srv = h->data;
  srv->open_handles--;
  srv->reject_busy = false;
  if (srv->accept_pending && !srv->closing) {
    srv->accept_pending = false;
    on_connection((uv_stream_t *)&srv->listener, 0);
  }
  maybe_free(srv);
}

static void reject(wflo_metrics_server_t *srv) {
  if (srv->reject_busy) {
    srv->accept_pending = true; /* retried from on_reject_close */
    return;
  }
  uv_tcp_init(wflo__loop_uv(srv->loop), &srv->reject);
  srv->reject.data = srv;
  srv->open_handles++;
  srv->reject_busy = true;
  (void)uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&srv->reject);
  uv_close((uv_handle_t *)&srv->reject, on_reject_close);
}

/* --- responses -------------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  if (c->state == C_CLOSING)
    return;
  if (status < 0)
    conn_close(c);
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = req->data;
  body_release(c);
  if (c->state == C_CLOSING)
    return;
  if (status < 0 || c->peer_eof) {
    conn_close(c);
    return;
  }
  c->state = C_LINGERING;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  wflo__timer_start(c->srv->loop, &c->timer, LINGER_MS, on_conn_timer);
}

/* Sends the head and, unless head_only, the body (owned by c from here). */
static void respond(conn_t *c, int status, const char *reason,
                    const char *type, const char *extra, bool head_only) {
  uv_buf_t bufs[2];
  unsigned nbufs = 1;
  int n = snprintf(c->head, sizeof(c->head),
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                   status, reason, type, c->body_len, extra);
  if (n < 0 || (size_t)n >= sizeof(c->head)) { /* cannot happen */
    body_release(c);
    conn_close(c);
    return;
  }
  bufs[0] = uv_buf_init(c->head, (unsigned)n);
  if (!head_only && c->body_len > 0)
    bufs[nbufs++] = uv_buf_init(c->body, (unsigned)c->body_len);
  c->state = C_RESPONDING;
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write) != 0) {
    body_release(c);
    conn_close(c);
  }
}

static void respond_static(conn_t *c, int status, const char *reason,
                           const char *extra, bool head_only) {
  c->body_kind = B_STATIC;
  c->body = (char *)reason; /* the reason phrase is the body */
  c->body_len = strlen(reason);
  respond(c, status, reason, "text/plain; charset=utf-8", extra, head_only);
}

static void serve_metrics(conn_t *c, bool head_only) {
  size_t len;
  char *text = wflo_metrics_prometheus_text(&len);
  if (text == NULL) {
    respond_static(c, 500, "Internal Server Error", "", head_only);
    return;
  }
  c->body_kind = B_TEXT;
  c->body = text;
  c->body_len = len;
  respond(c, 200, "OK", WFLO_METRICS_CONTENT_TYPE, "", head_only);
}

static void serve_health(conn_t *c, bool head_only) {
  json_t *j = wflo_health_json();
  size_t n = j != NULL ? json_dumpb(j, NULL, 0, JSON_COMPACT) : 0;
  bool ok;
  char *buf = n > 0 ? wflo__malloc(n + 1) : NULL;
  if (buf == NULL) {
    json_decref(j);
    respond_static(c, 500, "Internal Server Error", "", head_only);
    return;
  }
  json_dumpb(j, buf, n, JSON_COMPACT);
  buf[n] = '\n';
  ok = json_is_true(json_object_get(j, "healthy"));
  json_decref(j);
  c->body_kind = B_ALLOC;
  c->body = buf;
  c->body_len = n + 1;
  c->body_size = n + 1;
  respond(c, ok ? 200 : 503, ok ? "OK" : "Service Unavailable",
          "application/json", "", head_only);
}

/* --- requests ---------------------------------------------------------------------- */

static bool token_char(char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
         (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool span_is(const char *s, size_t n, const char *lit) {
  return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Request line: METHOD SP request-target SP HTTP/1.x; headers are not
 * needed. Only origin-form targets ("/path?query") are served. */
static void handle_request(conn_t *c) {
  const char *line = c->buf, *end = memchr(c->buf, '\n', c->used);
  const char *sp1, *sp2, *target;
  size_t mlen, plen, llen;
  bool get, head;

  llen = (size_t)(end - line);
  if (llen > 0 && line[llen - 1] == '\r')
    llen--;
  for (sp1 = line; sp1 < line + llen && token_char(*sp1); sp1++) {
  }
  mlen = (size_t)(sp1 - line);
  sp2 = sp1 < line + llen ? memchr(sp1 + 1, ' ', llen - mlen - 1) : NULL;
  if (mlen == 0 || sp1 >= line + llen || *sp1 != ' ' || sp2 == NULL ||
      sp1[1] != '/' || (size_t)(line + llen - sp2 - 1) != 8 ||
      memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' || sp2[8] > '9') {
    respond_static(c, 400, "Bad Request", "", false);
    return;
  }
  target = sp1 + 1;
  for (plen = 0;
       target + plen < sp2 && target[plen] != '?' && target[plen] != '#';
       plen++) {
  }
  get = span_is(line, mlen, "GET");
  head = span_is(line, mlen, "HEAD");
  if (span_is(target, plen, "/metrics")) {
    if (get || head)
      serve_metrics(c, head);
    else
      respond_static(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                     false);
  } else if (span_is(target, plen, "/healthz")) {
    if (get || head)
      serve_health(c, head);
    else
      respond_static(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                     false);
  } else {
    respond_static(c, 404, "Not Found", "", head);
  }
}

/* The head ends at an empty line; bare LF line ends are tolerated. */
static bool head_complete(const conn_t *c, size_t from) {
  size_t i;
  for (i = from; i + 1 < c->used; i++) {
    if (c->buf[i] != '\n')
      continue;
    if (c->buf[i + 1] == '\n' ||
        (c->buf[i + 1] == '\r' && i + 2 < c->used && c->buf[i + 2] == '\n'))
      return true;
  }
  return false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  WFLO_UNUSED(suggested);
  if (c->state == C_READING)
    *buf = uv_buf_init(c->buf + c->used, (unsigned)(sizeof(c->buf) - c->used));
  else /* discarding: the request was already handled */
    *buf = uv_buf_init(c->buf, (unsigned)sizeof(c->buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  size_t from;
  WFLO_UNUSED(buf);
  if (c->state == C_CLOSING)
    return;
  if (nread < 0) {
    if (c->state == C_RESPONDING && nread == UV_EOF) {
      /* Half-closed client: finish the response, then close. */
      c->peer_eof = true;
      uv_read_stop(s);
    } else {
      conn_close(c);
    }
    return;
  }
  if (c->state != C_READING) {
    c->discarded += (size_t)nread;
    if (c->discarded > LINGER_MAX_BYTES)
      conn_close(c);
    return;
  }
  from = c->used >= 2 ? c->used - 2 : 0;
  c->used += (size_t)nread;
  if (head_complete(c, from))
    handle_request(c);
  else if (c->used == sizeof(c->buf))
    respond_static(c, 431, "Request Header Fields Too Large", "", false);
}

static void on_connection(uv_stream_t *listener, int status) {
  wflo_metrics_server_t *srv = listener->data;
  conn_t *c;
  if (status < 0 || srv->closing)
    return;
  if (srv->nconns >= WFLO_METRICS_MAX_CONNECTIONS) {
    reject(srv);
    return;
  }
  c = wflo__malloc(sizeof(*c));
  if (c == NULL) {
    reject(srv);
    return;
  }
  memset(c, 0, offsetof(conn_t, buf));
  c->srv = srv;
  uv_tcp_init(wflo__loop_uv(srv->loop), &c->tcp); /* no syscall on Unix */
  c->tcp.data = c;
  srv->open_handles++;
  wflo__list_insert_tail(&srv->conns, &c->node);
  srv->nconns++;
  c->state = C_READING;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  wflo__timer_start(srv->loop, &c->timer, wflo__metrics_request_timeout_ms,
                    on_conn_timer);
}

/* --- API ---------------------------------------------------------------------------- */

int wflo_metrics_serve(uv_loop_t *loop, const char *host, int port,
                       wflo_metrics_server_t **out) {
  struct sockaddr_storage addr;
  wflo_metrics_server_t *srv;
  int rc;

  if (loop == NULL || host == NULL || out == NULL || port < 0 || port > 65535)
    return WFLO_E_INVAL;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
    return WFLO_E_INVAL;
  srv = wflo__calloc(1, sizeof(*srv));
  if (srv == NULL)
    return WFLO_E_NOMEM;
  rc = wflo__loop_ref(loop, &srv->loop);
  if (rc != 0) {
    wflo__free(srv, sizeof(*srv));
    return rc;
  }
  wflo__list_init(&srv->conns);
  rc = uv_tcp_init(loop, &srv->listener);
  if (rc != 0) {
    wflo__loop_unref(srv->loop);
    wflo__free(srv, sizeof(*srv));
    return rc;
  }
  srv->listener.data = srv;
  srv->open_handles = 1;
  rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->listener, BACKLOG, on_connection);
  if (rc != 0) {
    /* The socket exists now: it can only go through uv_close. */
    srv->closing = true;
    uv_close((uv_handle_t *)&srv->listener, on_listener_close);
    return rc;
  }
  *out = srv;
  return 0;
}

int wflo_metrics_server_port(const wflo_metrics_server_t *srv) {
  struct sockaddr_storage addr;
  int len = (int)sizeof(addr), rc;
  if (srv == NULL)
    return WFLO_E_INVAL;
  rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&addr, &len);
  if (rc != 0)
    return rc;
  if (addr.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
  return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

int wflo_metrics_server_close(wflo_metrics_server_t *srv, void (*cb)(void *),
                              void *ud) {
  wflo__list_t *n;
  if (srv == NULL)
    return WFLO_E_INVAL;
  if (srv->closing)
    return WFLO_E_STATE;
  srv->closing = true;
  srv->close_cb = cb;
  srv->close_ud = ud;
  uv_close((uv_handle_t *)&srv->listener, on_listener_close);
  while ((n = wflo__list_first(&srv->conns)) != NULL)
    conn_close(wflo__container_of(n, conn_t, node));
  return 0;
}
