/* Private side of the lock module, shared by lock.c (config, objects, sync
 * acquire and release, stats) and lock_async.c (acquire on a libuv loop).
 *
 * Synchronisation, in lock order:
 *   1. synced.mu (uv_mutex_t): the FIFO waiter queue, the per-loop bindings
 *      and their ready lists, and the counters of acquisitions that waited.
 *      Sync waiters sleep on their own uv_cond_t with this mutex.
 *   2. the BUSY bit of `st`: a spin bit held for a few instructions. It
 *      guards the free-permit count (also in `st`), the list of holders and
 *      busy_only. The uncontended acquire and release take only this bit:
 *      one compare-and-swap and one store each, no mutex, no clock.
 * `st` also carries QUEUED (the waiter queue is not empty) and SLOW (a stats
 * reader walks the holders under the mutex). Either sends every acquire and
 * release through the mutex, which keeps the queue strictly FIFO: a release
 * hands its permit straight to the first waiter, so while QUEUED is set no
 * permit is ever free and nobody can overtake a waiter. */
#ifndef WFLO_INTERNAL_LOCK_H
#define WFLO_INTERNAL_LOCK_H

#include "common.h"
#include "list.h"
#include "loop.h"
#include "metrics.h"
#include "registry.h"

#define WFLO__LOCK_BUSY ((uint64_t)1)
#define WFLO__LOCK_QUEUED ((uint64_t)2)
#define WFLO__LOCK_SLOW ((uint64_t)4)
#define WFLO__LOCK_ONE ((uint64_t)8) /* one free permit */
#define WFLO__LOCK_FASTOFF (WFLO__LOCK_QUEUED | WFLO__LOCK_SLOW)

/* permit.priv.state. Odd magic values so that a stale or never-filled
 * permit is unlikely to pass for a held one. */
enum {
  WFLO__PERMIT_NONE = 0x4c4b0a01,      /* failed acquire, or pristine */
  WFLO__PERMIT_HELD = 0x4c4b0a03,      /* release it */
  WFLO__PERMIT_RELEASED = 0x4c4b0a05,  /* released: releasing again is STATE */
  WFLO__PERMIT_WAIT_SYNC = 0x4c4b0a07, /* queued; priv.aux: sync waiter */
  WFLO__PERMIT_WAIT_ASYNC = 0x4c4b0a09, /* queued; priv.aux: binding */
  WFLO__PERMIT_GRANTED = 0x4c4b0a0b,    /* async grant decided, cb pending */
  WFLO__PERMIT_CANCELED = 0x4c4b0a0d,   /* async cancel decided, cb pending */
  WFLO__PERMIT_DONE = 0x4c4b0a0f        /* async finished without a permit */
};

/* permit.priv.flags */
#define WFLO__PERMIT_OWNS_HOLDER 1u /* holder_id is our copy */
#define WFLO__PERMIT_CONTENDED 2u   /* its wait exceeded the threshold */
#define WFLO__PERMIT_WAITED 4u      /* async: queued; wait_time: start, ns */

/* One lock shared with one loop: delivers that loop's decided requests
 * (grants from any thread, cancels) through a single posted item, so a
 * request needs no wake-up item of its own. Created by the first async
 * acquire from the loop, freed when no request of it is pending. */
typedef struct wflo__lock_binding {
  wflo__list_t node;  /* in lock->synced.bindings */
  wflo__list_t ready; /* decided requests (permit.priv.link), in order */
  size_t nready;
  size_t refs; /* pending requests (each also holds a loop ref) */
  bool posted; /* post queued and not yet started */
  /* Immutable; `loop` is valid while refs > 0. */
  wflo_lock_t *lock; /* holds a reference on it */
  uv_loop_t *uv;
  wflo__loop_t *loop;
  wflo__post_t post; /* loop thread */
} wflo__lock_binding_t;

struct wflo_lock_s {
  wflo__ref_t ref;
  char *name; /* NULL for an unnamed private lock */
  wflo_lock_config_t cfg;
  uint64_t timeout_ns;
  uint64_t threshold_ns;

  /* Free permits * WFLO__LOCK_ONE | SLOW | QUEUED | BUSY. */
  atomic_uint_fast64_t st;

  /* Metric series {resource}, resolved at creation and released at
   * destruction; NULL (out of memory) makes updates no-ops. The gauges and
   * the grants that did not wait are read from the lock by the collector
   * (lock.c) when metrics are read, so the fast paths write none of them. */
  struct {
    wflo__metric_series_t *wait, *rate, *holders, *timeouts;
  } m;
  wflo__list_t all_node; /* every lock, for the collector (lock.c) */

  /* Under the BUSY bit. */
  struct {
    wflo__list_t holders;  /* held permits (priv.link) */
    uint64_t acquisitions; /* granted without waiting */
    /* Of those, the ones granted while metrics were on, and how many of
     * them the collector has moved into wflo_lock_wait_seconds (0 s). */
    uint64_t no_wait, no_wait_flushed;
  } busy_only;

