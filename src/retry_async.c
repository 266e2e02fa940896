/* Async retry on a libuv loop: wflo_retry_start, wflo_call_done(_hint),
 * wflo_retry_cancel.
 *
 * One object per retry holds a deep copy of the policy, one embedded
 * deadline (wflo__timer_t on the loop's shared timer) and one embedded
 * wake-up item (wflo__post_t). Every step runs from a loop callback: the
 * first attempt is posted, never started inside wflo_retry_start; a report
 * is posted, so no user callback ever runs inside wflo_call_done (the
 * caller may be in the middle of its own bookkeeping) and the next attempt
 * never recurses into start; a zero wait is posted too, a non-zero one arms
 * the timer.
 *
 * Lifetime: the object is freed right after done returns. done runs only
 * from a wake (no attempt outstanding) or from processing a report (the
 * attempt has reported), so when it is freed no attempt can still report:
 * a wflo_call_done after wflo_retry_cancel is simply the report that
 * completes the retry. At most one of {timer armed, post queued} exists at
 * any time, and it belongs to the object, which holds one loop ref until it
 * is freed: the loop's handles stay open exactly as long as retries are
 * pending.
 *
 * Attempts alternate between two wflo_call_t slots, so a duplicate report of
 * the previous attempt arriving while the next one runs is recognised and
 * ignored instead of being taken as the new attempt's result. */
#include "internal/retry.h"

#include "internal/breaker.h"
#include "internal/context.h"
#include "internal/loop.h"
#include "internal/metrics.h"

struct wflo_call_s {
  wflo_retry_t *retry;
};

enum {
  R_WAITING,  /* first attempt posted, or a wait (timer or post) pending */
  R_RUNNING,  /* start ran; waiting for wflo_call_done */
  R_REPORTED, /* report posted for processing */
  R_DONE      /* done is running; freed after it returns */
};

struct wflo_retry_s {
  wflo_retry_policy_t policy; /* deep copy: name and error list owned */
  wflo__loop_t *loop;
  wflo_context_t *ctx; /* captured at start, re-entered around callbacks */
  void (*start)(wflo_call_t *call, void *arg);
  void (*done)(int err, void *arg);
  void *arg;

  /* Loop thread only. */
  struct {
    wflo__timer_t timer;
    wflo__post_t post;
    wflo_call_t calls[2]; /* attempt k uses calls[k & 1] */
    int state;
    bool canceled;
    bool has_deadline;
    int retries; /* retries started so far: attempt number - 1 */
    int result;  /* the reported attempt's result */
    double hint; /* negative: none */
    wflo_breaker_permit_t permit; /* the running attempt's, with a breaker */
    bool admitted;                /* permit holds an admission to record */
    double prev_delay;
    uint64_t deadline_ns;
  } loop_only;
};

/* --- policy copy --------------------------------------------------------- */

static void policy_copy_free(wflo_retry_policy_t *c) {
  wflo__strfree((char *)(uintptr_t)c->name);
  if (c->retryable_errors != NULL)
    wflo__free((void *)(uintptr_t)c->retryable_errors,
               c->retryable_errors_count * sizeof(int));
}

static int policy_copy(wflo_retry_policy_t *c, const wflo_retry_policy_t *p) {
  int *list = NULL;
  *c = *p;
  memset(c->reserved, 0, sizeof(c->reserved));
  c->name = NULL;
  c->retryable_errors = NULL;
  if (p->name != NULL && (c->name = wflo__strdup(p->name)) == NULL)
    return WFLO_E_NOMEM;
  if (p->retryable_errors_count > 0) {
    list = wflo__calloc(p->retryable_errors_count, sizeof(int));
    if (list == NULL) {
      policy_copy_free(c);
      return WFLO_E_NOMEM;
    }
    memcpy(list, p->retryable_errors, p->retryable_errors_count * sizeof(int));
    c->retryable_errors = list;
  } else {
    c->retryable_errors_count = 0;
  }
  /* The retry outlives the caller's policy: hold the breaker too (dropped
   * in retry_free). */
  if (c->breaker != NULL)
    wflo__breaker_ref(c->breaker);
  return 0;
}

/* --- completion ---------------------------------------------------------- */

static void retry_free(wflo_retry_t *r) {
  wflo__loop_t *l = r->loop;
  wflo_context_put(r->ctx);
  wflo_breaker_put(r->policy.breaker);
  policy_copy_free(&r->policy);
  wflo__free(r, sizeof(*r));
  wflo__loop_unref(l); /* last: the state may close its handles now */
}

