/* Async acquire on a libuv loop. A request waits in the lock's one FIFO
 * queue beside sync waiters; its deadline is a wflo__timer_t embedded in the
 * request (one uv timer per loop for all of them). Whoever takes it out of
 * the queue under the lock's mutex decides its fate: a release (on any
 * thread) grants it, its timer times it out, wflo_lock_cancel cancels it.
 * Grants and cancels are delivered on the loop through the binding of the
 * lock and that loop (one posted item for all its requests), so a waiting
 * request costs its caller's struct and nothing else. */
#include "internal/lock.h"

#include "internal/config.h"
#include "internal/context.h"

_Static_assert(sizeof(wflo__timer_t) <=
                   sizeof(((wflo_lock_req_t *)0)->priv.timer),
               "wflo_lock_req_t.priv.timer is too small");
_Static_assert(_Alignof(wflo__timer_t) <= _Alignof(uint64_t),
               "wflo_lock_req_t.priv.timer is misaligned");
_Static_assert(sizeof(wflo__list_t) ==
                   sizeof(((wflo_lock_permit_t *)0)->priv.link),
               "wflo_lock_permit_t.priv.link has the wrong size");

/* Requests delivered per round with the mutex held once, and per wake-up
 * of the loop. */
#define BATCH 64
#define DELIVERY_BUDGET 256

static void on_post(wflo__post_t *post);
static void on_timeout(wflo__timer_t *t);

static wflo_lock_req_t *permit_req(wflo_lock_permit_t *p) {
  return wflo__container_of(p, wflo_lock_req_t, permit);
}

/* --- bindings ------------------------------------------------------------ */

/* Under mu. A loop's requests on one lock share a binding; there are as
 * many bindings as loops using the lock, usually one or two. */
static wflo__lock_binding_t *binding_find(wflo_lock_t *l, uv_loop_t *uv) {
  wflo__list_t *n;
  wflo__list_foreach(n, &l->synced.bindings) {
    wflo__lock_binding_t *b =
        wflo__container_of(n, wflo__lock_binding_t, node);
    if (b->uv == uv)
      return b;
  }
  return NULL;
}

/* Loop thread, no lock held. The loop ref taken here is the first
 * request's. */
static int binding_new(wflo_lock_t *l, uv_loop_t *uv,
                       wflo__lock_binding_t **out) {
  wflo__lock_binding_t *b = wflo__calloc(1, sizeof(*b));
  int rc;
  if (b == NULL)
    return WFLO_E_NOMEM;
  rc = wflo__loop_ref(uv, &b->loop);
  if (rc != 0) {
    wflo__free(b, sizeof(*b));
    return rc;
  }
  wflo__list_init(&b->node);
  wflo__list_init(&b->ready);
  b->uv = uv;
  b->lock = l;
  wflo__ref_inc(&l->ref); /* pending requests keep the lock alive */
  *out = b;
  return 0;
}

/* Under mu: drops n requests' refs. Returns true when b is now unused and
 * unlinked: free it with binding_free() once the mutex is released. */
static bool binding_unref(wflo__lock_binding_t *b, size_t n) {
  b->refs -= n;
  if (b->refs > 0)
    return false;
  wflo__list_remove(&b->node);
  return true;
}

/* No lock held: may drop the last reference on the lock. */
static void binding_free(wflo__lock_binding_t *b) {
  wflo_lock_t *l = b->lock;
  wflo__free(b, sizeof(*b));
  wflo_lock_put(l);
}

/* Under mu: appends p (decided: GRANTED or CANCELED) for delivery. Returns
 * true when the caller must post the binding. */
static bool ready_push(wflo__lock_binding_t *b, wflo_lock_permit_t *p,
                       uint32_t state) {
  p->priv.state = state;
  wflo__list_insert_tail(&b->ready, wflo__permit_link(p));
  b->nready++;
  if (b->posted)
    return false;
  b->posted = true;
  return true;
}

void wflo__lock_post_binding(wflo__lock_binding_t *b) {
  /* Safe after the mutex is gone: the request just made ready holds a ref
   * on b and on its loop state until it is delivered. */
  wflo__loop_post(b->loop, &b->post, on_post);
}

wflo__lock_binding_t *wflo__lock_grant_async(wflo_lock_permit_t *p) {
  return ready_push(p->priv.aux, p, WFLO__PERMIT_GRANTED) ? p->priv.aux : NULL;
}

/* Under mu, at delivery: accounts the wait of a request that was queued,
 * up to now (its callback is about to run: that is when the wait ends for
 * it). Requests granted at once were counted then. */
