/* The circuit breaker: the lock-free state machine, the registry and the
 * JSON state. Configuration lives in breaker_config.c, windows in
 * breaker_window.c; the state word is described in internal/breaker.h.
 *
 * Paths by cost:
 * - CLOSED, consecutive mode: acquire is one atomic load; recording a
 *   success compares the word with (CLOSED, gen, 0) and writes nothing, so
 *   threads hammering a healthy breaker only share a read-only cache line.
 *   A failure is one CAS; the one that reaches the threshold opens it.
 * - OPEN: one load and one coarse clock read to compare with open_until.
 * - HALF_OPEN: a CAS on in_use, a slot CAS and a coarse clock read.
 * - COUNT/TIME windows: recording takes the window mutex. */
#include "internal/breaker.h"
#include "internal/config.h"
#include "internal/health.h"
#include "internal/metrics.h"

#include <sched.h>

#define WHAT "breaker"

/* Keeps the slow paths out of line, so the fast paths of acquire and record
 * compile to a few instructions with no register spills. */
#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* Permit flags: a magic so that a never-acquired permit is not mistaken for
 * an admitted one, plus a bit saying the permit carries a start time. */
#define PERMIT_MAGIC 0x5b7e0000u
#define PERMIT_ADMITTED (PERMIT_MAGIC | 1u)
#define PERMIT_REFUSED (PERMIT_MAGIC | 2u)
#define PERMIT_RECORDED (PERMIT_MAGIC | 3u)
#define PERMIT_TIMED 0x100u

/* Slot values: ticket in the top 24 bits, admission time in ms below. */
#define SLOT_TIME_BITS 40
#define SLOT_TIME_MAX ((1ull << SLOT_TIME_BITS) - 1)

#define NO_DURATION UINT64_MAX

/* Also the index into wflo__brk_metrics_t.calls: a refusal is the fourth
 * outcome a call can have. */
enum outcome { OUT_SUCCESS, OUT_FAILURE, OUT_NEUTRAL, OUT_REJECTED };

static wflo__registry_t registry = WFLO__REGISTRY_INIT;

_Static_assert(offsetof(wflo_breaker_t, ref) == 0, "ref comes first");

/* --- metrics -------------------------------------------------------------- *
 * wflo_circuit_breaker_calls_total{name,outcome} and
 * wflo_circuit_breaker_state{name} live in a block made on first use: the
 * CLOSED success path then costs a load of the block pointer and an add to
 * this thread's own cell of the counter (no atomic read-modify-write).
 * Transitions are counted by label lookup: they are rare. */

static const char *const outcome_names[] = {"success", "failure", "ignored",
                                            "rejected"};

/* The state gauge is written after a transition by whoever made it, and
 * transitions to HALF_OPEN or CLOSED are a bare CAS with nothing else
 * serialising them. So a writer does not set the state it moved to: under
 * this mutex it sets the state the word holds now. The last writer then
 * reads a word at least as new as every completed transition, and a slow
 * writer can never leave an older state behind. Rare, so one mutex for all
 * breakers. */
static uv_once_t gauge_once = UV_ONCE_INIT;
static uv_mutex_t gauge_mu;

static void gauge_init(void) { uv_mutex_init(&gauge_mu); }

static double state_value(wflo_breaker_state_t s) {
  return s == WFLO_BREAKER_OPEN        ? 2.0
         : s == WFLO_BREAKER_HALF_OPEN ? 1.0
                                       : 0.0;
}

static void gauge_sync(wflo_breaker_t *b, wflo__brk_metrics_t *m) {
  uv_once(&gauge_once, gauge_init);
  uv_mutex_lock(&gauge_mu);
  wflo__gauge_set(m->state, state_value(wflo_breaker_state(b)));
  uv_mutex_unlock(&gauge_mu);
}

static void metrics_free(wflo__brk_metrics_t *m) {
  size_t i;
  if (m == NULL)
    return;
  for (i = 0; i < WFLO_ARRAY_SIZE(m->calls); i++)
    wflo__metric_release(m->calls[i]);
  wflo__metric_release(m->state);
  wflo__free(m, sizeof(*m));
}

/* Resolves b's series and publishes them; another thread may win the race,
 * then its block is used. NULL while metrics are off (no series appear
 * then) or out of memory (the next use tries again). */
static NOINLINE wflo__brk_metrics_t *metrics_create(wflo_breaker_t *b) {
  wflo__brk_metrics_t *m, *seen = NULL;
  const char *labels[2] = {b->name, NULL};
  size_t i;
  if (!wflo__metrics_active())
    return NULL;
  m = wflo__calloc(1, sizeof(*m));
  if (m == NULL)
    return NULL;
  for (i = 0; i < WFLO_ARRAY_SIZE(m->calls); i++) {
    labels[1] = outcome_names[i];
    m->calls[i] = wflo__metric_get(WFLO__M_BREAKER_CALLS, labels);
    if (m->calls[i] == NULL)
      goto fail_free_metrics;
  }
  m->state = wflo__metric_get(WFLO__M_BREAKER_STATE, labels);
  if (m->state == NULL)
    goto fail_free_metrics;
  if (!atomic_compare_exchange_strong(&b->met, &seen, m)) {
    metrics_free(m);
    return seen;
  }
  gauge_sync(b, m);
  return m;

fail_free_metrics:
  metrics_free(m);
  return NULL;
}

