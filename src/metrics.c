/* Metrics core: the family table, series creation and lookup, per-thread
 * shards, snapshots for the renderers, reset. See internal/metrics.h for
 * the model and the rules modules follow. */
#include "internal/metrics.h"

#if !defined(_WIN32)
#include <pthread.h>
#endif

#define CACHE_LINE 64

/* --- the family table -------------------------------------------------------- */

static const char *const l_policy_result[] = {"policy", "result"};
static const char *const l_name[] = {"name"};
static const char *const l_name_from_to[] = {"name", "from", "to"};
static const char *const l_name_outcome[] = {"name", "outcome"};
static const char *const l_resource[] = {"resource"};
static const char *const l_workflow[] = {"workflow"};
static const char *const l_model_kind[] = {"model", "kind"};

/* Retry delays: default base 1 s, cap 60 s. Lock waits: from a queue hop
 * to the default 30 s timeout (contention threshold defaults to 5 s). */
static const double b_retry_delay[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1,    2.5,   5,    10,  30,   60};
static const double b_lock_wait[] = {0.0001, 0.0005, 0.001, 0.005, 0.01,
                                     0.025,  0.05,   0.1,   0.25,  0.5,
                                     1,      2.5,    5,     10,    30};

#define LABELS(a) a, WFLO_ARRAY_SIZE(a)
#define NO_LABELS NULL, 0
#define BOUNDS(a) a, WFLO_ARRAY_SIZE(a)
#define NO_BOUNDS NULL, 0

static const wflo__metric_family_t families[WFLO__M_COUNT] = {
    [WFLO__M_RETRY_ATTEMPTS] = {"wflo_retry_attempts_total",
                                "Calls made by retry executions, by policy "
                                "and the attempt's result (success, retry, "
                                "failure).",
                                WFLO__MT_COUNTER, LABELS(l_policy_result),
                                NO_BOUNDS, 0},
    [WFLO__M_RETRY_DELAY] = {"wflo_retry_delay_seconds",
                             "Delays slept before retries, in seconds.",
                             WFLO__MT_HISTOGRAM, NO_LABELS,
                             BOUNDS(b_retry_delay), 0},
    [WFLO__M_BREAKER_STATE] = {"wflo_circuit_breaker_state",
                               "Circuit breaker state: 0 closed, 1 "
                               "half-open, 2 open.",
                               WFLO__MT_GAUGE, LABELS(l_name), NO_BOUNDS, 0},
    [WFLO__M_BREAKER_TRANSITIONS] = {"wflo_circuit_breaker_transitions_total",
                                     "Circuit breaker state transitions, by "
                                     "breaker, from-state and to-state.",
                                     WFLO__MT_COUNTER, LABELS(l_name_from_to),
                                     NO_BOUNDS, 0},
    [WFLO__M_BREAKER_CALLS] = {"wflo_circuit_breaker_calls_total",
                               "Calls through circuit breakers, by outcome "
                               "(success, failure, ignored, rejected).",
                               WFLO__MT_COUNTER, LABELS(l_name_outcome),
                               NO_BOUNDS, 0},
    [WFLO__M_LOCK_WAIT] = {"wflo_lock_wait_seconds",
                           "Time granted resource lock acquisitions waited, "
                           "in seconds.",
                           WFLO__MT_HISTOGRAM, LABELS(l_resource),
                           BOUNDS(b_lock_wait), 0},
    [WFLO__M_LOCK_CONTENTION_RATE] = {"wflo_lock_contention_rate",
                                      "Fraction of resource lock "
                                      "acquisitions that waited longer than "
                                      "the contention threshold.",
                                      WFLO__MT_GAUGE, LABELS(l_resource),
                                      NO_BOUNDS, 0},
    [WFLO__M_LOCK_HOLDERS] = {"wflo_lock_holders",
                              "Resource lock permits held now.",
                              WFLO__MT_GAUGE, LABELS(l_resource), NO_BOUNDS,
                              0},
    [WFLO__M_LOCK_TIMEOUTS] = {"wflo_lock_timeouts_total",
                               "Resource lock acquisitions that timed out.",
                               WFLO__MT_COUNTER, LABELS(l_resource), NO_BOUNDS,
                               0},
    [WFLO__M_BUDGET_SPENT] = {"wflo_budget_spent_usd_total",
                              "USD committed against execution budgets, by "
                              "workflow.",
                              WFLO__MT_COUNTER, LABELS(l_workflow), NO_BOUNDS,
                              1e12},
    [WFLO__M_BUDGET_REFUSALS] = {"wflo_budget_refusals_total",
                                 "Budget reservations refused because they "
                                 "would exceed the budget, by workflow.",
                                 WFLO__MT_COUNTER, LABELS(l_workflow),
                                 NO_BOUNDS, 0},
    [WFLO__M_LLM_TOKENS] = {"wflo_llm_tokens_total",
                            "LLM tokens used, by model and kind (prompt, "
                            "completion).",
                            WFLO__MT_COUNTER, LABELS(l_model_kind), NO_BOUNDS,
                            0},
};