/* Runs done exactly once, then frees the retry. Called from a loop callback
 * with no timer armed and no post queued for r. */
static void finish(wflo_retry_t *r, int err) {
  wflo__ctx_scope_t s;
  r->loop_only.state = R_DONE; /* cancel from inside done: WFLO_E_STATE */
  wflo__ctx_scope_enter(&s, r->ctx);
  r->done(err, r->arg);
  wflo__ctx_scope_exit(&s);
  retry_free(r);
}

/* --- attempts ------------------------------------------------------------ */

static void on_report_post(wflo__post_t *pt);

/* Every async attempt starts here ... */
static void attempt_start(wflo_retry_t *r) {
  wflo__ctx_scope_t s;
  wflo_call_t *call = &r->loop_only.calls[r->loop_only.retries & 1];
  r->loop_only.state = R_RUNNING;
  r->loop_only.hint = -1.0;
  /* A policy's breaker guards each attempt: a refusal is the attempt's
   * result (posted like any report) without calling start. */
  if (r->policy.breaker != NULL) {
    int rc =
        wflo_breaker_acquire_timed(r->policy.breaker, &r->loop_only.permit);
    r->loop_only.admitted = rc == 0;
    if (rc != 0) {
      r->loop_only.state = R_REPORTED;
      r->loop_only.result = rc;
      wflo__loop_post(r->loop, &r->loop_only.post, on_report_post);
      return;
    }
  }
  wflo__ctx_scope_enter(&s, r->ctx);
  r->start(call, r->arg);
  wflo__ctx_scope_exit(&s);
}

static void on_wake(wflo_retry_t *r) {
  if (r->loop_only.canceled)
    finish(r, WFLO_E_CANCELED);
  else
    attempt_start(r);
}

static void on_wake_post(wflo__post_t *pt) {
  on_wake(wflo__container_of(pt, wflo_retry_t, loop_only.post));
}

static void on_wake_timer(wflo__timer_t *t) {
  on_wake(wflo__container_of(t, wflo_retry_t, loop_only.timer));
}

/* After failed attempt err (inside r's context scope): true when the next
 * attempt is scheduled, else false with the final result in *fin. */
static bool schedule_next(wflo_retry_t *r, int err, int *fin) {
  const wflo_retry_policy_t *p = &r->policy;
  int attempts = wflo__retry_attempts(r->loop_only.retries);
  double delay, hint = r->loop_only.hint;
  uint64_t ms;

  *fin = err;
  if (!wflo__retry_is_retryable(p, err))
    return false;
  if (r->loop_only.retries >= p->max_retries ||
      (hint >= 0.0 && hint > p->max_delay)) {
    wflo__retry_emit_exhausted(p, attempts, err);
    return false;
  }
  delay = hint >= 0.0 ? hint
                      : wflo__retry_backoff(p, r->loop_only.retries,
                                            r->loop_only.prev_delay);
  if (r->loop_only.has_deadline &&
      wflo__retry_add_sat(wflo__now_ns(), wflo__s_to_ns(delay)) >
          r->loop_only.deadline_ns) {
    wflo__retry_emit_exhausted(p, attempts, WFLO_E_TIMEOUT);
    *fin = WFLO_E_TIMEOUT;
    return false;
  }
  if (p->on_retry != NULL)
    p->on_retry(r->loop_only.retries + 1, err, delay, p->user_data);
  wflo__retry_emit_scheduled(p, r->loop_only.retries + 1, err, delay);
  /* on_retry, is_retryable or an event handler may have canceled (no wait
   * was armed for cancel to stop): complete now instead of waiting. */
  if (r->loop_only.canceled)
    return false;
  r->loop_only.prev_delay = delay;
  r->loop_only.retries++;
  r->loop_only.state = R_WAITING;
  ms = wflo__loop_delay_ms(delay);
  if (ms == 0)
    wflo__loop_post(r->loop, &r->loop_only.post, on_wake_post);
  else
    wflo__timer_start(r->loop, &r->loop_only.timer, ms, on_wake_timer);
  return true;
}

/* wflo_retry_attempts_total{policy,result} for the attempt that reported.
 * A label lookup: an async attempt costs far more anyway. */
static void count_attempt(const wflo_retry_t *r, const char *result) {
  const char *labels[2] = {r->policy.name, result};
  wflo__counter_add_labels(WFLO__M_RETRY_ATTEMPTS, labels, 1);
}