static inline wflo__brk_metrics_t *metrics_of(wflo_breaker_t *b) {
  wflo__brk_metrics_t *m = atomic_load_explicit(&b->met, memory_order_acquire);
  return wflo__likely(m != NULL) ? m : metrics_create(b);
}

/* The first count of a breaker or of a thread: makes the block, claims the
 * thread's shard. */
static NOINLINE void count_call_slow(wflo_breaker_t *b, enum outcome out) {
  wflo__brk_metrics_t *m = metrics_of(b);
  if (m != NULL)
    wflo__counter_add(m->calls[out], 1);
}

/* Counts one call's outcome. The block's series are never NULL. Whatever
 * needs a call is out of line and last, so the record path keeps no
 * registers across it. */
static inline void count_call(wflo_breaker_t *b, enum outcome out) {
  wflo__brk_metrics_t *m;
  unsigned slot;
  if (!wflo__metrics_active())
    return;
  m = atomic_load_explicit(&b->met, memory_order_acquire);
  slot = wflo__tl_metric_slot;
  if (wflo__unlikely(m == NULL || slot == 0)) {
    count_call_slow(b, out);
    return;
  }
  wflo__metric_cell_add(wflo__metric_cell(m->calls[out], slot, 0), slot, 1);
}

/* After a transition from -> to: the state gauge (kept current even while
 * metrics are off, once it exists) and the transition counter. */
static void count_transition(wflo_breaker_t *b, unsigned from, unsigned to) {
  const char *labels[3];
  wflo__brk_metrics_t *m =
      wflo__metrics_active()
          ? metrics_of(b)
          : atomic_load_explicit(&b->met, memory_order_acquire);
  if (m != NULL)
    gauge_sync(b, m);
  labels[0] = b->name;
  labels[1] = wflo_breaker_state_name((wflo_breaker_state_t)from);
  labels[2] = wflo_breaker_state_name((wflo_breaker_state_t)to);
  wflo__counter_add_labels(WFLO__M_BREAKER_TRANSITIONS, labels, 1);
}

/* --- objects -------------------------------------------------------------- */

static size_t breaker_bytes(uint32_t slots) {
  return sizeof(wflo_breaker_t) + (size_t)slots * sizeof(uint64_t);
}

static void breaker_free(wflo_breaker_t *b) {
  metrics_free(atomic_load_explicit(&b->met, memory_order_acquire));
  wflo__bwindow_free(b->win);
  if (b->cfg.nerrors > 0)
    wflo__free((void *)(uintptr_t)b->cfg.errors, b->cfg.nerrors * sizeof(int));
  if (b->name != NULL && b->name != b->name_buf)
    wflo__strfree((char *)(uintptr_t)b->name);
  wflo__free(b, breaker_bytes(b->cfg.half_open_max_calls));
}

/* One allocation holds the breaker, its trial slots and (up to 23 bytes)
 * its name; the error list, a long name and a window are separate. Runs
 * under the registry mutex for _get: it only allocates and initialises. */
static int breaker_alloc(const char *name, const wflo__bcfg_t *e,
                         wflo_breaker_t **out) {
  size_t bytes = breaker_bytes(e->half_open_max_calls);
  wflo_breaker_t *b = wflo__calloc(1, bytes);
  int *errors = NULL;
  int rc = WFLO_E_NOMEM;

  if (b == NULL)
    return WFLO_E_NOMEM;
  if (name != NULL && strlen(name) < sizeof(b->name_buf)) {
    memcpy(b->name_buf, name, strlen(name) + 1);
    b->name = b->name_buf;
  } else if (name != NULL) {
    b->name = wflo__strdup(name);
    if (b->name == NULL)
      goto fail_free_breaker;
  }
  if (e->nerrors > 0) {
    errors = wflo__malloc(e->nerrors * sizeof(int));
    if (errors == NULL)
      goto fail_free_name;
    memcpy(errors, e->errors, e->nerrors * sizeof(int));
    wflo__bcfg_sort_errors(errors, e->nerrors);
  }
  b->cfg = *e;
  b->cfg.errors = errors;
  if (e->window != WFLO_WINDOW_CONSECUTIVE) {
    rc = wflo__bwindow_new(e, &b->win);
    if (rc != 0)
      goto fail_free_errors;
  }
  atomic_init(&b->word, wflo__brk_word(WFLO__BRK_CLOSED, 0, 0));
  atomic_init(&b->met, NULL);
  wflo__ref_init(&b->ref);
  *out = b;
  return 0;

fail_free_errors:
  if (errors != NULL)
    wflo__free(errors, e->nerrors * sizeof(int));
fail_free_name:
  if (b->name != NULL && b->name != b->name_buf)
    wflo__strfree((char *)(uintptr_t)b->name);
fail_free_breaker:
  wflo__free(b, bytes);
  return rc;
}

