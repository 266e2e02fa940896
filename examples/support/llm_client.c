/* llm_client: OpenAI-compatible chat completions on curl multi + libuv.
 * See llm_client.h for the contract and the error table.
 *
 * Shape of the glue (the pattern of curl's docs/examples/multi-uv.c):
 * - curl calls on_curl_socket() to say "watch fd for IN/OUT" or "forget fd";
 *   we keep one uv_poll_t per fd (sock_t), attached with curl_multi_assign().
 * - curl calls on_curl_timer_set() to say "call me back in N ms"; we arm the
 *   one uv_timer_t.
 * - uv calls on_poll() / on_curl_timeout(); we call curl_multi_socket_action()
 *   and then collect finished transfers with curl_multi_info_read().
 * Result callbacks never run from inside curl or from inside a call of
 * ours: finished requests go to a "done" queue drained by a zero-delay
 * timer. So a callback may start, cancel or close anything. */
#include "llm_client.h"
#include "link.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHAT_PATH "/chat/completions"

typedef enum req_state { REQ_ACTIVE, REQ_DONE } req_state_t;

struct llm_request_s {
  link_t link; /* in c->active, then in c->done */
  llm_client_t *c;
  CURL *easy; /* NULL once the transfer is over */
  req_state_t state;
  llm_result_cb cb;
  void *ud;
  char *body; /* request JSON (json_dumps, free()) */
  char *resp; /* response body as received */
  size_t resp_len, resp_cap;
  int resp_too_big, resp_oom; /* why on_body refused (WRITE_ERROR) */
  double retry_after_s, retry_after_ms;
  json_t *json; /* parsed body, owned until delivery */
  llm_result_t res;
  char errbuf[CURL_ERROR_SIZE]; /* curl's message for a failed transfer */
  char detail[256];
};

typedef struct sock {
  uv_poll_t poll;
  link_t link; /* in c->socks; unlinked when closing */
  llm_client_t *c;
  curl_socket_t fd;
} sock_t;

struct llm_client_s {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t curl_timer;    /* the one timeout curl asks for */
  uv_timer_t deliver_timer; /* drains c->done outside curl */
  link_t active;            /* requests curl is working on */
  link_t done;              /* finished, callback not yet run */
  link_t socks;             /* watched sockets */
  size_t nactive;
  int open_handles; /* uv handles whose close cb is pending */
  int closing;
  char *url, *model;
  struct curl_slist *headers; /* shared by every request */
  long timeout_ms, connect_timeout_ms;
  void (*closed)(void *ud);
  void *closed_ud;
};

/* --- from a list link or a handle to its struct ----------------------- */

#define CONTAINER(p, type, field)                                             \
  ((type *)(void *)((char *)(p)-offsetof(type, field)))

/* --- error mapping: the one place ------------------------------------- */

int llm_map_error(CURLcode cc, long status) {
  switch (cc) {
  case CURLE_OK:
    break;
  case CURLE_OPERATION_TIMEDOUT:
    return UV_ETIMEDOUT;
  case CURLE_COULDNT_CONNECT:
    return UV_ECONNREFUSED;
  case CURLE_GOT_NOTHING: /* closed before any response byte */
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_PARTIAL_FILE: /* closed before Content-Length was reached */
    return UV_ECONNRESET;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return UV_EAI_NONAME;
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
    return WFLO_E_INVAL;
  case CURLE_OUT_OF_MEMORY:
    return WFLO_E_NOMEM;
  case CURLE_WRITE_ERROR: /* our write callback refused: body too big */
    return WFLO_E_PARSE;
  default:
    return UV_EPROTO;
  }
  if (status == 429)
    return WFLO_E_RATE_LIMITED;
  if (status == 408)
    return UV_ETIMEDOUT;
  if (status >= 500 && status <= 599)
    return UV_EAI_AGAIN;
  if (status >= 200 && status <= 299)
    return 0;
  /* Other 4xx, and 1xx/3xx that curl did not resolve (we do not follow
   * redirects: a POST must not be silently replayed elsewhere). */
  return WFLO_E_INVAL;
}

