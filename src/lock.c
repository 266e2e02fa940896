/* Resource locks: configs, objects and the registry, sync acquire and
 * release, stats. The async side is in lock_async.c; the synchronisation
 * scheme is described in internal/lock.h. */
#include "internal/lock.h"

#include <sched.h>

#include "internal/config.h"
#include "internal/context.h"
#include "internal/health.h"

static const char what[] = "lock";

/* Keeps the waiting paths out of line, so the uncontended acquire and
 * release stay small leaf-like functions (no big frame to set up). */
#if defined(__GNUC__) || defined(__clang__)
#define SLOW_PATH __attribute__((noinline, cold))
#else
#define SLOW_PATH
#endif

static const char anonymous[] = "anonymous";

/* --- config -------------------------------------------------------------- */

void wflo_lock_config_init(wflo_lock_config_t *c) {
  if (c == NULL)
    return;
  memset(c, 0, sizeof(*c));
  c->timeout = WFLO_LOCK_DEFAULT_TIMEOUT;
  c->contention_threshold = WFLO_LOCK_DEFAULT_CONTENTION_THRESHOLD;
  c->max_concurrent = WFLO_LOCK_DEFAULT_MAX_CONCURRENT;
  c->max_waiters = WFLO_LOCK_DEFAULT_MAX_WAITERS;
}

int wflo_lock_config_validate(const wflo_lock_config_t *c, char *errbuf,
                              size_t len) {
  int rc;
  if (c == NULL) {
    wflo__errbuf(errbuf, len, "lock: NULL config");
    return WFLO_E_INVAL;
  }
  rc = wflo__check_duration(what, "timeout", c->timeout, errbuf, len);
  if (rc == 0)
    rc = wflo__check_duration(what, "contention_threshold",
                              c->contention_threshold, errbuf, len);
  if (rc == 0 &&
      (c->max_concurrent < 1 || c->max_concurrent > WFLO_LOCK_CONCURRENT_MAX))
    rc = wflo__config_invalid(
        what, "max_concurrent",
        "must be between 1 and WFLO_LOCK_CONCURRENT_MAX (1000000000)", errbuf,
        len);
  if (rc == 0 &&
      (c->max_waiters < 0 || c->max_waiters > WFLO_LOCK_WAITERS_MAX))
    rc = wflo__config_invalid(
        what, "max_waiters",
        "must be between 0 and WFLO_LOCK_WAITERS_MAX (1000000000)", errbuf,
        len);
  return rc;
}

static const wflo__field_t config_fields[] = {
    {"timeout", WFLO__F_DURATION, offsetof(wflo_lock_config_t, timeout), 0, 0,
     NULL},
    {"contention_threshold", WFLO__F_DURATION,
     offsetof(wflo_lock_config_t, contention_threshold), 0, 0, NULL},
    {"max_concurrent", WFLO__F_INT,
     offsetof(wflo_lock_config_t, max_concurrent), 0, 0, NULL},
    {"max_waiters", WFLO__F_INT, offsetof(wflo_lock_config_t, max_waiters), 0,
     0, NULL},
};

int wflo_lock_config_from_json(const json_t *j, wflo_lock_config_t *c,
                               char *errbuf, size_t len) {
  int rc;
  if (c == NULL) {
    wflo__errbuf(errbuf, len, "lock: NULL config");
    return WFLO_E_INVAL;
  }
  wflo_lock_config_init(c);
  rc = wflo__config_load(j, what, config_fields,
                         WFLO_ARRAY_SIZE(config_fields), c, errbuf, len);
  if (rc == 0)
    rc = wflo_lock_config_validate(c, errbuf, len);
  if (rc != 0)
    wflo_lock_config_init(c); /* nothing is owned: the defaults again */
  return rc;
}

static bool config_same(const wflo_lock_config_t *a,
                        const wflo_lock_config_t *b) {
  return a->timeout == b->timeout &&
         a->contention_threshold == b->contention_threshold &&
         a->max_concurrent == b->max_concurrent &&
         a->max_waiters == b->max_waiters;
}