int wflo_breaker_new(const char *name, const wflo_breaker_config_t *c,
                     wflo_breaker_t **out) {
  wflo_breaker_config_t defaults;
  wflo__bcfg_t e;
  int rc;

  if (out == NULL)
    return WFLO_E_INVAL;
  *out = NULL;
  if (c == NULL) {
    wflo_breaker_config_init(&defaults);
    c = &defaults;
  }
  rc = wflo_breaker_config_validate(c, NULL, 0);
  if (rc != 0)
    return rc;
  wflo__bcfg_effective(c, &e);
  return breaker_alloc(name, &e, out);
}

/* arg: the caller's config, validated, or NULL for the defaults. The
 * effective config is worked out only here, so a lookup of an existing name
 * costs the registry's search and nothing else. */
static int registry_create(const char *name, void *arg, wflo__ref_t **out) {
  wflo_breaker_config_t defaults;
  const wflo_breaker_config_t *c = arg;
  wflo__bcfg_t e;
  wflo_breaker_t *b;
  int rc;
  if (c == NULL) {
    wflo_breaker_config_init(&defaults);
    c = &defaults;
  }
  wflo__bcfg_effective(c, &e);
  rc = breaker_alloc(name, &e, &b);
  if (rc != 0)
    return rc;
  b->ref.name = b->name;
  *out = &b->ref;
  return 0;
}

int wflo_breaker_get(const char *name, const wflo_breaker_config_t *c,
                     wflo_breaker_t **out) {
  wflo__bcfg_t e;
  wflo__ref_t *ref;
  wflo_breaker_t *b;
  bool created;
  int rc;

  if (out == NULL)
    return WFLO_E_INVAL;
  *out = NULL;
  if (name == NULL)
    return WFLO_E_INVAL;
  if (c != NULL && (rc = wflo_breaker_config_validate(c, NULL, 0)) != 0)
    return rc;
  rc = wflo__registry_get(&registry, name, registry_create,
                          (void *)(uintptr_t)c, &ref, &created);
  if (rc != 0)
    return rc;
  b = (wflo_breaker_t *)(void *)ref; /* ref is the first member */
  /* With no config the caller takes the breaker as it is: no conflict. */
  if (!created && c != NULL) {
    wflo__bcfg_effective(c, &e);
    if (!wflo__bcfg_equal(&b->cfg, &e) && wflo__event_on(WFLO_LOG_WARN))
      wflo__emit("config_conflict", WFLO_LOG_WARN,
                 wflo__json_obj("what", json_string(WHAT), "name",
                                wflo__json_string(name), NULL));
  }
  *out = b;
  return 0;
}

void wflo_breaker_put(wflo_breaker_t *b) {
  if (b != NULL && wflo__ref_dec(&b->ref))
    breaker_free(b);
}

void wflo__breaker_ref(wflo_breaker_t *b) { wflo__ref_inc(&b->ref); }

const char *wflo__breaker_name(const wflo_breaker_t *b) { return b->name; }

/* --- transitions ---------------------------------------------------------- */

const char *wflo_breaker_state_name(wflo_breaker_state_t s) {
  switch (s) {
  case WFLO_BREAKER_CLOSED:
    return "closed";
  case WFLO_BREAKER_OPEN:
    return "open";
  case WFLO_BREAKER_HALF_OPEN:
    return "half_open";
  }
  return "unknown";
}

/* Metrics and the event of a transition, with no lock held. */
static void emit_transition(wflo_breaker_t *b, unsigned from, unsigned to,
                            uint32_t count) {
  json_t *from_j;
  if (from == WFLO__BRK_CLOSED && to == WFLO__BRK_CLOSED)
    return; /* a reset of a closed breaker changes no state */
  count_transition(b, from, to);
  if (to == WFLO__BRK_OPEN) {
    if (!wflo__event_on(WFLO_LOG_ERROR))
      return;
    from_j = json_string(wflo_breaker_state_name((wflo_breaker_state_t)from));
    wflo__emit("circuit_breaker_opened", WFLO_LOG_ERROR,
               wflo__json_obj("name", wflo__json_string(b->name), "from",
                              from_j, "failure_count", json_integer(count),
                              NULL));
    return;
  }
  if (!wflo__event_on(WFLO_LOG_INFO))
    return;
  from_j = json_string(wflo_breaker_state_name((wflo_breaker_state_t)from));
  wflo__emit(to == WFLO__BRK_HALF ? "circuit_breaker_half_open"
                                  : "circuit_breaker_closed",
             WFLO_LOG_INFO,
             wflo__json_obj("name", wflo__json_string(b->name), "from", from_j,
                            NULL));
}

