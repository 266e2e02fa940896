/* Instrumentation API: how libwflo's modules feed the metrics of
 * include/wflo/metrics.h. Never installed.
 *
 * Model. A family (name, help, type, label names, histogram bounds) is one
 * row of the table in src/metrics.c, named here by a wflo__metric_id_t. A
 * series is one tuple of label values of a family; it is created on first
 * use (mutex + one allocation) and then updated lock-free.
 *
 * How a module uses it:
 * - Objects with a name (breaker, lock) resolve their series once, when the
 *   object is created, with wflo__metric_get(), keep the pointers, update
 *   them on hot paths with wflo__counter_add() / wflo__gauge_set() /
 *   wflo__histogram_observe(), and drop them with wflo__metric_release()
 *   when the object is destroyed.
 * - Per-call label values that belong to no object (a retry policy's name,
 *   a context's workflow name, an LLM model) use wflo__counter_add_labels()
 *   / wflo__histogram_observe_labels(): a per-thread cache finds the series
 *   without a lock after its first use on that thread.
 * - Every update first checks one global flag (relaxed load): while metrics
 *   are disabled a counter or histogram update is one predictable branch.
 *   Gauges are the exception: they mirror current state (a breaker's state,
 *   a lock's holders), are set on state changes only, and are kept current
 *   while disabled so that re-enabling never shows a stale state.
 * - A NULL series (creation failed for lack of memory) is accepted by every
 *   update and ignored: instrumentation never fails a user's call.
 *
 * Lifetime of series (documented in metrics.h too): series are keyed by
 * their label values, so two objects with the same name share them (counts
 * add up; a gauge shows the last value set). When the last holder releases
 * a gauge series it leaves the exposition and is freed (a destroyed
 * breaker's state would otherwise be exported forever); counter and
 * histogram series keep their values, as Prometheus clients do, until
 * wflo_metrics_reset() frees every series no object holds.
 *
 * Cells. Counter and histogram values live in per-series shards, one cache
 * line (or more) each. A thread claims a shard of its own on its first
 * update (released when the thread exits) and updates it with a plain
 * load + store: no atomic read-modify-write, no cache line shared with a
 * writer on another thread. Threads beyond the number of shards share the
 * last shard and use atomic fetch-add there. Readers sum the shards. */
#ifndef WFLO_INTERNAL_METRICS_H
#define WFLO_INTERNAL_METRICS_H

#include "common.h"
#include "list.h"

/* --- the families ----------------------------------------------------------
 * Label values the modules pass (exactly nlabels of them, in this order;
 * NULL is taken as ""):
 *   RETRY_ATTEMPTS       {policy, result}   result: success | retry | failure
 *   RETRY_DELAY          {}                 seconds slept before a retry
 *   BREAKER_STATE        {name}             0 closed, 1 half_open, 2 open
 *   BREAKER_TRANSITIONS  {name, from, to}   closed | open | half_open
 *   BREAKER_CALLS        {name, outcome}    success|failure|ignored|rejected
 *   LOCK_WAIT            {resource}         seconds waited, granted acquires
 *   LOCK_CONTENTION_RATE {resource}         contention_count / acquisitions
 *   LOCK_HOLDERS         {resource}         permits held now
 *   LOCK_TIMEOUTS        {resource}
 *   BUDGET_SPENT         {workflow}         pico-dollars (1e-12 USD), integer
 *   BUDGET_REFUSALS      {workflow}
 *   LLM_TOKENS           {model, kind}      kind: prompt | completion */
typedef enum wflo__metric_id {
  WFLO__M_RETRY_ATTEMPTS,
  WFLO__M_RETRY_DELAY,
  WFLO__M_BREAKER_STATE,
  WFLO__M_BREAKER_TRANSITIONS,
  WFLO__M_BREAKER_CALLS,
  WFLO__M_LOCK_WAIT,
  WFLO__M_LOCK_CONTENTION_RATE,
  WFLO__M_LOCK_HOLDERS,
  WFLO__M_LOCK_TIMEOUTS,
  WFLO__M_BUDGET_SPENT,
  WFLO__M_BUDGET_REFUSALS,
  WFLO__M_LLM_TOKENS,
  WFLO__M_COUNT
} wflo__metric_id_t;

/* Most labels any family has. */
#define WFLO__METRIC_MAX_LABELS 3

typedef enum wflo__metric_type {
  WFLO__MT_COUNTER,
  WFLO__MT_GAUGE,
  WFLO__MT_HISTOGRAM
} wflo__metric_type_t;