/* --- metrics ----------------------------------------------------------------
 * wflo_lock_holders and wflo_lock_contention_rate are gauges of state the
 * lock keeps anyway, and grants that did not wait are counted beside
 * busy_only.acquisitions: the collector reads them into the series when
 * metrics are read (internal/metrics.h), so an uncontended acquire and
 * release write no metric at all. Waits that did happen and timeouts are
 * slow paths: they update their series as they occur. Every lock, private
 * ones too, is on one list for the collector. */

static uv_once_t all_once = UV_ONCE_INIT;
static uv_mutex_t all_mu;
static wflo__list_t all_locks;

static void collect(void);
static wflo__metric_collector_t collector = {collect, NULL, false};

static void all_init(void) {
  uv_mutex_init(&all_mu);
  wflo__list_init(&all_locks);
}

/* Under synced.mu: moves the grants that did not wait, counted since the
 * last flush, into the histogram's first bucket (a 0 s observation is one
 * count there and nothing on the sum). */
static void flush_no_wait(wflo_lock_t *l) {
  uint64_t s = wflo__lock_busy_lock(l), n;
  unsigned slot;
  n = l->busy_only.no_wait - l->busy_only.no_wait_flushed;
  l->busy_only.no_wait_flushed = l->busy_only.no_wait;
  wflo__lock_busy_unlock(l, s);
  if (n == 0 || l->m.wait == NULL)
    return;
  slot = wflo__metric_slot();
  wflo__metric_cell_add(wflo__metric_cell(l->m.wait, slot, 0), slot, n);
}

/* Under synced.mu, which also orders two scrapes' gauge writes. */
static void collect_one(wflo_lock_t *l) {
  uint64_t s = wflo__lock_busy_lock(l), total;
  int holders = l->cfg.max_concurrent - (int)(s / WFLO__LOCK_ONE);
  total = l->busy_only.acquisitions + l->synced.acquisitions;
  wflo__lock_busy_unlock(l, s);
  wflo__gauge_set(l->m.holders, (double)holders);
  wflo__gauge_set(l->m.rate, total > 0 ? (double)l->synced.contention_count /
                                             (double)total
                                       : 0.0);
  flush_no_wait(l);
}

static void collect(void) {
  wflo__list_t *n;
  uv_mutex_lock(&all_mu);
  wflo__list_foreach(n, &all_locks) {
    wflo_lock_t *l = wflo__container_of(n, wflo_lock_t, all_node);
    uv_mutex_lock(&l->synced.mu);
    collect_one(l);
    uv_mutex_unlock(&l->synced.mu);
  }
  uv_mutex_unlock(&all_mu);
}

/* A lock's series; one that cannot be made (out of memory) stays NULL and
 * is ignored: metrics never fail a lock. */
static void metrics_start(wflo_lock_t *l) {
  const char *labels[1] = {l->name};
  l->m.wait = wflo__metric_get(WFLO__M_LOCK_WAIT, labels);
  l->m.rate = wflo__metric_get(WFLO__M_LOCK_CONTENTION_RATE, labels);
  l->m.holders = wflo__metric_get(WFLO__M_LOCK_HOLDERS, labels);
  l->m.timeouts = wflo__metric_get(WFLO__M_LOCK_TIMEOUTS, labels);
  uv_once(&all_once, all_init);
  wflo__metric_collector_add(&collector);
  uv_mutex_lock(&all_mu);
  wflo__list_insert_tail(&all_locks, &l->all_node);
  uv_mutex_unlock(&all_mu);
}

/* The counts not flushed yet stay in the histogram (counters outlive their
 * objects); the gauges leave with their last holder. */
static void metrics_stop(wflo_lock_t *l) {
  uv_mutex_lock(&all_mu);
  wflo__list_remove(&l->all_node);
  uv_mutex_unlock(&all_mu);
  flush_no_wait(l);
  wflo__metric_release(l->m.wait);
  wflo__metric_release(l->m.rate);
  wflo__metric_release(l->m.holders);
  wflo__metric_release(l->m.timeouts);
}

/* --- objects ------------------------------------------------------------- */