/* Claims the right to move the circuit away from the word `seen`: the
 * word becomes BUSY with the next generation, so every permit admitted
 * before is stale from here on. false when the word changed meanwhile. */
static bool tr_claim(wflo_breaker_t *b, uint64_t seen, unsigned to) {
  return atomic_compare_exchange_strong_explicit(
      &b->word, &seen,
      wflo__brk_word(WFLO__BRK_BUSY, wflo__brk_gen(seen) + 1, to),
      memory_order_acq_rel, memory_order_relaxed);
}

/* Writes the side data of the new state and publishes it. The caller has
 * claimed the word and cleared the window. */
static void tr_publish(wflo_breaker_t *b, uint64_t seen, unsigned to,
                       uint32_t count, uint64_t open_ns) {
  if (to == WFLO__BRK_OPEN) {
    uint64_t now = wflo__now_coarse_ns();
    uint64_t until = now + open_ns < now ? UINT64_MAX : now + open_ns;
    atomic_store_explicit(&b->opened_at, now, memory_order_relaxed);
    atomic_store_explicit(&b->open_until, until, memory_order_relaxed);
  }
  atomic_store_explicit(&b->word,
                        wflo__brk_word(to, wflo__brk_gen(seen) + 1, count),
                        memory_order_release);
}

/* Moves the circuit from `seen` to `to` (count: the new word's count;
 * open_ns: how long an OPEN lasts). Returns false, changing nothing, when
 * the word is no longer `seen`. Takes the window mutex, so callers must not
 * hold it; emits the event with no lock held.
 *
 * Only OPEN has side data (its deadline), so only OPEN goes through BUSY.
 * Closing and starting to probe are one CAS, so no call is ever refused
 * because the circuit is closing. With a window, that CAS and the clear
 * happen under the window mutex: an outcome of the new generation can only
 * be added after the clear. */
static bool transition(wflo_breaker_t *b, uint64_t seen, unsigned to,
                       uint32_t count, uint64_t open_ns) {
  if (to == WFLO__BRK_OPEN) {
    if (!tr_claim(b, seen, to))
      return false;
    if (b->win != NULL) {
      wflo__bwindow_lock(b->win);
      wflo__bwindow_clear(b->win);
      wflo__bwindow_unlock(b->win);
    }
    tr_publish(b, seen, to, count, open_ns);
  } else {
    uint64_t next = wflo__brk_word(to, wflo__brk_gen(seen) + 1, count);
    bool ok;
    if (b->win != NULL)
      wflo__bwindow_lock(b->win);
    ok = atomic_compare_exchange_strong_explicit(
        &b->word, &seen, next, memory_order_acq_rel, memory_order_relaxed);
    if (ok && b->win != NULL)
      wflo__bwindow_clear(b->win);
    if (b->win != NULL)
      wflo__bwindow_unlock(b->win);
    if (!ok)
      return false;
  }
  emit_transition(b, wflo__brk_st(seen), to, count);
  return true;
}

/* Loads the word, waiting out a transition in progress (a few stores, so a
 * yield is plenty). For the rare paths that need a settled state. */
static uint64_t load_settled(wflo_breaker_t *b) {
  uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
  while (wflo__brk_st(w) == WFLO__BRK_BUSY) {
    sched_yield();
    w = atomic_load_explicit(&b->word, memory_order_acquire);
  }
  return w;
}

int wflo_breaker_force(wflo_breaker_t *b, wflo_breaker_state_t state,
                       double until_s) {
  uint64_t open_ns = 0;
  if (b == NULL || (int)state < 0 || (int)state > (int)WFLO_BREAKER_HALF_OPEN)
    return WFLO_E_INVAL;
  if (state == WFLO_BREAKER_OPEN) {
    if (!wflo__duration_ok(until_s))
      return WFLO_E_INVAL;
    open_ns = wflo__s_to_ns(until_s);
  }
  while (!transition(b, load_settled(b), (unsigned)state, 0, open_ns))
    ;
  return 0;
}

void wflo_breaker_reset(wflo_breaker_t *b) {
  if (b != NULL)
    (void)wflo_breaker_force(b, WFLO_BREAKER_CLOSED, 0.0);
}

/* --- admission ------------------------------------------------------------ */

static int refuse(wflo_breaker_permit_t *p, unsigned st) {
  count_call(p->breaker, OUT_REJECTED);
  p->state = st == WFLO__BRK_HALF ? WFLO_BREAKER_HALF_OPEN : WFLO_BREAKER_OPEN;
  p->flags = PERMIT_REFUSED;
  return WFLO_E_BREAKER_OPEN;
}

static uint64_t ms_of(uint64_t ns, bool round_up) {
  uint64_t ms = ns / 1000000u + (round_up && ns % 1000000u != 0);
  return ms > SLOT_TIME_MAX ? SLOT_TIME_MAX : ms;
}