static void account_wait(wflo_lock_t *l, wflo_lock_permit_t *p,
                         uint64_t now_ns) {
  uint64_t start_ns = (uint64_t)p->wait_time;
  uint64_t wait_ns = now_ns > start_ns ? now_ns - start_ns : 0;
  p->wait_time = wflo__ns_to_s(wait_ns);
  p->priv.flags &= ~WFLO__PERMIT_WAITED;
  if (wait_ns > l->threshold_ns)
    p->priv.flags |= WFLO__PERMIT_CONTENDED;
  wflo__lock_count_wait(l, wait_ns);
}

int wflo__lock_pending_holders(wflo_lock_t *l, json_t *arr) {
  wflo__list_t *bn, *n;
  wflo__list_foreach(bn, &l->synced.bindings) {
    wflo__lock_binding_t *b =
        wflo__container_of(bn, wflo__lock_binding_t, node);
    wflo__list_foreach(n, &b->ready) {
      wflo_lock_permit_t *p = wflo__link_permit(n);
      if (p->priv.state == WFLO__PERMIT_GRANTED &&
          json_array_append_new(arr, wflo__json_string(p->holder_id)) != 0)
        return WFLO_E_NOMEM;
    }
  }
  return 0;
}

/* --- completion (loop thread, no lock held) ------------------------------ */

static void run_cb(wflo_lock_req_t *req, int status, wflo_context_t *ctx) {
  wflo__ctx_scope_t scope;
  wflo__ctx_scope_enter(&scope, ctx);
  req->priv.cb(req, status);
  wflo__ctx_scope_exit(&scope);
}

/* A request that ends without a permit: reset it first, since the
 * callback may reuse it at once. */
static void complete_empty(wflo_lock_req_t *req, int status) {
  wflo_lock_permit_t *p = &req->permit;
  wflo_context_t *ctx = p->priv.ctx;
  p->priv.ctx = NULL;
  wflo__permit_drop_holder(p);
  p->wait_time = 0.0;
  p->priv.lock = NULL;
  p->priv.aux = NULL;
  p->priv.state = WFLO__PERMIT_DONE;
  run_cb(req, status, ctx);
  wflo_context_put(ctx);
}

static void complete_granted(wflo_lock_t *l, wflo_lock_req_t *req) {
  wflo_lock_permit_t *p = &req->permit;
  /* The callback may release the permit, which drops the permit's context
   * reference: keep the context alive while it is current. */
  wflo_context_t *ctx = wflo_context_ref(p->priv.ctx);
  if (p->priv.flags & WFLO__PERMIT_CONTENDED) {
    p->priv.flags &= ~WFLO__PERMIT_CONTENDED;
    wflo__lock_emit_contention(l, p->holder_id, wflo__s_to_ns(p->wait_time));
  }
  p->priv.aux = NULL;
  run_cb(req, 0, ctx);
  wflo_context_put(ctx);
}

static void on_timeout(wflo__timer_t *t) {
  wflo_lock_req_t *req =
      wflo__container_of((void *)t, wflo_lock_req_t, priv.timer);
  wflo_lock_permit_t *p = &req->permit;
  wflo__lock_binding_t *b = p->priv.aux;
  wflo_lock_t *l = b->lock;
  wflo__loop_t *loop = b->loop;
  uint64_t now_ns, start_ns;
  bool unused;

  uv_mutex_lock(&l->synced.mu);
  if (p->priv.state != WFLO__PERMIT_WAIT_ASYNC) {
    /* Granted or cancelled first: the delivery is already on its way. */
    uv_mutex_unlock(&l->synced.mu);
    return;
  }
  wflo__lock_leave_queue(l, p);
  l->synced.timeout_count++;
  wflo__counter_add(l->m.timeouts, 1);
  now_ns = wflo__now_ns();
  uv_mutex_unlock(&l->synced.mu);

  start_ns = (uint64_t)p->wait_time;
  wflo__lock_emit_timeout(l, p->holder_id,
                          now_ns > start_ns ? now_ns - start_ns : 0);
  complete_empty(req, WFLO_E_LOCK_TIMEOUT);
  uv_mutex_lock(&l->synced.mu);
  unused = binding_unref(b, 1);
  uv_mutex_unlock(&l->synced.mu);
  if (unused)
    binding_free(b);
  wflo__loop_unref(loop);
}

/* Under mu: takes up to max decided requests off b's ready list; granted
 * ones join the holders (under BUSY) as they leave it, so the stats never
 * miss a permit. */
