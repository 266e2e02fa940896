/* llm_guarded: one guarded LLM call (see llm_guarded.h).
 *
 * A call is one wflo_retry_start(); each attempt walks the chain
 *   on_attempt (reserve, lock request) -> on_lock (breaker, HTTP request)
 *   -> on_answer -> end_attempt (record, release, commit, report)
 * and any step that fails jumps to end_attempt with what it holds. The
 * retry's done (on_retry_done) delivers the result and frees the call.
 * Nothing here blocks; every callback runs on the loop thread. */
#include "llm_guarded.h"
#include "link.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct llm_guarded_s {
  uv_loop_t *loop;
  llm_client_t *client; /* NULL once closed */
  wflo_breaker_t *breaker;
  wflo_lock_t *lock;
  wflo_retry_policy_t policy;
  double lock_timeout_s;
  char *model;
  link_t calls; /* started, callback not yet returned */
  int closing;
  void (*closed)(void *ud);
  void *closed_ud;
};

/* Where the running attempt is: decides what a cancel must interrupt. */
typedef enum phase { P_IDLE, P_LOCK, P_HTTP } phase_t;

/* Which of the attempt's steps are still held when it ends. */
enum { HOLD_LOCK = 1, HOLD_BREAKER = 2 };

struct llm_guarded_call_s {
  link_t link; /* in g->calls */
  llm_guarded_t *g;
  json_t *messages;
  llm_guarded_cb cb;
  void *ud;
  wflo_retry_t *retry; /* NULL once done runs */
  wflo_call_t *attempt;
  phase_t phase;
  int canceled, finished;
  wflo_budget_resv_t resv;
  wflo_lock_req_t lock_req;
  wflo_breaker_permit_t permit;
  llm_request_t *http; /* while P_HTTP */
  uint64_t t0;
  /* what the attempts produced, for the result */
  int attempts, http_requests;
  long http_status;
  char *text;
  size_t text_len;
  uint64_t prompt_tokens, completion_tokens;
  double cost_usd;
  char detail[256];
};

#define CALL_OF(l) ((llm_guarded_call_t *)(void *)(l)) /* link is first */

/* --- defaults ------------------------------------------------------------ */

bool llm_provider_failure(int err, void *ud) {
  (void)ud;
  switch (err) {
  case UV_EAI_AGAIN:    /* HTTP 5xx */
  case UV_ETIMEDOUT:    /* no answer in time, or HTTP 408 */
  case UV_ECONNREFUSED: /* nobody listening */
  case UV_ECONNRESET:   /* connection dropped without an answer */
  case UV_EAI_NONAME:   /* host not resolved */
  case UV_EPROTO:       /* any other transport error */
    return true;
  default:
    return false;
  }
}

void llm_guarded_config_init(llm_guarded_config_t *c) {
  if (c == NULL)
    return;
  memset(c, 0, sizeof(*c));
  c->provider = "default";
  wflo_retry_policy_init(&c->retry);
  c->retry.name = "llm_chat";
  c->retry.max_retries = 4;
  c->retry.base_delay = 0.5;
  c->retry.max_delay = 20.0; /* a longer Retry-After ends the call */
  wflo_breaker_config_init(&c->breaker);
  c->breaker.failure_threshold = 5;
  c->breaker.recovery_timeout = 30.0;
  c->breaker.is_failure = llm_provider_failure;
  wflo_lock_config_init(&c->lock);
  c->lock.max_concurrent = 8;
  c->lock.timeout = 60.0;
  c->lock_timeout_s = -1.0;
}

/* --- one attempt --------------------------------------------------------- */

static void on_lock(wflo_lock_req_t *req, int status);
static void on_answer(const llm_result_t *res, void *ud);

/* Ends the attempt: gives back what it holds, in reverse order, and reports
 * to the retry. res is the HTTP answer, NULL when no request was sent. */