/* ... and reports here, from the loop. */
static void attempt_report(wflo_retry_t *r) {
  wflo__ctx_scope_t s;
  int err = r->loop_only.result, fin = err;
  bool scheduled = false;
  if (r->loop_only.admitted) { /* the real outcome, even after a cancel */
    r->loop_only.admitted = false;
    (void)wflo_breaker_record_timed(&r->loop_only.permit, err);
  }
  wflo__ctx_scope_enter(&s, r->ctx);
  if (r->loop_only.canceled)
    fin = WFLO_E_CANCELED;
  else if (err >= 0 && r->loop_only.retries > 0)
    wflo__retry_emit_succeeded(&r->policy,
                               wflo__retry_attempts(r->loop_only.retries));
  else if (err < 0)
    scheduled = schedule_next(r, err, &fin);
  wflo__ctx_scope_exit(&s);
  count_attempt(r, err >= 0 ? "success" : scheduled ? "retry" : "failure");
  /* A cancel made by a callback above also wins: after wflo_retry_cancel
   * returned 0, done always gets WFLO_E_CANCELED. */
  if (!scheduled)
    finish(r, r->loop_only.canceled ? WFLO_E_CANCELED : fin);
}

static void on_report_post(wflo__post_t *pt) {
  attempt_report(wflo__container_of(pt, wflo_retry_t, loop_only.post));
}

/* --- public API ---------------------------------------------------------- */

int wflo_retry_start(uv_loop_t *loop, const wflo_retry_policy_t *p,
                     void (*start)(wflo_call_t *call, void *arg), void *arg,
                     void (*done)(int err, void *arg), wflo_retry_t **handle) {
  wflo_retry_t *r;
  int rc;

  if (handle != NULL)
    *handle = NULL;
  if (p == NULL || !wflo__retry_policy_ok(p))
    return wflo_retry_policy_validate(p, NULL, 0);
  if (loop == NULL || start == NULL || done == NULL)
    return WFLO_E_INVAL;
  r = wflo__calloc(1, sizeof(*r));
  if (r == NULL)
    return WFLO_E_NOMEM;
  rc = policy_copy(&r->policy, p);
  if (rc != 0)
    goto fail_free_retry;
  rc = wflo__loop_ref(loop, &r->loop);
  if (rc != 0)
    goto fail_free_policy;
  r->start = start;
  r->done = done;
  r->arg = arg;
  r->ctx = wflo_context_capture();
  r->loop_only.calls[0].retry = r;
  r->loop_only.calls[1].retry = r;
  r->loop_only.state = R_WAITING;
  r->loop_only.prev_delay = p->base_delay;
  r->loop_only.hint = -1.0;
  if (p->max_retries > 0 && p->timeout > 0.0) {
    r->loop_only.has_deadline = true;
    r->loop_only.deadline_ns =
        wflo__retry_add_sat(wflo__now_ns(), wflo__s_to_ns(p->timeout));
  }
  wflo__loop_post(r->loop, &r->loop_only.post, on_wake_post);
  if (handle != NULL)
    *handle = r;
  return 0;

fail_free_policy:
  wflo_breaker_put(r->policy.breaker);
  policy_copy_free(&r->policy);
fail_free_retry:
  wflo__free(r, sizeof(*r));
  return rc;
}

void wflo_call_done_hint(wflo_call_t *call, int err, double retry_after_s) {
  wflo_retry_t *r;
  if (call == NULL)
    return;
  r = call->retry;
  /* Only the running attempt's own slot may report, once. */
  if (r->loop_only.state != R_RUNNING ||
      call != &r->loop_only.calls[r->loop_only.retries & 1])
    return;
  r->loop_only.state = R_REPORTED;
  r->loop_only.result = err;
  r->loop_only.hint = retry_after_s >= 0.0 ? retry_after_s : -1.0;
  wflo__loop_post(r->loop, &r->loop_only.post, on_report_post);
}

void wflo_call_done(wflo_call_t *call, int err) {
  wflo_call_done_hint(call, err, -1.0);
}

int wflo_retry_cancel(wflo_retry_t *r) {
  if (r == NULL)
    return WFLO_E_INVAL;
  if (r->loop_only.state == R_DONE)
    return WFLO_E_STATE;
  if (r->loop_only.canceled)
    return 0;
  r->loop_only.canceled = true;
  /* A pending timer is replaced by a post so the retry completes soon, from
   * the loop. A queued post (first attempt, zero wait, report) sees the flag
   * when it runs; a running attempt completes when it reports. */
  if (r->loop_only.state == R_WAITING &&
      wflo__timer_armed(&r->loop_only.timer)) {
    wflo__timer_stop(r->loop, &r->loop_only.timer);
    wflo__loop_post(r->loop, &r->loop_only.post, on_wake_post);
  }
  return 0;
}