static int lock_alloc(const char *name, const wflo_lock_config_t *c,
                      wflo_lock_t **out) {
  wflo_lock_t *l = wflo__calloc(1, sizeof(*l));
  if (l == NULL)
    return WFLO_E_NOMEM;
  if (name != NULL) {
    l->name = wflo__strdup(name);
    if (l->name == NULL)
      goto fail_free_lock;
  }
  if (uv_mutex_init(&l->synced.mu) != 0)
    goto fail_free_name;
  wflo__ref_init(&l->ref);
  l->ref.name = l->name;
  wflo_lock_config_init(&l->cfg);
  l->cfg.timeout = c->timeout;
  l->cfg.contention_threshold = c->contention_threshold;
  l->cfg.max_concurrent = c->max_concurrent;
  l->cfg.max_waiters = c->max_waiters;
  l->timeout_ns = wflo__s_to_ns(c->timeout);
  l->threshold_ns = wflo__s_to_ns(c->contention_threshold);
  atomic_init(&l->st, (uint64_t)c->max_concurrent * WFLO__LOCK_ONE);
  wflo__list_init(&l->busy_only.holders);
  wflo__list_init(&l->synced.waiters);
  wflo__list_init(&l->synced.bindings);
  metrics_start(l);
  *out = l;
  return 0;

fail_free_name:
  wflo__strfree(l->name);
fail_free_lock:
  wflo__free(l, sizeof(*l));
  return WFLO_E_NOMEM;
}

static void lock_destroy(wflo_lock_t *l) {
  metrics_stop(l);
  uv_mutex_destroy(&l->synced.mu);
  wflo__strfree(l->name);
  wflo__free(l, sizeof(*l));
}

static int resolve_config(const wflo_lock_config_t *c, wflo_lock_config_t *d,
                          const wflo_lock_config_t **out) {
  if (c == NULL) {
    wflo_lock_config_init(d);
    c = d;
  }
  *out = c;
  return wflo_lock_config_validate(c, NULL, 0);
}

int wflo_lock_new(const char *name, const wflo_lock_config_t *c,
                  wflo_lock_t **out) {
  wflo_lock_config_t defaults;
  int rc;
  if (out == NULL)
    return WFLO_E_INVAL;
  rc = resolve_config(c, &defaults, &c);
  if (rc != 0)
    return rc;
  return lock_alloc(name, c, out);
}

static wflo__registry_t registry = WFLO__REGISTRY_INIT;

/* Runs under the registry mutex: allocate and initialise only. */
static int registry_create(const char *name, void *arg, wflo__ref_t **out) {
  wflo_lock_t *l;
  int rc = lock_alloc(name, arg, &l);
  if (rc == 0)
    *out = &l->ref;
  return rc;
}

int wflo_lock_get(const char *name, const wflo_lock_config_t *c,
                  wflo_lock_t **out) {
  wflo_lock_config_t defaults;
  wflo__ref_t *r;
  bool created;
  wflo_lock_t *l;
  int rc;
  if (name == NULL || out == NULL)
    return WFLO_E_INVAL;
  rc = resolve_config(c, &defaults, &c);
  if (rc != 0)
    return rc;
  rc = wflo__registry_get(&registry, name, registry_create, (void *)c, &r,
                          &created);
  if (rc != 0)
    return rc;
  l = wflo__container_of(r, wflo_lock_t, ref);
  if (!created && !config_same(&l->cfg, c) && wflo__event_on(WFLO_LOG_WARN))
    wflo__emit("config_conflict", WFLO_LOG_WARN,
               wflo__json_obj("what", wflo__json_string(what), "name",
                              wflo__json_string(name), NULL));
  *out = l;
  return 0;
}

void wflo_lock_put(wflo_lock_t *l) {
  if (l != NULL && wflo__ref_dec(&l->ref))
    lock_destroy(l);
}

/* --- the BUSY bit -------------------------------------------------------- */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* BUSY is held for a handful of instructions, so spinning is cheaper than
 * sleeping; a holder that got preempted is waited out with sched_yield()
 * rather than burning a whole time slice. */