/* Admission times are rounded up and the wait too, so a slot is never
 * reclaimed early (at worst a few ms late; the clock is coarse anyway). */
static uint64_t slot_value(wflo_breaker_t *b, uint64_t now_ns) {
  uint64_t t = atomic_fetch_add_explicit(&b->tickets, 1, memory_order_relaxed);
  t = t % 0xffffffu + 1; /* never 0: 0 marks a free slot */
  return t << SLOT_TIME_BITS | ms_of(now_ns, true);
}

static bool slot_expired(uint64_t v, uint64_t now_ms, uint64_t wait_ms,
                         uint64_t *expiry) {
  uint64_t t = v & SLOT_TIME_MAX;
  *expiry = t + wait_ms;
  return now_ms >= *expiry;
}

static void slot_release(wflo_breaker_t *b, uint32_t i, uint64_t v) {
  if (atomic_compare_exchange_strong(&b->slots[i], &v, 0))
    atomic_fetch_sub_explicit(&b->in_use, 1, memory_order_release);
}

/* Takes over the slot of a trial that has not reported for
 * half_open_max_wait. reclaim_hint (the earliest expiry the last scan saw)
 * spares the scan while nothing can have expired; it is only a hint, late
 * by at most a race between two scans. Returns the slot index or -1. */
static int slot_reclaim(wflo_breaker_t *b, uint64_t now_ns, uint64_t *val) {
  uint64_t now_ms = ms_of(now_ns, false);
  uint64_t wait_ms = ms_of(b->cfg.max_wait_ns, true);
  uint64_t min_expiry = UINT64_MAX, expiry, v;
  uint32_t i;

  if (now_ms < atomic_load_explicit(&b->reclaim_hint, memory_order_relaxed))
    return -1;
  for (i = 0; i < b->cfg.half_open_max_calls; i++) {
    v = atomic_load(&b->slots[i]);
    if (v == 0)
      continue; /* being released: its owner will free in_use */
    if (!slot_expired(v, now_ms, wait_ms, &expiry)) {
      if (expiry < min_expiry)
        min_expiry = expiry;
      continue;
    }
    *val = slot_value(b, now_ns);
    if (atomic_compare_exchange_strong(&b->slots[i], &v, *val))
      return (int)i;
  }
  atomic_store_explicit(&b->reclaim_hint,
                        min_expiry == UINT64_MAX ? now_ms : min_expiry,
                        memory_order_relaxed);
  return -1;
}

/* Takes a free slot; in_use already counts it, so one is free or about to
 * be (a claim being placed by another thread is the only contention). */