typedef struct wflo__metric_family {
  const char *name;
  const char *help;
  wflo__metric_type_t type;
  const char *const *label_names;
  size_t nlabels;
  const double *bounds; /* histogram: finite, ascending upper bounds */
  size_t nbounds;
  /* Counter only: 0 for a plain count (exported as an integer), else the
   * exported value is the integer sum divided by this (1e12: pico-USD). */
  double divisor;
} wflo__metric_family_t;

/* The table, indexed by wflo__metric_id_t. */
const wflo__metric_family_t *wflo__metric_family(wflo__metric_id_t id);

typedef struct wflo__metric_series wflo__metric_series_t;

struct wflo__metric_series {
  /* Set at creation, then only read (by hot paths). Counter: cell 0 of a
   * shard is the count. Histogram: cells 0..nbounds are the per-bucket
   * counts (the last one is +Inf), cell nbounds+1 the sum (double bits). */
  unsigned char *cells;
  size_t stride; /* bytes per shard, a multiple of the cache line */
  const wflo__metric_family_t *fam;
  /* Gauge only: the value as double bits. */
  _Atomic uint64_t gauge;
  /* Private to src/metrics.c, under its mutex. */
  struct {
    wflo__metric_series_t *hnext; /* hash chain */
    wflo__list_t node;            /* family's list, creation order */
    size_t hash;
    size_t holders;   /* wflo__metric_get() references */
    size_t snap_refs; /* exposition snapshots in progress */
    size_t alloc_size;
    bool linked; /* in the family's table and list */
  } synced;
  const char *labels[WFLO__METRIC_MAX_LABELS]; /* copies, never NULL */
};

/* --- resolving series (not hot paths) -------------------------------------
 * Finds or creates the series of family `id` for label values
 * labels[0..nlabels) (copied; NULL taken as "") and takes a holder
 * reference on it. Returns the series, or NULL when out of memory (updates
 * on NULL are no-ops). Works while metrics are disabled. Any thread; takes
 * the metrics mutex, may allocate. */
wflo__metric_series_t *wflo__metric_get(wflo__metric_id_t id,
                                        const char *const *labels);

/* Drops a holder reference taken by wflo__metric_get(); NULL is a no-op.
 * A gauge series with no holder left is removed from the exposition and
 * freed; counters and histograms stay until wflo_metrics_reset(). Any
 * thread; takes the metrics mutex. */
void wflo__metric_release(wflo__metric_series_t *s);

/* --- hot-path updates --------------------------------------------------- */

extern atomic_bool wflo__metrics_on;

#if defined(__GNUC__) || defined(__clang__)
/* One word of static TLS: avoids a __tls_get_addr call per update in the
 * shared library. */
#define WFLO__TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define WFLO__TLS_FAST
#endif

/* The calling thread's shard: (index << 1) | 1 when the thread owns the
 * shard, (index << 1) for the shared one, 0 before its first update. */
extern WFLO_THREAD_LOCAL unsigned wflo__tl_metric_slot WFLO__TLS_FAST;
unsigned wflo__metric_slot_claim(void);

static inline bool wflo__metrics_active(void) {
  return atomic_load_explicit(&wflo__metrics_on, memory_order_relaxed);
}

static inline unsigned wflo__metric_slot(void) {
  unsigned slot = wflo__tl_metric_slot;
  if (wflo__unlikely(slot == 0))
    slot = wflo__metric_slot_claim();
  return slot;
}

static inline _Atomic uint64_t *
wflo__metric_cell(const wflo__metric_series_t *s, unsigned slot, size_t i) {
  return (_Atomic uint64_t *)(void *)(s->cells +
                                      (size_t)(slot >> 1) * s->stride) +
         i;
}

/* An owned shard has one writer: load + store is enough and avoids the
 * locked instruction. The shared shard needs the atomic add. */