static void end_attempt(llm_guarded_call_t *c, int err,
                        const llm_result_t *res, int held, const char *stage) {
  llm_guarded_t *g = c->g;
  wflo_llm_usage_t u;
  double usd, hint = NAN;
  int rc;

  c->phase = P_IDLE;
  if (held & HOLD_BREAKER) /* the breaker's predicate judges err */
    (void)wflo_breaker_record_timed(&c->permit, err);
  if (held & HOLD_LOCK)
    (void)wflo_lock_release(&c->lock_req.permit);

  /* Commit what the provider says it used: 0 tokens on every failure, which
   * abandons the reservation. As wflo_llm_call does, a commit that takes
   * spend past the budget turns a success into WFLO_E_BUDGET_EXCEEDED (the
   * money is recorded all the same). */
  memset(&u, 0, sizeof(u));
  if (res != NULL) {
    u.prompt_tokens = res->prompt_tokens;
    u.completion_tokens = res->completion_tokens;
    hint = res->retry_after_s; /* NAN when absent: wflo ignores it */
  }
  rc = wflo_llm_commit(&c->resv, g->model, &u);
  if (rc == WFLO_E_NOT_FOUND) { /* prices reset meanwhile: release it */
    (void)wflo_budget_commit(&c->resv, 0.0);
    if (err >= 0)
      err = rc;
  } else if (rc == WFLO_E_BUDGET_EXCEEDED && err >= 0) {
    err = rc;
  }
  if ((u.prompt_tokens | u.completion_tokens) != 0 &&
      wflo_pricing_cost(g->model, &u, &usd) == 0) {
    c->prompt_tokens += u.prompt_tokens;
    c->completion_tokens += u.completion_tokens;
    c->cost_usd += usd;
  }

  if (res != NULL && res->err == 0) { /* keep the answer for the result */
    free(c->text);
    c->text_len = res->text_len;
    if ((c->text = malloc(res->text_len + 1)) != NULL) {
      memcpy(c->text, res->text != NULL ? res->text : "", res->text_len);
      c->text[res->text_len] = '\0';
    }
  }
  if (err >= 0)
    c->detail[0] = '\0';
  else if (res != NULL && res->err != 0 && res->http_status != 0)
    snprintf(c->detail, sizeof(c->detail), "HTTP %ld: %s", res->http_status,
             res->detail);
  else if (res != NULL && res->err != 0)
    snprintf(c->detail, sizeof(c->detail), "%s", res->detail);
  else
    snprintf(c->detail, sizeof(c->detail), "%s: %s", stage,
             wflo_strerror(err));

  /* The retry sleeps the server's Retry-After (when <= max_delay) instead
   * of its own backoff. It processes the report later, from the loop. */
  wflo_call_done_hint(c->attempt, err, hint);
}

/* The retry's start function, once per attempt, inside the call's context:
 * reserve, then queue for the lock. */
static void on_attempt(wflo_call_t *attempt, void *arg) {
  llm_guarded_call_t *c = arg;
  llm_guarded_t *g = c->g;
  int rc;

  c->attempt = attempt;
  c->attempts++;
  /* Budget first: a call the budget refuses never queues and never sends.
   * With no current context the reservation is empty and charges
   * nothing. */
  if ((rc = wflo_llm_reserve(g->model, &c->resv)) != 0) {
    snprintf(c->detail, sizeof(c->detail), "budget: %s", wflo_strerror(rc));
    wflo_call_done(attempt, rc); /* nothing held */
    return;
  }
  memset(&c->lock_req, 0, sizeof(c->lock_req));
  c->lock_req.data = c;
  /* holder NULL: the lock's stats name the execution id. */
  rc = wflo_lock_acquire_async(g->loop, g->lock, &c->lock_req, NULL,
                               g->lock_timeout_s, on_lock);
  if (rc != 0) {
    end_attempt(c, rc, NULL, 0, "lock");
    return;
  }
  c->phase = P_LOCK;
}

/* The lock's answer: take the breaker, then send. */
static void on_lock(wflo_lock_req_t *req, int status) {
  llm_guarded_call_t *c = req->data;
  llm_guarded_t *g = c->g;
  int rc;

  if (status != 0) { /* WFLO_E_LOCK_TIMEOUT (retried) or a cancel */
    end_attempt(c, status, NULL, 0, "lock");
    return;
  }
  if (c->canceled) { /* granted just before the cancel reached it */
    end_attempt(c, WFLO_E_CANCELED, NULL, HOLD_LOCK, "lock");
    return;
  }
  /* Only now: an OPEN breaker fails fast, and a HALF_OPEN trial slot is
   * taken by a request that is about to be sent. */
  if ((rc = wflo_breaker_acquire_timed(g->breaker, &c->permit)) != 0) {
    end_attempt(c, rc, NULL, HOLD_LOCK, "breaker");
    return;
  }
  rc =
      llm_client_chat_messages(g->client, c->messages, on_answer, c, &c->http);
  if (rc != 0) {
    end_attempt(c, rc, NULL, HOLD_LOCK | HOLD_BREAKER, "http");
    return;
  }
  c->phase = P_HTTP;
  c->http_requests++;
}