/* --- Retry-After -------------------------------------------------------- */

double llm_parse_retry_after(const char *value, time_t now) {
  const char *p = value;
  char *end;
  double secs;
  time_t t;
  if (value == NULL)
    return NAN;
  while (*p == ' ' || *p == '\t')
    p++;
  if (isdigit((unsigned char)*p)) {
    /* RFC 9110 says an integer; we also take "1.5", which some send. */
    secs = strtod(p, &end);
    while (*end == ' ' || *end == '\t')
      end++;
    if (*end != '\0' || isnan(secs))
      return NAN;
    /* Saturate absurd values instead of failing: the retry policy decides
     * (a hint above max_delay ends the retry). */
    return secs > 1e9 ? 1e9 : secs;
  }
  /* The HTTP-date form ("Wed, 21 Oct 2015 07:28:00 GMT") always starts
   * with a day name; requiring a letter keeps "-5" out of curl_getdate. */
  if (!isalpha((unsigned char)*p))
    return NAN;
  t = curl_getdate(p, NULL);
  if (t == (time_t)-1)
    return NAN;
  return t <= now ? 0.0 : (double)(t - now);
}

/* Matches "Name:" case-insensitively at the start of a header line and
 * returns the value, or NULL. */
static const char *header_value(const char *line, const char *name) {
  size_t n = strlen(name);
  if (strncasecmp(line, name, n) != 0 || line[n] != ':')
    return NULL;
  return line + n + 1;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud) {
  llm_request_t *r = ud;
  size_t len = size * nitems, n;
  char line[256];
  const char *v;
  char *end;
  double ms;
  /* A new status line (after a 100 Continue, say) starts a new header set. */
  if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
    r->retry_after_s = r->retry_after_ms = NAN;
    return len;
  }
  n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
  memcpy(line, buf, n);
  while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
    n--;
  line[n] = '\0';
  if ((v = header_value(line, "retry-after")) != NULL) {
    r->retry_after_s = llm_parse_retry_after(v, time(NULL));
  } else if ((v = header_value(line, "retry-after-ms")) != NULL) {
    /* OpenAI's finer-grained variant; preferred when both are sent. */
    ms = strtod(v, &end);
    if (end != v && isfinite(ms) && ms >= 0)
      r->retry_after_ms = ms;
  }
  return len;
}

/* --- response body ------------------------------------------------------ */

static size_t on_body(char *buf, size_t size, size_t nitems, void *ud) {
  llm_request_t *r = ud;
  size_t len = size * nitems, cap;
  char *p;
  if (len > LLM_MAX_RESPONSE_BYTES - r->resp_len) {
    r->resp_too_big = 1;
    return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
  }
  if (r->resp_len + len + 1 > r->resp_cap) {
    cap = r->resp_cap ? r->resp_cap : 4096;
    while (cap < r->resp_len + len + 1)
      cap *= 2;
    if ((p = realloc(r->resp, cap)) == NULL) {
      r->resp_oom = 1;
      return 0;
    }
    r->resp = p;
    r->resp_cap = cap;
  }
  memcpy(r->resp + r->resp_len, buf, len);
  r->resp_len += len;
  r->resp[r->resp_len] = '\0';
  return len;
}

/* Reads choices[0].message.content and usage from a 2xx body. Anything
 * missing or of the wrong type is WFLO_E_PARSE, with no tokens reported:
 * we charge only what we could read. */