const wflo__metric_family_t *wflo__metric_family(wflo__metric_id_t id) {
  return (unsigned)id < WFLO__M_COUNT ? &families[id] : NULL;
}

/* --- global state -------------------------------------------------------------- */

atomic_bool wflo__metrics_on = true;
WFLO_THREAD_LOCAL unsigned wflo__tl_metric_slot WFLO__TLS_FAST;

/* Per family: a chained hash table for lookups and a list that keeps
 * creation order for the exposition. All under `mu`. */
typedef struct fam_state {
  wflo__metric_series_t **buckets;
  size_t nbuckets;
  size_t count;
  wflo__list_t list;
} fam_state_t;

static uv_once_t init_once = UV_ONCE_INIT;
static uv_mutex_t mu;
static fam_state_t fams[WFLO__M_COUNT];

/* Shards per series, fixed at first use: enough that each thread of a
 * typical runtime owns one, bounded because every counter series costs a
 * cache line per shard. The last shard is the shared one. */
#define MIN_SHARDS 8
#define MAX_SHARDS 32
static size_t nshards;
static bool slot_used[MAX_SHARDS]; /* under mu */

#if !defined(_WIN32)
static pthread_key_t slot_key;
static bool slot_key_ok;

/* Thread exit: give the shard back. Its cells keep their partial sums; the
 * next owner continues adding to them, so nothing needs folding. The mutex
 * orders the last store of this thread before the next owner's loads. */
static void slot_release(void *p) {
  unsigned v = (unsigned)(uintptr_t)p;
  uv_mutex_lock(&mu);
  slot_used[v >> 1] = false;
  uv_mutex_unlock(&mu);
  /* A later destructor on this thread may still count: use the shared
   * shard from now on. */
  wflo__tl_metric_slot = (unsigned)(nshards - 1) << 1;
}
#endif

/* Bumped by reset: per-thread lookup caches compare it before trusting an
 * entry, because reset frees the series they point to. Extern for the
 * modules' own caches (wflo__metric_gen). */
atomic_uint_fast64_t wflo__metric_cache_gen = 1;

static void metrics_init(void) {
  size_t i, n = uv_available_parallelism();
  uv_mutex_init(&mu);
  for (i = 0; i < WFLO__M_COUNT; i++)
    wflo__list_init(&fams[i].list);
  n = n > MAX_SHARDS / 2 ? MAX_SHARDS : 2 * n;
  nshards = n < MIN_SHARDS ? MIN_SHARDS : n;
#if !defined(_WIN32)
  slot_key_ok = pthread_key_create(&slot_key, slot_release) == 0;
#endif
}

static void ensure_init(void) { uv_once(&init_once, metrics_init); }

void wflo_metrics_enable(bool on) {
  atomic_store_explicit(&wflo__metrics_on, on, memory_order_relaxed);
}

bool wflo_metrics_enabled(void) { return wflo__metrics_active(); }

/* --- shards -------------------------------------------------------------------- */