static uint32_t slot_take(wflo_breaker_t *b, uint64_t val) {
  uint32_t n = b->cfg.half_open_max_calls;
  uint32_t i = (uint32_t)(val >> SLOT_TIME_BITS) % n;
  for (;; i = i + 1 == n ? 0 : i + 1) {
    uint64_t zero = 0;
    if (atomic_load_explicit(&b->slots[i], memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong(&b->slots[i], &zero, val))
      return i;
  }
}

/* A trial in HALF_OPEN `w`. Returns 0 (admitted), WFLO_E_BREAKER_OPEN, or 1
 * when the state moved on meanwhile and the caller must decide again. */
static int admit_trial(wflo_breaker_t *b, wflo_breaker_permit_t *p,
                       uint64_t w) {
  uint32_t n = atomic_load(&b->in_use);
  uint64_t now = wflo__now_coarse_ns(), val = 0, w2;
  int slot;

  do {
    if (n >= b->cfg.half_open_max_calls) {
      slot = slot_reclaim(b, now, &val);
      if (slot < 0)
        return refuse(p, WFLO__BRK_HALF);
      goto placed;
    }
  } while (!atomic_compare_exchange_weak(&b->in_use, &n, n + 1));
  val = slot_value(b, now);
  slot = (int)slot_take(b, val);
placed:
  /* Admitted only if the circuit is still in this HALF_OPEN: a trial must
   * never run while the circuit is OPEN or after it closed. */
  w2 = atomic_load(&b->word);
  if (wflo__brk_st(w2) != WFLO__BRK_HALF ||
      wflo__brk_gen(w2) != wflo__brk_gen(w)) {
    slot_release(b, (uint32_t)slot, val);
    return 1;
  }
  p->state = WFLO_BREAKER_HALF_OPEN;
  p->gen = wflo__brk_gen(w);
  p->slot = (uint32_t)slot;
  p->ticket = val;
  p->flags = PERMIT_ADMITTED;
  return 0;
}

static NOINLINE int acquire_slow(wflo_breaker_t *b, wflo_breaker_permit_t *p,
                                 uint64_t w) {
  int rc;
  for (;;) {
    switch (wflo__brk_st(w)) {
    case WFLO__BRK_CLOSED:
      p->state = WFLO_BREAKER_CLOSED;
      p->gen = wflo__brk_gen(w);
      p->flags = PERMIT_ADMITTED;
      return 0;
    case WFLO__BRK_OPEN:
      /* The acquire load of w orders this read after the OPEN publish. */
      if (wflo__now_coarse_ns() <
          atomic_load_explicit(&b->open_until, memory_order_relaxed))
        return refuse(p, WFLO__BRK_OPEN);
      (void)transition(b, w, WFLO__BRK_HALF, 0, 0);
      break; /* won or lost the race: decide on the new word */
    case WFLO__BRK_HALF:
      rc = admit_trial(b, p, w);
      if (rc <= 0)
        return rc;
      break;
    default: /* BUSY: a transition is being published */
      return refuse(p, WFLO__BRK_OPEN);
    }
    w = atomic_load_explicit(&b->word, memory_order_acquire);
  }
}

int wflo_breaker_acquire(wflo_breaker_t *b, wflo_breaker_permit_t *p) {
  uint64_t w;
  if (wflo__unlikely(p == NULL))
    return WFLO_E_INVAL;
  if (wflo__unlikely(b == NULL)) {
    p->breaker = NULL;
    p->flags = PERMIT_REFUSED;
    return WFLO_E_INVAL;
  }
  p->breaker = b;
  w = atomic_load_explicit(&b->word, memory_order_acquire);
  if (wflo__likely(wflo__brk_st(w) == WFLO__BRK_CLOSED)) {
    p->state = WFLO_BREAKER_CLOSED;
    p->gen = wflo__brk_gen(w);
    p->flags = PERMIT_ADMITTED;
    return 0;
  }
  return acquire_slow(b, p, w);
}

int wflo_breaker_acquire_timed(wflo_breaker_t *b, wflo_breaker_permit_t *p) {
  int rc = wflo_breaker_acquire(b, p);
  if (rc == 0 && b->win != NULL) {
    p->start_ns = wflo__now_ns();
    p->flags |= PERMIT_TIMED;
  }
  return rc;
}

/* --- recording ------------------------------------------------------------ */

static enum outcome classify(const wflo_breaker_t *b, int result) {
  if (result >= 0)
    return OUT_SUCCESS;
  if (b->cfg.is_failure != NULL)
    return b->cfg.is_failure(result, b->cfg.user_data) ? OUT_FAILURE
                                                       : OUT_NEUTRAL;
  if (b->cfg.nerrors > 0)
    return wflo__bcfg_has_error(b->cfg.errors, b->cfg.nerrors, result)
               ? OUT_FAILURE
               : OUT_NEUTRAL;
  switch (result) {
  case WFLO_E_CANCELED:
  case WFLO_E_LOCK_TIMEOUT:
  case WFLO_E_QUEUE_FULL:
  case WFLO_E_BUDGET_EXCEEDED:
  case WFLO_E_BREAKER_OPEN:
    return OUT_NEUTRAL;
  default:
    return OUT_FAILURE;
  }
}

static bool is_current(uint64_t w, unsigned st, uint32_t gen) {
  return wflo__brk_st(w) == st && wflo__brk_gen(w) == gen;
}

/* CLOSED, consecutive mode: count or reset failures with a CAS on the word;
 * the failure that reaches the threshold opens the circuit. */
static void record_consecutive(wflo_breaker_t *b, uint32_t gen,
                               enum outcome out) {
  uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire), nw;
  uint32_t c;
  for (;;) {
    if (!is_current(w, WFLO__BRK_CLOSED, gen))
      return; /* stale */
    c = wflo__brk_count(w);
    if (out == OUT_SUCCESS) {
      if (c == 0)
        return;
      nw = wflo__brk_word(WFLO__BRK_CLOSED, gen, 0);
    } else if (c + 1 >= b->cfg.failure_threshold) {
      if (transition(b, w, WFLO__BRK_OPEN, c + 1, b->cfg.recovery_ns))
        return;
      w = atomic_load_explicit(&b->word, memory_order_acquire);
      continue;
    } else {
      nw = wflo__brk_word(WFLO__BRK_CLOSED, gen, c + 1);
    }
    if (atomic_compare_exchange_weak_explicit(
            &b->word, &w, nw, memory_order_acq_rel, memory_order_acquire))
      return;
  }
}

/* CLOSED, COUNT or TIME window. The generation check and the add happen
 * under the window mutex, and every transition clears the window under it
 * after claiming the word, so a stale result never lands in a new window.
 * The tripping add claims the word itself while holding the mutex (nothing
 * else changes a CLOSED word in window mode but a claim, which would make
 * ours fail harmlessly). */