static int parse_completion(llm_request_t *r) {
  llm_result_t *res = &r->res;
  json_error_t je;
  json_t *usage, *pt, *ct, *msg, *content;
  if (r->resp == NULL ||
      (r->json = json_loadb(r->resp, r->resp_len, 0, &je)) == NULL) {
    snprintf(r->detail, sizeof(r->detail), "response is not JSON: %s",
             r->resp == NULL ? "empty body" : je.text);
    return WFLO_E_PARSE;
  }
  res->response = r->json;
  usage = json_object_get(r->json, "usage");
  pt = json_object_get(usage, "prompt_tokens");
  ct = json_object_get(usage, "completion_tokens");
  if (!json_is_integer(pt) || !json_is_integer(ct) ||
      json_integer_value(pt) < 0 || json_integer_value(ct) < 0) {
    snprintf(r->detail, sizeof(r->detail), "response has no valid usage");
    return WFLO_E_PARSE;
  }
  msg = json_object_get(json_array_get(json_object_get(r->json, "choices"), 0),
                        "message");
  content = json_object_get(msg, "content");
  if (!json_is_string(content) && !json_is_null(content)) {
    snprintf(r->detail, sizeof(r->detail),
             "response has no choices[0].message.content");
    return WFLO_E_PARSE;
  }
  if (json_is_string(content)) {
    res->text = json_string_value(content);
    res->text_len = json_string_length(content);
  }
  res->prompt_tokens = (uint64_t)json_integer_value(pt);
  res->completion_tokens = (uint64_t)json_integer_value(ct);
  return 0;
}

/* Explains a failure: the provider's {"error": {"message"}} when it sent
 * one, else curl's message, else the status. */
static void describe_failure(llm_request_t *r, CURLcode cc) {
  json_t *msg;
  if (r->resp != NULL) {
    r->json = json_loadb(r->resp, r->resp_len, 0, NULL);
    r->res.response = r->json;
  }
  msg = json_object_get(json_object_get(r->json, "error"), "message");
  if (r->resp_too_big)
    snprintf(r->detail, sizeof(r->detail), "response larger than %zu bytes",
             LLM_MAX_RESPONSE_BYTES);
  else if (json_is_string(msg))
    snprintf(r->detail, sizeof(r->detail), "%s", json_string_value(msg));
  else if (cc != CURLE_OK)
    snprintf(r->detail, sizeof(r->detail), "%s",
             r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
  else
    snprintf(r->detail, sizeof(r->detail), "HTTP %ld", r->res.http_status);
}

/* --- completion and delivery ------------------------------------------- */

static void on_deliver(uv_timer_t *t);

static void update_ref(llm_client_t *c) {
  /* Idle clients must not keep uv_run() alive: only a client with work in
   * flight holds a reference on the loop through its timer. (curl 7.88
   * stops its timer when idle anyway; this keeps the promise if a curl
   * version leaves one armed.) */
  if (c->closing)
    return;
  if (c->nactive > 0)
    uv_ref((uv_handle_t *)&c->curl_timer);
  else
    uv_unref((uv_handle_t *)&c->curl_timer);
}

/* Moves r from the active list to the done queue with its result set. */
static void retire(llm_client_t *c, llm_request_t *r) {
  if (r->easy != NULL) {
    curl_multi_remove_handle(c->multi, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
  }
  list_del(&r->link);
  c->nactive--;
  r->state = REQ_DONE;
  if (r->res.err != 0)
    r->res.prompt_tokens = r->res.completion_tokens = 0;
  list_push(&c->done, &r->link);
  if (!c->closing)
    uv_timer_start(&c->deliver_timer, on_deliver, 0, 0);
  update_ref(c);
}

static void finish(llm_client_t *c, llm_request_t *r, CURLcode cc) {
  llm_result_t *res = &r->res;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res->http_status);
  res->retry_after_s =
      isnan(r->retry_after_ms) ? r->retry_after_s : r->retry_after_ms / 1e3;
  res->err = llm_map_error(cc, res->http_status);
  if (r->resp_oom) /* our realloc failed, not the size limit */
    res->err = WFLO_E_NOMEM;
  if (res->err == 0)
    res->err = parse_completion(r);
  else
    describe_failure(r, cc);
  retire(c, r);
}

static void free_request(llm_request_t *r) {
  json_decref(r->json);
  free(r->resp);
  free(r->body);
  free(r);
}

static void drain(llm_client_t *c) {
  llm_request_t *r;
  while (!list_empty(&c->done)) {
    r = CONTAINER(c->done.next, llm_request_t, link);
    list_del(&r->link);
    r->res.detail = r->detail;
    r->cb(&r->res, r->ud);
    free_request(r);
  }
}

static void on_deliver(uv_timer_t *t) {
  drain(CONTAINER(t, llm_client_t, deliver_timer));
}

static void collect_finished(llm_client_t *c) {
  CURLMsg *m;
  int left;
  char *priv;
  CURLcode cc;
  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    cc = m->data.result; /* m is invalid once the handle is removed */
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    finish(c, (llm_request_t *)(void *)priv, cc);
  }
}