unsigned wflo__metric_slot_claim(void) {
  unsigned v;
  ensure_init();
  v = (unsigned)(nshards - 1) << 1; /* the shared shard */
#if !defined(_WIN32)
  if (slot_key_ok) {
    size_t i;
    uv_mutex_lock(&mu);
    for (i = 0; i + 1 < nshards; i++) {
      if (!slot_used[i]) {
        slot_used[i] = true;
        v = ((unsigned)i << 1) | 1u;
        break;
      }
    }
    uv_mutex_unlock(&mu);
    /* Without the key the shard would never come back: share instead. */
    if ((v & 1u) && pthread_setspecific(slot_key, (void *)(uintptr_t)v)) {
      uv_mutex_lock(&mu);
      slot_used[v >> 1] = false;
      uv_mutex_unlock(&mu);
      v = (unsigned)(nshards - 1) << 1;
    }
  }
#endif
  wflo__tl_metric_slot = v;
  return v;
}

/* --- series -------------------------------------------------------------------- */

static const char *label_or_empty(const char *const *labels, size_t i) {
  return labels != NULL && labels[i] != NULL ? labels[i] : "";
}

/* FNV-1a over the family id and every label value, each followed by a
 * separator so ("ab","c") and ("a","bc") differ. */
static size_t labels_hash(wflo__metric_id_t id, const char *const *labels) {
  const wflo__metric_family_t *f = &families[id];
  uint64_t h = 1469598103934665603ull ^ (uint64_t)id;
  size_t i;
  for (i = 0; i < f->nlabels; i++) {
    const unsigned char *p = (const unsigned char *)label_or_empty(labels, i);
    for (; *p; p++)
      h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;
  }
  return (size_t)h;
}

static bool labels_equal(const wflo__metric_series_t *s,
                         const char *const *labels) {
  size_t i;
  for (i = 0; i < s->fam->nlabels; i++)
    if (strcmp(s->labels[i], label_or_empty(labels, i)) != 0)
      return false;
  return true;
}