uint64_t wflo__lock_busy_spin(wflo_lock_t *l) {
  uint64_t s = atomic_load_explicit(&l->st, memory_order_relaxed);
  unsigned spins = 0;
  for (;;) {
    if (!(s & WFLO__LOCK_BUSY)) {
      if (atomic_compare_exchange_weak_explicit(
              &l->st, &s, s | WFLO__LOCK_BUSY, memory_order_acquire,
              memory_order_relaxed))
        return s;
      continue;
    }
    if (++spins < 64)
      cpu_relax();
    else
      sched_yield();
    s = atomic_load_explicit(&l->st, memory_order_relaxed);
  }
}

/* --- permits ------------------------------------------------------------- */

void wflo__permit_reset(wflo_lock_permit_t *p) {
  p->holder_id = NULL;
  p->wait_time = 0.0;
  wflo__list_init(wflo__permit_link(p));
  p->priv.lock = NULL;
  p->priv.ctx = NULL;
  p->priv.aux = NULL;
  p->priv.state = WFLO__PERMIT_NONE;
  p->priv.flags = 0;
}

int wflo__permit_set_holder(wflo_lock_permit_t *p, const char *holder_id,
                            wflo_context_t *ctx) {
  if (holder_id != NULL) {
    char *copy = wflo__strdup(holder_id);
    if (copy == NULL)
      return WFLO_E_NOMEM;
    p->holder_id = copy;
    p->priv.flags |= WFLO__PERMIT_OWNS_HOLDER;
  } else if (ctx != NULL) {
    /* The context lives at least as long as the permit's reference. */
    p->holder_id = wflo_context_execution_id(ctx);
  } else {
    p->holder_id = anonymous;
  }
  p->priv.ctx = ctx;
  return 0;
}

void wflo__permit_drop_holder(wflo_lock_permit_t *p) {
  if (p->priv.flags & WFLO__PERMIT_OWNS_HOLDER)
    wflo__strfree((char *)(uintptr_t)p->holder_id);
  if (p->priv.ctx != NULL)
    wflo_context_put(p->priv.ctx);
  p->holder_id = NULL;
  p->priv.ctx = NULL;
  p->priv.flags = 0;
}

int wflo__lock_timeout(const wflo_lock_t *l, double timeout_s, uint64_t *ns,
                       double *s) {
  if (timeout_s < 0) {
    *ns = l->timeout_ns;
    *s = l->cfg.timeout;
  } else if (timeout_s == INFINITY) {
    *ns = UINT64_MAX;
    *s = timeout_s;
  } else if (wflo__duration_ok(timeout_s)) {
    *ns = wflo__s_to_ns(timeout_s);
    *s = timeout_s;
  } else {
    return WFLO_E_INVAL; /* NaN, or finite above WFLO_DURATION_MAX */
  }
  return 0;
}

/* --- events -------------------------------------------------------------- */

static void emit_wait(const char *name, wflo_log_level_t level,
                      const wflo_lock_t *l, const char *holder,
                      uint64_t wait_ns) {
  if (!wflo__event_on(level))
    return;
  wflo__emit(name, level,
             wflo__json_obj("resource_name", wflo__json_string(l->name),
                            "holder", wflo__json_string(holder),
                            "wait_time_seconds",
                            wflo__json_real(wflo__ns_to_s(wait_ns)), NULL));
}

void wflo__lock_emit_contention(const wflo_lock_t *l, const char *holder,
                                uint64_t wait_ns) {
  emit_wait("resource_contention_detected", WFLO_LOG_WARN, l, holder, wait_ns);
}

void wflo__lock_emit_timeout(const wflo_lock_t *l, const char *holder,
                             uint64_t wait_ns) {
  emit_wait("resource_lock_timeout", WFLO_LOG_ERROR, l, holder, wait_ns);
}

/* --- queue bookkeeping (under synced.mu) --------------------------------- */

void wflo__lock_leave_queue(wflo_lock_t *l, wflo_lock_permit_t *p) {
  wflo__list_remove(wflo__permit_link(p));
  if (--l->synced.nwaiters == 0) {
    uint64_t s = wflo__lock_busy_lock(l);
    wflo__lock_busy_unlock(l, s & ~WFLO__LOCK_QUEUED);
  }
}