/* --- curl <-> libuv glue ----------------------------------------------- */

static void handle_closed(uv_handle_t *h);

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *s = CONTAINER(h, sock_t, poll);
  llm_client_t *c = s->c;
  int flags = 0, running;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  collect_finished(c);
}

static void on_curl_timeout(uv_timer_t *t) {
  llm_client_t *c = CONTAINER(t, llm_client_t, curl_timer);
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect_finished(c);
}

static void sock_close(sock_t *s) {
  /* uv_close stops watching the fd at once, which matters: curl closes the
   * fd right after telling us, and may reuse the number for a new socket
   * before the close callback runs. */
  list_del(&s->link);
  uv_close((uv_handle_t *)&s->poll, handle_closed);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp) {
  llm_client_t *c = userp;
  sock_t *s = socketp;
  int events = 0;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      curl_multi_assign(c->multi, fd, NULL);
      sock_close(s);
    }
    return 0;
  }
  if (s == NULL) {
    if ((s = calloc(1, sizeof(*s))) == NULL)
      return -1; /* curl fails the transfers using this socket */
    if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->c = c;
    s->fd = fd;
    list_push(&c->socks, &s->link);
    c->open_handles++;
    curl_multi_assign(c->multi, fd, s);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return uv_poll_start(&s->poll, events, on_poll) == 0 ? 0 : -1;
}

static int on_curl_timer_set(CURLM *multi, long timeout_ms, void *userp) {
  llm_client_t *c = userp;
  (void)multi;
  if (c->closing)
    return 0;
  /* Never call curl_multi_socket_action from here (curl forbids it): even a
   * 0 ms timeout goes through the loop. */
  if (timeout_ms < 0)
    uv_timer_stop(&c->curl_timer);
  else
    uv_timer_start(&c->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* --- client ------------------------------------------------------------- */

static uv_once_t curl_once = UV_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void) {
  curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  return p == NULL ? NULL : memcpy(p, s, n);
}

static void free_client(llm_client_t *c) {
  curl_slist_free_all(c->headers);
  free(c->url);
  free(c->model);
  free(c);
}

/* Every uv handle of a client ends here; the last one of a closing client
 * delivers the remaining (canceled) callbacks and frees it. */
static void handle_closed(uv_handle_t *h) {
  llm_client_t *c;
  void (*closed)(void *ud);
  void *ud;
  if (h->type == UV_POLL) {
    sock_t *s = CONTAINER(h, sock_t, poll);
    c = s->c;
    free(s);
  } else {
    c = h->data;
  }
  if (--c->open_handles > 0 || !c->closing)
    return;
  drain(c);
  closed = c->closed;
  ud = c->closed_ud;
  free_client(c);
  if (closed != NULL)
    closed(ud);
}

static int build_headers(llm_client_t *c, const char *api_key) {
  static const char *const fixed[] = {
      "Content-Type: application/json", "Accept: application/json",
      "Expect:", /* no "100-continue" round trip for big bodies */
  };
  struct curl_slist *l;
  char *auth;
  size_t i, n;
  for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    if ((l = curl_slist_append(c->headers, fixed[i])) == NULL)
      return WFLO_E_NOMEM;
    c->headers = l;
  }
  if (api_key == NULL || api_key[0] == '\0')
    return 0;
  n = strlen(api_key) + sizeof("Authorization: Bearer ");
  if ((auth = malloc(n)) == NULL)
    return WFLO_E_NOMEM;
  snprintf(auth, n, "Authorization: Bearer %s", api_key);
  l = curl_slist_append(c->headers, auth); /* copies */
  free(auth);
  if (l == NULL)
    return WFLO_E_NOMEM;
  c->headers = l;
  return 0;
}