static size_t shard_stride(const wflo__metric_family_t *f) {
  size_t cells;
  if (f->type == WFLO__MT_GAUGE)
    return 0;
  cells = f->type == WFLO__MT_HISTOGRAM ? f->nbounds + 2 : 1;
  return (cells * sizeof(uint64_t) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
}

static wflo__metric_series_t *
find_locked(wflo__metric_id_t id, const char *const *labels, size_t h) {
  fam_state_t *fs = &fams[id];
  wflo__metric_series_t *s;
  if (fs->nbuckets == 0)
    return NULL;
  for (s = fs->buckets[h & (fs->nbuckets - 1)]; s != NULL; s = s->synced.hnext)
    if (s->synced.hash == h && labels_equal(s, labels))
      return s;
  return NULL;
}

/* Doubles the bucket array; on failure the old one keeps working. */
static void grow_locked(fam_state_t *fs) {
  size_t n = fs->nbuckets == 0 ? 8 : fs->nbuckets * 2, i;
  wflo__metric_series_t **b = wflo__calloc(n, sizeof(*b));
  if (b == NULL)
    return;
  for (i = 0; i < fs->nbuckets; i++) {
    wflo__metric_series_t *s = fs->buckets[i], *next;
    for (; s != NULL; s = next) {
      next = s->synced.hnext;
      s->synced.hnext = b[s->synced.hash & (n - 1)];
      b[s->synced.hash & (n - 1)] = s;
    }
  }
  wflo__free(fs->buckets, fs->nbuckets * sizeof(*fs->buckets));
  fs->buckets = b;
  fs->nbuckets = n;
}

/* One block: the struct, the label copies, then the shards aligned to a
 * cache line (the allocator only promises malloc alignment, hence the
 * slack). */
static wflo__metric_series_t *series_alloc(wflo__metric_id_t id,
                                           const char *const *labels) {
  const wflo__metric_family_t *f = &families[id];
  size_t i, strings = 0, stride = shard_stride(f), size, off;
  wflo__metric_series_t *s;
  char *p;
  uintptr_t cells;

  for (i = 0; i < f->nlabels; i++)
    strings += strlen(label_or_empty(labels, i)) + 1;
  size = sizeof(*s) + strings;
  if (stride != 0)
    size += CACHE_LINE - 1 + nshards * stride;
  s = wflo__calloc(1, size);
  if (s == NULL)
    return NULL;
  s->fam = f;
  s->stride = stride;
  s->synced.alloc_size = size;
  p = (char *)(s + 1);
  for (i = 0; i < f->nlabels; i++) {
    const char *v = label_or_empty(labels, i);
    size_t n = strlen(v) + 1;
    memcpy(p, v, n);
    s->labels[i] = p;
    p += n;
  }
  if (stride != 0) {
    off = (size_t)(p - (char *)s);
    cells =
        ((uintptr_t)s + off + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1);
    s->cells = (unsigned char *)cells;
  }
  wflo__list_init(&s->synced.node);
  return s;
}

static void series_free(wflo__metric_series_t *s) {
  wflo__free(s, s->synced.alloc_size);
}

/* A family without series holds no memory (the allocator rule). */
static void table_free_if_empty(fam_state_t *fs) {
  if (fs->count > 0)
    return;
  wflo__free(fs->buckets, fs->nbuckets * sizeof(*fs->buckets));
  fs->buckets = NULL;
  fs->nbuckets = 0;
}

static wflo__metric_series_t *
create_locked(wflo__metric_id_t id, const char *const *labels, size_t h) {
  fam_state_t *fs = &fams[id];
  wflo__metric_series_t *s;
  if (fs->count >= fs->nbuckets)
    grow_locked(fs);
  if (fs->nbuckets == 0)
    return NULL;
  s = series_alloc(id, labels);
  if (s == NULL) {
    table_free_if_empty(fs);
    return NULL;
  }
  s->synced.hash = h;
  s->synced.hnext = fs->buckets[h & (fs->nbuckets - 1)];
  fs->buckets[h & (fs->nbuckets - 1)] = s;
  wflo__list_insert_tail(&fs->list, &s->synced.node);
  s->synced.linked = true;
  fs->count++;
  return s;
}

/* Takes s out of the lookup table and the exposition; frees it unless a
 * snapshot still holds it. The table goes with the family's last series. */
static void unlink_locked(wflo__metric_series_t *s) {
  fam_state_t *fs = &fams[s->fam - families];
  wflo__metric_series_t **pp =
      &fs->buckets[s->synced.hash & (fs->nbuckets - 1)];
  while (*pp != s)
    pp = &(*pp)->synced.hnext;
  *pp = s->synced.hnext;
  wflo__list_remove(&s->synced.node);
  s->synced.linked = false;
  fs->count--;
  table_free_if_empty(fs);
  if (s->synced.snap_refs == 0)
    series_free(s);
}

static wflo__metric_series_t *
lookup(wflo__metric_id_t id, const char *const *labels, size_t h, bool hold) {
  wflo__metric_series_t *s;
  uv_mutex_lock(&mu);
  s = find_locked(id, labels, h);
  if (s == NULL)
    s = create_locked(id, labels, h);
  if (s != NULL && hold)
    s->synced.holders++;
  uv_mutex_unlock(&mu);
  return s;
}

wflo__metric_series_t *wflo__metric_get(wflo__metric_id_t id,
                                        const char *const *labels) {
  if ((unsigned)id >= WFLO__M_COUNT)
    return NULL;
  ensure_init();
  return lookup(id, labels, labels_hash(id, labels), true);
}

void wflo__metric_release(wflo__metric_series_t *s) {
  if (s == NULL)
    return;
  uv_mutex_lock(&mu);
  if (--s->synced.holders == 0 && s->fam->type == WFLO__MT_GAUGE &&
      s->synced.linked)
    unlink_locked(s);
  uv_mutex_unlock(&mu);
}

/* --- updates off the inline fast path ----------------------------------------- */

static double bits_to_double(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof(d));
  return d;
}

static uint64_t double_to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof(b));
  return b;
}