void wflo__lock_count_wait(wflo_lock_t *l, uint64_t wait_ns) {
  wflo__histogram_observe(l->m.wait, wflo__ns_to_s(wait_ns));
  l->synced.acquisitions++;
  l->synced.wait_sum_ns += wait_ns;
  if (wait_ns > l->synced.wait_max_ns)
    l->synced.wait_max_ns = wait_ns;
  if (wait_ns > l->threshold_ns)
    l->synced.contention_count++;
}

/* --- sync acquire -------------------------------------------------------- */

/* A thread waiting for a permit, on its own stack. `granted` is set (after
 * the signal, under the mutex) by the release that hands it the permit. */
typedef struct sync_waiter {
  uv_cond_t cond;
  uint64_t start_ns;
  atomic_int granted;
} sync_waiter_t;

/* Under BUSY, with a free permit taken: p now holds it. */
static void hold(wflo_lock_t *l, wflo_lock_permit_t *p) {
  p->priv.lock = l;
  p->priv.state = WFLO__PERMIT_HELD;
  wflo__list_insert_tail(&l->busy_only.holders, wflo__permit_link(p));
}

/* Waits on w->cond until granted or the real-time deadline passes. Returns
 * true when granted. */
static bool wait_granted(wflo_lock_t *l, sync_waiter_t *w,
                         uint64_t timeout_ns) {
  uint64_t deadline = 0, now;
  if (timeout_ns != UINT64_MAX)
    deadline = uv_hrtime() + timeout_ns;
  while (!atomic_load_explicit(&w->granted, memory_order_relaxed)) {
    if (timeout_ns == UINT64_MAX) {
      uv_cond_wait(&w->cond, &l->synced.mu);
      continue;
    }
    now = uv_hrtime();
    if (now >= deadline)
      return false;
    (void)uv_cond_timedwait(&w->cond, &l->synced.mu, deadline - now);
  }
  return true;
}

SLOW_PATH static int acquire_slow(wflo_lock_t *l, wflo_lock_permit_t *p,
                                  uint64_t timeout_ns) {
  sync_waiter_t w;
  uint64_t s, wait_ns;
  int rc = 0;

  /* What a wait needs is prepared before the mutex, which other threads'
   * releases need too. */
  if (timeout_ns != 0) {
    if (uv_cond_init(&w.cond) != 0)
      return WFLO_E_NOMEM;
    atomic_init(&w.granted, 0);
    w.start_ns = wflo__now_ns();
  }
  uv_mutex_lock(&l->synced.mu);
  s = wflo__lock_busy_lock(l);
  if (!(s & WFLO__LOCK_QUEUED) && s >= WFLO__LOCK_ONE) {
    hold(l, p);
    l->busy_only.acquisitions++;
    wflo__lock_count_no_wait(l);
    wflo__lock_busy_unlock(l, s - WFLO__LOCK_ONE);
  } else if (timeout_ns == 0) {
    wflo__lock_busy_unlock(l, s);
    l->synced.timeout_count++;
    wflo__counter_add(l->m.timeouts, 1);
    rc = WFLO_E_LOCK_TIMEOUT;
  } else if (l->synced.nwaiters >= (size_t)l->cfg.max_waiters) {
    wflo__lock_busy_unlock(l, s);
    rc = WFLO_E_QUEUE_FULL;
  } else {
    /* No permit is free (and none can become free while QUEUED is set). */
    wflo__lock_busy_unlock(l, s | WFLO__LOCK_QUEUED);
    p->priv.lock = l;
    p->priv.aux = &w;
    p->priv.state = WFLO__PERMIT_WAIT_SYNC;
    wflo__list_insert_tail(&l->synced.waiters, wflo__permit_link(p));
    l->synced.nwaiters++;
    rc = 1; /* waiting */
  }
  if (rc != 1) {
    uv_mutex_unlock(&l->synced.mu);
    if (timeout_ns != 0)
      uv_cond_destroy(&w.cond);
    if (rc == WFLO_E_LOCK_TIMEOUT)
      wflo__lock_emit_timeout(l, p->holder_id, 0);
    return rc;
  }

  if (wait_granted(l, &w, timeout_ns)) {
    /* The wait is measured here, when the thread resumes, so the release
     * that handed over the permit reads no clock. */
    wait_ns = wflo__now_ns();
    wait_ns = wait_ns > w.start_ns ? wait_ns - w.start_ns : 0;
    p->wait_time = wflo__ns_to_s(wait_ns);
    wflo__lock_count_wait(l, wait_ns);
    uv_mutex_unlock(&l->synced.mu);
    uv_cond_destroy(&w.cond);
    if (wait_ns > l->threshold_ns)
      wflo__lock_emit_contention(l, p->holder_id, wait_ns);
    return 0;
  }
  /* Timed out while still queued: leave without touching anyone else. */
  wflo__lock_leave_queue(l, p);
  l->synced.timeout_count++;
  wflo__counter_add(l->m.timeouts, 1);
  uv_mutex_unlock(&l->synced.mu);
  uv_cond_destroy(&w.cond);
  wait_ns = wflo__now_ns();
  wait_ns = wait_ns > w.start_ns ? wait_ns - w.start_ns : 0;
  wflo__lock_emit_timeout(l, p->holder_id, wait_ns);
  p->priv.state = WFLO__PERMIT_NONE;
  p->priv.lock = NULL;
  p->priv.aux = NULL;
  return WFLO_E_LOCK_TIMEOUT;
}