static void record_window(wflo_breaker_t *b, uint32_t gen, enum outcome out,
                          uint64_t dur_ns) {
  bool slow = dur_ns != NO_DURATION && dur_ns > b->cfg.slow_ns;
  uint64_t now = b->cfg.window == WFLO_WINDOW_TIME ? wflo__now_coarse_ns() : 0;
  uint64_t w;
  uint32_t failures = 0;
  bool opened = false;

  wflo__bwindow_lock(b->win);
  w = atomic_load_explicit(&b->word, memory_order_acquire);
  if (is_current(w, WFLO__BRK_CLOSED, gen) &&
      wflo__bwindow_add(b->win, out == OUT_FAILURE, slow, now) &&
      tr_claim(b, w, WFLO__BRK_OPEN)) {
    failures = wflo__bwindow_failures(b->win, now);
    wflo__bwindow_clear(b->win);
    tr_publish(b, w, WFLO__BRK_OPEN, failures, b->cfg.recovery_ns);
    opened = true;
  }
  wflo__bwindow_unlock(b->win);
  if (opened)
    emit_transition(b, WFLO__BRK_CLOSED, WFLO__BRK_OPEN, failures);
}

/* A trial's result. Freeing the slot first proves the trial still owns it
 * (a reclaimed trial is stale); in_use drops only after the outcome is
 * applied, so no new trial is admitted between a failure and the OPEN it
 * causes. */
static void record_trial(wflo_breaker_t *b, const wflo_breaker_permit_t *p,
                         enum outcome out) {
  uint64_t v = p->ticket, w;
  uint32_t c;
  if (!atomic_compare_exchange_strong(&b->slots[p->slot], &v, 0))
    return; /* reclaimed after half_open_max_wait: stale */
  w = atomic_load_explicit(&b->word, memory_order_acquire);
  while (out != OUT_NEUTRAL && is_current(w, WFLO__BRK_HALF, p->gen)) {
    if (out == OUT_FAILURE) {
      if (transition(b, w, WFLO__BRK_OPEN, 1, b->cfg.recovery_ns))
        break;
    } else {
      c = wflo__brk_count(w) + 1;
      if (c >= b->cfg.success_threshold) {
        if (transition(b, w, WFLO__BRK_CLOSED, 0, 0))
          break;
      } else if (atomic_compare_exchange_strong(
                     &b->word, &w,
                     wflo__brk_word(WFLO__BRK_HALF, p->gen, c))) {
        break;
      }
    }
    w = atomic_load_explicit(&b->word, memory_order_acquire);
  }
  atomic_fetch_sub_explicit(&b->in_use, 1, memory_order_release);
}

static void apply(wflo_breaker_t *b, const wflo_breaker_permit_t *p,
                  enum outcome out, uint64_t dur_ns) {
  if (p->state == WFLO_BREAKER_HALF_OPEN)
    record_trial(b, p, out);
  else if (out == OUT_NEUTRAL)
    return;
  else if (b->win == NULL)
    record_consecutive(b, p->gen, out);
  else
    record_window(b, p->gen, out, dur_ns);
}

/* Marks the permit used. Returns 0 or the error for a bad permit. */
static int take_permit(wflo_breaker_t *b, wflo_breaker_permit_t *p) {
  if ((p->flags & ~PERMIT_TIMED) != PERMIT_ADMITTED)
    return WFLO_E_STATE;
  if (p->breaker != b)
    return WFLO_E_INVAL;
  p->flags = PERMIT_RECORDED;
  return 0;
}

static uint64_t dur_from_s(double s) {
  if (!(s >= 0.0))
    return NO_DURATION; /* negative or NaN: not measured */
  return s >= WFLO_DURATION_MAX ? UINT64_MAX - 1 : wflo__s_to_ns(s);
}

static NOINLINE int record_slow(wflo_breaker_t *b, wflo_breaker_permit_t *p,
                                int result, double duration_s) {
  enum outcome out;
  int rc;
  if (b == NULL || p == NULL)
    return WFLO_E_INVAL;
  rc = take_permit(b, p);
  if (rc != 0)
    return rc;
  out = classify(b, result);
  count_call(b, out);
  apply(b, p, out, dur_from_s(duration_s));
  return 0;
}

int wflo_breaker_record(wflo_breaker_t *b, wflo_breaker_permit_t *p,
                        int result, double duration_s) {
  /* The healthy path: a success on a CLOSED consecutive-mode breaker with
   * no failures to reset reads the word and writes nothing shared. */
  if (wflo__likely(b != NULL && p != NULL && p->flags == PERMIT_ADMITTED &&
                   p->breaker == b && result >= 0 &&
                   p->state == WFLO_BREAKER_CLOSED && b->win == NULL)) {
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    if (wflo__likely(w == wflo__brk_word(WFLO__BRK_CLOSED, p->gen, 0))) {
      p->flags = PERMIT_RECORDED;
      count_call(b, OUT_SUCCESS);
      return 0;
    }
  }
  return record_slow(b, p, result, duration_s);
}

int wflo_breaker_record_timed(wflo_breaker_permit_t *p, int result) {
  double dur = -1.0;
  if (p == NULL)
    return WFLO_E_INVAL;
  if ((p->flags & PERMIT_TIMED) && p->flags != PERMIT_RECORDED) {
    uint64_t now = wflo__now_ns();
    dur = now > p->start_ns ? wflo__ns_to_s(now - p->start_ns) : 0.0;
  }
  return wflo_breaker_record(p->breaker, p, result, dur);
}