static void cell_add_double(_Atomic uint64_t *c, bool owned, double v) {
  uint64_t old = atomic_load_explicit(c, memory_order_relaxed);
  if (owned) {
    atomic_store_explicit(c, double_to_bits(bits_to_double(old) + v),
                          memory_order_relaxed);
    return;
  }
  while (!atomic_compare_exchange_weak_explicit(
      c, &old, double_to_bits(bits_to_double(old) + v), memory_order_relaxed,
      memory_order_relaxed)) {
  }
}

void wflo__histogram_observe_slow(wflo__metric_series_t *s, double v) {
  const wflo__metric_family_t *f = s->fam;
  size_t i = 0;
  unsigned slot;
  if (isnan(v))
    return;
  /* Bucket i counts bounds[i-1] < v <= bounds[i]: a linear scan, the
   * tables are short and small values are the common case. */
  while (i < f->nbounds && v > f->bounds[i])
    i++;
  slot = wflo__metric_slot();
  wflo__metric_cell_add(wflo__metric_cell(s, slot, i), slot, 1);
  cell_add_double(wflo__metric_cell(s, slot, f->nbounds + 1), slot & 1u, v);
}

void wflo__gauge_add(wflo__metric_series_t *s, double d) {
  if (s != NULL)
    cell_add_double(&s->gauge, false, d);
}

/* Per-thread lookup cache for per-call label values: direct-mapped by the
 * labels' hash. Entries point to series that only reset frees (gauges,
 * which release can free, never go through here); the generation check
 * catches a reset. */
#define CACHE_SIZE 16
typedef struct cache_entry {
  wflo__metric_series_t *s;
  uint64_t gen;
  size_t hash;
} cache_entry_t;
static WFLO_THREAD_LOCAL cache_entry_t tl_cache[CACHE_SIZE];

static wflo__metric_series_t *find_cached(wflo__metric_id_t id,
                                          const char *const *labels) {
  size_t h;
  cache_entry_t *e;
  uint64_t gen;
  if ((unsigned)id >= WFLO__M_COUNT || families[id].type == WFLO__MT_GAUGE)
    return NULL;
  h = labels_hash(id, labels);
  e = &tl_cache[h & (CACHE_SIZE - 1)];
  gen = wflo__metric_gen();
  if (e->gen == gen && e->hash == h && e->s->fam == &families[id] &&
      labels_equal(e->s, labels))
    return e->s;
  ensure_init();
  e->s = lookup(id, labels, h, false);
  e->gen = e->s != NULL ? gen : 0;
  e->hash = h;
  return e->s;
}

wflo__metric_series_t *wflo__metric_find(wflo__metric_id_t id,
                                         const char *const *labels) {
  if ((unsigned)id >= WFLO__M_COUNT || families[id].type == WFLO__MT_GAUGE)
    return NULL;
  ensure_init();
  return lookup(id, labels, labels_hash(id, labels), false);
}

void wflo__counter_add_labels(wflo__metric_id_t id, const char *const *labels,
                              uint64_t n) {
  if (!wflo__metrics_active())
    return;
  wflo__counter_add(find_cached(id, labels), n);
}

void wflo__histogram_observe_labels(wflo__metric_id_t id,
                                    const char *const *labels, double v) {
  if (!wflo__metrics_active())
    return;
  wflo__histogram_observe(find_cached(id, labels), v);
}

/* --- collectors ------------------------------------------------------------------
 * A list of their own under a mutex of their own: a collector takes module
 * locks and may claim a shard (which takes `mu`), so `mu` is never held
 * while one runs. The list mutex is held while they run, which also keeps
 * a reset from interleaving with a scrape's collection. */

static uv_once_t collect_once = UV_ONCE_INIT;
static uv_mutex_t collect_mu;
static wflo__metric_collector_t *collectors;

static void collect_init(void) { uv_mutex_init(&collect_mu); }

void wflo__metric_collector_add(wflo__metric_collector_t *c) {
  uv_once(&collect_once, collect_init);
  uv_mutex_lock(&collect_mu);
  if (!c->added) {
    c->added = true;
    c->next = collectors;
    collectors = c;
  }
  uv_mutex_unlock(&collect_mu);
}