/* The holder id given to an acquire: a copy (out of line: the default
 * holder is the common case). */
SLOW_PATH static int set_given_holder(wflo_lock_permit_t *p,
                                      const char *holder_id) {
  return wflo__permit_set_holder(p, holder_id, NULL);
}

/* Everything about an acquire's arguments but the lock itself; the common
 * call (a negative timeout, no holder id) runs straight through. */
static int prepare(wflo_lock_t *l, wflo_lock_permit_t *p,
                   const char *holder_id, double timeout_s,
                   uint64_t *timeout_ns) {
  wflo_context_t *cur;
  double ts;
  int rc;

  if (wflo__unlikely(l == NULL))
    return WFLO_E_INVAL;
  if (wflo__likely(timeout_s < 0)) {
    *timeout_ns = l->timeout_ns;
  } else {
    rc = wflo__lock_timeout(l, timeout_s, timeout_ns, &ts);
    if (rc != 0)
      return rc;
  }
  if (wflo__unlikely(wflo__in_loop_callback()) && *timeout_ns != 0)
    return WFLO_E_STATE;
  p->priv.flags = 0;
  p->priv.ctx = NULL;
  p->wait_time = 0.0;
  if (wflo__unlikely(holder_id != NULL))
    return set_given_holder(p, holder_id);
  /* The one place that asks the context module for the default holder. */
  cur = wflo_context_current();
  if (wflo__likely(cur == NULL)) {
    p->holder_id = anonymous;
    return 0;
  }
  return wflo__permit_set_holder(p, NULL, wflo_context_ref(cur));
}

int wflo_lock_acquire(wflo_lock_t *l, wflo_lock_permit_t *permit,
                      const char *holder_id, double timeout_s) {
  uint64_t timeout_ns, s;
  int rc;

  if (permit == NULL)
    return WFLO_E_INVAL;
  rc = prepare(l, permit, holder_id, timeout_s, &timeout_ns);
  if (wflo__unlikely(rc != 0)) {
    wflo__permit_reset(permit);
    return rc;
  }

  /* Only the fields a held permit needs are written here: this is the
   * uncontended path, one compare-and-swap and one store on the lock. */
  s = wflo__lock_busy_lock(l);
  if (wflo__likely(!(s & WFLO__LOCK_FASTOFF) && s >= WFLO__LOCK_ONE)) {
    hold(l, permit);
    l->busy_only.acquisitions++;
    wflo__lock_count_no_wait(l);
    wflo__lock_busy_unlock(l, s - WFLO__LOCK_ONE);
    return 0;
  }
  wflo__lock_busy_unlock(l, s);
  permit->priv.aux = NULL;
  rc = acquire_slow(l, permit, timeout_ns);
  if (rc != 0) {
    wflo__permit_drop_holder(permit);
    wflo__permit_reset(permit);
  }
  return rc;
}