static size_t take_batch(wflo_lock_t *l, wflo__lock_binding_t *b,
                         wflo_lock_req_t **batch, size_t max) {
  wflo__list_t *n;
  uint64_t s = 0, now_ns = 0;
  bool busy = false;
  size_t k = 0;
  while (k < max && (n = wflo__list_first(&b->ready)) != NULL) {
    wflo_lock_permit_t *p = wflo__link_permit(n);
    wflo__list_remove(n);
    b->nready--;
    if (p->priv.state == WFLO__PERMIT_GRANTED) {
      if (p->priv.flags & WFLO__PERMIT_WAITED) {
        if (now_ns == 0)
          now_ns = wflo__now_ns(); /* once per batch */
        account_wait(l, p, now_ns);
      }
      if (!busy) {
        s = wflo__lock_busy_lock(l);
        busy = true;
      }
      p->priv.state = WFLO__PERMIT_HELD;
      wflo__list_insert_tail(&l->busy_only.holders, n);
    }
    batch[k++] = permit_req(p);
  }
  if (busy)
    wflo__lock_busy_unlock(l, s);
  return k;
}

static void deliver(wflo_lock_t *l, wflo__loop_t *loop,
                    wflo_lock_req_t **batch, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    wflo_lock_req_t *req = batch[i];
    wflo__timer_stop(loop, wflo__req_timer(req));
    if (req->permit.priv.state == WFLO__PERMIT_HELD)
      complete_granted(l, req);
    else
      complete_empty(req, WFLO_E_CANCELED);
  }
}

/* Delivers decided requests in rounds of BATCH (one mutex round trip each),
 * at most DELIVERY_BUDGET per wake-up. b stays marked posted meanwhile, so
 * what the callbacks or other threads make ready is picked up by the next
 * round without a new wake-up (a uv_async_send costs syscalls); past the
 * budget the rest waits for a new post, so a lock whose callbacks keep
 * re-queuing never starves the rest of the loop. */
static void on_post(wflo__post_t *post) {
  wflo__lock_binding_t *b =
      wflo__container_of(post, wflo__lock_binding_t, post);
  wflo_lock_t *l = b->lock;
  wflo__loop_t *loop = b->loop;
  wflo_lock_req_t *batch[BATCH];
  size_t budget = DELIVERY_BUDGET, n = 0, done, i;
  bool idle;

  for (;;) {
    uv_mutex_lock(&l->synced.mu);
    done = n; /* the previous round's requests give their refs back */
    if (done > 0 && binding_unref(b, done)) {
      uv_mutex_unlock(&l->synced.mu);
      for (i = 0; i < done; i++)
        wflo__loop_unref(loop); /* on_async holds one more */
      binding_free(b);
      return;
    }
    idle = wflo__list_empty(&b->ready);
    if (idle || budget == 0) {
      if (idle)
        b->posted = false;
      uv_mutex_unlock(&l->synced.mu);
      for (i = 0; i < done; i++)
        wflo__loop_unref(loop);
      if (!idle)
        wflo__loop_post(loop, &b->post, on_post); /* still marked posted */
      return;
    }
    n = take_batch(l, b, batch, budget < BATCH ? budget : BATCH);
    budget -= n;
    uv_mutex_unlock(&l->synced.mu);
    for (i = 0; i < done; i++)
      wflo__loop_unref(loop);
    deliver(l, loop, batch, n);
  }
}

/* --- acquire and cancel -------------------------------------------------- */

/* Under mu with the binding counted: grants (*post: the binding must be
 * posted), queues (*queued) or refuses. Returns 0 when the request is
 * pending, or the refusal. */
static int enqueue(wflo_lock_t *l, wflo__lock_binding_t *b,
                   wflo_lock_permit_t *p, uint64_t timeout_ns, bool *post,
                   bool *queued) {
  uint64_t s = wflo__lock_busy_lock(l);
  if (!(s & WFLO__LOCK_QUEUED) && s >= WFLO__LOCK_ONE) {
    l->busy_only.acquisitions++;
    wflo__lock_count_no_wait(l);
    wflo__lock_busy_unlock(l, s - WFLO__LOCK_ONE);
    *post = ready_push(b, p, WFLO__PERMIT_GRANTED);
    return 0;
  }
  if (timeout_ns == 0 || l->synced.nwaiters >= (size_t)l->cfg.max_waiters) {
    wflo__lock_busy_unlock(l, s);
    if (timeout_ns != 0)
      return WFLO_E_QUEUE_FULL;
    l->synced.timeout_count++;
    wflo__counter_add(l->m.timeouts, 1);
    return WFLO_E_LOCK_TIMEOUT;
  }
  wflo__lock_busy_unlock(l, s | WFLO__LOCK_QUEUED);
  p->priv.state = WFLO__PERMIT_WAIT_ASYNC;
  p->priv.flags |= WFLO__PERMIT_WAITED;
  /* The start time, until a grant replaces it with the wait: ns fit a
   * double exactly for the first 104 days of uptime, to a few ns after. */
  p->wait_time = (double)wflo__now_ns();
  wflo__list_insert_tail(&l->synced.waiters, wflo__permit_link(p));
  l->synced.nwaiters++;
  *queued = true;
  return 0;
}