static char *make_url(const char *base) {
  size_t n = strlen(base), total;
  char *url;
  while (n > 0 && base[n - 1] == '/')
    n--;
  total = n + sizeof(CHAT_PATH);
  if ((url = malloc(total)) == NULL)
    return NULL;
  memcpy(url, base, n);
  memcpy(url + n, CHAT_PATH, sizeof(CHAT_PATH));
  return url;
}

int llm_client_new(uv_loop_t *loop, const llm_client_config_t *cfg,
                   llm_client_t **out) {
  llm_client_t *c;
  int rc;
  if (loop == NULL || cfg == NULL || out == NULL || cfg->base_url == NULL ||
      cfg->base_url[0] == '\0' || cfg->model == NULL ||
      cfg->model[0] == '\0' || cfg->timeout_ms < 0 ||
      cfg->connect_timeout_ms < 0)
    return WFLO_E_INVAL;
  uv_once(&curl_once, curl_init_once);
  if (curl_init_rc != CURLE_OK)
    return WFLO_E_NOMEM; /* curl_global_init fails only for lack of memory */
  if ((c = calloc(1, sizeof(*c))) == NULL)
    return WFLO_E_NOMEM;
  c->loop = loop;
  c->timeout_ms = cfg->timeout_ms;
  c->connect_timeout_ms = cfg->connect_timeout_ms;
  list_init(&c->active);
  list_init(&c->done);
  list_init(&c->socks);
  rc = WFLO_E_NOMEM;
  if ((c->url = make_url(cfg->base_url)) == NULL ||
      (c->model = dup_str(cfg->model)) == NULL ||
      (rc = build_headers(c, cfg->api_key)) != 0)
    goto fail_free_client;
  rc = WFLO_E_NOMEM;
  if ((c->multi = curl_multi_init()) == NULL)
    goto fail_free_client;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer_set);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  /* uv_timer_init cannot fail on Unix (it only fills the struct), so the two
   * inits come last and need no asynchronous undo. */
  if ((rc = uv_timer_init(loop, &c->curl_timer)) != 0 ||
      (rc = uv_timer_init(loop, &c->deliver_timer)) != 0)
    goto fail_cleanup_multi;
  c->curl_timer.data = c->deliver_timer.data = c;
  c->open_handles = 2;
  update_ref(c);
  *out = c;
  return 0;

fail_cleanup_multi:
  curl_multi_cleanup(c->multi);
fail_free_client:
  free_client(c);
  return rc;
}

static int setup_easy(llm_client_t *c, llm_request_t *r) {
  CURL *e = r->easy;
  /* setopt fails only for unknown options or out of memory. */
  if (curl_easy_setopt(e, CURLOPT_URL, c->url) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                       (curl_off_t)strlen(r->body)) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms) !=
          CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_USERAGENT, "llm_client (libwflo example)") !=
          CURLE_OK)
    return WFLO_E_NOMEM;
  return 0;
}