/* --- release ------------------------------------------------------------- */

/* Under mu and BUSY, with a permit in hand and QUEUED set: gives it to the
 * first waiter. Sets *wake for a sync waiter, *post for an async one whose
 * binding must be posted. Returns the new `st`. */
static uint64_t hand_over(wflo_lock_t *l, uint64_t s, sync_waiter_t **wake,
                          wflo__lock_binding_t **post) {
  wflo__list_t *n = wflo__list_first(&l->synced.waiters);
  wflo_lock_permit_t *w = wflo__link_permit(n);

  wflo__list_remove(n);
  if (--l->synced.nwaiters == 0)
    s &= ~WFLO__LOCK_QUEUED;
  if (w->priv.state == WFLO__PERMIT_WAIT_SYNC) {
    *wake = w->priv.aux;
    w->priv.aux = NULL;
    hold(l, w);
  } else {
    *post = wflo__lock_grant_async(w);
  }
  return s;
}

SLOW_PATH static void release_slow(wflo_lock_t *l, wflo_lock_permit_t *p) {
  sync_waiter_t *wake = NULL;
  wflo__lock_binding_t *post = NULL;
  uint64_t s;

  uv_mutex_lock(&l->synced.mu);
  s = wflo__lock_busy_lock(l);
  wflo__list_remove(wflo__permit_link(p));
  if (s & WFLO__LOCK_QUEUED)
    s = hand_over(l, s, &wake, &post);
  else
    s += WFLO__LOCK_ONE;
  wflo__lock_busy_unlock(l, s);
  if (wake != NULL) {
    /* Signal before setting the flag: once the waiter sees it, it may
     * return and destroy its condition variable. */
    uv_cond_signal(&wake->cond);
    atomic_store_explicit(&wake->granted, 1, memory_order_release);
  }
  uv_mutex_unlock(&l->synced.mu);
  if (post != NULL)
    wflo__lock_post_binding(post);
}

int wflo_lock_release(wflo_lock_permit_t *permit) {
  wflo_lock_t *l;
  uint64_t s;

  if (permit == NULL)
    return WFLO_E_INVAL;
  if (permit->priv.state != WFLO__PERMIT_HELD)
    return WFLO_E_STATE;
  l = permit->priv.lock;
  s = wflo__lock_busy_lock(l);
  if (wflo__likely(!(s & WFLO__LOCK_FASTOFF))) {
    wflo__list_t *n = wflo__permit_link(permit);
    n->prev->next = n->next; /* unlinked for good: no need to self-link */
    n->next->prev = n->prev;
    wflo__lock_busy_unlock(l, s + WFLO__LOCK_ONE);
  } else {
    wflo__lock_busy_unlock(l, s);
    release_slow(l, permit);
  }
  permit->priv.state = WFLO__PERMIT_RELEASED;
  permit->priv.lock = NULL;
  if (wflo__likely((permit->priv.flags | (uintptr_t)permit->priv.ctx) == 0))
    permit->holder_id = NULL;
  else
    wflo__permit_drop_holder(permit);
  return 0;
}

void wflo_lock_permit_drop(wflo_lock_permit_t *permit) {
  if (permit != NULL && permit->priv.state == WFLO__PERMIT_HELD)
    (void)wflo_lock_release(permit);
}

/* --- stats --------------------------------------------------------------- */

typedef struct stats_snap {
  uint64_t total, contention, timeouts, wait_sum_ns, wait_max_ns;
  size_t waiters;
} stats_snap_t;

/* Under mu with SLOW set, so no holder can come or go: fast paths queue up
 * on the mutex instead of spinning while the JSON strings are allocated. */
static json_t *holders_json(wflo_lock_t *l) {
  json_t *arr = json_array();
  wflo__list_t *n;
  if (arr == NULL)
    return NULL;
  wflo__list_foreach(n, &l->busy_only.holders) {
    if (json_array_append_new(
            arr, wflo__json_string(wflo__link_permit(n)->holder_id)) != 0)
      goto fail_free_arr;
  }
  if (wflo__lock_pending_holders(l, arr) != 0)
    goto fail_free_arr;
  return arr;

fail_free_arr:
  json_decref(arr);
  return NULL;
}