static void collect_all(void) {
  wflo__metric_collector_t *c;
  uv_once(&collect_once, collect_init);
  uv_mutex_lock(&collect_mu);
  for (c = collectors; c != NULL; c = c->next)
    c->collect();
  uv_mutex_unlock(&collect_mu);
}

/* --- reading -------------------------------------------------------------------- */

uint64_t wflo__metric_read_cell(const wflo__metric_series_t *s, size_t i) {
  uint64_t sum = 0;
  size_t k;
  for (k = 0; k < nshards; k++)
    sum += atomic_load_explicit(wflo__metric_cell(s, (unsigned)k << 1, i),
                                memory_order_relaxed);
  return sum;
}

double wflo__metric_read_sum(const wflo__metric_series_t *s) {
  double sum = 0;
  size_t k;
  for (k = 0; k < nshards; k++)
    sum += bits_to_double(atomic_load_explicit(
        wflo__metric_cell(s, (unsigned)k << 1, s->fam->nbounds + 1),
        memory_order_relaxed));
  return sum;
}

double wflo__metric_read_gauge(const wflo__metric_series_t *s) {
  return bits_to_double(atomic_load_explicit(&s->gauge, memory_order_relaxed));
}

int wflo__metric_snapshot_take(wflo__metric_snapshot_t *snap) {
  size_t i, n = 0;
  wflo__list_t *it;
  memset(snap, 0, sizeof(*snap));
  ensure_init();
  collect_all();
  uv_mutex_lock(&mu);
  for (i = 0; i < WFLO__M_COUNT; i++)
    n += fams[i].count;
  if (n > 0) {
    snap->series = wflo__calloc(n, sizeof(*snap->series));
    if (snap->series == NULL) {
      uv_mutex_unlock(&mu);
      return WFLO_E_NOMEM;
    }
    snap->cap = n;
  }
  for (i = 0; i < WFLO__M_COUNT; i++) {
    wflo__list_foreach(it, &fams[i].list) {
      wflo__metric_series_t *s =
          wflo__container_of(it, wflo__metric_series_t, synced.node);
      s->synced.snap_refs++;
      snap->series[snap->n++] = s;
    }
  }
  uv_mutex_unlock(&mu);
  return 0;
}

void wflo__metric_snapshot_drop(wflo__metric_snapshot_t *snap) {
  size_t i;
  uv_mutex_lock(&mu);
  for (i = 0; i < snap->n; i++) {
    wflo__metric_series_t *s = snap->series[i];
    if (--s->synced.snap_refs == 0 && !s->synced.linked)
      series_free(s);
  }
  uv_mutex_unlock(&mu);
  wflo__free(snap->series, snap->cap * sizeof(*snap->series));
  memset(snap, 0, sizeof(*snap));
}

/* --- reset ----------------------------------------------------------------------- */

static void zero_cells(wflo__metric_series_t *s) {
  size_t k, i, ncells = s->stride / sizeof(uint64_t);
  for (k = 0; k < nshards; k++)
    for (i = 0; i < ncells; i++)
      atomic_store_explicit(wflo__metric_cell(s, (unsigned)k << 1, i), 0,
                            memory_order_relaxed);
}

void wflo_metrics_reset(void) {
  size_t i;
  ensure_init();
  /* Values still held by objects land in their series first, then are
   * zeroed with everything else. */
  collect_all();
  uv_mutex_lock(&mu);
  for (i = 0; i < WFLO__M_COUNT; i++) {
    wflo__list_t *it = fams[i].list.next, *next;
    for (; it != &fams[i].list; it = next) {
      wflo__metric_series_t *s =
          wflo__container_of(it, wflo__metric_series_t, synced.node);
      next = it->next;
      if (s->synced.holders == 0)
        unlink_locked(s);
      else if (s->stride != 0)
        zero_cells(s);
    }
  }
  atomic_fetch_add_explicit(&wflo__metric_cache_gen, 1, memory_order_relaxed);
  uv_mutex_unlock(&mu);
}