int llm_client_chat_messages(llm_client_t *c, const json_t *messages,
                             llm_result_cb cb, void *ud, llm_request_t **out) {
  llm_request_t *r;
  json_t *body;
  int rc = WFLO_E_NOMEM;
  if (c == NULL || !json_is_array(messages) || cb == NULL)
    return WFLO_E_INVAL;
  if (c->closing)
    return WFLO_E_STATE;
  if ((r = calloc(1, sizeof(*r))) == NULL)
    return WFLO_E_NOMEM;
  r->c = c;
  r->cb = cb;
  r->ud = ud;
  r->retry_after_s = r->retry_after_ms = NAN;
  r->res.retry_after_s = NAN;
  /* "o" steals the copy (and fails cleanly if the copy is NULL). */
  body = json_pack("{s:s, s:o}", "model", c->model, "messages",
                   json_deep_copy(messages));
  if (body == NULL)
    goto fail_free_request;
  r->body = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  if (r->body == NULL || (r->easy = curl_easy_init()) == NULL)
    goto fail_free_request;
  if ((rc = setup_easy(c, r)) != 0)
    goto fail_cleanup_easy;
  rc = WFLO_E_NOMEM;
  /* Adding only arms curl's timer (on_curl_timer_set): no transfer work,
   * and so no callback, happens inside this call. */
  if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
    goto fail_cleanup_easy;
  r->state = REQ_ACTIVE;
  list_push(&c->active, &r->link);
  c->nactive++;
  update_ref(c);
  if (out != NULL)
    *out = r;
  return 0;

fail_cleanup_easy:
  curl_easy_cleanup(r->easy);
fail_free_request:
  free_request(r);
  return rc;
}

int llm_user_messages(const char *prompt, json_t **out) {
  json_t *content;
  int rc;
  if ((content = json_string(prompt)) == NULL) {
    /* json_string refuses invalid UTF-8; tell that from lack of memory. */
    content = json_string_nocheck(prompt);
    rc = content != NULL ? WFLO_E_INVAL : WFLO_E_NOMEM;
    json_decref(content);
    return rc;
  }
  *out = json_pack("[{s:s, s:o}]", "role", "user", "content", content);
  return *out != NULL ? 0 : WFLO_E_NOMEM;
}

int llm_client_chat(llm_client_t *c, const char *prompt, llm_result_cb cb,
                    void *ud, llm_request_t **out) {
  json_t *messages;
  int rc;
  if (c == NULL || prompt == NULL || cb == NULL)
    return WFLO_E_INVAL;
  rc = llm_user_messages(prompt, &messages);
  if (rc != 0)
    return rc;
  rc = llm_client_chat_messages(c, messages, cb, ud, out);
  json_decref(messages);
  return rc;
}

static void cancel_active(llm_client_t *c, llm_request_t *r) {
  r->res.err = WFLO_E_CANCELED;
  snprintf(r->detail, sizeof(r->detail), "canceled");
  retire(c, r);
}

int llm_request_cancel(llm_request_t *req) {
  if (req == NULL)
    return WFLO_E_INVAL;
  if (req->state != REQ_ACTIVE)
    return WFLO_E_STATE;
  cancel_active(req->c, req);
  return 0;
}

int llm_client_close(llm_client_t *c, void (*closed)(void *ud), void *ud) {
  if (c == NULL)
    return WFLO_E_INVAL;
  if (c->closing)
    return WFLO_E_STATE;
  while (!list_empty(&c->active))
    cancel_active(c, CONTAINER(c->active.next, llm_request_t, link));
  c->closing = 1;
  c->closed = closed;
  c->closed_ud = ud;
  /* Cleanup closes cached connections and tells on_curl_socket() about
   * each (CURL_POLL_REMOVE); the loop below is a safety net for any socket
   * it would not mention. */
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (!list_empty(&c->socks))
    sock_close(CONTAINER(c->socks.next, sock_t, link));
  uv_close((uv_handle_t *)&c->curl_timer, handle_closed);
  uv_close((uv_handle_t *)&c->deliver_timer, handle_closed);
  return 0;
}