json_t *wflo_lock_stats_json(wflo_lock_t *l) {
  stats_snap_t v;
  json_t *holders;
  uint64_t s;
  double avg, rate;

  if (l == NULL)
    return NULL;
  uv_mutex_lock(&l->synced.mu);
  s = wflo__lock_busy_lock(l);
  v.total = l->busy_only.acquisitions + l->synced.acquisitions;
  wflo__lock_busy_unlock(l, s | WFLO__LOCK_SLOW);
  v.contention = l->synced.contention_count;
  v.timeouts = l->synced.timeout_count;
  v.wait_sum_ns = l->synced.wait_sum_ns;
  v.wait_max_ns = l->synced.wait_max_ns;
  v.waiters = l->synced.nwaiters;
  holders = holders_json(l);
  s = wflo__lock_busy_lock(l);
  wflo__lock_busy_unlock(l, s & ~WFLO__LOCK_SLOW);
  uv_mutex_unlock(&l->synced.mu);
  if (holders == NULL)
    return NULL;

  rate = v.total > 0 ? (double)v.contention / (double)v.total : 0.0;
  avg = v.total > 0 ? wflo__ns_to_s(v.wait_sum_ns) / (double)v.total : 0.0;
  return wflo__json_obj(
      "resource_name", wflo__json_string(l->name), "total_acquisitions",
      json_integer((json_int_t)v.total), "contention_count",
      json_integer((json_int_t)v.contention), "contention_rate",
      wflo__json_real(rate), "avg_wait_time_seconds", wflo__json_real(avg),
      "max_wait_time_seconds", wflo__json_real(wflo__ns_to_s(v.wait_max_ns)),
      "current_holders", holders, "concurrent_capacity",
      json_integer((json_int_t)l->cfg.max_concurrent), "timeout_count",
      json_integer((json_int_t)v.timeouts), "current_waiters",
      json_integer((json_int_t)v.waiters), NULL);
}

/* --- health --------------------------------------------------------------- */

static json_t *health_json(wflo_lock_t *l) {
  uint64_t s, total, contention, timeouts;
  size_t waiters;
  int holders;
  uv_mutex_lock(&l->synced.mu);
  s = wflo__lock_busy_lock(l);
  total = l->busy_only.acquisitions + l->synced.acquisitions;
  holders = l->cfg.max_concurrent - (int)(s / WFLO__LOCK_ONE);
  wflo__lock_busy_unlock(l, s);
  contention = l->synced.contention_count;
  timeouts = l->synced.timeout_count;
  waiters = l->synced.nwaiters;
  uv_mutex_unlock(&l->synced.mu);
  return wflo__json_obj(
      "resource_name", wflo__json_string(l->name), "current_waiters",
      json_integer((json_int_t)waiters), "current_holders",
      json_integer(holders), "concurrent_capacity",
      json_integer(l->cfg.max_concurrent), "total_acquisitions",
      json_integer((json_int_t)total), "contention_count",
      json_integer((json_int_t)contention), "contention_rate",
      wflo__json_real(total > 0 ? (double)contention / (double)total : 0.0),
      "timeout_count", json_integer((json_int_t)timeouts), NULL);
}

/* Locks are informational: waiters and contention never make libwflo
 * unhealthy (a busy bulkhead is doing its job). */
int wflo__lock_health(json_t *arr, bool *healthy) {
  wflo__ref_t **refs;
  size_t n, i;
  int rc;
  WFLO_UNUSED(healthy);
  if (arr == NULL)
    return 0;
  rc = wflo__registry_snapshot(&registry, &refs, &n);
  if (rc != 0)
    return rc;
  for (i = 0; i < n; i++) {
    wflo_lock_t *l = wflo__container_of(refs[i], wflo_lock_t, ref);
    if (rc == 0 && json_array_append_new(arr, health_json(l)) != 0)
      rc = WFLO_E_NOMEM;
    wflo_lock_put(l);
  }
  if (n > 0)
    wflo__free(refs, n * sizeof(*refs));
  return rc;
}