static void on_answer(const llm_result_t *res, void *ud) {
  llm_guarded_call_t *c = ud;
  c->http = NULL;
  c->http_status = res->http_status;
  end_attempt(c, res->err, res, HOLD_LOCK | HOLD_BREAKER, "http");
}

/* --- the whole call -------------------------------------------------------*/

static void maybe_free_guard(llm_guarded_t *g);

static void call_free(llm_guarded_call_t *c) {
  json_decref(c->messages);
  free(c->text);
  free(c);
}

/* The retry is over (inside the call's context): deliver and free. */
static void on_retry_done(int err, void *arg) {
  llm_guarded_call_t *c = arg;
  llm_guarded_t *g = c->g;
  llm_guarded_result_t r;
  char why[sizeof(c->detail)];

  c->retry = NULL;
  c->finished = 1;
  if (err == 0) {
    c->detail[0] = '\0';
  } else if (err == WFLO_E_CANCELED) {
    snprintf(c->detail, sizeof(c->detail), "canceled");
  } else if (err == WFLO_E_TIMEOUT && c->attempts > 0) {
    memcpy(why, c->detail, sizeof(why));
    snprintf(c->detail, sizeof(c->detail), "retry timeout; last: %.200s", why);
  }
  memset(&r, 0, sizeof(r));
  r.err = err;
  r.attempts = c->attempts;
  r.http_requests = c->http_requests;
  r.http_status = c->http_status;
  r.text = c->text;
  r.text_len = c->text != NULL ? c->text_len : 0;
  r.detail = c->detail;
  r.prompt_tokens = c->prompt_tokens;
  r.completion_tokens = c->completion_tokens;
  r.cost_usd = c->cost_usd;
  r.elapsed_s = (double)(uv_hrtime() - c->t0) / 1e9;
  c->cb(&r, c->ud);
  list_del(&c->link);
  call_free(c);
  maybe_free_guard(g);
}

int llm_guarded_chat_messages(llm_guarded_t *g, json_t *messages,
                              llm_guarded_cb cb, void *ud,
                              llm_guarded_call_t **out) {
  llm_guarded_call_t *c;
  int rc;
  if (g == NULL || !json_is_array(messages) || cb == NULL)
    return WFLO_E_INVAL;
  if (g->closing)
    return WFLO_E_STATE;
  if ((c = calloc(1, sizeof(*c))) == NULL)
    return WFLO_E_NOMEM;
  c->g = g;
  c->messages = json_incref(messages);
  c->cb = cb;
  c->ud = ud;
  c->t0 = uv_hrtime();
  list_init(&c->link);
  /* Captures the current context: every attempt, and on_retry_done, run
   * inside it. The first attempt starts from the loop, later. */
  rc = wflo_retry_start(g->loop, &g->policy, on_attempt, c, on_retry_done,
                        &c->retry);
  if (rc != 0) {
    call_free(c);
    return rc;
  }
  list_push(&g->calls, &c->link);
  if (out != NULL)
    *out = c;
  return 0;
}

int llm_guarded_chat(llm_guarded_t *g, const char *prompt, llm_guarded_cb cb,
                     void *ud, llm_guarded_call_t **out) {
  json_t *messages;
  int rc;
  if (g == NULL || prompt == NULL || cb == NULL)
    return WFLO_E_INVAL;
  rc = llm_user_messages(prompt, &messages);
  if (rc != 0)
    return rc;
  rc = llm_guarded_chat_messages(g, messages, cb, ud, out);
  json_decref(messages);
  return rc;
}

int llm_guarded_cancel(llm_guarded_call_t *c) {
  if (c == NULL)
    return WFLO_E_INVAL;
  if (c->canceled || c->finished)
    return WFLO_E_STATE;
  c->canceled = 1;
  /* The retry ends with WFLO_E_CANCELED: at once between attempts, else
   * when the running attempt reports, which we hasten. */
  (void)wflo_retry_cancel(c->retry);
  if (c->phase == P_LOCK)
    (void)wflo_lock_cancel(&c->lock_req); /* granted already: on_lock */
  else if (c->phase == P_HTTP && c->http != NULL)
    (void)llm_request_cancel(c->http);
  return 0;
}