void wflo_breaker_abandon(wflo_breaker_permit_t *p) {
  if (p == NULL || take_permit(p->breaker, p) != 0)
    return;
  count_call(p->breaker, OUT_NEUTRAL);
  apply(p->breaker, p, OUT_NEUTRAL, NO_DURATION);
}

int wflo_breaker_call(wflo_breaker_t *b, int (*fn)(void *arg), void *arg) {
  wflo_breaker_permit_t p;
  int rc;
  if (fn == NULL)
    return WFLO_E_INVAL;
  rc = wflo_breaker_acquire_timed(b, &p);
  if (rc != 0)
    return rc;
  rc = fn(arg);
  (void)wflo_breaker_record_timed(&p, rc);
  return rc;
}

/* --- state ---------------------------------------------------------------- */

wflo_breaker_state_t wflo_breaker_state(wflo_breaker_t *b) {
  uint64_t w;
  if (b == NULL)
    return WFLO_BREAKER_CLOSED;
  w = atomic_load_explicit(&b->word, memory_order_acquire);
  /* While BUSY, the count field holds the state being entered. */
  return (wflo_breaker_state_t)(wflo__brk_st(w) == WFLO__BRK_BUSY
                                    ? wflo__brk_count(w)
                                    : wflo__brk_st(w));
}

typedef struct snapshot {
  unsigned st;
  uint32_t failures, successes;
  double open_for, until_half;
} snapshot_t;

/* A consistent view: the word before and after reading the side data must
 * match, else a transition happened in between and we read again. */
static void take_snapshot(wflo_breaker_t *b, snapshot_t *s) {
  uint64_t w, now, opened, until;
  for (;;) {
    w = load_settled(b);
    now = wflo__now_coarse_ns();
    opened = atomic_load_explicit(&b->opened_at, memory_order_relaxed);
    until = atomic_load_explicit(&b->open_until, memory_order_relaxed);
    s->st = wflo__brk_st(w);
    s->failures = s->st == WFLO__BRK_HALF ? 0 : wflo__brk_count(w);
    s->successes = s->st == WFLO__BRK_HALF ? wflo__brk_count(w) : 0;
    if (s->st == WFLO__BRK_CLOSED && b->win != NULL) {
      wflo__bwindow_lock(b->win);
      s->failures = wflo__bwindow_failures(b->win, now);
      wflo__bwindow_unlock(b->win);
    }
    s->open_for = s->st != WFLO__BRK_CLOSED && now > opened
                      ? wflo__ns_to_s(now - opened)
                      : 0.0;
    s->until_half = s->st == WFLO__BRK_OPEN && until > now
                        ? wflo__ns_to_s(until - now)
                        : 0.0;
    if (atomic_load_explicit(&b->word, memory_order_acquire) == w)
      return;
  }
}

json_t *wflo_breaker_state_json(wflo_breaker_t *b) {
  snapshot_t s;
  if (b == NULL)
    return NULL;
  take_snapshot(b, &s);
  return wflo__json_obj(
      "name", wflo__json_string(b->name), "state",
      json_string(wflo_breaker_state_name((wflo_breaker_state_t)s.st)),
      "failure_count", json_integer(s.failures), "failure_threshold",
      json_integer(b->cfg.failure_threshold), "success_count",
      json_integer(s.successes), "success_threshold",
      json_integer(b->cfg.success_threshold), "recovery_timeout",
      wflo__json_real(wflo__ns_to_s(b->cfg.recovery_ns)), "open_for_seconds",
      wflo__json_real(s.open_for), "time_until_half_open",
      wflo__json_real(s.until_half), NULL);
}

/* --- health --------------------------------------------------------------- */

int wflo__breaker_health(json_t *arr, bool *healthy) {
  wflo__ref_t **refs;
  size_t n, i;
  int rc = wflo__registry_snapshot(&registry, &refs, &n);
  if (rc != 0)
    return rc;
  for (i = 0; i < n; i++) {
    wflo_breaker_t *b = (wflo_breaker_t *)(void *)refs[i];
    bool open = wflo_breaker_state(b) == WFLO_BREAKER_OPEN;
    json_t *j;
    if (open)
      *healthy = false;
    if (arr != NULL && rc == 0) {
      /* wflo__json_set() and json_array_append_new() steal, also when they
       * fail; only j itself is ours to drop. */
      j = wflo_breaker_state_json(b);
      if (j == NULL)
        rc = WFLO_E_NOMEM;
      else if (wflo__json_set(j, "healthy", json_boolean(!open)) != 0) {
        json_decref(j);
        rc = WFLO_E_NOMEM;
      } else if (json_array_append_new(arr, j) != 0) {
        rc = WFLO_E_NOMEM;
      }
    }
    wflo_breaker_put(b);
  }
  if (n > 0)
    wflo__free(refs, n * sizeof(*refs));
  return rc;
}