  struct {
    uv_mutex_t mu;
    wflo__list_t waiters; /* FIFO of waiting permits (priv.link) */
    size_t nwaiters;
    wflo__list_t bindings;
    uint64_t acquisitions; /* granted after waiting */
    uint64_t contention_count;
    uint64_t timeout_count;
    uint64_t wait_sum_ns;
    uint64_t wait_max_ns;
  } synced;
};

/* The request's private timer and the lists' links live in the public
 * structs' private storage. */
static inline wflo__list_t *wflo__permit_link(wflo_lock_permit_t *p) {
  return (wflo__list_t *)(void *)p->priv.link;
}
static inline wflo_lock_permit_t *wflo__link_permit(wflo__list_t *n) {
  return wflo__container_of((void *)n, wflo_lock_permit_t, priv.link);
}
static inline wflo__timer_t *wflo__req_timer(wflo_lock_req_t *r) {
  return (wflo__timer_t *)(void *)r->priv.timer;
}

/* --- the BUSY bit (lock.c) ----------------------------------------------- */

/* Spins until it owns BUSY; returns `st` as it was (BUSY clear). The first
 * attempt is inline: it nearly always succeeds. */
uint64_t wflo__lock_busy_spin(wflo_lock_t *l);
static inline uint64_t wflo__lock_busy_lock(wflo_lock_t *l) {
  uint64_t s = atomic_load_explicit(&l->st, memory_order_relaxed);
  if (wflo__likely(!(s & WFLO__LOCK_BUSY)) &&
      atomic_compare_exchange_weak_explicit(&l->st, &s, s | WFLO__LOCK_BUSY,
                                            memory_order_acquire,
                                            memory_order_relaxed))
    return s;
  return wflo__lock_busy_spin(l);
}
/* Stores s (BUSY cleared) into `st`: the new state and the unlock at once. */
static inline void wflo__lock_busy_unlock(wflo_lock_t *l, uint64_t s) {
  atomic_store_explicit(&l->st, s & ~WFLO__LOCK_BUSY, memory_order_release);
}

/* --- metrics (lock.c) ------------------------------------------------------ */

/* Under BUSY, after a grant that did not wait: one more 0 s observation of
 * wflo_lock_wait_seconds, counted here with a plain increment beside
 * busy_only.acquisitions and moved into the histogram by the collector.
 * Only grants made while metrics are on count. */
static inline void wflo__lock_count_no_wait(wflo_lock_t *l) {
  if (wflo__metrics_active())
    l->busy_only.no_wait++;
}

/* --- shared helpers (lock.c) --------------------------------------------- */

/* Resets every field of p: holds nothing, state NONE. */
void wflo__permit_reset(wflo_lock_permit_t *p);
/* Sets p's holder id: holder_id copied; else ctx's execution id (p keeps the
 * reference on ctx, which it takes over); else "anonymous". Returns 0 or
 * WFLO_E_NOMEM (then ctx is still the caller's). */
int wflo__permit_set_holder(wflo_lock_permit_t *p, const char *holder_id,
                            wflo_context_t *ctx);
/* Frees p's holder copy and drops its context reference. */
void wflo__permit_drop_holder(wflo_lock_permit_t *p);

/* Resolves a per-call timeout (negative: the lock's default). Returns 0 and
 * sets *ns (UINT64_MAX: forever) and *s, or WFLO_E_INVAL. */
int wflo__lock_timeout(const wflo_lock_t *l, double timeout_s, uint64_t *ns,
                       double *s);

/* Under synced.mu: unlinks a waiting permit and clears QUEUED when the queue
 * empties. */
void wflo__lock_leave_queue(wflo_lock_t *l, wflo_lock_permit_t *p);

/* Under synced.mu: accounts a granted acquisition that waited wait_ns
 * (measured when its thread resumes or its callback is delivered). */
void wflo__lock_count_wait(wflo_lock_t *l, uint64_t wait_ns);

/* Emits resource_contention_detected (warn) or resource_lock_timeout
 * (error); call with no lock held. */
void wflo__lock_emit_contention(const wflo_lock_t *l, const char *holder,
                                uint64_t wait_ns);
void wflo__lock_emit_timeout(const wflo_lock_t *l, const char *holder,
                             uint64_t wait_ns);

/* --- async side (lock_async.c) ------------------------------------------- */

/* Under synced.mu and BUSY: hands a permit to the waiting async request p
 * (already out of the queue). Its wait is measured when it is delivered.
 * Returns the binding when its post must be sent (after the mutex is
 * released), else NULL. */
wflo__lock_binding_t *wflo__lock_grant_async(wflo_lock_permit_t *p);
/* Sends the binding's post (no lock held). */
void wflo__lock_post_binding(wflo__lock_binding_t *b);
/* Under synced.mu: appends to arr the holder ids of granted requests that
 * wait for their callback. Returns 0 or WFLO_E_NOMEM. */
int wflo__lock_pending_holders(wflo_lock_t *l, json_t *arr);

#endif /* WFLO_INTERNAL_LOCK_H */