static inline void wflo__metric_cell_add(_Atomic uint64_t *c, unsigned slot,
                                         uint64_t n) {
  if (wflo__likely(slot & 1u))
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
  else
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Adds n to a counter series (n is in the family's unit: a count, or
 * pico-USD for BUDGET_SPENT). Any thread; lock-free; no-op on NULL or while
 * metrics are disabled. */
static inline void wflo__counter_add(wflo__metric_series_t *s, uint64_t n) {
  unsigned slot;
  if (!wflo__likely(wflo__metrics_active() && s != NULL))
    return;
  slot = wflo__metric_slot();
  wflo__metric_cell_add(wflo__metric_cell(s, slot, 0), slot, n);
}

void wflo__histogram_observe_slow(wflo__metric_series_t *s, double v);

/* Records one observation (seconds for the *_seconds families) in a
 * histogram series. NaN is ignored. Any thread; lock-free; no-op on NULL or
 * while metrics are disabled. */
static inline void wflo__histogram_observe(wflo__metric_series_t *s,
                                           double v) {
  if (!wflo__likely(wflo__metrics_active() && s != NULL))
    return;
  wflo__histogram_observe_slow(s, v);
}

/* Sets a gauge series. Applied even while metrics are disabled (gauges
 * mirror state; see above). Any thread; lock-free; no-op on NULL. */
static inline void wflo__gauge_set(wflo__metric_series_t *s, double v) {
  uint64_t bits;
  if (s == NULL)
    return;
  memcpy(&bits, &v, sizeof(bits));
  atomic_store_explicit(&s->gauge, bits, memory_order_relaxed);
}

/* Adds d to a gauge series (a CAS loop: for gauges whose owner counts up
 * and down without a lock of its own). Same rules as wflo__gauge_set(). */
void wflo__gauge_add(wflo__metric_series_t *s, double d);

/* Per-call label values: finds the series through a per-thread cache
 * (lock-free after the first use of these labels on the thread; the first
 * use takes the mutex and may allocate) and adds n / observes v. Counter
 * and histogram families only. No-op while disabled or out of memory. */
void wflo__counter_add_labels(wflo__metric_id_t id, const char *const *labels,
                              uint64_t n);
void wflo__histogram_observe_labels(wflo__metric_id_t id,
                                    const char *const *labels, double v);

/* Caches of their own. A hot path whose labels come with each call (the
 * sync retry's policy name) may keep series found with wflo__metric_find()
 * in a per-thread cache of its own, keyed as it likes, and trust an entry
 * only while wflo__metric_gen() still returns the value it had when the
 * entry was filled: wflo_metrics_reset() bumps it when it frees the series
 * no object holds. Counter and histogram families only; NULL when out of
 * memory (then look again next time). Takes the mutex, may allocate. */
extern atomic_uint_fast64_t wflo__metric_cache_gen;
static inline uint64_t wflo__metric_gen(void) {
  return atomic_load_explicit(&wflo__metric_cache_gen, memory_order_relaxed);
}
wflo__metric_series_t *wflo__metric_find(wflo__metric_id_t id,
                                         const char *const *labels);

/* Collectors. Where a value is cheaper to read from the objects when an
 * exposition is rendered than to update on every call (a lock's holders,
 * its contention rate, its grants that did not wait), the module registers
 * a collector: wflo__metric_snapshot_take() runs every collector first, and
 * so does wflo_metrics_reset() before it zeroes anything, so what is read
 * is exact at that moment. collect runs on the reading thread with no
 * metrics lock held, possibly on two threads at once (two scrapes): it
 * serialises what it needs itself. Registration is for the life of the
 * process (a static struct); adding one twice is a no-op. Any thread. */
typedef struct wflo__metric_collector {
  void (*collect)(void);
  struct wflo__metric_collector *next; /* private to metrics.c */
  bool added;                          /* private to metrics.c */
} wflo__metric_collector_t;
void wflo__metric_collector_add(wflo__metric_collector_t *c);

/* --- reading (src/metrics_prom.c, src/health.c) ----------------------------
 * A snapshot takes a reference on every series in the exposition, grouped by
 * family in table order, each family in creation order, so the renderers
 * work without the mutex (a user's write callback may call into libwflo). */
typedef struct wflo__metric_snapshot {
  wflo__metric_series_t **series;
  size_t n;
  size_t cap;
} wflo__metric_snapshot_t;

/* Returns 0 or WFLO_E_NOMEM (nothing held then). */
int wflo__metric_snapshot_take(wflo__metric_snapshot_t *snap);
void wflo__metric_snapshot_drop(wflo__metric_snapshot_t *snap);

/* Sum over the shards of cell i of a counter or histogram series. */
uint64_t wflo__metric_read_cell(const wflo__metric_series_t *s, size_t i);
/* A histogram's sum of observations. */
double wflo__metric_read_sum(const wflo__metric_series_t *s);
/* A gauge's value. */
double wflo__metric_read_gauge(const wflo__metric_series_t *s);

/* Formats v as the exposition writes numbers: the shortest of %.15g..%.17g
 * that reads back as v, '.' whatever the locale, NaN / +Inf / -Inf.
 * Returns the length written (buf should hold 32 bytes). */
size_t wflo__metric_fmt_double(char *buf, size_t size, double v);

/* --- the HTTP listener (src/metrics_server.c) -------------------------------
 * Milliseconds a connection may take to send its request head (default:
 * WFLO_METRICS_REQUEST_TIMEOUT). A knob for tests; read when a connection
 * is accepted, on the loop thread. */
extern uint64_t wflo__metrics_request_timeout_ms;

#endif /* WFLO_INTERNAL_METRICS_H */