/* --- the guard ----------------------------------------------------------- */

/* "llm:<provider>" (model NULL) or "llm:<provider>:<model>". */
static char *resource_name(const char *provider, const char *model) {
  size_t n = strlen(provider) + (model != NULL ? strlen(model) : 0) + 6;
  char *s = malloc(n);
  if (s == NULL)
    return NULL;
  if (model != NULL)
    snprintf(s, n, "llm:%s:%s", provider, model);
  else
    snprintf(s, n, "llm:%s", provider);
  return s;
}

int llm_guarded_new(uv_loop_t *loop, const llm_guarded_config_t *cfg,
                    llm_guarded_t **out) {
  llm_guarded_t *g;
  char *bname = NULL, *lname = NULL;
  int rc;
  if (loop == NULL || cfg == NULL || out == NULL || cfg->provider == NULL ||
      cfg->provider[0] == '\0' || cfg->client.model == NULL ||
      cfg->retry.breaker != NULL ||
      wflo_retry_policy_validate(&cfg->retry, NULL, 0) != 0)
    return WFLO_E_INVAL;
  if ((g = calloc(1, sizeof(*g))) == NULL)
    return WFLO_E_NOMEM;
  g->loop = loop;
  g->policy = cfg->retry;
  g->lock_timeout_s = cfg->lock_timeout_s;
  list_init(&g->calls);
  rc = WFLO_E_NOMEM;
  g->model = malloc(strlen(cfg->client.model) + 1);
  bname = resource_name(cfg->provider, cfg->client.model);
  lname = resource_name(cfg->provider, NULL);
  if (g->model == NULL || bname == NULL || lname == NULL)
    goto fail_free_names;
  memcpy(g->model, cfg->client.model, strlen(cfg->client.model) + 1);
  if ((rc = wflo_breaker_get(bname, &cfg->breaker, &g->breaker)) != 0)
    goto fail_free_names;
  if ((rc = wflo_lock_get(lname, &cfg->lock, &g->lock)) != 0)
    goto fail_put_breaker;
  if ((rc = llm_client_new(loop, &cfg->client, &g->client)) != 0)
    goto fail_put_lock;
  free(bname);
  free(lname);
  *out = g;
  return 0;

fail_put_lock:
  wflo_lock_put(g->lock);
fail_put_breaker:
  wflo_breaker_put(g->breaker);
fail_free_names:
  free(bname);
  free(lname);
  free(g->model);
  free(g);
  return rc;
}

/* Frees a closing guard once its client is closed and its last call has
 * delivered. */
static void maybe_free_guard(llm_guarded_t *g) {
  void (*closed)(void *ud);
  void *ud;
  if (!g->closing || g->client != NULL || !list_empty(&g->calls))
    return;
  closed = g->closed;
  ud = g->closed_ud;
  wflo_breaker_put(g->breaker);
  wflo_lock_put(g->lock);
  free(g->model);
  free(g);
  if (closed != NULL)
    closed(ud);
}

static void on_client_closed(void *ud) {
  llm_guarded_t *g = ud;
  g->client = NULL;
  maybe_free_guard(g);
}

int llm_guarded_close(llm_guarded_t *g, void (*closed)(void *ud), void *ud) {
  link_t *l;
  if (g == NULL)
    return WFLO_E_INVAL;
  if (g->closing)
    return WFLO_E_STATE;
  g->closing = 1;
  g->closed = closed;
  g->closed_ud = ud;
  /* Cancels deliver later, from the loop: the list does not change here. */
  for (l = g->calls.next; l != &g->calls; l = l->next)
    if (!CALL_OF(l)->canceled && !CALL_OF(l)->finished)
      (void)llm_guarded_cancel(CALL_OF(l));
  /* Requests still in flight are canceled by the client itself; its
   * callback comes after every handle closed (never inside this call). */
  return llm_client_close(g->client, on_client_closed, g);
}

wflo_breaker_t *llm_guarded_breaker(const llm_guarded_t *g) {
  return g != NULL ? g->breaker : NULL;
}

wflo_lock_t *llm_guarded_lock(const llm_guarded_t *g) {
  return g != NULL ? g->lock : NULL;
}