int wflo_lock_acquire_async(uv_loop_t *loop, wflo_lock_t *l,
                            wflo_lock_req_t *req, const char *holder_id,
                            double timeout_s,
                            void (*cb)(wflo_lock_req_t *req, int status)) {
  wflo_lock_permit_t *p;
  wflo__lock_binding_t *b;
  wflo__loop_t *lp;
  wflo_context_t *ctx;
  uint64_t timeout_ns;
  double ts;
  bool post = false, queued = false, unused;
  int rc;

  if (req == NULL)
    return WFLO_E_INVAL;
  p = &req->permit;
  wflo__permit_reset(p);
  wflo__timer_init(wflo__req_timer(req));
  req->priv.cb = cb;
  if (loop == NULL || l == NULL || cb == NULL ||
      wflo__lock_timeout(l, timeout_s, &timeout_ns, &ts) != 0)
    return WFLO_E_INVAL;
  ctx = wflo_context_capture();
  rc = wflo__permit_set_holder(p, holder_id, ctx);
  if (rc != 0) {
    wflo_context_put(ctx);
    return rc;
  }

  uv_mutex_lock(&l->synced.mu);
  b = binding_find(l, loop);
  if (b != NULL) {
    wflo__loop_ref_again(b->loop);
  } else {
    /* Only this loop's thread adds or removes this loop's binding, so it
     * is still missing when the mutex is taken again. */
    uv_mutex_unlock(&l->synced.mu);
    rc = binding_new(l, loop, &b);
    if (rc != 0) {
      wflo__permit_drop_holder(p);
      return rc;
    }
    uv_mutex_lock(&l->synced.mu);
    wflo__list_insert_tail(&l->synced.bindings, &b->node);
  }
  b->refs++;
  p->priv.lock = l;
  p->priv.aux = b;
  rc = enqueue(l, b, p, timeout_ns, &post, &queued);
  if (rc == 0) {
    uv_mutex_unlock(&l->synced.mu);
    /* A grant racing with this is delivered by a post that runs on this
     * thread, after this call: it will find the timer armed and stop it. */
    if (queued && timeout_ns != UINT64_MAX)
      wflo__timer_start(b->loop, wflo__req_timer(req), wflo__loop_delay_ms(ts),
                        on_timeout);
    if (post)
      wflo__lock_post_binding(b);
    return 0;
  }
  lp = b->loop;
  unused = binding_unref(b, 1);
  uv_mutex_unlock(&l->synced.mu);
  if (rc == WFLO_E_LOCK_TIMEOUT)
    wflo__lock_emit_timeout(l, p->holder_id, 0);
  wflo__permit_drop_holder(p);
  wflo__permit_reset(p);
  if (unused)
    binding_free(b);
  wflo__loop_unref(lp);
  return rc;
}

int wflo_lock_cancel(wflo_lock_req_t *req) {
  wflo_lock_permit_t *p;
  wflo__lock_binding_t *b;
  wflo_lock_t *l;
  bool post;

  if (req == NULL)
    return WFLO_E_INVAL;
  p = &req->permit;
  l = p->priv.lock;
  if (l == NULL)
    return WFLO_E_STATE; /* finished, released, or never started */
  uv_mutex_lock(&l->synced.mu);
  if (p->priv.state != WFLO__PERMIT_WAIT_ASYNC) {
    uv_mutex_unlock(&l->synced.mu);
    return WFLO_E_STATE;
  }
  b = p->priv.aux;
  wflo__lock_leave_queue(l, p);
  post = ready_push(b, p, WFLO__PERMIT_CANCELED);
  uv_mutex_unlock(&l->synced.mu);
  wflo__timer_stop(b->loop, wflo__req_timer(req));
  if (post)
    wflo__lock_post_binding(b);
  return 0;
}
